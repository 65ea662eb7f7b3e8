"""The crash matrix in CI: a fault right after every state change of each restore path keeps its invariant.

``seeds/scripts/crashmatrix.py`` records, in a real ``manage.py restoredump`` process (and the background
process it may start), every state change the path makes (seeddump's SQL but SELECT/SHOW/SET, every COMMIT,
every rename or removal of a file, every child process's exit), then runs it again once per change and fault
with the fault applied right after that change. Each case must leave the old state (rows and media files, the
run saying so) or the new one (the run saying so, ``--undo`` bringing the old back where the path keeps an
undo), then the next restore succeeds and nothing is left behind; each path's own invariant is in the script's
docstring. The cases are generated from what is recorded: a step written tomorrow is covered tomorrow. Here:
every path (cold, warm, in-place, in-place-no-undo, undo, first, finishing), with media, each change x
{SIGKILL, SIGTERM}, on the embedded server, one test per path (the sessions fault: run the script)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from django.conf import settings
from django.db import connections

from tests.conftest import REPO, MediaDump

sys.path.insert(0, str(REPO / "seeds" / "scripts"))
import crashmatrix

# Cases the matrix finds broken in seeddump, each with why ("path #change fault": reason). Strict: a case
# listed here that holds fails the test too, so that the list is shortened the day seeddump is mended.
EXPECTED_BROKEN: dict[str, str] = {}

pytestmark = pytest.mark.django_db(transaction=True, databases="__all__")


# Each path takes one to four minutes alone on two cores (cold about 3.5), and CI runs the core tests beside
# it: bounded, but above the default.
@pytest.mark.timeout(900)
@pytest.mark.parametrize("path", tuple(crashmatrix.PATHS))
def test_every_change_of_the_path_survives_kill_and_sigterm(
    path: str, media_dumps: dict[str, MediaDump], tmp_path: Path
) -> None:
    server = crashmatrix.Server(
        connections["default"].settings_dict, tuple(Path(p) for p in settings.SEEDDUMP_PG_BIN_DIRS)
    )

    report = crashmatrix.run_matrix(
        server,
        media_dumps["default"].path,
        paths=(path,),
        faults=("kill", "term"),
        jobs=3,
        workdir=tmp_path / "matrix",
        progress=lambda outcome: print("." if outcome.held else f"\n{outcome.case}: {outcome.why}", end="", flush=True),
    )

    print(report.text())
    # The probe sees seeddump's own connections (once it saw none of their SQL after their class moved, and the
    # matrix passed testing only the files): every path changes the server, the cold one by its swap's COMMIT.
    changes = report.changes[path]
    assert any(c.kind == "sql" for c in changes), changes
    if path == "cold":
        assert any(c.shape == "COMMIT" and "databases.py:swap" in c.where for c in changes), changes
    expected = {key: reason for key, reason in EXPECTED_BROKEN.items() if key.startswith(f"{path} #")}
    broken = {outcome.case.key: f"{outcome.case}: {outcome.why}" for outcome in report.broken()}
    unexpected = [why for key, why in broken.items() if key not in expected]
    now_holding = [f"{key} ({reason})" for key, reason in expected.items() if key not in broken]
    assert not unexpected and not now_holding, "\n".join(
        [*(f"BROKE {why}" for why in unexpected), *(f"NOW HOLDS {key}" for key in now_holding)]
    )
