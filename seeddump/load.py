"""Loading a dump into a database with pg_restore, as the owner role, and checking what arrived.

``into_new`` restores into a new database seeddump makes beside the target (the swap and the snapshot
build use it); ``in_place`` restores into the existing database in one transaction, for roles that may
not create databases. Either way the row counts are checked against the metadata before the result
can be seen, and the dump's SQL runs with the rights of the owner role (pg_restore ``--role``), never
with those of a more privileged role that connects.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql

from seeddump import databases, dumpfiles, postgres
from seeddump.conf import conf
from seeddump.exceptions import SeeddumpError

Progress = Callable[[str], None]


def _quiet(message: str) -> None:
    pass


def check_counts(expected: dict[str, int], actual: dict[str, int], *, unchanged: str) -> None:
    problems = []
    for table in sorted(set(expected) | set(actual)):
        if table not in actual:
            problems.append(f"table {table} is missing")
        elif table not in expected:
            problems.append(f"table {table} is not in the metadata")
        elif expected[table] != actual[table]:
            problems.append(f"{table} has {actual[table]} rows, the metadata says {expected[table]}")
    if problems:
        more = f" (and {len(problems) - 3} more)" if len(problems) > 3 else ""
        raise SeeddumpError(
            f"The restored data does not match the dump's metadata: {'; '.join(problems[:3])}{more}. "
            f"{unchanged}; regenerate the dump."
        )


def _owner_args(owner: str, user: str) -> list[str]:
    return [] if owner == user else [f"--role={owner}"]


def into_new(
    admin: psycopg.Connection,
    dump_path: Path,
    metadata: dumpfiles.Metadata,
    settings_dict: Mapping[str, Any],
    database: str,
    owner: str,
    jobs: int | None = None,
    progress: Progress = _quiet,
) -> None:
    """pg_restore as ``owner`` into ``database`` (new, empty, ours), then check the counts.

    The caller drops ``database`` when this fails."""
    pg_restore = postgres.find_program("pg_restore", postgres.server_major(admin), at_least=metadata.pg_dump_major)
    progress(f"Using {pg_restore}")
    user = databases.current_user(admin)
    if owner != user:
        with postgres.connect(settings_dict, database) as conn:
            databases.allow_restore(conn, owner)
    jobs = jobs or conf.RESTORE_JOBS
    progress(f"Restoring {dump_path.name} into {database} as '{owner}' with {jobs} jobs")
    args = [f"--dbname={database}", *_owner_args(owner, user), "--no-owner", "--no-privileges", "--exit-on-error"]
    if jobs > 1:
        args.insert(0, f"--jobs={jobs}")
    what = "pg_restore" if owner == user else f"pg_restore as '{owner}'"  # the dump's SQL has that role's rights
    postgres.run(pg_restore, [*args, str(dump_path)], settings_dict, dbname=database, what=what)
    progress("Checking row counts against the metadata")
    with postgres.connect(settings_dict, database) as conn:
        if owner != user:
            databases.end_restore(conn, owner)
            conn.execute(sql.SQL("SET ROLE {}").format(sql.Identifier(owner)))
        counts = postgres.count_rows(conn)
    check_counts(metadata.record_counts, counts, unchanged="The database was left unchanged")


# The in-place restore runs as one psql script in one transaction: empty the database (every schema but
# the system's; public is made again with its owner and privileges), restore, compare the row counts
# with the metadata's, and commit only if they agree.
_EMPTY_DATABASE = r"""
DO $seeddump$
DECLARE
    schema record;
    public_owner text;
    public_acl aclitem[];
    item record;
