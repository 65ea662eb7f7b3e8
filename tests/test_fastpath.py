"""``python -m seeddump restore``: restoredump without Django's start-up. It chooses the dump restoredump
chooses, refuses what restoredump refuses with the same line and exit status, never imports the project's
models when the code's migrations are as last written down, and loads Django (saying so at -v 2) when a
migration file changed since: then it reports what restoredump reports."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest
from django.db import connections

from project.reality.models import Team
from seeddump import background, records
from seeddump.models import DumpRecord
from tests.conftest import (
    REPO,
    demo_snapshot,
    manage,
    manage_env,
    run_bounded,
    wait_for_exit,
    write_reality_migration,
)
from tests.test_branches import dump_from_another_branch
from tests.test_stale import dump_behind_the_code, migrate

pytestmark = pytest.mark.django_db(transaction=True, databases="__all__")

FAST = "Not loading Django's apps: the code's migrations are as last written down."


def fast(*args: str, alias: str, dumps_dir: Path, env: dict[str, str] | None = None, python: tuple[str, ...] = ()):
    """Runs ``python -m seeddump restore ARGS`` in a new process, in the project's folder."""
    connections.close_all()
    argv = [sys.executable, *python, "-m", "seeddump", "restore", *args]
    return run_bounded(argv, cwd=REPO, env=manage_env(alias, dumps_dir, env), timeout=180)


def full(*args: str, alias: str, dumps_dir: Path, env: dict[str, str] | None = None):
    return manage("restoredump", *args, alias=alias, dumps_dir=dumps_dir, env=env)


@pytest.fixture
def own_migrations(tmp_path: Path) -> tuple[Path, dict[str, str]]:
    """The demo's settings with the reality app's migrations in a folder of the test's own (a checkout whose
    migrations change), for processes: (that folder, their environment)."""
    folder = tmp_path / "code"
    package = folder / "fast_migrations"
    package.parent.mkdir()
    source = REPO / "project" / "reality" / "migrations"
    package.mkdir()
    for migration in source.glob("*.py"):
        (package / migration.name).write_text(migration.read_text())
    (folder / "fast_settings.py").write_text(
        "from project.settings import *  # noqa: F403\n\nMIGRATION_MODULES = {'reality': 'fast_migrations'}\n"
    )
    path = os.pathsep.join([str(folder), str(REPO), os.environ.get("PYTHONPATH", "")])
    return package, {"DJANGO_SETTINGS_MODULE": "fast_settings", "PYTHONPATH": path}


def test_a_restore_without_the_projects_models_gives_restoredumps_result(
    alias: str, seeded_dump: Path, dumps_dir: Path
) -> None:
    first = full("dev", "--no-input", alias=alias, dumps_dir=dumps_dir)  # writes down the code's migrations
    assert first.returncode == 0, first.stderr
    before = demo_snapshot(alias)
    with connections[alias].cursor() as cursor:
        cursor.execute("DELETE FROM reality_node")
    assert Team.objects.using(alias).count() > 0 and demo_snapshot(alias) != before

    result = fast("dev", "--no-input", "-v", "2", alias=alias, dumps_dir=dumps_dir, python=("-X", "importtime"))

    assert result.returncode == 0, result.stderr
    assert FAST in result.stderr
    imported = {line.rsplit("|", 1)[-1].strip() for line in result.stderr.splitlines() if "|" in line}
    assert "project.reality.models" not in imported and "seeddump.models" not in imported  # no django.setup()
    assert f"Restored {seeded_dump.name} into '{connections[alias].settings_dict['NAME']}'" in result.stdout
    assert "Undo it with: python manage.py restoredump --undo" in result.stdout
    assert demo_snapshot(alias) == before


