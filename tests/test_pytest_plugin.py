"""The pytest plugin: a project's test session, in a subprocess (pytester), whose marked tests see the dump."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from django.db import connections
from psycopg import sql

from seeddump import postgres, snapshots, testdatabases
from tests.conftest import REPO, as_the_project, copy_dump, database_names, database_url, own_name, run_command


def inner_test_db(alias: str) -> str:
    """pytest-django's test database of the inner session on the alias's server: named for this run of the suite,
    so that two runs on one server at once (CI's core runs beside the whole suite) never share it, and the next
    run drops it (and the seeded databases named after it) if this one is killed."""
    return f"test_{own_name('plugin', alias)}"


pytestmark = pytest.mark.django_db(transaction=True, databases="__all__")

INNER_TESTS = """
import os

import pytest
from django.db import connection
from project.reality.models import RealityNode, Team

EXPECTED = int(os.environ["EXPECTED_NODES"])


@pytest.mark.seeddump
def test_marked_sees_the_seeded_rows():
    print("DB", connection.settings_dict["NAME"], "NODES", RealityNode.objects.count())
    assert RealityNode.objects.count() == EXPECTED


@pytest.mark.django_db
def test_unmarked_keeps_an_empty_database():
    print("DB", connection.settings_dict["NAME"])
    assert Team.objects.count() == 0


def test_the_fixture_gives_the_seeded_rows_and_rolls_back(seeded_db):
    assert RealityNode.objects.count() == EXPECTED
    RealityNode.objects.filter(parent__isnull=False).delete()


@pytest.mark.seeddump
@pytest.mark.django_db(transaction=True)
def test_transactional_sees_the_seed_and_flushes_it():
    assert RealityNode.objects.count() == EXPECTED


@pytest.mark.seeddump
def test_after_a_flush_the_seed_is_back():
    assert RealityNode.objects.count() == EXPECTED


def test_without_the_database_needs_nothing():
    assert True
"""


@pytest.fixture
def inner(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, alias: str, seeded_dumps, tmp_path: Path, settings
) -> Iterator[tuple[pytest.Pytester, Path]]:
    """A project test suite that uses the plugin, against a database named for this test on the alias's server."""
    dumps = tmp_path / "inner-dumps"
    copy_dump(seeded_dumps[alias], dumps)
    pytester.makepyfile(test_inner=INNER_TESTS)
    pytester.makeini("[pytest]\nDJANGO_SETTINGS_MODULE = project.settings\n")
    monkeypatch.setenv("PYTHONPATH", str(REPO))
    monkeypatch.setenv("DJANGO_SETTINGS_MODULE", "project.settings")  # not this session's tests.settings
    monkeypatch.setenv("DATABASE_URL", database_url(alias, inner_test_db(alias).removeprefix("test_")))
    monkeypatch.setenv("SEEDDUMP_DIR", str(dumps))
    monkeypatch.setenv("SEEDDUMP_PG_BIN_DIRS", ",".join(str(p) for p in settings.SEEDDUMP_PG_BIN_DIRS))
    monkeypatch.setenv("EXPECTED_NODES", "3000")
    yield pytester, dumps
    with postgres.connect_maintenance(connections[alias].settings_dict) as admin:
        snapshots.drop_all(admin, dumps)
        for (name,) in admin.execute(
            "SELECT datname FROM pg_database WHERE starts_with(datname, %s)", (inner_test_db(alias),)
        ):
            admin.execute(sql.SQL("DROP DATABASE {} WITH (FORCE)").format(sql.Identifier(name)))


def run_inner(pytester: pytest.Pytester, *args: str) -> pytest.RunResult:
    return pytester.runpytest_subprocess("--seeddump-env", "dev", "-p", "no:cacheprovider", "-s", *args)


def test_marked_tests_see_the_seed_and_the_others_an_empty_database(inner, alias: str) -> None:
    pytester, _ = inner
    result = run_inner(pytester, "--create-db")
    result.assert_outcomes(passed=6)
    result.stdout.fnmatch_lines([f"*DB {inner_test_db(alias)}_seeded_dev NODES 3000*"])
    result.stdout.fnmatch_lines([f"*DB {inner_test_db(alias)}"])
    result.stdout.fnmatch_lines([f"seeddump: {inner_test_db(alias)}_seeded_dev from the dev dump *"])
    # Without --reuse-db the seeded database is dropped with the session, as pytest-django drops its own.
    assert f"{inner_test_db(alias)}_seeded_dev" not in database_names(alias)


def test_no_migrations_as_projects_set_it(inner, alias: str) -> None:
    """pytest-django's --no-migrations (in many projects' addopts) replaces MIGRATION_MODULES with an object that
    is no dict: the empty database is made without migrations, and the seeded tests still see a dump that fits
    the code's migrations (the apps' own modules), with no note that it is stale."""
    pytester, _ = inner
    pytester.makeini("[pytest]\nDJANGO_SETTINGS_MODULE = project.settings\naddopts = --no-migrations\n")
    result = run_inner(pytester, "--create-db")
    result.assert_outcomes(passed=6)
    result.stdout.fnmatch_lines([f"*DB {inner_test_db(alias)}_seeded_dev NODES 3000*"])
    assert "stale" not in result.stdout.str()


def test_session_wide_seeding_stays_available(inner, alias: str) -> None:
    pytester, _ = inner
    pytester.makepyfile(
        test_all="""
        import pytest
        from project.reality.models import Team

        @pytest.mark.django_db
        def test_unmarked_sees_the_seed_too():
            assert Team.objects.count() == 2
        """
    )
    result = run_inner(pytester, "test_all.py", "--seeddump-all")
    result.assert_outcomes(passed=1)


@pytest.mark.parametrize("alias", ["default"])
def test_django_testcase_classes_keep_their_own_database(inner, alias: str) -> None:
    pytester, _ = inner
    pytester.makepyfile(
        test_classes="""
        from django.test import TestCase
        from project.reality.models import Team

        class EmptyDatabaseTests(TestCase):
            def test_empty(self):
                self.assertEqual(Team.objects.count(), 0)
        """
    )
    # Session-wide seeding leaves unittest-style Django tests on pytest-django's empty database...
    run_inner(pytester, "test_classes.py", "--seeddump-all").assert_outcomes(passed=1)

    # ... and marking one says in one line that the marker needs a pytest-style test.
    pytester.makepyfile(
        test_marked_class="""
        import pytest
        from django.test import TestCase

        @pytest.mark.seeddump
        class SeededTests(TestCase):
            def test_seeded(self):
                pass
        """
    )
    result = run_inner(pytester, "test_marked_class.py")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    assert "seeddump: test_marked_class.py::SeededTests::test_seeded is a unittest TestCase" in result.stderr.str()


def _seeded(alias: str) -> str:
    return f"{inner_test_db(alias)}_seeded_dev"


def test_reuse_db_trusts_only_a_database_that_still_holds_the_seed(inner, alias: str, monkeypatch, settings) -> None:
    pytester, dumps = inner
    # Sessions without the transactional test: one whose seeded tests end with a flush leaves the seeded
    # database emptied, and the next session rebuilds it (below: the label no longer describes the data).
    unflushed = ("-k", "not transactional")
    run_inner(pytester, "--reuse-db", *unflushed).assert_outcomes(passed=5, deselected=1)
    assert _seeded(alias) in database_names(alias)
    result = run_inner(pytester, "--reuse-db", *unflushed)
    result.assert_outcomes(passed=5, deselected=1)
    result.stdout.fnmatch_lines([f"seeddump: {inner_test_db(alias)}_seeded_dev kept from the last session*"])

    # Emptied behind the plugin's back (a flush, a crashed session): the label no longer describes the data.
    with as_the_project(postgres.connect(connections[alias].settings_dict, _seeded(alias))) as conn:
        conn.execute("TRUNCATE reality_node CASCADE")
    result = run_inner(pytester, "--reuse-db")
    result.assert_outcomes(passed=6)
    result.stdout.fnmatch_lines([f"seeddump: {inner_test_db(alias)}_seeded_dev from the dev dump *"])

    # pytest-django's own database is never the seeded one: a plain --reuse-db session sees it empty.
    pytester.makepyfile(
        test_plain="""
        import pytest
        from project.reality.models import Team

        @pytest.mark.django_db
        def test_empty():
            assert Team.objects.count() == 0
        """
    )
    plain = pytester.runpytest_subprocess("-p", "no:cacheprovider", "-p", "no:seeddump", "--reuse-db", "test_plain.py")
    plain.assert_outcomes(passed=1)

    # A new dump with one team fewer: the reused seeded database is rebuilt from it.
    settings.SEEDDUMP_DIR = dumps
    run_command("restoredump", "dev", database=alias, interactive=False)
    from project.reality.models import Team

    Team.objects.using(alias).filter(pk=2).delete()
    settings.SEEDDUMP_VERSION = "changed"
    run_command("generatedump", "dev", database=alias)
    monkeypatch.setenv("EXPECTED_NODES", "1500")
    run_inner(pytester, "test_inner.py", "--reuse-db").assert_outcomes(passed=6)


@pytest.mark.parametrize("alias", ["default"])
def test_reuse_db_with_create_db_rebuilds_the_seeded_database_and_keeps_it(inner, alias: str) -> None:
    """As pytest-django treats its own test database: --create-db rebuilds it at the start of the session,
    --reuse-db keeps it at the end; the next --reuse-db session uses it."""
    pytester, _ = inner
    one = ("test_inner.py", "-k", "test_marked_sees")
    run_inner(pytester, "--reuse-db", *one).assert_outcomes(passed=1, deselected=5)

    recreated = run_inner(pytester, "--reuse-db", "--create-db", *one)
    recreated.assert_outcomes(passed=1, deselected=5)
    recreated.stdout.fnmatch_lines([f"seeddump: {_seeded(alias)} from the dev dump *"])  # though it held the seed
    assert _seeded(alias) in database_names(alias)

    reused = run_inner(pytester, "--reuse-db", *one)
    reused.assert_outcomes(passed=1, deselected=5)
    reused.stdout.fnmatch_lines([f"seeddump: {_seeded(alias)} kept from the last session*"])


@pytest.mark.parametrize("alias", ["default"])
def test_a_dump_with_media_is_not_said_to_be_restored_with_no_media(inner, alias: str, media_dumps) -> None:
    """Nobody passed --no-media: a seeded test database simply never gets the dump's files. Said with -v only."""
    pytester, dumps = inner
    for path in dumps.iterdir():
        path.unlink()
    copy_dump(media_dumps[alias].path, dumps)
    one = ("test_inner.py", "-k", "test_marked_sees")

    quiet = run_inner(pytester, *one)
    quiet.assert_outcomes(passed=1, deselected=5)
    output = quiet.stdout.str() + quiet.stderr.str()
    assert "--no-media" not in output, output
    assert not [line for line in output.splitlines() if line.startswith("seeddump") and "media" in line], output

    verbose = run_inner(pytester, "-v", *one)
    verbose.assert_outcomes(passed=1, deselected=5)
    output = verbose.stdout.str()
    assert "--no-media" not in output, output
    verbose.stdout.fnmatch_lines(
        [
            "seeddump: the dev dump's media (* file(s), *) are not restored for the tests: a seeded test database "
            "gets the dump's rows, never its files."
        ]
    )


@pytest.mark.parametrize("alias", ["default"])
def test_xdist_workers_copy_one_snapshot(inner, alias: str) -> None:
    pytester, _ = inner
    result = run_inner(pytester, "-n", "2", "--create-db")
    result.assert_outcomes(passed=6)
    made = [line for line in result.stdout.lines if line.startswith(f"seeddump: {inner_test_db('default')}_gw")]
    assert {line.split()[1] for line in made} == {
        f"{inner_test_db('default')}_gw0_seeded_dev",
        f"{inner_test_db('default')}_gw1_seeded_dev",
    }
    # One worker ran pg_restore (and cached the snapshot); the other waited and copied the snapshot, as
    # did a worker rebuilding its database after the transactional test's flush.
    assert sum("(pg_restore," in line for line in made) == 1, made
    assert all("(pg_restore," in line or "(a copy of the cached snapshot," in line for line in made), made


SEEDED, UNSEEDED = 4, 2  # of INNER_TESTS


@pytest.mark.parametrize("workers", [(), ("-n", "2")], ids=["one", "xdist"])
def test_without_a_dump_the_seeded_tests_skip_and_every_other_test_runs(
    inner, alias: str, workers: tuple[str, ...]
) -> None:
    """A fresh clone has no dumps (they are git-ignored): its test suite must still run."""
    pytester, dumps = inner
    for path in dumps.iterdir():
        path.unlink()
    for configured in (("--seeddump-env", "dev"), ()):  # named on the command line, or the default
        result = pytester.runpytest_subprocess("-p", "no:cacheprovider", *configured, *workers, "test_inner.py")
        result.assert_outcomes(passed=UNSEEDED, skipped=SEEDED)
        output = result.stdout.str() + result.stderr.str()
        line = "seeddump: the seeded tests did not run: There is no dev dump in"
        assert output.count(line) == 1, output  # said once at the end, not once per test or per worker
        assert "Make one with: python manage.py generatedump dev (or set SEEDDUMP_STORAGE" in output
        assert "Traceback" not in output and "INTERNALERROR" not in output

    # For CI: --seeddump-require makes them fail, each with the line alone; the others still run.
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "--seeddump-require", *workers, "test_inner.py")
    result.assert_outcomes(passed=UNSEEDED, errors=SEEDED)  # in their set-up, where the seeded database is made
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    output = result.stdout.str()
    assert "Traceback" not in output and "INTERNALERROR" not in output and "def test_" not in output


