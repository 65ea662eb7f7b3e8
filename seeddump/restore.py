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
from dataclasses import dataclass, replace
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
class Followup:
    """What a restore leaves to do once the restored database is in place (see ``finish``)."""

    using: str
    database: str
    dump_path: Path
    retired: tuple[str, ...]  # the replaced database, under its new name
    build_snapshot: bool  # restored with pg_restore: cache a snapshot of the dump
    ready_copy: bool  # prepare a ready copy for the next restore of this dump into ``database``
    empty_database: bool = True  # prepare an empty database for the next pg_restore into ``database``
    # The admin's dump records to write into the restored database: when each dump was last restored.
    restore_times: dict[str, datetime] | None = None

    def describe(self) -> list[str]:
        work = ["drop the replaced database"] if self.retired else []
        if self.build_snapshot:
            work.append("cache a snapshot of the dump")
        if self.ready_copy:
            work.append("prepare a ready copy for the next restore")
        if self.empty_database:
            work.append("prepare an empty database for the next pg_restore")
        return work


@dataclass(frozen=True)
class RestoreResult:
    plan: RestorePlan
    database: str
    seconds: float
    tables: int
    rows: int
    source: str = "pg_restore"  # or "snapshot", or "ready copy"
    followup: Followup | None = None  # work left to a background process
    background_pid: int | None = None

    @property
    def from_snapshot(self) -> bool:
        return self.source != "pg_restore"


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


def target_lock(admin: psycopg.Connection, database: str, progress: Progress) -> contextlib.AbstractContextManager:
    """One restore per target database at a time, server-wide; released if the process dies."""
    return postgres.advisory_lock(
        admin,
        (_LOCK_CLASS, database),
        waiting=lambda holder: progress(f"Waiting for another restore of '{database}' to finish ({holder})"),
        busy=lambda holder: (
            f"Another restoredump of '{database}' ({holder}) is still running after {conf.LOCK_TIMEOUT}s. "
            "Try again when it has finished."
        ),
    )


def _drop_database(admin: psycopg.Connection, name: str) -> None:
    admin.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


def drop_leftovers(admin: psycopg.Connection, database: str, *, scratch: bool = True) -> list[str]:
    """Drops scratch and replaced databases of ``database`` left by runs that were killed or by ``finish``.

    Only call it with ``scratch`` while holding the target's lock: a running restore's scratch database
    looks the same. Replaced databases are never in use."""
    prefixes = (scratch_prefix(database) if scratch else retired_prefix(database), retired_prefix(database))
    rows = admin.execute(
        "SELECT datname FROM pg_database WHERE starts_with(datname, %s) OR starts_with(datname, %s)", prefixes
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


def _claim_empty(admin: psycopg.Connection, name: str, like: str) -> bool:
    """Renames the empty database prepared for ``like`` to ``name``, if one is there and still made like it.

    Saves a CREATE DATABASE (a quarter of a second) on the cold path. Call it holding the target lock."""
    prepared = snapshots.empty_name(like)
    row = admin.execute(
        """
        SELECT (e.encoding, e.datcollate, e.datctype, e.datdba) = (t.encoding, t.datcollate, t.datctype, t.datdba)
        FROM pg_database e JOIN pg_database t ON t.datname = %s WHERE e.datname = %s
        """,
        (like, prepared),
    ).fetchone()
    if row is None:
        return False
    if not row[0]:  # the target was recreated differently since
        _drop_database(admin, prepared)
        return False
    admin.execute(sql.SQL("ALTER DATABASE {} RENAME TO {}").format(sql.Identifier(prepared), sql.Identifier(name)))
    admin.execute(sql.SQL("ALTER DATABASE {} WITH ALLOW_CONNECTIONS true").format(sql.Identifier(name)))
    return True


def _prepare_empty(admin: psycopg.Connection, like: str) -> str | None:
    """Creates the empty database for the next pg_restore into ``like``, closed to connections until then."""
    prepared = snapshots.empty_name(like)
    (exists,) = admin.execute(  # type: ignore[misc]
        "SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = %s)", (prepared,)
    ).fetchone()
    if exists:
        return None
    try:
        _create_empty(admin, prepared, like)
    except psycopg.errors.DuplicateDatabase:  # another background process was quicker
        return None
    snapshots.label_empty(admin, prepared, like)
    return prepared


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
                # A ready copy was closed to connections until now.
                admin.execute(sql.SQL("ALTER DATABASE {} WITH ALLOW_CONNECTIONS true").format(sql.Identifier(target)))
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
    background: bool = False,
    progress: Progress = _quiet,
) -> RestoreResult:
    """Restores a planned dump in place of the alias's database; see the module docstring.

    With ``use_snapshots`` (default: the SEEDDUMP_SNAPSHOTS setting) a ready copy or a cached snapshot of
    the same dump is used instead of running pg_restore, and a cold restore leaves a snapshot behind.
    ``database`` restores into another database on the alias's server; the admin records of the alias's
    own database are then left alone.

    With ``background``, the function returns as soon as the restored database is in place and leaves
    the rest (dropping the replaced database, caching the snapshot, preparing a ready copy for the next
    restore) to a background process (``seeddump.background``); ``RestoreResult.background_pid`` is its
    process id. Otherwise that work is done before returning, without a ready copy.
    """
    settings_dict = postgres.settings_for(plan.using)
    if database is not None:  # another database on the alias's server, such as its test database
        settings_dict = {**settings_dict, "NAME": database}
    use_snapshots = conf.SNAPSHOTS if use_snapshots is None else use_snapshots
    with postgres.user_errors(settings_dict):
        result = _restore(plan, settings_dict, jobs, use_snapshots, background, progress, record=database is None)
    if result.followup is None:
        return result
    from seeddump import background as background_process

    try:
        pid = background_process.start(result.followup)
    except OSError as exc:  # the log cannot be written, or no process can be started: the restore stands
        progress(f"Could not start the background process ({exc.strerror or exc}); finishing here")
        pid = None
    if pid is None:  # or no settings module a new process could load
        with postgres.user_errors(settings_dict):
            finish(result.followup, settings_dict, progress)
        return replace(result, followup=None)
    return replace(result, background_pid=pid)


