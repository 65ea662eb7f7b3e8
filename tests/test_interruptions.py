"""A fault after each state change of a restore: what the target holds is what the server records, the line
says so, and nothing the undo needs is lost.

Each test runs ``manage.py restoredump`` in a process of its own that stops itself (SIGTERM, which restoredump
turns into an interruption, or SIGKILL) at one exact moment: right after a step it wraps has returned (the
swap's commit, the in-place transaction's, the copy made for the undo) or just before one. On both servers."""

from __future__ import annotations

import json
import signal
import sys
from pathlib import Path
from typing import Any

import pytest
from django.core.management import CommandError
from django.db import connections

from seeddump import databases, finishing, media, postgres, undo
from tests.conftest import (
    REPO,
    MediaDump,
    copy_dump,
    database_url,
    demo_snapshot,
    files_of,
    manage,
    manage_env,
    run_bounded,
    run_command,
)
from tests.test_after_swap import my_work, team_names
from tests.test_identity import Server, restoredump
from tests.test_identity import server as server_fixture
from tests.test_identity import team_names as team_names_in

server = server_fixture  # a fixture of test_identity's, used here by name

pytestmark = pytest.mark.django_db(transaction=True, databases="__all__")


def under_undo_names(alias: str) -> list[databases.Database]:
    """Every database under the target's undo names, labelled or not."""
    target = connections[alias].settings_dict["NAME"]
    with postgres.connect_maintenance(connections[alias].settings_dict) as admin:
        return databases.with_prefix(admin, undo.prefix(target), sizes=False)


# A restoredump that stops itself where STOP_AT says, with the signal STOP_WITH, as manage.py runs it (its
# errors, its exit status). ``after`` wraps a function so that the signal comes the moment it has returned.
_STOPPED = """
import os, signal
import django
django.setup()
from seeddump import databases, postgres, sandbox, undo

point, how = os.environ["STOP_AT"], getattr(signal, os.environ["STOP_WITH"])

def stop():
    os.kill(os.getpid(), how)

def after(function):
    def wrapped(*args, **kwargs):
        done = function(*args, **kwargs)
        stop()
        return done
    return wrapped

def before(function):
    def wrapped(*args, **kwargs):
        stop()
        return function(*args, **kwargs)
    return wrapped

if point == "the in-place commit":  # psql has committed and exited; the copy is not yet kept
    postgres.restore_in_transaction = after(postgres.restore_in_transaction)
elif point == "the in-place load":
    postgres.restore_in_transaction = before(postgres.restore_in_transaction)
elif point == "the swap's commit":  # databases.swap's transaction has committed; swap has not returned
    databases.swap = after(databases.swap)
elif point == "the end":  # everything done; the throwaway role (if any) is being dropped
    sandbox.Sandbox.__exit__ = before(sandbox.Sandbox.__exit__)
elif point == "the swap's session":  # seeddump's session is ended (by another) just before the swap
    from django.db import connections
    swap = databases.swap
    def ending(admin, *args, **kwargs):
        with postgres.connect_maintenance(connections["default"].settings_dict) as other:
            other.execute("SELECT pg_terminate_backend(%s, 30000)", (admin.info.backend_pid,))
        return swap(admin, *args, **kwargs)
    databases.swap = ending
elif point == "the return":  # restore() has returned; the command has not said so yet
    from seeddump import restore
    restore.restore = after(restore.restore)
elif point == "the copy's label":  # CREATE DATABASE ... TEMPLATE target has made the copy; not yet labelled
    label = databases.label
    def labelling(admin, name, values):
        if values.get("seeddump") == undo.PENDING:
            stop()
        return label(admin, name, values)
    databases.label = labelling

from django.core.management import execute_from_command_line
args = os.environ.get("RESTORE_ARGS", "").split()
execute_from_command_line(["manage.py", "restoredump", "dev", "--no-input", *args])
"""


def stopped_restore(
    alias: str, dumps_dir: Path, at: str, how: str = "SIGTERM", *args: str, env: dict[str, str] | None = None
) -> Any:
    connections.close_all()
    env = manage_env(alias, dumps_dir, {"STOP_AT": at, "STOP_WITH": how, "RESTORE_ARGS": " ".join(args), **(env or {})})
    return run_bounded([sys.executable, "-c", _STOPPED], cwd=REPO, env=env, timeout=180)


def the_line(stopped: Any) -> str:
    """The one line a stopped restoredump says."""
    lines = stopped.stderr.strip().splitlines()
    assert len(lines) == 1, stopped.stderr
    assert "Traceback" not in stopped.stderr
    return lines[0]


# --- Past the point of no return: the target holds the dump, and the line says so ---------------------------


