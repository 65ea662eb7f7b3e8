"""restoredump returns once the database is in place; a background process finishes the rest.

These tests run restoredump as a user does (a new process, background on, as the demo's default) and
wait for the background process through its pid, which ``--json`` reports: a pidfd becomes readable
when the process exits.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from django.db import connections

from project.reality.models import Team
from seeddump import background, postgres, serverdisk, snapshots
from seeddump.models import DumpRecord
from tests.conftest import (
    copy_dump,
    database_names,
    demo_snapshot,
    leftovers,
    manage,
    run_command,
    start_manage,
    unavailable,
    wait_for_exit,
)
from tests.test_hardening import Gate, gate  # noqa: F401 (fixture)

pytestmark = pytest.mark.django_db(transaction=True, databases="__all__")

BACKGROUND = {"SEEDDUMP_BACKGROUND": "true"}


def restoredump(alias: str, dumps_dir: Path, *args: str, env: dict[str, str] | None = None) -> dict:
    result = manage(
        "restoredump",
        "dev",
        "--no-input",
        "--json",
        *args,
        alias=alias,
        dumps_dir=dumps_dir,
        env={**BACKGROUND, **(env or {})},
    )
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def cache_of(alias: str, dumps_dir: Path) -> dict[str, list[str]]:
    names = sorted(database_names(alias))
    return {
        kind: [n for n in names if n.startswith(snapshots.folder_prefix(dumps_dir, prefix))]
        for kind, prefix in (
            ("snapshots", snapshots.PREFIX),
            ("ready", snapshots.READY_PREFIX),
            ("builds", snapshots.BUILD_PREFIX),
            ("empty", snapshots.EMPTY_PREFIX),
        )
    }


def replaced_databases(alias: str) -> list[str]:
    return leftovers(alias)


def test_the_background_drops_the_old_database_and_prepares_the_next_restore(
    alias: str, seeded_dump: Path, dumps_dir: Path
) -> None:
    first = restoredump(alias, dumps_dir)
    assert first["source"] == "pg_restore"
    assert first["undo"] is not None  # the replaced database is kept for an undo, not dropped
    assert first["background"]["work"] == [
        "cache a snapshot of the dump",
        "prepare a ready copy for the next restore",
        "prepare an empty database for the next pg_restore",
    ]
    seeded = demo_snapshot(alias)  # usable at once, while the background works
    wait_for_exit(first["background"]["pid"])

    assert replaced_databases(alias) == []
    cache = cache_of(alias, dumps_dir)
    assert len(cache["snapshots"]) == 1 and len(cache["ready"]) == 1 and cache["builds"] == []
    assert len(cache["empty"]) == 1
    # The admin's records were written into the restored database.
    assert DumpRecord.objects.using(alias).get(file_name=seeded_dump.name).last_restored_at is not None
    log = (dumps_dir / background.LOG_NAME).read_text()
    assert f"[{first['background']['pid']}]" in log and ": done (peak memory " in log.rstrip().splitlines()[-1]
    assert (dumps_dir / background.LOG_NAME).stat().st_mode & 0o777 == 0o600

    Team.objects.using(alias).all().delete()
    second = restoredump(alias, dumps_dir)
    assert second["source"] == "ready copy"
    assert second["background"]["work"][0] == "drop the replaced database"  # the first's, no longer the last
    assert demo_snapshot(alias) == seeded
    [ready] = cache["ready"]
    assert ready not in database_names(alias)  # it became the database
    wait_for_exit(second["background"]["pid"])
    assert cache_of(alias, dumps_dir) == cache  # a new ready copy of the same dump, under the same name
    assert replaced_databases(alias) == []

    listing = manage("snapshots", alias=alias, dumps_dir=dumps_dir)
    assert f"(ready copy for '{second['database']}')" in listing.stdout
    assert f"(empty, for the next pg_restore into '{second['database']}')" in listing.stdout
    assert "1 snapshot(s), 1 ready copy" in listing.stdout


def test_a_cold_restore_uses_the_prepared_empty_database(alias: str, seeded_dump: Path, dumps_dir: Path) -> None:
    first = restoredump(alias, dumps_dir, "--no-snapshot")
    assert first["background"]["work"] == ["prepare an empty database for the next pg_restore"]
    wait_for_exit(first["background"]["pid"])
    [empty] = cache_of(alias, dumps_dir)["empty"]
    seeded = demo_snapshot(alias)
    Team.objects.using(alias).all().delete()

    second = manage(
        "restoredump",
        "dev",
        "--no-input",
        "--no-snapshot",
        "--json",
        "-v2",
        alias=alias,
        dumps_dir=dumps_dir,
        env=BACKGROUND,
    )
    assert second.returncode == 0, second.stderr
    assert "Using the empty database the last restore prepared" in second.stderr  # progress, beside the JSON
    assert demo_snapshot(alias) == seeded
    wait_for_exit(json.loads(second.stdout)["background"]["pid"])
    third = restoredump(alias, dumps_dir, "--no-snapshot")  # and the one prepared meanwhile is used too
    wait_for_exit(third["background"]["pid"])
    assert cache_of(alias, dumps_dir)["empty"] == [empty]
    assert replaced_databases(alias) == []


def test_a_ready_copy_accepts_no_connections(alias: str, seeded_dump: Path, dumps_dir: Path) -> None:
    wait_for_exit(restoredump(alias, dumps_dir)["background"]["pid"])
    [ready] = cache_of(alias, dumps_dir)["ready"]
    with pytest.raises(psycopg.OperationalError, match="not currently accepting connections"):
        psycopg.connect(**postgres.connect_kwargs(connections[alias].settings_dict, ready)).close()


def test_wait_finishes_before_returning(alias: str, seeded_dump: Path, dumps_dir: Path) -> None:
    result = restoredump(alias, dumps_dir, "--wait")
    assert result["background"] is None
    assert replaced_databases(alias) == []
    cache = cache_of(alias, dumps_dir)
    assert len(cache["snapshots"]) == 1 and cache["ready"] == []  # a ready copy only pays off in the background


@pytest.fixture
def background_pids() -> Iterator[list[int]]:
    """Background processes a test starts; should the test fail, they are killed with their pg_restore."""
    pids: list[int] = []
    yield pids
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pid, signal.SIGKILL)  # its own session: its process group


def restore_until_the_background_build(
    alias: str,
    dumps_dir: Path,
    gate: Gate,  # noqa: F811
    background_pids: list[int],
) -> int:
    """A cold restore in the background mode, run until its background process's pg_restore (the snapshot's
    build) has run and waits at the gate; the background process's pid."""
    process = start_manage(
        "restoredump", "dev", "--no-input", "--json", alias=alias, dumps_dir=dumps_dir, env={**BACKGROUND, **gate.env}
    )
    assert gate.wait() == "pg_restore"  # the restore's own
    gate.release()
    out, err = process.communicate(timeout=120)
    assert process.returncode == 0, err
    pid = json.loads(out)["background"]["pid"]
    background_pids.append(pid)
    assert gate.wait() == "pg_restore"  # the background's, building the snapshot
    return pid


