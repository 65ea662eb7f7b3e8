"""Hostile files, storages and processes: what a teammate's file, a shared storage or another user of the
machine can do, and that each ends as one clear line with nothing lost."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from django.contrib.auth.models import User
from django.core.files.storage import FileSystemStorage
from django.core.management import CommandError
from django.db import connections
from django.test import Client

from project.reality.models import Team
from seeddump import background, dumpfiles, postgres, snapshots
from seeddump.models import DumpRecord
from tests.conftest import (
    REPO,
    copy_dump,
    database_names,
    demo_snapshot,
    manage,
    manage_env,
    run_command,
    wait_for_exit,
)
from tests.test_team import filesystem_storage

pytestmark = pytest.mark.django_db(transaction=True, databases="__all__")


def restore(alias: str, **options: Any) -> str:
    return run_command("restoredump", "dev", database=alias, interactive=False, **options).out


def edit_metadata(dump: Path, **changes: Any) -> None:
    path = dumpfiles.metadata_path(dump)
    data = json.loads(path.read_text())
    data.update(changes)
    path.write_text(json.dumps(data))


# --- Files and the admin ------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["../precious.txt", "ABSOLUTE", "dev-seeded-latest.dump"])
def test_the_admin_deletes_only_dump_files_in_the_dumps_folder(
    seeded_dumps: dict[str, Path], dumps_dir: Path, tmp_path: Path, name: str
) -> None:
    dump = copy_dump(seeded_dumps["default"], dumps_dir)
    precious = tmp_path / "precious.txt"
    precious.write_text("keep me")
    dumpfiles.metadata_path(precious).write_text("keep me too")
    file_name = str(precious) if name == "ABSOLUTE" else name  # records travel inside dumps
    record = DumpRecord.objects.create(
        file_name=file_name, environment="dev", version="x", created_at="2026-01-01T00:00:00Z", size_bytes=1,
        checksum="sha256:" + "0" * 64,
    )  # fmt: skip
    client = Client()
    client.force_login(User.objects.create_superuser("admin", "admin@example.com", "pw"))

    html = client.get("/admin/seeddump/dumprecord/").content.decode()
    assert '<td class="field-file">gone</td>' in html  # not "on disk": not a dump in the folder
    response = client.post(
        "/admin/seeddump/dumprecord/", {"action": "delete_with_files", "_selected_action": [record.pk]}, follow=True
    )

    assert "Deleted 1 record(s) and 0 dump file(s)." in response.content.decode()
    assert precious.read_text() == "keep me" and dumpfiles.metadata_path(precious).read_text() == "keep me too"
    assert dump.is_file() and (dumps_dir / "dev-seeded-latest.dump").is_symlink()


def test_a_dumps_folder_of_another_user_is_refused(alias: str, seeded_dump: Path, dumps_dir: Path) -> None:
    os.chown(dumps_dir, 4242, 4242)
    for command, options in (("generatedump", {}), ("restoredump", {"interactive": False})):
        with pytest.raises(CommandError, match=r"belongs to another user \(uid 4242\)") as refused:
            run_command(command, "dev", database=alias, **options)
        assert "\n" not in str(refused.value)


def test_a_planted_log_link_is_never_followed(alias: str, seeded_dump: Path, dumps_dir: Path, tmp_path: Path) -> None:
    victim = tmp_path / "victim.txt"
    victim.write_bytes(b"v" * 1_100_000)  # past the log's limit, where the old code started over
    (dumps_dir / background.LOG_NAME).symlink_to(victim)

    result = manage(
        "restoredump", "dev", "--no-input", "-v2", alias=alias, dumps_dir=dumps_dir, env={"SEEDDUMP_BACKGROUND": "true"}
    )

    assert result.returncode == 0, result.stderr
    assert "Could not start the background process" in result.stdout and "finishing here" in result.stdout
    assert victim.read_bytes() == b"v" * 1_100_000
    assert (dumps_dir / background.LOG_NAME).is_symlink()  # left as it was: not ours to delete


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 16 MB tmpfs: the machine's own disk is never filled. Needs root (CI runs as root)."""
    mount = tmp_path / "small-disk"
    mount.mkdir()
    if os.geteuid() != 0:
        pytest.skip("mounting a small tmpfs to fill needs root; CI runs as root")
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=16m", "tmpfs", str(mount)], check=True)
    yield mount
    subprocess.run(["umount", "-l", str(mount)], check=True)


