"""The snapshot cache: copies of restored dumps kept on the server, so that a repeated restore is a file copy.

After a dump has been restored and verified once, a copy of it is kept on the same server as
``seeddump_snap_<folder>_<key>_<checksum>``: ``<folder>`` is a hash of the dumps folder (two projects
sharing a server never touch each other's copies), ``<key>`` a hash of the role that made it, the owner
of the objects in it and its encoding and locale (``databases.Identity.cache_key``: a copy never serves a
target it was not made for), and ``<checksum>`` the start of the dump's sha256. A snapshot accepts no
connections, so it stays exactly as verified; its database comment (its label) records the full
checksum, the dump, the key and the folder. Snapshots whose dump is gone are dropped, and at most
SEEDDUMP_SNAPSHOTS_KEEP are kept, newest first.

A *ready copy* (``seeddump_ready_<folder>_<database>_<key>_<checksum>``) is one more copy of a snapshot made
for one target database, so that restoring that dump into it again is two renames instead of a copy.
There is at most one per target database; it goes when its snapshot goes. A snapshot being built in
the background is ``seeddump_build_<folder>_<key>_<checksum>`` until it is complete. Besides, the
background process leaves an empty database per target, ``seeddump_empty_<folder>_<database>_<key>``, for the
next pg_restore into that target.

Only copies that the connecting role owns and whose label says what they are are used (see
``seeddump.databases``); anything else under these names is foreign: listed, never used or dropped.
Copies are created, claimed and dropped under the dumps folder's advisory lock (``snapshot_lock``); empty
databases are claimed under the target's lock.
"""

from __future__ import annotations

import contextlib
import hashlib
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from seeddump import databases, driver, dumpfiles, postgres, serverdisk
from seeddump.conf import conf

PREFIX = "seeddump_snap_"
READY_PREFIX = "seeddump_ready_"
BUILD_PREFIX = "seeddump_build_"
EMPTY_PREFIX = "seeddump_empty_"
TEST_PREFIX = "seeddump_tdb_"  # migrated test databases (``seeddump.testcache``), dropped with the folder's copies
_KINDS = {
    PREFIX: "snapshot",
    READY_PREFIX: "ready",
    BUILD_PREFIX: "build",
    EMPTY_PREFIX: "empty",
    TEST_PREFIX: "migrated",
}
_LOCK_CLASS = 0x5EEE  # the second key is the dumps folder's name prefix: one lock per folder and server
_RESTORING_CLASS = 0x5EEF  # held shared by every running restore of the folder (see ``restoring``)

Progress = Callable[[str], None]


@dataclass(frozen=True)
class Snapshot:
    name: str
    checksum: str
    dump_file: str
    environment: str
    created: datetime | None
    size_bytes: int
    database: str = ""  # the target database of a ready copy or an empty database
    folder: str = ""  # the dumps folder it belongs to
    key: str = ""  # whose and of what shape (databases.Identity.cache_key)
    kind: str = ""  # what its label says it is: snapshot, ready, build, empty ("" when unlabelled)
    owner: str = ""  # the role that owns the database itself
    ours: bool = True  # owned by the connecting role; foreign copies are never used


def _hash8(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:8]


def _short(checksum: str) -> str:
    return checksum.removeprefix("sha256:")[:16]


def folder_prefix(directory: Path | None = None, kind: str = PREFIX) -> str:
    """Start of the names of this dumps folder's snapshots (or of its ready copies or builds, by ``kind``)."""
    return f"{kind}{_hash8(str((directory or conf.DIR).resolve()))}_"


def snapshot_name(checksum: str, key: str, directory: Path | None = None) -> str:
    return f"{folder_prefix(directory)}{key}_{_short(checksum)}"


def ready_prefix(target: str, directory: Path | None = None) -> str:
    return f"{folder_prefix(directory, READY_PREFIX)}{_hash8(target)}_"


def ready_name(target: str, checksum: str, key: str, directory: Path | None = None) -> str:
    return f"{ready_prefix(target, directory)}{key}_{_short(checksum)}"


def build_name(checksum: str, key: str, directory: Path | None = None) -> str:
    return f"{folder_prefix(directory, BUILD_PREFIX)}{key}_{_short(checksum)}"


def empty_name(target: str, key: str, directory: Path | None = None) -> str:
    """The empty database made ready for the next pg_restore into ``target``."""
    return f"{folder_prefix(directory, EMPTY_PREFIX)}{_hash8(target)}_{key}"