def test_killed_background_process_leaves_nothing_wrong(
    alias: str,
    seeded_dump: Path,
    dumps_dir: Path,
    gate: Gate,  # noqa: F811
    background_pids: list[int],
) -> None:
    pid = restore_until_the_background_build(alias, dumps_dir, gate, background_pids)
    assert len(cache_of(alias, dumps_dir)["builds"]) == 1
    os.kill(pid, signal.SIGKILL)
    wait_for_exit(pid)
    gate.release()

    seeded = demo_snapshot(alias)  # the restored database is in place all the same
    assert Team.objects.using(alias).count() == 2
    listing = manage("snapshots", alias=alias, dumps_dir=dumps_dir)
    assert f"Last time, the background process {pid} stopped before it finished" in listing.stderr

    warned = manage("restoredump", "dev", "--no-input", "--wait", "--json", alias=alias, dumps_dir=dumps_dir)
    assert warned.returncode == 0, warned.stderr
    assert f"Last time, the background process {pid} stopped before it finished" in warned.stderr
    assert json.loads(warned.stdout)["source"] == "pg_restore"  # no snapshot was cached
    assert "Last time" not in manage("snapshots", alias=alias, dumps_dir=dumps_dir).stderr  # dealt with
    assert demo_snapshot(alias) == seeded
    assert replaced_databases(alias) == []
    cache = cache_of(alias, dumps_dir)
    assert len(cache["snapshots"]) == 1 and cache["builds"] == []


def test_called_in_process_the_background_uses_the_callers_settings_and_database(
    alias: str, seeded_dump: Path, dumps_dir: Path, settings
) -> None:
    # Under pytest the database is the test database and SEEDDUMP_DIR a temporary folder: neither is what the
    # settings module says, and the background process must finish the restore that was made.
    settings.SEEDDUMP_BACKGROUND = True
    document = json.loads(run_command("restoredump", "dev", database=alias, interactive=False, json=True).out)
    wait_for_exit(document["background"]["pid"])

    assert document["database"] == connections[alias].settings_dict["NAME"]
    cache = cache_of(alias, dumps_dir)
    assert len(cache["snapshots"]) == 1 and len(cache["ready"]) == 1 and len(cache["empty"]) == 1
    assert DumpRecord.objects.using(alias).get(file_name=seeded_dump.name).last_restored_at is not None
    assert replaced_databases(alias) == []


def test_prune_all_folders_drops_everything_a_deleted_folder_left(
    alias: str, seeded_dumps, dumps_dir: Path, settings, tmp_path: Path
) -> None:
    gone = tmp_path / "deleted-workspace"
    copy_dump(seeded_dumps[alias], gone)
    settings.SEEDDUMP_DIR = gone
    settings.SEEDDUMP_BACKGROUND = True
    document = json.loads(run_command("restoredump", "dev", database=alias, interactive=False, json=True).out)
    wait_for_exit(document["background"]["pid"])
    left = cache_of(alias, gone)
    assert [len(left[kind]) for kind in ("snapshots", "ready", "empty")] == [1, 1, 1]
    shutil.rmtree(gone)
    settings.SEEDDUMP_DIR = dumps_dir

    pruned = run_command("snapshots", database=alias, prune=True, all_folders=True).out
    for name in left["snapshots"] + left["ready"] + left["empty"]:
        assert f"Dropped {name}" in pruned
    assert cache_of(alias, gone) == {"snapshots": [], "ready": [], "builds": [], "empty": []}