def _restore(
    plan: RestorePlan,
    settings_dict: Mapping[str, Any],
    jobs: int | None,
    use_snapshots: bool,
    background: bool,
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
        retired = retired_prefix(target) + secrets.token_hex(4)
        source = "pg_restore"
        try:
            if use_snapshots:
                source = _copy_cached(admin, metadata, target, scratch, progress)
            if source == "pg_restore":
                _restore_cold(admin, plan.dump_path, metadata, settings_dict, scratch, target, jobs, progress)
                if use_snapshots and not background:
                    _cache_snapshot(admin, scratch, metadata, progress)
            # Verified now, or when the snapshot was made (a snapshot accepts no connections since).
            counts = metadata.record_counts
            carried = records.restore_times(plan.using) if exists and record else {}
            connections[plan.using].close()
            progress(f"Swapping the restored database in for '{target}'")
            _swap(admin, target, scratch, retired, exists)
        except BaseException:
            with contextlib.suppress(psycopg.Error):
                _drop_database(admin, scratch)
            raise
        if record:
            carried[plan.dump_path.name] = datetime.now(timezone.utc)
        followup = Followup(
            using=plan.using,
            database=target,
            dump_path=plan.dump_path,
            retired=(retired,) if exists else (),
            build_snapshot=use_snapshots and source == "pg_restore",
            ready_copy=use_snapshots and conf.READY_COPIES,
            restore_times=carried if record else None,
        )
        try:
            if not background:
                # The old database is no longer reachable under its name; drop it now (or on the next run).
                drop_leftovers(admin, target)
                if record:
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
        source=source,
        followup=followup if background else None,
    )


def _copy_cached(
    admin: psycopg.Connection, metadata: dumpfiles.Metadata, target: str, scratch: str, progress: Progress
) -> str:
    """Makes ``scratch`` from this dump's ready copy or snapshot, if the server has one; says which."""
    with snapshots.snapshot_lock(admin, progress):
        ready = snapshots.find_ready(admin, metadata, target) if conf.READY_COPIES else None
        if ready is not None:
            progress(f"Using the ready copy {ready.name}")
            snapshots.claim_ready(admin, ready, scratch)
            return "ready copy"
        snapshot = snapshots.find(admin, metadata)
        if snapshot is not None:
            progress(f"Copying the cached snapshot {snapshot.name}")
            snapshots.clone(admin, snapshot, scratch, _owner_clause(admin, target))
            return "snapshot"
    return "pg_restore"