def test_a_sigterm_right_after_the_in_place_commit_keeps_the_copy_and_says_so(
    alias: str, seeded_dump: Path, dumps_dir: Path
) -> None:
    """psql has committed and exited, and the copy made beforehand is the only copy of the old database: it is
    kept for the undo, and the line says the target holds the dump (exit status 3), never 'not changed'."""
    before = my_work(alias, "my local team")

    stopped = stopped_restore(alias, dumps_dir, "the in-place commit", "SIGTERM", "--in-place")

    assert stopped.returncode == 3, stopped.stderr
    line = the_line(stopped)
    assert f"now holds {seeded_dump.name}; the database it replaced is kept for an undo as seeddump_undo_" in line
    assert "(interrupted)" in line and "not changed" not in line
    assert "my local team" not in team_names(alias)
    out = run_command("restoredump", "--undo", database=alias, interactive=False).out
    assert f"before {seeded_dump.name} replaced it" in out
    assert team_names(alias) == before


@pytest.fixture
def media_dump_over_notes(
    alias: str, media_dumps: dict[str, MediaDump], dumps_dir: Path, media_root: Path
) -> MediaDump:
    """The session's dump with media as dev's latest, and a MEDIA_ROOT holding the developer's own notes."""
    made = media_dumps[alias]
    dump = copy_dump(made.path, dumps_dir)
    media_root.mkdir()
    (media_root / "notes.txt").write_text("my notes")
    return MediaDump(dump, made.files)


def test_a_sigterm_right_after_the_swap_commits_keeps_the_media_exchange_for_the_undo(
    alias: str, media_dump_over_notes: MediaDump, dumps_dir: Path, media_root: Path
) -> None:
    """The swap recorded the media exchange; the unpacked files are the exchange's, not deleted: the line says
    the target holds the dump, and --undo puts back the database and the files together."""
    before = {"rows": demo_snapshot(alias), "files": files_of(media_root)}

    stopped = stopped_restore(alias, dumps_dir, "the swap's commit")

    assert stopped.returncode == 3, stopped.stderr
    line = the_line(stopped)
    assert f"now holds {media_dump_over_notes.path.name}; the database it replaced is kept for an undo as " in line
    assert "(interrupted)" in line
    out = run_command("restoredump", "--undo", database=alias, interactive=False, verbosity=2).out
    assert f"before {media_dump_over_notes.path.name} replaced it" in out
    assert {"rows": demo_snapshot(alias), "files": files_of(media_root)} == before


def test_a_session_ended_before_the_swap_says_the_database_was_not_changed(
    alias: str, seeded_dump: Path, dumps_dir: Path
) -> None:
    """The restore's own session is ended (an administrator, a network blip) before the swap commits: the
    server says the target is as it was, and so does the line (it only named the server's error)."""
    before = my_work(alias, "my local team")

    stopped = stopped_restore(alias, dumps_dir, "the swap's session")

    assert stopped.returncode == 1, stopped.stderr
    line = the_line(stopped)
    target = connections[alias].settings_dict["NAME"]
    assert line.startswith("CommandError: PostgreSQL said: ") and line.endswith(f"; '{target}' was not changed."), line
    assert team_names(alias) == before
    run_command("restoredump", "dev", database=alias, interactive=False)
    assert "my local team" not in team_names(alias)


def test_the_next_restore_finishes_the_media_of_a_swap_stopped_by_sigterm(
    alias: str, media_dump_over_notes: MediaDump, dumps_dir: Path, media_root: Path
) -> None:
    stopped = stopped_restore(alias, dumps_dir, "the swap's commit")
    assert stopped.returncode == 3, stopped.stderr

    out = run_command("restoredump", "dev", database=alias, interactive=False, verbosity=2).out

    assert f"Finished swapping the media of an interrupted restore into {media_root}" in out
    assert files_of(media_root) == media_dump_over_notes.files


@pytest.mark.parametrize("at", ["the end", "the return"])
@pytest.mark.parametrize("how", ["cold", "in place"])
def test_a_sigterm_once_the_restore_is_done_says_the_target_holds_the_dump(
    alias: str, seeded_dump: Path, dumps_dir: Path, how: str, at: str
) -> None:
    """Stopped while the restore leaves its last context (the throwaway role's drop), or once it returned and
    the command has yet to say so, after everything was done: what the target holds is the dump, and the undo
    puts back what was there."""
    before = my_work(alias, "my local team")

    stopped = stopped_restore(alias, dumps_dir, at, "SIGTERM", *(["--in-place"] if how == "in place" else []))

    assert stopped.returncode == 3, stopped.stderr
    line = the_line(stopped)
    assert f"now holds {seeded_dump.name}; the database it replaced is kept for an undo as seeddump_undo_" in line
    assert "not changed" not in line
    run_command("restoredump", "--undo", database=alias, interactive=False)
    assert team_names(alias) == before


# --- Before the point of no return: what a killed in-place restore left goes with the next command ---------


