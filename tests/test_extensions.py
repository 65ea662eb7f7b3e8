"""GeoDjango's PostGIS (and any extension only a superuser may create) in a database an app role owns: restored
over a superuser connection, from a template as the app role, or refused in one line that says who can."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from django.conf import settings as django_settings
from django.db import connections
from psycopg import sql

from seeddump import dumpfiles
from tests.conftest import database_url, files_of, manage, own_name, unavailable
from tests.test_identity import Server, restoredump, superuser
from tests.test_identity import server as server_fixture
from tests.test_interruptions import stopped_restore

pytestmark = pytest.mark.django_db(transaction=True, databases="__all__")
server = server_fixture

PLACES = [
    "CREATE TABLE places (id int PRIMARY KEY, name text, location geometry(Point, 4326))",
    "INSERT INTO places VALUES (1, 'Brussels', ST_SetSRID(ST_MakePoint(4.35, 50.85), 4326)), "
    "(2, 'Lisbon', ST_SetSRID(ST_MakePoint(-9.14, 38.72), 4326))",
]


@pytest.fixture
def postgis(alias: str) -> Iterator[None]:
    """The machine's server with Debian's postgresql-<major>-postgis-3 (the embedded server has no PostGIS)."""
    if alias != "system":
        pytest.skip("the embedded PostgreSQL ships no PostGIS; the machine's server has it (.ci/run installs it)")
    if django_settings.SYSTEM_UNAVAILABLE:
        pytest.skip(f"system PostgreSQL not reachable: {django_settings.SYSTEM_UNAVAILABLE}")
    with superuser(alias) as admin:
        found = admin.execute("SELECT 1 FROM pg_available_extensions WHERE name = 'postgis'").fetchone()
    if not found:
        unavailable("PostGIS is not installed for the machine's PostgreSQL (Debian: postgresql-<major>-postgis-3)")
    yield


def geo_dump(server: Server, dumps_dir: Path, media_root: Path | None = None) -> tuple[str, str]:
    """An app role (CREATEDB, no superuser) owning a database with PostGIS (made by the superuser, as an
    administrator would) and a table of points; generatedump's dump of it (with the files of ``media_root``,
    when given). (the app role, the database)"""
    app = server.role("app", "LOGIN CREATEDB")
    source = server.database(app)
    server.execute(source, "CREATE EXTENSION postgis")
    server.execute(source, *PLACES, role=app)
    env = {"DATABASE_URL": database_url(server.alias, source, app)}
    media = ["--media"] if media_root is not None else []
    if media_root is not None:
        env["MEDIA_ROOT"] = str(media_root)
    made = manage("generatedump", "dev", *media, alias=server.alias, dumps_dir=dumps_dir, env=env)
    assert made.returncode == 0, made.stderr
    return app, source


def places(server: Server, database: str) -> list[tuple[str, str]]:
    return server.query(database, "SELECT name, ST_AsText(location) FROM places ORDER BY id")


EXPECTED = [("Brussels", "POINT(4.35 50.85)"), ("Lisbon", "POINT(-9.14 38.72)")]


@pytest.mark.parametrize("alias", ["system"])
@pytest.mark.usefixtures("postgis")
def test_over_a_superuser_connection_the_extension_is_made_by_seeddump(
    alias: str, server: Server, dumps_dir: Path
) -> None:
    app, _ = geo_dump(server, dumps_dir)
    admin_user = connections[alias].settings_dict["USER"]
    target = server.database(app)
    for source in ("pg_restore", "snapshot"):  # cold, then from the cache
        assert restoredump(server, dumps_dir, admin_user, target)["source"] == source
        assert places(server, target) == EXPECTED
    # The tables are the app's; the extension is the superuser's, made from the server's files.
    assert server.query(target, "SELECT tableowner FROM pg_tables WHERE tablename = 'places'") == [(app,)]
    assert server.query(target, "SELECT extowner::regrole::text FROM pg_extension WHERE extname = 'postgis'") == [
        (admin_user,)
    ]


@pytest.mark.parametrize("alias", ["system"])
@pytest.mark.usefixtures("postgis")
def test_as_the_app_role_a_template_holds_it_or_one_line_says_who_can(
    alias: str, server: Server, dumps_dir: Path
) -> None:
    app, _ = geo_dump(server, dumps_dir)
    target = server.database(app)
    server.execute(target, "CREATE TABLE mine (id int)", role=app)

    # No superuser, no template: refused before pg_restore, the target as it was.
    refused = restoredump(server, dumps_dir, app, target, ok=False)
    assert refused.returncode == 1
    line = refused.stderr.strip().splitlines()[-1]
    assert "The dump needs the extension postgis, which only a superuser may create on this server" in line
    assert "SEEDDUMP_TEMPLATE" in line and "nothing was changed" in line and "Traceback" not in refused.stderr
    assert "restore with --in-place, which keeps it" in line
    in_place = restoredump(server, dumps_dir, app, target, "--in-place", ok=False)
    assert in_place.returncode == 1
    [line] = in_place.stderr.strip().splitlines()
    assert f"have an administrator create it in '{target}' (CREATE EXTENSION postgis)" in line, line
    assert "nothing was changed" in line
    assert server.query(target, "SELECT to_regclass('mine') IS NOT NULL") == [(True,)]

    # The template_postgis habit: an administrator makes a template that holds it once.
    template = own_name("template_postgis")
    with superuser(alias) as admin:
        admin.execute(sql.SQL("CREATE DATABASE {} OWNER {}").format(sql.Identifier(template), sql.Identifier(app)))
    server.execute(template, "CREATE EXTENSION postgis")
    server.execute("postgres", f'ALTER DATABASE "{template}" IS_TEMPLATE true')
    env = {
        "DATABASE_URL": database_url(alias, target, app),
        "SEEDDUMP_BACKGROUND": "false",
        "SEEDDUMP_TEMPLATE": template,
    }
    done = manage("restoredump", "dev", "--no-input", alias=alias, dumps_dir=dumps_dir, env=env)
    assert done.returncode == 0, done.stderr
    assert places(server, target) == EXPECTED


@pytest.mark.parametrize("alias", ["system"])
@pytest.mark.usefixtures("postgis")
def test_an_extension_that_cannot_be_made_is_refused_before_the_media_are_unpacked(
    alias: str, server: Server, dumps_dir: Path, tmp_path: Path
) -> None:
    """As the app role, no template: the refusal comes before a file of the dump's media is written (once it
    came after they were unpacked, seconds later), and MEDIA_ROOT and its folder are as they were."""
    source_media = tmp_path / "source-media"
    (source_media / "maps").mkdir(parents=True)
    (source_media / "maps" / "brussels.txt").write_text("a map")
    app, _ = geo_dump(server, dumps_dir, media_root=source_media)
    target = server.database(app)
    mine = tmp_path / "media"
    mine.mkdir()
    (mine / "notes.txt").write_text("my notes")
    before = sorted(path.name for path in tmp_path.iterdir())

    env = {"DATABASE_URL": database_url(alias, target, app), "SEEDDUMP_MEDIA": "true", "MEDIA_ROOT": str(mine)}
    refused = manage("restoredump", "dev", "--no-input", "-v", "2", alias=alias, dumps_dir=dumps_dir, env=env)

    assert refused.returncode == 1
    assert "The dump needs the extension postgis" in refused.stderr.strip().splitlines()[-1]
    assert "Unpacking" not in refused.stdout + refused.stderr
    assert files_of(mine) == {"notes.txt": b"my notes"}
    assert sorted(path.name for path in tmp_path.iterdir()) == before


@pytest.mark.parametrize("alias", ["system"])
@pytest.mark.usefixtures("postgis")
def test_an_extension_the_project_did_not_name_is_never_made_for_a_dump(
    alias: str, server: Server, dumps_dir: Path
) -> None:
    """A teammate's dump asking for dblink (only a superuser may create it, and its install script would run
    as seeddump's role) is refused, even over a superuser connection; named in SEEDDUMP_EXTENSIONS, it is made."""
    app = server.role("app", "LOGIN CREATEDB")
    source = server.database(app)
    server.execute(source, "CREATE EXTENSION dblink")
    server.execute(source, "CREATE TABLE notes (id int)", "INSERT INTO notes VALUES (1)", role=app)
    made = manage(
        "generatedump", "dev", alias=alias, dumps_dir=dumps_dir, env={"DATABASE_URL": database_url(alias, source, app)}
    )
    assert made.returncode == 0, made.stderr
    admin_user = connections[alias].settings_dict["USER"]
    target = server.database(app)

    refused = restoredump(server, dumps_dir, admin_user, target, ok=False)
    assert refused.returncode == 1
    assert "The dump asks for the extension dblink, which only a superuser may create" in refused.stderr
    assert "SEEDDUMP_EXTENSIONS" in refused.stderr and "Traceback" not in refused.stderr
    assert server.query(target, "SELECT count(*) FROM pg_extension WHERE extname = 'dblink'") == [(0,)]

    env = {
        "DATABASE_URL": database_url(alias, target, admin_user),
        "SEEDDUMP_BACKGROUND": "false",
        "SEEDDUMP_EXTENSIONS": "dblink",
    }
    done = manage("restoredump", "dev", "--no-input", alias=alias, dumps_dir=dumps_dir, env=env)
    assert done.returncode == 0, done.stderr
    assert server.query(target, "SELECT count(*) FROM notes") == [(1,)]


