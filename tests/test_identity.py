"""A restored database is the target's own: owner, privileges, settings and locale, and only copies we made.

Each test makes real roles on the server under test (an app role owning the target database, a
non-superuser with CREATEDB, a hostile role with CREATEDB, a role without CREATEDB) and its own target
database, runs restoredump as a user does (a new process with DATABASE_URL naming the role), and drops
what it made. The superuser is the alias's own user (postgres).
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg
import pytest
from django.db import connections
from psycopg import sql

from seeddump import databases, dumpfiles, finishing, postgres, snapshots, undo
from seeddump.exceptions import SeeddumpError
from tests.conftest import as_the_project, database_names, database_url, manage, own_name, wait_for_exit

pytestmark = pytest.mark.django_db(transaction=True, databases="__all__")


def superuser(alias: str, dbname: str = "postgres") -> psycopg.Connection:
    return as_the_project(postgres.connect(connections[alias].settings_dict, dbname))


def connect_as(alias: str, role: str, dbname: str) -> psycopg.Connection:
    return as_the_project(postgres.connect({**connections[alias].settings_dict, "USER": role}, dbname))


@dataclass
class Server:
    """Roles and databases one test makes on the alias's server, named for the run (``own_name``); all dropped
    afterwards."""

    alias: str
    suffix: str = field(default_factory=lambda: secrets.token_hex(3))
    roles: list[str] = field(default_factory=list)

    def role(self, kind: str, options: str = "LOGIN") -> str:
        name = own_name(kind, self.suffix)
        with superuser(self.alias) as admin:
            admin.execute(sql.SQL(f"CREATE ROLE {{}} {options}").format(sql.Identifier(name)))
        self.roles.append(name)
        return name

    def target_name(self, last: str) -> str:
        """The name of one of the test's target databases (made by ``database`` or by a restore)."""
        return own_name("target", f"{self.suffix}_{last}")

    def database(self, owner: str, options: str = "") -> str:
        name = self.target_name(secrets.token_hex(2))
        with superuser(self.alias) as admin:
            query = sql.SQL(f"CREATE DATABASE {{}} OWNER {{}} {options}")
            admin.execute(query.format(sql.Identifier(name), sql.Identifier(owner)))
        return name

    def execute(self, dbname: str, *statements: str, role: str | None = None) -> None:
        with connect_as(self.alias, role, dbname) if role else superuser(self.alias, dbname) as conn:
            for statement in statements:
                conn.execute(statement)  # type: ignore[arg-type]

    def query(self, dbname: str, statement: str, *params: Any, role: str | None = None) -> list[tuple[Any, ...]]:
        with connect_as(self.alias, role, dbname) if role else superuser(self.alias, dbname) as conn:
            return conn.execute(statement, params).fetchall()  # type: ignore[arg-type]

    def drop_everything(self) -> None:
        """Drops the test's targets, what seeddump left of them, and every database its roles own; then the roles."""
        with superuser(self.alias) as admin:
            targets = [d.name for d in databases.with_prefix(admin, self.target_name(""), sizes=False)]
            names = set(targets)
            for target in targets:
                for prefix in (finishing.scratch_prefix(target), finishing.retired_prefix(target), undo.prefix(target)):
                    names.update(d.name for d in databases.with_prefix(admin, prefix, sizes=False))
            owned = admin.execute(
                "SELECT datname FROM pg_database d JOIN pg_roles r ON r.oid = d.datdba WHERE r.rolname = ANY(%s)",
                (self.roles,),
            ).fetchall()
            names.update(name for (name,) in owned)
            for name in sorted(names):
                if databases.exists(admin, name):  # a template cannot be dropped
                    admin.execute(sql.SQL("ALTER DATABASE {} IS_TEMPLATE false").format(sql.Identifier(name)))
                admin.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))
            for role in self.roles:
                admin.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(sql.Identifier(role)))


def app_dump(server: Server, dumps_dir: Path, statements: list[str], role_options: str = "LOGIN") -> tuple[str, str]:
    """An app role owning a database restored from the seeded dump, with ``statements`` run as the app on top,
    and generatedump's dump of it made over a superuser connection: (the app role, the database)."""
    admin_user = connections[server.alias].settings_dict["USER"]
    app = server.role("app", role_options)
    source = server.database(app)
    restoredump(server, dumps_dir, admin_user, source)
    server.execute(source, *statements, role=app)
    env = {"DATABASE_URL": database_url(server.alias, source, admin_user)}
    made = manage("generatedump", "dev", "--allow-empty", alias=server.alias, dumps_dir=dumps_dir, env=env)
    assert made.returncode == 0, made.stderr
    return app, source


