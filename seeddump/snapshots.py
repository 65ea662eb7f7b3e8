"""The snapshot cache: template databases of restored dumps, so that a repeated restore is a file copy.

After a dump has been restored and verified once, a copy of it is kept on the same server as
``seeddump_snap_<folder>_<checksum>``: ``<folder>`` is a hash of the dumps folder (two projects sharing a
server never touch each other's snapshots) and ``<checksum>`` the start of the dump's sha256. A snapshot
accepts no connections, so it stays exactly as verified; its database comment records the full checksum
and the dump it came from. Snapshots whose dump is gone are dropped, and at most SEEDDUMP_SNAPSHOTS_KEEP
are kept, newest first.

A *ready copy* (``seeddump_ready_<folder>_<database>_<checksum>``) is one more copy of a snapshot made
for one target database, so that restoring that dump into it again is two renames instead of a copy.
There is at most one per target database; it goes when its snapshot goes. A snapshot being built in
the background is ``seeddump_build_<folder>_<checksum>`` until it is complete. All of them are created,
claimed and dropped under one server-wide advisory lock (``snapshot_lock``). Besides, the background
process leaves an empty database per target, ``seeddump_empty_<folder>_<database>``, for the next
pg_restore into that target (claimed under the target's lock).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import psycopg
from psycopg import sql

from seeddump import dumpfiles, postgres
from seeddump.conf import conf

PREFIX = "seeddump_snap_"
READY_PREFIX = "seeddump_ready_"
BUILD_PREFIX = "seeddump_build_"
EMPTY_PREFIX = "seeddump_empty_"
_CLOSED = sql.SQL(" ALLOW_CONNECTIONS false")  # a copy nobody may connect to stays exactly as verified
_LOCK = (0x5EED, 0x5A495)  # one server-wide lock for creating, cloning and dropping snapshots


@dataclass(frozen=True)
class Snapshot:
    name: str
    checksum: str
    dump_file: str
    environment: str
    created: datetime | None
    size_bytes: int
    database: str = ""  # the target database of a ready copy or an empty database
    folder: str = ""  # the dumps folder it belongs to (earlier versions did not record it)


def _hash8(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:8]


def _short(checksum: str) -> str:
    return checksum.removeprefix("sha256:")[:24]


def folder_prefix(directory: Path | None = None, kind: str = PREFIX) -> str:
    """Start of the names of this dumps folder's snapshots (or of its ready copies or builds, by ``kind``)."""
    return f"{kind}{_hash8(str((directory or conf.DIR).resolve()))}_"


def snapshot_name(checksum: str, directory: Path | None = None) -> str:
    return folder_prefix(directory) + _short(checksum)


def ready_prefix(target: str, directory: Path | None = None) -> str:
    return f"{folder_prefix(directory, READY_PREFIX)}{_hash8(target)}_"


def ready_name(target: str, checksum: str, directory: Path | None = None) -> str:
    return ready_prefix(target, directory) + _short(checksum)


def build_name(checksum: str, directory: Path | None = None) -> str:
    return folder_prefix(directory, BUILD_PREFIX) + _short(checksum)


def empty_name(target: str, directory: Path | None = None) -> str:
    """The empty database made ready for the next pg_restore into ``target`` (see ``restore.finish``)."""
    return folder_prefix(directory, EMPTY_PREFIX) + _hash8(target)


def snapshot_lock(
    admin: psycopg.Connection, progress: Callable[[str], None] | None = None
) -> contextlib.AbstractContextManager:
    """The server-wide lock for creating, claiming and dropping snapshots, ready copies and builds."""
    return postgres.advisory_lock(
        admin,
        _LOCK,
        waiting=lambda holder: (progress or _quiet)(f"Waiting for the snapshot cache, in use by {holder}"),
        busy=lambda holder: (
            f"The snapshot cache on this server is still in use by {holder} after {conf.LOCK_TIMEOUT}s. "
            "Try again later, or restore with --no-snapshot."
        ),
    )


def _quiet(message: str) -> None:
    pass


