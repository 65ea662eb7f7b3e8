"""MEDIA_ROOT on a mount point (a Docker volume, a tmpfs): it cannot be renamed, so its contents are swapped.

A real tmpfs is mounted as MEDIA_ROOT (needs root: skipped saying why elsewhere, failed under CI). Restores
with media work there, the replaced files are kept for the undo inside it, a kill in the middle of moving the
files is finished by the next run, and generatedump never archives seeddump's own folders. On both servers."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import tarfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from django.core.management import CommandError
from django.db import connections

from project.reality.models import Team
from seeddump import dumpfiles, finishing, media
from tests.conftest import (
    REPO,
    MediaDump,
    demo_snapshot,
    files_of,
    manage_env,
    run_bounded,
    run_command,
    unavailable,
)
from tests.test_media import media_dump as media_dump_fixture

media_dump = media_dump_fixture  # a fixture of test_media's, used here by name

pytestmark = pytest.mark.django_db(transaction=True, databases="__all__")


@contextlib.contextmanager
def mounted_tmpfs(media_root: Path, size: str) -> Iterator[Path]:
    """MEDIA_ROOT, a tmpfs of ``size`` mounted there until the block ends."""
    if os.geteuid() != 0:
        unavailable(f"mounting a tmpfs as MEDIA_ROOT needs root (this runs as uid {os.geteuid()})")
    media_root.mkdir(parents=True, exist_ok=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(media_root)], check=True, timeout=60)
    try:
        yield media_root
    finally:
        subprocess.run(["umount", "-l", str(media_root)], check=True, timeout=60)


@pytest.fixture
def volume(media_root: Path) -> Iterator[Path]:
    """MEDIA_ROOT, a tmpfs mounted for the test."""
    with mounted_tmpfs(media_root, "256m") as mounted:
        yield mounted


@pytest.fixture
def small_volume(media_root: Path) -> Iterator[Path]:
    """MEDIA_ROOT, a 16 MB tmpfs: smaller than the 64 MB seeddump keeps free on a large disk."""
    with mounted_tmpfs(media_root, "16m") as mounted:
        yield mounted


@pytest.fixture
def my_files(alias: str, volume: Path) -> dict[str, Any]:
    Team.objects.using(alias).create(name="my local team", created_at="2026-02-01T00:00:00Z")
    (volume / "emblems").mkdir()
    (volume / "emblems" / "team-0001.png").write_bytes(b"my own emblem")
    (volume / "notes.txt").write_text("my notes")
    return {"rows": demo_snapshot(alias), "files": files_of(volume)}


def visible(volume: Path) -> dict[str, bytes]:
    """What the web server serves from MEDIA_ROOT: everything but seeddump's own folders."""
    return {name: data for name, data in files_of(volume).items() if not name.startswith(".seeddump-")}


def ours(volume: Path) -> list[str]:
    return sorted(p.name for p in volume.iterdir() if p.name.startswith(".seeddump-"))


def undo_folder(alias: str, volume: Path) -> str:
    return media.undo_folder(volume, finishing.tag(connections[alias].settings_dict["NAME"])).name


def test_a_restore_and_its_undo_swap_the_contents_of_a_mount_point(
    alias: str, media_dump: MediaDump, volume: Path, my_files: dict[str, Any]
) -> None:
    assert os.path.ismount(volume)

    out = run_command("restoredump", "dev", database=alias, interactive=False, verbosity=2).out

    assert f"Swapped the restored media into {volume}" in out
    assert os.path.ismount(volume)  # the volume itself stays where it is
    assert visible(volume) == media_dump.files
    assert ours(volume) == [undo_folder(alias, volume)]  # the replaced files, kept inside it for the undo

    run_command("restoredump", "--undo", database=alias, interactive=False)

    assert demo_snapshot(alias) == my_files["rows"]
    assert files_of(volume) == my_files["files"]  # and nothing of seeddump's is left in it


def test_generatedump_never_archives_seeddumps_folders_in_a_mount_point(
    alias: str, media_dump: MediaDump, volume: Path, my_files: dict[str, Any], dumps_dir: Path
) -> None:
    run_command("restoredump", "dev", database=alias, interactive=False)
    assert ours(volume) == [undo_folder(alias, volume)]

    made = Path(run_command("generatedump", "dev", "--media", database=alias).out.strip().splitlines()[-1])

    with tarfile.open(dumpfiles.media_path(made)) as archive:
        names = archive.getnames()
    assert names and not [name for name in names if name.startswith(".seeddump-")]


_KILLED_WHILE_MOVING = """
import os, signal
import django
django.setup()
from seeddump import media

rename, moved = media.os.rename, []

def killing_rename(source, destination, *args, **kwargs):
    rename(source, destination, *args, **kwargs)
    if ".seeddump-new." in str(destination):  # one of MEDIA_ROOT's entries moved out of the way
        moved.append(source)
        if len(moved) == 1:
            os.kill(os.getpid(), signal.SIGKILL)

media.os.rename = killing_rename
from django.core.management import call_command
call_command("restoredump", "dev", "--no-input", "--no-snapshot")
"""


def test_a_kill_while_the_files_move_is_finished_and_undone_whole(
    alias: str, media_dump: MediaDump, volume: Path, my_files: dict[str, Any], dumps_dir: Path
) -> None:
    connections.close_all()
    killed = run_bounded(
        [sys.executable, "-c", _KILLED_WHILE_MOVING], cwd=REPO, env=manage_env(alias, dumps_dir), timeout=180
    )
    assert killed.returncode == -9, killed.stderr
    assert visible(volume) != my_files["files"]  # half moved: one entry out of the way

    out = run_command("restoredump", "--undo", database=alias, interactive=False, verbosity=2).out

    assert f"Finished swapping the media of an interrupted restore into {volume}" in out
    assert demo_snapshot(alias) == my_files["rows"]
    assert files_of(volume) == my_files["files"]


def test_a_small_volume_takes_the_media_it_has_room_for(alias: str, media_dump: MediaDump, small_volume: Path) -> None:
    out = run_command("restoredump", "dev", database=alias, interactive=False, verbosity=2).out

    assert f"Swapped the restored media into {small_volume}" in out
    assert visible(small_volume) == media_dump.files


def test_a_full_volume_is_refused_saying_what_is_needed(alias: str, media_dump: MediaDump, small_volume: Path) -> None:
    disk = os.statvfs(small_volume)
    margin = media.space_margin(disk.f_blocks * disk.f_frsize)
    assert margin < disk.f_blocks * disk.f_frsize / 10  # proportional: a 16 MB volume keeps well under 64 MB free
    with (small_volume / "filler").open("wb") as filler:  # leaves half the margin free
        filler.write(bytes(disk.f_bavail * disk.f_frsize - margin // 2))
    before = {"rows": demo_snapshot(alias), "files": files_of(small_volume)}

    with pytest.raises(CommandError) as refused:
        run_command("restoredump", "dev", database=alias, interactive=False)

    message = str(refused.value)
    needed = float(message.split(" MB needed")[0].rsplit(" ", 1)[1])
    assert f"{margin / 1e6:.1f} MB kept free)" in message
    assert needed >= round(margin / 1e6, 1) and "MB free. Free some space" in message
    assert {"rows": demo_snapshot(alias), "files": files_of(small_volume)} == before
