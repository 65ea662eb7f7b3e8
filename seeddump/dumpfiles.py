"""The dump file format: names, the metadata JSON beside each dump, checksums and the ``latest`` links.

A dump is ``<env>-seeded-v<version>-<YYYYmmddTHHMMSSZ>[-<n>].dump`` (``pg_dump -Fc``) with
``<same stem>.metadata.json`` beside it. ``<env>-seeded-latest.dump`` and
``<env>-seeded-latest.metadata.json`` are relative symlinks to the newest pair. Files are written under a
hidden temporary name and only take their final name once complete, so a name that matches the pattern
is always a whole file.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import secrets
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from seeddump.exceptions import SeeddumpError

FORMAT = 1
ENVIRONMENT_RE = re.compile(r"^[a-z][a-z0-9_-]{0,31}$")
DUMP_NAME_RE = re.compile(
    r"^(?P<env>[a-z][a-z0-9_-]{0,31})-seeded-v(?P<version>[0-9A-Za-z]{1,40})"
    r"-(?P<stamp>\d{8}T\d{6}Z)(?:-(?P<serial>\d{1,4}))?\.dump$"
)
ARCHIVE_MAGIC = b"PGDMP"
_STAMP_FORMAT = "%Y%m%dT%H%M%SZ"
_CHUNK = 4 * 1024 * 1024


def validate_environment(environment: str) -> str:
    if not ENVIRONMENT_RE.fullmatch(environment or ""):
        shown = environment if len(environment or "") <= 40 else environment[:40] + "…"
        raise SeeddumpError(
            f"Invalid environment name {shown!r}: use 1 to 32 lower-case letters, digits, '-' or '_', "
            "starting with a letter (for example 'dev' or 'staging')."
        )
    return environment


def isoformat(moment: datetime) -> str:
    return moment.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_isoformat(text: str) -> datetime:
    return datetime.strptime(text, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=timezone.utc)


def migrations_fingerprint(migrations: Iterable[tuple[str, str]]) -> str:
    """A short stable digest of a set of (app, migration) pairs."""
    lines = "\n".join(f"{app}.{name}" for app, name in sorted(set(migrations)))
    return hashlib.sha256(lines.encode()).hexdigest()[:12]


@dataclass(frozen=True)
class Metadata:
    environment: str
    version: str
    timestamp: datetime
    checksum: str
    record_counts: dict[str, int]
    migrations: list[tuple[str, str]]
    migrations_fingerprint: str
    server_version: str
    pg_dump_version: str
    database: str
    size_bytes: int
    duration_seconds: float
    dump_file: str
    compression: str = ""
    note: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def total_rows(self) -> int:
        return sum(self.record_counts.values())

    @property
    def pg_dump_major(self) -> int:
        return int(self.pg_dump_version.split(".")[0])

    def to_json(self) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "environment": self.environment,
            "version": self.version,
            "timestamp": isoformat(self.timestamp),
            "checksum": self.checksum,
            "recordCounts": dict(sorted(self.record_counts.items())),
            "totalRecords": self.total_rows,
            "migrations": _group_migrations(self.migrations),
            "migrationsFingerprint": self.migrations_fingerprint,
            "serverVersion": self.server_version,
            "pgDumpVersion": self.pg_dump_version,
            "database": self.database,
            "sizeBytes": self.size_bytes,
            "durationSeconds": round(self.duration_seconds, 3),
            "dumpFile": self.dump_file,
            "compression": self.compression,
            "note": self.note,
            **self.extra,
        }

    @classmethod
    def from_json(cls, data: Any, source: Path) -> Metadata:
        def bad(why: str) -> SeeddumpError:
            return SeeddumpError(
                f"Metadata {source} is not valid ({why}). Regenerate the dump with: python manage.py generatedump <env>"
            )

        if not isinstance(data, dict):
            raise bad("not a JSON object")
        known = {
            "format", "environment", "version", "timestamp", "checksum", "recordCounts", "totalRecords",
            "migrations", "migrationsFingerprint", "serverVersion", "pgDumpVersion", "database", "sizeBytes",
            "durationSeconds", "dumpFile", "compression", "note",
        }  # fmt: skip
        try:
            if data.get("format") != FORMAT:
                raise bad(f"unknown format {data.get('format')!r}")
            counts = data["recordCounts"]
            if not isinstance(counts, dict) or not all(
                isinstance(k, str) and isinstance(v, int) and v >= 0 for k, v in counts.items()
            ):
                raise bad("recordCounts must map table names to row counts")
            checksum = data["checksum"]
            if not (isinstance(checksum, str) and re.fullmatch(r"sha256:[0-9a-f]{64}", checksum)):
                raise bad("checksum must be 'sha256:' and 64 hex digits")
            grouped = data["migrations"]
            if not isinstance(grouped, dict):
                raise bad("migrations must map each app to its applied migrations")
            migrations = ungroup_migrations(grouped)
            size = data["sizeBytes"]
            if not isinstance(size, int) or size < 0:
                raise bad("sizeBytes must be a whole number")
            return cls(
                environment=validate_environment(str(data["environment"])),
                version=str(data["version"]),
                timestamp=parse_isoformat(str(data["timestamp"])),
                checksum=checksum,
                record_counts=dict(counts),
                migrations=migrations,
                migrations_fingerprint=str(data["migrationsFingerprint"]),
                server_version=str(data["serverVersion"]),
                pg_dump_version=str(data["pgDumpVersion"]),
                database=str(data["database"]),
                size_bytes=size,
                duration_seconds=float(data["durationSeconds"]),
                dump_file=str(data["dumpFile"]),
                compression=str(data.get("compression", "")),
                note=str(data.get("note", "")),
                extra={k: v for k, v in data.items() if k not in known},
            )
        except SeeddumpError:
            raise
        except KeyError as exc:
            raise bad(f"the field {exc.args[0]!r} is missing") from None
        except (TypeError, ValueError) as exc:
            raise bad(str(exc)) from None


def _group_migrations(migrations: Iterable[tuple[str, str]]) -> dict[str, list[str]]:
    grouped: dict[str, list[str]] = {}
    for app, name in sorted(set(migrations)):
        grouped.setdefault(app, []).append(name)
    return grouped


def ungroup_migrations(grouped: dict[str, list[str]]) -> list[tuple[str, str]]:
    """The (app, name) pairs of a metadata ``migrations`` object."""
    if not all(isinstance(names, list) for names in grouped.values()):
        raise ValueError("each app must list its migrations")
    return [(str(app), str(name)) for app, names in grouped.items() for name in names]


# --- Names ------------------------------------------------------------------------------------------


def dump_name(environment: str, version: str, moment: datetime, serial: int = 0) -> str:
    stamp = moment.astimezone(timezone.utc).strftime(_STAMP_FORMAT)
    suffix = f"-{serial}" if serial else ""
    return f"{environment}-seeded-v{version}-{stamp}{suffix}.dump"


def metadata_path(dump_path: Path) -> Path:
    return dump_path.with_name(dump_path.name.removesuffix(".dump") + ".metadata.json")


def latest_dump_link(directory: Path, environment: str) -> Path:
    return directory / f"{environment}-seeded-latest.dump"


def latest_metadata_link(directory: Path, environment: str) -> Path:
    return directory / f"{environment}-seeded-latest.metadata.json"


def _sort_key(path: Path) -> tuple[str, int, int]:
    match = DUMP_NAME_RE.fullmatch(path.name)
    assert match
    # Names resolve to the second; two dumps of one second are ordered by when they were written.
    return match["stamp"], path.stat().st_mtime_ns, int(match["serial"] or 0)


def list_dumps(directory: Path, environment: str | None = None) -> list[Path]:
    """Complete dumps in ``directory`` (of one environment, or all), oldest first."""
    if not directory.is_dir():
        return []
    found = []
    for entry in directory.iterdir():
        match = DUMP_NAME_RE.fullmatch(entry.name)
        if not match or entry.is_symlink() or not entry.is_file():
            continue
        if environment is None or match["env"] == environment:
            found.append(entry)
    return sorted(found, key=_sort_key)


def environments(directory: Path) -> list[str]:
    """Environments that have a ``latest`` link in ``directory``."""
    if not directory.is_dir():
        return []
    suffix = "-seeded-latest.dump"
    names = {e.name.removesuffix(suffix) for e in directory.iterdir() if e.name.endswith(suffix)}
    return sorted(name for name in names if ENVIRONMENT_RE.fullmatch(name))


# --- Writing ----------------------------------------------------------------------------------------


def ensure_directory(directory: Path) -> Path:
    """Creates the dumps folder, readable by its owner only (dumps hold the whole database)."""
    try:
        directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    except OSError as exc:
        raise SeeddumpError(
            f"Cannot create the dumps folder {directory}: {exc.strerror}. Set SEEDDUMP_DIR to a writable folder."
        ) from None
    if not os.access(directory, os.W_OK | os.X_OK):
        raise SeeddumpError(f"The dumps folder {directory} is not writable. Fix its permissions or set SEEDDUMP_DIR.")
    info = directory.stat()
    if info.st_mode & 0o077 and info.st_uid == os.geteuid():
        directory.chmod(0o700)  # a checkout creates it 0755; dumps hold every row of the database
    return directory


def remove_abandoned_partials(directory: Path) -> list[Path]:
    """Deletes temporary files of dumps whose process is gone (killed mid-dump); returns them."""
    removed = []
    for path in directory.glob(".*-seeded.*.partial"):
        try:
            pid = int(path.name.split(".")[-3])
            os.kill(pid, 0)
        except ProcessLookupError:
            path.unlink(missing_ok=True)
            removed.append(path)
        except (ValueError, IndexError, PermissionError):
            continue  # not ours, or another user's live process
    return removed


def new_partial(directory: Path, environment: str) -> Path:
    """An empty, owner-only temporary file for a dump being written; never mistaken for a dump."""
    path = directory / f".{environment}-seeded.{os.getpid()}.{secrets.token_hex(4)}.partial"
    os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
    return path


def publish(partial: Path, environment: str, version: str, moment: datetime) -> Path:
    """Gives a complete dump its final name, never replacing an existing dump."""
    for serial in range(1000):
        final = partial.with_name(dump_name(environment, version, moment, serial))
        try:
            os.link(partial, final)  # fails if ``final`` exists, unlike rename
        except FileExistsError:
            continue
        partial.unlink()
        return final
    raise SeeddumpError(f"Too many dumps named like {final.name}; remove old dumps and try again.")


def _write_atomically(path: Path, data: bytes) -> None:
    temporary = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            temporary.unlink()
        raise


def write_metadata(dump_path: Path, metadata: Metadata) -> Path:
    path = metadata_path(dump_path)
    _write_atomically(path, (json.dumps(metadata.to_json(), indent=2) + "\n").encode())
    return path


def _replace_symlink(link: Path, target_name: str) -> None:
    temporary = link.with_name(f".{link.name}.{secrets.token_hex(4)}.tmp")
    os.symlink(target_name, temporary)
    os.replace(temporary, link)


def point_latest(dump_path: Path, environment: str) -> None:
    """Repoints the environment's ``latest`` links at ``dump_path``, each link swapped atomically.

    The dump link is the one that counts: readers take the metadata beside the dump it names, so the
    moment between the two swaps never pairs a dump with another dump's metadata.
    """
    directory = dump_path.parent
    _replace_symlink(latest_metadata_link(directory, environment), metadata_path(dump_path).name)
    _replace_symlink(latest_dump_link(directory, environment), dump_path.name)


# --- Reading ----------------------------------------------------------------------------------------


def resolve_latest(directory: Path, environment: str) -> Path:
    """The dump that ``<env>-seeded-latest.dump`` names, checked to be a complete dump in ``directory``."""
    link = latest_dump_link(directory, environment)
    if not link.is_symlink():
        if link.exists():
            raise SeeddumpError(f"{link} should be a symlink to a dump. Remove it and run generatedump again.")
        raise SeeddumpError(
            f"There is no {environment} dump in {directory}. Make one with: python manage.py generatedump {environment}"
        )
    target = Path(os.readlink(link))
    if target.is_absolute() or len(target.parts) != 1:
        raise SeeddumpError(f"{link} points outside the dumps folder ({target}). Remove it and run generatedump again.")
    dump = directory / target
    match = DUMP_NAME_RE.fullmatch(target.name)
    if not match or match["env"] != environment:
        raise SeeddumpError(f"{link} points at {target}, which is not a {environment} dump. Remove the link.")
    if not dump.is_file():
        raise SeeddumpError(
            f"{link} points at {target.name}, which is missing. Regenerate it with: "
            f"python manage.py generatedump {environment}"
        )
    return dump


def check_dump_path(path: Path, directory: Path) -> Path:
    """A dump named on the command line: a readable regular file (a symlink only into ``directory``)."""
    if path.is_symlink():
        target = path.resolve()
        if not target.is_relative_to(directory.resolve()):
            raise SeeddumpError(
                f"{path} is a link to {target}, outside the dumps folder {directory}. Pass the file itself."
            )
    if not path.exists():
        raise SeeddumpError(f"The dump {path} does not exist.")
    if not path.is_file():
        raise SeeddumpError(f"{path} is not a dump file. Pass the path of a .dump file.")
    if not os.access(path, os.R_OK):
        raise SeeddumpError(f"The dump {path} is not readable. Fix its permissions.")
    return path


def read_metadata(dump_path: Path) -> Metadata:
    path = metadata_path(dump_path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise SeeddumpError(
            f"The metadata of {dump_path.name} is missing ({path.name}); without it the dump cannot be verified. "
            "Regenerate it with: python manage.py generatedump <env>"
        ) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise SeeddumpError(f"Cannot read {path}: {getattr(exc, 'strerror', None) or exc}.") from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise SeeddumpError(
            f"Metadata {path} is not valid JSON (line {exc.lineno}). Regenerate the dump with: "
            "python manage.py generatedump <env>"
        ) from None
    return Metadata.from_json(data, path)


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(_CHUNK):
            digest.update(chunk)
    return "sha256:" + digest.hexdigest()


def verify(dump_path: Path, metadata: Metadata) -> None:
    """Checks the dump is the file its metadata describes, byte for byte."""
    regenerate = f"Regenerate it with: python manage.py generatedump {metadata.environment}"
    size = dump_path.stat().st_size
    if size != metadata.size_bytes:
        raise SeeddumpError(
            f"The dump {dump_path.name} is {size} bytes but its metadata says {metadata.size_bytes}: "
            f"it is truncated or was changed. {regenerate}"
        )
    with dump_path.open("rb") as handle:
        if handle.read(len(ARCHIVE_MAGIC)) != ARCHIVE_MAGIC:
            raise SeeddumpError(f"{dump_path.name} is not a pg_dump custom-format archive. {regenerate}")
    if sha256_of(dump_path) != metadata.checksum:
        raise SeeddumpError(
            f"The checksum of {dump_path.name} does not match its metadata: the file is corrupt. {regenerate}"
        )
