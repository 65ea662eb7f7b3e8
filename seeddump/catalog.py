"""Every dump, local and shared, with what a user asks of it; and pruning of old ones."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from django.db import DatabaseError

from seeddump import driver, dumpfiles, postgres, records, shared, snapshots, staleness
from seeddump.conf import conf
from seeddump.exceptions import SeeddumpError
from seeddump.models import DumpRecord


@dataclass
class DumpEntry:
    name: str
    metadata: dumpfiles.Metadata
    local: bool = False
    shared: bool = False
    latest: bool = False
    stale: bool = False
    fits: bool = True  # holds no migration the checked-out code lacks
    chosen: bool = False  # what ``restoredump ENV`` restores for the checked-out code (staleness.choose)
    snapshot: bool | None = None
    media_missing: bool = False  # the metadata names a media archive that is not beside the local dump

    @property
    def created(self) -> datetime:
        return self.metadata.timestamp

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "environment": self.metadata.environment,
            "version": self.metadata.version,
            "created": dumpfiles.isoformat(self.metadata.timestamp),
            "sizeBytes": self.metadata.size_bytes,
            "totalRecords": self.metadata.total_rows,
            "checksum": self.metadata.checksum,
            "local": self.local,
            "shared": self.shared,
            "latest": self.latest,
            "stale": self.stale,
            "fits": self.fits,
            "chosen": self.chosen,
            "snapshotCached": self.snapshot,
            "excludedTableData": list(self.metadata.excluded_table_data),
            "media": None
            if self.metadata.media is None
            else {**self.metadata.media.to_json(), "missing": self.media_missing},
        }


def list_entries(
    environment: str | None = None, *, using: str = "default", offline: bool = False
) -> tuple[list[DumpEntry], list[str]]:
    """All dumps (of one environment), oldest first, and warnings about what could not be read."""
    directory = conf.DIR
    warnings: list[str] = []
    entries: dict[str, DumpEntry] = {}
    for path in dumpfiles.list_dumps(directory, environment):
        try:
            metadata = dumpfiles.read_metadata(path)
            gone = metadata.media is not None and not dumpfiles.media_path(path).is_file()
            entries[path.name] = DumpEntry(path.name, metadata, local=True, media_missing=gone)
        except SeeddumpError as exc:
            warnings.append(str(exc))
    if shared.configured() and not offline:
        try:
            for remote in shared.list_remote(environment, warnings.append):
                entry = entries.setdefault(remote.name, DumpEntry(remote.name, remote.metadata))
                entry.shared = True
        except SeeddumpError as exc:
            warnings.append(str(exc))
    ordered = sorted(entries.values(), key=lambda e: (e.created, e.name))

    code = staleness.CodeMigrations.load()
    for entry in ordered:
        missing, unknown = code.compare(entry.metadata.migrations)
        entry.stale, entry.fits = bool(missing or unknown), not unknown
    for env in {e.metadata.environment for e in ordered}:
        chosen = None
        try:
            latest_path = dumpfiles.resolve_latest(directory, env)
            latest_name = latest_path.name
            if note := dumpfiles.newer_note(directory, latest_path):
                warnings.append(note)
            choice = staleness.choose(directory, env, code)
            chosen = choice.dump_path.name if choice.fits else None
        except SeeddumpError:
            latest_name = [e for e in ordered if e.metadata.environment == env][-1].name
        for entry in ordered:
            entry.latest = entry.latest or entry.name == latest_name
            entry.chosen = entry.chosen or entry.name == chosen
    try:
        with postgres.connect_maintenance(postgres.settings_for(using)) as admin:
            cached = {(s.checksum, s.dump_file) for s in snapshots.list_snapshots(admin)}
        for entry in ordered:
            entry.snapshot = (entry.metadata.checksum, entry.name) in cached
    except (SeeddumpError, driver.Error) as exc:
        warnings.append(f"Snapshots unknown: {exc}")
    return ordered, warnings


@dataclass(frozen=True)
class Pruned:
    name: str
    copies: tuple[str, ...] = ()  # its snapshots and ready copies on the server that this role made


def prune(environment: str, keep: int, *, dry_run: bool = False, using: str = "default") -> list[Pruned]:
    """Deletes all but the newest ``keep`` local dumps of ``environment`` (never the latest).

    With each dump go its metadata, its media archive, its admin record and the copies of it that the
    connecting role keeps on the server (snapshots, ready copies; another role's are left to that role).
    """
    dumpfiles.validate_environment(environment)
    if keep < 1:
        raise SeeddumpError("--keep must be 1 or more: the latest dump is always kept.")
    directory = conf.DIR
    dumps = dumpfiles.list_dumps(directory, environment)
    try:
        latest: Path | None = dumpfiles.resolve_latest(directory, environment)
    except SeeddumpError:
        latest = None
    doomed = [path for path in dumps[: max(len(dumps) - keep, 0)] if path != latest]
    settings_dict = postgres.settings_for(using)
    pruned = []
    with postgres.user_errors(settings_dict), postgres.connect_maintenance(settings_dict) as admin:
        for path in doomed:
            if dry_run:
                pruned.append(Pruned(path.name, tuple(c.name for c in snapshots.copies_of(admin, path.name))))
                continue
            # Under the cache's lock: no restore claims a ready copy, nor builds a snapshot, meanwhile.
            with snapshots.snapshot_lock(admin):
                pruned.append(Pruned(path.name, tuple(snapshots.drop_copies_of(admin, path.name))))
            path.unlink()
            for companion in dumpfiles.companions(path):
                companion.unlink(missing_ok=True)
    if pruned and not dry_run:
        try:
            if records.table_exists(using):
                DumpRecord.objects.using(using).filter(file_name__in=[p.name for p in pruned]).delete()
        except DatabaseError:
            pass  # the files are gone; the admin shows their records as not on disk
    return pruned
