"""A dump's code never runs with more than its owner's rights, in any step.

Dumps written by plain pg_dump (``generatedump``) from objects an app role made, restored over a superuser
connection into a database the app role owns. Each carries a function that tries to get the superuser back
(``SET ROLE NONE``, then ``COPY … TO PROGRAM`` on the database host) and swallows the refusal, so the restore
itself succeeds: the proof is that the program never ran. Each is reached by another step: pg_restore's
COPY (a CHECK constraint, a stored generated column), seeddump's own row count (a forced row-level security
policy), the admin's dump records written after the swap (a trigger) and ``--migrate`` (a trigger on
``django_migrations``). On both servers."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from django.db import connections
from psycopg import sql

from seeddump import postgres, sandbox, snapshots
from tests.conftest import REPO, database_url, manage
from tests.test_identity import Server, app_dump, restoredump, table_owners
from tests.test_identity import server as server_fixture

server = server_fixture  # a fixture of test_identity's, used here by name

pytestmark = pytest.mark.django_db(transaction=True, databases="__all__")


@pytest.fixture
def marker(server: Server) -> Iterator[Path]:
    """The file the dump's program would create on the database host (this machine)."""
    path = Path("/tmp") / f"seeddump-test-dump-code-ran-{server.suffix}"
    yield path
    path.unlink(missing_ok=True)


def escalating_function(marker: Path, name: str = "escalate", returns: str = "boolean", value: str = "true") -> str:
    """An IMMUTABLE plpgsql function (fit for a generated column) that drops the role it was given (``set_config``:
    a function call, allowed where SET is not) and calls a volatile one that runs a program as whoever logged
    in, if that role may."""
    return (
        "CREATE FUNCTION run_program() RETURNS void LANGUAGE plpgsql AS $$ BEGIN "
        f"COPY (SELECT 1) TO PROGRAM 'cat > /dev/null; touch {marker}'; END $$; "
        f"CREATE FUNCTION {name}(int) RETURNS {returns} LANGUAGE plpgsql IMMUTABLE AS $$ BEGIN "
        "PERFORM set_config('role', 'none', false); "  # RESET ROLE would go back to a start-up role
        "PERFORM public.run_program(); "  # pg_restore empties search_path
        f"RETURN {value}; "
        f"EXCEPTION WHEN others THEN RETURN {value}; END $$"
    )


VECTORS = {
    "check constraint (pg_restore's COPY)": lambda marker: [
        escalating_function(marker),
        "CREATE TABLE guarded (id int PRIMARY KEY CHECK (public.escalate(id)))",
        "INSERT INTO guarded SELECT generate_series(1, 3)",
    ],
    "stored generated column (pg_restore's COPY)": lambda marker: [
        escalating_function(marker, returns="int", value="1"),
        "CREATE TABLE generated (id int PRIMARY KEY, g int GENERATED ALWAYS AS (public.escalate(id)) STORED)",
        "INSERT INTO generated (id) SELECT generate_series(1, 3)",
    ],
    "forced row-level security policy (the row count)": lambda marker: [
        escalating_function(marker),
        "CREATE TABLE private_notes (id int PRIMARY KEY)",
        "INSERT INTO private_notes SELECT generate_series(1, 3)",
        "ALTER TABLE private_notes ENABLE ROW LEVEL SECURITY",
        "ALTER TABLE private_notes FORCE ROW LEVEL SECURITY",
        "CREATE POLICY everyone ON private_notes USING (public.escalate(id))",
    ],
    "trigger on the dump records (the admin's records after the swap)": lambda marker: [
        escalating_function(marker),
        "CREATE FUNCTION on_record() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
        "PERFORM public.escalate(1); RETURN NEW; END $$",
        "CREATE TRIGGER watch BEFORE INSERT OR UPDATE ON seeddump_dumprecord FOR EACH ROW EXECUTE FUNCTION on_record()",
    ],
}


def app_source(server: Server, dumps_dir: Path, marker: Path, statements: list[str]) -> tuple[str, str]:
    """``app_dump``, and no marker left by the superuser's own record write in the source (its trigger fired)."""
    made = app_dump(server, dumps_dir, statements)
    marker.unlink(missing_ok=True)
    return made


