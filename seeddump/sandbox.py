"""The sessions a dump's code runs in: logged in as a throwaway role that is only a member of the owner.

A dump is code: functions called by CHECK constraints, defaults, generated columns, triggers, row-level
security policies and index expressions run while pg_restore loads it, and again whenever something writes
to or reads from the restored tables (``--migrate``, the restore hooks, the admin's dump records).
``SET ROLE`` is no sandbox: a function can ``RESET ROLE`` (or ``SET ROLE postgres``) and get back the rights
of the role that logged in. So when seeddump connects as any role other than the owner of what it restores
(a superuser, or a role that is a member of the owner), every session that runs a restored database's code
logs in as a role made for that restore: ``seeddump_sandbox_<hex>``, LOGIN, a member of the owner and
nothing else, with a random password (sent to the server as a SCRAM verifier, handed to libpq in the
environment, never in an argv, a log line or a message), valid for an hour at a time (each use renews it),
dropped afterwards. Whatever the dump's code does, it has the owner's rights at most.

A restore that is killed, loses its connection or sees the server stop leaves its role behind: every later
``Sandbox`` (each restore, its background process) and ``snapshots --prune`` drop such leftovers
(``drop_stale``). Only seeddump's own: the role's comment, set in the transaction that made it, names the
role that made it and that role's server process (pid and start time); a leftover is one this connecting role
made (its membership in the owner was granted by this role, which a look-alike made by another role cannot
show), shaped as seeddump makes them, whose making process is gone. What the dump's code made as the role
itself (``SET ROLE NONE``, then ``CREATE``) is given to the owner first (``REASSIGN OWNED`` in each database
where it owns something), so that the role can go.

Where that cannot be had (the connecting role may not create roles, or the server does not let the new role
log in), the restore is refused before anything of the dump runs, in one line naming the ways out: connect
as the owner, or trust the dump (``restoredump --trust``, SEEDDUMP_TRUST_DUMPS, or a dump signed with
SEEDDUMP_SIGNING_KEY), which then runs as the connecting role with ``SET ROLE`` to the owner, as before.

Counting a restored database's rows runs none of its code (``postgres.count_rows``).
"""

from __future__ import annotations

import contextlib
import json
import secrets
from collections.abc import Mapping
from datetime import datetime, timedelta, timezone
from typing import Any

from seeddump import driver, postgres
from seeddump.conf import conf
from seeddump.driver import sql
from seeddump.exceptions import SeeddumpError

PREFIX = "seeddump_sandbox_"
# Long enough for what opens sessions after a login() (pg_restore's parallel workers connect after its first
# section); each login() renews it. A login that outlives a killed restore expires by itself.
LIFETIME = timedelta(hours=1)
LABEL = "seeddump sandbox "  # the comment: this, then JSON naming who made the role (see ``_label``)
_LEGACY_LABEL = "seeddump: a restore's dump code runs as this member of "  # before the label named its maker


class Refused(SeeddumpError):
    """No throwaway role could be had, and the dump is not trusted."""


