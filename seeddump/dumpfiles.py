"""The dump file format: names, the metadata JSON beside each dump, checksums and the ``latest`` links.

A dump is ``<env>-seeded-v<version>-<YYYYmmddTHHMMSSZ>[-<n>].dump`` (``pg_dump -Fc``) with
``<same stem>.metadata.json`` beside it. ``<env>-seeded-latest.dump`` and
``<env>-seeded-latest.metadata.json`` are relative symlinks to the newest pair. Files are written under a
hidden temporary name and only take their final name once complete, so a name that matches the pattern
is always a whole file.
"""

from __future__ import annotations

import contextlib
import difflib
import errno
import hashlib
import json
import os
import re
import secrets
import stat
import weakref
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, TextIO

from seeddump.exceptions import NoDump, SeeddumpError

FORMAT = 1
ENVIRONMENT_RE = re.compile(r"^[a-z][a-z0-9_-]{0,31}$")
# A version is SEEDDUMP_VERSION, a short commit or a fingerprint, marked -dirty-<hex> (``seeddump.versions``).
_VERSION = r"[0-9A-Za-z]{1,40}(?:-dirty-[0-9a-f]{8})?"
VERSION_RE = re.compile(_VERSION)
DUMP_NAME_RE = re.compile(
    rf"^(?P<env>[a-z][a-z0-9_-]{{0,31}})-seeded-v(?P<version>{_VERSION})"
    r"-(?P<stamp>\d{8}T\d{6}Z)(?:-(?P<serial>\d{1,4}))?\.dump$"
)
ARCHIVE_MAGIC = b"PGDMP"
_STAMP_FORMAT = "%Y%m%dT%H%M%SZ"
_CHUNK = 4 * 1024 * 1024
# Bounds of what a metadata file may hold: far above any real dump's, far below what hurts to read.
MAX_METADATA_BYTES = 4_000_000
_MAX_TABLES = 20_000
_MAX_MIGRATIONS = 50_000
_MAX_NOTE = 10_000
_MAX_INT = 2**63 - 1
_CLOCK_SKEW = timedelta(minutes=10)
_PG_VERSION_RE = re.compile(r"(\d{1,3})(?:\.\d{1,5}){0,2}(?:[a-z]+\d{0,3})?(?: .{0,60})?")
_REQUIRED = (
    "environment", "version", "timestamp", "checksum", "recordCounts", "migrations", "migrationsFingerprint",
    "serverVersion", "pgDumpVersion", "database", "sizeBytes", "durationSeconds", "dumpFile",
)  # fmt: skip
_KNOWN = {
    *_REQUIRED,
    "format",
    "totalRecords",
    "compression",
    "note",
    "signature",
    "media",
    "excludedTableData",
    "extensions",
}
MEDIA_SUFFIX = ".media.tar.gz"
_MAX_MEDIA_FILES = 10_000_000


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
class MediaInfo:
    """The media archive beside a dump (``<dump stem>.media.tar.gz``): the project's MEDIA_ROOT when the
    dump was made. ``files`` and ``bytes`` are what it holds unpacked; see ``seeddump.media``."""

    file: str
    size_bytes: int
    checksum: str
    files: int
    bytes: int

    def to_json(self) -> dict[str, Any]:
        return {
            "file": self.file,
            "sizeBytes": self.size_bytes,
            "checksum": self.checksum,
            "files": self.files,
            "bytes": self.bytes,
        }

    def describe(self) -> str:
        return f"{self.files} file(s), {human_size(self.bytes)}"


