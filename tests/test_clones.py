"""Copy-on-write clones: on a PostgreSQL 18 server whose disk shares blocks (XFS with reflinks, made in a
loop-mounted image, see tests/xfs.py), a cold restore caches its snapshot as a clone of the database it
restored (one pg_restore, none in the background), and a repeated restore clones the snapshot into place."""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from django.db import connections

from seeddump import databases, dumpfiles, postgres, records, serverdisk, snapshots
from tests.conftest import as_the_project, copy_dump, manage_env, run_bounded, wait_for_exit
from tests.xfs import XfsServer, xfs_server

pytestmark = pytest.mark.django_db(transaction=True, databases="__all__")

TARGET = "seeddump_clones_app"
REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def xfs() -> Iterator[XfsServer]:
    with xfs_server("4G") as server:  # sparse; above SEEDDUMP_MIN_FREE_DISK (1 GiB) free
        yield server


@pytest.fixture
def spy_log(tmp_path: Path) -> Path:
    """pg_restore and pg_dump wrappers (for the XFS server's version) that log each run, then run the real ones."""
    folder, log = tmp_path / "spy-bin", tmp_path / "spy.log"
    folder.mkdir()
    real = postgres.find_program("pg_restore", 18).path.parent
    for name in ("pg_dump", "pg_restore"):
        script = folder / name
        script.write_text(f'#!/bin/sh\nprintf "%s\\n" "ARGV $0 $*" >> "{log}"\nexec "{real / name}" "$@"\n')
        script.chmod(0o755)
    log.touch()
    return log


def pg_restore_runs(log: Path) -> int:
    return sum(1 for line in log.read_text().splitlines() if "pg_restore " in line and "--dbname=" in line)


def restoredump(xfs: XfsServer, dumps_dir: Path, spy_log: Path, *args: str, **env: str) -> str:
    """``manage.py restoredump dev`` against the XFS server's TARGET, in the background mode users get."""
    environment = manage_env(
        "default",
        dumps_dir,
        {
            "DATABASE_URL": xfs.url(TARGET),
            "SEEDDUMP_BACKGROUND": "true",
            "SEEDDUMP_PG_BIN_DIRS": str(spy_log.parent / "spy-bin"),
            **env,
        },
    )
    argv = [sys.executable, "manage.py", "restoredump", "dev", "--no-input", *args]
    result = run_bounded(argv, cwd=REPO, env=environment, timeout=180)
    assert result.returncode == 0, result.stderr
    return result.stdout


def connect(xfs: XfsServer, name: str = "postgres") -> psycopg.Connection:
    return as_the_project(postgres.connect(xfs.settings_dict(), name))


def files_of(xfs: XfsServer, admin: psycopg.Connection, name: str) -> list[Path]:
    (oid,) = admin.execute("SELECT oid FROM pg_database WHERE datname = %s", (name,)).fetchone()  # type: ignore[misc]
    return [path for path in (xfs.data / "base" / str(oid)).iterdir() if path.stat().st_size > 0]


def shared_share(xfs: XfsServer, admin: psycopg.Connection, name: str) -> float:
    """The share of the database's bytes in files whose blocks are shared with another file."""
    files = files_of(xfs, admin, name)
    total = sum(path.stat().st_size for path in files)
    return sum(path.stat().st_size for path in files if serverdisk.shares_blocks(path)) / total


def copies(admin: psycopg.Connection, prefix: str) -> list[str]:
    rows = admin.execute("SELECT datname FROM pg_database WHERE datname LIKE %s", (prefix + "%",)).fetchall()
    return [name for (name,) in rows]


@pytest.fixture
def xfs_dump(xfs: XfsServer, seeded_dumps: dict[str, Path], dumps_dir: Path) -> Iterator[Path]:
    """The session's PostgreSQL 18 dump as dev's latest; the XFS server's databases of this test dropped after."""
    dump = copy_dump(seeded_dumps["default"], dumps_dir)
    yield dump
    with connect(xfs) as admin:
        for (name,) in admin.execute("SELECT datname FROM pg_database WHERE datname LIKE 'seeddump%'").fetchall():
            admin.execute(f'DROP DATABASE "{name}" WITH (FORCE)')