def list_snapshots(
    admin: psycopg.Connection, directory: Path | None = None, kind: str = PREFIX, *, all_folders: bool = False
) -> list[Snapshot]:
    """This dumps folder's snapshots on the server (or its ready copies, builds or empty databases, by
    ``kind``; or those of every folder), newest first."""
    rows = admin.execute(
        """
        SELECT datname, pg_database_size(oid), shobj_description(oid, 'pg_database')
        FROM pg_database WHERE starts_with(datname, %s)
        """,
        (kind if all_folders else folder_prefix(directory, kind),),
    ).fetchall()
    snapshots = []
    for name, size, comment in rows:
        try:
            info = json.loads(comment or "{}")
            created = dumpfiles.parse_isoformat(info["created"])
        except (ValueError, KeyError, TypeError):
            info, created = {}, None
        snapshots.append(
            Snapshot(
                name=name,
                checksum=str(info.get("checksum", "")),
                dump_file=str(info.get("dumpFile", "")),
                environment=str(info.get("environment", "")),
                created=created,
                size_bytes=int(size),
                database=str(info.get("database", "")),
                folder=str(info.get("folder", "")),
            )
        )
    oldest = datetime.min.replace(tzinfo=timezone.utc)
    return sorted(snapshots, key=lambda s: s.created or oldest, reverse=True)


def find(admin: psycopg.Connection, metadata: dumpfiles.Metadata) -> Snapshot | None:
    """The snapshot of exactly this dump (full checksum and file name), if one is cached."""
    return _find(list_snapshots(admin), snapshot_name(metadata.checksum), metadata)


def find_ready(admin: psycopg.Connection, metadata: dumpfiles.Metadata, target: str) -> Snapshot | None:
    """The ready copy of exactly this dump for the database ``target``, if there is one."""
    return _find(list_snapshots(admin, kind=READY_PREFIX), ready_name(target, metadata.checksum), metadata)


def _find(candidates: list[Snapshot], name: str, metadata: dumpfiles.Metadata) -> Snapshot | None:
    for snapshot in candidates:
        same_dump = snapshot.checksum == metadata.checksum and snapshot.dump_file == metadata.dump_file
        if snapshot.name == name and same_dump:
            return snapshot
    return None


def _file_copy(admin: psycopg.Connection) -> sql.Composable:
    """Copy the template's files (after one checkpoint) rather than write every page to WAL (the default).

    In the benchmark (250 MB) this made a cold restore with its snapshot 1.2 s slower than pg_restore
    alone against 1.6 s with WAL_LOG, and a warm restore's copy 0.6 s against 0.8 s.
    """
    return sql.SQL(" STRATEGY FILE_COPY") if postgres.server_major(admin) >= 15 else sql.SQL("")


def _label(admin: psycopg.Connection, name: str, dump: dumpfiles.Metadata | Snapshot, **extra: str) -> Snapshot:
    """Records in the database's comment which dump ``name`` is a copy of (for a ready copy: for whom)."""
    created = datetime.now(timezone.utc)
    folder = str(conf.DIR.resolve())
    comment = {
        "checksum": dump.checksum,
        "dumpFile": dump.dump_file,
        "environment": dump.environment,
        "created": dumpfiles.isoformat(created),
        "folder": folder,
        **extra,
    }
    admin.execute(
        sql.SQL("COMMENT ON DATABASE {} IS {}").format(sql.Identifier(name), sql.Literal(json.dumps(comment)))
    )
    target = extra.get("database", "")
    return Snapshot(name, dump.checksum, dump.dump_file, dump.environment, created, 0, target, folder)


def create(admin: psycopg.Connection, source: str, metadata: dumpfiles.Metadata) -> Snapshot | None:
    """Copies the verified database ``source`` into this dump's snapshot. None if one appeared meanwhile."""
    name = snapshot_name(metadata.checksum)
    try:
        _copy(admin, source, name, _CLOSED)
    except psycopg.errors.DuplicateDatabase:
        return None
    return _label(admin, name, metadata)


def adopt(admin: psycopg.Connection, build: str, metadata: dumpfiles.Metadata) -> Snapshot:
    """Makes the complete, verified database ``build`` this dump's snapshot: a rename, not a copy."""
    name = sql.Identifier(snapshot_name(metadata.checksum))
    admin.execute(sql.SQL("ALTER DATABASE {} RENAME TO {}").format(sql.Identifier(build), name))
    admin.execute(sql.SQL("ALTER DATABASE {} WITH ALLOW_CONNECTIONS false").format(name))
    return _label(admin, snapshot_name(metadata.checksum), metadata)


def make_ready(admin: psycopg.Connection, snapshot: Snapshot, target: str, owner: sql.Composable | None) -> Snapshot:
    """Copies ``snapshot`` into the ready copy for ``target``, replacing that target's other ready copy."""
    for other in list_snapshots(admin, kind=READY_PREFIX):
        if other.name.startswith(ready_prefix(target)):
            drop(admin, other.name)
    name = ready_name(target, snapshot.checksum)
    _copy(admin, snapshot.name, name, _CLOSED + (sql.SQL(" ") + owner if owner is not None else sql.SQL("")))
    return _label(admin, name, snapshot, database=target)


