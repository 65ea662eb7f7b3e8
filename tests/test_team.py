"""Shared storage, listdumps, prunedumps and JSON output: the team and CI workflow."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest
from django.core.management import CommandError
from django.db import connections

from project.reality.models import Team
from seeddump import dumpfiles, postgres, snapshots
from seeddump.models import DumpRecord
from tests.conftest import database_names, run_command, wait_for_exit
from tests.test_identity import Server
from tests.test_identity import server as server_fixture

pytestmark = pytest.mark.django_db(transaction=True, databases="__all__")
server = server_fixture


def filesystem_storage(location: Path) -> dict:
    return {"BACKEND": "django.core.files.storage.FileSystemStorage", "OPTIONS": {"location": str(location)}}


@pytest.fixture
def shared_folder(settings, tmp_path: Path) -> Path:
    """A second folder, shared through Django's FileSystemStorage."""
    folder = tmp_path / "shared"
    settings.STORAGES = {**settings.STORAGES, "dumps": filesystem_storage(folder)}
    settings.SEEDDUMP_STORAGE = "dumps"
    return folder


@pytest.fixture
def s3_storage(s3_server: str, settings, request: pytest.FixtureRequest) -> str:
    import boto3

    bucket = f"dumps-{abs(hash(request.node.name)) % 10**8}"
    credentials = {"aws_access_key_id": "test", "aws_secret_access_key": "test", "region_name": "us-east-1"}
    boto3.client("s3", endpoint_url=s3_server, **credentials).create_bucket(Bucket=bucket)
    settings.STORAGES = {
        **settings.STORAGES,
        "dumps": {
            "BACKEND": "storages.backends.s3.S3Storage",
            "OPTIONS": {
                "bucket_name": bucket,
                "endpoint_url": s3_server,
                "access_key": "test",
                "secret_key": "test",
                "region_name": "us-east-1",
                "file_overwrite": True,
            },
        },
    }
    settings.SEEDDUMP_STORAGE = "dumps"
    return bucket


def generate(alias: str, *extra: str) -> Path:
    return Path(run_command("generatedump", "dev", *extra, database=alias).out.split()[-1])


def push_then_restore_elsewhere(alias: str, dumps_dir: Path, settings, tmp_path: Path) -> None:
    run_command("seed", "dev", scale=1, database=alias, verbosity=0)
    pushed = generate(alias, "--push")
    Team.objects.using(alias).all().delete()

    teammate = tmp_path / "teammate-dumps"  # another machine: an empty dumps folder
    settings.SEEDDUMP_DIR = teammate
    result = run_command("restoredump", "dev", database=alias, interactive=False, verbosity=2)

    assert f"Downloading {pushed.name}" in result.out
    assert (teammate / pushed.name).read_bytes() == pushed.read_bytes()
    assert os.readlink(teammate / "dev-seeded-latest.dump") == pushed.name
    assert Team.objects.using(alias).count() == 2
    assert not list(teammate.glob(".*partial"))


def test_push_and_restore_from_an_empty_folder(alias: str, dumps_dir: Path, shared_folder: Path, settings, tmp_path):
    push_then_restore_elsewhere(alias, dumps_dir, settings, tmp_path)
    assert sorted(p.name for p in (shared_folder / "seeddump").iterdir())[0].startswith("dev-seeded-v")


@pytest.mark.parametrize("alias", ["default"])
def test_push_and_restore_through_s3(alias: str, dumps_dir: Path, s3_storage: str, settings, tmp_path) -> None:
    push_then_restore_elsewhere(alias, dumps_dir, settings, tmp_path)
    listing = json.loads(run_command("listdumps", "dev", json=True, database=alias).out)
    assert [d["shared"] for d in listing["dumps"]] == [True]


def test_newer_shared_dump_replaces_an_older_local_one(
    alias: str, dumps_dir: Path, shared_folder: Path, settings, tmp_path
) -> None:
    run_command("seed", "dev", scale=1, database=alias, verbosity=0)
    settings.SEEDDUMP_VERSION = "aold"
    old = generate(alias)
    teammate = tmp_path / "teammate"
    shutil.copytree(dumps_dir, teammate, symlinks=True)  # the teammate has the old dump
    Team.objects.using(alias).filter(pk=2).delete()
    settings.SEEDDUMP_VERSION = "bnew"  # newer by time, or by name within the same second
    new = generate(alias, "--push")

    settings.SEEDDUMP_DIR = teammate
    offline = run_command("restoredump", "dev", database=alias, interactive=False, offline=True)
    assert old.name in offline.out
    assert Team.objects.using(alias).count() == 2
    pulled = run_command("restoredump", "dev", database=alias, interactive=False)
    assert new.name in pulled.out
    assert Team.objects.using(alias).count() == 1


