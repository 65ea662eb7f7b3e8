"""seeddump on real applications from PyPI at pinned versions (the test extra), projects nobody here wrote:

- ``geo``: GeoDjango's own engine (``django.contrib.gis.db.backends.postgis``) with django-mapbox-baselayer (a
  polygon and two files in MEDIA_ROOT per PMTiles set) and django-cities-xtd (points), on the machine's server
  (the embedded one has no PostGIS);
- ``cms``: Wagtail (about 200 migrations across its applications) with django-debug-toolbar in the development
  settings, whose ``AppConfig.ready()`` sets ``MIGRATION_MODULES["debug_toolbar"] = None``.

Each project's database is made once per module (migrate, the project's seed, ``generatedump --media``) and every
path is taken on it in real processes: restoredump cold, warm, ``--in-place`` and ``--undo``, ``python -m seeddump
restore`` (which must not load Django's apps), the pytest plugin under pytest-django's ``--no-migrations``,
``--create-db``, ``--reuse-db`` and ``-n 2``, and smoketest. After each restore every row of every table (ordered,
geometries as EWKB) and every file of MEDIA_ROOT must be those of the dump.
"""

from __future__ import annotations

import json
import secrets
import shutil
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import psycopg
import pytest
from django.conf import settings as django_settings
from psycopg import sql

from seeddump import postgres, snapshots
from tests.conftest import REPO, files_of, own_name, run_bounded, shell_env, unavailable
from tests.realapps import contents, seeds

pytestmark = [pytest.mark.slow, pytest.mark.timeout(280)]

FAST = "Not loading Django's apps: the code's migrations are as last written down."

Contents = dict[str, list[list[str | None]]]


@dataclass(frozen=True)
class Kind:
    settings: str
    scheme: str  # DATABASE_URL's scheme: which engine django-environ gives
    seed: str
    local_work: tuple[str, ...]  # what a developer changes after restoring (SQL), which a restore takes back


KINDS = {
    "geo": Kind(
        "tests.realapps.geo_settings",
        "postgis",
        seeds.GEO,
        (
            "UPDATE mapbox_baselayer_pmtile SET bbox = ST_GeomFromText('POLYGON((0 0, 1 0, 1 1, 0 0))', 4326)",
            "UPDATE cities_city SET location = ST_SetSRID(ST_MakePoint(0, 0), 4326) WHERE id % 2 = 0",
            "DELETE FROM cities_postalcode WHERE id % 3 = 0",
            "INSERT INTO cities_alternativename (name, language_code, kind, is_preferred, is_short, is_colloquial, "
            "is_historic) VALUES ('Local', 'en', 'name', false, false, false, false)",
        ),
    ),
    "cms": Kind(
        "tests.realapps.cms_settings",
        "postgres",
        seeds.CMS,
        (
            "UPDATE wagtailcore_page SET title = 'Local work' WHERE title LIKE 'Seeded page 1%%'",
            "DELETE FROM wagtailimages_image WHERE title = 'Seeded image 2'",
            "DELETE FROM auth_user WHERE username LIKE 'editor%%' AND id % 2 = 0",
        ),
    ),
}


