"""Seeded media: the project's MEDIA_ROOT archived beside a dump, checked, unpacked beside it and swapped in.

A dump made with ``--media`` has ``<dump stem>.media.tar.gz`` beside it: a gzip-compressed tar of every
regular file and folder under MEDIA_ROOT (links, devices and sockets are left out), described in the dump's
metadata (``dumpfiles.MediaInfo``: size, sha256, file count, unpacked bytes).

An archive is input like a dump: ``check`` reads it once, in a stream, and refuses it in one line unless its
checksum and size are the metadata's and every member is a plain file or folder whose name stays inside the
media folder (no absolute path, no ``..``, no link, device or FIFO, no name twice). ``unpack`` reads it again
into a new folder beside MEDIA_ROOT (``.<name>.seeddump-new.<pid>.<hex>``), checking every member and the
checksum once more on the way, and never writes through a link: it creates each file itself with
``O_EXCL|O_NOFOLLOW`` in a folder only this process can write to. ``swap`` then puts the unpacked folder in
MEDIA_ROOT's place with one ``renameat2(RENAME_EXCHANGE)``: at every moment MEDIA_ROOT is one complete
folder, the old or the new. The replaced folder is renamed ``.<name>.seeddump-old.<pid>.<hex>`` and dropped
with the replaced database (``finishing``); whatever a killed run leaves is dropped by the next restore.

Only the default storage, and only when it is a FileSystemStorage: files of a remote storage (S3, ...) are
not on this machine to archive, and the commands refuse ``--media`` for them in one line.
"""

from __future__ import annotations

import ctypes
import errno
import hashlib
import os
import re
import secrets
import shutil
import stat
import tarfile
import threading
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path, PurePosixPath
from typing import IO

from seeddump import processes
from seeddump.dumpfiles import MediaInfo
from seeddump.exceptions import SeeddumpError

Progress = Callable[[str], None]

_CHUNK = 1024 * 1024
_COMPRESSLEVEL = 1  # media are mostly images and documents, already compressed: level 1 costs least
_MAX_NAME = 4096
# Free space kept beside MEDIA_ROOT after unpacking, on top of what the archive holds: 64 MB, or a twentieth
# of a smaller filesystem (a small volume is not refused for a margin larger than itself).
SPACE_MARGIN = 64 * 1024 * 1024
SPACE_MARGIN_SHARE = 20


def _quiet(message: str) -> None:
    pass


class ArchiveRefused(SeeddumpError):
    """A media archive that is damaged, not the metadata's, or holds a member that could escape the folder."""


# --- The media folder -------------------------------------------------------------------------------------


def media_root() -> Path:
    """MEDIA_ROOT, as the default storage (a FileSystemStorage) uses it; SeeddumpError for any other storage."""
    from django.core.files.storage import FileSystemStorage, storages

    storage = storages["default"]
    if not isinstance(storage, FileSystemStorage):
        raise SeeddumpError(
            f"Media archives need the default storage to be a FileSystemStorage (files on this machine); it is "
            f"{type(storage).__module__}.{type(storage).__qualname__}. Copy those files with the storage's own "
            "tools, and dump and restore without --media."
        )
    location = str(storage.location or "")
    if not location or not Path(location).is_absolute():
        raise SeeddumpError(
            "MEDIA_ROOT is not set to an absolute folder, so there are no media files to archive or restore. "
            "Set MEDIA_ROOT, or dump and restore without --media."
        )
    return Path(location)


def _resolved(root: Path) -> Path:
    """The folder MEDIA_ROOT names: a link is followed once, so the swap renames the real folder."""
    return root.resolve() if root.is_symlink() else root


# --- Archiving --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Archived:
    files: int
    bytes: int
    skipped: tuple[str, ...]  # links and special files left out, relative to MEDIA_ROOT