def test_a_cold_restore_caches_a_clone_and_the_next_restore_clones_it(
    xfs: XfsServer, xfs_dump: Path, dumps_dir: Path, spy_log: Path
) -> None:
    counts = dumpfiles.read_metadata(xfs_dump).record_counts
    cold = json.loads(restoredump(xfs, dumps_dir, spy_log, "--json"))
    assert cold["source"] == "pg_restore" and cold["clones"] is True
    work = cold["background"]["work"]
    assert "cache a snapshot of the dump" not in work and "prepare a ready copy for the next restore" not in work
    wait_for_exit(cold["background"]["pid"])
    assert pg_restore_runs(spy_log) == 1  # none ran in the background: the snapshot is a clone

    with connect(xfs) as admin:
        [snapshot] = copies(admin, snapshots.folder_prefix(dumps_dir))
        assert copies(admin, snapshots.folder_prefix(dumps_dir, snapshots.READY_PREFIX)) == []
        assert shared_share(xfs, admin, snapshot) > 0.95  # its blocks are the restored database's
        assert shared_share(xfs, admin, TARGET) > 0.95

    warm = json.loads(restoredump(xfs, dumps_dir, spy_log, "--json"))
    assert warm["source"] == "snapshot" and warm["clones"] is True
    wait_for_exit(warm["background"]["pid"])  # it writes the admin's record of the restore
    assert pg_restore_runs(spy_log) == 1
    with connect(xfs, TARGET) as conn:
        for table, expected in counts.items():
            if table == records.TABLE:  # the dump was made before its own record; the restore writes it
                (dumps,) = conn.execute(f'SELECT array_agg(checksum) FROM "{table}"').fetchone()  # type: ignore[misc]
                assert dumps == [dumpfiles.read_metadata(xfs_dump).checksum]
                continue
            (rows,) = conn.execute(f'SELECT count(*) FROM "{table}"').fetchone()  # type: ignore[misc]
            assert rows == expected, table
    listing = run_snapshots(xfs, dumps_dir)
    assert "Copies on this server: clones: the server's disk" in listing and "1 snapshot(s)" in listing


def run_snapshots(xfs: XfsServer, dumps_dir: Path, *args: str) -> str:
    environment = manage_env("default", dumps_dir, {"DATABASE_URL": xfs.url(TARGET)})
    result = run_bounded([sys.executable, "manage.py", "snapshots", *args], cwd=REPO, env=environment, timeout=120)
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_the_trial_clone_tells_a_disk_that_shares_blocks_from_one_that_does_not(
    xfs: XfsServer, dumps_dir: Path, settings
) -> None:
    with connect(xfs) as admin:
        cloning = serverdisk.cloning(admin)
        assert cloning.enabled and "shares blocks" in cloning.why
        assert copies(admin, serverdisk.TRIAL_PREFIX) == []  # the trial database is dropped
    settings.SEEDDUMP_CLONES = False
    with connect(xfs) as admin:
        assert not serverdisk.cloning(admin).enabled
    settings.SEEDDUMP_CLONES = None
    # The embedded server's data directory is on the machine's ext4 disk: PostgreSQL 18 "clones" there by
    # copying every block (copy_file_range), which the trial sees.
    with postgres.connect_maintenance(connections["default"].settings_dict) as admin:
        cloning = serverdisk.cloning(admin)
        assert not cloning.enabled and "cannot share blocks" in cloning.why, cloning.why
    if "system" in connections.settings:
        with postgres.connect_maintenance(connections["system"].settings_dict) as admin:
            cloning = serverdisk.cloning(admin)
            major = postgres.server_major(admin)
            assert not cloning.enabled and f"PostgreSQL {major} cannot clone" in cloning.why