@pytest.mark.parametrize("vector", list(VECTORS))
@pytest.mark.parametrize("path", ["cold", "in place"])
def test_a_dumps_code_never_gets_the_superuser_back(
    server: Server, seeded_dump: Path, dumps_dir: Path, marker: Path, vector: str, path: str
) -> None:
    admin_user = connections[server.alias].settings_dict["USER"]
    app, _ = app_source(server, dumps_dir, marker, VECTORS[vector](marker))
    target = server.database(app)

    restoredump(server, dumps_dir, admin_user, target, *(["--in-place"] if path == "in place" else []))

    assert not marker.exists(), f"the dump's program ran as a superuser ({vector}, {path})"
    assert table_owners(server, target) == {app}
    assert roles_left(server) == []


def test_migrate_runs_the_dumps_triggers_as_the_owner_at_most(
    server: Server, seeded_dump: Path, dumps_dir: Path, marker: Path
) -> None:
    """The dump lacks a migration the code has (django.contrib.sessions'), and holds a trigger on
    django_migrations: ``--migrate`` applies it before the swap, and the trigger fires there."""
    admin_user = connections[server.alias].settings_dict["USER"]
    app, _ = app_source(
        server,
        dumps_dir,
        marker,
        [
            escalating_function(marker),
            "CREATE FUNCTION on_migration() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
            "PERFORM public.escalate(1); RETURN NEW; END $$",
            "CREATE TRIGGER watch AFTER INSERT ON django_migrations FOR EACH ROW EXECUTE FUNCTION on_migration()",
            "DROP TABLE django_session",
            "DELETE FROM django_migrations WHERE app = 'sessions'",
        ],
    )
    target = server.database(app)

    done = restoredump(server, dumps_dir, admin_user, target, "--migrate")

    assert done["migrated"] is True and done["missingMigrations"] == ["sessions.0001_initial"]
    assert not marker.exists(), "the dump's trigger ran as a superuser during --migrate"
    assert table_owners(server, target) == {app}


def test_without_a_throwaway_login_the_restore_is_refused_unless_trusted(
    server: Server, seeded_dump: Path, dumps_dir: Path
) -> None:
    """A role that may create databases and act as the app, but not create roles: the dump's code would run
    with its rights, so the restore is refused before pg_restore, in one line; --trust restores it."""
    app = server.role("app", "LOGIN")
    deployer = server.role("deployer", "LOGIN CREATEDB")
    server.execute("postgres", f'GRANT "{app}" TO "{deployer}"')
    target = server.database(app)
    server.execute(target, "CREATE TABLE precious (id int)", "INSERT INTO precious VALUES (1)", role=app)

    refused = restoredump(server, dumps_dir, deployer, target, ok=False)

    assert refused.returncode == 1
    [line] = refused.stderr.strip().splitlines()
    assert f"connects as '{deployer}', not as '{app}'" in line
    assert "may not create such a role" in line and "--trust" in line
    assert server.query(target, "SELECT id FROM precious") == [(1,)]

    restoredump(server, dumps_dir, deployer, target, "--trust")
    assert table_owners(server, target) == {app}


def roles_left(server: Server) -> list[str]:
    """Throwaway roles still on the server that this test's restores made (none once each restore is over)."""
    rows = server.query(
        "postgres",
        "SELECT r.rolname FROM pg_roles r JOIN pg_auth_members m ON m.member = r.oid "
        "WHERE starts_with(r.rolname, %s) AND m.roleid::regrole::text = ANY(%s)",
        sandbox.PREFIX,
        server.roles,
    )
    return [name for (name,) in rows]


