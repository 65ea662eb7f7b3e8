"""Seeded data for ``manage.py test``: a project's Django test classes, run by seeddump's runner in a subprocess,
see the dump where they are ``@seeded`` and Django's empty test database elsewhere, on both servers."""

from __future__ import annotations

import hashlib
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from django.db import connections
from psycopg import sql

from seeddump import postgres, snapshots, testcache
from tests.conftest import REPO, InnerProject, copy_dump, database_names, database_url, run_bounded, shell_env
from tests.settings import RUN

pytestmark = pytest.mark.django_db(transaction=True, databases="__all__")

NODES = 3000  # in the session's seeded dump

INNER_SETTINGS = """
import multiprocessing
import os

from project.settings import *  # noqa: F403

TEST_RUNNER = "seeddump.testrunner.DiscoverRunner"
if os.environ.get("START_METHOD"):
    multiprocessing.set_start_method(os.environ["START_METHOD"], force=True)
"""

# Django runs the TestCase classes first, then the TransactionTestCase ones, each group in name order.
INNER_TESTS = """
import os

from django.db import connection
from django.test import TestCase, TransactionTestCase

from project.reality.models import RealityNode, Team
from seeddump.testing import seeded

EXPECTED = int(os.environ["EXPECTED_NODES"])


def saw(test):
    name = f"{type(test).__name__}.{test._testMethodName}"
    print(f"SAW {name} DB {connection.settings_dict['NAME']} NODES {RealityNode.objects.count()}", flush=True)


@seeded
class SeededTests(TestCase):
    @classmethod
    def setUpTestData(cls):
        cls.teams = Team.objects.count()  # in the class's transaction: on the seeded database too

    def test_sees_the_seed(self):
        saw(self)
        self.assertEqual(RealityNode.objects.count(), EXPECTED)
        self.assertGreater(self.teams, 0)

    def test_changes_roll_back(self):
        RealityNode.objects.filter(parent__isnull=False).delete()
        self.assertLess(RealityNode.objects.count(), EXPECTED)


class UnseededTests(TestCase):
    def test_empty(self):
        saw(self)
        self.assertEqual(Team.objects.count(), 0)


@seeded("dev")
class FlushingTests(TransactionTestCase):
    def test_1_sees_the_seed_then_flushes_it(self):
        saw(self)
        self.assertEqual(RealityNode.objects.count(), EXPECTED)

    def test_2_sees_the_seed_after_the_flush(self):
        saw(self)
        self.assertEqual(RealityNode.objects.count(), EXPECTED)


@seeded
class LaterSeededTests(TransactionTestCase):
    def test_sees_the_seed_after_another_class_flushed(self):
        saw(self)
        self.assertEqual(RealityNode.objects.count(), EXPECTED)
"""

SEEDED_TESTS = 5  # of INNER_TESTS
TESTCASES = ("seeded_tests.tests.SeededTests", "seeded_tests.tests.UnseededTests")


class Project(InnerProject):
    def test(self, *args: str, expect: int | None = 0, **env: str) -> subprocess.CompletedProcess:
        """``manage.py test`` of the inner tests (or of the labels in ``args``); output is stdout + stderr."""
        labels = () if any(arg.startswith("seeded_tests") for arg in args) else ("seeded_tests",)
        argv = [sys.executable, "manage.py", "test", *labels, "--noinput", *args]
        connections.close_all()
        result = run_bounded(argv, cwd=REPO, env=self.env(**env), timeout=300)
        result.stdout += result.stderr
        if expect is not None:
            assert result.returncode == expect, result.stdout[-4000:]
        return result

    def env(self, **extra: str) -> dict[str, str]:
        from django.conf import settings

        return shell_env(
            DJANGO_SETTINGS_MODULE="inner_settings",
            DATABASE_URL=database_url(self.alias, self.name),
            SEEDDUMP_DIR=str(self.dumps),
            SEEDDUMP_PG_BIN_DIRS=",".join(str(p) for p in settings.SEEDDUMP_PG_BIN_DIRS),
            SEEDDUMP_BACKGROUND="false",
            SEEDDUMP_MEDIA="false",
            SEEDDUMP_LOCK_TIMEOUT="60",
            EXPECTED_NODES=str(NODES),
            PYTHONPATH=f"{REPO}:{self.folder}",
            PYTHONUNBUFFERED="1",
            **extra,
        )

    def left(self) -> set[str]:
        """The run's databases still on the server: Django's test databases, its clones and the seeded ones."""
        return {name for name in database_names(self.alias) if name.startswith(self.test_database)}