@dataclass
class Project:
    kind: Kind
    folder: Path  # the project's working folder: its tests, pytest.ini
    database: str
    media_root: Path
    dumps: Path
    seeded: Contents  # every row as dumped
    seeded_media: dict[str, bytes]  # MEDIA_ROOT as dumped
    dump: Path

    @property
    def env(self) -> dict[str, str]:
        """A developer's shell in the project: its settings, its database, its folders (no test session's)."""
        system = django_settings.DATABASES["system"]
        url = f"{self.kind.scheme}://{system['USER']}@{system['HOST']}:{system['PORT'] or 5432}/{self.database}"
        return shell_env(
            PYTHONPATH=str(REPO),
            DJANGO_SETTINGS_MODULE=self.kind.settings,
            DATABASE_URL=url,
            MEDIA_ROOT=str(self.media_root),
            SEEDDUMP_DIR=str(self.dumps),
            SEEDDUMP_PG_BIN_DIRS=",".join(str(p) for p in django_settings.SEEDDUMP_PG_BIN_DIRS),
            SEEDDUMP_BACKGROUND="false",  # the restore finishes (snapshot cached) before the command returns
            SEEDDUMP_LOCK_TIMEOUT="60",
            PYTHONUNBUFFERED="1",
        )

    def run(self, *argv: str, timeout: float = 180) -> subprocess.CompletedProcess:
        return run_bounded([sys.executable, *argv], cwd=self.folder, env=self.env, timeout=timeout)

    def manage(self, *args: str) -> subprocess.CompletedProcess:
        """``python manage.py ARGS`` (``python -m django`` with the project's settings), which must succeed."""
        result = self.run("-m", "django", *args)
        assert result.returncode == 0, f"{' '.join(args)} exited {result.returncode}:\n{result.stdout}\n{result.stderr}"
        return result

    def connect(self) -> psycopg.Connection:
        conn = postgres.connect(django_settings.DATABASES["system"], self.database)
        conn.execute("SET search_path TO public")  # seeddump's own connections have none; the project's SQL has
        return conn

    def contents(self) -> Contents:
        with self.connect() as conn, conn.cursor() as cursor:
            return contents.read(cursor)

    def work_locally(self) -> tuple[Contents, dict[str, bytes]]:
        """Changes rows and files as a developer would after a restore; returns what the database and MEDIA_ROOT
        then hold (which differ from the dump's)."""
        with self.connect() as conn:
            for statement in self.kind.local_work:
                conn.execute(statement.replace("%%", "%"))
        files = sorted(path for path in self.media_root.rglob("*") if path.is_file())
        files[0].unlink()
        (self.media_root / "local-upload.txt").write_bytes(secrets.token_bytes(16))
        local, local_media = self.contents(), files_of(self.media_root)
        assert local != self.seeded and local_media != self.seeded_media
        return local, local_media

    def assert_holds_the_dump(self) -> None:
        restored = self.contents()
        assert contents.counts(restored) == contents.counts(self.seeded)
        for table, rows in self.seeded.items():
            assert restored[table] == rows, f"{table} differs from the dump"
        assert files_of(self.media_root) == self.seeded_media


def _drop_everything_of(admin: psycopg.Connection, name: str, dumps: Path) -> None:
    """Every database made for this project: its own, pytest-django's and the plugin's (named after it), and
    seeddump's copies of it (their label names it), never another run's."""
    snapshots.drop_all(admin, dumps)
    for (database,) in admin.execute(
        "SELECT datname FROM pg_database WHERE strpos(datname, %s) > 0 "
        "OR strpos(coalesce(shobj_description(oid, 'pg_database'), ''), %s) > 0",
        (name, f'"{name}"'),
    ).fetchall():
        admin.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(database)))


@pytest.fixture(scope="module", params=sorted(KINDS))
def project(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Project]:
    """The project's database, made, migrated, seeded and dumped once for the module's tests."""
    if django_settings.SYSTEM_UNAVAILABLE:
        unavailable(f"system PostgreSQL not reachable: {django_settings.SYSTEM_UNAVAILABLE}")
    kind = KINDS[request.param]
    folder = tmp_path_factory.mktemp(f"realapps-{request.param}")
    name = own_name(f"realapps_{request.param}")
    system = django_settings.DATABASES["system"]
    made = Project(kind, folder, name, folder / "media", folder / "seeds" / "dumps", {}, {}, Path())
    made.media_root.mkdir()
    made.dumps.mkdir(parents=True)  # there before migrate, which writes the code's migrations down in it
    with postgres.connect_maintenance(system) as admin:
        admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    try:
        made.manage("migrate", "-v0")
        made.manage("shell", "-c", kind.seed)
        dumped = made.manage("generatedump", "dev", "--media")
        made.dump = Path(dumped.stdout.strip().splitlines()[-1])
        made.seeded, made.seeded_media = made.contents(), files_of(made.media_root)
        assert made.dump.is_file() and len(made.seeded_media) >= 6, dumped.stdout
        yield made
    finally:
        with postgres.connect_maintenance(system) as admin:
            _drop_everything_of(admin, name, made.dumps)
        shutil.rmtree(folder, ignore_errors=True)


