"""The suite's runs on a server they share: each run says there that it is alive, and the next run drops what
runs that were interrupted (killed, a closed terminal, CI's time limit) left behind: theirs only.

A run (``tests.settings.RUN``, shared by its xdist workers) holds the advisory lock ``(CLASS, key(RUN))``
shared, on a session of its own that lasts as long as the run, and is recorded by a role
``seeddump_testrun_<RUN>`` (NOLOGIN; its comment names the machine, the process and the run's temporary folder).
A run has ended when its role is there and nobody holds its lock: the server lets go of the lock when the
run's session ends, however the run ended. Of such a run only, ``drop_what_ended_runs_left`` drops its test
databases (``test_seeddump_<alias>_<RUN>``, ``…_gw0`` under xdist) and the databases and roles its tests made
(named ``sdt_<RUN>_…`` by ``conftest.own_name``, or named after such a name: ``test_sdt_<RUN>_…``), every
database seeddump labelled with one of them (undo copies, ready copies, scratch and replaced databases), the
snapshot cache of the dumps folders in the run's temporary folder, every database its roles own, the
throwaway roles of its restores (seeddump's own ``sandbox.drop_stale``, and those that are members of its
roles), then its roles (dropping what they own in the databases that remain), then the role that recorded it.
What cannot be dropped is said in a warning, and the run stays recorded, so that the next run tries again.
A run that is still going (another checkout, test.sh's core runs beside the whole suite) keeps its lock, so
nothing of it is touched; another project's databases carry none of these names, labels or owners.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import socket
import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from seeddump import databases, driver, finishing, postgres, sandbox, undo
from seeddump.driver import sql
from seeddump.exceptions import SeeddumpError

CLASS = 0x5EE7  # first key of a run's lock (seeddump's own locks use 0x5EED to 0x5EEF)
ROLE_PREFIX = "seeddump_testrun_"
_RUN = re.compile(r"[0-9a-z]{1,16}")


def own_prefix(run: str) -> str:
    """How the names of the databases and roles the run's tests make start (``conftest.own_name``)."""
    return f"sdt_{run}_"


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
    Returns the names dropped, the runs' roles last; what could not be dropped is said in a warning."""
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
            left: list[str] = []
            dropped += _drop_databases_of(admin, recorded, left)
            dropped += _drop_roles_of(admin, settings_dict, recorded, left)
            if left:
                warnings.warn(
                    f"The interrupted test run {recorded.run} left on the server what this run could not drop "
                    f"(the next run tries again): {', '.join(left)}",
                    stacklevel=2,
                )
                continue  # still recorded
            role = ROLE_PREFIX + recorded.run
            admin.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(sql.Identifier(role)))
            dropped.append(role)
        finally:
            admin.execute("SELECT pg_catalog.pg_advisory_unlock(%s, %s)", (CLASS, key(recorded.run)))
    if ended_any:
        dropped += sandbox.drop_stale(admin, settings_dict)  # the roles of its restores, their makers gone
    return dropped


def _named_for(run: str) -> re.Pattern[str]:
    """The databases named for the run: its test databases and those its tests made, with what is named after
    them (pytest-django's ``test_<name>`` and ``…_seeded_dev``, a project's own ``seeddump_demo_<name>``)."""
    return re.compile(rf"test_seeddump_[a-z0-9]+_{re.escape(run)}(_gw\d+)?|(.*_)?{re.escape(own_prefix(run))}.*")


