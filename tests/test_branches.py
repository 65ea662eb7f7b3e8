"""The right dump for the checked-out code: restoredump, listdumps, the pytest plugin's logic and the smoketest
pass over dumps made on another branch and take the newest that fits; a dump made from uncommitted migrations
never shares a version with the committed code's."""

from __future__ import annotations

import json
import re
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from django.core.management import CommandError, call_command
from django.db import connections

from project.reality.models import Team
from seeddump import dumpfiles, testdatabases
from tests.conftest import MediaDump, copy_dump, manage, run_command, write_reality_migration
from tests.test_stale import FOREIGN, MISSING, column_exists, dump_behind_the_code, migrate

pytestmark = pytest.mark.django_db(transaction=True, databases="__all__")


def dump_from_another_branch(alias: str) -> Path:
    """A newer dump whose database holds a migration this code does not have (and no seeded rows)."""
    with connections[alias].cursor() as cursor:
        cursor.execute("TRUNCATE reality_team CASCADE")
        cursor.execute(
            "INSERT INTO django_migrations (app, name, applied) VALUES ('reality', '0099_from_another_branch', now())"
        )
    dump = Path(run_command("generatedump", "dev", "--allow-empty", database=alias).out.split()[-1])
    with connections[alias].cursor() as cursor:
        cursor.execute("DELETE FROM django_migrations WHERE name = '0099_from_another_branch'")
    return dump


@pytest.mark.usefixtures("migrated_back_at_the_end")
def test_the_newest_dump_that_fits_is_restored_without_force(alias: str, dumps_dir: Path) -> None:
    fitting = dump_behind_the_code(alias)  # made before the code's reality.0002: it fits, with --migrate
    migrate(alias)
    latest = dump_from_another_branch(alias)

    result = run_command("restoredump", "dev", database=alias, interactive=False, migrate=True)

    assert (
        f"Restoring {fitting.name}, the newest dev dump this code can run: the latest, {latest.name}, holds 1 "
        f"migration it does not have ({FOREIGN}); it was made on another branch or a newer checkout." in result.err
    )
    assert f"Restored {fitting.name} into" in result.out
    assert f"Applied 1 migration(s) to the restored database before the swap: {MISSING}." in result.out
    assert Team.objects.using(alias).count() == 2 and column_exists(alias, "reality_node", "rank")

    listing = json.loads(run_command("listdumps", "dev", "--json", "--offline", database=alias).out)
    marks = {d["name"]: (d["latest"], d["chosen"], d["fits"]) for d in listing["dumps"]}
    assert marks == {fitting.name: (False, True, True), latest.name: (True, False, False)}
    text = run_command("listdumps", "dev", "--offline", database=alias).out
    assert re.search(rf"{re.escape(latest.name)} .* latest,stale,other-branch", text)
    assert re.search(rf"{re.escape(fitting.name)} .* chosen,", text)


@pytest.mark.usefixtures("migrated_back_at_the_end")
def test_with_no_dump_that_fits_it_refuses_and_force_restores_the_latest(alias: str, dumps_dir: Path) -> None:
    latest = dump_from_another_branch(alias)
    Team.objects.using(alias).create(name="my local team", created_at="2026-02-01T00:00:00Z")

    with pytest.raises(CommandError) as refused:
        run_command("restoredump", "dev", database=alias, interactive=False)

    message = str(refused.value)
    assert "\n" not in message
    assert f"No dev dump fits this code: the latest, {latest.name}, holds 1 migration this code does not have" in (
        message
    )
    assert "python manage.py generatedump dev" in message and "--force restores the latest anyway" in message
    assert [team.name for team in Team.objects.using(alias).all()] == ["my local team"]

    forced = run_command("restoredump", "dev", database=alias, interactive=False, force=True)
    assert f"Restored {latest.name}" in forced.out


@pytest.mark.usefixtures("migrated_back_at_the_end")
def test_the_pytest_plugin_and_the_smoketest_choose_the_same_dump(
    alias: str, dumps_dir: Path, media_dumps: dict[str, MediaDump]
) -> None:
    seeded_dump = copy_dump(media_dumps[alias].path, dumps_dir)  # with its files: the smoketest checks them
    latest = dump_from_another_branch(alias)

    seeded = testdatabases.build("dev", alias, reuse=False)
    try:
        assert any(f"Restoring {seeded_dump.name}, the newest dev dump this code can run" in n for n in seeded.notes)
        assert seeded.status.dump_path.name == seeded_dump.name
    finally:
        testdatabases.drop(alias, seeded.name)

    smoke = manage("smoketest", "--json", "--skip-frontend", alias=alias, dumps_dir=dumps_dir)
    assert smoke.returncode == 0, smoke.stderr
    checks = {c["name"]: c for c in json.loads(smoke.stdout)["checks"]}
    detail = checks["latest dump and metadata"]["detail"]
    assert detail.startswith(f"{seeded_dump.name} (the latest holds migrations this code does not have)")
    assert latest.name not in detail


