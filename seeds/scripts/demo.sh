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
