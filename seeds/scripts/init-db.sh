#!/usr/bin/env bash
# Restores the latest seeddump dump when the official postgres image initialises an empty data directory.
#
# Mounted by docker-compose.dev.yml as /docker-entrypoint-initdb.d/01-init-db.sh, with the dumps folder as
# /docker-entrypoint-initdb.d/dumps. The image runs it once, against its temporary local server, with
# POSTGRES_USER and POSTGRES_DB set. It needs no Python: the checksum is checked with sha256sum.
#
#   SEEDDUMP_ENV                       environment to restore (default: dev)
#   SEEDDUMP_DUMPS_DIR                 folder of the dumps (default: /docker-entrypoint-initdb.d/dumps)
#   SEEDDUMP_PROTECTED_ENVIRONMENTS    comma-separated environments never restored (default: prod,production)
#   SEEDDUMP_RESTORE_JOBS              parallel pg_restore jobs (default: the CPU count)
#
# With no dump it logs how to make one and the database starts empty. The dump is restored into a new
# database beside POSTGRES_DB, checked (the metadata's environment, size and sha256 before; every table's row
# count after) and only then renamed into its place: a bad checksum, a protected environment, a failed
# restore or wrong row counts stop the initialisation (non-zero exit) with POSTGRES_DB still empty, never
# half restored. It does not check SEEDDUMP_SIGNING_KEY signatures (that needs Python): restore signed
# dumps with restoredump. It restores the database only: a dump's media archive (<dump>.media.tar.gz, made
# by generatedump --media) holds files for the app's MEDIA_ROOT, not for this container, and is left alone
# (one log line says so); restoredump restores both.