def test_the_dump_holds_the_applications_data(project: Project) -> None:
    """What the other tests compare against is the real applications' data, and the dump says so."""
    metadata = json.loads(project.dump.with_name(project.dump.name.replace(".dump", ".metadata.json")).read_text())
    seeded_counts = contents.counts(project.seeded)
    recorded = {table.split(".")[-1]: count for table, count in metadata["recordCounts"].items()}
    assert {table: recorded[table] for table in seeded_counts} == seeded_counts
    with project.connect() as conn:
        (applied,) = conn.execute("SELECT count(*) FROM django_migrations").fetchone()
    if project.kind.scheme == "postgis":
        assert [extension["name"] for extension in metadata["extensions"]] == ["postgis"]
        polygons = [value for row in project.seeded["mapbox_baselayer_pmtile"] for value in row if value]
        points = [value for row in project.seeded["cities_city"] for value in row if value]
        assert len(seeded_counts) > 20 and seeded_counts["cities_city"] == 75
        assert len([value for value in polygons if value.startswith("0103000020e6100000")]) == 12  # SRID 4326
        assert len([value for value in points if value.startswith("0101000020e6100000")]) == 75
    else:
        assert applied > 200, applied  # why Wagtail: the migrations of a large application
        assert seeded_counts["wagtailimages_image"] == 6


def test_cold_and_warm_restores_and_the_undo(project: Project) -> None:
    local, local_media = project.work_locally()
    cold = project.manage("restoredump", "dev", "--no-input")
    assert f"Restored {project.dump.name} into '{project.database}':" in cold.stdout, cold.stdout
    project.assert_holds_the_dump()

    undone = project.manage("restoredump", "--undo", "--no-input")
    assert f"Put back '{project.database}' as it was before {project.dump.name} replaced it" in undone.stdout
    assert project.contents() == local and files_of(project.media_root) == local_media

    warm = project.manage("restoredump", "dev", "--no-input")
    assert f"Restored {project.dump.name} into '{project.database}' from its cached snapshot:" in warm.stdout, (
        warm.stdout
    )
    project.assert_holds_the_dump()


def test_in_place_and_its_undo(project: Project) -> None:
    local, local_media = project.work_locally()
    in_place = project.manage("restoredump", "dev", "--in-place", "--no-input")
    assert f"Restored {project.dump.name} into '{project.database}' in place:" in in_place.stdout, in_place.stdout
    project.assert_holds_the_dump()
    project.manage("restoredump", "--undo", "--no-input")
    assert project.contents() == local and files_of(project.media_root) == local_media


def test_the_fast_path_restores_without_loading_the_apps(project: Project) -> None:
    project.work_locally()
    result = project.run("-m", "seeddump", "restore", "dev", "--no-input", "-v", "2")
    assert result.returncode == 0, result.stdout + result.stderr
    assert FAST in result.stderr, result.stderr  # django-debug-toolbar's ready() does not turn it off
    assert f"Restored {project.dump.name} into '{project.database}'" in result.stdout
    project.assert_holds_the_dump()