@pytest.fixture
def project(alias: str, tmp_path: Path, seeded_dumps: dict[str, Path]) -> Iterator[Project]:
    """The demo project with the inner tests, seeddump's runner and the seeded dump as dev's latest, against a
    database named for this test on the alias's server; whatever it leaves is dropped afterwards."""
    folder = tmp_path / "inner"
    (folder / "seeded_tests").mkdir(parents=True)
    (folder / "inner_settings.py").write_text(INNER_SETTINGS)
    (folder / "seeded_tests" / "__init__.py").write_text("")
    (folder / "seeded_tests" / "tests.py").write_text(INNER_TESTS)
    dumps = tmp_path / "dumps"
    copy_dump(seeded_dumps[alias], dumps)
    yield Project(folder, alias, f"runner_{RUN}_{hashlib.sha256(str(tmp_path).encode()).hexdigest()[:8]}", dumps)
    with postgres.connect_maintenance(connections[alias].settings_dict) as admin:
        snapshots.drop_all(admin, dumps)
        testcache.drop_all(admin, dumps)
        for (name,) in admin.execute(
            "SELECT datname FROM pg_database WHERE starts_with(datname, %s)", (f"test_runner_{RUN}_",)
        ).fetchall():
            admin.execute(sql.SQL("DROP DATABASE {} WITH (FORCE)").format(sql.Identifier(name)))


def saw(result: subprocess.CompletedProcess) -> dict[str, tuple[str, int]]:
    """What each inner test printed: {Class.test: (database, nodes)}."""
    return {
        test: (db, int(nodes))
        for test, db, nodes in re.findall(r"^SAW (\S+) DB (\S+) NODES (\d+)$", result.stdout, re.M)
    }


def test_seeded_classes_see_the_dump_and_the_others_an_empty_database(project: Project) -> None:
    result = project.test()

    assert "Ran 6 tests" in result.stdout and "\nOK\n" in result.stdout, result.stdout
    seeded, empty = f"{project.test_database}_seeded_dev", project.test_database
    assert saw(result) == {
        "SeededTests.test_sees_the_seed": (seeded, NODES),
        "UnseededTests.test_empty": (empty, 0),
        "FlushingTests.test_1_sees_the_seed_then_flushes_it": (seeded, NODES),
        "FlushingTests.test_2_sees_the_seed_after_the_flush": (seeded, NODES),
        "LaterSeededTests.test_sees_the_seed_after_another_class_flushed": (seeded, NODES),
    }
    assert f"seeddump: {seeded} from the dev dump (pg_restore, " in result.stdout, result.stdout
    # Built once before the tests; the rebuilds after each flush say nothing.
    assert result.stdout.count(f"seeddump: {seeded} from") == 1
    # Without --keepdb nothing of the run is left: Django drops its test database, seeddump the seeded one.
    assert project.left() == set()


