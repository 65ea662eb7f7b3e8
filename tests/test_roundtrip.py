"""generatedump then restoredump gives back the seeded database, on both servers."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest
from django.core.management import call_command
from django.db import connections

from project.reality.models import RealityNode, Team
from seeddump import dumpfiles
from seeddump.models import DumpRecord
from tests.conftest import (
    database_names,
    database_url,
    demo_snapshot,
    leftovers,
    manage,
    own_name,
    psycopg_connect,
    run_command,
    schema_snapshot,
)

pytestmark = pytest.mark.django_db(transaction=True, databases="__all__")


def test_round_trip_restores_the_seeded_data_row_for_row(alias: str, dumps_dir: Path) -> None:
    call_command("seed", "dev", scale=1, database=alias, verbosity=0)
    seeded, schema = demo_snapshot(alias), schema_snapshot(alias)
    assert len(seeded["reality_node"]) == 3000

    generated = run_command("generatedump", "dev", database=alias, note="round trip")
    dump = Path(generated.out.strip().splitlines()[-1])
    assert dump.parent == dumps_dir and dump.is_file()

    RealityNode.objects.using(alias).filter(depth__gt=1).delete()
    Team.objects.using(alias).filter(pk=1).update(name="renamed after the dump")
    Team.objects.using(alias).create(name="added after the dump", created_at="2026-01-01T00:00:00Z")
    assert demo_snapshot(alias) != seeded

    restored = run_command("restoredump", "dev", database=alias, interactive=False)

    assert "Restored " + dump.name in restored.out
    assert demo_snapshot(alias) == seeded
    assert schema_snapshot(alias) == schema
    # New rows get fresh ids after a restore, as they did before the dump.
    created = Team.objects.using(alias).create(name="after restore", created_at="2026-01-01T00:00:00Z")
    assert created.pk == len(seeded["reality_team"]) + 1
    assert not leftovers(alias)


def test_metadata_describes_the_dump(alias: str, dumps_dir: Path) -> None:
    call_command("seed", "dev", scale=1, database=alias, verbosity=0)
    dump = Path(run_command("generatedump", "dev", database=alias, note="for QA").out.strip().splitlines()[-1])

    metadata_file = dumps_dir / dump.name.replace(".dump", ".metadata.json")
    metadata = json.loads(metadata_file.read_text())
    assert metadata["environment"] == "dev"
    assert metadata["note"] == "for QA"
    stamp = metadata["timestamp"].replace("-", "").replace(":", "")
    assert dump.name == f"dev-seeded-v{metadata['version']}-{stamp}.dump"
    assert metadata["dumpFile"] == dump.name
    assert metadata["checksum"] == dumpfiles.sha256_of(dump)
    assert metadata["sizeBytes"] == dump.stat().st_size
    assert metadata["recordCounts"]["reality_node"] == 3000
    assert metadata["recordCounts"]["reality_agent"] == 24
    assert metadata["recordCounts"]["reality_team"] == 2
    assert metadata["totalRecords"] == sum(metadata["recordCounts"].values())
    assert "0001_initial" in metadata["migrations"]["reality"]
    assert metadata["database"] == connections[alias].settings_dict["NAME"]
    major = connections[alias].pg_version // 10000
    assert metadata["serverVersion"].split(".")[0] == str(major)
    assert int(metadata["pgDumpVersion"].split(".")[0]) >= major
    assert dump.read_bytes()[:5] == b"PGDMP"
    assert stat.S_IMODE(dump.stat().st_mode) == 0o600
    assert stat.S_IMODE(metadata_file.stat().st_mode) == 0o600
    password = connections[alias].settings_dict.get("PASSWORD")
    if password:
        assert password not in metadata_file.read_text()

    record = DumpRecord.objects.using(alias).get(file_name=dump.name)
    assert record.checksum == metadata["checksum"]
    assert record.record_counts == metadata["recordCounts"]
    assert record.on_disk()


def test_latest_link_moves_and_old_dumps_stay(alias: str, dumps_dir: Path, settings) -> None:
    call_command("seed", "dev", scale=1, database=alias, verbosity=0)
    settings.SEEDDUMP_VERSION = "aaaaaaa"
    first = Path(run_command("generatedump", "dev", database=alias).out.strip().splitlines()[-1])
    first_bytes = first.read_bytes()
    Team.objects.using(alias).filter(pk=2).delete()
    settings.SEEDDUMP_VERSION = "bbbbbbb"
    second = Path(run_command("generatedump", "dev", database=alias).out.strip().splitlines()[-1])

    assert first != second and "vbbbbbbb" in second.name
    assert first.read_bytes() == first_bytes
    assert os.readlink(dumps_dir / "dev-seeded-latest.dump") == second.name
    assert os.readlink(dumps_dir / "dev-seeded-latest.metadata.json") == second.name.replace(".dump", ".metadata.json")
    assert dumpfiles.list_dumps(dumps_dir, "dev") == [first, second]

    run_command("restoredump", "dev", database=alias, interactive=False)
    assert Team.objects.using(alias).count() == 1  # the latest dump, taken after the delete
    records = dict(DumpRecord.objects.using(alias).values_list("file_name", "last_restored_at"))
    assert set(records) == {first.name, second.name}
    assert records[second.name] is not None and records[first.name] is None

    run_command("restoredump", "dev", database=alias, dump=str(first), interactive=False)
    assert Team.objects.using(alias).count() == 2
    records = dict(DumpRecord.objects.using(alias).values_list("file_name", "last_restored_at"))
    assert records[first.name] is not None and records[second.name] is not None


def test_same_second_dumps_get_distinct_names(alias: str, dumps_dir: Path, settings) -> None:
    call_command("seed", "dev", scale=1, database=alias, verbosity=0)
    settings.SEEDDUMP_VERSION = "fixed"
    paths = {Path(run_command("generatedump", "dev", database=alias).out.split()[-1]) for _ in range(3)}
    assert len(paths) == 3
    assert all(path.is_file() for path in paths)


def test_restore_into_a_missing_database_creates_it(
    alias: str, seeded_dump: Path, dumps_dir: Path, cleanup_databases: list
) -> None:
    name = own_name(f"new_{alias}")
    cleanup_databases.append((alias, name))

    result = manage(
        "restoredump",
        "dev",
        "--no-input",
        alias=alias,
        dumps_dir=dumps_dir,
        env={"DATABASE_URL": database_url(alias, name)},
    )

    assert result.returncode == 0, result.stderr
    assert f"Restored {seeded_dump.name} into '{name}'" in result.stdout
    assert name in database_names(alias)
    with psycopg_connect(alias, name) as conn:
        assert conn.execute("SELECT count(*) FROM reality_node").fetchone() == (3000,)