@pytest.mark.parametrize("alias", ["system"])
@pytest.mark.usefixtures("postgis")
def test_in_place_the_extension_is_kept_and_only_seeddump_makes_it(alias: str, server: Server, dumps_dir: Path) -> None:
    """In place the dump runs as the app role, which may not create PostGIS: the target's own PostGIS is kept
    through the emptying (the app role restores into it twice), or, over a superuser connection, seeddump makes
    it first; a failed restore takes away the PostGIS seeddump made."""
    app, _ = geo_dump(server, dumps_dir)
    admin_user = connections[alias].settings_dict["USER"]

    # As the app role, into a database where an administrator made PostGIS (with a row of their own in
    # spatial_ref_sys, which the dump does not carry) and the app made a table the dump does not have.
    target = server.database(app)
    server.execute(target, "CREATE EXTENSION postgis", "INSERT INTO spatial_ref_sys (srid) VALUES (990001)")
    server.execute(target, "CREATE TABLE mine (id int)", "CREATE FUNCTION mine_f() RETURNS int RETURN 1", role=app)
    for _ in range(2):  # the second time, public holds the restored tables beside PostGIS
        assert restoredump(server, dumps_dir, app, target, "--in-place")["source"] == "in place"
        assert places(server, target) == EXPECTED
    assert server.query(target, "SELECT to_regclass('mine') IS NULL, to_regprocedure('mine_f()') IS NULL") == [
        (True, True)
    ]
    assert server.query(target, "SELECT extowner::regrole::text FROM pg_extension WHERE extname = 'postgis'") == [
        (admin_user,)
    ]
    assert server.query(target, "SELECT tableowner FROM pg_tables WHERE tablename = 'places'") == [(app,)]
    # The administrator's table, which the app role may not change: their row stays.
    assert server.query(target, "SELECT count(*) FROM spatial_ref_sys WHERE srid = 990001") == [(1,)]
    # What seeddump cannot empty beside PostGIS (a conversion) fails the restore, which changes nothing.
    server.execute(
        target,
        "CREATE EXTENSION hstore",
        "CREATE CONVERSION mine_conv FOR 'UTF8' TO 'LATIN1' FROM utf8_to_iso8859_1",
        role=app,
    )
    refused = restoredump(server, dumps_dir, app, target, "--in-place", ok=False)
    [line] = refused.stderr.strip().splitlines()
    assert "the schema public holds the extension the dump needs and also mine_conv" in line, line
    assert "rolled back, leaving it unchanged" in line
    assert server.query(target, "SELECT count(*) FROM pg_extension WHERE extname = 'hstore'") == [(1,)]
    server.execute(target, "DROP CONVERSION mine_conv", role=app)
    # Over a superuser connection the rows a user added go, and the dump's own (none) come back; another
    # extension in PostGIS's schema goes.
    assert restoredump(server, dumps_dir, admin_user, target, "--in-place")["source"] == "in place"
    assert server.query(target, "SELECT count(*) FROM spatial_ref_sys WHERE srid = 990001") == [(0,)]
    assert server.query(target, "SELECT count(*) FROM pg_extension WHERE extname = 'hstore'") == [(0,)]
    assert places(server, target) == EXPECTED

    # Over a superuser connection, into a database without PostGIS: seeddump makes it from the server's files.
    bare = server.database(app)
    assert restoredump(server, dumps_dir, admin_user, bare, "--in-place")["source"] == "in place"
    assert places(server, bare) == EXPECTED
    assert server.query(bare, "SELECT extowner::regrole::text FROM pg_extension WHERE extname = 'postgis'") == [
        (admin_user,)
    ]

    # A restore that fails its check leaves the database as it was: the PostGIS seeddump made goes again.
    other = server.database(app)
    server.execute(other, "CREATE TABLE precious (id int)", "INSERT INTO precious VALUES (1)", role=app)
    metadata = dumpfiles.metadata_path(dumpfiles.resolve_latest(dumps_dir, "dev"))
    document = json.loads(metadata.read_text())
    document["recordCounts"]["places"] += 1
    metadata.write_text(json.dumps(document))
    failed = restoredump(server, dumps_dir, admin_user, other, "--in-place", ok=False)
    assert failed.returncode == 1 and "The database was left unchanged" in failed.stderr
    assert server.query(other, "SELECT id FROM precious") == [(1,)]
    assert server.query(other, "SELECT count(*) FROM pg_extension WHERE extname = 'postgis'") == [(0,)]