def snapshot_lock(
    admin: driver.Connection, progress: Progress | None = None, directory: Path | None = None
) -> contextlib.AbstractContextManager:
    """The lock for creating, claiming and dropping this dumps folder's snapshots, ready copies and builds.

    One per folder: another project's cache work on the same server never waits for this one's."""
    return postgres.advisory_lock(
        admin,
        (_LOCK_CLASS, folder_prefix(directory)),
        waiting=lambda holder: (progress or _quiet)(f"Waiting for the snapshot cache, in use by {holder}"),
        busy=lambda holder: (
            f"The snapshot cache on this server is still in use by {holder} after {conf.LOCK_TIMEOUT}s. "
            "Try again later, or restore with --no-snapshot."
        ),
    )


def _quiet(message: str) -> None:
    pass


def restoring(admin: driver.Connection, directory: Path | None = None) -> contextlib.AbstractContextManager:
    """Held (shared) by a restore of this dumps folder while it runs: the background caching work starts
    no pg_restore and no copy meanwhile (``no_restore_running``), and a restore stops a build already
    running (``stop_builds``). A restore waits at most for the creation of an empty build database."""
    return postgres.shared_advisory_lock(admin, (_RESTORING_CLASS, folder_prefix(directory)))


def no_restore_running(admin: driver.Connection, directory: Path | None = None) -> contextlib.AbstractContextManager:
    """Yields whether no restore of this folder runs; while true, none can start (keep it short): a build
    database created inside is seen by the next restore's ``stop_builds``."""
    return postgres.exclusive_if_free(admin, (_RESTORING_CLASS, folder_prefix(directory)))


def _from_database(database: databases.Database) -> Snapshot:
    info = database.label
    try:
        created = dumpfiles.parse_isoformat(str(info["created"]))
    except (ValueError, KeyError, TypeError):
        created = None
    return Snapshot(
        name=database.name,
        checksum=str(info.get("checksum", "")),
        dump_file=str(info.get("dumpFile", "")),
        environment=str(info.get("environment", "")),
        created=created,
        size_bytes=database.size_bytes,
        database=str(info.get("database", "")),
        folder=str(info.get("folder", "")),
        key=str(info.get("key", "")),
        kind=str(info.get("seeddump", "")),
        owner=database.owner,
        ours=database.ours,
    )


def list_all(
    admin: driver.Connection,
    directory: Path | None = None,
    kind: str = PREFIX,
    *,
    all_folders: bool = False,
    sizes: bool = True,
) -> list[Snapshot]:
    """Every database named like this folder's snapshots (or ready copies, builds or empty databases, by
    ``kind``; or those of every folder), ours and foreign, newest first."""
    prefix = kind if all_folders else folder_prefix(directory, kind)
    found = [_from_database(database) for database in databases.with_prefix(admin, prefix, sizes=sizes)]
    oldest = datetime.min.replace(tzinfo=timezone.utc)
    return sorted(found, key=lambda s: s.created or oldest, reverse=True)


def list_snapshots(
    admin: driver.Connection,
    directory: Path | None = None,
    kind: str = PREFIX,
    *,
    all_folders: bool = False,
    sizes: bool = True,
) -> list[Snapshot]:
    """This dumps folder's copies of ``kind`` that are ours (owned by the connecting role), newest first."""
    return [s for s in list_all(admin, directory, kind, all_folders=all_folders, sizes=sizes) if s.ours]


def _trusted(copy: Snapshot, kind: str, metadata: dumpfiles.Metadata | None, key: str) -> bool:
    """Ours, labelled as ``kind`` for this key (and this dump), in this folder."""
    same_dump = metadata is None or (copy.checksum == metadata.checksum and copy.dump_file == metadata.dump_file)
    return copy.ours and copy.kind == _KINDS[kind] and copy.key == key and same_dump


def _find(admin: driver.Connection, name: str, kind: str, metadata: dumpfiles.Metadata, key: str) -> Snapshot | None:
    for copy in list_all(admin, kind=kind, sizes=False):
        if copy.name == name and _trusted(copy, kind, metadata, key):
            return copy
    return None


def find(admin: driver.Connection, metadata: dumpfiles.Metadata, key: str) -> Snapshot | None:
    """Our snapshot of exactly this dump (full checksum and file name) for ``key``, if one is cached."""
    return _find(admin, snapshot_name(metadata.checksum, key), PREFIX, metadata, key)


