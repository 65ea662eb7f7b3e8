"""The server's disk: whether a database copy can be a copy-on-write clone, and whether a copy still fits.

PostgreSQL 18 copies a database's files with ``file_copy_method = clone`` (a session setting) when
``CREATE DATABASE … STRATEGY FILE_COPY`` runs: on a filesystem with reflinks (XFS made with reflink=1,
Btrfs, ZFS 2.2+, APFS) the copy shares the source's blocks and takes milliseconds whatever the size. On
Linux the server asks for it with copy_file_range(), which quietly copies every block where the
filesystem cannot share them: so the server's word is not proof. ``cloning`` decides, in this order:

- SEEDDUMP_CLONES False, or a server older than 18: plain copies;
- SEEDDUMP_CLONES True: clones on PostgreSQL 18, whatever the disk;
- the server's own file_copy_method is clone (its administrator chose it): clones;
- the server's data directory is on this machine and readable here: a trial clone of ``template0``,
  whose files must then share their blocks with the original (the FIEMAP ioctl's SHARED flag). The answer
  is kept in the dumps folder for as long as that server runs;
- else plain copies: nothing here can tell.

The data directory is "on this machine" when ``<data_directory>/postmaster.pid`` records the start of
the run the server reports (``same_run``; a folder of the same name on another machine would not). Only
then is the free space checked before the cache makes a copy (``room_for``).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import secrets
import struct
from dataclasses import dataclass
from pathlib import Path

from seeddump import databases, driver, dumpfiles, postgres, processes
from seeddump.conf import conf
from seeddump.driver import sql
from seeddump.exceptions import SeeddumpError

TRIAL_PREFIX = "seeddump_trial_"
_ANSWERS_NAME = ".seeddump-clones.json"
_FS_IOC_FIEMAP = 0xC020660B
_FIEMAP_FLAG_SYNC = 0x1
_FIEMAP_EXTENT_SHARED = 0x2000
_EXTENTS = 16  # enough to find one shared extent in a small catalog file
_START_SPREAD = 60  # seconds between the two start stamps of one server run (see same_run)


@dataclass(frozen=True)
class Cloning:
    enabled: bool
    why: str  # one sentence for ``snapshots`` and the restore's progress


def data_directory(admin: driver.Connection) -> Path | None:
    """The server's data directory when it is on this machine and this process can read its files; else None."""
    try:
        row = admin.execute(
            "SELECT current_setting('data_directory'), extract(epoch FROM pg_postmaster_start_time())::float8"
        ).fetchone()
    except driver.errors.InsufficientPrivilege:  # needs superuser or pg_read_all_settings
        return None
    if row is None:
        return None
    folder, started = Path(row[0]), float(row[1])
    try:
        lines = (folder / "postmaster.pid").read_text().splitlines()
        if not same_run(int(lines[2]), started):
            return None
    except (OSError, ValueError, IndexError):
        return None
    return folder


def same_run(pid_file_start: int, server_start: float) -> bool:
    """Whether postmaster.pid's start time (whole seconds, stamped first) and pg_postmaster_start_time()
    (taken once shared memory is up: a second or more later on a slow start) are one run of the server.
    A folder of the same name on another machine, or a server started again since, differs by more."""
    return 0 <= server_start - pid_file_start < _START_SPREAD


def free_bytes(folder: Path) -> int:
    stats = os.statvfs(folder)
    return stats.f_bavail * stats.f_frsize


def _server_key(admin: driver.Connection, folder: Path) -> str:
    (started,) = admin.execute("SELECT pg_postmaster_start_time()::text").fetchone()  # type: ignore[misc]
    return f"{folder}|{started}"


def _answers() -> dict[str, bool]:
    try:
        answers = json.loads((conf.DIR / _ANSWERS_NAME).read_text())
    except (OSError, ValueError):
        return {}
    return {str(k): bool(v) for k, v in answers.items()} if isinstance(answers, dict) else {}


def _remember(key: str, shares: bool) -> None:
    """Keeps the trial's answer for this server run (a failure to write it only costs a trial next time)."""
    with contextlib.suppress(OSError, ValueError, SeeddumpError):
        path = conf.DIR / _ANSWERS_NAME
        dumpfiles.ensure_directory(conf.DIR)
        partial = path.with_name(f".{path.name}.{secrets.token_hex(4)}")
        with dumpfiles.open_own(partial, append=False) as handle:
            json.dump({**_answers(), key: shares}, handle)
        os.replace(partial, path)