def finish(followup: Followup, settings_dict: Mapping[str, Any], progress: Progress = _quiet) -> None:
    """Does what a restore left for later: drops the replaced database, caches the dump's snapshot (with
    pg_restore, into a build database renamed once verified), prepares the ready copy and an empty
    database for the next pg_restore.

    Safe to run while the restored database is in use, and next to another restore: snapshots and ready
    copies are made under the snapshot lock, which a restore takes to look for them.
    """
    with postgres.connect_maintenance(settings_dict) as admin:
        for name in drop_leftovers(admin, followup.database, scratch=False):
            progress(f"Dropped the replaced database {name}")
        if followup.build_snapshot or followup.ready_copy:
            _finish_cache(admin, followup, settings_dict, progress)
        if followup.restore_times is not None:
            recorded = records.sync_from_disk(followup.using, conf.DIR, followup.restore_times)
            progress(f"Recorded {recorded} dump(s) for the admin")
        if followup.empty_database and (prepared := _prepare_empty(admin, followup.database)):
            progress(f"Prepared the empty database {prepared}")


def _finish_cache(
    admin: psycopg.Connection, followup: Followup, settings_dict: Mapping[str, Any], progress: Progress
) -> None:
    """Caches the dump's snapshot (if asked and missing) and makes the target's ready copy of it."""
    metadata = dumpfiles.read_metadata(followup.dump_path)
    with snapshots.snapshot_lock(admin, progress):
        snapshot = snapshots.find(admin, metadata)
        if snapshot is None and followup.build_snapshot:
            snapshot = _build_snapshot(admin, followup, metadata, settings_dict, progress)
        for name in snapshots.prune(admin):
            progress(f"Dropped {name}")
        if snapshot is None or not followup.ready_copy or snapshots.find(admin, metadata) is None:
            return
        if snapshots.find_ready(admin, metadata, followup.database) is None:
            owner = _owner_clause(admin, followup.database)
            ready = snapshots.make_ready(admin, snapshot, followup.database, owner)
            progress(f"Prepared the ready copy {ready.name}")


def _build_snapshot(
    admin: psycopg.Connection,
    followup: Followup,
    metadata: dumpfiles.Metadata,
    settings_dict: Mapping[str, Any],
    progress: Progress,
) -> snapshots.Snapshot:
    """Restores the dump (again: the first copy is in use) into a build database and adopts it as snapshot."""
    dumpfiles.verify(followup.dump_path, metadata)  # the file may have changed since the restore
    build = snapshots.build_name(metadata.checksum)
    try:
        _restore_cold(
            admin, followup.dump_path, metadata, settings_dict, build, followup.database, None, progress, claim=False
        )
        snapshot = snapshots.adopt(admin, build, metadata)
    except BaseException:
        with contextlib.suppress(psycopg.Error):
            _drop_database(admin, build)
        raise
    progress(f"Cached the dump as snapshot {snapshot.name}")
    return snapshot


def _restore_cold(
    admin: psycopg.Connection,
    dump_path: Path,
    metadata: dumpfiles.Metadata,
    settings_dict: Mapping[str, Any],
    scratch: str,
    like: str,
    jobs: int | None,
    progress: Progress,
    *,
    claim: bool = True,
) -> None:
    """pg_restore into a new ``scratch`` database (made like the database ``like``), then check the counts.

    With ``claim`` (the caller holds the lock of ``like``), the empty database prepared for it is used."""
    pg_restore = postgres.find_program("pg_restore", postgres.server_major(admin), at_least=metadata.pg_dump_major)
    progress(f"Using {pg_restore}")
    if claim and _claim_empty(admin, scratch, like):
        progress("Using the empty database the last restore prepared")
    else:
        _create_empty(admin, scratch, like=like)
    jobs = jobs or conf.RESTORE_JOBS
    progress(f"Restoring {dump_path.name} into {scratch} with {jobs} jobs")
    args = [f"--dbname={scratch}", "--no-owner", "--no-privileges", "--exit-on-error", str(dump_path)]
    if jobs > 1:
        args.insert(0, f"--jobs={jobs}")
    postgres.run(pg_restore, args, settings_dict, dbname=scratch, what="pg_restore")
    progress("Checking row counts against the metadata")
    with postgres.connect(settings_dict, scratch) as restored:
        counts = postgres.count_rows(restored)
    _check_counts(metadata.record_counts, counts)


def _cache_snapshot(admin: psycopg.Connection, scratch: str, metadata: dumpfiles.Metadata, progress: Progress) -> None:
    """Keeps a copy of the verified scratch database for the next restore of this dump; never fails it."""
    try:
        with snapshots.snapshot_lock(admin, progress):
            snapshot = snapshots.create(admin, scratch, metadata)
            dropped = snapshots.prune(admin)
    except psycopg.Error as exc:
        progress(f"Could not cache a snapshot ({str(exc).strip().splitlines()[0]}); the restore goes on")
        return
    if snapshot is not None:
        progress(f"Cached the restored database as snapshot {snapshot.name}")
    for name in dropped:
        progress(f"Dropped the snapshot {name}")