def planting_statements(marker: Path) -> list[str]:
    """A dump whose code, run by pg_restore as the owner, sets the search_path of every database the owner owns
    (the target among them) to put public before pg_catalog, and ships public.to_regclass(text): a session
    that resolves names by that path and calls to_regclass unqualified runs the program with its own rights."""
    return [
        "CREATE FUNCTION run_program() RETURNS void LANGUAGE plpgsql AS $$ BEGIN "
        f"COPY (SELECT 1) TO PROGRAM 'cat > /dev/null; touch {marker}'; EXCEPTION WHEN others THEN NULL; END $$",
        "CREATE FUNCTION to_regclass(text) RETURNS regclass LANGUAGE plpgsql AS $$ BEGIN "
        "PERFORM public.run_program(); RETURN pg_catalog.to_regclass($1); END $$",
        "CREATE FUNCTION plant(int) RETURNS boolean LANGUAGE plpgsql AS $$ DECLARE d text; BEGIN "
        "FOR d IN SELECT datname FROM pg_catalog.pg_database WHERE pg_catalog.pg_has_role(datdba, 'USAGE') LOOP BEGIN "
        "EXECUTE pg_catalog.format('ALTER DATABASE %I SET search_path = public, pg_catalog', d); "
        "EXCEPTION WHEN others THEN NULL; END; END LOOP; RETURN true; END $$",
        "CREATE TABLE planted (id int PRIMARY KEY CHECK (public.plant(id)))",
        "INSERT INTO planted VALUES (1)",
    ]


@pytest.mark.parametrize("path", ["cold", "in place"])
def test_a_search_path_the_dump_plants_never_reaches_the_superuser(
    server: Server, seeded_dump: Path, dumps_dir: Path, marker: Path, path: str
) -> None:
    """The dump's code may change its database's settings (the owner may); the restored database does not keep
    them, and seeddump's own sessions (the next restoredump, generatedump) resolve names in pg_catalog only."""
    admin_user = connections[server.alias].settings_dict["USER"]
    app, _ = app_source(server, dumps_dir, marker, planting_statements(marker))
    target = server.database(app)
    in_place = ["--in-place"] if path == "in place" else []

    done = restoredump(server, dumps_dir, admin_user, target, *in_place)
    assert server.query(target, "SELECT id FROM planted") == [(1,)]
    settings_of = (
        "SELECT s.setconfig FROM pg_db_role_setting s JOIN pg_database d ON d.oid = s.setdatabase WHERE d.datname = %s"
    )
    assert server.query("postgres", settings_of, target) == [], "the dump's search_path stayed on the restored database"
    if path == "cold":  # the dump's code did set it: on the database the restore replaced, kept for an undo
        kept = done["undo"]["database"]
        assert server.query("postgres", settings_of, kept) == [(["search_path=public, pg_catalog"],)]

    # The setting planted by hand, as if it had stayed: seeddump's sessions still never call the dump's function.
    server.execute("postgres", f'ALTER DATABASE "{target}" SET search_path = public, pg_catalog')
    restoredump(server, dumps_dir, admin_user, target, *in_place)
    env = {"DATABASE_URL": database_url(server.alias, target, admin_user)}
    made = manage("generatedump", "dev", "--allow-empty", alias=server.alias, dumps_dir=dumps_dir, env=env)
    assert made.returncode == 0, made.stderr
    assert not marker.exists(), f"the dump's to_regclass ran as a superuser ({path})"


# --- The pytest plugin's seeded test database and smoketest's database ----------------------------------------
#
# Both restore a dump into a database of their own beside the configured one (owned, as restoredump's would
# be, by the configured database's owner) and migrate a stale dump there: the dump's code runs as the owner at
# most in both steps.

MIGRATION_TRIGGER = [
    "CREATE FUNCTION on_migration() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
    "PERFORM public.escalate(1); RETURN NEW; END $$",
    "CREATE TRIGGER watch AFTER INSERT ON django_migrations FOR EACH ROW EXECUTE FUNCTION on_migration()",
    "DROP TABLE django_session",
    "DELETE FROM django_migrations WHERE app = 'sessions'",
]
STEPS = {
    "pg_restore": lambda marker: VECTORS["check constraint (pg_restore's COPY)"](marker),
    "migrate": lambda marker: [escalating_function(marker), *MIGRATION_TRIGGER],
}


def trigger_on(table: str) -> list[str]:
    return [
        "CREATE FUNCTION on_write() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
        "PERFORM public.escalate(1); RETURN NEW; END $$",
        f"CREATE TRIGGER watch AFTER INSERT ON {table} FOR EACH ROW EXECUTE FUNCTION on_write()",
    ]


# After migrate: smoketest creates its user through the ORM (auth_user), and the web server it starts logs
# that user in (django_session).
SMOKE_STEPS = {
    **STEPS,
    "the smoke-test user": lambda marker: [escalating_function(marker), *trigger_on("auth_user")],
    "the web server": lambda marker: [escalating_function(marker), *trigger_on("django_session")],
}

