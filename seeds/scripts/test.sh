#!/usr/bin/env bash
# Installs seeddump with its test tools, checks lint, format and types (ruff, mypy with django-stubs), and
# runs the test suite against real PostgreSQL: the embedded server (started by the tests) and the machine's
# server at 127.0.0.1:5432 (SEEDDUMP_TEST_SYSTEM_URL to change it). The whole suite runs on the newest
# combination of seeds/scripts/versions.txt (Django 6.1, Python 3.13), its core on the others
# (seeds/scripts/test-versions.sh); a combination whose Python this machine lacks is skipped with one line
# saying how to run it. Extra arguments go to pytest, and then only the first combination runs.
set -euo pipefail
cd "$(dirname "$0")/../.."
# Before anything runs: how long, and which servers (the machine's as a superuser unless told otherwise).
system=${SEEDDUMP_TEST_SYSTEM_URL:-postgres://postgres@127.0.0.1:5432/seeddump_system}
system_shown=$(printf '%s' "$system" | sed -E 's#^([a-z]+://[^:@/]*):[^@/]*@#\1:***@#')
if [ "$#" -gt 0 ]; then
  echo "test.sh: lint, types, then pytest $* on the newest combination of seeds/scripts/versions.txt."
else
  echo "test.sh: lint, types, then the whole suite, and its core on older Python and Django: about 60 minutes" \
    "on 2 cores (CI's full run; bash seeds/scripts/test.sh tests/test_roundtrip.py runs one file)."
fi
echo "test.sh: servers: the embedded PostgreSQL (18; 16 for one core run) in .pgdata/, started by the tests and" \
  "left running (bash seeds/scripts/demo.sh stop stops it), and the machine's PostgreSQL, $system_shown," \
  "connecting as a superuser by default: set SEEDDUMP_TEST_SYSTEM_URL=postgres://USER:PASSWORD@HOST:PORT/NAME" \
  "to use another server (the tests that need it are skipped when none answers). The tests make and drop" \
  "test_seeddump_*, seeddump_* and sdt_* databases and seeddump_* and sdt_* roles there; each run first drops what" \
  "interrupted earlier runs of the suite left (runs still going are left alone)."
echo "test.sh: installing seeddump with its test tools into .venv (pip, quiet)"
bash seeds/scripts/install.sh
# Lint, format and types first: a few seconds, and py.typed is a promise.
.venv/bin/ruff check --quiet .
.venv/bin/ruff format --check --quiet .
.venv/bin/mypy --no-error-summary seeddump
# The documentation site with warnings as errors (a broken link, a missing anchor or a page left out of the
# navigation fails the run): its pinned tools, then a build into a folder of its own; a few seconds.
.venv/bin/python -m pip install --quiet --disable-pip-version-check -r docs/requirements.txt
site=$(mktemp -d)
NO_MKDOCS_2_WARNING=1 .venv/bin/mkdocs build --strict --quiet --site-dir "$site"
rm -rf "$site"
exec bash seeds/scripts/test-versions.sh "$@"
