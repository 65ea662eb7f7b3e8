"""The swap is the point of no return: a restore stopped at any instant after it (interrupted, its connection
ended, killed) leaves the restored database in place with the replaced one kept for the undo, says so in one
line with exit status 3, and ``--undo`` puts back exactly that generation.

Each stop lands the moment the swap commits: ``seeddump.signals.database_swapped`` is sent then, and the
tests' receivers interrupt, end the session or kill the process right there. On both servers."""

from __future__ import annotations

import signal
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from django.core.management import CommandError
from django.db import connections

from project.reality.models import Team
from seeddump import finishing, postgres, signals, undo
from tests.conftest import REPO, manage_env, run_bounded, run_command
from tests.test_identity import Server, identity, restoredump
from tests.test_identity import server as server_fixture

server = server_fixture  # a fixture of test_identity's, used here by name

pytestmark = pytest.mark.django_db(transaction=True, databases="__all__")


def team_names(alias: str) -> list[str]:
    return sorted(Team.objects.using(alias).values_list("name", flat=True))


def my_work(alias: str, name: str) -> list[str]:
    Team.objects.using(alias).create(name=name, created_at="2026-02-01T00:00:00Z")
    return team_names(alias)


def kept_copies(alias: str) -> list[undo.UndoCopy]:
    with postgres.connect_maintenance(connections[alias].settings_dict) as admin:
        return undo.list_copies(admin, connections[alias].settings_dict["NAME"])


@pytest.fixture
def on_swap() -> Iterator[Callable[[Callable[..., None]], None]]:
    """Connects a receiver to ``database_swapped`` for the test."""
    connected: list[Callable[..., None]] = []

    def connect(receiver: Callable[..., None]) -> None:
        signals.database_swapped.connect(receiver, weak=False)
        connected.append(receiver)

    yield connect
    for receiver in connected:
        signals.database_swapped.disconnect(receiver)


def interrupt(**kwargs: Any) -> None:
    raise KeyboardInterrupt  # what SIGTERM becomes in restoredump (``interrupt_on_sigterm``)


def end_the_restores_session(sender: str, database: str, **kwargs: Any) -> None:
    """Ends the server session of the restore that just swapped (the one holding the target's lock), as a
    server restart or a network blip would."""
    key = finishing.target_lock_key(database)
    with postgres.connect_maintenance(connections[sender].settings_dict) as conn:
        conn.execute(
            """
            SELECT pg_terminate_backend(pid) FROM pg_locks
            WHERE locktype = 'advisory' AND granted AND objsubid = 2
              AND classid = (%s)::int::oid AND objid = hashtext(%s)::oid
            """,
            (key[0], key[1]),
        )


@pytest.mark.parametrize("stop", [interrupt, end_the_restores_session], ids=["interrupted", "connection ended"])
def test_a_restore_stopped_right_after_the_swap_says_so_and_keeps_the_undo_copy(
    alias: str, seeded_dump: Path, on_swap: Callable[[Callable[..., None]], None], stop: Callable[..., None]
) -> None:
    before = my_work(alias, "my local team")
    on_swap(stop)

    with pytest.raises(CommandError) as raised:
        run_command("restoredump", "dev", database=alias, interactive=False, verbosity=0)

    [copy] = kept_copies(alias)
    assert raised.value.returncode == 3
    message = str(raised.value)
    assert "\n" not in message
    assert f"now holds {seeded_dump.name}; the database it replaced is kept for an undo as {copy.name}" in message
    assert "my local team" not in team_names(alias)  # the dump is in place

    signals.database_swapped.disconnect(stop)
    out = run_command("restoredump", "--undo", database=alias, interactive=False).out

    assert f"before {seeded_dump.name} replaced it" in out
    assert team_names(alias) == before


_KILLED_AFTER_SWAP = """
import os, signal
import django
django.setup()
from seeddump import signals

def kill(**kwargs):
    os.kill(os.getpid(), signal.SIGKILL)

signals.database_swapped.connect(kill, weak=False)
from django.core.management import execute_from_command_line  # as manage.py runs it: errors and exit status
args = os.environ.get("RESTORE_ARGS", "").split()
execute_from_command_line(["manage.py", "restoredump", "dev", "--no-input", *args])
"""


