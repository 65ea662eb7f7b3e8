"""Shared dump storage: push dumps to a Django storage, pull the newest one into the local folder.

SEEDDUMP_STORAGE names an alias in STORAGES (a folder on a shared drive through FileSystemStorage, S3
through django-storages, any other storage). Dumps are stored as ``<SEEDDUMP_STORAGE_PREFIX>/<file name>``
with their metadata (and media archive) beside them; the metadata is uploaded last, so a dump without
metadata is not yet complete and is ignored. A download goes to a hidden temporary file, is checked
against the metadata's size and sha256, and only then takes its name in the local folder.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import queue
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from django.core.files import File
from django.core.files.storage import Storage

from seeddump import dumpfiles, signing
from seeddump.conf import conf
from seeddump.exceptions import SeeddumpError

Progress = Callable[[str], None]
T = TypeVar("T")
_CHUNK = 4 * 1024 * 1024


@dataclass(frozen=True)
class RemoteDump:
    name: str
    metadata: dumpfiles.Metadata


def configured() -> bool:
    return bool(conf.STORAGE)


def storage() -> Storage:
    alias = conf.STORAGE
    if not alias:
        raise SeeddumpError("No shared dump storage is configured: set SEEDDUMP_STORAGE to an alias in STORAGES.")
    # Imported here: STORAGES is Django 4.2+, and an older Django must get seeddump.E001, not an ImportError.
    from django.core.files.storage import storages
    from django.core.files.storage.handler import InvalidStorageError

    try:
        return storages[alias]
    except InvalidStorageError:
        raise SeeddumpError(
            f"SEEDDUMP_STORAGE is '{alias}', which is not in STORAGES; add it there or fix the name."
        ) from None


def _key(file_name: str) -> str:
    prefix = conf.STORAGE_PREFIX.strip("/")
    return f"{prefix}/{file_name}" if prefix else file_name


class StorageStalled(SeeddumpError):
    """A read of the shared storage took longer than SEEDDUMP_STORAGE_TIMEOUT."""


def _bounded(action: str, call: Callable[[], T]) -> T:
    """Runs one storage call, giving up after SEEDDUMP_STORAGE_TIMEOUT seconds: a stalled network drive or
    bucket must not hang a restore. (The stuck call is left to its thread, which cannot be killed.)"""
    result: queue.Queue[tuple[bool, Any]] = queue.Queue(maxsize=1)

    def run() -> None:
        try:
            result.put((True, call()))
        except BaseException as exc:  # handed to the caller's thread
            result.put((False, exc))

    threading.Thread(target=run, daemon=True, name="seeddump-storage").start()
    try:
        ok, value = result.get(timeout=conf.STORAGE_TIMEOUT)
    except queue.Empty:
        raise StorageStalled(
            f"The shared dump storage '{conf.STORAGE}' did not answer within {conf.STORAGE_TIMEOUT}s while "
            f"trying to {action} it. Check the storage (network, credentials), or run with --offline."
        ) from None
    if not ok:
        raise value
    return value


def _failure(action: str, exc: Exception) -> SeeddumpError:
    reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return SeeddumpError(f"Could not {action} the shared dump storage '{conf.STORAGE}': {reason}.")


def push(dump_path: Path, progress: Progress) -> list[str]:
    """Uploads a dump, its media archive (if it has one), then its metadata. Returns the storage names."""
    target = storage()
    names = []
    metadata = dumpfiles.read_metadata(dump_path)
    media = [dumpfiles.media_path(dump_path)] if metadata.media is not None else []
    for path in (dump_path, *media, dumpfiles.metadata_path(dump_path)):
        key = _key(path.name)
        try:
            if target.exists(key):
                target.delete(key)  # an interrupted earlier push; the local file is the complete one
            with path.open("rb") as handle:
                saved = target.save(key, File(handle, name=path.name))
            _make_private(target, saved)
        except Exception as exc:  # storages raise their own errors (botocore's, SFTP's, ...)
            raise _failure("upload to", exc) from None
        if saved != key:
            raise SeeddumpError(f"The shared storage saved {path.name} as {saved}, not {key}; check its settings.")
        progress(f"Uploaded {path.name}")
        names.append(saved)
    return names


def _make_private(target: Storage, name: str) -> None:
    """Dumps hold every row of a database: where the storage is a folder, only its owner may read them."""
    try:
        path = target.path(name)
    except NotImplementedError:
        return  # a remote storage: its own access rules apply
    os.chmod(path, 0o600)


def _read_metadata(target: Storage, name: str) -> dumpfiles.Metadata:
    def read() -> bytes:
        with target.open(_key(name), "rb") as handle:
            return handle.read(dumpfiles.MAX_METADATA_BYTES + 1)

    return dumpfiles.parse_metadata(_bounded("read", read), Path(name))


def list_remote(environment: str | None = None, warn: Progress | None = None) -> list[RemoteDump]:
    """Complete dumps in the shared storage (metadata present, readable, agreeing with the dump's name and,
    with SEEDDUMP_SIGNING_KEY, signed by the team), oldest first. Any other object is skipped, with a
    ``warn`` for each that looked like a dump."""
    target = storage()
    prefix = conf.STORAGE_PREFIX.strip("/")
    try:
        _, files = _bounded("list", lambda: target.listdir(prefix))
    except FileNotFoundError:
        return []
    except SeeddumpError:
        raise
    except Exception as exc:
        raise _failure("list", exc) from None
    present = set(files)
    found = []
    for name in files:
        match = dumpfiles.DUMP_NAME_RE.fullmatch(name)
        metadata_name = name.removesuffix(".dump") + ".metadata.json"
        if not match or metadata_name not in present:
            continue
        if environment is not None and match["env"] != environment:
            continue
        try:
            metadata = _read_metadata(target, metadata_name)
            dumpfiles.check_names_agree(metadata, name, f"{conf.STORAGE}:{_key(metadata_name)}")
            signing.check(metadata, f"the shared {name}")
        except StorageStalled:
            raise  # the storage, not this object: no use asking it about the others
        except SeeddumpError as exc:
            if warn is not None:
                warn(f"Skipped the shared {name}: {exc}")
            continue
        except Exception as exc:  # one unreadable object: the others are still worth a look
            if warn is not None:
                warn(f"Skipped the shared {name}: {_failure('read', exc)}")
            continue
        found.append(RemoteDump(name, metadata))
    return sorted(found, key=lambda r: (r.metadata.timestamp, r.name))


def newest(environment: str, warn: Progress | None = None) -> RemoteDump | None:
    remote = list_remote(environment, warn)
    return remote[-1] if remote else None


def pull(remote: RemoteDump, directory: Path, progress: Progress) -> Path:
    """Downloads a dump (and its media archive) into ``directory`` under its own name, checked, and makes
    it the latest. The metadata is written last: until then the dump is not complete."""
    directory = dumpfiles.ensure_directory(directory)
    metadata = remote.metadata
    _fetch(remote.name, metadata.size_bytes, metadata.checksum, directory, metadata.environment, progress)
    if metadata.media is not None:  # its name was checked to be the dump's own (check_names_agree)
        media = metadata.media
        _fetch(media.file, media.size_bytes, media.checksum, directory, metadata.environment, progress)
    final = directory / remote.name
    dumpfiles.write_metadata(final, metadata)
    dumpfiles.point_latest(final, metadata.environment)
    return final


def _fetch(name: str, size_bytes: int, checksum: str, directory: Path, environment: str, progress: Progress) -> Path:
    """Downloads one file of a shared dump under its own name, checked against the metadata's size and
    sha256; a local file of that name is kept if it is the same, and never replaced if it is not."""
    final = directory / name
    if final.is_file() and not final.is_symlink() and dumpfiles.sha256_of(final) == checksum:
        return final
    if final.exists() or final.is_symlink():
        raise SeeddumpError(
            f"The local {final} differs from the shared {'dump' if name.endswith('.dump') else 'file'} of the same "
            "name, and an existing dump is never "
            "replaced. Keep it (restoredump --offline), or move it out of the dumps folder and pull again."
        )
    partial = dumpfiles.new_partial(directory, environment)
    digest = hashlib.sha256()
    try:
        progress(f"Downloading {name} ({size_bytes / 1e6:.1f} MB)")
        try:
            source = _bounded("download from", lambda: storage().open(_key(name), "rb"))
            with source, partial.open("wb") as target:
                while chunk := _bounded("download from", lambda: source.read(_CHUNK)):
                    digest.update(chunk)
                    target.write(chunk)
                    if target.tell() > size_bytes:
                        break  # longer than the metadata says: no use reading on
                target.flush()
                os.fsync(target.fileno())
        except SeeddumpError:
            raise
        except Exception as exc:  # storages raise their own errors (botocore's, SFTP's, ...)
            raise _failure("download from", exc) from None
        size = partial.stat().st_size
        checksum_ok = "sha256:" + digest.hexdigest() == checksum
        if size != size_bytes or not checksum_ok:
            raise SeeddumpError(
                f"The download of {name} does not match its metadata ({size} bytes, checksum "
                f"{'ok' if checksum_ok else 'wrong'}): the shared copy is damaged. "
                "Push the dump again from a machine that has it."
            )
        os.link(partial, final)  # fails if a file of that name appeared meanwhile: never replaced
    finally:
        with contextlib.suppress(FileNotFoundError):
            partial.unlink()
    progress(f"Downloaded {name}")
    return final


def sync_latest(environment: str, directory: Path, *, required: bool, progress: Progress) -> Path | None:
    """Pulls the newest shared dump of ``environment`` when the local folder has none or an older one.

    With ``required`` (--pull) a storage that cannot be reached is an error; otherwise it is reported and
    the local dumps are used.
    """
    try:
        remote = newest(environment, progress)
    except SeeddumpError as exc:
        if required:
            raise
        progress(f"{exc} Using the local dumps.")
        return None
    if remote is None:
        if required:
            raise SeeddumpError(f"There is no {environment} dump in the shared storage '{conf.STORAGE}'.")
        return None
    try:
        local = dumpfiles.read_metadata(dumpfiles.resolve_latest(directory, environment))
    except SeeddumpError:
        local = None
    if local is not None and (local.timestamp, local.dump_file) >= (remote.metadata.timestamp, remote.name):
        return None
    return pull(remote, directory, progress)
