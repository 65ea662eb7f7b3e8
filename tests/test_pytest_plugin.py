"""The pytest plugin: a test session whose database comes from the dump, in a subprocess (pytester)."""

from __future__ import annotations

from pathlib import Path

import pytest
from django.db import connections
from psycopg import sql

from seeddump import postgres, snapshots
from tests.conftest import REPO, copy_dump, database_names, database_url, run_command

pytestmark = pytest.mark.django_db(transaction=True, databases="__all__")

INNER_TESTS = """
import pytest
from django.db import connection
from project.reality.models import RealityNode, Team


@pytest.mark.django_db
def test_sees_the_seeded_rows():
    print("DB", connection.settings_dict["NAME"], "NODES", RealityNode.objects.count(), "TEAMS", Team.objects.count())
    assert RealityNode.objects.count() == int(__import__("os").environ["EXPECTED_NODES"])


@pytest.mark.django_db
def test_a_second_test_sees_them_too():
    print("DB", connection.settings_dict["NAME"])
    assert Team.objects.count() >= 1
"""


@pytest.fixture
def inner(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, alias: str, seeded_dumps, tmp_path: Path, settings
):
    """A project test suite that uses the plugin, against a database named for this test on the alias's server."""
    dumps = tmp_path / "inner-dumps"
    copy_dump(seeded_dumps[alias], dumps)
    pytester.makepyfile(test_inner=INNER_TESTS)
    pytester.makeini("[pytest]\nDJANGO_SETTINGS_MODULE = project.settings\n")
    monkeypatch.setenv("PYTHONPATH", str(REPO))
    monkeypatch.setenv("DJANGO_SETTINGS_MODULE", "project.settings")  # not this session's tests.settings
    monkeypatch.setenv("DATABASE_URL", database_url(alias, f"plugin_{alias}"))
    monkeypatch.setenv("SEEDDUMP_DIR", str(dumps))
    monkeypatch.setenv("SEEDDUMP_PG_BIN_DIRS", ",".join(str(p) for p in settings.SEEDDUMP_PG_BIN_DIRS))
    monkeypatch.setenv("EXPECTED_NODES", "3000")
    yield pytester, dumps
    with postgres.connect_maintenance(connections[alias].settings_dict) as admin:
        snapshots.drop_all(admin, dumps)
        for (name,) in admin.execute("SELECT datname FROM pg_database WHERE starts_with(datname, 'test_plugin_')"):
            admin.execute(sql.SQL("DROP DATABASE {} WITH (FORCE)").format(sql.Identifier(name)))


def run_inner(pytester: pytest.Pytester, *args: str) -> pytest.RunResult:
    return pytester.runpytest_subprocess("--seeddump-env", "dev", "-p", "no:cacheprovider", "-s", *args)


def test_session_sees_the_seeded_rows(inner, alias: str) -> None:
    pytester, _ = inner
    result = run_inner(pytester, "--create-db")
    result.assert_outcomes(passed=2)
    result.stdout.fnmatch_lines([f"*DB test_plugin_{alias} NODES 3000 TEAMS 2*"])


def test_reuse_db_rebuilds_when_the_dump_changes(inner, alias: str, monkeypatch, settings) -> None:
    pytester, dumps = inner
    run_inner(pytester, "--reuse-db").assert_outcomes(passed=2)

    # A new dump with one team fewer: the reused test database must be rebuilt from it.
    settings.SEEDDUMP_DIR = dumps
    run_command("restoredump", "dev", database=alias, interactive=False)
    from project.reality.models import Team

    Team.objects.using(alias).filter(pk=2).delete()
    settings.SEEDDUMP_VERSION = "changed"
    run_command("generatedump", "dev", database=alias)
    monkeypatch.setenv("EXPECTED_NODES", "1500")
    run_inner(pytester, "--reuse-db").assert_outcomes(passed=2)

    # Unchanged dump: the database is reused as it is, not restored again; a change made to it stays.
    with postgres.connect(connections[alias].settings_dict, f"test_plugin_{alias}") as conn:
        conn.execute(
            "DELETE FROM reality_node WHERE id IN (SELECT id FROM reality_node n WHERE NOT EXISTS "
            "(SELECT 1 FROM reality_node c WHERE c.parent_id = n.id) LIMIT 10)"
        )
        (left,) = conn.execute("SELECT count(*) FROM reality_node").fetchone()
    assert left < 1500
    monkeypatch.setenv("EXPECTED_NODES", str(left))
    run_inner(pytester, "--reuse-db").assert_outcomes(passed=2)
    # Without --reuse-db it is restored from the dump again.
    monkeypatch.setenv("EXPECTED_NODES", "1500")
    run_inner(pytester).assert_outcomes(passed=2)


@pytest.mark.parametrize("alias", ["default"])
def test_xdist_workers_each_get_the_data(inner, alias: str) -> None:
    pytester, _ = inner
    result = run_inner(pytester, "-n", "2", "--create-db")
    result.assert_outcomes(passed=2)
    # Each worker restored and kept its own test database.
    assert {"test_plugin_default_gw0", "test_plugin_default_gw1"} <= database_names(alias)


def test_missing_dump_is_a_usage_error(inner, alias: str) -> None:
    pytester, dumps = inner
    for path in dumps.iterdir():
        path.unlink()
    result = run_inner(pytester)
    assert result.ret != 0
    result.stdout.fnmatch_lines(["*seeddump: cannot build the test database*There is no dev dump*"])