@pytest.fixture
def server(alias: str) -> Iterator[Server]:
    made = Server(alias)
    yield made
    made.drop_everything()


def restoredump(
    server: Server, dumps_dir: Path, role: str, target: str, *args: str, background: bool = False, ok: bool = True
) -> Any:
    """``manage.py restoredump dev --json`` connecting as ``role`` to ``target``; the JSON document (waiting
    for the background process), or the process when ``ok`` is False."""
    env = {"DATABASE_URL": database_url(server.alias, target, role), "SEEDDUMP_BACKGROUND": str(background).lower()}
    result = manage(
        "restoredump", "dev", "--no-input", "--json", *args, alias=server.alias, dumps_dir=dumps_dir, env=env
    )
    if not ok:
        return result
    assert result.returncode == 0, result.stderr
    document = json.loads(result.stdout)
    if document["background"]:
        wait_for_exit(document["background"]["pid"])
    return document


def table_owners(server: Server, target: str) -> set[str]:
    rows = server.query(target, "SELECT DISTINCT tableowner FROM pg_tables WHERE schemaname = 'public'")
    return {owner for (owner,) in rows}


def team_names(server: Server, target: str, role: str | None = None) -> list[str]:
    return [name for (name,) in server.query(target, "SELECT name FROM reality_team ORDER BY id", role=role)]


def identity(server: Server, target: str) -> dict[str, Any]:
    """What a user sees of a database apart from its rows."""
    with superuser(server.alias) as admin:
        found = databases.identity_of(admin, target)
    assert found is not None
    return {
        "owner": found.owner,
        "acl": sorted((g.grantee or "PUBLIC", g.privilege, g.grantable) for g in found.acl or ()),
        "settings": sorted((s.role or "", s.name, s.value) for s in found.settings),
        "limit": found.connection_limit,
        "comment": found.comment,
        "shape": found.shape,
    }


# --- Restore as the owner ---------------------------------------------------------------------------------


def test_superuser_restore_gives_everything_to_the_owner_and_later_restores_as_the_owner_work(
    server: Server, seeded_dump: Path, dumps_dir: Path
) -> None:
    admin_user = connections[server.alias].settings_dict["USER"]
    app = server.role("app", "LOGIN CREATEDB")
    target = server.database(app)

    for expected_source in ("pg_restore", "ready copy"):  # as the superuser: cold, then from the ready copy
        done = restoredump(server, dumps_dir, admin_user, target, background=True)
        assert done["source"] == expected_source
        assert table_owners(server, target) == {app}
        assert identity(server, target)["owner"] == app
        assert team_names(server, target, role=app)  # the app can read its tables

    for expected_source in ("pg_restore", "ready copy"):  # as the app: the superuser's copies are not its own
        done = restoredump(server, dumps_dir, app, target, background=True)
        assert done["source"] == expected_source
        assert table_owners(server, target) == {app}
        assert team_names(server, target, role=app)


def test_a_snapshot_never_serves_a_target_with_another_owner(
    server: Server, seeded_dump: Path, dumps_dir: Path
) -> None:
    admin_user = connections[server.alias].settings_dict["USER"]
    first_app, second_app = server.role("app", "LOGIN"), server.role("other", "LOGIN")
    first, second = server.database(first_app), server.database(second_app)

    assert restoredump(server, dumps_dir, admin_user, first)["source"] == "pg_restore"
    done = restoredump(server, dumps_dir, admin_user, second)

    assert done["source"] == "pg_restore"  # the first snapshot's tables belong to the first app
    assert table_owners(server, second) == {second_app}
    assert team_names(server, second, role=second_app)
    assert restoredump(server, dumps_dir, admin_user, first)["source"] == "snapshot"
    assert table_owners(server, first) == {first_app}


