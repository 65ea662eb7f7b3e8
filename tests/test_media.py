"""Seeded media: the files a seed writes under MEDIA_ROOT travel with the dump, and come back with it.

Every test runs on both servers where the database matters. A media archive is input like a dump: a hostile
or damaged one is refused in one line with the database and the media folder as they were."""

from __future__ import annotations

import hashlib
import io
import json
import re
import secrets
import shutil
import sys
import tarfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from django.contrib.auth.models import User
from django.core.management import CommandError
from django.db import connections
from django.test import Client

from project.emblems.models import Emblem
from project.reality.models import Team
from seeddump import dumpfiles, finishing, media
from tests.conftest import (
    REPO,
    MediaDump,
    copy_dump,
    demo_snapshot,
    files_of,
    manage_env,
    run_bounded,
    run_command,
)
from tests.test_team import shared_folder as shared_folder_fixture

shared_folder = shared_folder_fixture  # a fixture of test_team's, used here by name

pytestmark = pytest.mark.django_db(transaction=True, databases="__all__")


@pytest.fixture
def media_dump(alias: str, media_dumps: dict[str, MediaDump], dumps_dir: Path) -> MediaDump:
    """The session's dump with media for ``alias``, copied into this test's dumps folder as dev's latest."""
    made = media_dumps[alias]
    return MediaDump(copy_dump(made.path, dumps_dir), made.files)


@pytest.fixture
def local_work(alias: str, media_root: Path) -> dict[str, Any]:
    """A developer's own rows and files, which a refused restore must leave exactly as they are."""
    Team.objects.using(alias).create(name="my local team", created_at="2026-02-01T00:00:00Z")
    (media_root / "emblems").mkdir(parents=True)
    (media_root / "emblems" / "team-0001.png").write_bytes(b"my own emblem")
    (media_root / "notes.txt").write_text("my notes")
    return {"rows": demo_snapshot(alias), "files": files_of(media_root)}


def restore(alias: str, *args: str, **options: Any) -> str:
    return run_command("restoredump", "dev", *args, database=alias, interactive=False, **options).out


def beside(media_root: Path) -> list[str]:
    """What seeddump may leave beside MEDIA_ROOT: its unpacked and replaced folders, and the one kept for an
    undo (``kept_for_undo``)."""
    return sorted(p.name for p in media_root.parent.iterdir() if p.name.startswith(f".{media_root.name}.seeddump-"))


def kept_for_undo(alias: str, media_root: Path) -> list[str]:
    """Beside MEDIA_ROOT after a restore that replaced it: only the replaced folder, kept for an undo."""
    return [media.undo_folder(media_root, finishing.tag(connections[alias].settings_dict["NAME"])).name]


def assert_untouched(alias: str, media_root: Path, local: dict[str, Any]) -> None:
    assert demo_snapshot(alias) == local["rows"]
    assert files_of(media_root) == local["files"]
    assert beside(media_root) == []


# --- Round trip -----------------------------------------------------------------------------------------


def test_metadata_describes_the_media_archive(alias: str, media_dump: MediaDump) -> None:
    metadata = dumpfiles.read_metadata(media_dump.path)
    archive = dumpfiles.media_path(media_dump.path)

    assert archive.name == media_dump.path.name.removesuffix(".dump") + ".media.tar.gz"
    assert metadata.media is not None
    assert metadata.media.file == archive.name
    assert metadata.media.size_bytes == archive.stat().st_size
    assert metadata.media.checksum == "sha256:" + hashlib.sha256(archive.read_bytes()).hexdigest()
    assert metadata.media.files == 2 == len(media_dump.files)  # one emblem per team at scale 1
    assert metadata.media.bytes == sum(len(data) for data in media_dump.files.values())
    assert oct(archive.stat().st_mode & 0o777) == "0o600"


