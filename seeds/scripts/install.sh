#!/usr/bin/env bash
# Creates .venv (if missing) and installs seeddump with the demo project and test tools into it.
set -euo pipefail
cd "$(dirname "$0")/../.."
PYTHON=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
fi
.venv/bin/python -m pip install --quiet --disable-pip-version-check -e '.[test]' 2> >(grep -v "^WARNING: Location" >&2)
