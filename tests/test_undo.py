"""Undo: a restore keeps the database (and media folder) it replaced, and ``restoredump --undo`` puts it back.

On both servers: after every restore path the undo returns exactly the data from before, a second undo is
refused in one line, and only a copy the connecting role made is ever put back."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from django.core.management import CommandError
from django.db import connections

from project.reality.models import Team
from seeddump import databases, finishing, postgres, undo
from seeddump import restore as restore_module
from seeddump.models import DumpRecord
from tests.conftest import (
    MediaDump,
    copy_dump,
    demo_snapshot,
    files_of,
    leftovers,
    run_command,
    schema_snapshot,
)
from tests.test_identity import Server, identity, restoredump, team_names
from tests.test_identity import server as server_fixture
from tests.test_media import beside, restore
from tests.test_preswap import restore_with_a_ready_copy_left

server = server_fixture  # a fixture of test_identity's, used here by name

pytestmark = pytest.mark.django_db(transaction=True, databases="__all__")


def undo_restore(alias: str, *args: str, **options: Any) -> str:
    return run_command("restoredump", "--undo", *args, database=alias, interactive=False, **options).out


def kept_copies(alias: str) -> list[undo.UndoCopy]:
    with postgres.connect_maintenance(connections[alias].settings_dict) as admin:
        return undo.list_copies(admin, connections[alias].settings_dict["NAME"])


@pytest.fixture(autouse=True)
def _drop_scratch_notes() -> Iterator[None]:
    """The table ``local_work`` makes outlives the test's flush when an undo brings it back."""
    yield
    for alias in connections.settings:
        with connections[alias].cursor() as cursor:
            cursor.execute("DROP TABLE IF EXISTS my_scratch_notes")


def local_work(alias: str) -> dict[str, Any]:
    """A developer's own rows, schema and dump records, which an undo must bring back exactly."""
    Team.objects.using(alias).create(name="my local team", created_at="2026-02-01T00:00:00Z")
    with connections[alias].cursor() as cursor:
        cursor.execute("CREATE TABLE my_scratch_notes (note text)")
        cursor.execute("INSERT INTO my_scratch_notes VALUES ('keep me')")
    return {
        "rows": demo_snapshot(alias),
        "schema": schema_snapshot(alias),
        "records": sorted(DumpRecord.objects.using(alias).values_list("file_name", flat=True)),
    }


def as_it_was(alias: str) -> dict[str, Any]:
    return {
        "rows": demo_snapshot(alias),
        "schema": schema_snapshot(alias),
        "records": sorted(DumpRecord.objects.using(alias).values_list("file_name", flat=True)),
    }


@pytest.mark.parametrize("path", ["pg_restore", "snapshot", "ready copy", "in place"])
@pytest.mark.usefixtures("dumps_dir")
def test_undo_after_each_restore_path_brings_back_exactly_what_was_there(
    alias: str, seeded_dump: Path, path: str
) -> None:
    if path == "snapshot":
        restore(alias)  # caches the snapshot
    elif path == "ready copy":
        restore_with_a_ready_copy_left(alias)
    before = local_work(alias)

    out = restore(alias, *(["--in-place"] if path == "in place" else []))
    expected = {"pg_restore": "", "snapshot": " from its cached snapshot", "ready copy": " from its ready copy"}
    assert f"into '{connections[alias].settings_dict['NAME']}'{expected.get(path, ' in place')}:" in out
    assert "Undo it with: python manage.py restoredump --undo (until the next restore)" in out
    assert as_it_was(alias) != before
    [kept] = kept_copies(alias)
    assert kept.replaced_by == seeded_dump.name and kept.environment == "dev"

    undone = undo_restore(alias)

    assert f"Put back '{connections[alias].settings_dict['NAME']}' as it was before {seeded_dump.name} replaced" in (
        undone
    )
    assert as_it_was(alias) == before
    assert kept_copies(alias) == [] and leftovers(alias) == []

    with pytest.raises(CommandError) as again:
        undo_restore(alias)
    message = str(again.value)
    assert "\n" not in message
    assert f"Nothing to undo for '{connections[alias].settings_dict['NAME']}'" in message
    assert as_it_was(alias) == before


@pytest.mark.usefixtures("dumps_dir")
def test_only_the_last_restore_is_kept_and_undone(alias: str, seeded_dump: Path) -> None:
    restore(alias)
    between = local_work(alias)
    restore(alias)  # the copy of the first restore's database goes; this one's is kept

    assert len(kept_copies(alias)) == 1
    undo_restore(alias)
    assert as_it_was(alias) == between


