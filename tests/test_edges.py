"""Valid data and servers are accepted, bad input is one line, and pg_restore reads what was verified.

Roles whose settings cancel or end seeddump's sessions, large objects and forced row-level security in the
database, a dump replaced on disk after it was verified, nonsense job counts, link loops, the ``latest`` link
as ``--dump``, and a newer pg_dump's archive for an older server. On real servers."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from django.core.management import CommandError, call_command
from django.db import connections

from project.reality.models import Team
from seeddump import dumpfiles, postgres
from seeddump import restore as restore_module
from tests.conftest import copy_dump, database_url, manage, run_command
from tests.test_identity import Server, app_dump, restoredump
from tests.test_identity import server as server_fixture

server = server_fixture  # a fixture of test_identity's, used here by name

pytestmark = pytest.mark.django_db(transaction=True, databases="__all__")


def test_the_bytes_pg_restore_reads_are_the_ones_that_were_verified(alias: str, seeded_dump: Path) -> None:
    """The dump is replaced (renamed over) after it was verified, as while the confirmation prompt waits:
    pg_restore still reads the verified file."""
    plan = restore_module.plan_restore("dev", dump=seeded_dump, using=alias)
    forged = seeded_dump.with_name("forged.tmp")
    forged.write_bytes(b"\0" * seeded_dump.stat().st_size)
    os.replace(forged, seeded_dump)

    restore_module.restore(plan, restore_module.RestoreOptions(use_snapshots=False))

    assert Team.objects.using(alias).count() > 0  # the verified dump's rows


@pytest.mark.parametrize("jobs", ["0", "20000", "abc"])
def test_nonsense_job_counts_are_refused_in_one_line(alias: str, seeded_dump: Path, dumps_dir: Path, jobs: str) -> None:
    if jobs != "abc":
        with pytest.raises(CommandError, match=r"--jobs must be from 1 to 64"):
            run_command("restoredump", "dev", jobs=int(jobs), database=alias, interactive=False)
    result = manage(
        "restoredump", "dev", "--no-input", alias=alias, dumps_dir=dumps_dir, env={"SEEDDUMP_RESTORE_JOBS": jobs}
    )
    assert result.returncode == 1
    [line] = result.stderr.strip().splitlines()
    assert line.startswith("CommandError: SEEDDUMP_RESTORE_JOBS must be")


def test_a_bad_restore_jobs_setting_is_a_system_check_error(settings) -> None:  # type: ignore[no-untyped-def]
    from django.core.management.base import SystemCheckError

    settings.SEEDDUMP_RESTORE_JOBS = "abc"
    with pytest.raises(SystemCheckError, match=r"seeddump\.E002"):
        call_command("check")


def test_a_link_loop_is_one_line_and_the_latest_link_is_the_dump_it_names(
    alias: str, seeded_dump: Path, dumps_dir: Path
) -> None:
    loop = dumps_dir / "loop.dump"
    loop.symlink_to(loop)
    with pytest.raises(CommandError, match="is a link that leads nowhere"):
        run_command("restoredump", "dev", dump=str(loop), database=alias, interactive=False)

    latest = dumps_dir / "dev-seeded-latest.dump"
    assert latest.is_symlink()
    run_command("restoredump", "dev", dump=str(latest), database=alias, interactive=False)
    assert Team.objects.using(alias).count() > 0


def test_a_newer_pg_dumps_archive_for_an_older_server_says_the_versions_differ(
    seeded_dumps: dict[str, Path], dumps_dir: Path
) -> None:
    """The embedded server's dump (pg_dump 18) restored into the machine's PostgreSQL 15."""
    if "system" not in connections.settings:
        pytest.skip("the machine's PostgreSQL is not reachable")
    newer = seeded_dumps["default"]
    if dumpfiles.read_metadata(newer).pg_dump_major <= connections["system"].pg_version // 10000:
        pytest.skip("the two servers are of one major version")
    with pytest.raises(CommandError) as raised:
        run_command("restoredump", "dev", dump=str(newer), database="system", interactive=False, no_snapshot=True)
    assert "This dump was made by pg_dump 18 and this server is PostgreSQL 15" in str(raised.value)


# --- Valid servers and data ------------------------------------------------------------------------------


def app_database(server: Server, dumps_dir: Path, *statements: str) -> tuple[str, str]:
    """``app_dump`` with an app role that may create databases."""
    return app_dump(server, dumps_dir, list(statements), "LOGIN CREATEDB")


def test_role_timeouts_never_cancel_seeddumps_own_work(server: Server, seeded_dump: Path, dumps_dir: Path) -> None:
    """An app role whose sessions time out fast: generatedump's export transaction sits idle while pg_dump
    runs, and a database copy takes longer than the statement timeout. Both still work."""
    app, source = app_database(server, dumps_dir)
    server.execute("postgres", f"ALTER ROLE \"{app}\" SET idle_in_transaction_session_timeout = '1ms'")
    env = {"DATABASE_URL": database_url(server.alias, source, app)}
    made = manage("generatedump", "dev", alias=server.alias, dumps_dir=dumps_dir, env=env)
    assert made.returncode == 0, made.stderr

    server.execute("postgres", f"ALTER ROLE \"{app}\" SET statement_timeout = '1ms'")
    target = server.database(app)
    # The programs start without the role's limits: pg_restore's first query runs before its own SET, and a
    # timeout that fires there was reported as "canceling statement due to user request" (CI, busy machine).
    psql = postgres.find_program("psql", connections[server.alias].pg_version // 10000)
    as_app = {**connections[server.alias].settings_dict, "USER": app, "PASSWORD": ""}
    shown = postgres.run(psql, ["-XAtc", "SHOW statement_timeout"], as_app, dbname=target, what="psql").stdout
    assert shown.split() == ["0"]
    assert restoredump(server, dumps_dir, app, target)["source"] == "pg_restore"
    assert restoredump(server, dumps_dir, app, target)["source"] == "snapshot"  # a copy of the snapshot
    assert restoredump(server, dumps_dir, app, target, "--in-place")["source"] == "in place"


def test_large_objects_and_forced_row_level_security_restore_in_every_way(
    server: Server, seeded_dump: Path, dumps_dir: Path
) -> None:
    app, _ = app_database(
        server,
        dumps_dir,
        "SELECT lo_from_bytea(424242, 'the dump''s blob')",
        "CREATE TABLE private_notes (id int PRIMARY KEY, author text DEFAULT current_user)",
        "INSERT INTO private_notes (id) SELECT generate_series(1, 5)",
        "ALTER TABLE private_notes ENABLE ROW LEVEL SECURITY",
        "ALTER TABLE private_notes FORCE ROW LEVEL SECURITY",
        "CREATE POLICY own_notes ON private_notes USING (author = current_user)",
    )
    target = server.database(app)
    server.execute(target, "SELECT lo_from_bytea(424242, 'my blob')", role=app)

    for args in (["--in-place"], [], ["--in-place"]):
        restoredump(server, dumps_dir, app, target, *args)  # as the owner itself, never bypassing its policy

    admin_user = connections[server.alias].settings_dict["USER"]
    restoredump(server, dumps_dir, admin_user, target, "--in-place")  # and over a superuser connection
    assert server.query(target, "SELECT lo_get(424242)") == [(b"the dump's blob",)]
    assert server.query(target, "SELECT count(*) FROM private_notes") == [(5,)]
    assert server.query(target, "SELECT relforcerowsecurity FROM pg_class WHERE relname = 'private_notes'") == [(True,)]


def test_a_dump_outside_the_dumps_folder_is_restored_without_caching_it(
    alias: str, seeded_dump: Path, dumps_dir: Path, tmp_path: Path
) -> None:
    """The cache keeps snapshots of the folder's own dumps only (pruning drops any other at once): a dump
    from elsewhere is restored, and no snapshot is made of it just to be dropped."""
    from tests.test_background import cache_of

    elsewhere = tmp_path / "from-a-teammate"
    elsewhere.mkdir()
    outside = copy_dump(seeded_dump, elsewhere, latest=False)

    out = run_command("restoredump", "dev", dump=str(outside), database=alias, interactive=False, verbosity=2).out

    assert "Cached" not in out
    assert cache_of(alias, dumps_dir)["snapshots"] == []
    assert Team.objects.using(alias).count() > 0
