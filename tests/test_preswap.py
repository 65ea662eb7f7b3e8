"""restoredump --migrate and SEEDDUMP_RESTORE_HOOKS work on the restored database before it is swapped in: a
migration or a hook that fails leaves the target exactly as it was, and says which one failed."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from django.contrib.auth.models import User
from django.core.management import CommandError
from django.db import connections

from project.reality.models import Team
from seeddump import finishing, postgres
from seeddump import restore as restore_module
from tests.conftest import demo_snapshot, leftovers, run_command, write_reality_migration
from tests.test_stale import MISSING, column_exists, dump_behind_the_code, migrate

pytestmark = pytest.mark.django_db(transaction=True, databases="__all__")


def restore(alias: str, **options: Any) -> str:
    return run_command("restoredump", "dev", database=alias, interactive=False, **options).out


def local_work(alias: str) -> dict[str, Any]:
    Team.objects.using(alias).create(name="my local team", created_at="2026-02-01T00:00:00Z")
    return demo_snapshot(alias)


@pytest.mark.usefixtures("dumps_dir", "migrated_back_at_the_end")
def test_migrations_are_applied_before_the_swap(alias: str) -> None:
    dump_behind_the_code(alias)
    migrate(alias)

    out = restore(alias, migrate=True)

    assert f"Applied 1 migration(s) to the restored database before the swap: {MISSING}." in out
    assert column_exists(alias, "reality_node", "rank")
    assert Team.objects.using(alias).count() == 2


@pytest.fixture
def failing_migration(reality_migrations: Callable[..., Path]) -> str:
    """The code gains a migration that fails (as a data migration that meets unexpected rows would)."""
    write_reality_migration(
        reality_migrations("failing_migrations"),
        "0003_fails",
        "[migrations.RunPython(fail)]",
        preamble="\ndef fail(apps, schema_editor):\n    raise ValueError('a team has no region')\n\n",
    )
    return "reality.0003_fails"


@pytest.mark.usefixtures("dumps_dir", "seeded_dump")
def test_a_failing_migration_leaves_the_target_untouched(alias: str, failing_migration: str) -> None:
    before = local_work(alias)

    with pytest.raises(CommandError) as failed:
        restore(alias, migrate=True)

    message = str(failed.value)
    assert "\n" not in message
    assert f"the migration {failing_migration} failed on the restored database (ValueError: a team has no region)" in (
        message
    )
    assert "was not changed" in message
    assert demo_snapshot(alias) == before
    assert leftovers(alias) == []


@pytest.mark.usefixtures("dumps_dir", "seeded_dump")
def test_hooks_run_on_the_restored_database_before_the_swap(
    alias: str, settings: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings.SEEDDUMP_RESTORE_HOOKS = [
        ["createsuperuser", "--noinput", "--username", "dev", "--email", "dev@example.com"],
        "tests.test_preswap.rename_first_team",
    ]

    monkeypatch.setenv("DJANGO_SUPERUSER_PASSWORD", "dev-password")
    out = restore(alias, verbosity=1)

    # One line per hook at the normal verbosity, with what the hook said.
    lines = [line for line in out.splitlines() if line.startswith("Ran the restore hook")]
    assert len(lines) == 2, out
    assert lines[0].startswith(
        "Ran the restore hook createsuperuser --noinput --username dev --email dev@example.com: "
        "Superuser created successfully. ("
    )
    assert lines[1].startswith("Ran the restore hook tests.test_preswap.rename_first_team (")
    user = User.objects.using(alias).get(username="dev", is_superuser=True)
    assert user.check_password("dev-password")
    assert Team.objects.using(alias).order_by("pk").first().name == "renamed by a hook"  # type: ignore[union-attr]


@pytest.mark.usefixtures("dumps_dir", "seeded_dump")
def test_createsuperuser_without_a_password_is_refused_before_the_restore(
    alias: str, settings: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Run, it would make a user with an unusable password: the restore succeeds and the login fails."""
    settings.SEEDDUMP_RESTORE_HOOKS = [["createsuperuser", "--noinput", "--username", "dev"]]
    monkeypatch.delenv("DJANGO_SUPERUSER_PASSWORD", raising=False)
    before = local_work(alias)

    with pytest.raises(CommandError) as refused:
        restore(alias)

    message = str(refused.value)
    assert message.startswith("The restore hook 'createsuperuser --noinput --username dev' (SEEDDUMP_RESTORE_HOOKS)")
    assert "DJANGO_SUPERUSER_PASSWORD is not set" in message and "\n" not in message
    assert demo_snapshot(alias) == before
    assert not User.objects.using(alias).filter(username="dev").exists()


def rename_first_team(using: str) -> None:
    with connections[using].cursor() as cursor:
        cursor.execute("UPDATE reality_team SET name = 'renamed by a hook' WHERE id = 1")


def failing_hook(using: str) -> None:
    rename_first_team(using)
    raise RuntimeError("the anonymiser found no users")


def restore_with_a_ready_copy_left(alias: str) -> None:
    """A restore as restoredump does it by default: the background work prepares a ready copy of the dump."""
    plan = restore_module.plan_restore("dev", using=alias)
    result = restore_module.restore(plan, restore_module.RestoreOptions(defer=True))
    assert result.followup is not None and result.followup.ready_copy
    finishing.finish(result.followup, {**postgres.settings_for(alias), "NAME": result.database})


@pytest.mark.usefixtures("dumps_dir", "seeded_dump")
def test_a_failing_hook_leaves_the_target_and_the_cache_untouched(alias: str, settings: Any) -> None:
    restore_with_a_ready_copy_left(alias)
    before = local_work(alias)
    settings.SEEDDUMP_RESTORE_HOOKS = ["tests.test_preswap.failing_hook"]

    with pytest.raises(CommandError) as failed:
        restore(alias)  # claims the ready copy, and the hook changes it before failing

    message = str(failed.value)
    assert "\n" not in message
    assert "The restore hook 'tests.test_preswap.failing_hook' (SEEDDUMP_RESTORE_HOOKS) failed" in message
    assert "RuntimeError: the anonymiser found no users" in message and "was not changed" in message
    assert demo_snapshot(alias) == before
    assert leftovers(alias) == []

    settings.SEEDDUMP_RESTORE_HOOKS = []
    restore(alias)  # the changed ready copy was not given back as the dump's
    assert "renamed by a hook" not in [team.name for team in Team.objects.using(alias).all()]
    assert Team.objects.using(alias).count() == 2