@pytest.fixture
def media_dump_over_notes(
    alias: str, media_dumps: dict[str, MediaDump], dumps_dir: Path, media_root: Path
) -> MediaDump:
    """The session's dump with media as dev's latest, and a MEDIA_ROOT holding the developer's own notes."""
    copy_dump(media_dumps[alias].path, dumps_dir)
    media_root.mkdir()
    (media_root / "notes.txt").write_text("my notes")
    return media_dumps[alias]


def test_undo_brings_back_the_media_folder(alias: str, media_dump_over_notes: MediaDump, media_root: Path) -> None:
    before = local_work(alias)

    restore(alias)
    assert files_of(media_root) == media_dump_over_notes.files
    assert beside(media_root) == [f".media.seeddump-undo.{finishing.tag(connections[alias].settings_dict['NAME'])}"]
    assert kept_copies(alias)[0].media == "kept"

    out = undo_restore(alias)

    assert f"Put back its media folder {media_root}." in out
    assert files_of(media_root) == {"notes.txt": b"my notes"}
    assert as_it_was(alias) == before
    assert beside(media_root) == []


def test_undo_of_a_restore_that_made_the_media_folder_removes_it(
    alias: str, media_dumps: dict[str, MediaDump], dumps_dir: Path, media_root: Path
) -> None:
    copy_dump(media_dumps[alias].path, dumps_dir)
    assert not media_root.exists()
    restore(alias)
    assert files_of(media_root) == media_dumps[alias].files

    undo_restore(alias)

    assert not media_root.exists() and beside(media_root) == []


@pytest.mark.usefixtures("dumps_dir", "seeded_dump")
def test_with_the_setting_off_nothing_is_kept(alias: str, settings: Any) -> None:
    restore(alias)
    assert len(kept_copies(alias)) == 1
    settings.SEEDDUMP_UNDO = False

    out = restore(alias)

    assert "The replaced database is not kept for an undo: SEEDDUMP_UNDO is off." in out
    assert kept_copies(alias) == [] and leftovers(alias) == []  # the earlier copy no longer undoes anything
    with pytest.raises(CommandError, match="Nothing to undo"):
        undo_restore(alias)


@pytest.mark.usefixtures("dumps_dir", "seeded_dump")
def test_undo_refuses_what_it_does_not_take(alias: str) -> None:
    before = local_work(alias)
    restore(alias)
    after = as_it_was(alias)

    with pytest.raises(CommandError) as options:
        undo_restore(alias, "--dump", "x.dump", "--migrate")
    assert str(options.value) == "--undo puts back the replaced database as it was; it does not take --dump, --migrate."
    with pytest.raises(CommandError) as other:
        run_command("restoredump", "staging", "--undo", database=alias, interactive=False)
    assert "The last restore of" in str(other.value) and "was of a 'dev' dump, not 'staging'" in str(other.value)
    assert as_it_was(alias) == after

    run_command("restoredump", "dev", "--undo", database=alias, interactive=False)
    assert as_it_was(alias) == before


@pytest.mark.usefixtures("dumps_dir", "seeded_dump")
def test_snapshots_lists_the_copy_with_its_size_and_drop_all_drops_it(alias: str) -> None:
    restore(alias)
    [kept] = kept_copies(alias)

    listing = run_command("snapshots", database=alias).out
    assert f"{kept.name}  " in listing and "(for an undo: '" in listing
    total = next(line for line in listing.splitlines() if "snapshot(s)," in line)
    assert "kept for undo" in total

    run_command("snapshots", "--drop-all", database=alias)
    assert kept_copies(alias) == []


def undo_copy_of(server: Server, role: str, target: str, suffix: str, *, replaced_at: str) -> str:
    """A database ``role`` makes under the target's undo name, labelled as an undo copy of it."""
    name = undo.prefix(target) + suffix
    label = {"seeddump": "undo", "database": target, "replacedAt": replaced_at, "environment": "dev"}
    server.execute("postgres", f'CREATE DATABASE "{name}"', role=role)
    server.execute("postgres", f"COMMENT ON DATABASE \"{name}\" IS '{json.dumps(label)}'", role=role)
    return name