def _walk(root: Path, excluded: set[Path]) -> Iterator[tuple[str, os.DirEntry[str]]]:
    """(relative name, entry) of every entry under ``root``, depth first, in name order, without following links."""
    stack = [(root, "")]
    while stack:
        folder, prefix = stack.pop()
        try:
            entries = _entries(folder)[::-1]
        except FileNotFoundError:
            continue  # removed while we walked
        for entry in entries:
            relative = f"{prefix}{entry.name}"
            if Path(entry.path) in excluded:
                continue
            yield relative, entry
            if entry.is_dir(follow_symlinks=False):
                stack.append((Path(entry.path), relative + "/"))


def archive(root: Path, target: Path, *, exclude: tuple[Path, ...] = ()) -> Archived:
    """Writes MEDIA_ROOT (``root``) as a compressed tar to ``target``, an empty file of ours.

    Members carry no owner and are made by reading each file through a descriptor opened without following
    links, so the archive holds exactly what the folder held as plain files and folders.
    """
    root = _resolved(root)
    files = total = 0
    skipped: list[str] = []
    excluded = {path.resolve() for path in (*exclude, *ours_inside(root))}
    try:
        with tarfile.open(target, "w:gz", compresslevel=_COMPRESSLEVEL, format=tarfile.PAX_FORMAT) as tar:
            if not root.is_dir():
                return Archived(0, 0, ())
            for relative, entry in _walk(root, excluded):
                info = entry.stat(follow_symlinks=False)
                member = tarfile.TarInfo(relative)
                member.mtime = int(info.st_mtime)
                member.mode = stat.S_IMODE(info.st_mode) & 0o755
                if stat.S_ISDIR(info.st_mode):
                    member.type = tarfile.DIRTYPE
                    tar.addfile(member)
                    continue
                if not stat.S_ISREG(info.st_mode):
                    skipped.append(relative)
                    continue
                try:
                    fd = os.open(entry.path, os.O_RDONLY | os.O_NOFOLLOW)
                except FileNotFoundError:
                    continue  # deleted while we walked: not part of the media any more
                with os.fdopen(fd, "rb") as handle:
                    opened = os.fstat(handle.fileno())
                    if not stat.S_ISREG(opened.st_mode):
                        skipped.append(relative)
                        continue
                    member.size = opened.st_size
                    try:
                        tar.addfile(member, handle)
                    except OSError as exc:
                        if "unexpected end of data" in str(exc):
                            raise SeeddumpError(
                                f"{root / relative} shrank while it was archived. Run generatedump again when "
                                "nothing writes to MEDIA_ROOT."
                            ) from None
                        raise
                files += 1
                total += member.size
    except PermissionError as exc:
        raise SeeddumpError(
            f"Cannot read {exc.filename} in MEDIA_ROOT: permission denied. Fix its permissions."
        ) from None
    except OSError as exc:
        if exc.errno == errno.ENOSPC:
            raise  # generatedump says how much space it needs
        raise SeeddumpError(f"Archiving MEDIA_ROOT failed at {exc.filename or root}: {exc.strerror or exc}.") from None
    return Archived(files, total, tuple(skipped))


# --- Reading an archive -----------------------------------------------------------------------------------


class _Hashing:
    """A file object that hashes what is read through it, and refuses to read past ``limit`` bytes."""

    def __init__(self, raw: IO[bytes], limit: int, name: str) -> None:
        self.raw, self.limit, self.name = raw, limit, name
        self.digest = hashlib.sha256()
        self.count = 0

    def read(self, size: int = -1) -> bytes:
        data = self.raw.read(size)
        self.count += len(data)
        if self.count > self.limit:
            raise ArchiveRefused(f"{self.name} is longer than its metadata says: it was changed.")
        self.digest.update(data)
        return data

    def drain(self) -> None:
        while self.read(_CHUNK):
            pass