@pytest.mark.parametrize("how", ["SEEDDUMP_OWNER", "assume_role"])
def test_the_owner_can_be_named(server: Server, seeded_dump: Path, dumps_dir: Path, how: str) -> None:
    """A superuser restoring a database that does not exist yet: by default it would be the superuser's."""
    admin_user = connections[server.alias].settings_dict["USER"]
    app = server.role("app", "LOGIN")
    target = server.target_name("new")
    url = database_url(server.alias, target, admin_user)
    env = {"SEEDDUMP_OWNER": app} if how == "SEEDDUMP_OWNER" else {}
    if how == "assume_role":  # Django 5.2's OPTIONS["assume_role"], from the URL's query (django-environ)
        url += f"?assume_role={app}"
    result = manage(
        "restoredump", "dev", "--no-input", alias=server.alias, dumps_dir=dumps_dir, env={**env, "DATABASE_URL": url}
    )
    assert result.returncode == 0, result.stderr
    assert identity(server, target)["owner"] == app
    assert table_owners(server, target) == {app}


def test_a_role_that_may_not_act_as_the_owner_is_refused(server: Server, seeded_dump: Path, dumps_dir: Path) -> None:
    app, creator = server.role("app", "LOGIN"), server.role("creator", "LOGIN CREATEDB")
    target = server.database(app)
    server.execute(target, "CREATE TABLE precious (id int)", "INSERT INTO precious VALUES (1)")

    result = restoredump(server, dumps_dir, creator, target, ok=False)

    assert result.returncode == 1
    [line] = result.stderr.strip().splitlines()
    assert f"connects as '{creator}', which may not act as '{app}'" in line
    assert f'GRANT "{app}" TO "{creator}"' in line
    assert server.query(target, "SELECT id FROM precious") == [(1,)]


def test_the_dumps_sql_runs_with_the_owners_rights(
    server: Server, dumps_dir: Path, tmp_path: Path, cleanup_databases: list[tuple[str, str]]
) -> None:
    """A dump holding a materialized view whose refresh runs COPY … TO PROGRAM, and a SECURITY DEFINER
    function: restored by a superuser into an app's database, neither gets the superuser's rights."""
    admin_user = connections[server.alias].settings_dict["USER"]
    app = server.role("app", "LOGIN")
    source = server.database(admin_user)
    marker = Path("/tmp") / f"seeddump-test-program-ran-{server.suffix}"
    server.execute(
        source,
        "CREATE TABLE reality_team (id int PRIMARY KEY, name text)",
        "INSERT INTO reality_team VALUES (1, 'genuine')",
        "CREATE FUNCTION elevate() RETURNS text LANGUAGE sql SECURITY DEFINER AS $$ SELECT current_user::text $$",
    )
    env = {"DATABASE_URL": database_url(server.alias, source, admin_user)}
    assert manage("generatedump", "dev", alias=server.alias, dumps_dir=dumps_dir, env=env).returncode == 0
    target = server.database(app)
    restoredump(server, dumps_dir, admin_user, target)
    [(owner, definer)] = server.query(
        target, "SELECT proowner::regrole::text, prosecdef FROM pg_proc WHERE proname = 'elevate'"
    )
    assert (owner, definer) == (app, True)  # runs with the app's rights, not the superuser's
    assert server.query(target, "SELECT elevate()", role=app) == [(app,)]

    server.execute(
        source,
        "CREATE FUNCTION run_program() RETURNS int LANGUAGE plpgsql AS $$ BEGIN "
        f"COPY (SELECT 1) TO PROGRAM 'cat > /dev/null; touch {marker}'; RETURN 1; END $$",
        "CREATE MATERIALIZED VIEW reality_program AS SELECT run_program() AS ran",
    )
    marker.unlink()  # creating the view ran the program once, as the superuser who made it
    assert manage("generatedump", "dev", alias=server.alias, dumps_dir=dumps_dir, env=env).returncode == 0
    before = team_names(server, target)

    result = restoredump(server, dumps_dir, admin_user, target, ok=False)

    assert result.returncode == 1
    [line] = result.stderr.strip().splitlines()
    assert f"pg_restore as '{app}' failed:" in line and "COPY to or from an external program" in line
    assert not marker.exists()
    assert team_names(server, target) == before