def test_both_choose_the_same_dump_for_the_checked_out_code(alias: str, dumps_dir: Path) -> None:
    fitting = dump_behind_the_code(alias)
    migrate(alias)
    latest = dump_from_another_branch(alias)
    try:
        documents = []
        for run in (full, fast, fast):  # the second fast one runs on what the first wrote down
            result = run("dev", "--no-input", "--json", alias=alias, dumps_dir=dumps_dir)
            assert result.returncode == 0, result.stderr
            document = json.loads(result.stdout)
            documents.append((document["dump"], document["missingMigrations"], document["unknownMigrations"]))
            assert f"Restoring {fitting.name}, the newest dev dump this code can run: the latest, {latest.name}" in (
                result.stderr
            )
        assert documents[0] == documents[1] == documents[2] and documents[0][0] == str(fitting)
        assert documents[0][1]  # behind the code: the same migrations missing, known without Django's apps
    finally:
        migrate(alias)


@pytest.mark.parametrize(
    "args",
    [
        ("prod", "--no-input"),  # a protected environment
        ("nosuch", "--no-input"),  # no dump of that environment
        ("dev", "--json"),  # a script cannot answer the confirmation
        ("dev", "--jobs", "0", "--no-input"),
        ("dev", "--database", "nosuch", "--no-input"),
        ("dev", "--undo", "--jobs", "2", "--no-input"),
        ("--no-input",),  # no environment
    ],
    ids=["protected", "no-dump", "json-needs-no-input", "jobs", "alias", "undo-options", "no-environment"],
)
def test_both_refuse_the_same_things_with_the_same_line(
    alias: str, seeded_dump: Path, dumps_dir: Path, args: tuple[str, ...]
) -> None:
    expected = full(*args, alias=alias, dumps_dir=dumps_dir)
    assert expected.returncode != 0 and expected.stderr.startswith("CommandError: ")
    result = fast(*args, alias=alias, dumps_dir=dumps_dir)
    assert (result.returncode, result.stderr) == (expected.returncode, expected.stderr)


def test_no_dump_that_fits_is_refused_alike(alias: str, dumps_dir: Path) -> None:
    latest = dump_from_another_branch(alias)
    expected = full("dev", "--no-input", alias=alias, dumps_dir=dumps_dir)
    assert expected.returncode == 1 and f"No dev dump fits this code: the latest, {latest.name}" in expected.stderr
    result = fast("dev", "--no-input", alias=alias, dumps_dir=dumps_dir)
    assert (result.returncode, result.stderr) == (expected.returncode, expected.stderr)


@pytest.mark.usefixtures("migrated_back_at_the_end")
def test_a_migration_added_since_loads_django_and_is_reported_as_restoredump_does(
    alias: str, seeded_dump: Path, dumps_dir: Path, own_migrations: tuple[Path, dict[str, str]]
) -> None:
    package, env = own_migrations
    assert full("dev", "--no-input", alias=alias, dumps_dir=dumps_dir, env=env).returncode == 0
    quiet = fast("dev", "--no-input", "-v", "2", alias=alias, dumps_dir=dumps_dir, env=env)
    assert quiet.returncode == 0 and FAST in quiet.stderr and "behind the code" not in quiet.stderr

    write_reality_migration(package, "0003_fastpath", "[]")  # a teammate's new migration, pulled

    changed = fast("dev", "--no-input", "-v", "2", alias=alias, dumps_dir=dumps_dir, env=env)
    assert changed.returncode == 0, changed.stderr
    assert f"Loading Django's apps: a migration in {package} changed since" in changed.stderr
    behind = "The restored database is behind the code: 1 migration is not in it (reality.0003_fastpath)"
    assert behind in changed.stderr
    again = fast("dev", "--no-input", "-v", "2", alias=alias, dumps_dir=dumps_dir, env=env)
    assert FAST in again.stderr and behind in again.stderr  # as written down by the run before
    expected = full("dev", "--no-input", alias=alias, dumps_dir=dumps_dir, env=env)
    assert behind in expected.stderr


