"""Good manners on a shared server: `snapshots` shows this project's copies and sums up everyone else's, says
when another role keeps copies of the same database, and the cache's cost is said against the database's size."""

from __future__ import annotations

from pathlib import Path

import pytest
from django.db import connections

from tests.conftest import database_names, own_name, run_command
from tests.test_identity import Server
from tests.test_identity import server as server_fixture
from tests.test_undo import undo_copy_of

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