# The image sources init scripts that are not executable: keep options and exits inside a subshell.
seeddump_init_db() (
  set -Eeuo pipefail

  log() { printf 'seeddump init-db: %s\n' "$*"; }
  fail() {
    printf 'seeddump init-db: ERROR: %s\n' "$*" >&2
    exit 1
  }

  local env_name="${SEEDDUMP_ENV:-dev}"
  local dumps_dir="${SEEDDUMP_DUMPS_DIR:-/docker-entrypoint-initdb.d/dumps}"
  local protected="${SEEDDUMP_PROTECTED_ENVIRONMENTS:-prod,production}"
  local database="${POSTGRES_DB:-${POSTGRES_USER:-postgres}}"
  local user="${POSTGRES_USER:-postgres}"

  [[ "$env_name" =~ ^[a-z][a-z0-9_-]{0,31}$ ]] ||
    fail "invalid SEEDDUMP_ENV '$env_name': use lower-case letters, digits, '-' or '_'"
  local item
  IFS=',' read -r -a protected_list <<<"$protected"
  for item in "${protected_list[@]}"; do
    [ "$(echo "$item" | tr -d '[:space:]' | tr '[:upper:]' '[:lower:]')" != "$env_name" ] ||
      fail "refusing to restore the protected environment '$env_name' (SEEDDUMP_PROTECTED_ENVIRONMENTS)"
  done

  local link="$dumps_dir/$env_name-seeded-latest.dump"
  if [ ! -L "$link" ] && [ ! -e "$link" ]; then
    log "no $env_name dump in $dumps_dir: the database '$database' starts empty."
    log "to make one: python manage.py migrate && python manage.py seed $env_name && python manage.py generatedump $env_name"
    log "then recreate the volume: docker compose -f docker-compose.dev.yml down -v && docker compose -f docker-compose.dev.yml up"
    return 0
  fi

  local target
  target="$(readlink "$link" || true)"
  [ -n "$target" ] || fail "$link should be a symlink to a dump; run generatedump again"
  case "$target" in
    */*) fail "$link points outside the dumps folder ($target)" ;;
  esac
  [[ "$target" =~ ^$env_name-seeded-v[0-9A-Za-z]+(-dirty-[0-9a-f]{8})?-[0-9]{8}T[0-9]{6}Z(-[0-9]+)?\.dump$ ]] ||
    fail "$link points at '$target', which is not a $env_name dump"
  local dump="$dumps_dir/$target"
  local metadata="${dump%.dump}.metadata.json"
  [ -f "$dump" ] || fail "$link points at $target, which is missing; run generatedump $env_name again"
  [ -f "$metadata" ] || fail "the metadata of $target is missing ($(basename "$metadata")); run generatedump again"

  # The top-level fields only: a dump made with --media has a "media" object with a checksum and a size of
  # its own (no nested braces), which must never be read as the dump's.
  local meta_text
  meta_text="$(tr -d '\n' <"$metadata" | sed 's/"media"[[:space:]]*:[[:space:]]*{[^}]*}//')"
  local expected actual
  expected="$(printf '%s' "$meta_text" | sed -n 's/.*"checksum"[[:space:]]*:[[:space:]]*"sha256:\([0-9a-f]\{64\}\)".*/\1/p')"
  [ -n "$expected" ] || fail "$(basename "$metadata") has no sha256 checksum; run generatedump again"
  actual="$(sha256sum "$dump" | cut -d' ' -f1)"
  [ "$actual" = "$expected" ] ||
    fail "checksum mismatch for $target (expected $expected, got $actual): the dump is corrupt; regenerate it"

  # The metadata must describe this dump: its environment and its size, as restoredump checks them.
  local meta_env meta_size size
  meta_env="$(printf '%s' "$meta_text" | sed -n 's/.*"environment"[[:space:]]*:[[:space:]]*"\([a-z0-9_-]*\)".*/\1/p')"
  [ "$meta_env" = "$env_name" ] ||
    fail "$(basename "$metadata") says environment '$meta_env', not '$env_name'; copy the dump with its own metadata"
  meta_size="$(printf '%s' "$meta_text" | sed -n 's/.*"sizeBytes"[[:space:]]*:[[:space:]]*\([0-9]\{1,19\}\).*/\1/p')"
  size="$(wc -c <"$dump" | tr -d ' ')"
  [ "$meta_size" = "$size" ] ||
    fail "$target is $size bytes but its metadata says '$meta_size': it is truncated or was changed; regenerate it"

  local psql_cmd=(env PGOPTIONS="-c client_min_messages=warning" psql --no-psqlrc --quiet --set=ON_ERROR_STOP=1 --username="$user")
  local scratch="${database:0:40}_seeddump_new"
  "${psql_cmd[@]}" --dbname=postgres --set=scratch="$scratch" <<'SQL' >/dev/null ||
SELECT format('DROP DATABASE IF EXISTS %I', :'scratch') \gexec
SELECT format('CREATE DATABASE %I', :'scratch') \gexec
SQL
    fail "could not create the database '$scratch' to restore into"
  drop_scratch() {
    "${psql_cmd[@]}" --dbname=postgres --set=scratch="$scratch" >/dev/null 2>&1 <<'SQL' || true
SELECT format('DROP DATABASE IF EXISTS %I', :'scratch') \gexec
SQL
  }

  local jobs="${SEEDDUMP_RESTORE_JOBS:-$(nproc 2>/dev/null || echo 2)}"
  log "restoring $target beside '$database' (into '$scratch') with $jobs jobs"
  local started=$SECONDS
  if ! pg_restore --no-owner --no-privileges --exit-on-error --jobs="$jobs" \
    --username="$user" --dbname="$scratch" "$dump"; then
    drop_scratch
    fail "pg_restore of $target failed (see above); '$database' was left empty"
  fi

  # Every table's row count must be the metadata's, as restoredump checks it.
  if ! SEEDDUMP_METADATA="$metadata" "${psql_cmd[@]}" --dbname="$scratch" <<'SQL'; then
\set metadata `cat "$SEEDDUMP_METADATA"`
SELECT set_config('seeddump.metadata', :'metadata', false) \g /dev/null
DO $seeddump$
DECLARE
    expected jsonb := (current_setting('seeddump.metadata')::jsonb)->'recordCounts';
    actual jsonb := '{}';
    tables record;
    n bigint;
    problems text;
BEGIN
    FOR tables IN
        SELECT ns.nspname, c.relname FROM pg_class c JOIN pg_namespace ns ON ns.oid = c.relnamespace
        WHERE c.relkind IN ('r', 'p') AND NOT c.relispartition
          AND ns.nspname NOT IN ('pg_catalog', 'information_schema') AND ns.nspname NOT LIKE 'pg\_%'
          AND NOT EXISTS (SELECT 1 FROM pg_depend d
                          WHERE d.classid = 'pg_class'::regclass AND d.objid = c.oid AND d.deptype = 'e')
    LOOP
        EXECUTE format('SELECT count(*) FROM %I.%I', tables.nspname, tables.relname) INTO n;
        actual := actual || jsonb_build_object(CASE WHEN tables.nspname = 'public' THEN tables.relname
                                                    ELSE tables.nspname || '.' || tables.relname END, n);
    END LOOP;
    SELECT string_agg(coalesce(e.key, a.key) || ' has ' || coalesce(a.value::text, 'no') || ' rows, the metadata says '
                      || coalesce(e.value::text, 'nothing'), '; ' ORDER BY coalesce(e.key, a.key))
    INTO problems
    FROM jsonb_each(expected) e FULL JOIN jsonb_each(actual) a ON a.key = e.key
    WHERE e.value IS DISTINCT FROM a.value;
    IF problems IS NOT NULL THEN
        RAISE EXCEPTION 'the restored data does not match the metadata: %', left(problems, 500);
    END IF;
END
$seeddump$;
SQL
    drop_scratch
    fail "$target restored, but not as its metadata says (see above); '$database' was left empty; regenerate the dump"
  fi

  # Into place: POSTGRES_DB (empty, just made by the image) goes, the checked copy takes its name.
  "${psql_cmd[@]}" --dbname=postgres --set=scratch="$scratch" --set=database="$database" <<'SQL' >/dev/null ||
BEGIN;
SELECT format('ALTER DATABASE %I RENAME TO %I', :'database', :'scratch' || '_old') \gexec
SELECT format('ALTER DATABASE %I RENAME TO %I', :'scratch', :'database') \gexec
COMMIT;
SELECT format('DROP DATABASE %I', :'scratch' || '_old') \gexec
SQL
    fail "could not put the restored '$scratch' in the place of '$database'"
  log "restored $target into '$database' in $((SECONDS - started))s"
  if [ -f "${dump%.dump}.media.tar.gz" ]; then
    log "the dump also has media files ($(basename "${dump%.dump}.media.tar.gz")): this script restores the database only;"
    log "the files belong in the app's MEDIA_ROOT: run python manage.py restoredump $env_name where the app runs"
  fi
)

seeddump_init_db "$@" || exit 1
