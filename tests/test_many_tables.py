"""A project with hundreds of tables on a server whose lock table is small: seeddump's own reading of the
database (counting every table's rows) takes no more locks at once than pg_dump does, and where the server's
lock table is too small for pg_dump itself, or for an in-place restore, the user gets one line that says which
setting to raise.

The server (PostgreSQL 18, the embedded one's programs, on a tmpfs) runs with max_connections = 10 and
max_locks_per_transaction = 10: about 900 locks in all. Each of the TABLES tables has a primary key and two
unique indexes, so counting them in one transaction needs four locks a table (about 1,600), while pg_dump
locks only the tables (400).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from seeddump import dumpfiles, postgres
from tests.conftest import as_the_project, manage
from tests.xfs import XfsServer, xfs_server

TABLES = 400
SOURCE, TARGET, TOO_MANY = "seeddump_many_source", "seeddump_many_target", "seeddump_many_too_many"


@pytest.fixture(scope="module")
def small_locks_server() -> Iterator[XfsServer]:
    small = {"max_connections": "10", "max_locks_per_transaction": "10"}
    with xfs_server("400M", tmpfs=True, settings=small) as server:
        with connect(server) as admin:
            admin.execute(f'CREATE DATABASE "{SOURCE}"')
        with connect(server, SOURCE) as conn:
            for number in range(TABLES):  # one transaction each: creating them all at once needs the locks too
                conn.execute(f"CREATE TABLE item_{number} (id int PRIMARY KEY, a int UNIQUE, b int UNIQUE)")
                conn.execute(f"INSERT INTO item_{number} SELECT n, n, n FROM generate_series(1, {number % 5}) n")
        yield server


def connect(server: XfsServer, name: str = "postgres") -> psycopg.Connection:
    return as_the_project(postgres.connect(server.settings_dict(), name))


def run(server: XfsServer, dumps_dir: Path, database: str, *args: str):
    env = {"DATABASE_URL": server.url(database), "SEEDDUMP_MIN_FREE_DISK": "none"}
    return manage(*args, alias="default", dumps_dir=dumps_dir, env=env)


def test_counting_every_table_needs_no_more_locks_than_pg_dump(small_locks_server: XfsServer, dumps_dir: Path) -> None:
    server = small_locks_server
    generated = run(server, dumps_dir, SOURCE, "generatedump", "dev")
    assert generated.returncode == 0, generated.stderr
    dump = dumpfiles.resolve_latest(dumps_dir, "dev")
    counts = dumpfiles.read_metadata(dump).record_counts
    assert len(counts) == TABLES and counts["item_4"] == 4 and sum(counts.values()) == 2 * TABLES

    try:
        restored = run(server, dumps_dir, TARGET, "restoredump", "dev", "--no-input", "--json")
        assert restored.returncode == 0, restored.stderr
        assert json.loads(restored.stdout)["source"] == "pg_restore"  # counted on the restored copy too
        with connect(server, TARGET) as conn:
            assert postgres.count_rows(conn) == counts
    finally:
        with connect(server) as admin:
            for (name,) in admin.execute(
                "SELECT datname FROM pg_database WHERE datname LIKE 'seeddump%%' AND datname <> %s", (SOURCE,)
            ).fetchall():
                admin.execute(f'DROP DATABASE "{name}" WITH (FORCE)')


def test_an_in_place_restore_the_lock_table_cannot_hold_says_which_setting_to_raise(
    small_locks_server: XfsServer, dumps_dir: Path
) -> None:
    server = small_locks_server
    assert run(server, dumps_dir, SOURCE, "generatedump", "dev").returncode == 0
    with connect(server, SOURCE) as conn:
        conn.execute("CREATE TABLE precious (id int)")
        conn.execute("INSERT INTO precious VALUES (7)")
    try:
        result = run(server, dumps_dir, SOURCE, "restoredump", "dev", "--no-input", "--in-place")
        assert result.returncode == 1
        [line] = result.stderr.strip().splitlines()
        assert "out of shared memory" in line and "raise max_locks_per_transaction" in line, line
        assert "leaving it unchanged" in line
        with connect(server, SOURCE) as conn:
            assert conn.execute("SELECT id FROM precious").fetchall() == [(7,)]
    finally:
        with connect(server, SOURCE) as conn:
            conn.execute("DROP TABLE precious")


def test_a_dump_the_lock_table_cannot_hold_says_which_setting_to_raise(
    small_locks_server: XfsServer, dumps_dir: Path
) -> None:
    server = small_locks_server
    with connect(server) as admin:
        admin.execute(f'CREATE DATABASE "{TOO_MANY}"')
    try:
        with connect(server, TOO_MANY) as conn:
            for number in range(1200):  # more tables than the server can lock in one transaction
                conn.execute(f"CREATE TABLE item_{number} (id int)")
            conn.execute("INSERT INTO item_0 VALUES (1)")
        result = run(server, dumps_dir, TOO_MANY, "generatedump", "dev")
        assert result.returncode == 1
        [line] = result.stderr.strip().splitlines()
        assert "out of shared memory" in line and "raise max_locks_per_transaction" in line, line
        assert list(dumps_dir.glob("dev-*")) == []
    finally:
        with connect(server) as admin:
            admin.execute(f'DROP DATABASE "{TOO_MANY}" WITH (FORCE)')