@pytest.mark.parametrize("when", ["after pg_dump", "during pg_dump"])
def test_a_full_disk_leaves_no_dump_and_says_how_much_space(
    alias: str, seeded_dumps: dict[str, Path], small_disk: Path, tmp_path: Path, settings, when: str
) -> None:
    dumps = small_disk / "dumps"
    settings.SEEDDUMP_DIR = dumps
    real = postgres.find_program("pg_dump", connections[alias].pg_version // 10000).path
    wrapper = tmp_path / "bin" / "pg_dump"
    wrapper.parent.mkdir()
    fill = f'dd if=/dev/zero of="{small_disk}/filler" bs=64k 2>/dev/null || true'
    wrapper.write_text(
        "#!/bin/sh\n"
        f'case "$1" in --version) exec "{real}" "$@";; esac\n'
        + (f"{fill}\n" if when == "during pg_dump" else "")
        + f'"{real}" "$@"; status=$?\n'
        + (f"{fill}\n" if when == "after pg_dump" else "")
        + "exit $status\n"
    )
    wrapper.chmod(0o755)
    postgres._probe.cache_clear()
    settings.SEEDDUMP_PG_BIN_DIRS = [wrapper.parent]
    run_command("seed", "dev", scale=1, database=alias, verbosity=0)

    with pytest.raises(CommandError) as failed:
        run_command("generatedump", "dev", database=alias)

    message = str(failed.value)
    assert "\n" not in message and f"The disk of {dumps} is full: writing " in message
    assert "MB free" in message and "prunedumps" in message
    written = ".metadata.json failed" if when == "after pg_dump" else ".partial failed"
    assert written in message
    assert not [p.name for p in dumps.iterdir() if p.name != background.LOG_NAME]  # no dump without metadata
    postgres._probe.cache_clear()


# --- Metadata and the shared storage -----------------------------------------------------------------------


@pytest.fixture
def shared(settings, tmp_path: Path) -> Path:
    folder = tmp_path / "shared"
    settings.STORAGES = {**settings.STORAGES, "dumps": filesystem_storage(folder)}
    settings.SEEDDUMP_STORAGE = "dumps"
    return folder / "seeddump"


def push_copy(dump: Path, shared: Path, **metadata_changes: Any) -> Path:
    shared.mkdir(parents=True, exist_ok=True)
    copy = copy_dump(dump, shared, latest=False)
    if metadata_changes:
        edit_metadata(copy, **metadata_changes)
    return copy


def test_a_pull_never_replaces_a_different_local_dump_of_the_same_name(
    alias: str, seeded_dump: Path, dumps_dir: Path, shared: Path
) -> None:
    remote = push_copy(seeded_dump, shared)
    local_bytes = seeded_dump.read_bytes()
    data = bytearray(remote.read_bytes())
    data[-10] ^= 0xFF
    remote.write_bytes(bytes(data))
    edit_metadata(remote, checksum=dumpfiles.sha256_of(remote))
    os.unlink(dumps_dir / "dev-seeded-latest.dump")  # so that the shared one is "newer"
    os.unlink(dumps_dir / "dev-seeded-latest.metadata.json")

    with pytest.raises(CommandError, match="differs from the shared dump of the same name") as refused:
        restore(alias, pull=True)

    assert "\n" not in str(refused.value)
    assert seeded_dump.read_bytes() == local_bytes


def test_shared_objects_whose_metadata_disagrees_with_their_name_are_skipped(
    alias: str, seeded_dump: Path, dumps_dir: Path, shared: Path, settings
) -> None:
    staging_before = dumps_dir / "staging-seeded-latest.dump"
    # A dev object claiming to be staging, and one pinned in the future (under a name of its own).
    push_copy(seeded_dump, shared, environment="staging")
    future = shared / seeded_dump.name.replace("-2026", "-2099", 1)
    shutil.copy(seeded_dump, future)
    meta = json.loads(dumpfiles.metadata_path(seeded_dump).read_text())
    meta.update(dumpFile=future.name, timestamp="2099" + meta["timestamp"][4:])
    dumpfiles.metadata_path(future).write_text(json.dumps(meta))
    (shared / "dev-seeded-vbroken-20260101T000000Z.dump").write_bytes(b"x")
    (shared / "dev-seeded-vbroken-20260101T000000Z.metadata.json").write_text("[" * 100_000)

    listing = run_command("listdumps", "dev", database=alias)
    out = run_command("restoredump", "dev", database=alias, interactive=False, verbosity=2).out

    assert "it says environment 'staging', the name 'dev'" in listing.err
    assert "is in the future" in listing.err and "nested too deeply" in listing.err
    assert f"Restored {seeded_dump.name}" in out  # the local one: nothing shared was usable
    assert not staging_before.exists() and not (dumps_dir / "prod-seeded-latest.dump").exists()


def test_bad_metadata_is_a_warning_in_check_migrate_and_listdumps(
    alias: str, seeded_dump: Path, dumps_dir: Path
) -> None:
    path = dumpfiles.metadata_path(seeded_dump)
    path.write_text(path.read_text().rstrip()[:-1] + ', "deep": ' + "[" * 100_000 + "]" * 100_000 + "}")
    for args in (("check",), ("migrate", "--no-input"), ("listdumps",)):
        result = manage(*args, alias=alias, dumps_dir=dumps_dir)
        assert result.returncode == 0, result.stderr
        assert "Traceback" not in result.stderr and "nested too deeply" in result.stdout + result.stderr
    refused = manage("restoredump", "dev", "--no-input", alias=alias, dumps_dir=dumps_dir)
    assert refused.returncode == 1 and len(refused.stderr.strip().splitlines()) == 1


class StallingStorage(FileSystemStorage):
    """A shared drive that stops answering: every open blocks (until the test ends)."""

    released = threading.Event()

    def _open(self, name: str, mode: str = "rb") -> Any:
        self.released.wait(timeout=60)
        return super()._open(name, mode)


def test_a_stalled_storage_read_times_out(alias: str, seeded_dump: Path, dumps_dir: Path, settings, tmp_path):
    folder = tmp_path / "stalled"
    push_copy(seeded_dump, folder / "seeddump")
    settings.STORAGES = {
        **settings.STORAGES,
        "dumps": {"BACKEND": f"{__name__}.StallingStorage", "OPTIONS": {"location": str(folder)}},
    }
    settings.SEEDDUMP_STORAGE = "dumps"
    settings.SEEDDUMP_STORAGE_TIMEOUT = 1
    StallingStorage.released = threading.Event()
    try:
        listing = run_command("listdumps", "dev", database=alias)
        with pytest.raises(CommandError, match=r"did not answer within 1\.0s") as refused:
            restore(alias, pull=True)
        out = restore(alias, verbosity=2)  # without --pull: said, and the local dump is used
    finally:
        StallingStorage.released.set()
    assert "did not answer within 1.0s" in listing.err
    assert "\n" not in str(refused.value)
    assert "did not answer within 1.0s" in out and f"Restored {seeded_dump.name}" in out


def test_pushes_to_a_folder_are_private(alias: str, dumps_dir: Path, shared: Path) -> None:
    run_command("seed", "dev", scale=1, database=alias, verbosity=0)
    run_command("generatedump", "dev", "--push", database=alias)
    modes = {p.name: p.stat().st_mode & 0o777 for p in shared.iterdir()}
    assert len(modes) == 2 and set(modes.values()) == {0o600}


def test_restoredump_removes_a_killed_downloads_partial(alias: str, seeded_dump: Path, dumps_dir: Path) -> None:
    partial = dumps_dir / ".dev-seeded.999999.abcd1234.partial"  # no process 999999: a killed download
    partial.write_bytes(b"half")
    restore(alias)
    assert not partial.exists()


# --- Signing --------------------------------------------------------------------------------------------


def test_signed_dumps(alias: str, dumps_dir: Path, settings, spy_bin: Path) -> None:
    settings.SEEDDUMP_SIGNING_KEY = "team key"
    run_command("seed", "dev", scale=1, database=alias, verbosity=0)
    dump = Path(run_command("generatedump", "dev", database=alias).out.split()[-1])
    assert json.loads(dumpfiles.metadata_path(dump).read_text())["signature"].startswith("hmac-sha256:")
    seeded = demo_snapshot(alias)
    Team.objects.using(alias).filter(pk=2).delete()
    restore(alias)
    assert demo_snapshot(alias) == seeded

    settings.SEEDDUMP_SIGNING_KEY = ["new key", "team key"]  # rotation: the old key still verifies
    assert "Restored" in restore(alias)

    restores_so_far = spy_bin.read_text().count("--dbname=")
    edit_metadata(dump, note="changed by someone without the key")
    with pytest.raises(CommandError, match=r"signature of .* is wrong"):
        restore(alias)
    path = dumpfiles.metadata_path(dump)
    path.write_text(json.dumps({k: v for k, v in json.loads(path.read_text()).items() if k != "signature"}))
    with pytest.raises(CommandError, match="is not signed, and SEEDDUMP_SIGNING_KEY says every dump must be"):
        restore(alias)
    assert spy_bin.read_text().count("--dbname=") == restores_so_far  # refused before any byte reached a server


# --- Guards ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("protected", ["prod, production", "Prod,Production", ["PRODUCTION "]])
def test_protected_environments_are_normalised(
    alias: str, seeded_dump: Path, dumps_dir: Path, settings, protected: Any
) -> None:
    settings.SEEDDUMP_PROTECTED_ENVIRONMENTS = protected
    with pytest.raises(CommandError, match="protected environment 'production'"):
        run_command("restoredump", "production", database=alias, interactive=False)


def test_a_protected_database_is_never_restored_over(alias: str, seeded_dump: Path, settings) -> None:
    Team.objects.using(alias).create(name="must survive", created_at="2026-01-01T00:00:00Z")
    settings.SEEDDUMP_PROTECTED_DATABASES = [connections[alias].settings_dict["NAME"].upper()]
    with pytest.raises(CommandError, match="it is in SEEDDUMP_PROTECTED_DATABASES"):
        restore(alias)
    assert Team.objects.using(alias).filter(name="must survive").exists()


def test_the_background_process_ignores_a_django_py_where_the_user_is(
    alias: str, seeded_dump: Path, dumps_dir: Path, tmp_path: Path
) -> None:
    workdir = tmp_path / "somewhere"
    workdir.mkdir()
    marker = tmp_path / "imported"
    (workdir / "django.py").write_text(f"open({str(marker)!r}, 'w').close()\nraise SystemExit(3)\n")
    connections.close_all()
    result = subprocess.run(
        [sys.executable, str(REPO / "manage.py"), "restoredump", "dev", "--no-input", "--json"],
        cwd=workdir,
        env={**manage_env(alias, dumps_dir), "SEEDDUMP_BACKGROUND": "true"},
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert result.returncode == 0, result.stderr
    wait_for_exit(json.loads(result.stdout)["background"]["pid"])
    assert not marker.exists()
    assert len([n for n in database_names(alias) if n.startswith(snapshots.folder_prefix(dumps_dir))]) == 1
    assert background.last_failure() is None


def test_a_busy_snapshot_cache_never_fails_a_restore_and_other_folders_do_not_wait(
    alias: str, seeded_dump: Path, dumps_dir: Path, seeded_dumps: dict[str, Path], settings, tmp_path: Path
) -> None:
    settings.SEEDDUMP_LOCK_TIMEOUT = 1
    holder = postgres.connect_maintenance(connections[alias].settings_dict)
    with holder, snapshots.snapshot_lock(holder):  # another process's cache work in this folder
        out = restore(alias, verbosity=2)
        assert "Did not cache a snapshot (" in out and "the restore goes on" in out
        assert Team.objects.using(alias).count() == 2  # restored all the same

        other = tmp_path / "other-project"
        copy_dump(seeded_dumps[alias], other)
        settings.SEEDDUMP_DIR = other
        out = restore(alias, verbosity=2)
        assert "Cached the restored database as snapshot" in out  # never waited for this folder's lock