def test_round_trip_brings_back_the_rows_and_their_files(
    alias: str, media_dump: MediaDump, media_root: Path, local_work: dict[str, Any]
) -> None:
    out = restore(alias)

    size = dumpfiles.human_size(sum(len(data) for data in media_dump.files.values()))
    assert f"Restored its media (2 file(s), {size}) into {media_root}." in out
    assert files_of(media_root) == media_dump.files  # the local notes and emblem are gone with the database
    emblems = list(Emblem.objects.using(alias).order_by("pk"))
    assert len(emblems) == 2 and Team.objects.using(alias).count() == 2
    for emblem in emblems:  # every FileField value names a file that is there
        assert (media_root / emblem.image.name).read_bytes() == media_dump.files[emblem.image.name]
    assert beside(media_root) == kept_for_undo(alias, media_root)  # the replaced folder, kept with the database

    again = restore(alias)  # from the snapshot: the files come back just the same
    assert "from its cached snapshot" in again
    assert files_of(media_root) == media_dump.files and beside(media_root) == kept_for_undo(alias, media_root)


def test_a_media_root_that_does_not_exist_yet_is_made(alias: str, media_dump: MediaDump, media_root: Path) -> None:
    assert not media_root.exists()
    restore(alias)
    assert files_of(media_root) == media_dump.files


def test_a_linked_media_root_keeps_its_link(alias: str, media_dump: MediaDump, tmp_path: Path, settings: Any) -> None:
    real = tmp_path / "real-media"
    real.mkdir()
    (real / "old.txt").write_text("old")
    link = tmp_path / "media-link"
    link.symlink_to(real)
    settings.MEDIA_ROOT = str(link)

    restore(alias)

    assert link.is_symlink() and link.resolve() == real
    assert files_of(real) == media_dump.files


def test_in_place_restore_brings_the_files_too(alias: str, media_dump: MediaDump, media_root: Path, local_work) -> None:
    out = restore(alias, "--in-place")
    assert "in place" in out
    assert files_of(media_root) == media_dump.files and beside(media_root) == kept_for_undo(alias, media_root)


def test_no_media_leaves_the_folder_as_it_is(
    alias: str, media_dump: MediaDump, media_root: Path, local_work: dict[str, Any]
) -> None:
    result = run_command("restoredump", "dev", "--no-media", database=alias, interactive=False)

    assert "are not restored: --no-media" in result.err
    assert Team.objects.using(alias).count() == 2  # the database was restored
    assert files_of(media_root) == local_work["files"]


def test_a_dump_without_media_leaves_the_folder_alone(
    alias: str, seeded_dump: Path, media_root: Path, local_work: dict[str, Any]
) -> None:
    restore(alias)
    assert files_of(media_root) == local_work["files"]


def test_json_says_where_the_media_went(alias: str, media_dump: MediaDump, media_root: Path) -> None:
    document = json.loads(restore(alias, json=True))
    assert document["media"]["root"] == str(media_root)
    assert document["media"]["files"] == 2


# --- Making the archive -----------------------------------------------------------------------------------


@pytest.mark.parametrize("alias", ["default"])
def test_links_and_files_outside_are_left_out(alias: str, dumps_dir: Path, media_root: Path, tmp_path: Path) -> None:
    secret = tmp_path / "secret.txt"
    secret.write_text("not media")
    run_command("seed", "dev", scale=1, database=alias, verbosity=0)
    (media_root / "emblems" / "link.png").symlink_to(secret)
    (media_root / "outside").symlink_to(tmp_path, target_is_directory=True)

    result = run_command("generatedump", "dev", "--media", database=alias)

    assert "Left 2 link(s) or special file(s) in MEDIA_ROOT out of the media archive" in result.err
    dump = Path(result.out.split()[-1])
    with tarfile.open(dumpfiles.media_path(dump)) as tar:
        names = sorted(member.name for member in tar)
        assert all(member.isfile() or member.isdir() for member in tar)
    assert names == ["emblems", "emblems/team-0001.png", "emblems/team-0002.png"]