def _member_name(member: tarfile.TarInfo, archive_name: str) -> str | None:
    """The member's path inside the media folder, or None for the folder itself; refused if it could land
    anywhere else or is anything but a plain file or folder."""

    def refuse(why: str) -> ArchiveRefused:
        shown = member.name if len(member.name) <= 80 else member.name[:80] + "…"
        return ArchiveRefused(
            f"The media archive {archive_name} holds {shown!r}, {why}: it could write outside the media folder, "
            "so nothing was restored. Regenerate the dump with --media on a machine you trust."
        )

    name = member.name
    if not name or "\x00" in name or len(name) > _MAX_NAME:
        raise refuse("which is not a usable file name")
    path = PurePosixPath(name)
    if path.is_absolute() or name.startswith("/"):
        raise refuse("an absolute path")
    if ".." in path.parts:
        raise refuse("a path with '..'")
    if member.issym() or member.islnk():
        raise refuse(f"a {'symbolic' if member.issym() else 'hard'} link (to {member.linkname[:80]!r})")
    if member.ischr() or member.isblk() or member.isfifo():
        raise refuse("a device or FIFO")
    if member.type not in (tarfile.REGTYPE, tarfile.AREGTYPE, tarfile.DIRTYPE):
        raise refuse(f"a member of type {member.type!r}, not a plain file or folder")
    parts = [part for part in path.parts if part != "."]
    if any(len(part.encode()) > 255 for part in parts):
        raise refuse("a name part longer than a file system allows")
    return "/".join(parts) or None


@dataclass
class _Members:
    """What the members of an archive amount to, checked as they come."""

    archive_name: str
    files: int = 0
    bytes: int = 0

    def __post_init__(self) -> None:
        self.file_names: set[str] = set()
        self.folder_names: set[str] = set()

    def admit(self, member: tarfile.TarInfo) -> str | None:
        name = _member_name(member, self.archive_name)
        if name is None:
            return None
        parents = ["/".join(name.split("/")[:i]) for i in range(1, name.count("/") + 1)]
        if name in self.file_names or (member.isfile() and name in self.folder_names):
            raise ArchiveRefused(
                f"The media archive {self.archive_name} holds {name!r} twice, so nothing was restored. "
                "Regenerate the dump with --media."
            )
        if any(parent in self.file_names for parent in parents):
            raise ArchiveRefused(
                f"The media archive {self.archive_name} holds {name!r} inside a file, so nothing was restored. "
                "Regenerate the dump with --media."
            )
        self.folder_names.update(parents)
        if member.isdir():
            self.folder_names.add(name)
        else:
            self.file_names.add(name)
            self.files += 1
            self.bytes += member.size
        return name


def _open_archive(path: Path) -> IO[bytes]:
    try:
        return path.open("rb")
    except FileNotFoundError:
        raise SeeddumpError(
            f"The dump's media archive {path.name} is missing from {path.parent}. Copy it from where the dump came "
            "from, or restore the database alone with --no-media."
        ) from None
    except OSError as exc:
        raise SeeddumpError(f"Cannot read the media archive {path}: {exc.strerror or exc}.") from None


def _read(
    handle: IO[bytes], info: MediaInfo, on_member: Callable[[tarfile.TarFile, tarfile.TarInfo, str], None]
) -> None:
    """Streams the archive once, admitting each member and handing it to ``on_member``; then checks the
    checksum, the size and the totals against the metadata."""
    name = info.file
    size = os.fstat(handle.fileno()).st_size
    regenerate = "Regenerate the dump with --media, or restore the database alone with --no-media."
    if size != info.size_bytes:
        raise ArchiveRefused(
            f"The media archive {name} is {size} bytes but its metadata says {info.size_bytes}: it is truncated "
            f"or was changed. {regenerate}"
        )
    hashing = _Hashing(handle, info.size_bytes, name)
    members = _Members(name)
    try:
        with tarfile.open(fileobj=hashing, mode="r|gz") as tar:  # type: ignore[call-overload]
            for member in tar:
                relative = members.admit(member)
                if members.files > info.files or members.bytes > info.bytes:
                    raise ArchiveRefused(f"The media archive {name} holds more than its metadata says. {regenerate}")
                if relative is not None:
                    on_member(tar, member, relative)
        hashing.drain()
    except (tarfile.TarError, EOFError, OSError, ValueError, zlib.error) as exc:
        raise ArchiveRefused(f"The media archive {name} cannot be read ({exc}): it is damaged. {regenerate}") from None
    if "sha256:" + hashing.digest.hexdigest() != info.checksum:
        raise ArchiveRefused(f"The checksum of the media archive {name} does not match its metadata. {regenerate}")
    if (members.files, members.bytes) != (info.files, info.bytes):
        raise ArchiveRefused(
            f"The media archive {name} holds {members.files} file(s) of {members.bytes} bytes, its metadata says "
            f"{info.files} of {info.bytes}. {regenerate}"
        )


