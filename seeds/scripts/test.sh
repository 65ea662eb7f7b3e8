#!/usr/bin/env bash
# Installs seeddump with its test tools, checks lint, format and types (ruff, mypy with django-stubs), and
# runs the test suite against real PostgreSQL:
# the embedded server (started by the tests) and the machine's server at 127.0.0.1:5432
# (SEEDDUMP_TEST_SYSTEM_URL to change it), on the newest Django; then the core of it on Django 4.2 with
# psycopg 3.1 (seeds/scripts/test-versions.sh). Extra arguments go to pytest, and then only the first run
# is made.
set -euo pipefail
cd "$(dirname "$0")/../.."
bash seeds/scripts/install.sh
# Lint, format and types first: a few seconds, and py.typed is a promise.
.venv/bin/ruff check --quiet .
.venv/bin/ruff format --check --quiet .
.venv/bin/mypy --no-error-summary seeddump
if [ "$#" -gt 0 ]; then
  exec .venv/bin/python -m pytest "$@"
fi
.venv/bin/python -m pytest
bash seeds/scripts/test-versions.sh
