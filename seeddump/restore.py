"""restoredump: verify a dump, restore it beside the target database, then swap it in.

The target database is never written to. The dump goes into a scratch database on the same server;
only when pg_restore succeeded and every table has the row count the metadata promises are the two
renamed in one transaction. Until that commit, a failure (or a kill) leaves the target as it was; a
scratch database left behind by a killed run is dropped by the next run.
"""

from __future__ import annotations

import contextlib
import hashlib
import secrets
import signal
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import psycopg
from django.db import connections
from psycopg import sql

from seeddump import dumpfiles, postgres, records, shared, snapshots, staleness
from seeddump.conf import conf
from seeddump.exceptions import SeeddumpError

Progress = Callable[[str], None]

# First key of the advisory locks seeddump takes; the second is a hash of the target's name.
_LOCK_CLASS = 0x5EED


def _quiet(message: str) -> None:
    pass


@dataclass(frozen=True)
class RestorePlan:
    environment: str
    dump_path: Path
    metadata: dumpfiles.Metadata
    using: str
    status: staleness.DumpStatus

    @property
    def server(self) -> postgres.Server:
        return postgres.server_of(connections[self.using].settings_dict)


@dataclass(frozen=True)
class RestoreResult:
    plan: RestorePlan
    database: str
    seconds: float
    tables: int
    rows: int
    from_snapshot: bool = False


def check_not_protected(environment: str) -> None:
    if environment in conf.PROTECTED_ENVIRONMENTS:
        raise SeeddumpError(
            f"Refusing to restore over the protected environment '{environment}' "
            "(SEEDDUMP_PROTECTED_ENVIRONMENTS). Restore into a development or staging environment instead."
        )


def plan_restore(
    environment: str,
    *,
    dump: str | Path | None = None,
    using: str = "default",
    force: bool = False,
    shared_storage: str = "auto",
    progress: Progress = _quiet,
) -> RestorePlan:
    """Finds the dump, reads its metadata and verifies its checksum, all before touching any database.

    A dump holding migrations the code does not have is refused unless ``force``: the code could not
    run against it, and ``migrate`` cannot undo migrations it does not know.

    With a shared storage configured (SEEDDUMP_STORAGE), ``shared_storage`` is "auto" (use a newer shared
    dump when the storage answers), "pull" (the storage must answer) or "offline" (never ask it).
    """
    dumpfiles.validate_environment(environment)
    check_not_protected(environment)
    with postgres.user_errors(postgres.settings_for(using)):
        if dump is None and shared.configured() and shared_storage != "offline":
            shared.sync_latest(environment, conf.DIR, required=shared_storage == "pull", progress=progress)
        return _plan(environment, dump, using, force)


def _plan(environment: str, dump: str | Path | None, using: str, force: bool) -> RestorePlan:
    directory = conf.DIR
    if dump is not None:
        dump_path = dumpfiles.check_dump_path(Path(dump), directory)
    else:
        dump_path = dumpfiles.resolve_latest(directory, environment)
    metadata = dumpfiles.read_metadata(dump_path)
    check_not_protected(metadata.environment)
    if metadata.environment != environment:
        raise SeeddumpError(
            f"{dump_path.name} is a '{metadata.environment}' dump, not '{environment}'. "
            f"Run: python manage.py restoredump {metadata.environment} --dump {dump_path}"
        )
    status = staleness.status_of(dump_path, metadata)
    if status.unknown and not force:
        raise SeeddumpError(
            f"{dump_path.name} holds {len(status.unknown)} migration(s) this code does not have "
            f"({', '.join(f'{app}.{name}' for app, name in status.unknown[:5])}): it was made on another branch "
            "or a newer checkout. Check out matching code or regenerate the dump; --force restores it anyway."
        )
    dumpfiles.verify(dump_path, metadata)
    return RestorePlan(environment=environment, dump_path=dump_path, metadata=metadata, using=using, status=status)