# --- Versions of uncommitted migrations ---------------------------------------------------------------------


def git(folder: Path, *args: str) -> str:
    return subprocess.run(["git", "-C", str(folder), *args], check=True, capture_output=True, text=True).stdout


@pytest.fixture
def project_checkout(tmp_path: Path, settings: Any, reality_migrations: Callable[..., Path]) -> Path:
    """A git checkout of its own holding the demo's reality migrations, committed, as the project's."""
    checkout = tmp_path / "checkout"
    reality_migrations("branch_migrations", checkout)
    git(checkout, "init", "-q")
    git(checkout, "add", ".")
    git(checkout, "-c", "user.name=t", "-c", "user.email=t@example.com", "commit", "-qm", "reality migrations")
    settings.SEEDDUMP_PROJECT_DIR = checkout
    return checkout


def add_migration(checkout: Path, sql: str) -> None:
    write_reality_migration(checkout / "branch_migrations", "0003_local", f"[migrations.RunSQL({sql!r}, 'SELECT 1')]")


@pytest.fixture
def local_migration_undone(alias: str) -> Any:
    yield
    with connections[alias].cursor() as cursor:
        cursor.execute("DELETE FROM django_migrations WHERE name = '0003_local'")


@pytest.mark.usefixtures("dumps_dir", "local_migration_undone")
def test_a_dump_of_uncommitted_migrations_gets_a_version_of_its_own(alias: str, project_checkout: Path) -> None:
    commit = git(project_checkout, "rev-parse", "--short=7", "HEAD").strip()
    run_command("seed", "dev", scale=1, database=alias, verbosity=0)
    clean = run_command("generatedump", "dev", database=alias)
    assert f"-seeded-v{commit}-" in clean.out and "not committed" not in clean.err

    add_migration(project_checkout, "SELECT 1")
    migrate(alias)
    dirty = run_command("generatedump", "dev", database=alias)
    first = dumpfiles.read_metadata(Path(dirty.out.split()[-1])).version
    assert re.fullmatch(rf"{commit}-dirty-[0-9a-f]{{8}}", first)
    assert "The database has migrations whose files are not committed (reality.0003_local)" in dirty.err
    assert f"the dump's version is {first}" in dirty.err

    add_migration(project_checkout, "SELECT 2")  # another schema from the same commit: another version
    second = dumpfiles.read_metadata(Path(run_command("generatedump", "dev", database=alias).out.split()[-1])).version
    assert second.startswith(f"{commit}-dirty-") and second != first

    git(project_checkout, "add", ".")
    git(project_checkout, "-c", "user.name=t", "-c", "user.email=t@example.com", "commit", "-qm", "0003")
    committed = run_command("generatedump", "dev", database=alias).out
    assert "-dirty-" not in committed

    listing = json.loads(run_command("listdumps", "dev", "--json", "--offline", database=alias).out)
    assert {d["version"] for d in listing["dumps"]} >= {first, second}  # names that parse and list
    dirty_dump = str(Path(dirty.out.split()[-1]))
    restored = run_command("restoredump", "dev", "--dump", dirty_dump, database=alias, interactive=False)
    assert "Restored dev-seeded-v" in restored.out


@pytest.mark.parametrize("alias", ["default"])
def test_listdumps_keeps_its_columns_in_line_with_long_versions(alias: str, dumps_dir: Path, settings) -> None:
    call_command("seed", "dev", scale=1, database=alias, verbosity=0)
    settings.SEEDDUMP_VERSION = "0123abc5f2e9c1d0a1b2c3d4e5f6a7b8c9d0e1f2"  # as long as a dirty <commit>-dirty-<hex>
    run_command("generatedump", "dev", database=alias)
    settings.SEEDDUMP_VERSION = "v1"
    run_command("generatedump", "dev", database=alias)

    lines = run_command("listdumps", "dev", "--offline", database=alias).out.splitlines()
    header, rows = lines[0], lines[1:]
    assert len(rows) == 2
    created = header.index("CREATED (UTC)")
    # Every row's date starts under its header, whatever the version's length.
    assert all(re.fullmatch(r"20\d\d-\d\d-\d\d", row[created : created + 10]) for row in rows), lines