def find_ready(admin: driver.Connection, metadata: dumpfiles.Metadata, target: str, key: str) -> Snapshot | None:
    """Our ready copy of exactly this dump for the database ``target`` and ``key``, if there is one."""
    return _find(admin, ready_name(target, metadata.checksum, key), READY_PREFIX, metadata, key)


def _label(
    admin: driver.Connection, name: str, kind: str, dump: dumpfiles.Metadata | Snapshot, key: str, **extra: str
) -> Snapshot:
    created = datetime.now(timezone.utc)
    folder = str(conf.DIR.resolve())
    databases.label(
        admin,
        name,
        {
            "seeddump": _KINDS[kind],
            "checksum": dump.checksum,
            "dumpFile": dump.dump_file,
            "environment": dump.environment,
            "created": dumpfiles.isoformat(created),
            "folder": folder,
            "key": key,
            **extra,
        },
    )
    target = extra.get("database", "")
    kind_name = _KINDS[kind]
    return Snapshot(name, dump.checksum, dump.dump_file, dump.environment, created, 0, target, folder, key, kind_name)


def create(admin: driver.Connection, source: str, metadata: dumpfiles.Metadata, key: str) -> Snapshot | None:
    """Copies the verified database ``source`` into this dump's snapshot (a clone when the connection
    clones, see ``serverdisk.cloning``). None if the name is taken."""
    name = snapshot_name(metadata.checksum, key)
    try:
        databases.clone(admin, source, name, closed=True)
    except driver.errors.DuplicateDatabase:
        return None
    return _label(admin, name, PREFIX, metadata, key)


def make_room(admin: driver.Connection, size: int, *, cloned: bool = False) -> str | None:
    """Why a cache copy of ``size`` bytes should not be made now, or None. Drops older snapshots when
    that keeps the cache under SEEDDUMP_CACHE_MAX_SIZE with the copy; checks the server's free disk
    (``serverdisk.room_for``; a clone needs next to none). Call it holding ``snapshot_lock``."""
    bound = conf.CACHE_MAX_SIZE
    if bound is not None:
        if size > bound:
            mb = serverdisk.megabytes
            return f"a copy needs {mb(size)}, more than SEEDDUMP_CACHE_MAX_SIZE ({mb(bound)})"
        prune(admin, max_bytes=bound - size)
    return serverdisk.room_for(admin, 0 if cloned else size)


def stop_builds(admin: driver.Connection, directory: Path | None = None) -> list[str]:
    """Stops this folder's snapshot builds (a background pg_restore, see ``finishing``): closes them to new
    connections and ends the sessions in them, so a restore starting now has the server to itself. The
    builder drops its build and finishes the rest of its work. Returns the builds stopped."""
    builds = [build.name for build in list_snapshots(admin, directory, BUILD_PREFIX, sizes=False)]
    for name in builds:
        with contextlib.suppress(driver.Error):  # dropped by its builder meanwhile
            databases.close(admin, name)
    if builds:
        admin.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            "WHERE datname = ANY(%s) AND usename = current_user AND pid <> pg_backend_pid()",
            (builds,),
        )
    return builds


def start_build(admin: driver.Connection, metadata: dumpfiles.Metadata, key: str, shape: databases.Shape) -> str:
    """Creates the empty build database of this dump's snapshot; its name."""
    name = build_name(metadata.checksum, key)
    databases.create(admin, name, shape)
    databases.label(admin, name, {"seeddump": "build", "key": key, "folder": str(conf.DIR.resolve())})
    return name


def adopt(admin: driver.Connection, build: str, metadata: dumpfiles.Metadata, key: str) -> Snapshot:
    """Makes the complete, verified database ``build`` this dump's snapshot: a rename, not a copy."""
    name = snapshot_name(metadata.checksum, key)
    databases.rename(admin, build, name)
    databases.close(admin, name)
    return _label(admin, name, PREFIX, metadata, key)


def make_ready(admin: driver.Connection, snapshot: Snapshot, target: str) -> Snapshot | None:
    """Copies ``snapshot`` into the ready copy for ``target``, replacing our other ready copy for that
    target. None if the name is taken. Check ``make_room`` first."""
    for other in list_snapshots(admin, kind=READY_PREFIX, sizes=False):
        if other.name.startswith(ready_prefix(target)) and other.key == snapshot.key:
            databases.drop(admin, other.name)
    name = ready_name(target, snapshot.checksum, snapshot.key)
    try:
        databases.clone(admin, snapshot.name, name, closed=True)
    except driver.errors.DuplicateDatabase:
        return None
    return _label(admin, name, READY_PREFIX, snapshot, snapshot.key, database=target)