@pytest.mark.parametrize("alias", ["default"])
def test_the_dumps_folder_inside_media_root_is_not_archived(alias: str, settings: Any, media_root: Path) -> None:
    settings.SEEDDUMP_DIR = media_root / "dumps"
    run_command("seed", "dev", scale=1, database=alias, verbosity=0)
    dump = Path(run_command("generatedump", "dev", "--media", database=alias).out.split()[-1])
    with tarfile.open(dumpfiles.media_path(dump)) as tar:
        assert not [m.name for m in tar if m.name.startswith("dumps")]


@pytest.mark.parametrize("alias", ["default"])
def test_the_setting_makes_media_the_default(alias: str, dumps_dir: Path, settings: Any) -> None:
    settings.SEEDDUMP_MEDIA = True
    run_command("seed", "dev", scale=1, database=alias, verbosity=0)
    with_media = Path(run_command("generatedump", "dev", database=alias).out.split()[-1])
    without = Path(run_command("generatedump", "dev", "--no-media", database=alias).out.split()[-1])
    assert dumpfiles.media_path(with_media).is_file() and not dumpfiles.media_path(without).exists()
    assert dumpfiles.read_metadata(without).media is None


def test_another_storage_is_refused_in_one_line(
    alias: str, media_dump: MediaDump, settings: Any, local_work: dict[str, Any], media_root: Path
) -> None:
    settings.STORAGES = {**settings.STORAGES, "default": {"BACKEND": "django.core.files.storage.InMemoryStorage"}}

    with pytest.raises(CommandError) as made:
        run_command("generatedump", "dev", "--media", database=alias)
    with pytest.raises(CommandError) as restored:
        restore(alias)

    for error in (made, restored):
        message = str(error.value)
        assert "\n" not in message
        assert "need the default storage to be a FileSystemStorage" in message
        assert "django.core.files.storage.memory.InMemoryStorage" in message
    assert_untouched(alias, media_root, local_work)
    assert (
        "are not restored: --no-media"
        in run_command("restoredump", "dev", "--no-media", database=alias, interactive=False).err
    )


# --- Hostile and damaged archives -------------------------------------------------------------------------


def _add(tar: tarfile.TarFile, name: str, data: bytes = b"", kind: bytes = tarfile.REGTYPE, link: str = "") -> None:
    member = tarfile.TarInfo(name)
    member.type, member.linkname, member.size = kind, link, len(data) if kind == tarfile.REGTYPE else 0
    tar.addfile(member, io.BytesIO(data) if kind == tarfile.REGTYPE else None)


def rewrite_archive(dump: Path, build: Callable[[tarfile.TarFile], None]) -> None:
    """Replaces the dump's media archive with one ``build`` writes, and its metadata to match it exactly (as
    a teammate with write access to the dumps could): only the members themselves can give it away."""
    archive = dumpfiles.media_path(dump)
    with tarfile.open(archive, "w:gz") as tar:
        build(tar)
    with tarfile.open(archive) as tar:
        files = [m for m in tar if m.isreg()]
    data = json.loads(dumpfiles.metadata_path(dump).read_text())
    data["media"] = {
        **data["media"],
        "sizeBytes": archive.stat().st_size,
        "checksum": dumpfiles.sha256_of(archive),
        "files": len(files),
        "bytes": sum(m.size for m in files),
    }
    dumpfiles.metadata_path(dump).write_text(json.dumps(data))


OUTSIDE = f"/tmp/seeddump-test-{secrets.token_hex(4)}.txt"
HOSTILE = {
    "traversal": (lambda tar: _add(tar, "emblems/../../escaped.txt", b"escaped"), "a path with '..'"),
    "absolute": (lambda tar: _add(tar, OUTSIDE, b"escaped"), "an absolute path"),
    "symlink": (
        lambda tar: (_add(tar, "emblems/x.png", kind=tarfile.SYMTYPE, link="/etc"), _add(tar, "emblems/x.png/p", b"!")),
        "a symbolic link (to '/etc')",
    ),
    "hard link": (lambda tar: _add(tar, "passwd", kind=tarfile.LNKTYPE, link="/etc/passwd"), "a hard link"),
    "device": (lambda tar: _add(tar, "null", kind=tarfile.CHRTYPE), "a device or FIFO"),
    "twice": (lambda tar: (_add(tar, "a.txt", b"1"), _add(tar, "a.txt", b"2")), "holds 'a.txt' twice"),
}


