"""The crash matrix in CI: a fault right after every state change of each restore path keeps its invariant.

``seeds/scripts/crashmatrix.py`` records, in a real ``manage.py restoredump`` process (and the background
process it may start), every state change the path makes (seeddump's SQL but SELECT/SHOW/SET, every COMMIT,
every rename or removal of a file, every child process's exit), then runs it again once per change and fault
with the fault applied right after that change. Each case must leave the old state (rows and media files, the
run saying so) or the new one (the run saying so, ``--undo`` bringing the old back where the path keeps an
undo), then the next restore succeeds and nothing is left behind; each path's own invariant is in the script's
docstring. The cases are generated from what is recorded: a step written tomorrow is covered tomorrow. Here:
every path (cold, warm, in-place, in-place-no-undo, undo, first, finishing, mount: MEDIA_ROOT a loop-mounted
filesystem, pytest: the plugin's seeded test database), with media, each change x {SIGKILL, SIGTERM}, on the
embedded server, one test per path; the in-place path's sessions fault (every server session of the restore
ended, psql's mid-load among them); and the server-stop fault once psql loads in place, on a server of the
matrix's own. The whole stop matrix (one case at a time, each with a restart): run the script."""

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

# Cases the matrix finds broken in seeddump, each with why ("path #change fault": reason). Strict: a case
# listed here that holds fails the test too, so that the list is shortened the day seeddump is mended.
EXPECTED_BROKEN: dict[str, str] = {}

pytestmark = pytest.mark.django_db(transaction=True, databases="__all__")


def run(path: str, faults: tuple[str, ...], dump: Path, workdir: Path) -> crashmatrix.Report:
    """The path's cases with ``faults`` on the embedded server; fails with every case broken but those listed."""
    if crashmatrix.PATHS[path].mount and os.geteuid() != 0:
        unavailable(f"mounting a filesystem as MEDIA_ROOT needs root (this runs as uid {os.geteuid()})")
    server = crashmatrix.Server(
        connections["default"].settings_dict, tuple(Path(p) for p in settings.SEEDDUMP_PG_BIN_DIRS)
    )

    report = crashmatrix.run_matrix(
        server,
        dump,
        paths=(path,),
        faults=faults,
        jobs=3,
        workdir=workdir,
        progress=lambda outcome: print("." if outcome.held else f"\n{outcome.case}: {outcome.why}", end="", flush=True),
    )

    print(report.text())
    expected = {
        key: reason for key, reason in EXPECTED_BROKEN.items() if key.startswith(f"{path} #") and key.endswith(faults)
    }
    broken = {outcome.case.key: f"{outcome.case}: {outcome.why}" for outcome in report.broken()}
    unexpected = [why for key, why in broken.items() if key not in expected]
    now_holding = [f"{key} ({reason})" for key, reason in expected.items() if key not in broken]
    assert not unexpected and not now_holding, "\n".join(
        [*(f"BROKE {why}" for why in unexpected), *(f"NOW HOLDS {key}" for key in now_holding)]
    )
    return report


# Each path takes one to four minutes alone on two cores (cold about 3.5), and CI runs the core tests beside
# it: bounded, but above the default.
@pytest.mark.timeout(900)
@pytest.mark.parametrize("path", tuple(crashmatrix.PATHS))
def test_every_change_of_the_path_survives_kill_and_sigterm(
    path: str, media_dumps: dict[str, MediaDump], tmp_path: Path
) -> None:
    report = run(path, ("kill", "term"), media_dumps["default"].path, tmp_path / "matrix")

    # The probe sees seeddump's own connections (once it saw none of their SQL after their class moved, and the
    # matrix passed testing only the files): every path changes the server, the cold one by its swap's COMMIT.
    changes = report.changes[path]
    assert any(c.kind == "sql" for c in changes), changes
    if path == "cold":
        assert any(c.shape == "COMMIT" and "databases.py:swap" in c.where for c in changes), changes
    if path == "mount":  # the media went in by moving MEDIA_ROOT's contents, not by renaming it
        assert not any("renameat2" in c.shape for c in changes), changes
    if path == "pytest":
        assert any("testdatabases.py" in c.where for c in changes), changes


@pytest.mark.timeout(900)
def test_every_server_session_of_an_in_place_restore_ended_after_each_change(
    media_dumps: dict[str, MediaDump], tmp_path: Path
) -> None:
    report = run("in-place", ("sessions",), media_dumps["default"].path, tmp_path / "matrix")

    # Among the cases: psql's load session ended mid-load (once it has its session, after the start of psql).
    starts = [c for c in report.changes["in-place"] if c.kind == "start" and c.shape == "psql"]
    assert starts and {o.case.change for o in report.outcomes} >= set(starts)


@pytest.mark.timeout(600)
def test_a_server_stop_while_psql_loads_in_place_says_what_it_knows(
    media_dumps: dict[str, MediaDump], tmp_path: Path
) -> None:
    """The stop fault on a server of the matrix's own (it needs one: the stop ends every case on the server),
    right once psql has its load session: the old database stays, and the line says the restore was
    interrupted before the server could say (it used to be PostgreSQL's error alone)."""
    bin_dirs = tuple(Path(p) for p in settings.SEEDDUMP_PG_BIN_DIRS)
    with crashmatrix.private_server(bin_dirs) as server:
        report = crashmatrix.run_matrix(
            server,
            media_dumps["default"].path,
            paths=("in-place",),
            faults=("stop",),
            jobs=1,
            workdir=tmp_path / "matrix",
            only=lambda change: change.kind == "start" and change.shape == "psql",
        )

    print(report.text())
    assert report.outcomes and all(o.case.change.shape == "psql" for o in report.outcomes)
    assert not report.broken(), "\n".join(f"BROKE {o.case}: {o.why}" for o in report.broken())