@contextlib.contextmanager
def interrupt_on_sigterm() -> Iterator[None]:
    """Lets SIGTERM unwind like Ctrl-C, so the scratch database is dropped on the way out."""

    def raise_interrupt(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    try:
        previous = signal.signal(signal.SIGTERM, raise_interrupt)
    except ValueError:  # not the main thread: leave signals alone
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _tag(database: str) -> str:
    return hashlib.sha256(database.encode()).hexdigest()[:8]


def scratch_prefix(database: str) -> str:
    return f"seeddump_tmp_{_tag(database)}_"


def retired_prefix(database: str) -> str:
    return f"seeddump_old_{_tag(database)}_"


@contextlib.contextmanager
def target_lock(admin: psycopg.Connection, database: str, progress: Progress) -> Iterator[None]:
    """One restore per target database at a time, server-wide; released if the process dies."""
    args = (_LOCK_CLASS, database)
    (acquired,) = admin.execute("SELECT pg_try_advisory_lock(%s, hashtext(%s))", args).fetchone()  # type: ignore[misc]
    if not acquired:
        progress(f"Waiting for another restore of '{database}' to finish")
        admin.execute(sql.SQL("SET lock_timeout = {}").format(sql.Literal(f"{conf.LOCK_TIMEOUT}s")))
        try:
            admin.execute("SELECT pg_advisory_lock(%s, hashtext(%s))", args)
        except psycopg.errors.LockNotAvailable:
            raise SeeddumpError(
                f"Another restoredump of '{database}' is still running after {conf.LOCK_TIMEOUT}s. "
                "Try again when it has finished."
            ) from None
        finally:
            admin.execute("RESET lock_timeout")
    try:
        yield
    finally:
        with contextlib.suppress(psycopg.Error):
            admin.execute("SELECT pg_advisory_unlock(%s, hashtext(%s))", args)


def _drop_database(admin: psycopg.Connection, name: str) -> None:
    admin.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


def drop_leftovers(admin: psycopg.Connection, database: str) -> list[str]:
    """Drops scratch and retired databases of ``database`` left by runs that were killed."""
    rows = admin.execute(
        "SELECT datname FROM pg_database WHERE starts_with(datname, %s) OR starts_with(datname, %s)",
        (scratch_prefix(database), retired_prefix(database)),
    ).fetchall()
    names = [name for (name,) in rows]
    for name in names:
        _drop_database(admin, name)
    return names


def _owner_clause(admin: psycopg.Connection, like: str) -> sql.Composable | None:
    """``OWNER <owner of like>`` when this user may create databases for that role."""
    row = admin.execute(
        """
        SELECT r.rolname, pg_has_role(current_user, d.datdba, 'MEMBER')
        FROM pg_database d JOIN pg_roles r ON r.oid = d.datdba WHERE d.datname = %s
        """,
        (like,),
    ).fetchone()
    if row is None or not row[1]:
        return None
    return sql.SQL("OWNER {}").format(sql.Identifier(row[0]))


def _create_empty(admin: psycopg.Connection, name: str, like: str) -> None:
    """Creates an empty database with the encoding, locale and owner of ``like`` (when it exists)."""
    query = sql.SQL("CREATE DATABASE {} TEMPLATE template0").format(sql.Identifier(name))
    row = admin.execute(
        "SELECT pg_encoding_to_char(encoding), datcollate, datctype FROM pg_database WHERE datname = %s", (like,)
    ).fetchone()
    if row is not None:
        query += sql.SQL(" ENCODING {} LC_COLLATE {} LC_CTYPE {}").format(*(sql.Literal(v) for v in row))
    owner = _owner_clause(admin, like)
    if owner is not None:
        query += sql.SQL(" ") + owner
    admin.execute(query)


def _check_counts(expected: dict[str, int], actual: dict[str, int]) -> None:
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
            "The database was left unchanged; regenerate the dump."
        )


def _swap(admin: psycopg.Connection, target: str, scratch: str, retired: str, exists: bool) -> None:
    """Puts ``scratch`` in the place of ``target`` in one transaction, ending the target's other sessions."""
    for attempt in range(3):
        if exists:
            admin.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s AND pid <> pg_backend_pid()",
                (target,),
            )
        try:
            with admin.transaction():
                if exists:
                    # RENAME waits up to 5 s for the terminated sessions to go away.
                    admin.execute(
                        sql.SQL("ALTER DATABASE {} RENAME TO {}").format(
                            sql.Identifier(target), sql.Identifier(retired)
                        )
                    )
                admin.execute(
                    sql.SQL("ALTER DATABASE {} RENAME TO {}").format(sql.Identifier(scratch), sql.Identifier(target))
                )
            return
        except psycopg.errors.ObjectInUse:
            if attempt == 2:
                raise SeeddumpError(
                    f"Database '{target}' kept getting new connections, so it could not be replaced. "
                    "Stop the processes that use it (runserver, workers, shells) and try again."
                ) from None


def restore(
    plan: RestorePlan,
    *,
    jobs: int | None = None,
    use_snapshots: bool | None = None,
    database: str | None = None,
    progress: Progress = _quiet,
) -> RestoreResult:
    """Restores a planned dump in place of the alias's database; see the module docstring.

    With ``use_snapshots`` (default: the SEEDDUMP_SNAPSHOTS setting) a cached snapshot of the same dump is
    copied instead of running pg_restore, and a cold restore leaves one behind for next time.
    ``database`` restores into another database on the alias's server; the admin records of the alias's
    own database are then left alone.
    """
    settings_dict = postgres.settings_for(plan.using)
    if database is not None:  # another database on the alias's server, such as its test database
        settings_dict = {**settings_dict, "NAME": database}
    use_snapshots = conf.SNAPSHOTS if use_snapshots is None else use_snapshots
    with postgres.user_errors(settings_dict):
        return _restore(plan, settings_dict, jobs, use_snapshots, progress, record=database is None)