@pytest.mark.parametrize("how", ["swap", "in place"])
def test_undo_after_a_kill_right_after_the_swap_puts_back_the_generation_it_replaced(
    alias: str, seeded_dump: Path, dumps_dir: Path, how: str
) -> None:
    """Two restores: the second is killed the moment its swap commits. The undo puts back what the second
    replaced (the first restore's database, with a change made since), never the older generation."""
    my_work(alias, "before any restore")
    run_command("restoredump", "dev", database=alias, interactive=False, verbosity=0)
    generation_two = my_work(alias, "made after the first restore")
    connections.close_all()
    env = manage_env(alias, dumps_dir, {"RESTORE_ARGS": "--in-place" if how == "in place" else ""})

    killed = run_bounded([sys.executable, "-c", _KILLED_AFTER_SWAP], cwd=REPO, env=env, timeout=180)

    assert killed.returncode == -signal.SIGKILL, killed.stderr
    assert "made after the first restore" not in team_names(alias)
    assert len(kept_copies(alias)) == 1
    run_command("restoredump", "--undo", database=alias, interactive=False)
    assert team_names(alias) == generation_two


def test_undo_after_a_restore_as_another_owner_gives_the_database_its_own_owner_back(
    server: Server, seeded_dump: Path, dumps_dir: Path
) -> None:
    admin_user = connections[server.alias].settings_dict["USER"]
    app, other = server.role("app", "LOGIN"), server.role("other", "LOGIN")
    target = server.database(app)
    server.execute(target, "CREATE TABLE precious (id int)", role=app)
    restoredump(server, dumps_dir, admin_user, target)  # a first restore, as the app
    owner_env = {"SEEDDUMP_OWNER": other}
    env = {"DATABASE_URL": _url(server, target), **owner_env}
    restored = _manage(server, dumps_dir, env, "restoredump", "dev", "--no-input")
    assert restored.returncode == 0, restored.stderr
    assert identity(server, target)["owner"] == other

    undone = _manage(server, dumps_dir, env, "restoredump", "--undo", "--no-input")

    assert undone.returncode == 0, undone.stderr
    assert identity(server, target)["owner"] == app  # the owner its objects have
    assert server.query(target, "SELECT DISTINCT tableowner FROM pg_tables WHERE schemaname = 'public'") == [(app,)]


def test_a_template_target_is_restored_again_and_again(server: Server, seeded_dump: Path, dumps_dir: Path) -> None:
    """A target marked IS_TEMPLATE: the copy kept for the undo is not a template (so it can be dropped), the
    restored database is one, and the next restores and the background work go on."""
    admin_user = connections[server.alias].settings_dict["USER"]
    target = server.database(admin_user, "IS_TEMPLATE true")
    for _ in range(3):
        restoredump(server, dumps_dir, admin_user, target, background=True)
    assert server.query("postgres", "SELECT datistemplate FROM pg_database WHERE datname = %s", target) == [(True,)]
    kept = server.query(
        "postgres",
        "SELECT datname, datistemplate FROM pg_database WHERE starts_with(datname, %s)",
        undo.prefix(target),
    )
    assert len(kept) == 1 and kept[0][1] is False
    undone = _manage(server, dumps_dir, {"DATABASE_URL": _url(server, target)}, "restoredump", "--undo", "--no-input")
    assert undone.returncode == 0, undone.stderr
    assert server.query("postgres", "SELECT datistemplate FROM pg_database WHERE datname = %s", target) == [(True,)]


def _url(server: Server, target: str) -> str:
    from tests.conftest import database_url

    return database_url(server.alias, target, connections[server.alias].settings_dict["USER"])


def _manage(server: Server, dumps_dir: Path, env: dict[str, str], *args: str) -> Any:
    from tests.conftest import manage

    return manage(*args, alias=server.alias, dumps_dir=dumps_dir, env=env)