@pytest.mark.usefixtures("dumps_dir", "seeded_dump")
def test_a_lookalike_undo_copy_of_another_role_is_never_put_back(alias: str, server: Server) -> None:
    before = local_work(alias)
    restore(alias)
    target = connections[alias].settings_dict["NAME"]
    hostile = server.role("hostile", "LOGIN CREATEDB")
    lookalike = undo_copy_of(server, hostile, target, "ffffffff", replaced_at="2099-01-01T00:00:00Z")
    server.execute(lookalike, "CREATE TABLE planted (id int)", role=hostile)

    undo_restore(alias)

    assert as_it_was(alias) == before  # ours, not the newer-labelled lookalike
    assert server.query(lookalike, "SELECT to_regclass('planted') IS NOT NULL") == [(True,)]  # left alone
    assert (
        f"keeps this project's copies on this server ('{hostile}': 1;" in run_command("snapshots", database=alias).err
    )


def test_an_app_role_gets_its_database_back_with_its_identity(
    server: Server, seeded_dump: Path, dumps_dir: Path
) -> None:
    app, reader = server.role("app", "LOGIN CREATEDB"), server.role("reader")
    target = server.database(app)
    server.execute(
        target,
        f"ALTER DATABASE \"{target}\" SET work_mem = '5MB'",
        f'GRANT CONNECT ON DATABASE "{target}" TO "{reader}"',
        "CREATE TABLE precious (id int)",
        "INSERT INTO precious VALUES (1)",
        role=app,
    )
    before = identity(server, target)

    restoredump(server, dumps_dir, app, target)
    assert server.query(target, "SELECT to_regclass('precious') IS NULL") == [(True,)]
    result = undo_as(server, dumps_dir, app, target)

    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["result"] == "undone"
    assert server.query(target, "SELECT id FROM precious") == [(1,)]
    assert identity(server, target) == before


def test_in_place_without_createdb_says_no_undo_is_kept(server: Server, seeded_dump: Path, dumps_dir: Path) -> None:
    app = server.role("app", "LOGIN")
    target = server.database(app)

    done = restoredump(server, dumps_dir, app, target, "--in-place")

    assert done["undo"] is None and "this role may not create databases" in done["undoNote"]
    assert len(team_names(server, target, role=app)) > 0
    refused = undo_as(server, dumps_dir, app, target)
    assert refused.returncode == 1 and "Nothing to undo for" in refused.stderr


def undo_as(server: Server, dumps_dir: Path, role: str, target: str) -> Any:
    from tests.conftest import database_url, manage

    env = {"DATABASE_URL": database_url(server.alias, target, role)}
    return manage("restoredump", "--undo", "--no-input", "--json", alias=server.alias, dumps_dir=dumps_dir, env=env)


@pytest.mark.usefixtures("dumps_dir", "seeded_dump")
def test_the_background_work_does_not_record_a_restore_that_was_undone(alias: str) -> None:
    before = local_work(alias)
    plan = restore_module.plan_restore("dev", using=alias)
    result = restore_module.restore(
        plan, restore_module.RestoreOptions(defer=True)
    )  # as restoredump does: the records are written later
    assert result.followup is not None and result.followup.restore_times is not None
    restore_module.undo_last(alias)
    said: list[str] = []

    finishing.finish(result.followup, {**postgres.settings_for(alias), "NAME": result.database}, said.append)

    assert f"Did not record the restore for the admin: '{result.database}' was replaced since" in said
    assert as_it_was(alias) == before


def test_a_restore_that_leaves_the_files_alone_drops_the_folder_kept_before(
    alias: str, media_dump_over_notes: MediaDump, media_root: Path
) -> None:
    restore(alias)  # keeps the folder with the notes for an undo

    restore(alias, "--no-media")  # the database only: the kept folder no longer undoes the last restore

    assert beside(media_root) == []
    undo_restore(alias)
    assert files_of(media_root) == media_dump_over_notes.files  # that restore left the files alone; so does its undo


@pytest.mark.usefixtures("dumps_dir", "seeded_dump")
def test_the_copy_a_killed_in_place_restore_left_is_never_put_back_and_is_dropped(alias: str) -> None:
    target = connections[alias].settings_dict["NAME"]
    connections[alias].close()
    settings_dict = connections[alias].settings_dict
    with postgres.connect_maintenance(settings_dict) as admin:
        # As an in-place restore killed before its commit leaves it: the target's objects are still those.
        objects = databases.own_objects(settings_dict, target)
        left = undo.make_pending(admin, target, label={"database": target}, objects=objects)

    with pytest.raises(CommandError, match="Nothing to undo"):
        undo_restore(alias)
    with postgres.connect_maintenance(settings_dict) as admin:
        assert not databases.exists(admin, left)  # the undo dropped it first (as every restore path does)

    restore(alias, "--in-place", verbosity=2)
    assert left not in {copy.name for copy in kept_copies(alias)} and len(kept_copies(alias)) == 1