def test_the_data_directory_is_found_when_the_server_took_seconds_to_start(xfs: XfsServer) -> None:
    """postmaster.pid's start time is stamped before shared memory is up, pg_postmaster_start_time() after:
    on a slow start they fall in different seconds (seen in CI), and that is still this machine's server."""
    pid_file = xfs.data / "postmaster.pid"
    original = pid_file.read_text()
    lines = original.splitlines(keepends=True)
    try:
        with connect(xfs) as admin:
            assert serverdisk.data_directory(admin) == xfs.data
            lines[2] = f"{int(lines[2]) - 2}\n"  # the stamp two seconds before the server says it started
            pid_file.write_text("".join(lines))
            assert serverdisk.data_directory(admin) == xfs.data
            lines[2] = f"{int(lines[2]) - 3600}\n"  # an hour before: another run of a server in that folder
            pid_file.write_text("".join(lines))
            assert serverdisk.data_directory(admin) is None
    finally:
        pid_file.write_text(original)


def test_no_room_on_the_servers_disk_skips_caching_and_the_restore_goes_on(
    xfs: XfsServer, xfs_dump: Path, dumps_dir: Path, spy_log: Path
) -> None:
    free = serverdisk.free_bytes(xfs.mount)
    out = restoredump(xfs, dumps_dir, spy_log, SEEDDUMP_MIN_FREE_DISK=str(free + 10**9))
    assert "Restored " in out
    assert "Did not cache a snapshot of the dump: the server's disk has" in out
    assert "SEEDDUMP_MIN_FREE_DISK" in out
    with connect(xfs) as admin:
        assert copies(admin, snapshots.folder_prefix(dumps_dir)) == []
        assert copies(admin, TARGET) == [TARGET]


def test_the_bound_on_the_cache_keeps_it_out(xfs: XfsServer, xfs_dump: Path, dumps_dir: Path, spy_log: Path) -> None:
    out = restoredump(xfs, dumps_dir, spy_log, SEEDDUMP_CACHE_MAX_SIZE="1000000")
    assert "Did not cache a snapshot of the dump: a copy needs" in out and "SEEDDUMP_CACHE_MAX_SIZE (1 MB)" in out
    with connect(xfs) as admin:
        assert copies(admin, snapshots.folder_prefix(dumps_dir)) == []


@pytest.fixture(scope="module")
def small_disk_server() -> Iterator[XfsServer]:
    """A PostgreSQL 18 whose data directory is on a 160 MB tmpfs (its WAL is not): a disk to fill."""
    with xfs_server("160M", tmpfs=True) as server:
        yield server


def test_a_disk_that_fills_up_never_fails_a_verified_restore(
    small_disk_server: XfsServer, seeded_dumps: dict[str, Path], dumps_dir: Path, spy_log: Path
) -> None:
    server = small_disk_server
    copy_dump(seeded_dumps["default"], dumps_dir)
    # Not checked beforehand (as on a server elsewhere): the copies themselves meet the full disk.
    unchecked = {"SEEDDUMP_MIN_FREE_DISK": "none", "SEEDDUMP_UNDO": "false"}
    restoredump(server, dumps_dir, spy_log, "--wait", **unchecked)
    with connect(server) as admin:
        size = databases.size_of(admin, TARGET)
    assert "Dropped" in run_snapshots(server, dumps_dir, "--drop-all")
    filler = server.mount / "filler"
    # Room for the restore and half a copy more: the copy fails (PostgreSQL reports it and removes what it
    # copied). Filled only for that moment: a server whose data disk stays full may stop altogether.
    with filler.open("wb") as handle:
        os.posix_fallocate(handle.fileno(), 0, serverdisk.free_bytes(server.mount) - size * 3 // 2)
    try:
        out = restoredump(server, dumps_dir, spy_log, "--wait", **unchecked)
        assert "Restored " in out
        assert "Did not cache a snapshot (" in out and "No space left on device" in out, out
        with connect(server, TARGET) as conn:
            assert conn.execute("SELECT count(*) FROM reality_node").fetchone() == (
                dumpfiles.read_metadata(seeded_dumps["default"]).record_counts["reality_node"],
            )
    finally:
        filler.unlink()
        run_snapshots(server, dumps_dir, "--drop-all")
