"""The snapshot cache: a repeated restore of the same dump copies a template database instead of pg_restore."""

from __future__ import annotations

import shutil
from pathlib import Path

import psycopg
import pytest
from django.core.management import CommandError
from django.db import connections
from psycopg import sql

from project.reality.models import Team
from seeddump import databases, postgres, snapshots, undo
from tests.conftest import copy_dump, database_names, database_url, demo_snapshot, manage, own_name, run_command

pytestmark = pytest.mark.django_db(transaction=True, databases="__all__")


def snapshot_names(alias: str, directory: Path | None = None) -> list[str]:
    """Snapshots of a dumps folder (default: the current one) on the alias's server."""
    prefix = snapshots.folder_prefix(directory)
    return sorted(name for name in database_names(alias) if name.startswith(prefix))


def restore(alias: str, **options) -> str:
    return run_command("restoredump", "dev", database=alias, interactive=False, **options).out


def pg_restore_runs(spy_log: Path) -> int:
    """How many times pg_restore restored something (its --version probes aside)."""
    lines = spy_log.read_text().splitlines()
    return sum(1 for line in lines if line.startswith("ARGV ") and "pg_restore " in line and "--dbname=" in line)


def test_second_restore_copies_the_snapshot(alias: str, seeded_dump: Path, spy_bin: Path) -> None:
    first = restore(alias)
    assert "from its cached snapshot" not in first
    seeded = demo_snapshot(alias)
    assert len(snapshot_names(alias)) == 1
    listing = run_command("snapshots", database=alias).out
    assert seeded_dump.name in listing and "1 snapshot(s)" in listing

    Team.objects.using(alias).all().delete()
    second = restore(alias)

    assert "from its cached snapshot" in second
    assert demo_snapshot(alias) == seeded
    assert pg_restore_runs(spy_bin) == 1  # the second restore did not run pg_restore
    assert len(snapshot_names(alias)) == 1


def test_snapshot_accepts_no_connections(alias: str, seeded_dump: Path) -> None:
    restore(alias)
    [name] = snapshot_names(alias)
    with pytest.raises(psycopg.OperationalError, match="not currently accepting connections"):
        psycopg.connect(**postgres.connect_kwargs(connections[alias].settings_dict, name)).close()


def test_no_snapshot_option(alias: str, seeded_dump: Path, spy_bin: Path) -> None:
    restore(alias, snapshot=False)
    assert snapshot_names(alias) == []
    restore(alias)
    restore(alias, snapshot=False)
    assert pg_restore_runs(spy_bin) == 3


def test_setting_switches_the_cache_off(alias: str, seeded_dump: Path, settings) -> None:
    settings.SEEDDUMP_SNAPSHOTS = False
    restore(alias)
    assert "from its cached snapshot" not in restore(alias)
    assert snapshot_names(alias) == []


def test_snapshot_of_a_deleted_dump_is_dropped(alias: str, seeded_dump: Path, seeded_dumps, dumps_dir: Path) -> None:
    restore(alias)
    assert len(snapshot_names(alias)) == 1
    seeded_dump.unlink()
    assert "Dropped seeddump_snap_" in run_command("snapshots", database=alias, prune=True).out
    assert snapshot_names(alias) == []


def test_snapshots_are_bounded(alias: str, seeded_dump: Path, dumps_dir: Path, settings, tmp_path: Path) -> None:
    settings.SEEDDUMP_SNAPSHOTS_KEEP = 1
    restore(alias)
    [first] = snapshot_names(alias)
    # A second, different dump of the same data (another version): its own snapshot replaces the first.
    run_command("restoredump", "dev", database=alias, interactive=False)
    Team.objects.using(alias).filter(pk=2).delete()
    settings.SEEDDUMP_VERSION = "other"
    run_command("generatedump", "dev", database=alias)
    restore(alias)
    [second] = snapshot_names(alias)
    assert second != first


def test_snapshots_of_another_dumps_folder_are_left_alone(
    alias: str, seeded_dump: Path, seeded_dumps, settings, tmp_path: Path, dumps_dir: Path
) -> None:
    restore(alias)
    mine = snapshot_names(alias)
    assert len(mine) == 1
    other = tmp_path / "other-dumps"
    copy_dump(seeded_dumps[alias], other)
    settings.SEEDDUMP_DIR = other
    try:
        run_command("snapshots", database=alias, drop_all=True)
        assert snapshot_names(alias, dumps_dir) == mine
        restore(alias)
        assert len(snapshot_names(alias)) == 1
        assert snapshot_names(alias, dumps_dir) == mine
    finally:
        run_command("snapshots", database=alias, drop_all=True)
        shutil.rmtree(other)


def test_prune_all_folders_drops_what_vanished_folders_left(
    alias: str, seeded_dump: Path, seeded_dumps, dumps_dir: Path, settings, tmp_path: Path
) -> None:
    restore(alias)
    mine = snapshot_names(alias)
    gone = tmp_path / "deleted-checkout"  # a CI workspace or an old checkout, deleted since
    copy_dump(seeded_dumps[alias], gone)
    settings.SEEDDUMP_DIR = gone
    restore(alias)
    [theirs] = snapshot_names(alias)
    shutil.rmtree(gone)
    settings.SEEDDUMP_DIR = dumps_dir

    assert f"[{gone}]" in run_command("snapshots", database=alias, all_folders=True).out
    assert "No snapshot to drop." in run_command("snapshots", database=alias, prune=True).out  # this folder only
    assert snapshot_names(alias, gone) == [theirs]

    pruned = run_command("snapshots", database=alias, prune=True, all_folders=True).out
    assert f"Dropped {theirs}" in pruned
    assert snapshot_names(alias, gone) == []
    assert snapshot_names(alias) == mine  # a folder that exists keeps its snapshot


def test_all_folders_does_not_go_with_drop_all(alias: str, dumps_dir: Path) -> None:
    with pytest.raises(CommandError, match="--all-folders goes with --prune or a listing"):
        run_command("snapshots", database=alias, drop_all=True, all_folders=True)


def test_a_database_merely_called_seeddump_is_no_other_projects_copy(alias: str, dumps_dir: Path) -> None:
    """A project whose own database is called seeddump_* (the demo's is seeddump_demo), and another project's
    database of such a name, are nobody's copies; another project's undo copy is. All named for this run
    (``own_name``, the copy by its label), so that the next run drops them if this one is killed."""
    own, shop = f"seeddump_demo_{own_name('project')}", f"seeddump_shop_{own_name('project')}"
    another = own_name("another_project")
    copy = undo.prefix(another) + "0badc0de"
    with postgres.connect_maintenance(connections[alias].settings_dict) as admin:
        for name in (own, shop, copy):
            admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        databases.label(admin, copy, {"seeddump": "undo", "database": another})
    try:
        env = {"DATABASE_URL": database_url(alias, own)}
        listed = manage("snapshots", "--others", alias=alias, dumps_dir=dumps_dir, env=env)
        assert listed.returncode == 0, listed.stderr
        assert copy in listed.stdout, listed.stdout
        assert own not in listed.stdout and shop not in listed.stdout, listed.stdout
    finally:
        with postgres.connect_maintenance(connections[alias].settings_dict) as admin:
            for name in (own, shop, copy):
                admin.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))
