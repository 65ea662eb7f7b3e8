"""Faults, concurrency and secrets: kills, parallel runs, server trouble, wrong passwords."""

from __future__ import annotations

import json
import os
import select
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from django.core.management import CommandError
from django.db import connections

from project import embedded
from project.reality.models import Team
from seeddump import dumpfiles, postgres
from tests.conftest import (
    copy_dump,
    database_url,
    leftovers,
    manage,
    run_command,
    start_manage,
    wait_for_exit,
)

pytestmark = pytest.mark.django_db(transaction=True, databases="__all__")


class Gate:
    """pg_dump and pg_restore wrappers that run the real program, then report and wait to be released.

    A command stopped at the gate is exactly where a kill or a second command should meet it: its
    PostgreSQL program has run (its files or scratch database exist) and it has not gone on.
    """

    def __init__(self, folder: Path, real_dir: Path) -> None:
        self.folder = folder
        self.reached = folder / "reached"
        self.release_fifo = folder / "release"
        os.mkfifo(self.reached)
        os.mkfifo(self.release_fifo)
        for name in ("pg_dump", "pg_restore"):
            script = folder / name
            script.write_text(
                "#!/bin/sh\n"
                f'case "$1" in --version) exec "{real_dir / name}" "$@";; esac\n'
                f'"{real_dir / name}" "$@"; status=$?\n'
                f'echo "{name}" > "{self.reached}"\n'
                f'read line < "{self.release_fifo}"\n'
                "exit $status\n"
            )
            script.chmod(0o755)
        # Read-write: this end then counts as a writer too, so the FIFO never reads as closed between
        # two wrappers and the gate can be met more than once.
        self.reader = os.open(self.reached, os.O_RDWR | os.O_NONBLOCK)
        # Read-write too, so that "go" can be written before a wrapper has opened the FIFO to read it: it
        # waits in the pipe (which has a reader: this end) until the wrapper reads it. A write-only open
        # would fail while no wrapper is reading.
        self.releaser = os.open(self.release_fifo, os.O_RDWR | os.O_NONBLOCK)

    @property
    def env(self) -> dict[str, str]:
        return {"SEEDDUMP_PG_BIN_DIRS": str(self.folder)}

    def wait(self, timeout: float = 120) -> str:
        """Blocks until a wrapper has run its program and stopped at the gate; returns which."""
        ready, _, _ = select.select([self.reader], [], [], timeout)
        assert ready, "no command reached the gate"
        return os.read(self.reader, 100).decode().strip()

    def release(self) -> None:
        os.write(self.releaser, b"go\n")

    def close(self) -> None:
        os.close(self.reader)
        os.close(self.releaser)