def claim_ready(admin: psycopg.Connection, ready: Snapshot, scratch: str) -> None:
    """Renames the ready copy to ``scratch``: from now on it is the restore's, dropped if the restore fails."""
    admin.execute(sql.SQL("ALTER DATABASE {} RENAME TO {}").format(sql.Identifier(ready.name), sql.Identifier(scratch)))


def _copy(admin: psycopg.Connection, source: str, name: str, options: sql.Composable) -> None:
    query = sql.SQL("CREATE DATABASE {} TEMPLATE {}").format(sql.Identifier(name), sql.Identifier(source))
    admin.execute(query + _file_copy(admin) + options)


def clone(admin: psycopg.Connection, snapshot: Snapshot, target: str, owner: sql.Composable | None = None) -> None:
    """Creates the database ``target`` as a copy of ``snapshot``."""
    _copy(admin, snapshot.name, target, sql.SQL(" ") + owner if owner is not None else sql.SQL(""))


def drop(admin: psycopg.Connection, name: str) -> None:
    admin.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


def prune(admin: psycopg.Connection, directory: Path | None = None, keep: int | None = None) -> list[str]:
    """Drops snapshots whose dump is gone, then all but the newest ``keep``, with their ready copies
    (all ready copies when SEEDDUMP_READY_COPIES is off).

    Also drops builds that a killed background process left. Call it holding ``snapshot_lock``.
    Returns the dropped names."""
    directory = directory or conf.DIR
    keep = conf.SNAPSHOTS_KEEP if keep is None else keep
    dropped = []
    kept = set()
    for snapshot in list_snapshots(admin, directory):
        dump_gone = not snapshot.dump_file or not (directory / snapshot.dump_file).is_file()
        if dump_gone or len(kept) >= keep:
            drop(admin, snapshot.name)
            dropped.append(snapshot.name)
        else:
            kept.add(snapshot.checksum)
    orphans = [
        ready
        for ready in list_snapshots(admin, directory, READY_PREFIX)
        if ready.checksum not in kept or not conf.READY_COPIES
    ]
    orphans += list_snapshots(admin, directory, BUILD_PREFIX)  # nobody builds while we hold the lock
    for orphan in orphans:
        drop(admin, orphan.name)
        dropped.append(orphan.name)
    return dropped


def label_empty(admin: psycopg.Connection, name: str, target: str) -> None:
    """Closes the prepared empty database ``name`` to connections and records whom it is for."""
    created = dumpfiles.isoformat(datetime.now(timezone.utc))
    comment = json.dumps({"database": target, "created": created, "folder": str(conf.DIR.resolve())})
    identifier = sql.Identifier(name)
    admin.execute(sql.SQL("ALTER DATABASE {} WITH ALLOW_CONNECTIONS false").format(identifier))
    admin.execute(sql.SQL("COMMENT ON DATABASE {} IS {}").format(identifier, sql.Literal(comment)))


def drop_all(admin: psycopg.Connection, directory: Path | None = None) -> list[str]:
    """Drops every snapshot, ready copy, build and prepared empty database of the dumps folder."""
    dropped = prune(admin, directory, keep=0)
    for empty in list_snapshots(admin, directory, EMPTY_PREFIX):
        drop(admin, empty.name)
        dropped.append(empty.name)
    return dropped


def prune_all_folders(admin: psycopg.Connection) -> list[str]:
    """``prune`` for every dumps folder whose snapshots are on this server, as their comments record it.

    Everything of a folder that does not exist on this machine is dropped (a deleted checkout, a CI
    workspace, a temporary folder), and every unfinished build. Copies made before the folder was
    recorded are left alone. Run it on the machine that owns the folders, holding ``snapshot_lock``."""
    dropped = []
    folders = set()
    for kind in (PREFIX, READY_PREFIX, EMPTY_PREFIX, BUILD_PREFIX):
        for copy in list_snapshots(admin, kind=kind, all_folders=True):
            if kind == BUILD_PREFIX or (copy.folder and not Path(copy.folder).is_dir()):
                drop(admin, copy.name)
                dropped.append(copy.name)
            elif copy.folder:
                folders.add(Path(copy.folder))
    for folder in sorted(folders):
        dropped += prune(admin, folder)
    return dropped
