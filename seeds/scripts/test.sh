#!/usr/bin/env bash
# Installs seeddump with its test tools and runs the test suite against real PostgreSQL:
# the embedded server (started by the tests) and the machine's server at 127.0.0.1:5432
# (SEEDDUMP_TEST_SYSTEM_URL to change it). Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/../.."
bash seeds/scripts/install.sh
exec .venv/bin/python -m pytest "$@"