def test_a_comment_on_the_public_schema_comes_with_the_dump(server: Server, seeded_dump: Path, dumps_dir: Path) -> None:
    """pg_dump writes ``COMMENT ON SCHEMA public`` when an app changed the comment, and only the schema's owner
    may run it (the database's owner, as ``pg_database_owner``). Restored by a superuser into the app's
    database, the comment comes too, and ``public`` is the database owner's as before: a dump of the restored
    database restores into another app's database in turn."""
    admin_user = connections[server.alias].settings_dict["USER"]
    public = (
        "SELECT nspowner::regrole::text, obj_description(oid, 'pg_namespace') "
        "FROM pg_namespace WHERE nspname = 'public'"
    )
    app, _ = app_dump(server, dumps_dir, ["COMMENT ON SCHEMA public IS 'the app''s tables'"])
    target = server.database(app)

    assert restoredump(server, dumps_dir, admin_user, target)["source"] == "pg_restore"

    assert server.query(target, public) == [("pg_database_owner", "the app's tables")]
    assert table_owners(server, target) == {app}
    server.execute(target, "CREATE TABLE public.made_later (id int)", role=app)  # its next migration can
    env = {"DATABASE_URL": database_url(server.alias, target, admin_user)}
    assert (
        manage("generatedump", "dev", "--allow-empty", alias=server.alias, dumps_dir=dumps_dir, env=env).returncode == 0
    )
    other = server.role("other", "LOGIN")
    second = server.database(other)
    assert restoredump(server, dumps_dir, admin_user, second)["source"] == "pg_restore"
    assert server.query(second, public) == [("pg_database_owner", "the app's tables")]
    assert table_owners(server, second) == {other}


# --- The database's own settings -------------------------------------------------------------------------


def test_the_targets_identity_survives_every_restore_path(server: Server, seeded_dump: Path, dumps_dir: Path) -> None:
    admin_user = connections[server.alias].settings_dict["USER"]
    app, reader = server.role("app", "LOGIN CREATEDB"), server.role("reader", "LOGIN")
    target = server.database(app, "CONNECTION LIMIT 20")
    statements = [
        f'REVOKE CONNECT, TEMPORARY ON DATABASE "{target}" FROM PUBLIC',
        f'GRANT CONNECT ON DATABASE "{target}" TO "{app}"',
        f'GRANT CONNECT, TEMPORARY ON DATABASE "{target}" TO "{reader}" WITH GRANT OPTION',
        f"COMMENT ON DATABASE \"{target}\" IS 'the team''s dev database'",
        f"ALTER DATABASE \"{target}\" SET timezone = 'Pacific/Auckland'",
        f'ALTER DATABASE "{target}" SET search_path = "$user", public, \'we ird\'',
        f'ALTER ROLE "{reader}" IN DATABASE "{target}" SET work_mem = \'8MB\'',
    ]
    server.execute("postgres", *statements)
    before = identity(server, target)
    assert before["settings"] == [
        ("", "TimeZone", "Pacific/Auckland"),
        ("", "search_path", '"$user", public, "we ird"'),
        (reader, "work_mem", "8MB"),
    ]

    paths = [
        ("pg_restore", admin_user, True, {}),  # cold; the background caches the snapshot and a ready copy
        ("ready copy", admin_user, True, {}),
        ("snapshot", admin_user, False, {"SEEDDUMP_READY_COPIES": "false"}),
        ("pg_restore", app, True, {}),  # as the app role itself
        ("ready copy", app, True, {}),
    ]
    for expected, role, background, settings in paths:
        env = {
            "DATABASE_URL": database_url(server.alias, target, role),
            "SEEDDUMP_BACKGROUND": str(background).lower(),
            **settings,
        }
        result = manage("restoredump", "dev", "--no-input", "--json", alias=server.alias, dumps_dir=dumps_dir, env=env)
        assert result.returncode == 0, result.stderr
        document = json.loads(result.stdout)
        assert document["source"] == expected
        after = identity(server, target)
        if role == admin_user:
            assert after == before, expected
            assert document["skippedSettings"] == []
        else:  # the app may not set another role's defaults: everything else is kept, and it says what to run
            assert {**after, "settings": before["settings"]} == before, expected
            assert after["settings"] == before["settings"][:2]
            statement = f'ALTER ROLE "{reader}" IN DATABASE "{target}" SET "work_mem" = \'8MB\''
            assert document["skippedSettings"] == [statement]
            assert f"run as a superuser: {statement}" in result.stderr
            server.execute("postgres", statement)
        if document["background"]:
            wait_for_exit(document["background"]["pid"])
    # What a user relies on: the settings apply, and only the granted roles may connect.
    [(zone, path)] = server.query(
        target, "SELECT current_setting('TimeZone'), current_setting('search_path')", role=app
    )
    assert (zone, path) == ("Pacific/Auckland", '"$user", public, "we ird"')
    outsider = server.role("outsider", "LOGIN")
    with pytest.raises(SeeddumpError, match="permission denied for database"):
        connect_as(server.alias, outsider, target).close()