@pytest.mark.parametrize("alias", ["system"])
@pytest.mark.usefixtures("postgis")
def test_an_interruption_after_the_in_place_commit_keeps_the_extension_seeddump_made(
    alias: str, server: Server, dumps_dir: Path
) -> None:
    """SIGTERM right after psql committed the in-place transaction, into a database without PostGIS, which
    seeddump made for it: the restored tables need PostGIS, so it stays, and the line says the target holds
    the dump, interrupted (once, what undid its own work dropped it whatever the load had done)."""
    app, _ = geo_dump(server, dumps_dir)
    admin_user = connections[alias].settings_dict["USER"]
    target = server.database(app)

    env = {"DATABASE_URL": database_url(alias, target, admin_user)}
    stopped = stopped_restore(alias, dumps_dir, "the in-place commit", "SIGTERM", "--in-place", env=env)

    assert stopped.returncode == 3, stopped.stderr
    [line] = stopped.stderr.strip().splitlines()
    assert "now holds" in line and "(interrupted)" in line, line
    assert server.query(target, "SELECT count(*) FROM pg_extension WHERE extname = 'postgis'") == [(1,)]
    assert places(server, target) == EXPECTED


@pytest.mark.parametrize("alias", ["system"])
@pytest.mark.usefixtures("postgis")
def test_an_extension_comes_back_at_the_version_the_dump_recorded(alias: str, server: Server, dumps_dir: Path) -> None:
    """hstore 1.6 (the server offers 1.4 to 1.8, 1.8 by default) comes back as 1.6, cold and in place."""
    app = server.role("app", "LOGIN CREATEDB")
    source = server.database(app)
    server.execute(source, "CREATE EXTENSION hstore VERSION '1.6'", role=app)
    server.execute(source, "CREATE TABLE tags (id int, tags hstore)", "INSERT INTO tags VALUES (1, 'a=>b')", role=app)
    env = {"DATABASE_URL": database_url(alias, source, app)}
    assert manage("generatedump", "dev", alias=alias, dumps_dir=dumps_dir, env=env).returncode == 0
    version = "SELECT extversion FROM pg_extension WHERE extname = 'hstore'"
    for args in ((), ("--in-place",)):
        target = server.database(app)
        assert restoredump(server, dumps_dir, app, target, *args)["source"] in ("pg_restore", "in place")
        assert server.query(target, version) == [("1.6",)]
        assert server.query(target, "SELECT tags -> 'a' FROM tags") == [("b",)]