def _drop_databases_of(admin: driver.Connection, run: EndedRun, left: list[str]) -> list[str]:
    """Drops the run's databases and seeddump's copies of them; returns their names, and adds to ``left`` those
    that could not be dropped."""
    named_for_the_run = _named_for(run.run)
    found = databases.with_prefix(admin, "", sizes=False)
    targets = {database.name for database in found if named_for_the_run.fullmatch(database.name)}
    targets |= {
        str(database.label["database"])
        for database in found
        if named_for_the_run.fullmatch(str(database.label.get("database", "")))
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
        if isinstance(labelled_for, str) and named_for_the_run.fullmatch(labelled_for):
            return True  # kept for one of its databases (gone or not)
        if database.name.startswith(prefixes):
            return True
        in_folder = database.label.get("folder")
        return folder is not None and isinstance(in_folder, str) and (in_folder + "/").startswith(folder)

    dropped = []
    for database in found:
        ours = database.ours and database.name.startswith("seeddump_")
        if ours and left_by_the_run(database) and databases.drop(admin, database.name):
            dropped.append(database.name)
        elif named_for_the_run.fullmatch(database.name) or database.owner.startswith(own_prefix(run.run)):
            # Its own, whoever owns it (the roles its tests made), and what those roles made.
            (dropped if _drop_any(admin, database) else left).append(database.name)
    return dropped


def _drop_any(admin: driver.Connection, database: databases.Database) -> bool:
    """Drops ``database`` whoever owns it, a template too; False when the connecting role may not."""
    if not database.droppable:
        return False
    name = sql.Identifier(database.name)
    try:
        admin.execute(sql.SQL("ALTER DATABASE {} IS_TEMPLATE false").format(name))  # a template cannot be dropped
        admin.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(name))
    except driver.Error:
        return False
    return True


def _drop_roles_of(
    admin: driver.Connection, settings_dict: Mapping[str, Any], run: EndedRun, left: list[str]
) -> list[str]:
    """Drops the roles the run's tests made, after the throwaway roles that are members of them (a restore's,
    or a look-alike a test made); returns their names, and adds to ``left`` those that could not be dropped."""
    own = own_prefix(run.run)
    throwaway = admin.execute(
        """
        SELECT DISTINCT r.rolname FROM pg_catalog.pg_auth_members m
        JOIN pg_catalog.pg_roles r ON r.oid = m.member JOIN pg_catalog.pg_roles g ON g.oid = m.roleid
        WHERE starts_with(r.rolname, %s) AND starts_with(g.rolname, %s)
        """,
        (sandbox.PREFIX, own),
    ).fetchall()
    made = admin.execute("SELECT rolname FROM pg_catalog.pg_roles WHERE starts_with(rolname, %s)", (own,)).fetchall()
    roles = [role for (role,) in [*throwaway, *made]]
    dropped = []
    for role in roles:
        (dropped if _drop_role(admin, settings_dict, role) else left).append(role)
    return dropped


def _drop_role(admin: driver.Connection, settings_dict: Mapping[str, Any], role: str) -> bool:
    """Drops ``role`` and, in each database that remains where it has something (pg_shdepend: what it owns, what
    it was granted; the maintenance database for what is shared), what it has there. False when it cannot go
    (a database that allows no connections, an object of someone else's that depends on one of its own)."""
    rows = admin.execute(
        """
        SELECT DISTINCT d.datname FROM pg_catalog.pg_shdepend s JOIN pg_catalog.pg_database d ON d.oid = s.dbid
        WHERE s.refclassid = 'pg_catalog.pg_authid'::regclass
          AND s.refobjid = (SELECT oid FROM pg_catalog.pg_roles WHERE rolname = %s)
        """,
        (role,),
    ).fetchall()
    drop_owned = sql.SQL("DROP OWNED BY {}").format(sql.Identifier(role))
    try:
        admin.execute(
            "SELECT pg_catalog.pg_terminate_backend(pid) FROM pg_catalog.pg_stat_activity WHERE usename = %s", (role,)
        )
        admin.execute(drop_owned)
        for (database,) in rows:
            if database != admin.info.dbname:
                with postgres.connect(settings_dict, database, wait=0) as conn:
                    conn.execute(drop_owned)
        admin.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(sql.Identifier(role)))
    except (driver.Error, SeeddumpError):
        return False
    return True
