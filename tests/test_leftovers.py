"""The throwaway roles a dump's code runs as never outlive their restore for long, and only seeddump's own go.

A restore killed right after its load (``kill -9``: the role was made, nothing dropped it) leaves its
``seeddump_sandbox_*`` role; the next restore, or ``snapshots --prune``, drops it once the process that made
it is gone, and what the dump's code made as that role itself (``SET ROLE NONE``, then ``CREATE``) goes to the
owner. Look-alike roles (made by another role, or by a process still running) are never touched. Real
roles on both servers; the kill is a real SIGKILL of a real restore."""

from __future__ import annotations

import json
import os
import signal
import sys
from pathlib import Path

import pytest
from django.db import connections
from psycopg import sql

from seeddump import sandbox
from tests.conftest import REPO, database_url, manage, manage_env, run_bounded, wait_for_exit
from tests.test_dump_code import roles_left
from tests.test_identity import Server, app_dump, restoredump, superuser
from tests.test_identity import server as server_fixture

server = server_fixture  # a fixture of test_identity's, used here by name

pytestmark = pytest.mark.django_db(transaction=True, databases="__all__")

# Run during pg_restore's COPY by a CHECK constraint: leaves the owner's role for the login's own (a function
# call may, where SET may not) and makes a function as whoever logged in, named after it.
MADE_AS_ITSELF = [
    "CREATE FUNCTION make_as_itself(int) RETURNS boolean LANGUAGE plpgsql AS $$ BEGIN "
    "PERFORM set_config('role', 'none', true); "
    "EXECUTE format('CREATE OR REPLACE FUNCTION public.%I() RETURNS int LANGUAGE sql AS ''SELECT 1''', "
    "'made_by_' || session_user); "
    "RETURN true; END $$",
    "CREATE TABLE made (id int PRIMARY KEY CHECK (public.make_as_itself(id)))",
    "INSERT INTO made VALUES (1)",
]

_KILLED_AFTER_THE_LOAD = """
import os, signal, sys
import django
django.setup()
from seeddump import load

def killing(original):
    def run(*args, **kwargs):
        original(*args, **kwargs)
        os.kill(os.getpid(), signal.SIGKILL)
    return run

load.in_place, load.into_new = killing(load.in_place), killing(load.into_new)
from django.core.management import call_command
call_command("restoredump", "dev", "--no-input", "--no-snapshot", *sys.argv[1:])
"""


def sandboxes(server: Server) -> list[dict[str, object]]:
    """The throwaway roles of this test's owners: name, whether it may log in, hours left, its maker's pid."""
    rows = server.query(
        "postgres",
        "SELECT r.rolname, r.rolcanlogin, extract(epoch FROM r.rolvaliduntil - now()) / 3600, "
        "shobj_description(r.oid, 'pg_authid') FROM pg_roles r JOIN pg_auth_members m ON m.member = r.oid "
        "WHERE starts_with(r.rolname, %s) AND m.roleid::regrole::text = ANY(%s)",
        sandbox.PREFIX,
        server.roles,
    )
    return [
        {
            "name": name,
            "login": login,
            "hours": float(hours),
            "pid": maker_pid(label),
        }
        for name, login, hours, label in rows
    ]


def maker_pid(label: str | None) -> int | None:
    """The server process that made the role, from its label (None where it names none)."""
    try:
        return int(json.loads((label or "").removeprefix(sandbox.LABEL))["pid"])
    except (ValueError, KeyError, TypeError):
        return None


def owners_of_made_functions(server: Server, database: str) -> set[str]:
    rows = server.query(
        database, "SELECT proowner::regrole::text FROM pg_proc WHERE proname LIKE 'made\\_by\\_seeddump\\_sandbox\\_%%'"
    )
    return {owner for (owner,) in rows}


def own_superuser(server: Server) -> str:
    """A superuser of the test's own. Every restore on the server drops the leftovers of killed restores that its
    connecting role made, and other tests and CI's background runs share this server as its usual superuser: a
    leftover made by this role is left to the restores that connect as it (this test's)."""
    return server.role("admin", "LOGIN SUPERUSER")


def killed_restore(server: Server, dumps_dir: Path, admin_user: str, target: str, *args: str) -> dict[str, object]:
    """``admin_user``'s restoredump of ``target`` killed (SIGKILL) right after its load; the role it left behind,
    once the server process the restore held is gone."""
    env = manage_env(server.alias, dumps_dir, {"DATABASE_URL": database_url(server.alias, target, admin_user)})
    connections.close_all()
    killed = run_bounded([sys.executable, "-c", _KILLED_AFTER_THE_LOAD, *args], cwd=REPO, env=env, timeout=180)
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    [left] = sandboxes(server)
    if left["pid"] is not None:
        wait_for_exit(left["pid"])  # type: ignore[arg-type]  # the server notices the lost client soon, not at once
    return left


