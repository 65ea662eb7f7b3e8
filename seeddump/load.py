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
from typing import Any

from seeddump import databases, driver, dumpfiles, extensions, postgres, sandbox
from seeddump.conf import conf
from seeddump.driver import sql
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


def _hint(reason: str, metadata: dumpfiles.Metadata, server_major: int) -> str:
    """What a PostgreSQL error means for a restore, when it usually means one thing."""
    if "unrecognized configuration parameter" in reason and metadata.pg_dump_major > server_major:
        return (
            f" This dump was made by pg_dump {metadata.pg_dump_major} and this server is PostgreSQL {server_major}: "
            "a dump of a newer server can use what an older one lacks. Make the dump on a server of the same "
            "major version as this one (or older)."
        )
    if "out of shared memory" in reason:
        return (
            " One transaction locks every table it restores: raise max_locks_per_transaction on the server "
            "(and restart it), or restore without --in-place."
        )
    return ""


def into_new(
    admin: driver.Connection,
    archive: dumpfiles.OpenedDump,
    metadata: dumpfiles.Metadata,
    settings_dict: Mapping[str, Any],
    database: str,
    dump_code: sandbox.Sandbox,
    jobs: int | None = None,
    progress: Progress = _quiet,
    extensions_made: Callable[[], None] = lambda: None,
) -> None:
    """pg_restore into ``database`` (new, empty, ours) as ``dump_code``'s login, acting as the owner, then
    check the counts (which run none of the dump's code). ``extensions_made`` is called once the dump's
    extensions are there, before pg_restore starts.

    The caller drops ``database`` when this fails."""
    pg_restore = postgres.find_program("pg_restore", postgres.server_major(admin), at_least=metadata.pg_dump_major)
    progress(f"Using {pg_restore}")
    owner = dump_code.owner
    if dump_code.needed:
        with postgres.connect(settings_dict, database) as conn:
            databases.allow_restore(conn, owner)
    jobs = jobs or conf.RESTORE_JOBS
    args = [f"--dbname={database}", "--no-owner", "--no-privileges", "--exit-on-error"]
    if jobs > 1:
        args.insert(0, f"--jobs={jobs}")
    with extensions.made_beforehand(
        pg_restore, archive.path, archive.fds, settings_dict, database, owner, metadata.extensions
    ) as skip:
        extensions_made()
        login = dump_code.login()
        progress(f"Restoring {archive.name.name} into {database} as '{owner}' with {jobs} jobs")
        try:
            postgres.run(
                pg_restore,
                [*args, *skip, str(archive.path)],
                login,
                dbname=database,
                what=dump_code.describe,
                pass_fds=archive.fds,
            )
        except SeeddumpError as exc:
            hint = _hint(str(exc), metadata, postgres.server_major(admin))
            raise type(exc)(f"{exc}{hint}") from None  # the same kind: pg_restore's failure stays one
    progress("Checking row counts against the metadata")
    with postgres.connect(settings_dict, database) as conn:
        if dump_code.needed:
            databases.end_restore(conn, owner)
            if dump_code.role is not None:  # before anything copies the database
                conn.execute(dump_code.give_away())
            conn.execute(sql.SQL("SET ROLE {}").format(sql.Identifier(owner)))
        counts = postgres.count_rows(conn)
    check_counts(metadata.record_counts, counts, unchanged="The database was left unchanged")