@pytest.mark.parametrize("alias", ["default"])
@pytest.mark.parametrize("workers", [(), ("-n", "2")], ids=["one", "xdist"])
def test_with_a_shared_storage_the_session_pulls_the_dump_once(
    inner, alias: str, workers: tuple[str, ...], tmp_path: Path, settings
) -> None:
    from django.conf import global_settings

    from seeddump import shared

    pytester, dumps = inner
    folder = tmp_path / "shared"
    storage = {"BACKEND": "django.core.files.storage.FileSystemStorage", "OPTIONS": {"location": str(folder)}}
    settings.STORAGES = {**settings.STORAGES, "dumps": storage}
    settings.SEEDDUMP_STORAGE = "dumps"
    latest = dumps / "dev-seeded-latest.dump"
    shared.push(latest.resolve(), progress=lambda line: None)
    for path in dumps.iterdir():
        path.unlink()
    pytester.makepyfile(
        inner_settings=f"""
        from django.conf import global_settings
        from project.settings import *  # noqa: F403

        STORAGES = {{**global_settings.STORAGES, "dumps": {storage!r}}}
        SEEDDUMP_STORAGE = "dumps"
        """
    )
    assert global_settings.STORAGES  # the inner settings build on Django's default STORAGES

    result = run_inner(pytester, "--ds", "inner_settings", "--create-db", *workers, "test_inner.py")
    result.assert_outcomes(passed=UNSEEDED + SEEDED)
    output = result.stdout.str()
    assert output.count("seeddump: Downloading dev-seeded-") == 1, output  # once, by the controller under xdist
    assert latest.is_symlink()


