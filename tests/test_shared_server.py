"""Good manners on a shared server: `snapshots` shows this project's copies and sums up everyone else's, says
when another role keeps copies of the same database, and the cache's cost is said against the database's size."""

from __future__ import annotations

import contextlib
import threading
from pathlib import Path

import psycopg
import pytest
from django.db import connections

from seeddump import postgres
from tests.conftest import as_the_project, database_names, manage, own_name, run_command
from tests.test_identity import Server
from tests.test_identity import server as server_fixture
from tests.test_undo import undo_copy_of
from tests.xfs import xfs_server

pytestmark = pytest.mark.django_db(transaction=True, databases="__all__")
server = server_fixture


def restore(alias: str) -> str:
    return run_command("restoredump", "dev", database=alias, interactive=False).out


@pytest.mark.usefixtures("seeded_dump")
def test_other_projects_copies_are_one_line_and_listed_on_request(alias: str, server: Server) -> None:
    restore(alias)
    # Another project's undo copy on the same server, made by the same role (a shared CI superuser); labelled for
    # a database named for this run, so that the next run drops it if this one is killed.
    admin_user = connections[alias].settings_dict["USER"]
    elsewhere = undo_copy_of(
        server, admin_user, own_name("another_project"), "0badc0de", replaced_at="2026-01-01T00:00:00Z"
    )
    try:
        listing = run_command("snapshots", database=alias)
        assert elsewhere not in listing.out + listing.err
        assert "foreign" not in listing.err and "Drop it yourself" not in listing.err
        summary = [line for line in listing.out.splitlines() if line.startswith("Also on this server:")]
        assert len(summary) == 1 and "of other projects or teams" in summary[0] and "--others lists them" in summary[0]
        assert elsewhere in run_command("snapshots", "--others", database=alias).out
        # Ours, with the cost against the database's size.
        assert "This project's copies on the server:" in listing.out and "x the database" in listing.out

        run_command("snapshots", "--drop-all", database=alias)
        assert elsewhere in database_names(alias)  # another project's: never this project's --drop-all
    finally:
        server.execute("postgres", f'DROP DATABASE IF EXISTS "{elsewhere}"')


@pytest.mark.usefixtures("seeded_dump")
def test_another_roles_copies_of_this_database_are_said_and_dropped_by_drop_all(
    alias: str, server: Server, dumps_dir: Path
) -> None:
    """A restore as the superuser beside one as the app role: each keeps copies the other cannot use."""
    restore(alias)
    target = connections[alias].settings_dict["NAME"]
    other = server.role("app", "LOGIN CREATEDB")
    theirs = undo_copy_of(server, other, target, "feedf00d", replaced_at="2026-01-01T00:00:00Z")

    done = run_command("restoredump", "dev", database=alias, interactive=False)
    assert f"Another role also keeps this project's copies on this server ('{other}': 1;" in done.err
    assert "Restore as one role, or drop them with snapshots --drop-all" in done.err

    dropped = run_command("snapshots", "--drop-all", database=alias).out  # as the superuser: it may
    assert f"Dropped {theirs}" in dropped
    assert theirs not in database_names(alias)


def test_a_database_another_session_is_dropping_is_left_out_of_the_listing(dumps_dir: Path) -> None:
    """Another project's DROP DATABASE, caught between removing the files and committing: its row is still there
    and pg_database_size says NULL. A private server (tmpfs) makes that moment last: the DROP's commit waits for a
    synchronous standby that never comes (every other session commits locally)."""
    waiting = {"synchronous_standby_names": "nobody", "synchronous_commit": "local"}
    with xfs_server("300M", tmpfs=True, settings=waiting) as server:
        with as_the_project(postgres.connect(server.settings_dict(), "postgres")) as admin:
            for name in ("seeddump_theirs_being_dropped", "seeddump_theirs_staying"):  # another project's copies
                admin.execute(f'CREATE DATABASE "{name}"')
                admin.execute(f"""COMMENT ON DATABASE "{name}" IS '{{"seeddump": "snapshot"}}'""")
            admin.execute('CREATE DATABASE "ours"')
            dropping = as_the_project(postgres.connect(server.settings_dict(), "postgres"))
            dropping.execute("SET synchronous_commit = on")
            pid = dropping.info.backend_pid
            drop = threading.Thread(
                target=lambda: dropping.execute('DROP DATABASE "seeddump_theirs_being_dropped"'), daemon=True
            )
            drop.start()
            try:
                for _ in range(600):  # until the DROP waits at its commit (or a minute has passed)
                    (event,) = admin.execute(
                        "SELECT coalesce(wait_event, '') FROM pg_stat_activity WHERE pid = %s", (pid,)
                    ).fetchone()  # type: ignore[misc]
                    if event == "SyncRep":
                        break
                    threading.Event().wait(0.1)
                assert event == "SyncRep"

                # No trial clone: its DROP DATABASE would wait for the one waiting here to take a barrier.
                env = {"DATABASE_URL": server.url("ours"), "SEEDDUMP_MIN_FREE_DISK": "none", "SEEDDUMP_CLONES": "false"}
                listing = manage("snapshots", "--others", alias="default", dumps_dir=dumps_dir, env=env)
            finally:
                admin.execute("SELECT pg_cancel_backend(%s)", (pid,))  # the DROP is committed here; it returns
                drop.join(timeout=60)
                with contextlib.suppress(psycopg.Error):
                    dropping.close()

        assert listing.returncode == 0, listing.stderr
        assert "Traceback" not in listing.stderr
        assert "seeddump_theirs_staying" in listing.stdout
        assert "seeddump_theirs_being_dropped" not in listing.stdout + listing.stderr