def claim_ready(admin: driver.Connection, ready: Snapshot, scratch: str) -> None:
    """Renames the ready copy to ``scratch``: from now on it is the restore's (see ``unclaim_ready``)."""
    databases.rename(admin, ready.name, scratch)


def unclaim_ready(admin: driver.Connection, ready: Snapshot, scratch: str) -> bool:
    """Gives back a ready copy a restore claimed but could not swap in (it is unchanged: closed to
    connections, its label travelled with it). False if that was not possible; then drop it."""
    try:
        databases.rename(admin, scratch, ready.name)
    except driver.Error:
        return False
    return True


def clone(admin: driver.Connection, snapshot: Snapshot, target: str) -> None:
    """Creates the database ``target`` as a copy of ``snapshot``."""
    databases.clone(admin, snapshot.name, target)


def drop(admin: driver.Connection, name: str) -> bool:
    return databases.drop(admin, name)


def prune(
    admin: driver.Connection, directory: Path | None = None, keep: int | None = None, max_bytes: int | None = None
) -> list[str]:
    """Drops our snapshots whose dump is gone or that are unlabelled, then all but the newest ``keep``,
    and older ones beyond ``max_bytes`` (default SEEDDUMP_CACHE_MAX_SIZE), with their ready copies (all
    ready copies when SEEDDUMP_READY_COPIES is off).

    Also drops builds that a killed background process left. Call it holding ``snapshot_lock``.
    Returns the dropped names."""
    directory = directory or conf.DIR
    keep = conf.SNAPSHOTS_KEEP if keep is None else keep
    bound = conf.CACHE_MAX_SIZE if max_bytes is None else max_bytes
    dropped = []
    kept: set[tuple[str, str]] = set()
    readies = list_snapshots(admin, directory, READY_PREFIX, sizes=bound is not None)
    used = 0
    for snapshot in list_snapshots(admin, directory, sizes=bound is not None):
        dump_gone = not snapshot.dump_file or not (directory / snapshot.dump_file).is_file()
        mine = (snapshot.checksum, snapshot.key)
        size = snapshot.size_bytes + sum(r.size_bytes for r in readies if (r.checksum, r.key) == mine)
        over = bound is not None and used + size > bound
        if dump_gone or snapshot.kind != "snapshot" or len(kept) >= keep or over:
            if databases.drop(admin, snapshot.name):
                dropped.append(snapshot.name)
        else:
            kept.add(mine)
            used += size
    orphans = [ready for ready in readies if (ready.checksum, ready.key) not in kept or not conf.READY_COPIES]
    orphans += list_snapshots(admin, directory, BUILD_PREFIX, sizes=False)  # nobody builds while we hold the lock
    for orphan in orphans:
        if databases.drop(admin, orphan.name):
            dropped.append(orphan.name)
    return dropped


def drop_all(admin: driver.Connection, directory: Path | None = None) -> list[str]:
    """Drops every snapshot, ready copy, build, prepared empty database and migrated test database of the dumps
    folder that is ours."""
    dropped = prune(admin, directory, keep=0)
    for empty in list_snapshots(admin, directory, EMPTY_PREFIX, sizes=False) + list_snapshots(
        admin, directory, TEST_PREFIX, sizes=False
    ):
        if databases.drop(admin, empty.name):
            dropped.append(empty.name)
    return dropped


def copies_of(admin: driver.Connection, dump_file: str, directory: Path | None = None) -> list[Snapshot]:
    """Our snapshots and ready copies of the dump ``dump_file`` in this dumps folder, whatever their key (one
    per role, owner and locale that restored it); another role's are never ours to drop."""
    return [
        copy
        for kind in (READY_PREFIX, PREFIX)
        for copy in list_snapshots(admin, directory, kind, sizes=False)
        if copy.dump_file == dump_file
    ]


def drop_copies_of(admin: driver.Connection, dump_file: str, directory: Path | None = None) -> list[str]:
    """Drops ``copies_of`` the dump (``prunedumps``: its file goes). Call it holding ``snapshot_lock``.
    Returns the dropped names."""
    return [copy.name for copy in copies_of(admin, dump_file, directory) if databases.drop(admin, copy.name)]