# The project's own tests (README, "Seeded test databases for pytest"): the seeded ones compare every row with
# the dump's, read through Django's connection; the unmarked one sees pytest-django's empty database.
PROJECT_TESTS = """
import json
from pathlib import Path

import pytest
from django.db import connection

from tests.realapps import contents

EXPECTED = json.loads(Path(__file__).with_name("expected.json").read_text())


@pytest.mark.seeddump
@pytest.mark.parametrize("n", range(3))  # enough tests for both xdist workers
def test_every_row_is_the_dumps(n):
    with connection.cursor() as cursor:
        found = contents.read(cursor)
    assert contents.counts(found) == contents.counts(EXPECTED)
    assert found == EXPECTED
    print("SEEDED", connection.settings_dict["NAME"])


@pytest.mark.seeddump
@pytest.mark.django_db(transaction=True)
def test_a_transactional_test_sees_them_too():
    with connection.cursor() as cursor:
        assert contents.read(cursor) == EXPECTED


@pytest.mark.django_db
def test_the_others_keep_an_empty_database():
    table = TABLE
    with connection.cursor() as cursor:
        cursor.execute(f'SELECT count(*) FROM "{table}"')
        assert cursor.fetchone() == (0,)
"""


def write_project_tests(project: Project) -> None:
    table = "cities_city" if project.kind.scheme == "postgis" else "wagtailimages_image"
    (project.folder / "test_seeded.py").write_text(PROJECT_TESTS.replace("TABLE", repr(table)))
    (project.folder / "expected.json").write_text(json.dumps(project.seeded))
    (project.folder / "pytest.ini").write_text(f"[pytest]\nDJANGO_SETTINGS_MODULE = {project.kind.settings}\n")


def project_pytest(project: Project, *args: str) -> str:
    """The project's own test session, under xdist without migrations; it must pass every test."""
    argv = ("-m", "pytest", "-p", "no:cacheprovider", "test_seeded.py", "--no-migrations", "-n", "2", *args)
    result = project.run(*argv, timeout=240)
    output = result.stdout + result.stderr
    assert result.returncode == 0 and "passed" in result.stdout and "failed" not in result.stdout, output
    return output


def seeded_lines(project: Project, output: str, how: str) -> list[str]:
    """The workers whose seeded database was made (``how``) as the session's closing lines say."""
    return [w for w in ("gw0", "gw1") if f"seeddump: test_{project.database}_{w}_seeded_dev {how}" in output]


def test_the_projects_seeded_pytest_tests(project: Project) -> None:
    write_project_tests(project)
    created = project_pytest(project, "--create-db")  # dropped at the end, as pytest-django drops its own
    assert "5 passed" in created and seeded_lines(project, created, "from the dev dump (") == ["gw0", "gw1"], created

    project_pytest(project, "--reuse-db")
    # Reused where it still holds the dump's rows; a worker whose last seeded test was the transactional one left
    # it flushed, and it is made again.
    reused = project_pytest(project, "--reuse-db")
    assert "5 passed" in reused and seeded_lines(project, reused, "kept from the last session ("), reused


def test_reuse_db_with_create_db_keeps_the_seeded_databases_as_pytest_django_keeps_its_own(project: Project) -> None:
    write_project_tests(project)
    project_pytest(project, "--reuse-db", "--create-db", "-k", "not transactional")
    reused = project_pytest(project, "--reuse-db", "-k", "not transactional")
    assert seeded_lines(project, reused, "kept from the last session ("), reused


def test_smoketest(project: Project) -> None:
    result = project.run("-m", "django", "smoketest", "--json", timeout=240)
    report = json.loads(result.stdout)
    failed = [check for check in report["checks"] if check["status"] == "fail"]
    assert result.returncode == 0 and report["passed"], failed or result.stderr
    passed = {check["name"] for check in report["checks"] if check["status"] == "pass"}
    pages = [*json.loads(project.run("-c", SMOKE_PAGES).stdout)]
    for page in pages:
        assert any(page in name for name in passed), (page, sorted(passed))


SMOKE_PAGES = """
import json, django
django.setup()
from django.conf import settings
print(json.dumps([*settings.SEEDDUMP_SMOKE_PAGES, *settings.SEEDDUMP_SMOKE_LOGIN_PAGES,
                  *getattr(settings, "SEEDDUMP_SMOKE_API_URLS", [])]))
"""