@pytest.mark.parametrize("path", ["cold", "in place"])
def test_a_killed_restores_role_is_dropped_by_the_next_restore(
    server: Server, seeded_dump: Path, dumps_dir: Path, path: str
) -> None:
    app, _ = app_dump(server, dumps_dir, MADE_AS_ITSELF)
    target = server.database(app)
    admin_user = own_superuser(server)
    in_place = ["--in-place"] if path == "in place" else []

    left = killed_restore(server, dumps_dir, admin_user, target, *in_place)

    assert left["login"] and 0 < left["hours"] <= 1  # valid for what a restore needs, not half a day
    with superuser(server.alias) as usual:  # another role's restores (the server's usual superuser's) leave it
        assert left["name"] not in sandbox.drop_stale(usual, connections[server.alias].settings_dict)
    assert roles_left(server) == [left["name"]]

    restoredump(server, dumps_dir, admin_user, target, *in_place)

    assert roles_left(server) == []
    assert owners_of_made_functions(server, target) == {app}


def test_what_the_dumps_code_made_as_its_login_goes_to_the_owner_and_the_role_goes(
    server: Server, seeded_dump: Path, dumps_dir: Path
) -> None:
    admin_user = connections[server.alias].settings_dict["USER"]
    app, _ = app_dump(server, dumps_dir, MADE_AS_ITSELF)
    target = server.database(app)

    restoredump(server, dumps_dir, admin_user, target, "--in-place")

    assert owners_of_made_functions(server, target) == {app}
    assert roles_left(server) == []


def test_snapshots_prune_drops_a_killed_restores_role(server: Server, seeded_dump: Path, dumps_dir: Path) -> None:
    app, _ = app_dump(server, dumps_dir, MADE_AS_ITSELF)
    target = server.database(app)
    admin_user = own_superuser(server)
    left = killed_restore(server, dumps_dir, admin_user, target, "--in-place")

    env = {"DATABASE_URL": database_url(server.alias, target, admin_user)}
    pruned = manage("snapshots", "--prune", alias=server.alias, dumps_dir=dumps_dir, env=env)

    assert pruned.returncode == 0, pruned.stderr
    assert f"Dropped {left['name']}" in pruned.stdout.splitlines()
    assert roles_left(server) == []
    assert owners_of_made_functions(server, target) == {app}


def look_alike(server: Server, maker: str | None, owner: str, label: dict[str, object]) -> str:
    """A role shaped and labelled like a throwaway one, made by ``maker`` (None: the superuser)."""
    name = sandbox.PREFIX + os.urandom(6).hex()
    with superuser(server.alias) as admin:
        if maker:
            admin.execute(sql.SQL("SET ROLE {}").format(sql.Identifier(maker)))
        admin.execute(sql.SQL("CREATE ROLE {} LOGIN IN ROLE {}").format(sql.Identifier(name), sql.Identifier(owner)))
        admin.execute(
            sql.SQL("COMMENT ON ROLE {} IS {}").format(
                sql.Identifier(name), sql.Literal(sandbox.LABEL + json.dumps(label))
            )
        )
    server.roles.insert(0, name)  # dropped with the test's roles, before them
    return name


def test_only_seeddumps_own_leftovers_of_finished_processes_are_dropped(
    server: Server, seeded_dump: Path, dumps_dir: Path
) -> None:
    admin_user = connections[server.alias].settings_dict["USER"]
    app = server.role("app", "LOGIN")
    other = server.role("other", "LOGIN CREATEROLE")
    server.execute("postgres", f'GRANT "{app}" TO "{other}" WITH ADMIN OPTION')
    target = server.database(app)
    with superuser(server.alias) as gone:
        (pid, started) = gone.execute(
            "SELECT pid, backend_start FROM pg_stat_activity WHERE pid = pg_backend_pid()"
        ).fetchone()  # type: ignore[misc]
    wait_for_exit(pid)
    dead = {"madeBy": admin_user, "pid": pid, "started": started.isoformat(), "owner": app}
    forged = look_alike(server, other, app, dead)  # another role's, claiming to be ours
    with superuser(server.alias) as running:
        (pid, started) = running.execute(
            "SELECT pid, backend_start FROM pg_stat_activity WHERE pid = pg_backend_pid()"
        ).fetchone()  # type: ignore[misc]
        alive = look_alike(
            server, None, app, {"madeBy": admin_user, "pid": pid, "started": started.isoformat(), "owner": app}
        )

        restoredump(server, dumps_dir, admin_user, target)

        assert {forged, alive} <= set(roles_left(server))
    wait_for_exit(pid)

    env = {"DATABASE_URL": database_url(server.alias, target, admin_user)}
    pruned = manage("snapshots", "--prune", alias=server.alias, dumps_dir=dumps_dir, env=env)

    assert pruned.returncode == 0, pruned.stderr
    assert roles_left(server) == [forged]
