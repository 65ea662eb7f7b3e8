"""An in-place restore never replaces the database without the target's lock held by its restore.

The lock is held by seeddump's own session, and psql loads on another connection: when that session ends
(terminated, a network blip) just before the load or during it, another restore may take the lock at once.
The load then changes nothing and the restore fails in one line. The session is ended for real: by a
superuser just before psql starts (a restore run with that one step wrapped), or by the dump's own code
during pg_restore's COPY (a CHECK constraint: the owner may end its own sessions). On both servers."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from django.db import connections

from tests.conftest import REPO, database_url, manage_env, run_bounded
from tests.test_identity import Server, app_dump, restoredump
from tests.test_identity import server as server_fixture

server = server_fixture  # a fixture of test_identity's, used here by name

pytestmark = pytest.mark.django_db(transaction=True, databases="__all__")

_LOCK_HOLDER = (
    "SELECT pid FROM pg_catalog.pg_locks WHERE locktype = 'advisory' AND granted AND objsubid = 2 "
    "AND objid = (pg_catalog.hashtext(pg_catalog.current_database()))::int::oid AND pid <> pg_catalog.pg_backend_pid()"
)

_ENDED_BEFORE_THE_LOAD = f"""
import sys
import django
django.setup()
from django.db import connections
from seeddump import postgres

original = postgres.restore_in_transaction

def after_ending_the_lock_holder(*args, **kwargs):
    # As a superuser on the target, with the restore's own session (the lock's holder) waited out.
    with postgres.connect(connections["default"].settings_dict) as conn:
        ended = conn.execute("SELECT pg_terminate_backend(pid, 60000) FROM ({_LOCK_HOLDER}) holder").fetchall()
    assert ended == [(True,)], ended
    return original(*args, **kwargs)

postgres.restore_in_transaction = after_ending_the_lock_holder
from django.core.management import execute_from_command_line
execute_from_command_line(["manage.py", "restoredump", "dev", "--no-input", "--in-place"])
"""

# Run by a CHECK constraint during the load, as the owner: ends the owner's session that holds the lock.
ENDS_THE_LOCK_HOLDER = [
    "CREATE FUNCTION end_lock_holder(int) RETURNS boolean LANGUAGE plpgsql AS $$ BEGIN "
    f"PERFORM pg_catalog.pg_terminate_backend(pid, 60000) FROM ({_LOCK_HOLDER}) holder; "
    "RETURN true; END $$",
    "CREATE TABLE ending (id int PRIMARY KEY CHECK (public.end_lock_holder(id)))",
    "INSERT INTO ending VALUES (1)",
]


def precious(server: Server, target: str) -> list[tuple[int]]:
    return server.query(target, "SELECT id FROM precious")  # type: ignore[return-value]


def test_a_lock_lost_before_the_load_changes_nothing(server: Server, seeded_dump: Path, dumps_dir: Path) -> None:
    admin_user = connections[server.alias].settings_dict["USER"]
    app = server.role("app", "LOGIN")
    target = server.database(app)
    server.execute(target, "CREATE TABLE precious (id int)", "INSERT INTO precious VALUES (1)", role=app)
    env = manage_env(server.alias, dumps_dir, {"DATABASE_URL": database_url(server.alias, target, admin_user)})
    connections.close_all()

    stopped = run_bounded([sys.executable, "-c", _ENDED_BEFORE_THE_LOAD], cwd=REPO, env=env, timeout=180)

    assert stopped.returncode == 1, stopped.stderr
    [line] = stopped.stderr.strip().splitlines()
    assert f"in-place restore of '{target}' was stopped before it began, leaving it unchanged" in line
    assert "session holding the lock" in line and "Run restoredump again" in line
    assert precious(server, target) == [(1,)]


def test_a_lock_lost_during_the_load_rolls_it_back(server: Server, seeded_dump: Path, dumps_dir: Path) -> None:
    app, _ = app_dump(server, dumps_dir, ENDS_THE_LOCK_HOLDER)
    target = server.database(app)
    server.execute(target, "CREATE TABLE precious (id int)", "INSERT INTO precious VALUES (1)", role=app)

    stopped = restoredump(server, dumps_dir, app, target, "--in-place", ok=False)

    assert stopped.returncode == 1, stopped.stderr
    [line] = stopped.stderr.strip().splitlines()
    assert f"in-place restore of '{target}' was rolled back, leaving it unchanged" in line
    assert precious(server, target) == [(1,)]
    assert server.query(target, "SELECT to_regclass('public.ending')") == [(None,)]