@pytest.mark.parametrize("alias", ["default"])
@pytest.mark.parametrize("start_method", ["fork", "spawn"])
def test_parallel_workers_each_see_a_seeded_database_of_their_own(project: Project, start_method: str) -> None:
    result = project.test("--parallel", "2", START_METHOD=start_method)

    assert "Ran 6 tests" in result.stdout and "\nOK\n" in result.stdout, result.stdout
    seen = saw(result)
    assert len(seen) == SEEDED_TESTS, result.stdout
    workers = {f"{project.test_database}_{n}" for n in (1, 2)}
    assert seen.pop("UnseededTests.test_empty")[0] in workers
    assert {db for db, _ in seen.values()} <= {f"{worker}_seeded_dev" for worker in workers}
    assert {nodes for _, nodes in seen.values()} == {NODES}
    # Each worker's seeded database was built before the tests: one restore, the other a copy of its snapshot.
    built = sorted(
        re.findall(
            rf"^seeddump: ({project.test_database}_\d_seeded_dev) from the dev dump \((.+?),", result.stdout, re.M
        )
    )
    assert built == [
        (f"{project.test_database}_1_seeded_dev", "pg_restore"),
        (f"{project.test_database}_2_seeded_dev", "a copy of the cached snapshot"),
    ]
    assert project.left() == set()


def test_keepdb_reuses_the_seeded_database_while_it_still_holds_the_seed(project: Project) -> None:
    seeded = f"{project.test_database}_seeded_dev"
    project.test(*TESTCASES, "--keepdb")
    assert seeded in project.left()

    kept = project.test(*TESTCASES, "--keepdb")
    assert f"seeddump: {seeded} kept from the last session" in kept.stdout, kept.stdout
    assert saw(kept)["SeededTests.test_sees_the_seed"] == (seeded, NODES)

    # A TransactionTestCase's flush empties it: the next run rebuilds it instead of trusting it.
    project.test("seeded_tests.tests.LaterSeededTests", "--keepdb")
    rebuilt = project.test(*TESTCASES, "--keepdb")
    assert f"seeddump: {seeded} from the dev dump" in rebuilt.stdout, rebuilt.stdout
    assert saw(rebuilt)["SeededTests.test_sees_the_seed"] == (seeded, NODES)


@pytest.mark.parametrize(
    ("alias", "workers"),
    [("default", ()), ("system", ()), ("default", ("--parallel", "2"))],
    ids=["default-one", "system-one", "default-parallel"],
    indirect=["alias"],
)
def test_without_a_dump_the_seeded_classes_skip_with_one_line(project: Project, workers: tuple[str, ...]) -> None:
    """A fresh clone has no dumps (they are git-ignored): its test suite still runs."""
    for path in project.dumps.iterdir():
        path.unlink()

    result = project.test(*workers)

    assert "Ran 6 tests" in result.stdout and f"OK (skipped={SEEDED_TESTS})" in result.stdout, result.stdout
    assert saw(result) == {"UnseededTests.test_empty": (saw(result)["UnseededTests.test_empty"][0], 0)}
    line = "seeddump: the seeded tests did not run: There is no dev dump in"
    assert result.stdout.count(line) == 1, result.stdout  # once, at the end; not per class or per worker
    assert "without --seeddump-require they are skipped." in result.stdout
    assert "Traceback" not in result.stdout
    assert project.left() == set()


@pytest.mark.parametrize("alias", ["default"])
def test_seeddump_require_stops_the_run_with_one_line_when_there_is_no_dump(project: Project) -> None:
    for path in project.dumps.iterdir():
        path.unlink()

    result = project.test("--seeddump-require", expect=1)

    assert "CommandError: seeddump: the seeded tests cannot run: There is no dev dump in" in result.stdout
    assert "Ran " not in result.stdout and "Traceback" not in result.stdout, result.stdout
    assert project.left() == set()  # Django's test database too


@pytest.mark.parametrize("alias", ["default"])
def test_a_dump_that_cannot_be_used_stops_the_run_with_one_line(project: Project) -> None:
    dump = next(path for path in project.dumps.iterdir() if path.name.endswith(".dump") and not path.is_symlink())
    content = bytearray(dump.read_bytes())
    content[len(content) // 2] ^= 0xFF
    dump.write_bytes(bytes(content))

    result = project.test(expect=1)

    assert "CommandError: seeddump: cannot build the seeded test database of 'default': " in result.stdout
    assert "Ran " not in result.stdout and "Traceback" not in result.stdout, result.stdout
    assert project.left() == set()
