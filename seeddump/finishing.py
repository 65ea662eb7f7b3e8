"""What a restore leaves to do once the restored database is in place.

Dropping the replaced database, caching the dump's snapshot (a second pg_restore into a build database,
adopted by rename once verified), preparing the ready copy and an empty database for the next restore,
and writing the admin's dump records. ``restore`` runs ``finish`` before it returns, or leaves it to a
background process (``seeddump.background``) that calls the same function.
"""

from __future__ import annotations

import contextlib
import hashlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from seeddump import databases, driver, dumpfiles, load, media, postgres, records, sandbox, snapshots
from seeddump.conf import conf
from seeddump.exceptions import SeeddumpError

Progress = Callable[[str], None]


def _quiet(message: str) -> None:
    pass


# The background work gives way to a restore that started meanwhile: that one caches the dump itself.
_RESTORE_RUNNING = "a restore of this dumps folder is running, which comes first"


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
    retired_media: tuple[Path, ...] = ()  # the replaced media folder, renamed beside MEDIA_ROOT
    # The restored database's oid: the records are written only while ``database`` is still that one (an
    # undo or another restore may have replaced it since).
    restored_oid: int | None = None
    trusted: bool = False  # see ``restore.RestorePlan.trusted``

    def describe(self) -> list[str]:
        work = ["drop the replaced database"] if self.retired else []
        if self.retired_media:
            work.append("remove the replaced media folder")
        if self.build_snapshot:
            work.append("cache a snapshot of the dump")
        if self.ready_copy:
            work.append("prepare a ready copy for the next restore")
        if self.empty_database:
            work.append("prepare an empty database for the next pg_restore")
        return work


def tag(database: str) -> str:
    """Eight hex digits naming a target database in the names of what seeddump keeps for it."""
    return hashlib.sha256(database.encode()).hexdigest()[:8]


def scratch_prefix(database: str) -> str:
    return f"seeddump_tmp_{tag(database)}_"


def retired_prefix(database: str) -> str:
    return f"seeddump_old_{tag(database)}_"


# First key of the advisory lock a restore holds on its target (the second: a hash of the target's name).
TARGET_LOCK_CLASS = 0x5EED


def target_lock_key(database: str) -> tuple[int, str]:
    return (TARGET_LOCK_CLASS, database)


def drop_leftovers(admin: driver.Connection, database: str, *, scratch: bool = True, retired: bool = True) -> list[str]:
    """Drops our scratch and replaced databases of ``database`` left by killed runs or by ``finish``.

    Only call it with ``scratch`` while holding the target's lock: a running restore's scratch database
    looks the same. Replaced databases are never in use. Databases of these names that another role
    owns are left alone."""
    prefixes = ([retired_prefix(database)] if retired else []) + ([scratch_prefix(database)] if scratch else [])
    dropped = []
    for prefix in prefixes:
        for leftover in databases.ours(admin, prefix, sizes=False):
            if "mediaExchange" in leftover.label:  # an interrupted swap's: the next restore finishes it first
                continue
            if databases.drop(admin, leftover.name):
                dropped.append(leftover.name)
    return dropped


def cache_key(admin: driver.Connection, database: str) -> tuple[str, databases.Identity] | None:
    """The cache key of the database ``database`` as it now is (owner and shape), with its identity."""
    identity = databases.identity_of(admin, database)
    if identity is None:
        return None
    return identity.cache_key(databases.current_user(admin)), identity


def finish(followup: Followup, settings_dict: Mapping[str, Any], progress: Progress = _quiet) -> None:
    """Does what a restore left for later; see the module docstring.

    Safe to run while the restored database is in use, and next to another restore: snapshots and ready
    copies are made under the snapshot lock, which a restore takes to look for them.
    """
    with (
        postgres.connect_maintenance(settings_dict) as admin,
        sandbox.Sandbox(admin, settings_dict, "", trusted=followup.trusted) as dump_code,
    ):
        # A DROP DATABASE makes the server write out everything first (a checkpoint): not while another
        # restore of this database runs, whose own finishing drops the replaced databases.
        free = postgres.lock_is_free(admin, target_lock_key(followup.database))
        if not free:
            progress(f"Left the replaced database to the restore of '{followup.database}' now running")
        for name in drop_leftovers(admin, followup.database, scratch=False) if free else []:
            progress(f"Dropped the replaced database {name}")
        for folder in followup.retired_media:  # goes with the replaced database
            media.drop(folder)
            progress(f"Removed the replaced media folder {folder}")
        keyed = cache_key(admin, followup.database)
        if keyed is not None:
            dump_code.owner = keyed[1].owner
        if keyed is not None and (followup.build_snapshot or followup.ready_copy):
            try:
                _finish_cache(admin, followup, settings_dict, *keyed, dump_code, progress)
            except (driver.Error, SeeddumpError) as exc:  # a full disk, say: the cache is only a cache
                progress(f"Did not finish caching the dump: {str(exc).strip().splitlines()[0]}")
        replaced_since = followup.restored_oid is not None and (
            databases.oid_of(admin, followup.database) != followup.restored_oid
        )
        if followup.restore_times is not None and replaced_since:
            progress(f"Did not record the restore for the admin: '{followup.database}' was replaced since")
        elif followup.restore_times is not None and keyed is not None:
            # The restored database's code (a trigger on the records' table) runs as the owner at most.
            try:
                recorded = records.sync_from_disk(
                    dump_code.login(), followup.database, conf.DIR, followup.restore_times
                )
            except (driver.Error, SeeddumpError) as exc:  # read-only by default, closed, a trigger that fails
                progress(f"Did not record the restore for the admin: {str(exc).strip().splitlines()[0]}")
            else:
                progress(f"Recorded {recorded} dump(s) for the admin")
        if keyed is not None and followup.empty_database:
            key, identity = keyed
            if prepared := snapshots.prepare_empty(admin, followup.database, key, identity.shape):
                progress(f"Prepared the empty database {prepared}")


