"""The crash matrix in CI: a fault right after every state change of each restore path keeps its invariant.

``seeds/scripts/crashmatrix.py`` records, in a real ``manage.py restoredump`` process (and the background
process it may start), every state change the path makes (seeddump's SQL but SELECT/SHOW/SET, every COMMIT,
every rename or removal of a file, every child process's exit), then runs it again once per change and fault
with the fault applied right after that change. Each case must leave the old state (rows and media files, the
run saying so) or the new one (the run saying so, ``--undo`` bringing the old back where the path keeps an
undo), then the next restore succeeds and nothing is left behind; each path's own invariant is in the script's
docstring. The cases are generated from what is recorded: a step written tomorrow is covered tomorrow. Here:
every path (cold, warm, in-place, in-place-no-undo, undo, first, finishing, mount: MEDIA_ROOT a loop-mounted
filesystem, sandboxed: the superuser's restore of an application role's database, pytest: the plugin's seeded
test database), with media, each change x {SIGKILL, SIGTERM}, one test per path, each path's cases shared
between the embedded PostgreSQL 18 and the machine's 15 (every change runs on both, one fault on each; each
server records the path's changes itself); the in-place and cold paths' sessions fault (every server session of
the restore ended, the load's mid-load among them), shared the same way; and the server-stop fault once psql loads in
place and right after the sandboxed restore makes its scratch database, on a server of the matrix's own. The whole
stop matrix (one case at a time, each with a restart; ``--share`` halves it across two servers): run the script.
A matrix run killed mid-case leaves nothing the next one does not drop."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest
from django.conf import settings
from django.db import connections

from tests.conftest import REPO, MediaDump, unavailable

sys.path.insert(0, str(REPO / "seeds" / "scripts"))
import crashmatrix

SERVERS = ("default", "system")  # the embedded PostgreSQL 18, the machine's 15

# Cases the matrix finds broken in seeddump, each with why ("server path #change fault": reason). Strict: a case
# listed here that holds fails the test too, so that the list is shortened the day seeddump is mended.
EXPECTED_BROKEN: dict[str, str] = {}

pytestmark = pytest.mark.django_db(transaction=True, databases="__all__")


def run(path: str, faults: tuple[str, ...], dumps: dict[str, MediaDump], workdir: Path) -> list[crashmatrix.Report]:
    """The path's cases with ``faults``, half on the embedded PostgreSQL 18 and half on the machine's 15 (each
    change alternates between them, and so do its faults: ``Matrix.cases``); fails with every case broken but
    those listed. Returns each server's report."""
    if crashmatrix.PATHS[path].mount and os.geteuid() != 0:
        unavailable(f"mounting a filesystem as MEDIA_ROOT needs root (this runs as uid {os.geteuid()})")
    if "system" not in connections.settings:
        unavailable("the crash matrix takes half of its cases to the machine's PostgreSQL, which is not reachable")
    bin_dirs = tuple(Path(p) for p in settings.SEEDDUMP_PG_BIN_DIRS)
    reports, broken = [], {}
    for part, alias in enumerate(SERVERS):
        report = crashmatrix.run_matrix(
            crashmatrix.Server(connections[alias].settings_dict, bin_dirs),
            dumps[alias].path,
            paths=(path,),
            faults=faults,
            jobs=3,
            workdir=workdir / alias,
            share=(part, len(SERVERS)),
            progress=lambda o: print("." if o.held else f"\n{o.case}: {o.why}", end="", flush=True),
        )
        print(f"\n{alias}:\n{report.text()}")
        assert report.outcomes, f"no case ran on {alias}"
        broken.update({f"{alias} {o.case.key}": f"{alias} {o.case}: {o.why}" for o in report.broken()})
        reports.append(report)

    expected = {
        key: reason
        for key, reason in EXPECTED_BROKEN.items()
        if key.split(" ", 1)[1].startswith(f"{path} #") and key.endswith(faults)
    }
    unexpected = [why for key, why in broken.items() if key not in expected]
    now_holding = [f"{key} ({reason})" for key, reason in expected.items() if key not in broken]
    assert not unexpected and not now_holding, "\n".join(
        [*(f"BROKE {why}" for why in unexpected), *(f"NOW HOLDS {key}" for key in now_holding)]
    )
    return reports


# Each path takes one to four minutes alone on two cores (cold about 3.5), and CI runs the core tests beside
# it: bounded, but above the default.
@pytest.mark.timeout(900)
@pytest.mark.parametrize("path", tuple(crashmatrix.PATHS))
def test_every_change_of_the_path_survives_kill_and_sigterm(
    path: str, media_dumps: dict[str, MediaDump], tmp_path: Path
) -> None:
    reports = run(path, ("kill", "term"), media_dumps, tmp_path / "matrix")

    # The probe sees seeddump's own connections (once it saw none of their SQL after their class moved, and the
    # matrix passed testing only the files): every path changes the server, the cold one by its swap's COMMIT.
    for report in reports:
        changes = report.changes[path]
        assert any(c.kind == "sql" for c in changes), changes
        if path == "cold":
            assert any(c.shape == "COMMIT" and "databases.py:swap" in c.where for c in changes), changes
        if path == "mount":  # the media went in by moving MEDIA_ROOT's contents, not by renaming it
            assert not any("renameat2" in c.shape for c in changes), changes
        if path in ("pytest", "sandboxed"):  # the dump's code ran as a throwaway role, made and dropped
            assert any("sandbox.py" in c.where for c in changes), changes
        if path == "pytest":
            assert any("testdatabases.py" in c.where for c in changes), changes


