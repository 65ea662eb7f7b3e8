"""SEEDDUMP_EXCLUDE_TABLE_DATA: tables whose rows are not dumped while their schema is (sessions, caches, logs)."""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path

import pytest
from django.contrib.sessions.models import Session
from django.core.management import CommandError, call_command
from django.utils import timezone

from project.reality.models import RealityNode
from seeddump import dumpfiles
from tests.conftest import run_command, table_rows

pytestmark = pytest.mark.django_db(transaction=True, databases="__all__")


def some_sessions(alias: str, n: int = 5) -> None:
    expires = timezone.now() + timedelta(days=1)
    Session.objects.using(alias).bulk_create(
        Session(session_key=f"key{i:036d}", session_data="x", expire_date=expires) for i in range(n)
    )


@pytest.mark.parametrize("names", [["sessions.Session"], ["django_sess*"]], ids=["model", "pattern"])
def test_rows_left_out_are_said_everywhere_and_the_restore_checks_pass(
    alias: str, dumps_dir: Path, settings, names: list[str]
) -> None:
    call_command("seed", "dev", scale=1, database=alias, verbosity=0)
    some_sessions(alias)
    nodes = RealityNode.objects.using(alias).count()
    settings.SEEDDUMP_EXCLUDE_TABLE_DATA = names

    made = run_command("generatedump", "dev", database=alias, verbosity=2)
    assert "Leaving out the rows of django_session (SEEDDUMP_EXCLUDE_TABLE_DATA)" in made.out + made.err
    dump = dumpfiles.resolve_latest(dumps_dir, "dev")
    metadata = dumpfiles.read_metadata(dump)
    assert metadata.excluded_table_data == ("django_session",)
    assert metadata.record_counts["django_session"] == 0
    assert metadata.record_counts["reality_node"] == nodes
    document = json.loads(dumpfiles.metadata_path(dump).read_text())
    assert document["excludedTableData"] == ["django_session"]

    Session.objects.using(alias).all().delete()
    some_sessions(alias, 2)  # what the restore replaces
    run_command("restoredump", "dev", database=alias, interactive=False)
    assert table_rows(alias, "django_session") == []  # the table is there, empty
    assert RealityNode.objects.using(alias).count() == nodes

    listing = run_command("listdumps", "dev", "--offline", database=alias).out
    assert "data-left-out:1" in listing.splitlines()[-1]
    entries = json.loads(run_command("listdumps", "dev", "--json", "--offline", database=alias).out)["dumps"]
    assert entries[-1]["excludedTableData"] == ["django_session"]


@pytest.mark.parametrize("alias", ["default"])
@pytest.mark.usefixtures("seeded_dump")
def test_a_name_that_matches_nothing_is_refused_before_anything_is_written(
    alias: str, dumps_dir: Path, settings
) -> None:
    before = sorted(p.name for p in dumps_dir.iterdir())
    settings.SEEDDUMP_EXCLUDE_TABLE_DATA = ["sessions.Sesion"]
    with pytest.raises(CommandError) as refused:
        run_command("generatedump", "dev", database=alias)
    assert str(refused.value).startswith("SEEDDUMP_EXCLUDE_TABLE_DATA names 'sessions.Sesion', which is no model")
    assert sorted(p.name for p in dumps_dir.iterdir()) == before