# The in-place restore runs as one psql script in one transaction: empty the database (every schema but
# the system's; public is made again with its owner and privileges), restore, compare the row counts
# with the metadata's, and commit only if they agree.
#
# The extensions the dump needs are kept (``extensions.kept_in_place``): a schema that holds one is emptied
# object by object instead of dropped (relations, routines, types, collations, operators and text search
# objects that belong to no extension; anything else left there fails the restore), another extension there is
# dropped, and the kept extensions' configuration tables lose the rows a user added, where the owner may
# delete them (the extension's own condition says which rows those are).
_EMPTY_DATABASE = r"""
DO $seeddump$
DECLARE
    keep text[] := %(keep)s;
    kept_schemas oid[];
    schema record;
    public_owner text;
    public_acl aclitem[];
    public_comment text;
    item record;
    statements text[];
    statement text;
    leftover text;
BEGIN
    SELECT nspowner::regrole::text, nspacl, obj_description(oid, 'pg_namespace')
    INTO public_owner, public_acl, public_comment FROM pg_namespace WHERE nspname = 'public';
    -- Large objects belong to no schema; the dump brings its own, under the same oids.
    PERFORM lo_unlink(oid) FROM pg_largeobject_metadata;
    SELECT coalesce(array_agg(DISTINCT extnamespace), '{}') INTO kept_schemas
    FROM pg_extension WHERE extname = ANY(keep);
    FOR item IN
        SELECT extname FROM pg_extension WHERE extnamespace = ANY(kept_schemas) AND NOT extname = ANY(keep)
    LOOP
        EXECUTE format('DROP EXTENSION %%I CASCADE', item.extname);
    END LOOP;
    FOR schema IN
        SELECT oid, nspname FROM pg_namespace
        WHERE nspname <> 'information_schema' AND nspname NOT LIKE 'pg\_%%'
    LOOP
        IF NOT schema.oid = ANY(kept_schemas) THEN
            EXECUTE format('DROP SCHEMA %%I CASCADE', schema.nspname);
            CONTINUE;
        END IF;
        -- Every statement is written before the first runs: a CASCADE may drop what a later one names. A part
        -- of another object (pg_depend's 'i', or 'a' on one that goes too: a column's identity or serial
        -- sequence, a partition, a range type's constructors) gets none: it goes with the whole, and a DROP of
        -- its own fails ("column id of table auth_group requires it"). What is still there after the
        -- statements ran (an object with none, such as an operator class or a conversion, or a part of
        -- something kept) is named in ``leftover``.
        FOR pass IN 1..2 LOOP
            WITH objects AS (
                SELECT 'pg_class'::regclass AS catalog, c.oid, c.oid::regclass::text AS what,
                       format('DROP %%s IF EXISTS %%s CASCADE', CASE c.relkind WHEN 'v' THEN 'VIEW'
                              WHEN 'm' THEN 'MATERIALIZED VIEW' WHEN 'S' THEN 'SEQUENCE' WHEN 'f' THEN 'FOREIGN TABLE'
                              ELSE 'TABLE' END, c.oid::regclass) AS drop_statement
                FROM pg_class c WHERE c.relnamespace = schema.oid AND c.relkind IN ('r', 'p', 'v', 'm', 'S', 'f')
                UNION ALL
                SELECT 'pg_proc'::regclass, p.oid, p.oid::regprocedure::text,
                       format('DROP ROUTINE IF EXISTS %%s CASCADE', p.oid::regprocedure)
                FROM pg_proc p WHERE p.pronamespace = schema.oid
                UNION ALL
                SELECT 'pg_type'::regclass, t.oid, t.oid::regtype::text,
                       format('DROP %%s IF EXISTS %%s CASCADE', CASE t.typtype WHEN 'd' THEN 'DOMAIN' ELSE 'TYPE' END,
                              t.oid::regtype)
                FROM pg_type t
                WHERE t.typnamespace = schema.oid AND t.typtype IN ('c', 'd', 'e', 'r')
                  AND (t.typtype <> 'c' OR (SELECT relkind FROM pg_class WHERE oid = t.typrelid) = 'c')
                UNION ALL
                SELECT 'pg_collation'::regclass, o.oid, o.collname::text,
                       format('DROP COLLATION IF EXISTS %%I.%%I CASCADE', schema.nspname, o.collname)
                FROM pg_collation o WHERE o.collnamespace = schema.oid
                UNION ALL
                SELECT 'pg_operator'::regclass, o.oid, o.oid::regoperator::text,
                       format('DROP OPERATOR IF EXISTS %%s CASCADE', o.oid::regoperator)
                FROM pg_operator o WHERE o.oprnamespace = schema.oid
                UNION ALL
                SELECT 'pg_ts_config'::regclass, o.oid, o.oid::regconfig::text,
                       format('DROP TEXT SEARCH CONFIGURATION IF EXISTS %%s CASCADE', o.oid::regconfig)
                FROM pg_ts_config o WHERE o.cfgnamespace = schema.oid
                UNION ALL
                SELECT 'pg_ts_dict'::regclass, o.oid, o.oid::regdictionary::text,
                       format('DROP TEXT SEARCH DICTIONARY IF EXISTS %%s CASCADE', o.oid::regdictionary)
                FROM pg_ts_dict o WHERE o.dictnamespace = schema.oid
                UNION ALL
                SELECT 'pg_conversion'::regclass, o.oid, o.conname::text, NULL FROM pg_conversion o
                WHERE o.connamespace = schema.oid
                UNION ALL
                SELECT 'pg_opclass'::regclass, o.oid, o.opcname::text, NULL FROM pg_opclass o
                WHERE o.opcnamespace = schema.oid
                UNION ALL
                SELECT 'pg_opfamily'::regclass, o.oid, o.opfname::text, NULL FROM pg_opfamily o
                WHERE o.opfnamespace = schema.oid
            ), own AS (
                SELECT * FROM objects
                WHERE NOT EXISTS (SELECT 1 FROM pg_depend d
                                  WHERE d.classid = objects.catalog AND d.objid = objects.oid AND d.deptype = 'e')
            )
            SELECT coalesce(array_agg(drop_statement) FILTER (WHERE drop_statement IS NOT NULL AND NOT EXISTS (
                       SELECT 1 FROM pg_depend d
                       WHERE d.classid = own.catalog AND d.objid = own.oid AND d.refobjid <> own.oid
                         AND (d.deptype = 'i' OR d.deptype = 'a'
                              AND (d.refclassid, d.refobjid) IN (SELECT catalog::oid, oid FROM own)))),
                       '{}'),
                   string_agg(what, ', ')
            INTO statements, leftover
            FROM own;
            EXIT WHEN pass = 2;
            FOREACH statement IN ARRAY statements LOOP
                EXECUTE statement;
            END LOOP;
        END LOOP;
        IF leftover IS NOT NULL THEN
            RAISE EXCEPTION 'the schema %% holds the extension the dump needs and also %%, which seeddump cannot '
                'empty', schema.nspname, left(leftover, 200);
        END IF;
    END LOOP;
    FOR item IN
        SELECT config.oid::regclass AS name, config.condition
        FROM pg_extension e, unnest(e.extconfig, e.extcondition) AS config(oid, condition)
        WHERE e.extname = ANY(keep)
          AND (SELECT relkind FROM pg_class WHERE oid = config.oid) = 'r'
          AND has_table_privilege(config.oid, 'DELETE')
    LOOP
        EXECUTE format('DELETE FROM %%s %%s', item.name, coalesce(item.condition, ''));
    END LOOP;
    IF public_owner IS NOT NULL AND NOT EXISTS (SELECT 1 FROM pg_namespace WHERE nspname = 'public') THEN
        EXECUTE format('CREATE SCHEMA public AUTHORIZATION %%s', public_owner);
        IF public_comment IS NOT NULL THEN  -- else every later dump says COMMENT ON SCHEMA public IS ''
            EXECUTE format('COMMENT ON SCHEMA public IS %%L', public_comment);
        END IF;
        IF public_acl IS NOT NULL THEN
            EXECUTE format('REVOKE ALL ON SCHEMA public FROM %%s', public_owner);
            FOR item IN SELECT grantee, privilege_type, is_grantable FROM aclexplode(public_acl) LOOP
                EXECUTE format('GRANT %%s ON SCHEMA public TO %%s%%s', item.privilege_type,
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
    -- No policy runs: one that would apply fails the count instead. A table that forces row-level security
    -- on its owner is counted with the force lifted for that one statement.
    PERFORM set_config('row_security', 'off', true);
    FOR tables IN %(tables)s LOOP
        IF tables.forced THEN
            EXECUTE format('ALTER TABLE %%I.%%I NO FORCE ROW LEVEL SECURITY', tables.nspname, tables.relname);
        END IF;
        EXECUTE format('SELECT count(*) FROM %%I.%%I', tables.nspname, tables.relname) INTO n;
        IF tables.forced THEN
            EXECUTE format('ALTER TABLE %%I.%%I FORCE ROW LEVEL SECURITY', tables.nspname, tables.relname);
        END IF;
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


# The in-place load replaces the database on psql's own connection, not on the one that holds the target's
# advisory lock (``restore.target_lock``). So psql checks, first in its transaction and again right before
# COMMIT, that the lock is still held by that session: if it ended (terminated, a network blip, the dump's own
# code ending it), another restore may hold the lock now, and the transaction fails and is rolled back.
# (psql cannot take the lock itself: that session holds it, and a lock handed over would go to a restore
# already waiting for it first.)
_HOLDING_THE_LOCK = r"""
DO $seeddump$
BEGIN
    IF NOT EXISTS (
        SELECT FROM pg_catalog.pg_locks
        WHERE locktype = 'advisory' AND granted AND mode = 'ExclusiveLock'
          AND pid = %(pid)s AND classid = %(classid)s AND objid = %(objid)s AND objsubid = 2
    ) THEN
        RAISE EXCEPTION 'seeddump lock: %(when)s';
    END IF;