def _finish_cache(
    admin: driver.Connection,
    followup: Followup,
    settings_dict: Mapping[str, Any],
    key: str,
    identity: databases.Identity,
    dump_code: sandbox.Sandbox,
    progress: Progress,
) -> None:
    """Caches the dump's snapshot (if asked and missing) and makes the target's ready copy of it."""
    metadata = dumpfiles.read_metadata(followup.dump_path)
    with snapshots.snapshot_lock(admin, progress):
        snapshot = snapshots.find(admin, metadata, key)
        if snapshot is None and followup.build_snapshot:
            snapshot = _build_snapshot(admin, followup, metadata, settings_dict, key, identity, dump_code, progress)
        for name in snapshots.prune(admin):
            progress(f"Dropped {name}")
        if snapshot is None or not followup.ready_copy or snapshots.find(admin, metadata, key) is None:
            return
        if snapshots.find_ready(admin, metadata, followup.database, key) is None:
            if no_room := snapshots.make_room(admin, databases.size_of(admin, snapshot.name)):
                progress(f"Did not prepare a ready copy: {no_room}")
                return
            with snapshots.no_restore_running(admin) as free:
                if not free:
                    progress(f"Did not prepare a ready copy: {_RESTORE_RUNNING}")
                    return
            ready = snapshots.make_ready(admin, snapshot, followup.database)
            if ready is None:
                progress("Did not prepare a ready copy: its name is taken by a database that is not ours")
            else:
                progress(f"Prepared the ready copy {ready.name}")


def _build_snapshot(
    admin: driver.Connection,
    followup: Followup,
    metadata: dumpfiles.Metadata,
    settings_dict: Mapping[str, Any],
    key: str,
    identity: databases.Identity,
    dump_code: sandbox.Sandbox,
    progress: Progress,
) -> snapshots.Snapshot | None:
    """Restores the dump (again: the first copy is in use) into a build database and adopts it as snapshot."""
    archive = dumpfiles.open_verified(followup.dump_path, metadata)  # the file may have changed since the restore
    if no_room := snapshots.make_room(admin, databases.size_of(admin, followup.database)):
        progress(f"Did not cache a snapshot: {no_room}")
        return None
    with snapshots.no_restore_running(admin) as free:
        if not free:
            progress(f"Did not cache a snapshot: {_RESTORE_RUNNING}")
            return None
        try:
            build = snapshots.start_build(admin, metadata, key, identity.shape)
        except driver.errors.DuplicateDatabase:  # a foreign database has the name: no snapshot then
            progress("Did not cache a snapshot: its build database's name is taken by a database that is not ours")
            return None
    try:
        with archive:
            load.into_new(admin, archive, metadata, settings_dict, build, dump_code, None, progress)
        snapshot = snapshots.adopt(admin, build, metadata, key)
    except driver.errors.DuplicateDatabase:
        databases.drop(admin, build)
        progress("Did not cache a snapshot: its name is taken by a database that is not ours")
        return None
    except SeeddumpError as exc:  # stopped by a restore that needs the server (snapshots.stop_builds), a full disk
        databases.drop(admin, build)
        progress(f"Did not cache a snapshot: its pg_restore did not finish ({str(exc).strip().splitlines()[0]})")
        return None
    except BaseException:
        with contextlib.suppress(driver.Error):
            databases.drop(admin, build)
        raise
    progress(f"Cached the dump as snapshot {snapshot.name}")
    return snapshot