@pytest.mark.timeout(900)
@pytest.mark.parametrize("path", ["in-place", "cold"])
def test_every_server_session_of_the_restore_ended_after_each_change(
    path: str, media_dumps: dict[str, MediaDump], tmp_path: Path
) -> None:
    reports = run(path, ("sessions",), media_dumps, tmp_path / "matrix")

    # Among the cases: the load's session ended mid-load (once it has its session, after the start of psql in
    # place, of pg_restore cold), on one server or the other.
    starts = {(c.number, c.shape) for r in reports for c in r.changes[path] if c.kind == "start"}
    faulted = {(o.case.change.number, o.case.change.shape) for r in reports for o in r.outcomes}
    load = "psql" if path == "in-place" else "pg_restore"
    assert any(shape == load for _, shape in starts) and faulted >= starts


@pytest.mark.timeout(600)
def test_a_server_stop_says_what_it_knows(media_dumps: dict[str, MediaDump], tmp_path: Path) -> None:
    """The stop fault on a server of the matrix's own (it needs one: the stop ends every case on the server): once
    psql has its load session in place, the old database stays, and the line says the restore was interrupted
    before the server could say (it used to be PostgreSQL's error alone); right after the superuser's sandboxed
    restore made its scratch database, whose next step is a new connection, the line says the target was not
    changed (it used to be "Cannot connect" alone: the script's whole stop matrix found it)."""
    bin_dirs = tuple(Path(p) for p in settings.SEEDDUMP_PG_BIN_DIRS)

    def stopped_at(change: crashmatrix.Change) -> bool:
        loads_in_place = change.kind == "start" and change.shape == "psql"
        scratch_made = change.kind == "sql" and change.where.startswith("databases.py:create < restore.py:_restore")
        return loads_in_place or scratch_made

    with crashmatrix.private_server(bin_dirs) as server:
        report = crashmatrix.run_matrix(
            server,
            media_dumps["default"].path,
            paths=("in-place", "sandboxed"),
            faults=("stop",),
            jobs=1,
            workdir=tmp_path / "matrix",
            only=stopped_at,
        )

    print(report.text())
    faulted = {(o.case.path, o.case.change.kind) for o in report.outcomes}
    assert faulted == {("in-place", "start"), ("sandboxed", "sql")}, faulted
    assert not report.broken(), "\n".join(f"BROKE {o.case}: {o.why}" for o in report.broken())


@pytest.mark.timeout(300)
def test_a_matrix_run_that_ended_without_its_cleanup_is_cleaned_up_by_the_next(
    media_dumps: dict[str, MediaDump], tmp_path: Path
) -> None:
    """The matrix shares the machine's server with whatever else runs there: a run killed mid-case (CI's time
    limit) leaves its databases and roles, which the next run drops; a run still going is left alone."""
    if "system" not in connections.settings:
        unavailable("the crash matrix takes half of its cases to the machine's PostgreSQL, which is not reachable")
    server = crashmatrix.Server(
        connections["system"].settings_dict, tuple(Path(p) for p in settings.SEEDDUMP_PG_BIN_DIRS)
    )
    dump = media_dumps["system"].path
    ended = crashmatrix.Matrix(server, dump, tmp_path / "ended", jobs=2)
    going = crashmatrix.Matrix(server, dump, tmp_path / "going", jobs=1)
    try:
        ended.prepare()
        with server.connect() as admin:  # mid-case: a target, and a throwaway login role of a restore
            admin.execute(f'CREATE DATABASE "{ended.slots[1].target}"')
            admin.execute(f'CREATE ROLE "seeddump_sandbox_{ended.run}00" LOGIN IN ROLE "{ended.slots[1].owner}"')
        assert ended.alive is not None
        ended.alive.close()  # the process died: the server lets go of its lock
        going.prepare()  # the next run (this one stays alive) cleans up after the one that ended

        with server.connect() as admin:
            names = [n for (n,) in admin.execute("SELECT datname FROM pg_database").fetchall()]
            roles = [n for (n,) in admin.execute("SELECT rolname FROM pg_roles").fetchall()]
        assert not [n for n in names + roles if n.startswith(f"crashmatrix_{ended.run}_")]
        assert f"seeddump_sandbox_{ended.run}00" not in roles
        assert not (tmp_path / "ended").exists()
        assert f"crashmatrix_{going.run}_old" in names and f"crashmatrix_{going.run}_owner0" in roles
        assert crashmatrix.drop_ended_runs(server) == []  # the one going is not touched
    finally:
        going.cleanup()
        ended.cleanup()
