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
# With no dump it logs how to make one and the database starts empty. A bad checksum, a protected
# environment or a failed restore stops the initialisation (non-zero exit).

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
    [ "$(echo "$item" | tr -d '[:space:]')" != "$env_name" ] ||
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
  [[ "$target" =~ ^$env_name-seeded-v[0-9A-Za-z]+-[0-9]{8}T[0-9]{6}Z(-[0-9]+)?\.dump$ ]] ||
    fail "$link points at '$target', which is not a $env_name dump"
  local dump="$dumps_dir/$target"
  local metadata="${dump%.dump}.metadata.json"
  [ -f "$dump" ] || fail "$link points at $target, which is missing; run generatedump $env_name again"
  [ -f "$metadata" ] || fail "the metadata of $target is missing ($(basename "$metadata")); run generatedump again"

  local expected actual
  expected="$(tr -d '\n' <"$metadata" | sed -n 's/.*"checksum"[[:space:]]*:[[:space:]]*"sha256:\([0-9a-f]\{64\}\)".*/\1/p')"
  [ -n "$expected" ] || fail "$(basename "$metadata") has no sha256 checksum; run generatedump again"
  actual="$(sha256sum "$dump" | cut -d' ' -f1)"
  [ "$actual" = "$expected" ] ||
    fail "checksum mismatch for $target (expected $expected, got $actual): the dump is corrupt; regenerate it"

  local jobs="${SEEDDUMP_RESTORE_JOBS:-$(nproc 2>/dev/null || echo 2)}"
  log "restoring $target into '$database' with $jobs jobs"
  local started=$SECONDS
  pg_restore --no-owner --no-privileges --exit-on-error --jobs="$jobs" \
    --username="$user" --dbname="$database" "$dump" ||
    fail "pg_restore of $target into '$database' failed (see above)"
  log "restored $target into '$database' in $((SECONDS - started))s"
)

seeddump_init_db "$@" || exit 1