def test_a_new_target_belongs_to_the_connecting_role_with_default_privileges(
    server: Server, seeded_dump: Path, dumps_dir: Path
) -> None:
    app = server.role("app", "LOGIN CREATEDB")
    target = server.target_name("new")

    restoredump(server, dumps_dir, app, target)

    found = identity(server, target)
    assert found["owner"] == app and found["acl"] == [] and found["settings"] == [] and found["comment"] is None
    assert table_owners(server, target) == {app}


def test_the_locale_provider_of_the_target_is_kept(server: Server, seeded_dump: Path, dumps_dir: Path) -> None:
    """ICU where the server has it (Debian's PostgreSQL 15); the embedded PostgreSQL 18 is built without ICU,
    so there the builtin provider (PostgreSQL 17+) stands in: the same code carries both."""
    admin_user = connections[server.alias].settings_dict["USER"]
    app = server.role("app", "LOGIN")
    if connections[server.alias].pg_version >= 170000:
        provider, locale, options = "b", "C.UTF-8", "LOCALE_PROVIDER builtin BUILTIN_LOCALE 'C.UTF-8'"
    else:
        provider, locale, options = "i", "de-DE", "LOCALE_PROVIDER icu ICU_LOCALE 'de-DE'"
    target = server.database(app, f"TEMPLATE template0 {options} LOCALE 'C.UTF-8'")
    before = identity(server, target)["shape"]
    assert (before.provider, before.locale) == (provider, locale)

    restoredump(server, dumps_dir, admin_user, target, "--wait", background=True)
    assert identity(server, target)["shape"] == before
    assert restoredump(server, dumps_dir, admin_user, target)["source"] == "snapshot"
    assert identity(server, target)["shape"] == before


# --- Only copies we made ------------------------------------------------------------------------------


def plant(server: Server, role: str, name: str, label: dict[str, Any]) -> None:
    """As ``role``: a database with tampered rows and a SECURITY DEFINER function, named and labelled as ours."""
    server.execute("postgres", f'CREATE DATABASE "{name}"', role=role)
    server.execute(
        name,
        "CREATE TABLE reality_team (id int PRIMARY KEY, name text)",
        "INSERT INTO reality_team VALUES (1, 'tampered')",
        "CREATE FUNCTION backdoor() RETURNS int LANGUAGE sql SECURITY DEFINER AS 'SELECT 1'",
        role=role,
    )
    server.execute(
        "postgres",
        f"""COMMENT ON DATABASE "{name}" IS '{json.dumps(label)}'""",
        f'ALTER DATABASE "{name}" WITH ALLOW_CONNECTIONS false',
        role=role,
    )


def test_copies_made_by_another_role_are_never_used_nor_dropped(
    server: Server, seeded_dump: Path, dumps_dir: Path
) -> None:
    admin_user = connections[server.alias].settings_dict["USER"]
    app, hostile = server.role("app", "LOGIN"), server.role("hostile", "LOGIN CREATEDB")
    target = server.database(app)
    metadata = dumpfiles.read_metadata(seeded_dump)
    with superuser(server.alias) as admin:
        key = databases.Identity(app, databases.shape_of(admin, target)).cache_key(admin_user)  # type: ignore[arg-type]
    label = {
        "checksum": metadata.checksum,
        "dumpFile": metadata.dump_file,
        "environment": "dev",
        "created": "2030-01-01T00:00:00Z",
        "folder": str(dumps_dir.resolve()),
        "key": key,
    }
    for_target = {**label, "database": target}
    planted = {
        snapshots.snapshot_name(metadata.checksum, key, dumps_dir): {**label, "seeddump": "snapshot"},
        snapshots.ready_name(target, metadata.checksum, key, dumps_dir): {
            **label,
            "seeddump": "ready",
            "database": target,
        },
        snapshots.empty_name(target, key, dumps_dir): {**for_target, "seeddump": "empty"},
        finishing.scratch_prefix(target) + "beef0000": {},
        finishing.retired_prefix(target) + "beef0000": {},
    }
    for name, values in planted.items():
        plant(server, hostile, name, values)

    done = restoredump(server, dumps_dir, admin_user, target)

    assert done["source"] == "pg_restore"
    assert "tampered" not in team_names(server, target)
    assert table_owners(server, target) == {app}
    assert server.query(target, "SELECT count(*) FROM pg_proc WHERE proname = 'backdoor'") == [(0,)]
    assert set(planted) <= database_names(server.alias)  # left alone
    listing = manage(
        "snapshots", alias=server.alias, dumps_dir=dumps_dir, env={"DATABASE_URL": database_url(server.alias, target)}
    )
    # The three under this folder's cache names are counted as another role's copies of this project.
    assert f"Another role also keeps this project's copies on this server ('{hostile}': 3;" in listing.stderr


