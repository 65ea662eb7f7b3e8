"""A project on psycopg2 stays on psycopg2: seeddump's own connections use the driver Django's backend uses.

The demo project runs with psycopg 3 hidden (a ``psycopg`` package first on its path that cannot be imported,
as in a virtualenv where only psycopg2 is installed): Django then takes psycopg2, and so does seeddump. Every
path of a restore goes through it, over a superuser connection into a database an app role owns (the throwaway
login of ``seeddump.sandbox``: its password verifier, its trial login), and a failure is still one line. On both
servers. (tests/test_package.py installs the wheel beside psycopg2 alone: pip brings no psycopg 3.)"""

from __future__ import annotations

from pathlib import Path

import pytest
from django.db import connections

from tests.conftest import database_url, manage, own_name
from tests.test_fastpath import FAST, fast
from tests.test_identity import Server, team_names
from tests.test_identity import server as server_fixture

server = server_fixture  # a fixture of test_identity's, used here by name

pytestmark = pytest.mark.django_db(transaction=True, databases="__all__")

WHICH = (
    "import django; django.setup(); from django.db import connection; from seeddump import driver; "
    "print(connection.Database.__name__, driver.NAME)"
)


@pytest.fixture
def psycopg2_only(tmp_path: Path) -> dict[str, str]:
    """The environment of a process that cannot import psycopg 3."""
    hidden = tmp_path / "hide-psycopg" / "psycopg"
    hidden.mkdir(parents=True)
    (hidden / "__init__.py").write_text('raise ImportError("no psycopg 3 here (tests/test_psycopg2.py)")\n')
    return {"PYTHONPATH": str(hidden.parent)}


def test_every_path_runs_on_psycopg2_when_it_is_the_projects_driver(
    server: Server, seeded_dump: Path, dumps_dir: Path, psycopg2_only: dict[str, str]
) -> None:
    admin_user = connections[server.alias].settings_dict["USER"]
    app = server.role("app", "LOGIN")
    target = server.database(app)

    def run(*args: str, user: str = admin_user, database: str = target, ok: bool = True) -> str:
        env = {**psycopg2_only, "DATABASE_URL": database_url(server.alias, database, user)}
        done = manage(*args, alias=server.alias, dumps_dir=dumps_dir, env=env)
        assert (done.returncode == 0) == ok, done.stdout + done.stderr
        assert "Traceback" not in done.stderr, done.stderr
        return done.stdout + done.stderr

    assert run("shell", "-c", WHICH).split()[-2:] == ["psycopg2", "psycopg2"]
    assert "System check identified no issues" in run("check")

    seeded: list[str] | None = None
    for args in (["--no-snapshot"], [], [], ["--in-place"]):  # cold, caching a snapshot, from it, in place
        run("restoredump", "dev", "--no-input", *args)
        seeded = seeded or team_names(server, target)
        assert seeded and team_names(server, target) == seeded
    assert server.query(target, "SELECT tableowner FROM pg_tables WHERE tablename = 'reality_team'") == [(app,)]
    # In place, public was made again with its comment: else every later dump said COMMENT ON SCHEMA public IS '',
    # which a throwaway member of the owner may not restore into a new database ("must be owner of schema public").
    comment = "SELECT obj_description('public'::regnamespace, 'pg_namespace')"
    assert server.query(target, comment) == [("standard public schema",)]

    server.execute(
        target, "INSERT INTO reality_team (name, description, settings, created_at) VALUES ('mine', '', '{}', now())"
    )
    run("restoredump", "dev", "--no-input")
    assert "mine" not in team_names(server, target)
    run("restoredump", "--undo", "--no-input")
    assert "mine" in team_names(server, target)

    # generatedump of it, and the fast path (no django.setup()) restoring what it made.
    run("generatedump", "dev")
    env = {**psycopg2_only, "DATABASE_URL": database_url(server.alias, target, admin_user)}
    done = fast("dev", "--no-input", "-v", "2", alias=server.alias, dumps_dir=dumps_dir, env=env)
    assert done.returncode == 0 and FAST in done.stdout + done.stderr, done.stdout + done.stderr
    assert "mine" in team_names(server, target)

    # A failure is one line, through psycopg2's errors: a role that may not log in.
    nobody = own_name("nobody", server.suffix)
    refused = run("restoredump", "dev", "--no-input", user=nobody, ok=False)
    [line] = [text for text in refused.strip().splitlines() if text.strip()]
    assert line.startswith("CommandError: Cannot connect to") and nobody in line, line