def shares_blocks(path: Path) -> bool:
    """Whether the file ``path`` has an extent shared with another file (a reflink)."""
    header = struct.pack("=QQIIII", 0, 0xFFFFFFFFFFFFFFFF, _FIEMAP_FLAG_SYNC, 0, _EXTENTS, 0)
    request = bytearray(header + bytes(56 * _EXTENTS))
    with path.open("rb") as handle:
        fcntl.ioctl(handle.fileno(), _FS_IOC_FIEMAP, request)
    (mapped,) = struct.unpack_from("=I", request, 20)
    return any(struct.unpack_from("=I", request, 32 + 56 * i + 40)[0] & _FIEMAP_EXTENT_SHARED for i in range(mapped))


def _trial(admin: driver.Connection, folder: Path) -> bool:
    """Clones ``template0`` and looks whether the copy's files share their blocks; drops the copy.

    The trial database is named after this process, so that a trial left by a killed process (its pid gone:
    the data directory is on this machine) is dropped, and a running one's never is."""
    for leftover in databases.ours(admin, TRIAL_PREFIX, sizes=False):
        pid = leftover.name.removeprefix(TRIAL_PREFIX).split("_")[0]
        if pid.isdigit() and not processes.alive(int(pid)):
            databases.drop(admin, leftover.name)
    name = f"{TRIAL_PREFIX}{os.getpid()}_{secrets.token_hex(4)}"
    admin.execute("SET file_copy_method = clone")
    try:
        admin.execute(sql.SQL("CREATE DATABASE {} TEMPLATE template0 STRATEGY FILE_COPY").format(sql.Identifier(name)))
        try:
            (oid,) = admin.execute("SELECT oid FROM pg_database WHERE datname = %s", (name,)).fetchone()  # type: ignore[misc]
            files = [path for path in (folder / "base" / str(oid)).iterdir() if path.stat().st_size > 0]
            return any(shares_blocks(path) for path in files[:20])
        finally:
            databases.drop(admin, name)
    finally:
        admin.execute("RESET file_copy_method")


def cloning(admin: driver.Connection) -> Cloning:
    """Whether copies on this server are clones; when they are, this connection makes them so from now on."""
    major = postgres.server_major(admin)
    if conf.CLONES is False:
        return Cloning(False, "plain copies: SEEDDUMP_CLONES is off")
    if major < 18:
        return Cloning(False, f"plain copies: PostgreSQL {major} cannot clone a database's files (18 can)")
    if conf.CLONES:
        why = "clones: SEEDDUMP_CLONES is on"
    elif admin.execute("SELECT current_setting('file_copy_method')").fetchone() == ("clone",):
        why = "clones: the server's file_copy_method is clone"
    else:
        folder = data_directory(admin)
        if folder is None:
            return Cloning(
                False,
                "plain copies: the server's data directory is not readable here, so nothing shows that its disk "
                "can clone (SEEDDUMP_CLONES = True says it can)",
            )
        key = _server_key(admin, folder)
        shares = _answers().get(key)
        if shares is None:
            try:
                shares = _trial(admin, folder)
            except (OSError, driver.Error):
                return Cloning(False, "plain copies: a trial clone could not be checked")
            _remember(key, shares)
        if not shares:
            return Cloning(False, f"plain copies: the server's disk ({folder}) cannot share blocks between files")
        why = f"clones: the server's disk ({folder}) shares blocks between files"
    try:
        admin.execute("SET file_copy_method = clone")
    except driver.Error as exc:
        return Cloning(False, f"plain copies: the server refused file_copy_method = clone ({str(exc).strip()})")
    return Cloning(True, why)


def room_for(admin: driver.Connection, size: int) -> str | None:
    """Why a copy of ``size`` bytes should not be made now (the server's disk would keep less than
    SEEDDUMP_MIN_FREE_DISK free), or None. None too when the disk is not on this machine: not checked."""
    keep_free = conf.MIN_FREE_DISK
    folder = data_directory(admin) if keep_free is not None else None
    if folder is None or keep_free is None:
        return None
    try:
        free = free_bytes(folder)
    except OSError:  # gone or unreadable since: not checked, as for a server elsewhere
        return None
    if free - size >= keep_free:
        return None
    return (
        f"the server's disk has {megabytes(free)} free and a copy needs {megabytes(size)}, which would leave "
        f"less than SEEDDUMP_MIN_FREE_DISK ({megabytes(keep_free)})"
    )


def megabytes(size: int) -> str:
    return f"{size / 1e6:,.0f} MB"
