#!/usr/bin/env bash
# The core of the suite (dump, restore, staleness, the pytest plugin: tests/test_roundtrip.py, test_stale.py,
# test_pytest_plugin.py) on the oldest supported versions: Django 4.2 LTS with psycopg 3.1, the lowest
# declared, in .venvs/django-4.2. test.sh runs it after the whole suite (on the newest Django, 5.2).
# Django 3.2 is refused, not supported: tests/test_package.py checks the refusal.
set -euo pipefail
cd "$(dirname "$0")/../.."
PYTHON=${PYTHON:-python3}
venv=.venvs/django-4.2
if [ ! -x "$venv/bin/python" ]; then
  "$PYTHON" -m venv "$venv"
fi
"$venv/bin/python" -m pip install --quiet --disable-pip-version-check \
  -c seeds/scripts/constraints-django-4.2.txt -e '.[test]' 2> >(grep -v "^WARNING: Location" >&2)
"$venv/bin/python" -c 'import django, psycopg; print(f"ci: core tests on Django {django.get_version()}, psycopg {psycopg.__version__}")'
exec "$venv/bin/python" -m pytest -q -p no:cacheprovider \
  tests/test_roundtrip.py tests/test_stale.py tests/test_pytest_plugin.py "$@"
