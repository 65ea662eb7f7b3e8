"""Dumps that no longer match the migrations are reported by migrate, check, the admin and restoredump."""

from __future__ import annotations

from io import StringIO
from pathlib import Path

import pytest
from django.contrib.auth.models import User
from django.core.management import CommandError, call_command
from django.db import connections
from django.test import Client

from seeddump.models import DumpRecord
from tests.conftest import run_command

pytestmark = pytest.mark.django_db(transaction=True, databases="__all__")

MISSING = "reality.0002_node_rank"
FOREIGN = "reality.0099_from_another_branch"


def migrate(alias: str, *args: str) -> str:
    out = StringIO()
    call_command("migrate", *args, database=alias, stdout=out, verbosity=1)
    return out.getvalue()


def check_output() -> str:
    out, err = StringIO(), StringIO()
    call_command("check", stdout=out, stderr=err)
    return out.getvalue() + err.getvalue()


def dump_behind_the_code(alias: str) -> Path:
    """Seed, migrate the demo app back one step, dump: the dump lacks reality.0002_node_rank."""
    call_command("seed", "dev", scale=1, database=alias, verbosity=0)
    migrate(alias, "reality", "0001")
    return Path(run_command("generatedump", "dev", database=alias).out.split()[-1])


def column_exists(alias: str, table: str, column: str) -> bool:
    with connections[alias].cursor() as cursor:
        return column in [c.name for c in connections[alias].introspection.get_table_description(cursor, table)]


def test_migrate_warns_about_a_stale_dump_and_check_and_admin_agree(
    alias: str, dumps_dir: Path, migrated_back_at_the_end: None
) -> None:
    dump = dump_behind_the_code(alias)

    output = migrate(alias)

    warnings = [line for line in output.splitlines() if line.startswith("seeddump:")]
    assert len(warnings) == 1
    assert warnings[0].startswith("seeddump: the dev dump v")
    assert (
        f"is stale: 1 migration is not in it ({MISSING}). Regenerate it: python manage.py generatedump dev"
        in (warnings[0])
    )
    checks = check_output()
    assert "seeddump.W001" in checks and MISSING in checks
    assert "HINT: Regenerate it: python manage.py generatedump dev" in checks

    if alias == "default":
        admin = Client()
        admin.force_login(User.objects.create_superuser("admin", "a@example.com", "pw"))
        page = admin.get("/admin/seeddump/dumprecord/").content.decode()
        assert "stale: 1 behind" in page
        assert dump.name in admin.get("/admin/seeddump/dumprecord/?schema=stale").content.decode()
        assert dump.name not in admin.get("/admin/seeddump/dumprecord/?schema=current").content.decode()

    # Regenerated at the current schema: migrate, check and the admin are all quiet about it.
    fresh = Path(run_command("generatedump", "dev", database=alias).out.split()[-1])
    assert "seeddump:" not in migrate(alias)
    assert "seeddump.W001" not in check_output()
    if alias == "default":
        page = admin.get("/admin/seeddump/dumprecord/?schema=current").content.decode()
        assert fresh.name in page and dump.name not in page


def test_silence_without_dumps_or_folder(alias: str, tmp_path: Path, settings) -> None:
    settings.SEEDDUMP_DIR = tmp_path / "does-not-exist"
    assert "seeddump:" not in migrate(alias)
    assert "seeddump.W" not in check_output()
    settings.SEEDDUMP_DIR = tmp_path
    assert "seeddump:" not in migrate(alias)
    assert "seeddump.W" not in check_output()


def test_dump_with_migrations_the_code_lacks(alias: str, dumps_dir: Path, migrated_back_at_the_end: None) -> None:
    call_command("seed", "dev", scale=1, database=alias, verbosity=0)
    with connections[alias].cursor() as cursor:
        cursor.execute(
            "INSERT INTO django_migrations (app, name, applied) VALUES ('reality', '0099_from_another_branch', now())"
        )
    run_command("generatedump", "dev", database=alias)
    with connections[alias].cursor() as cursor:
        cursor.execute("TRUNCATE reality_team CASCADE")

    output = migrate(alias)
    assert f"it holds 1 migration the code does not have ({FOREIGN})" in output
    assert "made on another branch" in output

    with pytest.raises(CommandError, match=rf"holds 1 migration this code does not have \({FOREIGN}\).*--force"):
        run_command("restoredump", "dev", database=alias, interactive=False)
    assert DumpRecord.objects.using(alias).count() == 1  # refused before anything changed
    with connections[alias].cursor() as cursor:
        cursor.execute("SELECT count(*) FROM reality_team")
        assert cursor.fetchone() == (0,)

    forced = run_command("restoredump", "dev", database=alias, interactive=False, force=True)
    assert "holds migrations this code does not have" in forced.err
    with connections[alias].cursor() as cursor:
        cursor.execute("SELECT count(*) FROM reality_team")
        assert cursor.fetchone() == (2,)


def test_restoring_a_dump_behind_the_code_says_to_migrate(
    alias: str, dumps_dir: Path, migrated_back_at_the_end: None
) -> None:
    dump_behind_the_code(alias)
    migrate(alias)
    assert column_exists(alias, "reality_node", "rank")

    restored = run_command("restoredump", "dev", database=alias, interactive=False)
    assert f"The restored database is behind the code: 1 migration is not in it ({MISSING})" in restored.err
    assert "Run: python manage.py migrate" in restored.err
    assert not column_exists(alias, "reality_node", "rank")

    restored = run_command("restoredump", "dev", database=alias, interactive=False, migrate=True)
    assert "behind the code" not in restored.err
    assert f"Applied 1 migration(s) to the restored database before the swap: {MISSING}." in restored.out
    assert column_exists(alias, "reality_node", "rank")