def test_settings_come_from_the_projects_manage_py_and_their_absence_is_one_line(
    alias: str, seeded_dump: Path, dumps_dir: Path, tmp_path: Path
) -> None:
    env = {key: value for key, value in manage_env(alias, dumps_dir).items() if key != "DJANGO_SETTINGS_MODULE"}
    argv = [sys.executable, "-m", "seeddump", "restore", "dev", "--no-input"]
    result = run_bounded(argv, cwd=REPO, env=env, timeout=180)
    assert result.returncode == 0, result.stderr  # manage.py says project.settings
    assert f"Restored {seeded_dump.name} into" in result.stdout

    elsewhere = run_bounded(argv, cwd=tmp_path, env=env, timeout=60)
    assert elsewhere.returncode == 1
    assert elsewhere.stderr == (
        "CommandError: No settings module: pass --settings or set DJANGO_SETTINGS_MODULE (or run this in the "
        "folder of the project's manage.py).\n"
    )
    unknown = run_bounded(
        [sys.executable, "-m", "seeddump", "restore", "dev", "--settings", "no.such.settings"],
        cwd=REPO,
        env=env,
        timeout=60,
    )
    assert unknown.returncode == 1 and unknown.stderr.startswith(
        "CommandError: The settings module no.such.settings cannot be imported (No module named 'no')."
    )
    assert "Traceback" not in unknown.stderr


def test_the_background_finishes_without_django_and_records_the_restore(
    alias: str, seeded_dump: Path, dumps_dir: Path
) -> None:
    assert DumpRecord._meta.db_table == records.TABLE
    full("dev", "--no-input", alias=alias, dumps_dir=dumps_dir)
    result = fast("dev", "--no-input", "--json", alias=alias, dumps_dir=dumps_dir, env={"SEEDDUMP_BACKGROUND": "1"})
    assert result.returncode == 0, result.stderr
    pid = json.loads(result.stdout)["background"]["pid"]
    wait_for_exit(pid)
    own = [line for line in (dumps_dir / background.LOG_NAME).read_text().splitlines() if f"[{pid}]" in line]
    assert "Recorded 1 dump(s) for the admin" in "\n".join(own)
    assert own[-1].endswith("Django's apps not loaded)"), own[-1]
    record = DumpRecord.objects.using(alias).get(file_name=seeded_dump.name)
    assert record.last_restored_at is not None and record.total_records == sum(record.record_counts.values())


TOOLBAR_LIKE_APP = """
from django.apps import AppConfig
from django.conf import settings


class ToolbarLikeConfig(AppConfig):
    name = "toolbar_like"

    def ready(self):
        # What django-debug-toolbar's ready() does: its models get no migrations in this process.
        settings.MIGRATION_MODULES["toolbar_like"] = None
"""


def test_the_fast_path_engages_where_an_apps_ready_changes_the_settings(
    alias: str, seeded_dump: Path, dumps_dir: Path, tmp_path: Path
) -> None:
    """django-debug-toolbar's ready() adds MIGRATION_MODULES["debug_toolbar"] = None. Full-Django processes used
    to write the code's migrations down under the changed settings, python -m seeddump looked under the declared
    ones, and every restore loaded Django (saying, falsely, that nothing was written down)."""
    folder = tmp_path / "code"
    (folder / "toolbar_like").mkdir(parents=True)
    (folder / "toolbar_like" / "__init__.py").write_text("")
    (folder / "toolbar_like" / "apps.py").write_text(TOOLBAR_LIKE_APP)
    (folder / "toolbar_settings.py").write_text(
        "from project.settings import *  # noqa: F403\n\n"
        "INSTALLED_APPS = [*INSTALLED_APPS, 'toolbar_like']  # noqa: F405\nMIGRATION_MODULES = {}\n"
    )
    path = os.pathsep.join([str(folder), str(REPO), os.environ.get("PYTHONPATH", "")])
    env = {"DJANGO_SETTINGS_MODULE": "toolbar_settings", "PYTHONPATH": path}
    first = full("dev", "--no-input", alias=alias, dumps_dir=dumps_dir, env=env)  # writes the code's migrations down
    assert first.returncode == 0, first.stderr

    result = fast("dev", "--no-input", "-v", "2", alias=alias, dumps_dir=dumps_dir, env=env)

    assert result.returncode == 0, result.stderr
    assert FAST in result.stderr
    assert "Loading Django's apps" not in result.stderr