@pytest.mark.parametrize("next_command", ["cold", "in place", "undo"])
@pytest.mark.parametrize("at", ["the copy's label", "the in-place load"])
def test_what_a_killed_in_place_restore_left_goes_with_the_next_command(
    alias: str, seeded_dump: Path, dumps_dir: Path, at: str, next_command: str
) -> None:
    """Killed between the copy for the undo and its label (an unlabelled full copy), or during the load (a
    copy still pending): the target is unchanged, and the next restore (any path) or undo drops the copy."""
    before = my_work(alias, "my local team")
    killed = stopped_restore(alias, dumps_dir, at, "SIGKILL", "--in-place")
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    assert team_names(alias) == before
    [left] = under_undo_names(alias)
    assert left.label.get("seeddump") == (undo.PENDING if at == "the in-place load" else None)

    if next_command == "undo":
        with pytest.raises(CommandError, match="Nothing to undo"):
            run_command("restoredump", "--undo", database=alias, interactive=False)
        assert under_undo_names(alias) == [] and team_names(alias) == before
        return
    args = ["--in-place"] if next_command == "in place" else []
    out = run_command("restoredump", "dev", *args, database=alias, interactive=False, verbosity=2).out

    assert f"Dropped {left.name}, left over by an interrupted restore" in out
    [kept] = under_undo_names(alias)
    assert kept.name != left.name and kept.label.get("seeddump") == undo.KIND
    run_command("restoredump", "--undo", database=alias, interactive=False)
    assert team_names(alias) == before


# --- Media of a target that did not exist ---------------------------------------------------------------------


def test_the_files_of_a_first_restore_are_kept_and_never_deleted(
    server: Server, media_dumps: dict[str, MediaDump], dumps_dir: Path, media_root: Path
) -> None:
    """A new checkout or a recreated container: no database yet, files in MEDIA_ROOT. No undo can put them back
    with a database, so they are kept in a folder the restore names, which no later restore removes."""
    copy_dump(media_dumps[server.alias].path, dumps_dir)
    media_root.mkdir()
    (media_root / "notes.txt").write_text("my notes")
    target = server.target_name("new")  # dropped with the test's databases
    env = {"DATABASE_URL": database_url(server.alias, target, connections[server.alias].settings_dict["USER"])}

    first = restoredump(server, dumps_dir, connections[server.alias].settings_dict["USER"], target)

    assert first["undo"] is None
    [kept] = media.kept_aside_folders(media_root)
    assert f"the files MEDIA_ROOT held are kept in {kept}" in first["undoNote"]
    assert files_of(kept) == {"notes.txt": b"my notes"}
    assert files_of(media_root) == media_dumps[server.alias].files
    refused = manage("restoredump", "--undo", "--no-input", alias=server.alias, dumps_dir=dumps_dir, env=env)
    assert refused.returncode == 1 and "Nothing to undo" in refused.stderr
    assert f"The files MEDIA_ROOT held when there was no database yet are in {kept}." in refused.stderr

    for _ in range(2):
        again = manage("restoredump", "dev", "--no-input", alias=server.alias, dumps_dir=dumps_dir, env=env)
        assert again.returncode == 0, again.stderr

    assert files_of(kept) == {"notes.txt": b"my notes"}
    assert media.kept_aside_folders(media_root) == [kept]


# --- Two roles restoring one target ------------------------------------------------------------------------


def test_undo_after_restores_by_two_roles_never_skips_a_generation(
    server: Server, seeded_dump: Path, dumps_dir: Path
) -> None:
    """A superuser restores the app's database, the app works in it and restores it again itself: an undo as
    the superuser would put back the generation before the app's (its own copy); it is refused in one line
    naming the app, and the app's undo puts back exactly what its restore replaced."""
    admin_user = connections[server.alias].settings_dict["USER"]
    app = server.role("app", "LOGIN CREATEDB")
    target = server.database(app)
    restoredump(server, dumps_dir, admin_user, target)
    server.execute(
        target, "UPDATE reality_team SET name = 'made between' WHERE id = (SELECT min(id) FROM reality_team)", role=app
    )
    between = team_names_in(server, target)
    restoredump(server, dumps_dir, app, target)
    after = team_names_in(server, target)
    assert "made between" not in after

    def undo_as(role: str) -> Any:
        env = {"DATABASE_URL": database_url(server.alias, target, role)}
        return manage("restoredump", "--undo", "--no-input", alias=server.alias, dumps_dir=dumps_dir, env=env)

    refused = undo_as(admin_user)
    assert refused.returncode == 1, refused.stdout
    [line] = refused.stderr.strip().splitlines()
    assert "Nothing to undo" in line and f"a restore by role '{app}'" in line
    assert team_names_in(server, target) == after

    undone = undo_as(app)
    assert undone.returncode == 0, undone.stderr
    assert team_names_in(server, target) == between


def test_the_copy_labels_what_the_restore_put_in_place(alias: str, seeded_dump: Path) -> None:
    """The label the undo reads: the oid of the database the restore left in the target's place."""
    run_command("restoredump", "dev", database=alias, interactive=False, verbosity=0)
    target = connections[alias].settings_dict["NAME"]
    with postgres.connect_maintenance(connections[alias].settings_dict) as admin:
        [copy] = undo.list_copies(admin, target, sizes=False)
        assert copy.restored_oid == databases.oid_of(admin, target)
        label = json.loads(
            admin.execute(
                "SELECT shobj_description(oid, 'pg_database') FROM pg_database WHERE datname = %s", (copy.name,)
            ).fetchone()[0]  # type: ignore[index]
        )
    assert label["database"] == target and finishing.tag(target) in copy.name