def prune_all_folders(admin: driver.Connection) -> list[str]:
    """``prune`` for every dumps folder whose copies (ours) are on this server, as their labels record it,
    each under its folder's lock.

    Everything of a folder that does not exist on this machine is dropped (a deleted checkout, a CI
    workspace, a temporary folder). Unlabelled copies are left alone. Run it on the machine that owns
    the folders."""
    dropped = []
    folders = set()
    for kind in _KINDS:
        for copy in list_snapshots(admin, kind=kind, all_folders=True, sizes=False):
            if copy.folder and not Path(copy.folder).is_dir():
                if databases.drop(admin, copy.name):
                    dropped.append(copy.name)
            elif copy.folder:
                folders.add(Path(copy.folder))
    for folder in sorted(folders):
        with snapshot_lock(admin, directory=folder):
            dropped += prune(admin, folder)
    return dropped


# --- Copies for a restore ------------------------------------------------------------------------------


def copy_for(
    admin: driver.Connection,
    metadata: dumpfiles.Metadata,
    target: str,
    key: str,
    scratch: str,
    progress: Progress = _quiet,
) -> Snapshot | None:
    """Makes ``scratch`` from this dump's ready copy for ``target`` (claimed: returned, so that a failed
    restore can give it back) or its snapshot, when the server has ours for ``key``.

    Returns the ready copy claimed, or None; ``scratch`` exists afterwards only if a copy was made. A
    cache that stays busy (another process of this folder builds a snapshot) means restoring without it."""
    try:
        with snapshot_lock(admin, progress):
            ready = find_ready(admin, metadata, target, key) if conf.READY_COPIES else None
            if ready is not None:
                progress(f"Using the ready copy {ready.name}")
                claim_ready(admin, ready, scratch)
                return ready
            snapshot = find(admin, metadata, key)
            if snapshot is not None:
                progress(f"Copying the cached snapshot {snapshot.name}")
                clone(admin, snapshot, scratch)
    except postgres.LockBusy as exc:
        progress(f"{exc} Restoring without the cache.")
    return None


def keep(
    admin: driver.Connection,
    source: str,
    metadata: dumpfiles.Metadata,
    key: str,
    progress: Progress = _quiet,
    *,
    cloned: bool = False,
) -> str | None:
    """Keeps a copy of the verified database ``source`` for the next restore of this dump (a clone when
    ``cloned``); never fails it. Returns why no snapshot was cached when the user should know (no room)."""
    try:
        with snapshot_lock(admin, progress):
            no_room = make_room(admin, databases.size_of(admin, source), cloned=cloned)
            snapshot = None if no_room else create(admin, source, metadata, key)
            dropped = prune(admin)
    except (driver.Error, postgres.LockBusy) as exc:
        note = f"Did not cache a snapshot ({str(exc).strip().splitlines()[0]}); the restore goes on"
        progress(note)
        return note
    if no_room:
        progress(f"Did not cache a snapshot: {no_room}")
        return f"Did not cache a snapshot of the dump: {no_room}."
    if snapshot is not None:
        progress(f"Cached the restored database as {'clone' if cloned else 'snapshot'} {snapshot.name}")
    else:
        progress("Did not cache a snapshot: its name is taken by a database that is not ours")
    for name in dropped:
        progress(f"Dropped the snapshot {name}")
    return None


# --- Prepared empty databases ----------------------------------------------------------------------------


def claim_empty(admin: driver.Connection, name: str, target: str, key: str) -> bool:
    """Renames our empty database prepared for ``target`` to ``name``, if one is there for ``key``.

    Saves a CREATE DATABASE (a quarter of a second) on the cold path. Call it holding the target lock."""
    prepared = empty_name(target, key)
    for empty in list_all(admin, kind=EMPTY_PREFIX, sizes=False):
        if empty.name != prepared or not empty.ours:
            continue
        if empty.kind != "empty" or empty.key != key or empty.database != target:
            databases.drop(admin, prepared)
            return False
        databases.rename(admin, prepared, name)
        databases.close(admin, name, closed=False)
        return True
    return False


def prepare_empty(admin: driver.Connection, target: str, key: str, shape: databases.Shape) -> str | None:
    """Creates the empty database for the next pg_restore into ``target``, closed to connections until then."""
    prepared = empty_name(target, key)
    if databases.exists(admin, prepared):
        return None
    try:
        databases.create(admin, prepared, shape)
    except driver.errors.DuplicateDatabase:  # another background process was quicker
        return None
    databases.close(admin, prepared)
    created = dumpfiles.isoformat(datetime.now(timezone.utc))
    databases.label(
        admin,
        prepared,
        {"seeddump": "empty", "database": target, "key": key, "created": created, "folder": str(conf.DIR.resolve())},
    )
    return prepared
