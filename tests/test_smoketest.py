"""smoketest runs the real stack: a restore, migrations, a web server over HTTP, pages, data."""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from django.db import connections

from tests.conftest import manage, run_command
from tests.test_refusals import _flip_byte

pytestmark = pytest.mark.django_db(transaction=True, databases="__all__")


def smoketest(alias: str, dumps_dir: Path, *args: str):
    log = dumps_dir.parent / "smoke.log"
    return manage("smoketest", "--log-file", str(log), *args, alias=alias, dumps_dir=dumps_dir), log


def test_healthy_stack_passes(alias: str, seeded_dump: Path, dumps_dir: Path) -> None:
    result, log = smoketest(alias, dumps_dir)

    assert result.returncode == 0, result.stdout + result.stderr
    out = result.stdout
    for line in (
        "PASS  environment: latest dump and metadata",
        "PASS  database: restore latest dump",
        "PASS  database: migrations applied",
        "PASS  backend: web server answers /healthz/",
        "PASS  backend: GET /api/teams/",
        "PASS  backend: GET /api/nodes/",
        "PASS  frontend: GET /admin/login/",
        "PASS  frontend: log in as a smoke-test user",
        "PASS  frontend: GET /admin/seeddump/dumprecord/ (logged in)",
        "PASS  data: row counts match the dump's metadata",
    ):
        assert line in out, line
    assert "Smoke test passed: " in out and " 0 failed" in out
    assert "[PASS] backend: GET /api/agents/" in log.read_text()
    # The smoke-test user is gone again.
    with connections[alias].cursor() as cursor:
        cursor.execute("SELECT count(*) FROM auth_user WHERE username LIKE 'seeddump-smoke-%%'")
        assert cursor.fetchone() == (0,)


def test_json_report(alias: str, seeded_dump: Path, dumps_dir: Path) -> None:
    result, _ = smoketest(alias, dumps_dir, "--json", "--skip-frontend")

    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["passed"] is True and report["environment"] == "dev"
    assert report["counts"]["fail"] == 0
    statuses = {(c["phase"], c["name"]): c["status"] for c in report["checks"]}
    assert statuses[("backend", "GET /api/nodes/")] == "pass"
    assert statuses[("frontend", "pages")] == "skip"


def test_corrupt_dump_fails_and_skips_what_depends_on_it(alias: str, seeded_dump: Path, dumps_dir: Path) -> None:
    _flip_byte(seeded_dump)

    result, _ = smoketest(alias, dumps_dir)

    assert result.returncode == 1
    assert "FAIL  database: restore latest dump" in result.stdout
    assert "SKIP  database: migrations applied" in result.stdout
    assert "SKIP  backend: web server answers /healthz/" in result.stdout
    assert "SKIP  backend: GET /api/teams/" in result.stdout
    errors = result.stderr.strip().splitlines()
    assert len(errors) == 1
    assert errors[0].startswith("CommandError: Smoke test failed: ")
    assert "The checksum of " in errors[0]


@pytest.fixture
def restored(alias: str, seeded_dump: Path) -> Path:
    run_command("restoredump", "dev", database=alias, interactive=False)
    return seeded_dump


@pytest.fixture
def broken_nodes_api(alias: str, restored: Path) -> Iterator[None]:
    with connections[alias].cursor() as cursor:
        cursor.execute("ALTER TABLE reality_node RENAME COLUMN title TO title_broken")
    yield
    connections[alias].close()
    with connections[alias].cursor() as cursor:
        cursor.execute("ALTER TABLE reality_node RENAME COLUMN title_broken TO title")


@pytest.mark.parametrize("alias", ["default"])
def test_api_error_fails(alias: str, dumps_dir: Path, broken_nodes_api: None) -> None:
    result, log = smoketest(alias, dumps_dir, "--skip-dump-restore")

    assert result.returncode == 1
    assert "PASS  backend: GET /api/teams/" in result.stdout
    assert "FAIL  backend: GET /api/nodes/ " in result.stdout
    assert "/api/nodes/ answered 500, expected 200." in result.stderr
    assert "title" in log.read_text()  # the server's own error is in the log


@pytest.mark.parametrize("alias", ["default"])
def test_data_not_matching_the_metadata_fails(alias: str, dumps_dir: Path, restored: Path) -> None:
    with connections[alias].cursor() as cursor:
        cursor.execute("DELETE FROM reality_node WHERE parent_id IS NOT NULL AND id > 2900")

    result, _ = smoketest(alias, dumps_dir, "--skip-dump-restore", "--skip-frontend")

    assert result.returncode == 1
    assert "FAIL  data: row counts match the dump's metadata" in result.stdout
    assert "reality_node: " in result.stderr and "rows, the dump has 3000" in result.stderr


@pytest.mark.parametrize("alias", ["default"])
def test_protected_environment_fails_first(alias: str, seeded_dump: Path, dumps_dir: Path) -> None:
    result, _ = smoketest(alias, dumps_dir, "--env", "prod")

    assert result.returncode == 1
    assert "FAIL  environment: environment name" in result.stdout
    assert "SKIP  database: server accepts connections" in result.stdout
    assert "protected environment 'prod'" in result.stderr


@pytest.mark.parametrize("alias", ["default"])
def test_missing_dump_is_a_note_with_skip_dump_restore(alias: str, dumps_dir: Path, restored: Path) -> None:
    shutil.rmtree(dumps_dir)  # seeded data in the database, but no dump anywhere

    result, _ = smoketest(alias, dumps_dir, "--skip-dump-restore", "--skip-frontend")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "NOTE  environment: dumps folder" in result.stdout

    result, _ = smoketest(alias, dumps_dir, "--skip-frontend")
    assert result.returncode == 1
    assert "FAIL  environment: dumps folder" in result.stdout