def _restore(
    plan: RestorePlan,
    settings_dict: Mapping[str, Any],
    jobs: int | None,
    use_snapshots: bool,
    progress: Progress,
    record: bool = True,
) -> RestoreResult:
    started = time.monotonic()
    target = str(settings_dict.get("NAME") or "")
    if not target:
        raise SeeddumpError(f"DATABASES['{plan.using}'] has no NAME to restore into.")
    metadata = plan.metadata

    with postgres.connect_maintenance(settings_dict) as admin, target_lock(admin, target, progress):
        for name in drop_leftovers(admin, target):
            progress(f"Dropped {name}, left over by an interrupted restore")
        (exists,) = admin.execute(  # type: ignore[misc]
            "SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = %s)", (target,)
        ).fetchone()
        scratch = scratch_prefix(target) + secrets.token_hex(4)
        snapshot = None
        try:
            if use_snapshots:
                with snapshots.snapshot_lock(admin):
                    snapshot = snapshots.find(admin, metadata)
                    if snapshot is not None:
                        progress(f"Copying the cached snapshot {snapshot.name}")
                        snapshots.clone(admin, snapshot, scratch, _owner_clause(admin, target))
            if snapshot is None:
                _restore_cold(admin, plan, settings_dict, scratch, target, jobs, progress)
                if use_snapshots:
                    _cache_snapshot(admin, scratch, metadata, progress)
            # Verified now, or when the snapshot was made (a snapshot accepts no connections since).
            counts = metadata.record_counts
            carried = records.restore_times(plan.using) if exists and record else {}
            connections[plan.using].close()
            progress(f"Swapping the restored database in for '{target}'")
            _swap(admin, target, scratch, retired_prefix(target) + secrets.token_hex(4), exists)
        except BaseException:
            with contextlib.suppress(psycopg.Error):
                _drop_database(admin, scratch)
            raise
        try:
            # The old database is no longer reachable under its name; drop it now (or on the next run).
            drop_leftovers(admin, target)
            if record:
                carried[plan.dump_path.name] = datetime.now(timezone.utc)
                records.sync_from_disk(plan.using, conf.DIR, carried)
        except KeyboardInterrupt:
            raise SeeddumpError(
                f"Interrupted after the restored database was put in place: '{target}' holds the dump; "
                "the replaced database is dropped by the next restore."
            ) from None
    return RestoreResult(
        plan=plan,
        database=target,
        seconds=time.monotonic() - started,
        tables=len(counts),
        rows=sum(counts.values()),
        from_snapshot=snapshot is not None,
    )


def _restore_cold(
    admin: psycopg.Connection,
    plan: RestorePlan,
    settings_dict: Mapping[str, Any],
    scratch: str,
    target: str,
    jobs: int | None,
    progress: Progress,
) -> None:
    """pg_restore into a new ``scratch`` database, then check every table's row count."""
    pg_restore = postgres.find_program("pg_restore", postgres.server_major(admin), at_least=plan.metadata.pg_dump_major)
    progress(f"Using {pg_restore}")
    _create_empty(admin, scratch, like=target)
    jobs = jobs or conf.RESTORE_JOBS
    progress(f"Restoring {plan.dump_path.name} into a scratch database with {jobs} jobs")
    args = [f"--dbname={scratch}", "--no-owner", "--no-privileges", "--exit-on-error", str(plan.dump_path)]
    if jobs > 1:
        args.insert(0, f"--jobs={jobs}")
    postgres.run(pg_restore, args, settings_dict, dbname=scratch, what="pg_restore")
    progress("Checking row counts against the metadata")
    with postgres.connect(settings_dict, scratch) as restored:
        counts = postgres.count_rows(restored)
    _check_counts(plan.metadata.record_counts, counts)


def _cache_snapshot(admin: psycopg.Connection, scratch: str, metadata: dumpfiles.Metadata, progress: Progress) -> None:
    """Keeps a copy of the verified scratch database for the next restore of this dump; never fails it."""
    try:
        with snapshots.snapshot_lock(admin):
            snapshot = snapshots.create(admin, scratch, metadata)
            dropped = snapshots.prune(admin)
    except psycopg.Error as exc:
        progress(f"Could not cache a snapshot ({str(exc).strip().splitlines()[0]}); the restore goes on")
        return
    if snapshot is not None:
        progress(f"Cached the restored database as snapshot {snapshot.name}")
    for name in dropped:
        progress(f"Dropped the snapshot {name}")