@pytest.fixture
def gate(alias: str, tmp_path: Path) -> Iterator[Gate]:
    real = postgres.find_program("pg_restore", connections[alias].pg_version // 10000).path.parent
    folder = tmp_path / "gate-bin"
    folder.mkdir()
    gate = Gate(folder, real)
    yield gate
    gate.close()


@pytest.fixture
def marker(alias: str) -> Team:
    return Team.objects.using(alias).create(name="must survive", created_at="2026-01-01T00:00:00Z")


def kill(process: subprocess.Popen) -> None:
    process.send_signal(signal.SIGKILL)
    process.wait(timeout=30)


def test_killed_mid_restore_keeps_the_old_database(
    alias: str, seeded_dump: Path, dumps_dir: Path, marker: Team, gate: Gate
) -> None:
    process = start_manage("restoredump", "dev", "--no-input", alias=alias, dumps_dir=dumps_dir, env=gate.env)
    assert gate.wait() == "pg_restore"
    kill(process)  # SIGKILL: no cleanup code runs
    gate.release()

    assert list(Team.objects.using(alias).values_list("name", flat=True)) == ["must survive"]
    assert len(leftovers(alias)) == 1  # the scratch database of the killed run

    result = manage("restoredump", "dev", "--no-input", "-v2", alias=alias, dumps_dir=dumps_dir)
    assert result.returncode == 0, result.stderr
    assert "left over by an interrupted restore" in result.stdout
    assert leftovers(alias) == []
    assert Team.objects.using(alias).count() == 2


def test_killed_mid_dump_leaves_no_dump_and_latest_unchanged(
    alias: str, seeded_dump: Path, dumps_dir: Path, gate: Gate
) -> None:
    run_command("restoredump", "dev", database=alias, interactive=False)
    before = dumpfiles.list_dumps(dumps_dir)
    process = start_manage("generatedump", "dev", alias=alias, dumps_dir=dumps_dir, env=gate.env)
    assert gate.wait() == "pg_dump"
    partials = list(dumps_dir.glob(".dev-seeded.*.partial"))
    assert len(partials) == 1 and partials[0].stat().st_size > 0  # pg_dump wrote it all
    kill(process)
    gate.release()

    assert dumpfiles.list_dumps(dumps_dir) == before
    assert dumpfiles.resolve_latest(dumps_dir, "dev") == seeded_dump

    result = manage("generatedump", "dev", "-v2", alias=alias, dumps_dir=dumps_dir)
    assert result.returncode == 0, result.stderr
    assert f"Removed {partials[0].name}, left by an interrupted generatedump" in result.stdout
    assert not list(dumps_dir.glob(".*.partial"))
    assert len(dumpfiles.list_dumps(dumps_dir)) == len(before) + 1


def test_two_restores_of_one_database_take_turns(
    alias: str, seeded_dump: Path, dumps_dir: Path, marker: Team, gate: Gate
) -> None:
    first = start_manage(
        "restoredump", "dev", "--no-input", "--no-snapshot", "-v2", alias=alias, dumps_dir=dumps_dir, env=gate.env
    )
    gate.wait()  # the first holds the lock and is inside pg_restore
    second = start_manage("restoredump", "dev", "--no-input", "--no-snapshot", "-v2", alias=alias, dumps_dir=dumps_dir)
    assert second.stdout is not None
    line = second.stdout.readline()
    while line and "Waiting for another restore" not in line:
        line = second.stdout.readline()
    assert "Waiting for another restore of '" in line
    gate.release()

    _, first_err = first.communicate(timeout=120)
    _, second_err = second.communicate(timeout=120)
    assert first.returncode == 0, first_err
    assert second.returncode == 0, second_err
    assert leftovers(alias) == []
    assert Team.objects.using(alias).count() == 2


def test_two_dumps_at_once_are_both_complete(alias: str, seeded_dump: Path, dumps_dir: Path, gate: Gate) -> None:
    run_command("restoredump", "dev", database=alias, interactive=False)
    first = start_manage("generatedump", "dev", alias=alias, dumps_dir=dumps_dir, env=gate.env)
    gate.wait()  # the first has dumped, not yet named its file
    second = manage("generatedump", "dev", alias=alias, dumps_dir=dumps_dir)
    assert second.returncode == 0, second.stderr
    gate.release()
    first_out, first_err = first.communicate(timeout=120)
    assert first.returncode == 0, first_err

    made = {Path(first_out.split()[-1]), Path(second.stdout.split()[-1])}
    assert len(made) == 2
    for dump in made:
        dumpfiles.verify(dump, dumpfiles.read_metadata(dump))
    assert dumpfiles.resolve_latest(dumps_dir, "dev") == Path(first_out.split()[-1])  # the last to finish


def test_other_sessions_on_the_target_are_ended(alias: str, seeded_dump: Path, marker: Team) -> None:
    other = postgres.connect(connections[alias].settings_dict)
    other.execute("SELECT 1")

    run_command("restoredump", "dev", database=alias, interactive=False)

    with pytest.raises(psycopg.OperationalError):
        other.execute("SELECT 1")
    other.close()
    assert Team.objects.using(alias).count() == 2


def test_generatedump_of_a_missing_database(alias: str, dumps_dir: Path) -> None:
    result = manage(
        "generatedump", "dev", alias=alias, dumps_dir=dumps_dir, env={"DATABASE_URL": database_url(alias, "nope_db")}
    )
    assert result.returncode == 1
    assert "Cannot connect to database 'nope_db'" in result.stderr
    assert 'database "nope_db" does not exist' in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


@pytest.mark.parametrize("alias", ["system"])
def test_dump_from_a_newer_pg_dump_needs_a_newer_pg_restore(
    alias: str, seeded_dumps: dict[str, Path], dumps_dir: Path, marker: Team, settings
) -> None:
    """A PostgreSQL 18 dump, a PostgreSQL 15 server, and only PostgreSQL 15's pg_restore installed."""
    copy_dump(seeded_dumps["default"], dumps_dir)
    settings.SEEDDUMP_PG_BIN_DIRS = []
    result = manage(
        "restoredump", "dev", "--no-input", alias=alias, dumps_dir=dumps_dir, env={"SEEDDUMP_PG_BIN_DIRS": ""}
    )
    assert result.returncode == 1
    assert "Need pg_restore 18 or newer, but only older ones are installed" in result.stderr
    assert list(Team.objects.using(alias).values_list("name", flat=True)) == ["must survive"]


@pytest.mark.parametrize("path_kind", ["directory", "link outside", "missing"])
def test_bad_dump_paths(alias: str, seeded_dump: Path, dumps_dir: Path, tmp_path: Path, path_kind: str) -> None:
    if path_kind == "directory":
        path, message = dumps_dir, "is not a dump file"
    elif path_kind == "link outside":
        outside = tmp_path / "outside.dump"
        outside.write_bytes(seeded_dump.read_bytes())
        path = dumps_dir / "dev-seeded-vlinked-20260101T000000Z.dump"
        path.symlink_to(outside)
        message = "outside the dumps folder"
    else:
        path, message = dumps_dir / "nope.dump", "does not exist"
    with pytest.raises(CommandError, match=message):
        run_command("restoredump", "dev", dump=str(path), database=alias, interactive=False)


# --- A server that checks passwords ---------------------------------------------------------------

PASSWORD = "Pw-that-must-not-leak-42"


@pytest.fixture(scope="module")
def password_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    """A throwaway cluster whose pg_hba.conf requires scram-sha-256 passwords, with a role 'app'."""
    pgdata = tmp_path_factory.mktemp("pwcluster") / "pgdata"
    server = embedded.get_server(pgdata, cleanup_mode="delete")
    info = server.get_postmaster_info()
    host, port = str(info.socket_dir), str(info.port or 5432)
    with psycopg.connect(host=host, port=port, user="postgres", dbname="postgres", autocommit=True) as conn:
        conn.execute(f"CREATE ROLE app LOGIN CREATEDB PASSWORD '{PASSWORD}'")
        conn.execute("CREATE DATABASE app_db OWNER app")
        hba = pgdata / "pg_hba.conf"
        hba.write_text(
            "local all postgres trust\nlocal all all scram-sha-256\nhost all all 127.0.0.1/32 scram-sha-256\n"
        )
        conn.execute("SELECT pg_reload_conf()")
    yield {"host": host, "port": port, "pgdata": str(pgdata)}
    server.cleanup()


def app_url(server: dict[str, str], password: str) -> str:
    return f"postgres://app:{password}@/{server['host']}/app_db"


def test_wrong_password_is_one_line_without_the_password(password_server, dumps_dir: Path, tmp_path: Path) -> None:
    result = manage(
        "generatedump",
        "dev",
        "--allow-empty",
        alias="default",
        dumps_dir=dumps_dir,
        env={"DATABASE_URL": app_url(password_server, "wrong-" + PASSWORD)},
    )
    assert result.returncode == 1
    assert 'password authentication failed for user "app"' in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert PASSWORD not in result.stderr + result.stdout


def test_password_never_leaks_through_any_command(password_server, dumps_dir: Path, tmp_path: Path) -> None:
    env = {"DATABASE_URL": app_url(password_server, PASSWORD)}
    log = tmp_path / "smoke.log"
    outputs = []
    for args in (
        ("migrate", "-v0"),
        ("seed", "dev", "--scale", "1", "-v0"),
        ("generatedump", "dev", "-v3"),
        ("restoredump", "dev", "--no-input", "-v3"),
        ("restoredump", "dev", "--no-input", "-v3"),
        ("smoketest", "--skip-frontend", "--log-file", str(log), "-v3"),
    ):
        result = manage(*args, alias="default", dumps_dir=dumps_dir, env=env)
        assert result.returncode == 0, (args, result.stdout, result.stderr)
        outputs.append(result.stdout + result.stderr)
    assert "from its cached snapshot" in outputs[4]
    assert "Smoke test passed" in outputs[5]
    # A restore that finishes in the background: its process and its log file.
    background = manage(
        "restoredump",
        "dev",
        "--no-input",
        "--json",
        "-v3",
        alias="default",
        dumps_dir=dumps_dir,
        env={**env, "SEEDDUMP_BACKGROUND": "true"},
    )
    assert background.returncode == 0, background.stderr
    wait_for_exit(json.loads(background.stdout)["background"]["pid"])
    outputs.append(background.stdout + background.stderr)
    assert ": done (peak memory " in (dumps_dir / ".seeddump-background.log").read_text().rstrip().splitlines()[-1]
    for output in outputs:
        assert PASSWORD not in output
    assert PASSWORD not in log.read_text()
    for path in dumps_dir.iterdir():
        assert PASSWORD.encode() not in path.read_bytes()


def test_a_dumps_code_logs_in_with_a_password_the_server_checks_or_is_refused(password_server, dumps_dir: Path) -> None:
    """A superuser restores an app's database on a server that checks passwords: the dump's code runs as a
    throwaway member of the app that logs in with its own (random) password. When pg_hba.conf turns such
    roles away, the restore is refused before pg_restore in one line, and --trust restores it anyway."""
    host = password_server["host"]
    with psycopg.connect(host=host, user="postgres", dbname="postgres", autocommit=True) as conn:
        conn.execute("DROP DATABASE IF EXISTS sandbox_db WITH (FORCE)")
        conn.execute("CREATE DATABASE sandbox_db OWNER app")
    with psycopg.connect(host=host, user="app", password=PASSWORD, dbname="sandbox_db", autocommit=True) as conn:
        conn.execute("CREATE TABLE notes (id int PRIMARY KEY)")
        conn.execute("INSERT INTO notes SELECT generate_series(1, 3)")
    env = {"DATABASE_URL": f"postgres://postgres@/{host}/sandbox_db"}
    assert manage("generatedump", "dev", alias="default", dumps_dir=dumps_dir, env=env).returncode == 0

    restored = manage("restoredump", "dev", "--no-input", "-v2", alias="default", dumps_dir=dumps_dir, env=env)

    assert restored.returncode == 0, restored.stderr
    assert "as 'app'" in restored.stdout
    with psycopg.connect(host=host, user="postgres", dbname="sandbox_db") as conn:
        assert conn.execute("SELECT tableowner FROM pg_tables WHERE tablename = 'notes'").fetchall() == [("app",)]

    hba = Path(str(password_server["pgdata"])) / "pg_hba.conf"
    allowed = hba.read_text()
    hba.write_text("local all postgres trust\nlocal all /^seeddump_sandbox_ reject\n" + allowed)
    with psycopg.connect(host=host, user="postgres", dbname="postgres", autocommit=True) as conn:
        conn.execute("SELECT pg_reload_conf()")
    try:
        # --no-snapshot: a copy of the cached snapshot runs none of the dump's code, so it needs no such login.
        again = ("restoredump", "dev", "--no-input", "--no-snapshot")
        refused = manage(*again, alias="default", dumps_dir=dumps_dir, env=env)
        trusted = manage(*again, "--trust", alias="default", dumps_dir=dumps_dir, env=env)
    finally:
        hba.write_text(allowed)
        with psycopg.connect(host=host, user="postgres", dbname="postgres", autocommit=True) as conn:
            conn.execute("SELECT pg_reload_conf()")

    assert refused.returncode == 1
    [line] = refused.stderr.strip().splitlines()
    assert "connects as 'postgres', not as 'app'" in line and "the server does not let it log in" in line
    assert "pg_hba.conf" in line and "--trust" in line
    assert trusted.returncode == 0, trusted.stderr