def test_no_background_process_means_finishing_before_returning(alias: str, seeded_dump: Path, dumps_dir: Path) -> None:
    (dumps_dir / background.LOG_NAME).mkdir()  # its log cannot be opened, even by root
    result = manage(
        "restoredump", "dev", "--no-input", "--json", "-v2", alias=alias, dumps_dir=dumps_dir, env=BACKGROUND
    )
    assert result.returncode == 0, result.stderr
    assert "Could not start the background process" in result.stderr
    assert json.loads(result.stdout)["background"] is None
    assert replaced_databases(alias) == []
    assert len(cache_of(alias, dumps_dir)["snapshots"]) == 1


def test_a_restore_started_during_the_background_snapshot_build_stops_it_and_never_waits_for_it(
    alias: str,
    seeded_dump: Path,
    dumps_dir: Path,
    gate: Gate,  # noqa: F811
    background_pids: list[int],
) -> None:
    pid = restore_until_the_background_build(alias, dumps_dir, gate, background_pids)  # it holds the cache
    [build] = cache_of(alias, dumps_dir)["builds"]

    second = start_manage(
        "restoredump", "dev", "--no-input", "--verbosity", "2", alias=alias, dumps_dir=dumps_dir, env=gate.env
    )
    assert second.stdout is not None
    for line in second.stdout:  # the second restore says so before it looks at the cache
        if "Stopped building the snapshot" in line:
            break
    else:
        pytest.fail(f"the second restore never stopped the build: {second.communicate(timeout=120)}")
    assert build in line and "this restore comes first" in line
    gate.release()  # the build's pg_restore goes on, into a database it may no longer use
    assert gate.wait() == "pg_restore"  # the second restore's own pg_restore: the cache did not hold it up
    gate.release()
    rest, err = second.communicate(timeout=120)
    assert second.returncode == 0, err
    assert "Restored " in rest

    wait_for_exit(pid)
    log = (dumps_dir / background.LOG_NAME).read_text()
    assert f"[{pid}]" in log and "Did not cache a snapshot: its pg_restore did not finish" in log
    own = [line for line in log.splitlines() if f"[{pid}]" in line]
    assert ": done (peak memory " in own[-1]  # it went on with the rest of its work
    assert cache_of(alias, dumps_dir)["builds"] == []


def test_the_background_process_skips_caching_when_the_disk_has_no_room(
    alias: str, seeded_dump: Path, dumps_dir: Path, settings
) -> None:
    with postgres.connect_maintenance(connections[alias].settings_dict) as admin:
        if serverdisk.data_directory(admin) is None:
            unavailable("this server's data directory is not readable here (run as root or its user): not checked")
    settings.SEEDDUMP_BACKGROUND = True
    settings.SEEDDUMP_MIN_FREE_DISK = 10**15  # a petabyte must stay free: no disk here has room for a copy
    document = json.loads(run_command("restoredump", "dev", database=alias, interactive=False, json=True).out)
    assert "cache a snapshot of the dump" in document["background"]["work"]
    wait_for_exit(document["background"]["pid"])
    log = (dumps_dir / background.LOG_NAME).read_text()
    assert "Did not cache a snapshot: the server's disk has" in log and "SEEDDUMP_MIN_FREE_DISK" in log, log
    assert ": done (peak memory " in log.rstrip().splitlines()[-1]  # the rest of its work was done
    cache = cache_of(alias, dumps_dir)
    assert cache["snapshots"] == [] and cache["builds"] == [] and len(cache["empty"]) == 1
    assert demo_snapshot(alias)["reality_team"]  # the restored database is in place


def test_the_background_process_starts_no_caching_while_another_restore_runs(
    alias: str, seeded_dump: Path, dumps_dir: Path, settings
) -> None:
    settings.SEEDDUMP_BACKGROUND = True
    with postgres.connect_maintenance(connections[alias].settings_dict) as admin, snapshots.restoring(admin):
        # Another restore of this dumps folder runs (into another database, say): this one's background
        # process would build the snapshot now, its pg_restore sharing the cores with that restore.
        document = json.loads(run_command("restoredump", "dev", database=alias, interactive=False, json=True).out)
        wait_for_exit(document["background"]["pid"])
    log = (dumps_dir / background.LOG_NAME).read_text()
    assert "Did not cache a snapshot: a restore of this dumps folder is running, which comes first" in log, log
    assert ": done (peak memory " in log.rstrip().splitlines()[-1]
    cache = cache_of(alias, dumps_dir)
    assert cache["snapshots"] == [] and cache["builds"] == []

    again = json.loads(run_command("restoredump", "dev", database=alias, interactive=False, json=True).out)
    wait_for_exit(again["background"]["pid"])  # nothing else runs now: this one caches the dump
    assert len(cache_of(alias, dumps_dir)["snapshots"]) == 1