# --- Sessions, privileges and the in-place restore ----------------------------------------------------------


def test_a_session_that_cannot_be_ended_is_named_and_the_ready_copy_kept(
    server: Server, seeded_dump: Path, dumps_dir: Path
) -> None:
    app = server.role("app", "LOGIN CREATEDB")
    target = server.database(app)
    restoredump(server, dumps_dir, app, target, background=True)
    ready = [
        name for name in database_names(server.alias) if name.startswith(snapshots.ready_prefix(target, dumps_dir))
    ]
    assert len(ready) == 1
    before = team_names(server, target)

    with postgres.connect(connections[server.alias].settings_dict, target) as held:
        held.execute("SET application_name = 'psql'")
        pid = held.info.backend_pid
        result = restoredump(server, dumps_dir, app, target, background=True, ok=False)

    assert result.returncode == 1
    [line] = result.stderr.strip().splitlines()
    assert f"pid {pid}, user {connections[server.alias].settings_dict['USER']}" in line
    assert "pg_terminate_backend" in line and "nothing was changed" in line
    assert set(ready) <= database_names(server.alias)
    assert team_names(server, target) == before
    assert restoredump(server, dumps_dir, app, target, background=True)["source"] == "ready copy"


def test_a_role_without_createdb_is_told_and_can_restore_in_place(
    server: Server, seeded_dump: Path, dumps_dir: Path
) -> None:
    app = server.role("app", "LOGIN")
    target = server.database(app)
    server.execute(target, "CREATE TABLE precious (id int)", "INSERT INTO precious VALUES (1)", role=app)

    refused = restoredump(server, dumps_dir, app, target, ok=False)
    assert refused.returncode == 1
    [line] = refused.stderr.strip().splitlines()
    assert f"Role '{app}' may not create databases (it lacks CREATEDB)" in line and "--in-place" in line
    assert server.query(target, "SELECT id FROM precious") == [(1,)]

    done = restoredump(server, dumps_dir, app, target, "--in-place")
    assert done["source"] == "in place"
    teams = dumpfiles.read_metadata(seeded_dump).record_counts["reality_team"]
    assert len(team_names(server, target, role=app)) == teams
    assert table_owners(server, target) == {app}
    assert server.query(target, "SELECT to_regclass('precious') IS NULL") == [(True,)]  # nothing else is left
    assert identity(server, target)["owner"] == app


def test_an_in_place_restore_that_fails_its_check_changes_nothing(
    server: Server, seeded_dump: Path, dumps_dir: Path
) -> None:
    app = server.role("app", "LOGIN")
    target = server.database(app)
    server.execute(target, "CREATE TABLE precious (id int)", "INSERT INTO precious VALUES (1)", role=app)
    metadata_file = dumpfiles.metadata_path(seeded_dump)
    document = json.loads(metadata_file.read_text())
    document["recordCounts"]["reality_team"] += 1
    metadata_file.write_text(json.dumps(document))
    # The developer's runserver, connected: a restore that changed nothing leaves it connected.
    login = postgres.connect_kwargs({**connections[server.alias].settings_dict, "USER": app}, target)
    runserver = psycopg.connect(**{**login, "application_name": "runserver"}, autocommit=True)

    result = restoredump(server, dumps_dir, app, target, "--in-place", ok=False)

    assert result.returncode == 1
    [line] = result.stderr.strip().splitlines()
    assert "reality_team has" in line and "The database was left unchanged" in line
    with runserver:
        assert runserver.execute("SELECT id FROM precious").fetchall() == [(1,)]
    assert server.query(target, "SELECT id FROM precious") == [(1,)]
    assert server.query(target, "SELECT to_regclass('reality_team') IS NULL") == [(True,)]