SEEDED_TEST = """
import pytest
from django.db import connection


@pytest.mark.seeddump
def test_seeded():
    with connection.cursor() as cursor:
        cursor.execute("SELECT count(*) FROM django_migrations WHERE app = 'sessions'")
        assert cursor.fetchone() == (1,)
"""


@pytest.mark.parametrize("step", list(STEPS))
def test_the_pytest_plugins_seeded_database_runs_a_dumps_code_as_the_owner_at_most(
    server: Server,
    seeded_dump: Path,
    dumps_dir: Path,
    marker: Path,
    step: str,
    pytester: pytest.Pytester,
    monkeypatch: pytest.MonkeyPatch,
    settings: Any,
) -> None:
    """A project's test session connecting as a superuser to a database the app owns: the seeded test database
    is restored (and a stale dump migrated) as a throwaway member of the app."""
    admin_user = connections[server.alias].settings_dict["USER"]
    app, _ = app_source(server, dumps_dir, marker, STEPS[step](marker))
    target = server.database(app)
    pytester.makepyfile(test_seeded=SEEDED_TEST)
    pytester.makeini("[pytest]\nDJANGO_SETTINGS_MODULE = project.settings\n")
    monkeypatch.setenv("PYTHONPATH", str(REPO))
    monkeypatch.setenv("DJANGO_SETTINGS_MODULE", "project.settings")
    monkeypatch.setenv("DATABASE_URL", database_url(server.alias, target, admin_user))
    monkeypatch.setenv("SEEDDUMP_DIR", str(dumps_dir))
    monkeypatch.setenv("SEEDDUMP_PG_BIN_DIRS", ",".join(str(p) for p in settings.SEEDDUMP_PG_BIN_DIRS))
    try:
        result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "--create-db", "test_seeded.py")
        result.assert_outcomes(passed=1)
    finally:
        with postgres.connect_maintenance(connections[server.alias].settings_dict) as admin:
            snapshots.drop_all(admin, dumps_dir)
            for (name,) in admin.execute(
                "SELECT datname FROM pg_database WHERE starts_with(datname, %s)", (f"test_{target}",)
            ):
                admin.execute(sql.SQL("DROP DATABASE {} WITH (FORCE)").format(sql.Identifier(name)))
    assert not marker.exists(), f"the dump's code ran as a superuser in the seeded test database's {step}"
    assert roles_left(server) == []


@pytest.mark.parametrize(
    ("step", "overwrite"),
    [
        ("pg_restore", False),
        ("migrate", False),
        ("migrate", True),
        ("the smoke-test user", False),
        ("the web server", False),
    ],
    # --overwrite's pg_restore is restoredump's own
    ids=["pg_restore", "migrate", "migrate --overwrite", "user", "web server"],
)
def test_smoketest_runs_a_dumps_code_as_the_owner_at_most(
    server: Server, seeded_dump: Path, dumps_dir: Path, marker: Path, step: str, overwrite: bool
) -> None:
    """smoketest connecting as a superuser to a database the app owns: its restore (into a database of its own,
    or with --overwrite into the configured one), its migrate, the user it makes and the web server it starts
    run the dump's code as the app at most."""
    admin_user = connections[server.alias].settings_dict["USER"]
    app, _ = app_source(server, dumps_dir, marker, SMOKE_STEPS[step](marker))
    target = server.database(app)
    env = {"DATABASE_URL": database_url(server.alias, target, admin_user)}
    args = [
        *(["--skip-frontend"] if step in STEPS else []),
        "--log-file",
        str(dumps_dir.parent / "smoke.log"),
        *(["--overwrite"] if overwrite else []),
    ]
    done = manage("smoketest", *args, alias=server.alias, dumps_dir=dumps_dir, env=env)

    assert "restore latest dump" in done.stdout and "migrations applied" in done.stdout, done.stderr
    if step not in STEPS:  # the user was made and logged in through the web server, as the app at most
        log = (dumps_dir.parent / "smoke.log").read_text()
        assert "[PASS] backend: create a smoke-test user" in log and "[PASS] backend: log in as a smoke-test" in log
    assert not marker.exists(), f"the dump's code ran as a superuser in smoketest's {step}"
    assert roles_left(server) == []