def test_the_server_going_away_in_the_swap_is_said_as_such(
    alias: str, seeded_dump: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A server stop inside the swap's transaction: nothing changed, and the line says the server went away,
    not that the owner or settings could not be given."""
    before = my_work(alias, "my local team")
    from seeddump import databases

    give_identity = databases.give_identity

    def server_goes_away(admin: psycopg.Connection, name: str, wanted: databases.Identity) -> list[str]:
        with postgres.connect_maintenance(connections[alias].settings_dict) as other:
            other.execute("SELECT pg_terminate_backend(%s)", (admin.info.backend_pid,))
        return give_identity(admin, name, wanted)

    monkeypatch.setattr(databases, "give_identity", server_goes_away)
    with pytest.raises(CommandError) as raised:
        run_command("restoredump", "dev", database=alias, interactive=False, verbosity=0)

    message = str(raised.value)
    assert raised.value.returncode == 1
    assert "could not give the restored database" not in message.lower()
    assert "terminat" in message.lower() or "server closed the connection" in message.lower()
    assert team_names(alias) == before


@pytest.mark.parametrize("signal_name", ["SIGTERM", "SIGKILL"])
def test_a_signal_the_moment_the_swap_commits_loses_nothing(
    alias: str, seeded_dump: Path, dumps_dir: Path, signal_name: str
) -> None:
    """SIGTERM (CI cancelling, docker stop) says what the target holds, exit status 3; SIGKILL says nothing.
    Either way the undo copy is there and puts the developer's database back."""
    before = my_work(alias, "my local team")
    connections.close_all()
    script = _KILLED_AFTER_SWAP.replace("signal.SIGKILL", f"signal.{signal_name}")

    stopped = run_bounded([sys.executable, "-c", script], cwd=REPO, env=manage_env(alias, dumps_dir), timeout=180)

    if signal_name == "SIGTERM":
        assert stopped.returncode == 3, stopped.stderr
        [line] = stopped.stderr.strip().splitlines()
        assert f"now holds {seeded_dump.name}; the database it replaced is kept for an undo as seeddump_undo_" in line
        assert "(interrupted)" in line
    else:
        assert stopped.returncode == -signal.SIGKILL
    assert len(kept_copies(alias)) == 1
    run_command("restoredump", "--undo", database=alias, interactive=False)
    assert team_names(alias) == before


@pytest.mark.parametrize("setting", ["read-only by default", "closed to connections"])
def test_a_target_that_refuses_the_records_is_still_restored(
    server: Server, seeded_dump: Path, dumps_dir: Path, setting: str
) -> None:
    """The target's own settings travel with its identity to the restored database, so seeddump's writing of
    the admin's records after the swap fails there: a note, not a failed restore."""
    admin_user = connections[server.alias].settings_dict["USER"]
    target = server.database(admin_user)
    if setting == "read-only by default":
        server.execute("postgres", f'ALTER DATABASE "{target}" SET default_transaction_read_only = on')
    else:
        server.execute("postgres", f'ALTER DATABASE "{target}" WITH ALLOW_CONNECTIONS false')
    env = {"DATABASE_URL": _url(server, target)}

    for _ in range(2):
        result = _manage(server, dumps_dir, env, "restoredump", "dev", "--no-input", "-v2")
        assert result.returncode == 0, result.stderr
        assert "Did not record the restore for the admin" in result.stdout
        assert "Traceback" not in result.stderr


def test_restores_of_one_target_at_once_leave_one_undo_copy_and_nothing_else(
    alias: str, seeded_dump: Path, dumps_dir: Path
) -> None:
    from tests.conftest import leftovers, start_manage

    my_work(alias, "my local team")
    started = [start_manage("restoredump", "dev", "--no-input", alias=alias, dumps_dir=dumps_dir) for _ in range(3)]
    for process in started:
        _out, err = process.communicate(timeout=300)
        assert process.returncode == 0, err

    assert leftovers(alias) == []
    assert len(kept_copies(alias)) == 1


_KILLED_AFTER_THE_IN_PLACE_COMMIT = """
import os, signal
import django
django.setup()
from seeddump import undo

def kill(*args, **kwargs):
    os.kill(os.getpid(), signal.SIGKILL)

undo.keep_in_place = kill  # the in-place transaction has just committed
from django.core.management import execute_from_command_line
execute_from_command_line(["manage.py", "restoredump", "dev", "--no-input", "--in-place"])
"""


def test_a_kill_right_after_an_in_place_commit_keeps_its_copy_for_the_undo(
    alias: str, seeded_dump: Path, dumps_dir: Path
) -> None:
    """In place, the point of no return is the transaction's commit, and the copy for the undo is labelled
    before it: the next run sees that the target's schemas changed and keeps the copy, so the undo puts back
    what the killed restore replaced, never the older copy an earlier restore kept."""
    my_work(alias, "before any restore")
    run_command("restoredump", "dev", database=alias, interactive=False, verbosity=0)
    generation_two = my_work(alias, "made after the first restore")
    connections.close_all()

    killed = run_bounded(
        [sys.executable, "-c", _KILLED_AFTER_THE_IN_PLACE_COMMIT],
        cwd=REPO,
        env=manage_env(alias, dumps_dir),
        timeout=180,
    )

    assert killed.returncode == -signal.SIGKILL, killed.stderr
    assert "made after the first restore" not in team_names(alias)
    out = run_command("restoredump", "--undo", database=alias, interactive=False, verbosity=2).out
    assert "the in-place restore that made it had committed" in out
    assert team_names(alias) == generation_two