END
$seeddump$;
"""


def _target_lock(admin: driver.Connection, database: str) -> tuple[int, int, int]:
    """(pid, classid, objid) of the exclusive advisory lock ``admin``'s session holds on ``database``."""
    row = admin.execute(
        """
        SELECT pid, classid::int8, objid::int8 FROM pg_catalog.pg_locks
        WHERE pid = pg_catalog.pg_backend_pid() AND locktype = 'advisory' AND granted AND mode = 'ExclusiveLock'
          AND objid = (pg_catalog.hashtext(%s))::int::oid AND objsubid = 2
        """,
        (database,),
    ).fetchone()
    if row is None:
        raise SeeddumpError(
            f"The in-place restore of '{database}' needs the lock of '{database}', and does not hold it."
        )
    return int(row[0]), int(row[1]), int(row[2])


def _holding_the_lock(lock: tuple[int, int, int], when: str) -> str:
    pid, classid, objid = lock
    return _HOLDING_THE_LOCK % {"pid": pid, "classid": classid, "objid": objid, "when": when}


class RolledBack(SeeddumpError):
    """The in-place transaction failed and psql said so before it ended: the database is as it was."""


def in_place(
    admin: driver.Connection,
    archive: dumpfiles.OpenedDump,
    metadata: dumpfiles.Metadata,
    settings_dict: Mapping[str, Any],
    database: str,
    dump_code: sandbox.Sandbox,
    progress: Progress = _quiet,
    committed: Callable[[], bool] = lambda: False,
) -> None:
    """Replaces everything in ``database`` with the dump in one transaction, as ``dump_code``'s login acting
    as the owner; a failure (pg_restore, the row counts, a lock that does not come) rolls it all back.
    ``committed()`` says, when something stops it, whether the transaction committed all the same."""
    major = max(postgres.server_major(admin), metadata.pg_dump_major)
    pg_restore = postgres.find_program("pg_restore", postgres.server_major(admin), at_least=metadata.pg_dump_major)
    psql = postgres.find_program("psql", postgres.server_major(admin), at_least=major)
    owner = dump_code.owner
    # Set before the transaction begins: a role's idle_in_transaction_session_timeout would end the session
    # while it waits for pg_restore's first statements.
    session = (
        "SET lock_timeout = {};\nSET statement_timeout = 0;\nSET idle_in_transaction_session_timeout = 0;\n".format(
            sql.Literal(f"{conf.LOCK_TIMEOUT}s").as_string(admin)
        )
    )
    lock = _target_lock(admin, database)
    rolled_back = False  # psql said so and exited: nothing to ask the server

    def load_committed() -> bool:
        return not rolled_back and committed()

    with extensions.kept_in_place(
        pg_restore, archive.path, archive.fds, settings_dict, database, owner, metadata.extensions, load_committed
    ) as kept:
        keep = sql.SQL("ARRAY[{}]::text[]").format(sql.SQL(", ").join(sql.Literal(name) for name in kept.keep))
        login = dump_code.login()
        epilogue = _CHECK_COUNTS % {
            "expected": sql.Literal(json.dumps(metadata.record_counts)).as_string(admin),
            "tables": postgres.TABLES_SQL,
        }
        if dump_code.role is not None:  # as the login itself, which may give away what it owns
            epilogue += "\nSET ROLE NONE;\n" + dump_code.give_away().as_string(admin)
        progress(f"Restoring {archive.name.name} into '{database}' in place, in one transaction, as '{owner}'")
        try:
            postgres.restore_in_transaction(
                pg_restore,
                psql,
                archive.path,
                session,
                _holding_the_lock(lock, "before") + _EMPTY_DATABASE % {"keep": keep.as_string(admin)},
                epilogue + _holding_the_lock(lock, "after"),
                login,
                database,
                pass_fds=archive.fds,
                restore_args=kept.restore_args,
            )
        except postgres.ScriptFailed as exc:
            rolled_back = True
            if exc.reason.startswith("seeddump counts: "):
                raise RolledBack(
                    "The restored data does not match the dump's metadata: "
                    f"{exc.reason.removeprefix('seeddump counts: ')}. The database was left unchanged; "
                    "regenerate the dump."
                ) from None
            if exc.reason.startswith("seeddump lock: "):
                when = exc.reason.removeprefix("seeddump lock: ")
                raise RolledBack(
                    f"The in-place restore of '{database}' was "
                    + ("stopped before it began" if when.startswith("before") else "rolled back")
                    + f", leaving it unchanged: seeddump's session holding the lock of '{database}' (server "
                    f"process {lock[0]}) ended, so another restore may be running. Run restoredump again when it "
                    "has finished."
                ) from None
            hint = _hint(exc.reason, metadata, postgres.server_major(admin))
            raise RolledBack(
                f"The in-place restore of '{database}' failed and was rolled back, leaving it unchanged: "
                f"{exc.reason.rstrip('.')}.{hint}"
            ) from None
