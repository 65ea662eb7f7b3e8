"""The snapshot cache: template databases of restored dumps, so that a repeated restore is a file copy.

After a dump has been restored and verified once, a copy of it is kept on the same server as
``seeddump_snap_<folder>_<checksum>``: ``<folder>`` is a hash of the dumps folder (two projects sharing a
server never touch each other's snapshots) and ``<checksum>`` the start of the dump's sha256. A snapshot
accepts no connections, so it stays exactly as verified; its database comment records the full checksum
and the dump it came from. Snapshots whose dump is gone are dropped, and at most SEEDDUMP_SNAPSHOTS_KEEP
are kept, newest first.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import psycopg
from psycopg import sql

from seeddump import dumpfiles, postgres
from seeddump.conf import conf

PREFIX = "seeddump_snap_"
_LOCK = (0x5EED, 0x5A495)  # one server-wide lock for creating, cloning and dropping snapshots


@dataclass(frozen=True)
class Snapshot:
    name: str
    checksum: str
    dump_file: str
    environment: str
    created: datetime | None
    size_bytes: int


def folder_prefix(directory: Path | None = None) -> str:
    folder = str((directory or conf.DIR).resolve())
    return f"{PREFIX}{hashlib.sha256(folder.encode()).hexdigest()[:8]}_"


def snapshot_name(checksum: str, directory: Path | None = None) -> str:
    return folder_prefix(directory) + checksum.removeprefix("sha256:")[:24]


@contextlib.contextmanager
def snapshot_lock(admin: psycopg.Connection) -> Iterator[None]:
    admin.execute("SELECT pg_advisory_lock(%s, %s)", _LOCK)
    try:
        yield
    finally:
        with contextlib.suppress(psycopg.Error):
            admin.execute("SELECT pg_advisory_unlock(%s, %s)", _LOCK)


def list_snapshots(admin: psycopg.Connection, directory: Path | None = None) -> list[Snapshot]:
    """This dumps folder's snapshots on the server, newest first."""
    rows = admin.execute(
        """
        SELECT datname, pg_database_size(oid), shobj_description(oid, 'pg_database')
        FROM pg_database WHERE starts_with(datname, %s)
        """,
        (folder_prefix(directory),),
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
            )
        )
    oldest = datetime.min.replace(tzinfo=timezone.utc)
    return sorted(snapshots, key=lambda s: s.created or oldest, reverse=True)


def find(admin: psycopg.Connection, metadata: dumpfiles.Metadata) -> Snapshot | None:
    """The snapshot of exactly this dump (full checksum and file name), if one is cached."""
    name = snapshot_name(metadata.checksum)
    for snapshot in list_snapshots(admin):
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


def create(admin: psycopg.Connection, source: str, metadata: dumpfiles.Metadata) -> Snapshot | None:
    """Copies the verified database ``source`` into this dump's snapshot. None if one appeared meanwhile."""
    name = snapshot_name(metadata.checksum)
    created = datetime.now(timezone.utc)
    comment = json.dumps(
        {
            "checksum": metadata.checksum,
            "dumpFile": metadata.dump_file,
            "environment": metadata.environment,
            "created": dumpfiles.isoformat(created),
        }
    )
    identifier = sql.Identifier(name)
    try:
        query = sql.SQL("CREATE DATABASE {} TEMPLATE {}").format(identifier, sql.Identifier(source))
        admin.execute(query + _file_copy(admin))
    except psycopg.errors.DuplicateDatabase:
        return None
    admin.execute(sql.SQL("COMMENT ON DATABASE {} IS {}").format(identifier, sql.Literal(comment)))
    admin.execute(sql.SQL("ALTER DATABASE {} WITH ALLOW_CONNECTIONS false").format(identifier))
    return Snapshot(name, metadata.checksum, metadata.dump_file, metadata.environment, created, 0)


def clone(admin: psycopg.Connection, snapshot: Snapshot, target: str, owner: sql.Composable | None = None) -> None:
    """Creates the database ``target`` as a copy of ``snapshot``."""
    query = sql.SQL("CREATE DATABASE {} TEMPLATE {}").format(sql.Identifier(target), sql.Identifier(snapshot.name))
    query += _file_copy(admin)
    if owner is not None:
        query += sql.SQL(" ") + owner
    admin.execute(query)


def drop(admin: psycopg.Connection, name: str) -> None:
    admin.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


def prune(admin: psycopg.Connection, directory: Path | None = None, keep: int | None = None) -> list[str]:
    """Drops snapshots whose dump is gone, then all but the newest ``keep``. Returns the dropped names."""
    directory = directory or conf.DIR
    keep = conf.SNAPSHOTS_KEEP if keep is None else keep
    dropped = []
    kept = 0
    for snapshot in list_snapshots(admin, directory):
        dump_gone = not snapshot.dump_file or not (directory / snapshot.dump_file).is_file()
        if dump_gone or kept >= keep:
            drop(admin, snapshot.name)
            dropped.append(snapshot.name)
        else:
            kept += 1
    return dropped


def drop_all(admin: psycopg.Connection, directory: Path | None = None) -> list[str]:
    return prune(admin, directory, keep=0)