@pytest.mark.parametrize("case", list(HOSTILE))
def test_a_hostile_member_is_refused_before_anything_is_touched(
    alias: str, media_dump: MediaDump, media_root: Path, local_work: dict[str, Any], tmp_path: Path, case: str
) -> None:
    build, why = HOSTILE[case]
    rewrite_archive(media_dump.path, lambda tar: (_add(tar, "emblems/team-0001.png", b"fine"), build(tar)))

    with pytest.raises(CommandError) as refused:
        restore(alias)

    message = str(refused.value)
    assert "\n" not in message and why in message and "nothing was restored" in message
    assert_untouched(alias, media_root, local_work)
    assert not (media_root.parent / "escaped.txt").exists() and not (tmp_path / "escaped.txt").exists()
    assert not Path(OUTSIDE).exists()


@pytest.mark.parametrize("damage", ["checksum", "truncated", "missing", "more files than said"])
def test_a_damaged_or_missing_archive_is_refused(
    alias: str, media_dump: MediaDump, media_root: Path, local_work: dict[str, Any], damage: str
) -> None:
    archive = dumpfiles.media_path(media_dump.path)
    expected = {
        # One pass reads and hashes: a flipped byte shows as a wrong checksum, or earlier as broken gzip data.
        "checksum": ("does not match its metadata", "it is damaged"),
        "truncated": ("is truncated or was changed",),
        "missing": ("is missing from",),
        "more files than said": ("holds more than its metadata says",),
    }[damage]
    if damage == "checksum":
        data = bytearray(archive.read_bytes())
        data[len(data) // 2] ^= 0xFF
        archive.write_bytes(bytes(data))
    elif damage == "truncated":
        archive.write_bytes(archive.read_bytes()[:-10])
    elif damage == "missing":
        archive.unlink()
    else:
        rewrite_archive(media_dump.path, lambda tar: [_add(tar, f"f{i}.txt", b"x") for i in range(3)])
        data = json.loads(dumpfiles.metadata_path(media_dump.path).read_text())
        data["media"]["files"], data["media"]["bytes"] = 1, 1  # says one file, holds three
        dumpfiles.metadata_path(media_dump.path).write_text(json.dumps(data))

    with pytest.raises(CommandError) as refused:
        restore(alias)

    message = str(refused.value)
    assert "\n" not in message and any(words in message for words in expected) and "--no-media" in message
    assert_untouched(alias, media_root, local_work)


def test_a_metadata_naming_another_archive_is_refused(
    alias: str, media_dump: MediaDump, local_work, media_root
) -> None:
    data = json.loads(dumpfiles.metadata_path(media_dump.path).read_text())
    data["media"]["file"] = "../other.media.tar.gz"
    dumpfiles.metadata_path(media_dump.path).write_text(json.dumps(data))

    with pytest.raises(CommandError, match=re.escape("its media archive is '../other.media.tar.gz'")):
        restore(alias)
    assert_untouched(alias, media_root, local_work)


# --- Kills --------------------------------------------------------------------------------------------------

_KILLER = """
import os, signal, sys
import django
django.setup()
from seeddump import media

point = os.environ["KILL_AT"]
renameat2, utime = media._renameat2, os.utime

def killing_renameat2(source, destination, flags):
    if point == "before the exchange" and flags == media._RENAME_EXCHANGE:
        os.kill(os.getpid(), signal.SIGKILL)
    done = renameat2(source, destination, flags)
    if point == "after the exchange" and flags == media._RENAME_EXCHANGE:
        os.kill(os.getpid(), signal.SIGKILL)
    return done

def killing_utime(*args, **kwargs):
    utime(*args, **kwargs)
    if point == "while unpacking":
        os.kill(os.getpid(), signal.SIGKILL)

media._renameat2, media.os.utime = killing_renameat2, killing_utime
from django.core.management import call_command
call_command("restoredump", "dev", "--no-input", "--no-snapshot")
"""


@pytest.mark.parametrize("point", ["while unpacking", "before the exchange", "after the exchange"])
def test_a_kill_during_the_media_swap_leaves_one_complete_folder(
    alias: str, media_dump: MediaDump, dumps_dir: Path, media_root: Path, local_work: dict[str, Any], point: str
) -> None:
    connections.close_all()
    env = manage_env(alias, dumps_dir, {"KILL_AT": point})
    killed = run_bounded([sys.executable, "-c", _KILLER], cwd=REPO, env=env, timeout=180)

    assert killed.returncode == -9, killed.stderr
    # MEDIA_ROOT is whole at every moment: the developer's folder, or the dump's, never a mix or nothing.
    expected = media_dump.files if point == "after the exchange" else local_work["files"]
    assert files_of(media_root) == expected
    assert beside(media_root) != []  # what the killed run left beside it ...

    out = restore(alias, verbosity=2)  # ... the next restore removes, and finishes the job
    if point == "while unpacking":
        assert "left over by an interrupted restore" in out
    else:  # the database swap had committed: the killed run's media swap is finished first
        assert f"Finished swapping the media of an interrupted restore into {media_root}" in out
    assert files_of(media_root) == media_dump.files
    assert beside(media_root) == kept_for_undo(alias, media_root)


@pytest.mark.parametrize("point", ["before the exchange", "after the exchange"])
def test_a_kill_after_the_database_swap_is_undone_whole(
    alias: str, media_dump: MediaDump, dumps_dir: Path, media_root: Path, local_work: dict[str, Any], point: str
) -> None:
    """Killed between the database swap and the media swap (or just after it), the restore is still one step:
    --undo puts back the developer's database and files together, and says which restore it undid."""
    connections.close_all()
    killed = run_bounded(
        [sys.executable, "-c", _KILLER], cwd=REPO, env=manage_env(alias, dumps_dir, {"KILL_AT": point}), timeout=180
    )
    assert killed.returncode == -9, killed.stderr

    out = run_command("restoredump", "--undo", database=alias, interactive=False, verbosity=2).out

    assert f"before {media_dump.path.name} replaced it" in out
    assert_untouched(alias, media_root, local_work)
    assert beside(media_root) == []


def test_without_an_atomic_exchange_two_renames_still_swap(
    alias: str, media_dump: MediaDump, media_root: Path, local_work: dict[str, Any], monkeypatch
) -> None:
    """Where the system has no renameat2 (macOS, old kernels), the folders are swapped by two renames."""
    monkeypatch.setattr(media, "_renameat2", lambda source, destination, flags: False)
    restore(alias)
    assert files_of(media_root) == media_dump.files and beside(media_root) == kept_for_undo(alias, media_root)


def test_a_mount_points_entries_move_in_one_order_whatever_order_the_filesystem_lists(
    tmp_path: Path, monkeypatch
) -> None:
    """A mount point's contents move entry by entry; they move in name order, so every run of a restore makes
    the same changes in the same order (the crash matrix replays a fault at a recorded change by its number, and
    a filesystem lists one folder's names in another order than a copy's: xfs and tmpfs by when they came, ext4
    by hash)."""
    names = [f"entry-{n:02}" for n in (7, 3, 11, 0, 9, 5, 1, 10, 4, 8, 2, 6)]  # made in neither order
    root, incoming = tmp_path / "media", tmp_path / ".media.seeddump-new"
    for folder in (root, incoming):
        folder.mkdir()
        for name in names:
            (folder / name).write_text(folder.name)
    exchange = media.Exchange(root, incoming, tmp_path / ".media.seeddump-old", 0, None, contents=True)
    moved = []
    rename = media.os.rename

    def recording(source: str, destination: Path) -> None:
        moved.append((Path(source).parent.name, Path(source).name))
        rename(source, destination)

    monkeypatch.setattr(media.os, "rename", recording)
    exchange.complete()

    entries_moved = [(folder, name) for folder, name in moved if name.startswith("entry-")]
    out, into = entries_moved[: len(names)], entries_moved[len(names) :]
    assert [name for _, name in out] == sorted(names) and {folder for folder, _ in out} == {"media"}
    assert [name for _, name in into] == sorted(names)
    assert files_of(root) == {name: incoming.name.encode() for name in names}


# --- With the team: shared storage, listings, pruning, the admin -------------------------------------------


def seed_and_push(alias: str) -> Path:
    run_command("seed", "dev", scale=1, database=alias, verbosity=0)
    return Path(run_command("generatedump", "dev", "--media", "--push", database=alias).out.split()[-1])


@pytest.mark.usefixtures("dumps_dir")
def test_push_and_pull_carry_the_media(
    alias: str, media_root: Path, shared_folder: Path, settings: Any, tmp_path: Path
) -> None:
    pushed = seed_and_push(alias)
    seeded = files_of(media_root)
    assert (shared_folder / "seeddump" / dumpfiles.media_path(pushed).name).is_file()
    shutil.rmtree(media_root)
    Team.objects.using(alias).all().delete()

    settings.SEEDDUMP_DIR = tmp_path / "teammate-dumps"  # another machine: no dumps, no media
    out = restore(alias, verbosity=2)

    assert f"Downloading {dumpfiles.media_path(pushed).name}" in out
    assert files_of(media_root) == seeded
    assert Emblem.objects.using(alias).count() == 2


@pytest.mark.usefixtures("dumps_dir")
def test_a_damaged_shared_archive_is_not_pulled(alias: str, shared_folder: Path, settings: Any, tmp_path: Path) -> None:
    pushed = seed_and_push(alias)
    shared_archive = shared_folder / "seeddump" / dumpfiles.media_path(pushed).name
    shared_archive.write_bytes(shared_archive.read_bytes()[::-1])
    settings.SEEDDUMP_DIR = tmp_path / "teammate-dumps"

    with pytest.raises(CommandError, match=r"does not match its metadata.*Push the dump again"):
        restore(alias, "--pull")
    assert not list((tmp_path / "teammate-dumps").glob("*.media.tar.gz"))


@pytest.mark.parametrize("alias", ["default"])
def test_listdumps_prunedumps_and_the_admin_know_the_archive(
    alias: str, media_dump: MediaDump, dumps_dir: Path, settings: Any
) -> None:
    restore(alias)
    settings.SEEDDUMP_VERSION = "bnomedia"
    newer = Path(run_command("generatedump", "dev", database=alias).out.split()[-1])

    listing = json.loads(run_command("listdumps", "dev", json=True, database=alias).out)["dumps"]
    assert [d["media"] and d["media"]["files"] for d in listing] == [2, None]
    text = run_command("listdumps", "dev", database=alias).out
    assert "MEDIA" in text.splitlines()[0] and "2 files" in text

    client = Client()
    client.force_login(User.objects.db_manager(alias).create_superuser("admin", "a@example.com", "pw"))
    if alias == "default":
        html = client.get("/admin/seeddump/dumprecord/").content.decode()
        assert "+ media: 2 files" in html

    archive = dumpfiles.media_path(media_dump.path)
    archive.rename(archive.with_name("elsewhere"))
    listing = json.loads(run_command("listdumps", "dev", json=True, database=alias).out)["dumps"]
    assert listing[0]["media"]["missing"] is True
    assert "media-missing" in run_command("listdumps", "dev", database=alias).out
    archive.with_name("elsewhere").rename(archive)

    pruned = run_command("prunedumps", "dev", "--keep", "1", database=alias).out
    assert f"Removed {media_dump.path.name}" in pruned
    assert sorted(p.name for p in dumps_dir.iterdir() if p.name.startswith("dev-seeded-v")) == sorted(
        [newer.name, dumpfiles.metadata_path(newer).name]
    )  # the archive went with its dump