@pytest.mark.parametrize("alias", ["default"])
def test_marked_tests_run_with_the_database_tests_before_the_transactional_ones(inner, alias: str) -> None:
    """Marked only (no django_db of their own), they still sort as pytest-django sorts database tests, so no
    seeded test runs after a transactional test's flush and costs a rebuild."""
    pytester, _ = inner
    result = run_inner(pytester, "--create-db", "-v", "test_inner.py")
    result.assert_outcomes(passed=6)
    ran = [line.split("::")[1].split()[0] for line in result.stdout.lines if "::test_" in line and "PASSED" in line]
    assert ran.index("test_after_a_flush_the_seed_is_back") < ran.index(
        "test_transactional_sees_the_seed_and_flushes_it"
    )
    assert ran[-1] == "test_without_the_database_needs_nothing"
    built = [line for line in result.stdout.lines if line.startswith(f"seeddump: {inner_test_db(alias)}_seeded_dev")]
    assert len(built) == 1, built  # one build: nothing seeded runs after the flush


@pytest.mark.parametrize("alias", ["default"])
def test_works_without_seeddump_in_installed_apps(inner, alias: str) -> None:
    pytester, _ = inner
    pytester.makepyfile(
        inner_settings="""
        from project.settings import *  # noqa: F403

        INSTALLED_APPS = [app for app in INSTALLED_APPS if app != "seeddump"]  # noqa: F405
        """
    )
    result = run_inner(pytester, "--ds", "inner_settings", "--create-db", "-k", "test_marked_sees or test_the_fixture")
    result.assert_outcomes(passed=2)
    result.stdout.fnmatch_lines(["*settings: inner_settings*"])