def human_size(size: int) -> str:
    """``518 bytes``, ``12.3 kB``, ``4.0 MB``, ``1.2 GB``."""
    for unit, scale in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if size >= scale:
            return f"{size / scale:.1f} {unit}"
    return f"{size} bytes"


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
    media: MediaInfo | None = None  # the dump's media archive, when it was made with --media
    # Tables whose rows were left out on purpose (SEEDDUMP_EXCLUDE_TABLE_DATA): their schema is in the dump,
    # their recordCounts are 0.
    excluded_table_data: tuple[str, ...] = ()
    # The extensions of the dumped database (name, schema, version); None for a dump made before seeddump
    # recorded them. Only a hint of whether to look: what the restore makes is read from the archive itself.
    extensions: tuple[tuple[str, str, str], ...] | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    signature: str = ""  # see seeddump.signing
    signed_text: bytes = field(default=b"", compare=False, repr=False)  # what the signature covers

    @property
    def total_rows(self) -> int:
        return sum(self.record_counts.values())

    @property
    def pg_dump_major(self) -> int:
        match = _PG_VERSION_RE.fullmatch(self.pg_dump_version)
        return int(match.group(1)) if match else 0

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
            **({"media": self.media.to_json()} if self.media is not None else {}),
            **({"excludedTableData": sorted(self.excluded_table_data)} if self.excluded_table_data else {}),
            **(
                {"extensions": [{"name": n, "schema": s, "version": v} for n, s, v in self.extensions]}
                if self.extensions is not None
                else {}
            ),
            **self.extra,
            **({"signature": self.signature} if self.signature else {}),
        }

    @classmethod
    def from_json(cls, data: Any, source: Path) -> Metadata:
        """The metadata in ``data`` (parsed JSON), every field checked for its type and range: metadata
        travels with dumps from teammates and shared storages, so it is input like any other."""

        def bad(why: str) -> SeeddumpError:
            return SeeddumpError(
                f"Metadata {source} is not valid ({why}). Regenerate the dump with: python manage.py generatedump <env>"
            )

        if not isinstance(data, dict):
            raise bad("not a JSON object")
        if data.get("format") != FORMAT:
            raise bad(f"unknown format {str(data.get('format'))[:20]!r}")
        missing = [name for name in _REQUIRED if name not in data]
        if missing:
            raise bad(f"the field {missing[0]!r} is missing")

        def text(name: str, limit: int = 200, pattern: re.Pattern[str] | None = None) -> str:
            value = data.get(name, "")
            if not isinstance(value, str) or len(value) > limit or (pattern and not pattern.fullmatch(value)):
                raise bad(f"{name} must be text of at most {limit} characters" + (" in its format" if pattern else ""))
            return value

        def whole(value: Any, name: str) -> int:
            if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= _MAX_INT:
                raise bad(f"{name} must be a whole number from 0 to {_MAX_INT}")
            return value

        counts = data["recordCounts"]
        if not isinstance(counts, dict) or len(counts) > _MAX_TABLES:
            raise bad("recordCounts must map table names to row counts")
        for table, count in counts.items():
            if len(table) > 200:
                raise bad("recordCounts must map table names to row counts")
            whole(count, f"the row count of {table[:40]}")
        checksum = text("checksum", 71, re.compile(r"sha256:[0-9a-f]{64}"))
        grouped = data["migrations"]
        if not isinstance(grouped, dict) or len(grouped) > _MAX_TABLES:
            raise bad("migrations must map each app to its applied migrations")
        try:
            migrations = ungroup_migrations(grouped)
        except ValueError as exc:
            raise bad(str(exc)) from None
        if len(migrations) > _MAX_MIGRATIONS or any(len(app) + len(name) > 300 for app, name in migrations):
            raise bad("migrations lists too many or too long names")
        duration = data["durationSeconds"]
        if isinstance(duration, bool) or not isinstance(duration, (int, float)) or not 0 <= duration < 1e9:
            raise bad("durationSeconds must be a number of seconds")
        try:
            timestamp = parse_isoformat(text("timestamp", 20))
        except ValueError:
            raise bad("timestamp must be like 2026-01-31T12:00:00Z") from None
        if timestamp > datetime.now(timezone.utc) + _CLOCK_SKEW:
            raise bad(f"its timestamp {isoformat(timestamp)} is in the future")
        environment = text("environment", 32)
        if not ENVIRONMENT_RE.fullmatch(environment):
            raise bad("environment must be a valid environment name")
        signature = data.get("signature", "")
        if not isinstance(signature, str) or len(signature) > 200:
            raise bad("signature must be text")
        media = None
        if data.get("media") is not None:
            fields = data["media"]
            if not isinstance(fields, dict) or not all(
                name in fields for name in ("file", "sizeBytes", "checksum", "files", "bytes")
            ):
                raise bad("media must describe the media archive (file, sizeBytes, checksum, files, bytes)")
            file_name, media_checksum = fields["file"], fields["checksum"]
            if not isinstance(file_name, str) or not file_name.endswith(MEDIA_SUFFIX) or len(file_name) > 200:
                raise bad(f"media.file must be the name of a {MEDIA_SUFFIX} archive")
            if not isinstance(media_checksum, str) or not re.fullmatch(r"sha256:[0-9a-f]{64}", media_checksum):
                raise bad("media.checksum must be sha256:<64 hex digits>")
            files = whole(fields["files"], "media.files")
            if files > _MAX_MEDIA_FILES:
                raise bad(f"media.files must be at most {_MAX_MEDIA_FILES}")
            media = MediaInfo(
                file=file_name,
                size_bytes=whole(fields["sizeBytes"], "media.sizeBytes"),
                checksum=media_checksum,
                files=files,
                bytes=whole(fields["bytes"], "media.bytes"),
            )
        excluded = data.get("excludedTableData", [])
        if (
            not isinstance(excluded, list)
            or len(excluded) > _MAX_TABLES
            or not all(isinstance(table, str) and counts.get(table) == 0 for table in excluded)
        ):
            raise bad("excludedTableData must list tables whose recordCounts are 0")
        found = data.get("extensions")
        recorded: tuple[tuple[str, str, str], ...] | None = None
        if found is not None:
            fields = ("name", "schema", "version")
            if (
                not isinstance(found, list)
                or len(found) > _MAX_TABLES
                or not all(
                    isinstance(item, dict) and all(isinstance(item.get(f), str) and len(item[f]) <= 200 for f in fields)
                    for item in found
                )
            ):
                raise bad("extensions must list each extension's name, schema and version")
            recorded = tuple((item["name"], item["schema"], item["version"]) for item in found)
        return cls(
            environment=environment,
            version=text("version", 60, VERSION_RE),
            timestamp=timestamp,
            checksum=checksum,
            record_counts=dict(counts),
            migrations=migrations,
            migrations_fingerprint=text("migrationsFingerprint", 64),
            server_version=text("serverVersion", 100),
            pg_dump_version=text("pgDumpVersion", 40, _PG_VERSION_RE),
            database=text("database", 200),
            size_bytes=whole(data["sizeBytes"], "sizeBytes"),
            duration_seconds=float(duration),
            dump_file=text("dumpFile", 200),
            compression=text("compression", 40),
            note=text("note", _MAX_NOTE),
            media=media,
            excluded_table_data=tuple(excluded),
            extensions=recorded,
            extra={k: v for k, v in data.items() if k not in _KNOWN},
            signature=signature,
            signed_text=signable(data),
        )


