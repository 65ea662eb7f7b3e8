"""The suite's runs on a server they share: each run says there that it is alive, and the next run drops what
runs that were interrupted (killed, a closed terminal, CI's time limit) left behind: theirs only.

A run (``tests.settings.RUN``, shared by its xdist workers) holds the advisory lock ``(CLASS, key(RUN))``
shared, on a session of its own that lasts as long as the run, and is recorded by a role
``seeddump_testrun_<RUN>`` (NOLOGIN; its comment names the machine, the process and the run's temporary folder).
A run has ended when its role is there and nobody holds its lock: the server lets go of the lock when the
run's session ends, however the run ended. Of such a run only, ``drop_what_ended_runs_left`` drops its test
databases (``test_seeddump_<alias>_<RUN>``, ``…_gw0`` under xdist), every database seeddump labelled with one of
them (undo copies, ready copies, scratch and replaced databases), the snapshot cache of the dumps folders in the
run's temporary folder, the throwaway roles of its restores (seeddump's own ``sandbox.drop_stale``), then its
role. A run that is still going (another checkout, test.sh's core runs beside the whole suite) keeps its lock,
so nothing of it is touched; another project's databases carry none of these names or labels.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import socket
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from seeddump import databases, driver, finishing, sandbox, undo
from seeddump.driver import sql

CLASS = 0x5EE7  # first key of a run's lock (seeddump's own locks use 0x5EED to 0x5EEF)
ROLE_PREFIX = "seeddump_testrun_"
_RUN = re.compile(r"[0-9a-z]{1,16}")


def key(run: str) -> int:
    """The second key of the run's lock (an int4)."""
    return int(hashlib.sha256(run.encode()).hexdigest()[:7], 16)


@dataclass(frozen=True)
class EndedRun:
    run: str
    temporary_folder: str  # where its dumps folders were ("" when not recorded)


def mark_alive(admin: driver.Connection, run: str, temporary_folder: Path) -> None:
    """Says on ``admin``'s server that ``run`` is alive for as long as ``admin`` stays open."""
    admin.execute("SELECT pg_catalog.pg_advisory_lock_shared(%s, %s)", (CLASS, key(run)))
    role = ROLE_PREFIX + run
    comment = json.dumps(
        {"host": socket.gethostname(), "pid": os.getpid(), "temporaryFolder": str(temporary_folder.resolve())}
    )
    try:
        with admin.transaction():
            admin.execute(sql.SQL("CREATE ROLE {} NOLOGIN").format(sql.Identifier(role)))
            admin.execute(sql.SQL("COMMENT ON ROLE {} IS {}").format(sql.Identifier(role), sql.Literal(comment)))
    except driver.errors.DuplicateObject:
        pass  # another xdist worker of this run recorded it
    except driver.errors.InsufficientPrivilege:
        pass  # a role that may not create roles: this run is not recorded, and what it leaves stays


def mark_ended(admin: driver.Connection, run: str) -> None:
    """The run ends normally: the last of its sessions (xdist workers) takes its role away."""
    admin.execute("SELECT pg_catalog.pg_advisory_unlock_shared(%s, %s)", (CLASS, key(run)))
    (last,) = admin.execute("SELECT pg_catalog.pg_try_advisory_lock(%s, %s)", (CLASS, key(run))).fetchone()  # type: ignore[misc]
    if last:
        admin.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(sql.Identifier(ROLE_PREFIX + run)))
        admin.execute("SELECT pg_catalog.pg_advisory_unlock(%s, %s)", (CLASS, key(run)))


def _recorded_runs(admin: driver.Connection) -> list[EndedRun]:
    rows = admin.execute(
        "SELECT rolname, coalesce(pg_catalog.shobj_description(oid, 'pg_authid'), '') FROM pg_catalog.pg_roles "
        "WHERE starts_with(rolname, %s) AND NOT rolcanlogin",
        (ROLE_PREFIX,),
    ).fetchall()
    runs = []
    for role, comment in rows:
        run = role.removeprefix(ROLE_PREFIX)
        if not _RUN.fullmatch(run):
            continue
        try:
            folder = str(json.loads(comment).get("temporaryFolder") or "")
        except (ValueError, AttributeError):
            folder = ""
        runs.append(EndedRun(run, folder))
    return runs


def drop_what_ended_runs_left(admin: driver.Connection, settings_dict: Mapping[str, Any]) -> list[str]:
    """Drops what the recorded runs that have ended left on ``admin``'s server (see the module docstring).
    Returns the names dropped, the runs' roles last."""
    dropped: list[str] = []
    ended_any = False
    for recorded in _recorded_runs(admin):
        (ended,) = admin.execute(  # type: ignore[misc]
            "SELECT pg_catalog.pg_try_advisory_lock(%s, %s)", (CLASS, key(recorded.run))
        ).fetchone()
        if not ended:
            continue  # still going (or another run is cleaning up after it right now)
        ended_any = True
        try:
            dropped += _drop_databases_of(admin, recorded)
            role = ROLE_PREFIX + recorded.run
            admin.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(sql.Identifier(role)))
            dropped.append(role)
        finally:
            admin.execute("SELECT pg_catalog.pg_advisory_unlock(%s, %s)", (CLASS, key(recorded.run)))
    if ended_any:
        dropped += sandbox.drop_stale(admin, settings_dict)  # the roles of its restores, their makers gone
    return dropped


def _drop_databases_of(admin: driver.Connection, run: EndedRun) -> list[str]:
    test_database = re.compile(rf"test_seeddump_[a-z0-9]+_{re.escape(run.run)}(_gw\d+)?")
    found = databases.with_prefix(admin, "", sizes=False)
    targets = {database.name for database in found if test_database.fullmatch(database.name)}
    targets |= {
        str(database.label["database"])
        for database in found
        if test_database.fullmatch(str(database.label.get("database", "")))
    }
    # What a killed restore made before it could label it, named after its target.
    prefixes = tuple(
        prefix(target)
        for target in targets
        for prefix in (finishing.scratch_prefix, finishing.retired_prefix, undo.prefix)
    )
    folder = run.temporary_folder.rstrip("/") + "/" if run.temporary_folder else None

    def left_by_the_run(database: databases.Database) -> bool:
        labelled_for = database.label.get("database")
        if isinstance(labelled_for, str) and test_database.fullmatch(labelled_for):
            return True  # kept for one of its test databases (gone or not)
        if database.name.startswith(prefixes):
            return True
        in_folder = database.label.get("folder")
        return folder is not None and isinstance(in_folder, str) and (in_folder + "/").startswith(folder)

    dropped = []
    for database in found:
        ours = database.ours and database.name.startswith("seeddump_")
        if ours and left_by_the_run(database) and databases.drop(admin, database.name):
            dropped.append(database.name)
    for name in sorted(targets):
        if databases.drop(admin, name):
            dropped.append(name)
    return dropped