@pytest.mark.parametrize("alias", ["default"])
@pytest.mark.parametrize("how", [("-n", "2"), ("--seeddump-all",)], ids=["xdist", "all"])
def test_a_stale_dump_is_migrated_forward_and_said_once(
    inner, alias: str, how: tuple[str, ...], dumps_dir: Path, migrated_back_at_the_end: None, monkeypatch
) -> None:
    from tests.test_stale import dump_behind_the_code

    pytester, _ = inner
    dump = dump_behind_the_code(alias)  # in dumps_dir, as dev's latest
    monkeypatch.setenv("SEEDDUMP_DIR", str(dumps_dir))
    monkeypatch.setenv("EXPECTED_NODES", str(_nodes_in(dump)))
    pytester.makepyfile(
        test_rank="""
        import pytest
        from project.reality.models import RealityNode

        @pytest.mark.seeddump
        @pytest.mark.parametrize("n", range(3))
        def test_the_new_column_is_there(n):
            assert RealityNode.objects.filter(rank__gte=0).count() >= 0
        """
    )
    # (Under --seeddump-all the unmarked test sees the seed too, and its empty-database check is left out.)
    result = run_inner(pytester, *how, "--create-db", "test_rank.py", "test_inner.py", "-k", "not unmarked")
    result.assert_outcomes(passed=8)
    output = result.stdout.str()
    assert output.count("is stale: 1 migration is not in it (reality.0002_node_rank)") == 1, output
    assert "1 migration(s) applied to the seeded test database" in output


def _nodes_in(dump: Path) -> int:
    from seeddump import dumpfiles

    return dumpfiles.read_metadata(dump).record_counts["reality_node"]


def test_seeded_names_fit_postgres() -> None:
    assert testdatabases.seeded_name("test_app", "dev") == "test_app_seeded_dev"
    long_name = testdatabases.seeded_name("test_" + "x" * 60 + "_gw12", "staging")
    assert len(long_name.encode()) <= 63
    assert long_name != testdatabases.seeded_name("test_" + "x" * 60 + "_gw13", "staging")