class Sandbox:
    """The login a restore's dump code runs under (see the module docstring). ``login()`` makes the role the
    first time it is needed (a warm restore without hooks never does); leaving the ``with`` block drops it."""

    def __init__(
        self, admin: driver.Connection, settings_dict: Mapping[str, Any], owner: str, *, trusted: bool
    ) -> None:
        self.admin, self.settings_dict, self.owner, self.trusted = admin, settings_dict, owner, trusted
        self.user = session_user(admin)
        self.role: str | None = None
        self._settings: Mapping[str, Any] | None = None

    @property
    def needed(self) -> bool:
        return self.user != self.owner

    def login(self) -> Mapping[str, Any]:
        """DATABASES-style settings to connect with for running the dump's code: the throwaway role's when the
        connecting role is not the owner, the connecting role's own otherwise (or for a trusted dump where no
        throwaway role can be had). Every session made with them acts as the owner (``role`` at start-up)."""
        if self._settings is None:
            self._settings = self._make()
        elif self.role is not None:
            _renew(self.admin, self.role)
        return self._settings

    @property
    def describe(self) -> str:
        """For pg_restore's failures: who ran the dump's SQL."""
        if not self.needed:
            return "pg_restore"
        return f"pg_restore as '{self.owner}'"

    def _make(self) -> Mapping[str, Any]:
        as_owner = _acting_as(self.settings_dict, self.owner if self.needed else None)
        if not self.needed:
            return as_owner
        try:
            self.role, password = _create(self.admin, self.owner)
            login = {**as_owner, "USER": self.role, "PASSWORD": password}
            _check_login(login, self.user, self.owner)
        except Refused:
            if self.role is not None:
                drop(self.admin, self.role, self.settings_dict, self.owner)
                self.role = None
            if self.trusted:
                return as_owner  # SET ROLE only: the dump is trusted not to RESET it
            raise
        return login

    def give_away(self) -> sql.Composed:
        """SQL that gives the owner what the dump's code made as the throwaway role itself (``SET ROLE NONE``,
        then ``CREATE``) in the database it runs in, and revokes what was granted to that role: run where the
        code ran, before anything copies the database (a snapshot, a ready copy, an undo copy closed to
        connections, where the role could then never be dropped). Empty when there is no such role."""
        if self.role is None:
            return sql.Composed([])
        return _give_away_statements(self.role, self.owner)

    def __enter__(self) -> Sandbox:
        # Every restore cleans up after the ones that were killed; never in its way.
        with contextlib.suppress(driver.Error, SeeddumpError):
            drop_stale(self.admin, self.settings_dict)
        return self

    def __exit__(self, *exc_info: object) -> None:
        role, self.role, self._settings = self.role, None, None
        if role is not None:
            # Never in the way of what the block raised (a lost connection, say): the next restore drops it.
            with contextlib.suppress(driver.Error, SeeddumpError):
                drop(self.admin, role, self.settings_dict, self.owner)


def session_user(admin: driver.Connection) -> str:
    (user,) = admin.execute("SELECT session_user").fetchone()  # type: ignore[misc]
    return str(user)


def _acting_as(settings_dict: Mapping[str, Any], owner: str | None) -> dict[str, Any]:
    """``settings_dict`` whose sessions start as ``owner`` (libpq ``options``: ``-c role=…``, the start-up form
    of SET ROLE), instead of Django's ``assume_role``."""
    options = {k: v for k, v in (settings_dict.get("OPTIONS") or {}).items() if k != "assume_role"}
    if owner is not None:
        role = "-c role=" + owner.replace("\\", "\\\\").replace(" ", "\\ ")
        options["options"] = f"{options['options']} {role}" if options.get("options") else role
    return {**settings_dict, "OPTIONS": options}


def _refusal(user: str, owner: str, why: str) -> Refused:
    return Refused(
        f"seeddump connects as '{user}', not as '{owner}' (the owner of what it restores), and a dump is code: it "
        f"runs only as a throwaway member of '{owner}', but {why}. Connect as '{owner}' (DATABASES USER), or, "
        "for a dump you trust, restore with --trust (SEEDDUMP_TRUST_DUMPS, or sign dumps with SEEDDUMP_SIGNING_KEY)."
    )