def test_corrupted_download_is_refused(alias: str, dumps_dir: Path, shared_folder: Path, settings, tmp_path) -> None:
    run_command("seed", "dev", scale=1, database=alias, verbosity=0)
    pushed = generate(alias, "--push")
    remote = shared_folder / "seeddump" / pushed.name
    data = bytearray(remote.read_bytes())
    data[len(data) // 2] ^= 0xFF
    remote.write_bytes(bytes(data))
    marker = Team.objects.using(alias).create(name="must survive", created_at="2026-01-01T00:00:00Z")

    teammate = tmp_path / "teammate"
    settings.SEEDDUMP_DIR = teammate
    with pytest.raises(CommandError, match=r"The download of .* does not match its metadata .*checksum wrong"):
        run_command("restoredump", "dev", database=alias, interactive=False)
    assert not (teammate / pushed.name).exists()
    assert not list(teammate.glob(".*partial"))
    assert Team.objects.using(alias).filter(pk=marker.pk).exists()


def test_pull_requires_the_storage(alias: str, dumps_dir: Path, settings) -> None:
    settings.SEEDDUMP_STORAGE = "missing"
    with pytest.raises(CommandError, match="SEEDDUMP_STORAGE is 'missing', which is not in STORAGES"):
        run_command("restoredump", "dev", database=alias, interactive=False, pull=True)


def test_listdumps_agrees_with_the_files(alias: str, dumps_dir: Path, settings) -> None:
    run_command("seed", "dev", scale=1, database=alias, verbosity=0)
    settings.SEEDDUMP_VERSION = "one"
    first = generate(alias)
    settings.SEEDDUMP_VERSION = "two"
    second = generate(alias)
    run_command("restoredump", "dev", database=alias, interactive=False)  # caches a snapshot of the second

    listing = json.loads(run_command("listdumps", json=True, database=alias).out)
    dumps = {d["name"]: d for d in listing["dumps"]}
    assert set(dumps) == {p.name for p in dumpfiles.list_dumps(dumps_dir)} == {first.name, second.name}
    assert dumps[second.name]["latest"] and not dumps[first.name]["latest"]
    assert dumps[second.name]["snapshotCached"] is True and dumps[first.name]["snapshotCached"] is False
    assert dumps[first.name]["sizeBytes"] == first.stat().st_size
    assert dumps[first.name]["checksum"] == dumpfiles.sha256_of(first)
    assert dumps[first.name]["totalRecords"] == sum(dumpfiles.read_metadata(first).record_counts.values())
    assert all(d["local"] and not d["shared"] and not d["stale"] for d in dumps.values())
    text = run_command("listdumps", "dev", database=alias).out
    assert first.name in text and "latest,chosen,snapshot" in text


def test_prunedumps_keeps_exactly_n_and_the_latest(alias: str, dumps_dir: Path, settings) -> None:
    run_command("seed", "dev", scale=1, database=alias, verbosity=0)
    made = []
    for version in ("a1", "a2", "a3", "a4"):
        settings.SEEDDUMP_VERSION = version
        made.append(generate(alias))
    settings.SEEDDUMP_VERSION = "a1"
    run_command("restoredump", "dev", database=alias, interactive=False, dump=str(made[0]))  # snapshot of a1
    dumpfiles.point_latest(made[0], "dev")  # the latest is the oldest: it must survive anyway

    dry = run_command("prunedumps", "dev", keep=2, dry_run=True, database=alias).out
    assert dry.splitlines() == [f"Would remove {made[1].name}"]
    assert all(p.exists() for p in made)

    result = run_command("prunedumps", "dev", keep=2, database=alias).out
    assert result.splitlines() == [f"Removed {made[1].name}"]
    assert dumpfiles.list_dumps(dumps_dir, "dev") == [made[0], made[2], made[3]]
    assert not dumpfiles.metadata_path(made[1]).exists()

    dumpfiles.point_latest(made[3], "dev")
    result = run_command("prunedumps", "dev", keep=1, database=alias).out
    assert f"Removed {made[0].name} and its snapshot seeddump_snap_" in result
    assert dumpfiles.list_dumps(dumps_dir, "dev") == [made[3]]
    assert not [n for n in database_names(alias) if n.startswith("seeddump_snap_") and made[0].name in n]
    assert set(DumpRecord.objects.using(alias).values_list("file_name", flat=True)) <= {made[3].name, made[2].name}


def test_prunedumps_drops_this_roles_copies_of_the_dump_and_never_another_roles(
    alias: str, dumps_dir: Path, settings, server: Server
) -> None:
    # Plain copies, finished in the background: a snapshot and a ready copy, whatever the server's disk.
    settings.SEEDDUMP_CLONES = False
    run_command("seed", "dev", scale=1, database=alias, verbosity=0)
    settings.SEEDDUMP_VERSION = "b1"
    old = generate(alias)
    settings.SEEDDUMP_VERSION = "b2"
    generate(alias)  # the latest
    settings.SEEDDUMP_VERSION = "b1"
    settings.SEEDDUMP_BACKGROUND = True
    restored = run_command("restoredump", "dev", database=alias, interactive=False, json=True, dump=str(old)).out
    wait_for_exit(json.loads(restored)["background"]["pid"])
    target = connections[alias].settings_dict["NAME"]
    metadata = dumpfiles.read_metadata(old)
    ours = {kind: copies_of(alias, old, kind) for kind in (snapshots.PREFIX, snapshots.READY_PREFIX)}
    assert all(len(copies) == 1 for copies in ours.values()), ours
    # The same dump's ready copy made by another role (a restore as the app role): that role's to drop.
    other = server.role("app", "LOGIN CREATEDB")
    theirs = snapshots.ready_name(target, metadata.checksum, "0therkey")
    label = {
        "seeddump": "ready",
        "checksum": metadata.checksum,
        "dumpFile": old.name,
        "database": target,
        "key": "0therkey",
        "folder": str(dumps_dir.resolve()),
    }
    server.execute("postgres", f'CREATE DATABASE "{theirs}"', role=other)
    server.execute("postgres", f"COMMENT ON DATABASE \"{theirs}\" IS '{json.dumps(label)}'", role=other)

    [snapshot], [ready] = ours.values()
    dry = run_command("prunedumps", "dev", keep=1, dry_run=True, database=alias).out
    assert {snapshot, ready} <= database_names(alias)

    done = run_command("prunedumps", "dev", keep=1, database=alias).out
    assert not old.exists()
    assert not {snapshot, ready} & database_names(alias)  # not left for snapshots --prune
    assert theirs in database_names(alias)
    copies = f"and its snapshot {snapshot}, its ready copy {ready}"
    assert dry.splitlines() == [f"Would remove {old.name} {copies}"]
    assert done.splitlines() == [f"Removed {old.name} {copies}"]


def copies_of(alias: str, dump: Path, kind: str) -> list[str]:
    """The names of the copies of ``dump`` of one kind (snapshots, ready copies) this role keeps."""
    with postgres.connect_maintenance(connections[alias].settings_dict) as admin:
        return [copy.name for copy in snapshots.list_snapshots(admin, kind=kind) if copy.dump_file == dump.name]


def test_json_output_of_generate_and_restore(alias: str, dumps_dir: Path) -> None:
    run_command("seed", "dev", scale=1, database=alias, verbosity=0)
    generated = json.loads(run_command("generatedump", "dev", json=True, database=alias).out)
    assert Path(generated["path"]).is_file()
    assert generated["checksum"] == dumpfiles.sha256_of(Path(generated["path"]))
    assert generated["recordCounts"]["reality_node"] == 3000
    assert generated["pushed"] == []

    restored = json.loads(
        run_command("restoredump", "dev", json=True, interactive=False, database=alias, verbosity=2).out
    )
    assert restored["result"] == "restored"
    assert restored["dump"] == generated["path"] and restored["checksum"] == generated["checksum"]
    assert restored["rows"] == generated["totalRecords"] and restored["fromSnapshot"] is False
    assert restored["missingMigrations"] == [] and restored["migrated"] is False

    with pytest.raises(CommandError, match="--json needs --no-input"):
        run_command("restoredump", "dev", json=True, database=alias)