def check(path: Path, info: MediaInfo) -> None:
    """Refuses (ArchiveRefused, one line) an archive that is not the metadata's or holds an unsafe member."""
    with _open_archive(path) as handle:
        _read(handle, info, lambda tar, member, relative: None)


# --- Unpacking and swapping -------------------------------------------------------------------------------

# Our folders. Beside MEDIA_ROOT: ``.<name>.seeddump-<kind>.…``. When MEDIA_ROOT is a mount point (a Docker
# volume, a tmpfs), it cannot be renamed and nothing beside it is on its file system, so they live inside it
# as ``.seeddump-<kind>.…`` and the swap moves its contents instead (see ``Exchange``).
_OURS_INSIDE = ".seeddump-"
_LEFTOVER = r"^{lead}seeddump-(?P<kind>new|old)\.(?P<pid>\d+)\.[0-9a-f]{{8}}(\.in|\.out)?$"


def is_mount_point(root: Path) -> bool:
    """MEDIA_ROOT is a mount point: the folder cannot be renamed, only its contents moved."""
    return os.path.ismount(_resolved(root))


def _place(root: Path, name: str) -> Path:
    """Where our folder ``seeddump-<name>`` of MEDIA_ROOT lives: beside it, or inside it when it is a mount point."""
    root = _resolved(root)
    return root / f".seeddump-{name}" if is_mount_point(root) else root.with_name(f".{root.name}.seeddump-{name}")


def _sibling(root: Path, kind: str) -> Path:
    return _place(root, f"{kind}.{os.getpid()}.{secrets.token_hex(4)}")


def ours_inside(root: Path) -> tuple[Path, ...]:
    """Our folders inside MEDIA_ROOT (a mount point): never archived, never swapped with the media."""
    root = _resolved(root)
    try:
        return tuple(Path(e.path) for e in os.scandir(root) if e.name.startswith(_OURS_INSIDE))
    except OSError:
        return ()


def check_space(root: Path, info: MediaInfo) -> None:
    """Refuses before anything is touched when unpacking the archive beside MEDIA_ROOT would fill the disk:
    the files (each rounded up to the filesystem's block) and a margin kept free (``space_margin``)."""
    root = _resolved(root)
    where = root if is_mount_point(root) else root.parent
    folder = next((p for p in (where, *where.parents) if p.exists()), Path("/"))
    disk = os.statvfs(folder)
    free, block = disk.f_bavail * disk.f_frsize, disk.f_frsize
    files = info.bytes + info.files * block  # at most one partly used block a file
    margin = space_margin(disk.f_blocks * disk.f_frsize)
    if free < files + margin:
        raise SeeddumpError(
            f"Not enough space beside MEDIA_ROOT ({root}) to unpack the dump's media: {(files + margin) / 1e6:.1f} "
            f"MB needed ({files / 1e6:.1f} MB for its {info.files} files and {margin / 1e6:.1f} MB kept free), "
            f"{free / 1e6:.1f} MB free. Free some space, or restore the database alone with --no-media."
        )