def _create(admin: driver.Connection, owner: str) -> tuple[str, str]:
    name = PREFIX + secrets.token_hex(6)
    password = secrets.token_urlsafe(32)
    # The server stores (and may log) only the verifier: the password itself never leaves this process but
    # in the environment of the programs that log in with it.
    verifier = admin.pgconn.encrypt_password(password.encode(), name.encode(), b"scram-sha-256").decode()
    until = (datetime.now(timezone.utc) + LIFETIME).isoformat()
    statement = sql.SQL(
        "CREATE ROLE {} LOGIN INHERIT NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION NOBYPASSRLS "
        "PASSWORD {} VALID UNTIL {} IN ROLE {}"
    ).format(sql.Identifier(name), sql.Literal(verifier), sql.Literal(until), sql.Identifier(owner))
    user = session_user(admin)
    try:
        with admin.transaction():
            admin.execute(statement)
            admin.execute(
                sql.SQL("COMMENT ON ROLE {} IS {}").format(sql.Identifier(name), sql.Literal(_label(admin, owner)))
            )
            if not _is_superuser(admin):
                # So that this role may give away what the dump's code made as the throwaway one (REASSIGN OWNED
                # needs the rights of both): the throwaway role gets nothing from this.
                admin.execute(sql.SQL("GRANT {} TO {}").format(sql.Identifier(name), sql.Identifier(user)))
    except driver.errors.InsufficientPrivilege:
        raise _refusal(
            user, owner, f"it may not create such a role (it needs CREATEROLE and the right to grant '{owner}')"
        ) from None
    return name, password


def _label(admin: driver.Connection, owner: str) -> str:
    """The role's comment: who made it, from which server process (pid and start time, so that a reused pid is
    not taken for it), for which owner. ``drop_stale`` reads it back."""
    (pid, started) = admin.execute(
        "SELECT pid, backend_start FROM pg_stat_activity WHERE pid = pg_backend_pid()"
    ).fetchone()  # type: ignore[misc]
    maker = {"madeBy": session_user(admin), "pid": pid, "started": started.isoformat(), "owner": owner}
    return LABEL + json.dumps(maker)


def _is_superuser(admin: driver.Connection) -> bool:
    (superuser,) = admin.execute("SELECT rolsuper FROM pg_roles WHERE rolname = current_user").fetchone()  # type: ignore[misc]
    return bool(superuser)


def _renew(admin: driver.Connection, role: str) -> None:
    until = (datetime.now(timezone.utc) + LIFETIME).isoformat()
    admin.execute(sql.SQL("ALTER ROLE {} VALID UNTIL {}").format(sql.Identifier(role), sql.Literal(until)))


def _check_login(login: Mapping[str, Any], user: str, owner: str) -> None:
    """Logs in once as the new role, so that a server that refuses it (pg_hba.conf) says so before pg_restore."""
    try:
        driver.connect(**postgres.connect_kwargs(login, conf.MAINTENANCE_DB)).close()
    except driver.Error as exc:
        reason = postgres.scrub(postgres.first_line(str(exc)), login)
        raise _refusal(user, owner, f"the server does not let it log in ({reason})") from None


def drop(admin: driver.Connection, role: str, settings_dict: Mapping[str, Any], owner: str | None) -> bool:
    """Ends the role's sessions and drops it. What the dump's code made as the role itself goes to ``owner``
    first (REASSIGN OWNED, then DROP OWNED for its privileges, in each database where it has something). True
    when it is gone; False when something of it is where this role may not reach (a database that allows no
    connections): then it can no longer log in, and a later restore tries again."""
    admin.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = %s", (role,))
    try:
        admin.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(sql.Identifier(role)))
        return True
    except driver.errors.DependentObjectsStillExist:
        pass
    if owner:
        with contextlib.suppress(driver.Error):  # not this role's to give away: it is left, unable to log in
            _give_away(admin, role, settings_dict, owner)
    try:
        admin.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(sql.Identifier(role)))
        return True
    except driver.errors.DependentObjectsStillExist:
        admin.execute(sql.SQL("ALTER ROLE {} NOLOGIN PASSWORD NULL").format(sql.Identifier(role)))
        return False


