#!/usr/bin/env bash
# Installs seeddump with its test tools, checks lint, format and types (ruff, mypy with django-stubs), and
# runs the test suite against real PostgreSQL: the embedded server (started by the tests) and the machine's
# server at 127.0.0.1:5432 (SEEDDUMP_TEST_SYSTEM_URL to change it). The whole suite runs on the newest
# combination of seeds/scripts/versions.txt (Django 6.1, Python 3.13), its core on the others
# (seeds/scripts/test-versions.sh); a combination whose Python this machine lacks is skipped with one line
# saying how to run it. Extra arguments go to pytest, and then only the first combination runs.
set -euo pipefail
cd "$(dirname "$0")/../.."
bash seeds/scripts/install.sh
# Lint, format and types first: a few seconds, and py.typed is a promise.
.venv/bin/ruff check --quiet .
.venv/bin/ruff format --check --quiet .
.venv/bin/mypy --no-error-summary seeddump
exec bash seeds/scripts/test-versions.sh "$@"