def signable(data: dict[str, Any]) -> bytes:
    """The bytes a metadata signature covers: every field but the signature, in one canonical form."""
    unsigned = {key: value for key, value in data.items() if key != "signature"}
    return json.dumps(unsigned, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode()


def _group_migrations(migrations: Iterable[tuple[str, str]]) -> dict[str, list[str]]:
    grouped: dict[str, list[str]] = {}
    for app, name in sorted(set(migrations)):
        grouped.setdefault(app, []).append(name)
    return grouped


def ungroup_migrations(grouped: dict[str, list[str]]) -> list[tuple[str, str]]:
    """The (app, name) pairs of a metadata ``migrations`` object."""
    if not all(isinstance(names, list) and all(isinstance(n, str) for n in names) for names in grouped.values()):
        raise ValueError("each app must list its migrations by name")
    return [(str(app), name) for app, names in grouped.items() for name in names]


# --- Names ------------------------------------------------------------------------------------------


def dump_name(environment: str, version: str, moment: datetime, serial: int = 0) -> str:
    stamp = moment.astimezone(timezone.utc).strftime(_STAMP_FORMAT)
    suffix = f"-{serial}" if serial else ""
    return f"{environment}-seeded-v{version}-{stamp}{suffix}.dump"


def dump_in(directory: Path, file_name: str) -> Path | None:
    """The dump called ``file_name`` in ``directory``, if the name is a dump's and the file a regular one
    there (no link): what a record, a metadata file or a storage listing names is checked with this before
    any file is read or deleted because of it."""
    if not isinstance(file_name, str) or not DUMP_NAME_RE.fullmatch(file_name):
        return None
    path = directory / file_name
    try:
        info = path.lstat()
    except OSError:
        return None
    if not stat.S_ISREG(info.st_mode) or path.resolve().parent != directory.resolve():
        return None
    return path


def metadata_path(dump_path: Path) -> Path:
    return dump_path.with_name(dump_path.name.removesuffix(".dump") + ".metadata.json")


def media_path(dump_path: Path) -> Path:
    """Where a dump's media archive lies: beside it, named after it."""
    return dump_path.with_name(media_name(dump_path.name))


def media_name(dump_file: str) -> str:
    return dump_file.removesuffix(".dump") + MEDIA_SUFFIX


def companions(dump_path: Path) -> list[Path]:
    """The files that belong to a dump and go wherever it goes (deleted, pruned): its metadata and media."""
    return [metadata_path(dump_path), media_path(dump_path)]


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
    check_directory(directory)
    return directory


def check_directory(directory: Path) -> None:
    """Refuses a dumps folder that someone else controls (owned by another user); makes our own private.

    Whoever controls the folder controls what seeddump reads there (which dump is "latest", its
    metadata) and where what it writes ends up (a link planted under the name of its log)."""
    try:
        info = directory.lstat()
    except FileNotFoundError:
        return
    if stat.S_ISLNK(info.st_mode):
        info = directory.stat()
    if info.st_uid != os.geteuid():
        raise SeeddumpError(
            f"The dumps folder {directory} belongs to another user (uid {info.st_uid}), who could replace the dumps "
            "and what seeddump writes there. Use a folder of your own (SEEDDUMP_DIR)."
        )
    if info.st_mode & 0o077:
        directory.chmod(0o700)  # a checkout makes it 0755 or 0775; dumps hold every row of the database


def open_own(path: Path, *, append: bool) -> TextIO:
    """Opens a file seeddump writes (a log) without following a link, and only if it is a plain file of
    this user's, made private; truncated only then (when not ``append``): never a file someone else
    planted under that name."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_NOFOLLOW | (os.O_APPEND if append else 0)
    try:
        fd = os.open(path, flags, 0o600)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise SeeddumpError(f"{path} is a link; seeddump writes no file through a link. Remove it.") from None
        raise SeeddumpError(f"Cannot write {path}: {exc.strerror}.") from None
    info = os.fstat(fd)
    if not stat.S_ISREG(info.st_mode) or info.st_uid != os.geteuid() or info.st_nlink != 1:
        os.close(fd)
        raise SeeddumpError(f"{path} is not a file of yours (another user's, a device or a hard link). Remove it.")
    os.fchmod(fd, 0o600)
    if not append:
        os.ftruncate(fd, 0)
    return os.fdopen(fd, "a" if append else "w", encoding="utf-8")


def remove_abandoned_partials(directory: Path) -> list[Path]:
    """Deletes temporary files of dumps whose process is gone (killed mid-dump); returns them."""
    removed = []
    for path in sorted(directory.glob(".*-seeded.*.partial")):
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
        made = {DUMP_NAME_RE.fullmatch(p.name)["env"] for p in list_dumps(directory)}  # type: ignore[index]
        known = sorted(set(environments(directory)) | made)
        close = difflib.get_close_matches(environment, known, n=1)
        hint = f" It has dumps of: {', '.join(known)}." if known else ""
        if close:
            hint += f" Did you mean '{close[0]}'?"
        raise NoDump(
            f"There is no {environment} dump in {directory}.{hint} Make one with: "
            f"python manage.py generatedump {environment}"
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


def newer_than_latest(directory: Path, latest: Path) -> Path | None:
    """A complete dump of the same environment newer than ``latest`` (by the time in its name), lying in the
    folder but not linked as latest: copied in by hand, or pulled by hand from a teammate."""
    match = DUMP_NAME_RE.fullmatch(latest.name)
    if match is None:
        return None
    for candidate in reversed(list_dumps(directory, match["env"])):
        stamp = DUMP_NAME_RE.fullmatch(candidate.name)["stamp"]  # type: ignore[index]
        if stamp <= match["stamp"]:
            return None
        try:
            read_metadata(candidate)
        except SeeddumpError:
            continue  # incomplete or not ours to trust
        return candidate
    return None


def newer_note(directory: Path, latest: Path) -> str | None:
    """What to say when a newer complete dump lies beside the one ``latest`` names."""
    newer = newer_than_latest(directory, latest)
    if newer is None:
        return None
    environment = DUMP_NAME_RE.fullmatch(newer.name)["env"]  # type: ignore[index]
    return (
        f"A newer {environment} dump is in {directory}: {newer.name}, but {environment}-seeded-latest.dump names "
        f"{latest.name}. Restore it with: python manage.py restoredump {environment} --dump {newer}"
    )


def check_dump_path(path: Path, directory: Path) -> Path:
    """A dump named on the command line: a readable regular file (a symlink only into ``directory``, such as the
    ``latest`` link, which stands for the dump it names)."""
    if path.is_symlink():
        try:
            target = path.resolve(strict=True)
        except (OSError, RuntimeError):  # a loop, or a link to nothing
            raise SeeddumpError(
                f"{path} is a link that leads nowhere (a loop, or a missing file). Pass a dump file."
            ) from None
        if not target.is_relative_to(directory.resolve()):
            raise SeeddumpError(
                f"{path} is a link to {target}, outside the dumps folder {directory}. Pass the file itself."
            )
        path = target
    if not path.exists():
        raise SeeddumpError(f"The dump {path} does not exist.")
    if not path.is_file():
        raise SeeddumpError(f"{path} is not a dump file. Pass the path of a .dump file.")
    if not os.access(path, os.R_OK):
        raise SeeddumpError(f"The dump {path} is not readable. Fix its permissions.")
    return path


def parse_metadata(raw: bytes, source: Path) -> Metadata:
    """Metadata from the bytes of a metadata file, bounded in size and depth; SeeddumpError if unfit."""
    regenerate = "Regenerate the dump with: python manage.py generatedump <env>"
    if len(raw) > MAX_METADATA_BYTES:
        raise SeeddumpError(
            f"Metadata {source} is {len(raw)} bytes, more than metadata ever needs ({MAX_METADATA_BYTES}). {regenerate}"
        )
    try:
        data = json.loads(raw.decode("utf-8"))
    except UnicodeDecodeError:
        raise SeeddumpError(f"Metadata {source} is not UTF-8 text. {regenerate}") from None
    except json.JSONDecodeError as exc:
        raise SeeddumpError(f"Metadata {source} is not valid JSON (line {exc.lineno}). {regenerate}") from None
    except RecursionError:
        raise SeeddumpError(f"Metadata {source} is nested too deeply to be metadata. {regenerate}") from None
    return Metadata.from_json(data, source)


def check_names_agree(metadata: Metadata, file_name: str, source: Path | str) -> None:
    """The dump's name, its metadata and (through the name) the ``latest`` link must tell the same story:
    a metadata file cannot make a dump another environment's, or newer than its name says."""
    match = DUMP_NAME_RE.fullmatch(file_name)
    problems = []
    if metadata.dump_file != file_name:
        problems.append(f"it describes {metadata.dump_file[:80]!r}")
    if metadata.media is not None and metadata.media.file != media_name(file_name):
        problems.append(f"its media archive is {metadata.media.file[:80]!r}, not {media_name(file_name)!r}")
    if match is not None:
        if metadata.environment != match["env"]:
            problems.append(f"it says environment {metadata.environment!r}, the name {match['env']!r}")
        if metadata.version != match["version"]:
            problems.append(f"it says version {metadata.version!r}, the name {match['version']!r}")
        if metadata.timestamp.strftime(_STAMP_FORMAT) != match["stamp"]:
            problems.append(f"it says {isoformat(metadata.timestamp)}, the name {match['stamp']}")
    if problems:
        raise SeeddumpError(
            f"The metadata {source} does not match the dump {file_name} ({'; '.join(problems)}): it belongs to "
            "another dump or was changed. Copy the dump together with its own .metadata.json, or regenerate it."
        )


def read_metadata(dump_path: Path) -> Metadata:
    path = metadata_path(dump_path)
    try:
        with path.open("rb") as handle:
            raw = handle.read(MAX_METADATA_BYTES + 1)
    except FileNotFoundError:
        raise SeeddumpError(
            f"The metadata of {dump_path.name} is missing ({path.name}); without it the dump cannot be verified. "
            f"Copy {path.name} from where the dump came from into {dump_path.parent}, or regenerate the dump "
            "with: python manage.py generatedump <env>"
        ) from None
    except OSError as exc:
        raise SeeddumpError(f"Cannot read {path}: {exc.strerror or exc}.") from None
    metadata = parse_metadata(raw, path)
    check_names_agree(metadata, dump_path.name, path)
    return metadata


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(_CHUNK):
            digest.update(chunk)
    return "sha256:" + digest.hexdigest()


class OpenedDump:
    """A dump opened once and verified through that descriptor (``open_verified``). The programs that read it
    get ``path`` (``/dev/fd/N``, with ``fds`` to hand down): they read the very file that was verified, whatever
    is renamed over its name meanwhile (while a confirmation prompt waits, say), and each parallel pg_restore
    job opens it anew with an offset of its own. Where the system has no per-process ``/proc/self/fd``
    (macOS), they get the name instead."""

    def __init__(self, name: Path, fd: int) -> None:
        self.name, self.fd = name, fd
        self._closer = weakref.finalize(self, os.close, fd)

    @property
    def path(self) -> Path:
        return Path(f"/dev/fd/{self.fd}") if _PER_PROCESS_FDS else self.name

    @property
    def fds(self) -> tuple[int, ...]:
        return (self.fd,) if _PER_PROCESS_FDS else ()

    def close(self) -> None:
        self._closer()

    def __enter__(self) -> OpenedDump:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


_PER_PROCESS_FDS = Path("/proc/self/fd").is_dir()


def open_verified(dump_path: Path, metadata: Metadata) -> OpenedDump:
    """Opens the dump and checks, through that descriptor, that it is the file its metadata describes, byte
    for byte (see ``OpenedDump``)."""
    regenerate = f"Regenerate it with: python manage.py generatedump {metadata.environment}"
    fd = os.open(dump_path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise SeeddumpError(f"{dump_path} is not a dump file. Pass the path of a .dump file.")
        if info.st_size != metadata.size_bytes:
            raise SeeddumpError(
                f"The dump {dump_path.name} is {info.st_size} bytes but its metadata says {metadata.size_bytes}: "
                f"it is truncated or was changed. {regenerate}"
            )
        if os.pread(fd, len(ARCHIVE_MAGIC), 0) != ARCHIVE_MAGIC:
            raise SeeddumpError(f"{dump_path.name} is not a pg_dump custom-format archive. {regenerate}")
        state = _state_of(info)
        if not verified_before(dump_path, metadata.checksum, state):
            if _sha256_of_fd(fd) != metadata.checksum:
                raise SeeddumpError(
                    f"The checksum of {dump_path.name} does not match its metadata: the file is corrupt. {regenerate}"
                )
            remember_verified(dump_path, metadata.checksum, state)
    except BaseException:
        os.close(fd)
        raise
    return OpenedDump(dump_path, fd)


def verify(dump_path: Path, metadata: Metadata) -> None:
    """Checks the dump is the file its metadata describes, byte for byte."""
    open_verified(dump_path, metadata).close()


def _sha256_of_fd(fd: int) -> str:
    digest = hashlib.sha256()
    offset = 0
    while chunk := os.pread(fd, _CHUNK, offset):
        digest.update(chunk)
        offset += len(chunk)
    return "sha256:" + digest.hexdigest()


# Hashing a dump is the one step of a warm restore that grows with the database (about a second per GB).
# A file whose checksum was computed here and which has not changed since (same device, inode, size,
# modification and change times: any write, rename or link changes the change time, which only root can
# set back) is not hashed again. The record lives in the (private) dumps folder; elsewhere files are
# always hashed.
_VERIFIED_NAME = ".seeddump-verified.json"


def _state_of(info: os.stat_result) -> list[int]:
    return [info.st_dev, info.st_ino, info.st_size, info.st_mtime_ns, info.st_ctime_ns]


def _file_state(path: Path) -> list[int]:
    return _state_of(path.stat())


def _private_folder(folder: Path) -> bool:
    try:
        info = folder.stat()
    except OSError:
        return False
    return info.st_uid == os.geteuid() and not info.st_mode & 0o077


def _verified_records(folder: Path) -> dict[str, Any]:
    try:
        records = json.loads((folder / _VERIFIED_NAME).read_text())
    except (OSError, ValueError):
        return {}
    return records if isinstance(records, dict) else {}


def verified_before(path: Path, checksum: str, state: list[int] | None = None) -> bool:
    """Whether ``path`` (as ``state`` says it is now, default: as it is) was hashed to ``checksum`` here and has
    not changed since (see above)."""
    if not _private_folder(path.parent):
        return False
    record = _verified_records(path.parent).get(path.name)
    try:
        state = _file_state(path) if state is None else state
    except OSError:
        return False
    return isinstance(record, dict) and record.get("checksum") == checksum and record.get("file") == state


def remember_verified(path: Path, checksum: str, state: list[int] | None = None) -> None:
    """Records that ``path`` has ``checksum`` as it now is (or as ``state`` says it was when hashed); forgets
    files that are gone. Best effort."""
    folder = path.parent
    if not _private_folder(folder):
        return
    with contextlib.suppress(OSError, SeeddumpError):
        records = {name: record for name, record in _verified_records(folder).items() if (folder / name).is_file()}
        records[path.name] = {"checksum": checksum, "file": _file_state(path) if state is None else state}
        partial = folder / f".{_VERIFIED_NAME}.{secrets.token_hex(4)}"
        try:
            with open_own(partial, append=False) as handle:
                json.dump(records, handle)
            os.replace(partial, folder / _VERIFIED_NAME)
        finally:
            partial.unlink(missing_ok=True)