def _give_away(admin: driver.Connection, role: str, settings_dict: Mapping[str, Any], owner: str) -> None:
    """REASSIGN OWNED BY ``role`` TO ``owner`` and DROP OWNED BY ``role`` in every database where the role owns
    something or holds a privilege (pg_shdepend; shared objects' are handled in the maintenance database)."""
    rows = admin.execute(
        """
        SELECT DISTINCT d.datname FROM pg_shdepend s JOIN pg_database d ON d.oid = s.dbid
        WHERE s.refclassid = 'pg_authid'::regclass AND s.refobjid = (SELECT oid FROM pg_roles WHERE rolname = %s)
        """,
        (role,),
    ).fetchall()
    statements = _give_away_statements(role, owner)
    admin.execute(statements)
    for (database,) in rows:
        if database == admin.info.dbname:
            continue
        try:
            with postgres.connect(settings_dict, database, wait=0) as conn:
                conn.execute(statements)
        except (driver.Error, SeeddumpError):
            continue  # a database closed for connections (a kept undo copy): the role waits for a later try


def _give_away_statements(role: str, owner: str) -> sql.Composed:
    return sql.SQL("REASSIGN OWNED BY {role} TO {owner};\nDROP OWNED BY {role};\n").format(
        role=sql.Identifier(role), owner=sql.Identifier(owner)
    )


def drop_stale(admin: driver.Connection, settings_dict: Mapping[str, Any]) -> list[str]:
    """Drops the throwaway roles this connecting role made for restores that are over without having dropped
    them (killed, disconnected, the server stopped): see the module docstring for how they are told from
    anyone else's. Returns the names dropped; one that cannot be dropped yet is left (it cannot log in)."""
    user = session_user(admin)
    superuser = _is_superuser(admin)
    rows = admin.execute(
        """
        SELECT r.rolname, coalesce(shobj_description(r.oid, 'pg_authid'), ''), r.rolvaliduntil < now(),
               r.rolsuper OR r.rolcreatedb OR r.rolcreaterole OR r.rolreplication OR r.rolbypassrls,
               array(SELECT m.roleid::regrole::text FROM pg_auth_members m WHERE m.member = r.oid),
               array(SELECT m.grantor::regrole::text FROM pg_auth_members m WHERE m.member = r.oid),
               pg_has_role(r.oid, 'MEMBER')
        FROM pg_roles r WHERE starts_with(r.rolname, %s)
        """,
        (PREFIX,),
    ).fetchall()
    # Who may have granted the membership: this role, or, when it is a superuser, the bootstrap superuser (in
    # whose name PostgreSQL 16 and later record a superuser's grants).
    (bootstrap,) = admin.execute("SELECT 10::regrole::text").fetchone()  # type: ignore[misc]
    grantors = {user, bootstrap} if superuser else {user}
    dropped = []
    for role, comment, expired, privileged, member_of, granted_by, ours in rows:
        if privileged or len(member_of) > 1 or not set(granted_by) <= grantors or not (member_of or ours):
            continue  # not shaped as seeddump makes them (a member of nothing: its owner was dropped since)
        owner = member_of[0] if member_of else None
        if comment.startswith(LABEL):
            try:
                maker = json.loads(comment.removeprefix(LABEL))
                made_by, pid, started, labelled_owner = maker["madeBy"], maker["pid"], maker["started"], maker["owner"]
            except (ValueError, KeyError, TypeError):
                continue
            if made_by != user or labelled_owner != (owner or labelled_owner) or _alive(admin, pid, started):
                continue
        elif not (owner and comment == _LEGACY_LABEL + owner and expired):
            continue  # another program's, or made by an older seeddump and maybe still in use
        with contextlib.suppress(driver.Error):
            if drop(admin, role, settings_dict, owner):
                dropped.append(role)
    return dropped


def _alive(admin: driver.Connection, pid: object, started: object) -> bool:
    try:
        (alive,) = admin.execute(
            "SELECT EXISTS (SELECT FROM pg_stat_activity WHERE pid = %s AND backend_start = %s::timestamptz)",
            (int(pid), str(started)),  # type: ignore[call-overload]
        ).fetchone()  # type: ignore[misc]
    except (driver.errors.DataException, ValueError, TypeError):
        return True  # an unreadable label: leave the role alone
    return bool(alive)


def is_sandbox(role: str) -> bool:
    return role.startswith(PREFIX)
