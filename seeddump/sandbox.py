"""The sessions a dump's code runs in: logged in as a throwaway role that is only a member of the owner.

A dump is code: functions called by CHECK constraints, defaults, generated columns, triggers, row-level
security policies and index expressions run while pg_restore loads it, and again whenever something writes
to or reads from the restored tables (``--migrate``, the restore hooks, the admin's dump records).
``SET ROLE`` is no sandbox: a function can ``RESET ROLE`` (or ``SET ROLE postgres``) and get back the rights
of the role that logged in. So when seeddump connects as any role other than the owner of what it restores
(a superuser, or a role that is a member of the owner), every session that runs a restored database's code
logs in as a role made for that restore: ``seeddump_sandbox_<hex>``, LOGIN, a member of the owner and
nothing else, with a random password (sent to the server as a SCRAM verifier, handed to libpq in the
environment, never in an argv, a log line or a message), valid for a few hours, dropped afterwards (its
leftovers, once expired, by the next restore). Whatever the dump's code does, it has the owner's rights at
most.

Where that cannot be had (the connecting role may not create roles, or the server does not let the new role
log in), the restore is refused before anything of the dump runs, in one line naming the ways out: connect
as the owner, or trust the dump (``restoredump --trust``, SEEDDUMP_TRUST_DUMPS, or a dump signed with
SEEDDUMP_SIGNING_KEY), which then runs as the connecting role with ``SET ROLE`` to the owner, as before.

Counting a restored database's rows runs none of its code (``postgres.count_rows``).
"""

from __future__ import annotations

import contextlib
import secrets
from collections.abc import Mapping
from datetime import datetime, timedelta, timezone
from typing import Any

import psycopg
from psycopg import sql

from seeddump import postgres
from seeddump.conf import conf
from seeddump.exceptions import SeeddumpError

PREFIX = "seeddump_sandbox_"
LIFETIME = timedelta(hours=12)  # a login that outlives a killed restore expires by itself


class Refused(SeeddumpError):
    """No throwaway role could be had, and the dump is not trusted."""


class Sandbox:
    """The login a restore's dump code runs under (see the module docstring). ``login()`` makes the role the
    first time it is needed (a warm restore without hooks never does); leaving the ``with`` block drops it."""

    def __init__(
        self, admin: psycopg.Connection, settings_dict: Mapping[str, Any], owner: str, *, trusted: bool
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
        drop_expired(self.admin)
        try:
            self.role, password = _create(self.admin, self.owner)
            login = {**as_owner, "USER": self.role, "PASSWORD": password}
            _check_login(login, self.user, self.owner)
        except Refused:
            if self.role is not None:
                drop(self.admin, self.role)
                self.role = None
            if self.trusted:
                return as_owner  # SET ROLE only: the dump is trusted not to RESET it
            raise
        return login

    def __enter__(self) -> Sandbox:
        return self

    def __exit__(self, *exc_info: object) -> None:
        role, self.role, self._settings = self.role, None, None
        if role is not None:
            # Never in the way of what the block raised (a lost connection, say): an undropped role expires.
            with contextlib.suppress(psycopg.Error):
                drop(self.admin, role)


def session_user(admin: psycopg.Connection) -> str:
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


def _create(admin: psycopg.Connection, owner: str) -> tuple[str, str]:
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
                sql.SQL("COMMENT ON ROLE {} IS {}").format(
                    sql.Identifier(name), sql.Literal(f"seeddump: a restore's dump code runs as this member of {owner}")
                )
            )
    except psycopg.errors.InsufficientPrivilege:
        raise _refusal(
            user, owner, f"it may not create such a role (it needs CREATEROLE and the right to grant '{owner}')"
        ) from None
    return name, password


def _check_login(login: Mapping[str, Any], user: str, owner: str) -> None:
    """Logs in once as the new role, so that a server that refuses it (pg_hba.conf) says so before pg_restore."""
    try:
        psycopg.connect(**postgres.connect_kwargs(login, conf.MAINTENANCE_DB)).close()
    except psycopg.Error as exc:
        reason = postgres.scrub(postgres.first_line(str(exc)), login)
        raise _refusal(user, owner, f"the server does not let it log in ({reason})") from None


def drop(admin: psycopg.Connection, role: str) -> None:
    """Ends the role's sessions and drops it; what it owns anywhere it could create things stays with the
    owner (REASSIGN happens per database, so a role that owns something elsewhere is left to expire)."""
    admin.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = %s", (role,))
    try:
        admin.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(sql.Identifier(role)))
    except psycopg.errors.DependentObjectsStillExist:
        admin.execute(sql.SQL("ALTER ROLE {} NOLOGIN").format(sql.Identifier(role)))


def drop_expired(admin: psycopg.Connection) -> None:
    """Drops throwaway roles whose login has expired (a killed restore's): nobody can log in as them anyway."""
    rows = admin.execute(
        "SELECT rolname FROM pg_roles WHERE starts_with(rolname, %s) AND rolvaliduntil < now()", (PREFIX,)
    ).fetchall()
    for (role,) in rows:
        try:
            drop(admin, role)
        except psycopg.Error:
            continue  # another project's, which this role may not drop


def is_sandbox(role: str) -> bool:
    return role.startswith(PREFIX)