def space_margin(filesystem_bytes: int) -> int:
    """What ``check_space`` keeps free on a filesystem of ``filesystem_bytes``."""
    return min(SPACE_MARGIN, filesystem_bytes // SPACE_MARGIN_SHARE)


def unpack(
    path: Path, info: MediaInfo, root: Path, progress: Progress = _quiet, cancelled: threading.Event | None = None
) -> Path:
    """Unpacks the archive into a new folder beside MEDIA_ROOT and returns it (see the module docstring).
    Any failure (or ``cancelled`` being set) removes that folder and leaves MEDIA_ROOT as it was."""
    root = _resolved(root)
    try:
        root.parent.mkdir(parents=True, exist_ok=True)
        target = _sibling(root, "new")
        target.mkdir(mode=0o700)  # only this process writes into it until it is complete
    except OSError as exc:
        raise SeeddumpError(
            f"Cannot create a folder beside MEDIA_ROOT ({root.parent}): {exc.strerror or exc}. seeddump unpacks "
            "the media there and swaps the folders by rename; make that folder writable."
        ) from None

    def write(tar: tarfile.TarFile, member: tarfile.TarInfo, relative: str) -> None:
        if cancelled is not None and cancelled.is_set():
            raise SeeddumpError("Unpacking the media was cancelled; nothing was changed.")
        destination = target.joinpath(*relative.split("/"))
        if member.isdir():
            destination.mkdir(mode=0o700, parents=True, exist_ok=True)
            return
        destination.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        fd = os.open(destination, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
        source = tar.extractfile(member)
        assert source is not None
        with os.fdopen(fd, "wb") as output:
            shutil.copyfileobj(source, output, _CHUNK)
            os.fchmod(output.fileno(), member.mode & 0o755 or 0o644)
        os.utime(destination, (member.mtime, member.mtime), follow_symlinks=False)

    try:
        with _open_archive(path) as handle:
            progress(f"Unpacking {info.describe()} of media beside {root}")
            _read(handle, info, write)
        _open_folders(target, root)
    except BaseException as exc:
        shutil.rmtree(target, ignore_errors=True)
        if isinstance(exc, OSError):
            if exc.errno == errno.ENOSPC:
                raise SeeddumpError(
                    f"The disk beside MEDIA_ROOT ({root}) filled up while the media were unpacked; nothing was "
                    "changed. Free some space, or restore the database alone with --no-media."
                ) from None
            raise SeeddumpError(f"Unpacking the media beside {root} failed: {exc}. Nothing was changed.") from None
        raise
    return target


def _open_folders(target: Path, root: Path) -> None:
    """Gives the unpacked folders the mode MEDIA_ROOT has (else 0755): they were private while unpacking."""
    try:
        mode = stat.S_IMODE(root.stat().st_mode)
    except FileNotFoundError:
        mode = 0o755
    for folder, _, _ in os.walk(target):
        os.chmod(folder, mode)


_RENAME_NOREPLACE, _RENAME_EXCHANGE = 1, 2


def _renameat2(source: Path, destination: Path, flags: int) -> bool:
    """Linux's renameat2; False where the C library or the file system does not have it."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        function = libc.renameat2
    except (OSError, AttributeError):
        return False
    at_fdcwd = -100
    result = function(at_fdcwd, os.fsencode(source), at_fdcwd, os.fsencode(destination), flags)
    if result == 0:
        return True
    code = ctypes.get_errno()
    if code in (errno.ENOSYS, errno.EINVAL, errno.ENOTSUP):
        return False
    raise OSError(code, os.strerror(code), str(source))


def _inode(path: Path) -> int | None:
    try:
        return path.lstat().st_ino
    except FileNotFoundError:
        return None


@dataclass(frozen=True)
class Exchange:
    """Putting the folder ``incoming`` in MEDIA_ROOT's place, and what MEDIA_ROOT held at ``outgoing``.

    It is data (``as_label``), so the database swap's transaction records it in the replaced database's label
    before a single file moves, and whoever finds it unfinished (the next restore or undo, holding the
    target's lock) finishes it with ``complete``: every step can be repeated and tells by inode numbers
    whether it already happened. A plain folder is exchanged by one ``renameat2(RENAME_EXCHANGE)``; a mount
    point's contents are moved entry by entry (``contents``), out to ``outgoing`` first, then in."""

    root: Path
    incoming: Path
    outgoing: Path
    incoming_inode: int
    root_inode: int | None  # None: there was no MEDIA_ROOT
    contents: bool = False
    # Nothing records it (no database is replaced, so no label: a first restore's files kept aside): the old
    # files go to ``outgoing`` before the new ones come in, so that no stop leaves them under a name that a
    # later run removes. MEDIA_ROOT is missing in between.
    unrecorded: bool = False

    @classmethod
    def plan(cls, root: Path, incoming: Path, outgoing: Path, *, unrecorded: bool = False) -> Exchange:
        root = _resolved(root)
        inode = _inode(incoming)
        assert inode is not None
        return cls(root, incoming, outgoing, inode, _inode(root), is_mount_point(root), unrecorded)

    def as_label(self) -> dict[str, object]:
        return {
            "root": str(self.root),
            "incoming": str(self.incoming),
            "outgoing": str(self.outgoing),
            "incomingInode": self.incoming_inode,
            "rootInode": self.root_inode,
            "contents": self.contents,
        }

    @classmethod
    def from_label(cls, value: object) -> Exchange | None:
        """The exchange a label records; None for anything that is not one of ours (a label is input)."""
        if not isinstance(value, dict):
            return None
        try:
            exchange = cls(
                Path(str(value["root"])),
                Path(str(value["incoming"])),
                Path(str(value["outgoing"])),
                int(value["incomingInode"]),
                None if value.get("rootInode") is None else int(value["rootInode"]),
                bool(value.get("contents")),
            )
        except (KeyError, TypeError, ValueError):
            return None
        # Only our own folders, beside MEDIA_ROOT or inside it: never a path a forged label names elsewhere.
        for folder in (exchange.incoming, exchange.outgoing):
            if not exchange.root.is_absolute() or folder.parent not in (exchange.root, exchange.root.parent):
                return None
            if "seeddump-" not in folder.name:
                return None
        return exchange

    @property
    def done(self) -> bool:
        if self.contents:
            return not any(p.exists() for p in (self.incoming, self._moving_in, self._moving_out))
        return _inode(self.root) == self.incoming_inode and not self.incoming.exists()

    @property
    def _moving_out(self) -> Path:
        return self.incoming.with_name(self.incoming.name + ".out")

    @property
    def _moving_in(self) -> Path:
        return self.incoming.with_name(self.incoming.name + ".in")

    def complete(self) -> list[Path]:
        """Does what is left of the exchange; SeeddumpError (saying where the files are) if it cannot. Returns
        the folders it set aside to drop (an earlier undo's)."""
        try:
            if self.unrecorded:
                return self._out_first()
            return self._contents() if self.contents else self._folders()
        except OSError as exc:
            raise SeeddumpError(
                f"could not swap the media into {self.root}: {exc.strerror or exc}; the incoming files are in "
                f"{self.incoming}"
            ) from None

    def _out_first(self) -> list[Path]:
        if self.contents:
            if self.incoming.exists():
                self.outgoing.mkdir(mode=0o700, exist_ok=True)
                for entry in _entries(self.root):
                    if not entry.name.startswith(_OURS_INSIDE):
                        os.rename(entry.path, self.outgoing / entry.name)
                for entry in _entries(self.incoming):
                    os.rename(entry.path, self.root / entry.name)
                os.rmdir(self.incoming)
            return []
        if self.root_inode is not None and _inode(self.root) == self.root_inode and _inode(self.outgoing) is None:
            os.rename(self.root, self.outgoing)
        moves_in = _inode(self.root) is None and _inode(self.incoming) == self.incoming_inode
        if moves_in and not _renameat2(self.incoming, self.root, _RENAME_NOREPLACE):
            os.rename(self.incoming, self.root)
        return []

    def _folders(self) -> list[Path]:
        aside = []
        # An outgoing folder that MEDIA_ROOT never was: an earlier undo's, which no longer undoes anything.
        if _inode(self.outgoing) not in (None, self.root_inode):
            aside.append(leftover(self.root))
            os.rename(self.outgoing, aside[-1])
        if _inode(self.root) != self.incoming_inode and _inode(self.incoming) == self.incoming_inode:
            if _inode(self.root) is None:
                if not _renameat2(self.incoming, self.root, _RENAME_NOREPLACE):
                    os.rename(self.incoming, self.root)
            elif not _renameat2(self.incoming, self.root, _RENAME_EXCHANGE):
                os.rename(self.root, self.outgoing)  # two renames where the system cannot exchange
                os.rename(self.incoming, self.root)
        # ``incoming`` now names what MEDIA_ROOT was.
        if self.root_inode is not None and _inode(self.incoming) == self.root_inode:
            os.rename(self.incoming, self.outgoing)
        return aside

    def _contents(self) -> list[Path]:
        aside = []
        if self.incoming.exists():  # out: everything MEDIA_ROOT holds but our folders
            self._moving_out.mkdir(mode=0o700, exist_ok=True)
            for entry in _entries(self.root):
                if not entry.name.startswith(_OURS_INSIDE):
                    os.rename(entry.path, self._moving_out / entry.name)
            os.rename(self.incoming, self._moving_in)
        if self._moving_in.exists():  # in: MEDIA_ROOT holds nothing but our folders now
            for entry in _entries(self._moving_in):
                os.rename(entry.path, self.root / entry.name)
            os.rmdir(self._moving_in)
        if self._moving_out.exists():
            if self.outgoing.exists():
                aside.append(leftover(self.root))
                os.rename(self.outgoing, aside[-1])
            os.rename(self._moving_out, self.outgoing)
        return aside


def undo_folder(root: Path, tag: str) -> Path:
    """Where the media folder a restore replaced is kept for an undo: beside MEDIA_ROOT (inside it when it is a
    mount point), one per database."""
    return _place(root, f"undo.{tag}")


def kept_aside(root: Path) -> Path:
    """Where what MEDIA_ROOT holds goes when a restore replaces it with no database to keep it with (the target
    database did not exist yet: no undo can put it back): a folder named by the time, which no restore ever
    removes; the restore says where it is."""
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    return _place(root, f"kept.{stamp}.{secrets.token_hex(2)}")


def kept_aside_folders(root: Path) -> list[Path]:
    """The folders ``kept_aside`` made for MEDIA_ROOT, oldest first."""
    place = _place(root, "kept.")
    try:
        return sorted(p for p in place.parent.iterdir() if p.name.startswith(place.name) and p.is_dir())
    except OSError:
        return []


def holds_files(root: Path) -> bool:
    """Whether MEDIA_ROOT holds anything (but our own folders, when it is a mount point)."""
    root = _resolved(root)
    try:
        with os.scandir(root) as listing:
            return any(not entry.name.startswith(_OURS_INSIDE) for entry in listing)
    except OSError:
        return False


def leftover(root: Path) -> Path:
    """A new name for a folder to drop (``drop``; a killed run's is dropped by the next restore)."""
    return _sibling(root, "old")


def retire_undo(root: Path, tag: str) -> Path | None:
    """Renames the folder kept for an undo of ``tag`` (if it is ours) to a leftover name, returned for
    ``drop``; a killed run's leftovers are dropped by the next restore."""
    kept = kept_for_undo(root, tag)
    if kept is None:
        return None
    retired = leftover(root)
    os.rename(kept, retired)
    return retired


def kept_for_undo(root: Path, tag: str) -> Path | None:
    """The folder kept for an undo of ``tag``: a real folder of ours (a link or another user's is never used)."""
    kept = undo_folder(root, tag)
    try:
        info = kept.lstat()
    except OSError:
        return None
    if not stat.S_ISDIR(info.st_mode) or info.st_uid != os.geteuid():
        return None
    return kept


def set_aside(root: Path) -> Path | None:
    """Moves what MEDIA_ROOT holds to a leftover folder (for ``drop``), as when an undo takes back a media
    folder a restore made where there was none."""
    root = _resolved(root)
    if not root.exists():
        return None
    retired = leftover(root)
    if not is_mount_point(root):
        os.rename(root, retired)
        return retired
    retired.mkdir(mode=0o700)
    for entry in _entries(root):
        if not entry.name.startswith(_OURS_INSIDE):
            os.rename(entry.path, retired / entry.name)
    return retired


def _entries(folder: Path) -> list[os.DirEntry[str]]:
    """A folder's entries in name order: the order a filesystem lists them in differs between filesystems and
    between two folders holding the same names, so every step that moves or drops entries one by one takes them
    in one order, the same on every run."""
    with os.scandir(folder) as listing:
        return sorted(listing, key=lambda entry: entry.name)


def drop(folder: Path) -> None:
    """Removes a replaced or abandoned media folder (never following a link inside it)."""
    shutil.rmtree(folder, ignore_errors=True)


def drop_leftovers(root: Path) -> list[Path]:
    """Drops media folders our killed runs left beside MEDIA_ROOT (or inside it, when it is a mount point):
    replaced folders, and unpacked ones whose process is gone. Another user's folders, and live processes'
    ones, are left alone. Call it after an unfinished exchange was completed: its folders look the same."""
    root = _resolved(root)
    dropped = []
    places = [(root.parent, re.escape(f".{root.name}."))]
    if is_mount_point(root):
        places.append((root, r"\."))
    for folder, lead in places:
        pattern = re.compile(_LEFTOVER.format(lead=lead))
        try:
            entries = _entries(folder)
        except OSError:
            continue
        for entry in entries:
            match = pattern.fullmatch(entry.name)
            if match is None or not entry.is_dir(follow_symlinks=False):
                continue
            if entry.stat(follow_symlinks=False).st_uid != os.geteuid():
                continue
            if match["kind"] == "new" and processes.alive(int(match["pid"])):
                continue
            drop(Path(entry.path))
            dropped.append(Path(entry.path))
    return dropped


# --- FileField values against the files -------------------------------------------------------------------


@dataclass(frozen=True)
class FileSample:
    checked: int
    missing: list[tuple[str, str]]  # (file name, model.field)
    fields: list[str]  # model.field of every FileField sampled
    unchecked: list[str]  # model.field whose storage is not on this machine


def sample_files(using: str, root: Path, per_field: int) -> FileSample:
    """Checks that the first ``per_field`` values of every FileField (ImageField too) in ``using``'s database
    name files that exist: under ``root`` for the default storage's fields (the media folder the dump's files
    were restored into), under its own folder for another FileSystemStorage; other storages are not on this
    machine and are listed as unchecked."""
    from django.apps import apps
    from django.core.files.storage import FileSystemStorage, storages
    from django.db import models

    default = storages["default"]
    checked, missing, fields, unchecked = 0, [], [], []
    for model in apps.get_models():
        for model_field in model._meta.get_fields():
            if not isinstance(model_field, models.FileField):
                continue
            label = f"{model._meta.label}.{model_field.name}"
            storage = model_field.storage
            if not isinstance(storage, FileSystemStorage):
                unchecked.append(label)
                continue
            base = root if storage is default or storage.location == getattr(default, "location", None) else None
            folder = base or Path(storage.location)
            names = (
                model._base_manager.using(using)
                .exclude(**{model_field.name: ""})
                .exclude(**{f"{model_field.name}__isnull": True})
                .order_by("pk")
                .values_list(model_field.name, flat=True)[:per_field]
            )
            fields.append(label)
            for name in names:
                checked += 1
                if not _file_exists(folder, str(name)):
                    missing.append((str(name), label))
    return FileSample(checked, missing, fields, unchecked)


def _file_exists(folder: Path, name: str) -> bool:
    """Whether ``name`` (a FileField value) is a file inside ``folder``; a value that points outside is not."""
    relative = PurePosixPath(name)
    if relative.is_absolute() or ".." in relative.parts:
        return False
    return folder.joinpath(*relative.parts).is_file()
