"""Bad dumps, bad names and protected environments are refused with one clear line; nothing changes."""

from __future__ import annotations

import json
import os
import shutil
import stat
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path

import pytest
from django.core.management import CommandError, call_command
from django.db import connections

from project.reality.models import Team
from seeddump import dumpfiles
from tests.conftest import demo_snapshot, leftovers, manage, run_command

pytestmark = pytest.mark.django_db(transaction=True, databases="__all__")


@pytest.fixture
def marker_team(alias: str) -> Team:
    """A row that must survive every refused restore."""
    return Team.objects.using(alias).create(name="must survive", created_at="2026-01-01T00:00:00Z")


def assert_untouched(alias: str, marker: Team) -> None:
    assert list(Team.objects.using(alias).values_list("name", flat=True)) == [marker.name]
    assert not leftovers(alias)


def _flip_byte(dump: Path) -> None:
    data = bytearray(dump.read_bytes())
    data[len(data) // 2] ^= 0xFF
    dump.write_bytes(bytes(data))


def _truncate(dump: Path) -> None:
    data = dump.read_bytes()
    dump.write_bytes(data[: len(data) // 3])


def _empty(dump: Path) -> None:
    dump.write_bytes(b"")


def _not_a_dump(dump: Path) -> None:
    """A text file whose metadata was rewritten to match it: only the format check can catch it."""
    dump.write_text("SELECT 1;\n" * 100)
    meta_path = dumpfiles.metadata_path(dump)
    meta = json.loads(meta_path.read_text())
    meta["checksum"], meta["sizeBytes"] = dumpfiles.sha256_of(dump), dump.stat().st_size
    meta_path.write_text(json.dumps(meta))


def _no_metadata(dump: Path) -> None:
    dumpfiles.metadata_path(dump).unlink()


def _metadata_not_json(dump: Path) -> None:
    dumpfiles.metadata_path(dump).write_text("{not json")


def _metadata_without_checksum(dump: Path) -> None:
    meta_path = dumpfiles.metadata_path(dump)
    meta = json.loads(meta_path.read_text())
    del meta["checksum"]
    meta_path.write_text(json.dumps(meta))


def _metadata_bad_counts(dump: Path) -> None:
    meta_path = dumpfiles.metadata_path(dump)
    meta = json.loads(meta_path.read_text())
    meta["recordCounts"] = {"reality_node": "many"}
    meta_path.write_text(json.dumps(meta))


def _edit_metadata(**changes: object) -> Callable[[Path], None]:
    def edit(dump: Path) -> None:
        meta_path = dumpfiles.metadata_path(dump)
        meta = json.loads(meta_path.read_text())
        meta.update(changes)
        meta_path.write_text(json.dumps(meta))

    return edit


def _metadata_nested_deeply(dump: Path) -> None:
    meta_path = dumpfiles.metadata_path(dump)
    text = meta_path.read_text().rstrip().removesuffix("}")
    meta_path.write_text(text + ', "deep": ' + "[" * 100_000 + "]" * 100_000 + "}")


def _metadata_huge(dump: Path) -> None:
    _edit_metadata(note="x" * 5_000_000)(dump)


def _dangling_latest(dump: Path) -> None:
    dump.unlink()


BAD_DUMPS: dict[str, tuple[Callable[[Path], None], str]] = {
    "flipped byte": (_flip_byte, "checksum of"),
    "truncated": (_truncate, "truncated or was changed"),
    "empty file": (_empty, "truncated or was changed"),
    "not a dump": (_not_a_dump, "not a pg_dump custom-format archive"),
    "no metadata": (_no_metadata, r"is missing .* Copy .*\.metadata\.json from where the dump came from"),
    "metadata not JSON": (_metadata_not_json, "not valid JSON"),
    "metadata without checksum": (_metadata_without_checksum, "the field 'checksum' is missing"),
    "metadata with bad counts": (_metadata_bad_counts, "the row count of reality_node must be a whole number"),
    "metadata nested 100,000 deep": (_metadata_nested_deeply, "nested too deeply"),
    "metadata of 5 MB": (_metadata_huge, "more than metadata ever needs"),
    "sizeBytes 10^400": (_edit_metadata(sizeBytes=10**400), "sizeBytes must be a whole number"),
    "pgDumpVersion x": (_edit_metadata(pgDumpVersion="x"), "pgDumpVersion must be text"),
    "durationSeconds nan": (_edit_metadata(durationSeconds="nan"), "durationSeconds must be a number"),
    "note of 20,000 characters": (_edit_metadata(note="n" * 20_000), "note must be text of at most 10000"),
    "timestamp in the future": (_edit_metadata(timestamp="2099-01-01T00:00:00Z"), "is in the future"),
    "metadata of another environment": (_edit_metadata(environment="staging"), "it says environment 'staging'"),
    "latest points nowhere": (_dangling_latest, "which is missing"),
}


@pytest.mark.parametrize("damage", BAD_DUMPS, ids=list(BAD_DUMPS))
def test_bad_dump_is_refused_and_database_unchanged(
    alias: str, seeded_dump: Path, marker_team: Team, damage: str
) -> None:
    corrupt, message = BAD_DUMPS[damage]
    corrupt(seeded_dump)

    with pytest.raises(CommandError, match=message):
        run_command("restoredump", "dev", database=alias, interactive=False)

    assert_untouched(alias, marker_team)


def test_restore_failure_from_the_command_line_is_one_line(
    alias: str, seeded_dump: Path, marker_team: Team, dumps_dir: Path
) -> None:
    _flip_byte(seeded_dump)

    result = manage("restoredump", "dev", "--no-input", alias=alias, dumps_dir=dumps_dir)

    assert result.returncode == 1
    assert result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("CommandError: The checksum of ")
    assert "generatedump dev" in lines[0]
    assert_untouched(alias, marker_team)


def test_missing_dump_says_how_to_make_one(alias: str, dumps_dir: Path) -> None:
    with pytest.raises(CommandError, match=r"There is no dev dump in .*python manage.py generatedump dev"):
        run_command("restoredump", "dev", database=alias, interactive=False)


def test_answering_no_cancels(alias: str, seeded_dump: Path, marker_team: Team, dumps_dir: Path) -> None:
    result = manage("restoredump", "dev", alias=alias, dumps_dir=dumps_dir, stdin="no\n")

    assert result.returncode == 1
    assert "This replaces the database '" in result.stdout
    assert connections[alias].settings_dict["NAME"] in result.stdout
    assert "Restore cancelled; the database was not changed." in result.stderr
    assert_untouched(alias, marker_team)


def test_answering_yes_restores(alias: str, seeded_dump: Path, marker_team: Team, dumps_dir: Path) -> None:
    result = manage("restoredump", "dev", alias=alias, dumps_dir=dumps_dir, stdin="yes\n")

    assert result.returncode == 0, result.stderr
    assert Team.objects.using(alias).filter(name=marker_team.name).count() == 0
    assert Team.objects.using(alias).count() == 2


@pytest.mark.parametrize("environment", ["prod", "production"])
def test_protected_environment_is_refused(alias: str, seeded_dump: Path, marker_team: Team, environment: str) -> None:
    with pytest.raises(CommandError, match=f"protected environment '{environment}'"):
        run_command("restoredump", environment, database=alias, interactive=False)
    assert_untouched(alias, marker_team)


def test_dump_of_a_protected_environment_is_refused_under_another_name(
    alias: str, seeded_dump: Path, marker_team: Team, settings
) -> None:
    settings.SEEDDUMP_PROTECTED_ENVIRONMENTS = ["dev"]
    with pytest.raises(CommandError, match="protected environment 'dev'"):
        run_command("restoredump", "staging", dump=str(seeded_dump), database=alias, interactive=False)
    assert_untouched(alias, marker_team)


def test_dump_of_another_environment_is_refused(alias: str, seeded_dump: Path, marker_team: Team) -> None:
    with pytest.raises(CommandError, match="is a 'dev' dump, not 'staging'"):
        run_command("restoredump", "staging", dump=str(seeded_dump), database=alias, interactive=False)
    assert_untouched(alias, marker_team)


BAD_NAMES = ["../x", "", "Dev", "dev.1", "a b", "dev/x", "1dev", "dev\n", "x" * 33]


@pytest.mark.parametrize("command", ["generatedump", "restoredump"])
@pytest.mark.parametrize("name", BAD_NAMES, ids=[repr(n) for n in BAD_NAMES])
def test_bad_environment_names_are_refused(dumps_dir: Path, command: str, name: str) -> None:
    with pytest.raises(CommandError, match="Invalid environment name"):
        call_command(command, name, interactive=False) if command == "restoredump" else call_command(command, name)
    assert not dumps_dir.exists() or not any(dumps_dir.iterdir())


def test_empty_database_is_refused_unless_allowed(alias: str, dumps_dir: Path) -> None:
    with pytest.raises(CommandError, match=r"holds no data to dump.*--allow-empty"):
        run_command("generatedump", "dev", database=alias)
    assert dumpfiles.list_dumps(dumps_dir) == []

    result = run_command("generatedump", "dev", database=alias, allow_empty=True)
    assert Path(result.out.split()[-1]).is_file()


def test_unknown_database_alias_is_refused(dumps_dir: Path) -> None:
    with pytest.raises(CommandError, match="There is no database 'nope' in DATABASES"):
        run_command("generatedump", "dev", database="nope")


def test_unreachable_server_is_one_clear_line(alias: str, dumps_dir: Path, settings) -> None:
    settings.SEEDDUMP_CONNECT_TIMEOUT = 1
    result = manage(
        "generatedump",
        "dev",
        alias=alias,
        dumps_dir=dumps_dir,
        env={"DATABASE_URL": "postgres://postgres@127.0.0.1:1/nowhere", "SEEDDUMP_CONNECT_TIMEOUT": "1"},
    )
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [result.stderr.strip()]
    assert "Cannot connect to database 'nowhere' on 127.0.0.1:1" in result.stderr
    assert "Check that PostgreSQL is running" in result.stderr


# --- Secrets ----------------------------------------------------------------------------------------

PASSWORD = "s3cret-Pa55word-xyzzy"


def test_password_goes_through_the_environment_only(
    alias: str, seeded_dump: Path, dumps_dir: Path, spy_bin: Path
) -> None:
    settings_dict = connections[alias].settings_dict
    original = settings_dict.get("PASSWORD")
    settings_dict["PASSWORD"] = PASSWORD  # trust auth on both servers: accepted, and handed to the tools
    try:
        call_command("seed", "dev", scale=1, database=alias, verbosity=0)
        generated = run_command("generatedump", "dev", database=alias, verbosity=3)
        restored = run_command("restoredump", "dev", database=alias, interactive=False, verbosity=3)
    finally:
        settings_dict["PASSWORD"] = original
        connections[alias].close()

    log = spy_bin.read_text()
    assert "ARGV " in log and "pg_dump --format=custom" in log and "pg_restore " in log
    assert "ENV has PGPASSWORD" in log
    assert PASSWORD not in log
    for output in (generated.out, generated.err, restored.out, restored.err):
        assert PASSWORD not in output
    for path in dumps_dir.iterdir():
        if path.is_file():
            assert PASSWORD.encode() not in path.read_bytes()


def test_dumps_folder_is_private(alias: str, dumps_dir: Path) -> None:
    call_command("seed", "dev", scale=1, database=alias, verbosity=0)
    run_command("generatedump", "dev", database=alias)
    assert stat.S_IMODE(dumps_dir.stat().st_mode) == 0o700
    for path in dumps_dir.iterdir():
        if not path.is_symlink():
            assert stat.S_IMODE(os.stat(path).st_mode) == 0o600, path


def test_a_mistyped_environment_names_the_ones_there(alias: str, seeded_dump: Path) -> None:
    with pytest.raises(CommandError) as refused:
        run_command("restoredump", "deb", database=alias, interactive=False)
    assert "There is no deb dump in" in str(refused.value)
    assert "It has dumps of: dev. Did you mean 'dev'?" in str(refused.value)


def test_a_newer_dump_beside_the_latest_is_pointed_out(alias: str, seeded_dump: Path, dumps_dir: Path) -> None:
    """A teammate's newer dump copied into the folder by hand: latest still names the older one."""
    metadata = dumpfiles.read_metadata(seeded_dump)
    later = metadata.timestamp + timedelta(seconds=1)
    newer = dumps_dir / dumpfiles.dump_name("dev", metadata.version, later)
    shutil.copy(seeded_dump, newer)
    meta = json.loads(dumpfiles.metadata_path(seeded_dump).read_text())
    meta.update(dumpFile=newer.name, timestamp=dumpfiles.isoformat(later))
    dumpfiles.metadata_path(newer).write_text(json.dumps(meta))

    restored = run_command("restoredump", "dev", database=alias, interactive=False)
    listing = run_command("listdumps", "dev", database=alias)

    hint = f"A newer dev dump is in {dumps_dir}: {newer.name}, but dev-seeded-latest.dump names {seeded_dump.name}"
    assert hint in restored.err and f"restoredump dev --dump {newer}" in restored.err
    assert f"Restored {seeded_dump.name}" in restored.out
    assert hint in listing.err
    version = dumpfiles.DUMP_NAME_RE.fullmatch(seeded_dump.name)["version"]  # type: ignore[index]
    assert "VERSION" in listing.out.splitlines()[0] and f" {version} " in listing.out


def test_a_dump_changed_after_a_restore_is_hashed_again_and_refused(alias: str, seeded_dump: Path) -> None:
    # A restore hashes the dump once and remembers the file as it was; a warm restore then skips the hash.
    run_command("restoredump", "dev", database=alias, interactive=False)
    Team.objects.using(alias).create(name="changed since", created_at="2026-01-01T00:00:00Z")
    rows = demo_snapshot(alias)
    before = seeded_dump.stat()
    _flip_byte(seeded_dump)  # the same size and inode
    os.utime(seeded_dump, ns=(before.st_atime_ns, before.st_mtime_ns))  # and its modification time set back

    with pytest.raises(CommandError, match=r"The checksum of .* does not match its metadata"):
        run_command("restoredump", "dev", database=alias, interactive=False)

    assert demo_snapshot(alias) == rows