BEGIN
    SELECT nspowner::regrole::text, nspacl INTO public_owner, public_acl FROM pg_namespace WHERE nspname = 'public';
    FOR schema IN
        SELECT nspname FROM pg_namespace
        WHERE nspname <> 'information_schema' AND nspname NOT LIKE 'pg\_%'
    LOOP
        EXECUTE format('DROP SCHEMA %I CASCADE', schema.nspname);
    END LOOP;
    IF public_owner IS NOT NULL THEN
        EXECUTE format('CREATE SCHEMA public AUTHORIZATION %s', public_owner);
        IF public_acl IS NOT NULL THEN
            EXECUTE format('REVOKE ALL ON SCHEMA public FROM %s', public_owner);
            FOR item IN SELECT grantee, privilege_type, is_grantable FROM aclexplode(public_acl) LOOP
                EXECUTE format('GRANT %s ON SCHEMA public TO %s%s', item.privilege_type,
                    CASE WHEN item.grantee = 0 THEN 'PUBLIC' ELSE item.grantee::regrole::text END,
                    CASE WHEN item.is_grantable THEN ' WITH GRANT OPTION' ELSE '' END);
            END LOOP;
        END IF;
    END IF;
END
$seeddump$;
"""

_CHECK_COUNTS = r"""
DO $seeddump$
DECLARE
    expected jsonb := %(expected)s;
    actual jsonb := '{}';
    tables record;
    n bigint;
    problems text;
BEGIN
    FOR tables IN %(tables)s LOOP
        EXECUTE format('SELECT count(*) FROM %%I.%%I', tables.nspname, tables.relname) INTO n;
        actual := actual || jsonb_build_object(CASE WHEN tables.nspname = 'public' THEN tables.relname
                                                    ELSE tables.nspname || '.' || tables.relname END, n);
    END LOOP;
    SELECT string_agg(coalesce(e.key, a.key) || ' has ' || coalesce(a.value::text, 'no') || ' rows, '
                      || 'the metadata says ' || coalesce(e.value::text, 'nothing'), '; '
                      ORDER BY coalesce(e.key, a.key))
    INTO problems
    FROM jsonb_each(expected) e FULL JOIN jsonb_each(actual) a ON a.key = e.key
    WHERE e.value IS DISTINCT FROM a.value;
    IF problems IS NOT NULL THEN
        RAISE EXCEPTION 'seeddump counts: %%', left(problems, 500);
    END IF;
END
$seeddump$;
"""


def in_place(
    admin: psycopg.Connection,
    dump_path: Path,
    metadata: dumpfiles.Metadata,
    settings_dict: Mapping[str, Any],
    database: str,
    owner: str,
    progress: Progress = _quiet,
) -> None:
    """Replaces everything in ``database`` with the dump in one transaction, as ``owner``; a failure
    (pg_restore, the row counts, a lock that does not come) rolls it all back."""
    major = max(postgres.server_major(admin), metadata.pg_dump_major)
    pg_restore = postgres.find_program("pg_restore", postgres.server_major(admin), at_least=metadata.pg_dump_major)
    psql = postgres.find_program("psql", postgres.server_major(admin), at_least=major)
    user = databases.current_user(admin)
    prologue = "SET lock_timeout = {};\n".format(sql.Literal(f"{conf.LOCK_TIMEOUT}s").as_string(admin))
    if owner != user:
        prologue += sql.SQL("SET ROLE {};\n").format(sql.Identifier(owner)).as_string(admin)
    epilogue = _CHECK_COUNTS % {
        "expected": sql.Literal(json.dumps(metadata.record_counts)).as_string(admin),
        "tables": postgres.TABLES_SQL,
    }
    progress(f"Restoring {dump_path.name} into '{database}' in place, in one transaction, as '{owner}'")
    try:
        postgres.restore_in_transaction(
            pg_restore, psql, dump_path, prologue + _EMPTY_DATABASE, epilogue, settings_dict, database
        )
    except postgres.ScriptFailed as exc:
        if exc.reason.startswith("seeddump counts: "):
            raise SeeddumpError(
                "The restored data does not match the dump's metadata: "
                f"{exc.reason.removeprefix('seeddump counts: ')}. The database was left unchanged; "
                "regenerate the dump."
            ) from None
        raise SeeddumpError(
            f"The in-place restore of '{database}' failed and was rolled back, leaving it unchanged: {exc.reason}."
        ) from None
