"""Everything that talks to PostgreSQL's own programs and to the server outside Django's ORM.

This is the one module that starts ``pg_dump`` and ``pg_restore``: it finds a pair of the right major
version, builds their argv, and hands them the connection settings (password included) through the
environment, never on the command line.
"""

from __future__ import annotations

import contextlib
import functools
import glob
import os
import re
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from seeddump import driver
from seeddump.conf import conf
from seeddump.driver import sql
from seeddump.exceptions import CannotConnect, ProgramFailed, SeeddumpError

# How seeddump's sessions show in pg_stat_activity (the background process says so).
APPLICATION_NAME = "seeddump"
# OPTIONS keys that Django understands but libpq does not.
_DJANGO_ONLY_OPTIONS = {"isolation_level", "server_side_binding", "pool", "assume_role", "cursor_factory"}
# PostgreSQL 13 left support in November 2025; Django 5.2 and 6.0 need 14, Django 6.1 needs 15.
MIN_SERVER_MAJOR = 14
_VERSION_RE = re.compile(r"\(PostgreSQL\)\s+(\d+)(?:\.(\d+))?")
# Connection failures worth waiting out: the server is starting, restarting or not up yet.
_TRANSIENT_MARKERS = ("connection refused", "no such file or directory", "the database system is starting up")


@dataclass(frozen=True)
class Server:
    """Where a Django database alias points, without its password."""

    host: str
    port: str
    user: str
    name: str

    def describe(self) -> str:
        where = self.host or "the local socket"
        return f"database '{self.name}' on {where}" + (f":{self.port}" if self.port else "")


def settings_for(using: str) -> Mapping[str, Any]:
    """The DATABASES entry of ``using``, checked to be a PostgreSQL database."""
    from django.db import connections

    if using not in connections.settings:
        raise SeeddumpError(f"There is no database '{using}' in DATABASES. Pass --database with one that exists.")
    # The entry itself (the connection's own settings_dict, which a test runner renames), without making the
    # connection: that would import the backend and with it every model field (python -m seeddump needs none).
    settings_dict = connections.settings[using]
    problem = engine_problem(str(settings_dict.get("ENGINE") or ""))
    if problem:
        raise SeeddumpError(f"DATABASES['{using}'] {problem}")
    return settings_dict


# Django's own PostgreSQL backends, known without importing them (importing one imports every model field).
_DJANGO_POSTGRESQL_ENGINES = frozenset({"django.db.backends.postgresql", "django.contrib.gis.db.backends.postgis"})


@functools.cache
def engine_problem(engine: str) -> str | None:
    """Why seeddump cannot work with the backend ``engine`` (a sentence that follows "DATABASES['x']"), or None
    when it is PostgreSQL underneath: Django's, GeoDjango's, or a wrapper of them (a connection pool, metrics,
    multi-tenancy), as the backend itself says (its DatabaseWrapper's ``vendor``)."""
    if engine in _DJANGO_POSTGRESQL_ENGINES:
        return None
    from django.core.exceptions import ImproperlyConfigured
    from django.db.utils import load_backend

    try:
        wrapper = load_backend(engine).DatabaseWrapper
    except (ImproperlyConfigured, ImportError, AttributeError) as exc:
        reason = first_line(str(exc)).rstrip(".")
        return f"uses {engine}, which cannot be loaded ({reason}). Check ENGINE, or install its package."
    vendor = getattr(wrapper, "vendor", None)
    if vendor != "postgresql":
        return f"uses {engine} (a {vendor or 'non-PostgreSQL'} backend); seeddump works with PostgreSQL only."
    return None


def close_django_connection(using: str) -> None:
    """Closes Django's connection ``using`` if this process opened it (a rename needs the database unused)."""
    from django.db import connections

    for connection in connections.all(initialized_only=True):
        if connection.alias == using:
            connection.close()


@contextlib.contextmanager
def django_connection_to(using: str, name: str, login: Mapping[str, Any] | None = None) -> Iterator[None]:
    """Django's connection ``using`` goes to database ``name`` on the same server inside the block (logged in
    with ``login``'s USER, PASSWORD and OPTIONS, when given), so that migrate, the ORM and the project's
    signals all use it; back to its own database and login afterwards."""
    from django.db import connections

    connection = connections[using]
    keys = ("NAME", "USER", "PASSWORD", "OPTIONS")
    original = {key: connection.settings_dict.get(key) for key in keys}
    connection.close()
    connection.settings_dict["NAME"] = name
    if login is not None:
        for key in keys[1:]:
            connection.settings_dict[key] = login.get(key)
    try:
        yield
    finally:
        connection.close()
        connection.settings_dict.update(original)


@contextlib.contextmanager
def user_errors(settings_dict: Mapping[str, Any]) -> Iterator[None]:
    """Turns a database or file-system failure into a one-line SeeddumpError without the password."""
    try:
        yield
    except driver.Error as exc:
        raise SeeddumpError(f"PostgreSQL said: {scrub(first_line(str(exc)), settings_dict)}.") from None
    except OSError as exc:
        where = f"{exc.filename}: " if exc.filename else ""
        raise SeeddumpError(f"{where}{exc.strerror or exc}.") from None


def server_of(settings_dict: Mapping[str, Any]) -> Server:
    return Server(
        host=str(settings_dict.get("HOST") or ""),
        port=str(settings_dict.get("PORT") or ""),
        user=str(settings_dict.get("USER") or ""),
        name=str(settings_dict.get("NAME") or ""),
    )


def scrub(text: str, settings_dict: Mapping[str, Any]) -> str:
    """Removes the password from a message that may echo connection details."""
    password = settings_dict.get("PASSWORD")
    if password:
        text = text.replace(str(password), "********")
    return text


# libpq's environment variable for each connection parameter that has one (the PostgreSQL manual, "Environment
# Variables"): how pg_dump, pg_restore and psql get the connection the project configured in OPTIONS. Parameters
# without one (keepalives*, tcp_user_timeout, sslpassword) only tune a connection the tools make without them.
_LIBPQ_ENV = {
    "service": "PGSERVICE",
    "servicefile": "PGSERVICEFILE",
    "passfile": "PGPASSFILE",
    "options": "PGOPTIONS",
    "connect_timeout": "PGCONNECT_TIMEOUT",
    "client_encoding": "PGCLIENTENCODING",
    "hostaddr": "PGHOSTADDR",
    "sslmode": "PGSSLMODE",
    "sslnegotiation": "PGSSLNEGOTIATION",
    "sslrootcert": "PGSSLROOTCERT",
    "sslcert": "PGSSLCERT",
    "sslkey": "PGSSLKEY",
    "sslcrl": "PGSSLCRL",
    "sslcrldir": "PGSSLCRLDIR",
    "sslsni": "PGSSLSNI",
    "sslcompression": "PGSSLCOMPRESSION",
    "ssl_min_protocol_version": "PGSSLMINPROTOCOLVERSION",
    "ssl_max_protocol_version": "PGSSLMAXPROTOCOLVERSION",
    "requirepeer": "PGREQUIREPEER",
    "require_auth": "PGREQUIREAUTH",
    "channel_binding": "PGCHANNELBINDING",
    "gssencmode": "PGGSSENCMODE",
    "gsslib": "PGGSSLIB",
    "gssdelegation": "PGGSSDELEGATION",
    "krbsrvname": "PGKRBSRVNAME",
    "target_session_attrs": "PGTARGETSESSIONATTRS",
    "load_balance_hosts": "PGLOADBALANCEHOSTS",
}


def application_name(settings_dict: Mapping[str, Any]) -> str:
    """The project's application_name with seeddump's after it, so that its sessions are found by either."""
    mine = (settings_dict.get("OPTIONS") or {}).get("application_name")
    return f"{mine}/{APPLICATION_NAME}" if mine else APPLICATION_NAME


# A role's or database's timeouts (ALTER ROLE ... SET statement_timeout) do not reach seeddump's programs: set
# at start-up, these come before any statement runs. pg_restore and pg_dump clear them only after their first
# query, and a timeout that fires there is reported as "canceling statement due to user request" (seen in CI
# with a 1 ms statement_timeout on a busy machine).
_PROGRAM_LIMITS = "-c statement_timeout=0 -c idle_in_transaction_session_timeout=0"


def client_env(settings_dict: Mapping[str, Any], dbname: str | None = None) -> dict[str, str]:
    """libpq environment variables for the database of ``settings_dict`` (or ``dbname`` on that server): the
    server, the login and every connection parameter of OPTIONS that libpq reads from the environment, with
    seeddump's own limits after the project's options."""
    options = settings_dict.get("OPTIONS") or {}
    values = {
        "PGHOST": settings_dict.get("HOST"),
        "PGPORT": settings_dict.get("PORT"),
        "PGUSER": settings_dict.get("USER"),
        "PGPASSWORD": settings_dict.get("PASSWORD"),
        "PGDATABASE": dbname or settings_dict.get("NAME"),
        **{variable: options.get(parameter) for parameter, variable in _LIBPQ_ENV.items()},
        "PGOPTIONS": " ".join(str(part) for part in (options.get("options"), _PROGRAM_LIMITS) if part),
        "PGAPPNAME": application_name(settings_dict),
    }
    return {key: str(value) for key, value in values.items() if value not in (None, "")}


def connect_kwargs(settings_dict: Mapping[str, Any], dbname: str) -> dict[str, Any]:
    options = {k: v for k, v in (settings_dict.get("OPTIONS") or {}).items() if k not in _DJANGO_ONLY_OPTIONS}
    kwargs: dict[str, Any] = {
        "host": settings_dict.get("HOST") or None,
        "port": settings_dict.get("PORT") or None,
        "user": settings_dict.get("USER") or None,
        "password": settings_dict.get("PASSWORD") or None,
        "dbname": dbname,
        "connect_timeout": conf.CONNECT_TIMEOUT,
        **options,
        "application_name": application_name(settings_dict),
    }
    return {k: v for k, v in kwargs.items() if v is not None}


def connect(
    settings_dict: Mapping[str, Any], dbname: str | None = None, *, wait: float | None = None
) -> driver.Connection:
    """An autocommit connection to ``dbname`` (default: the alias's database) on the alias's server.

    A server that is down or still starting is retried for ``wait`` seconds (default: the
    SEEDDUMP_CONNECT_TIMEOUT setting); any other failure is reported at once.
    """
    dbname = dbname or str(settings_dict.get("NAME") or "")
    deadline = time.monotonic() + (conf.CONNECT_TIMEOUT if wait is None else wait)
    delay = 0.1
    while True:
        try:
            conn = driver.connect(**connect_kwargs(settings_dict, dbname))
        except driver.Error as exc:
            reason = scrub(first_line(str(exc)), settings_dict)
            transient = any(marker in reason.lower() for marker in _TRANSIENT_MARKERS)
            if transient and time.monotonic() + delay < deadline:
                time.sleep(delay)  # bounded back-off while the server comes up
                delay = min(delay * 2, 1.0)
                continue
            server = server_of({**settings_dict, "NAME": dbname})
            raise CannotConnect(
                f"Cannot connect to {server.describe()}: {reason}. "
                "Check that PostgreSQL is running and that DATABASES is right."
            ) from None
        if conn.info.server_version < MIN_SERVER_MAJOR * 10000:
            found = server_version_text(conn)
            conn.close()
            server = server_of({**settings_dict, "NAME": dbname})
            raise SeeddumpError(
                f"{server.describe()} runs PostgreSQL {found}; seeddump needs PostgreSQL {MIN_SERVER_MAJOR} or "
                "newer. Upgrade the server (Django 5.2 and 6.0 need 14 too, Django 6.1 needs 15)."
            )
        # seeddump's own statements set their own limits: a role's or database's statement_timeout would
        # cancel a database copy, and an idle_in_transaction_session_timeout the export pg_dump reads from.
        conn.execute("SET statement_timeout = 0")
        conn.execute("SET idle_in_transaction_session_timeout = 0")
        _pin_search_path(conn)
        return conn


# Every session seeddump opens (often a superuser's) resolves names in the system catalog only, as PostgreSQL's
# own tools do since CVE-2018-1058: a database's search_path is a setting its owner, and so a restored dump's
# code, may change (ALTER DATABASE ... SET search_path = public, pg_catalog), and an unqualified to_regclass()
# or = would then run a function the dump shipped, with this session's rights. pg_temp last: a temporary
# object never shadows one either. The project's own tables are found by ``project_table``.
SAFE_SEARCH_PATH = "pg_catalog, pg_temp"
PIN_SEARCH_PATH = f"SET search_path = {SAFE_SEARCH_PATH};\n"


def _pin_search_path(conn: driver.Connection) -> None:
    """Notes the schemas a session of the project's would search here, then searches the catalog only."""
    (schemas,) = conn.execute("SELECT pg_catalog.current_schemas(false)").fetchone()  # type: ignore[misc]
    if isinstance(conn, driver.Connection):
        conn.project_schemas = tuple(str(schema) for schema in schemas)
    conn.execute(PIN_SEARCH_PATH)


def project_table(conn: driver.Connection, name: str) -> sql.Identifier | None:
    """The project's table ``name`` where the project's sessions find it (the first schema of its search path
    that has a relation of that name), schema-qualified; None when that relation is missing or is not a plain
    table (a view, or anything else that could run code when read). The session's search path is pinned."""
    schemas = list(getattr(conn, "project_schemas", ("public",)))
    row = conn.execute(
        """
        SELECT n.nspname, c.relkind FROM unnest(%s::text[]) WITH ORDINALITY AS s(nspname, i)
        JOIN pg_namespace n ON n.nspname = s.nspname
        JOIN pg_class c ON c.relnamespace = n.oid AND c.relname = %s
        ORDER BY s.i LIMIT 1
        """,
        (schemas, name),
    ).fetchone()
    if row is None or row[1] != "r":
        return None
    return sql.Identifier(str(row[0]), name)


class LockBusy(SeeddumpError):
    """An advisory lock was still held by another session after SEEDDUMP_LOCK_TIMEOUT."""


@contextlib.contextmanager
def advisory_lock(
    conn: driver.Connection,
    key: tuple[int, int | str],
    *,
    waiting: Callable[[str], None],
    busy: Callable[[str], str],
    wait: bool = True,
) -> Iterator[None]:
    """Holds the session advisory lock ``key`` (a text second part is hashed), released if the process dies.

    When another session holds it, calls ``waiting`` with a description of the holder and waits up to
    SEEDDUMP_LOCK_TIMEOUT seconds (not at all, without ``wait``); then raises SeeddumpError(``busy(holder)``)."""
    first, second = sql.Literal(key[0]), sql.Literal(key[1])  # type: sql.Composable, sql.Composable
    if isinstance(key[1], str):
        second = sql.SQL("hashtext({})").format(second)
    args = sql.SQL("{}, {}").format(first, second)
    (acquired,) = conn.execute(sql.SQL("SELECT pg_try_advisory_lock({})").format(args)).fetchone()  # type: ignore[misc]
    if not acquired:
        holder = _lock_holder(conn, first, second)
        if not wait:
            raise LockBusy(busy(holder))
        waiting(holder)
        if not _wait_for_lock(conn, sql.SQL("SELECT pg_advisory_lock({})").format(args)):
            raise LockBusy(busy(holder))
    try:
        yield
    finally:
        with contextlib.suppress(driver.Error):
            conn.execute(sql.SQL("SELECT pg_advisory_unlock({})").format(args))


def _wait_for_lock(conn: driver.Connection, statement: sql.Composed) -> bool:
    """Runs a blocking lock ``statement`` for at most SEEDDUMP_LOCK_TIMEOUT seconds; False if it timed out."""
    try:
        with lock_timeout(conn, f"{conf.LOCK_TIMEOUT}s"):
            conn.execute(statement)
    except driver.errors.LockNotAvailable:
        return False
    return True


@contextlib.contextmanager
def lock_timeout(conn: driver.Connection, timeout: str) -> Iterator[None]:
    """Statements that wait at most ``timeout`` (PostgreSQL's units; "1ms": give up at once) for a lock another
    session holds, then raise LockNotAvailable."""
    conn.execute(sql.SQL("SET lock_timeout = {}").format(sql.Literal(timeout)))
    try:
        yield
    finally:
        with contextlib.suppress(driver.Error):
            conn.execute("RESET lock_timeout")


def _lock_args(key: tuple[int, int | str]) -> sql.Composable:
    second: sql.Composable = sql.Literal(key[1])
    if isinstance(key[1], str):
        second = sql.SQL("hashtext({})").format(second)
    return sql.SQL("{}, {}").format(sql.Literal(key[0]), second)


@contextlib.contextmanager
def shared_advisory_lock(conn: driver.Connection, key: tuple[int, int | str]) -> Iterator[None]:
    """Holds the session advisory lock ``key`` shared: any number of holders, none while someone holds it
    exclusively (briefly: see ``exclusive_if_free``). Waits up to SEEDDUMP_LOCK_TIMEOUT seconds."""
    args = _lock_args(key)
    if not _wait_for_lock(conn, sql.SQL("SELECT pg_advisory_lock_shared({})").format(args)):
        raise LockBusy(f"A lock of this dumps folder was still held after {conf.LOCK_TIMEOUT}s. Try again.")
    try:
        yield
    finally:
        with contextlib.suppress(driver.Error):
            conn.execute(sql.SQL("SELECT pg_advisory_unlock_shared({})").format(args))


@contextlib.contextmanager
def exclusive_if_free(conn: driver.Connection, key: tuple[int, int | str]) -> Iterator[bool]:
    """Holds the advisory lock ``key`` exclusively if nobody holds it (shared or not), without waiting;
    yields whether it does."""
    args = _lock_args(key)
    (acquired,) = conn.execute(sql.SQL("SELECT pg_try_advisory_lock({})").format(args)).fetchone()  # type: ignore[misc]
    try:
        yield bool(acquired)
    finally:
        if acquired:
            with contextlib.suppress(driver.Error):
                conn.execute(sql.SQL("SELECT pg_advisory_unlock({})").format(args))


def lock_is_free(conn: driver.Connection, key: tuple[int, int | str]) -> bool:
    """Whether nobody holds the advisory lock ``key`` right now (a moment later, someone may)."""
    with exclusive_if_free(conn, key) as free:
        return free


def _lock_holder(conn: driver.Connection, first: sql.Composable, second: sql.Composable) -> str:
    query = sql.SQL(
        """
        SELECT a.pid, a.application_name FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid
        WHERE l.locktype = 'advisory' AND l.granted AND l.objsubid = 2
          AND l.classid = ({})::int::oid AND l.objid = ({})::int::oid
        """
    ).format(first, second)
    row = conn.execute(query).fetchone()
    return "another session" if row is None else f"server process {row[0]} ({row[1] or 'no application name'})"


def connect_maintenance(settings_dict: Mapping[str, Any]) -> driver.Connection:
    """A connection to the server's maintenance database, for CREATE/ALTER/DROP DATABASE."""
    return connect(settings_dict, conf.MAINTENANCE_DB)


def first_line(text: str) -> str:
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    if not lines:
        return "unknown error"
    # libpq prefixes the useful part with "connection to server ... failed:"; keep the reason.
    line = lines[0]
    if "failed:" in line and len(lines) == 1:
        line = line.split("failed:", 1)[1].strip() or line
    return line.rstrip(".")


def server_major(conn: driver.Connection) -> int:
    return conn.info.server_version // 10000


def server_version_text(conn: driver.Connection) -> str:
    version = conn.info.server_version
    return f"{version // 10000}.{version % 10000}"


# --- Tables and row counts -------------------------------------------------------------------------

TABLES_SQL = """
    SELECT n.nspname, c.relname, c.relrowsecurity AND c.relforcerowsecurity AS forced
    FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
    WHERE c.relkind IN ('r', 'p')
      AND NOT c.relispartition
      AND n.nspname NOT IN ('pg_catalog', 'information_schema')
      AND n.nspname NOT LIKE 'pg\\_%'
      AND NOT EXISTS (
          SELECT 1 FROM pg_depend d
          WHERE d.classid = 'pg_class'::regclass AND d.objid = c.oid AND d.deptype = 'e'
      )
    ORDER BY 1, 2
"""


def table_key(schema: str, table: str) -> str:
    """How a table is named in recordCounts: bare in ``public``, schema-qualified elsewhere."""
    return table if schema == "public" else f"{schema}.{table}"


def count_rows(conn: driver.Connection, *, lift_forced_security: bool = True) -> dict[str, int]:
    """Exact row counts of every user table, as pg_dump sees them (partitioned tables as one).

    Runs none of the database's own code: ``count(*)`` calls no function, and with ``row_security`` off a
    row-level security policy is never evaluated (a query it would apply to fails instead, as pg_dump's does).
    A table whose owner forced row-level security on itself is counted, when ``lift_forced_security`` and the
    role owns it, with the force lifted in a transaction that is rolled back: nothing changes."""
    counts: dict[str, int] = {}
    with conn.transaction(force_rollback=True), conn.cursor() as cursor:
        cursor.execute("SET LOCAL row_security = off")
        for schema, table, forced in cursor.execute(TABLES_SQL).fetchall():
            name = sql.Identifier(schema, table)
            if forced and lift_forced_security:
                with contextlib.suppress(driver.errors.InsufficientPrivilege), conn.transaction():
                    cursor.execute(sql.SQL("ALTER TABLE {} NO FORCE ROW LEVEL SECURITY").format(name))
            try:
                # Rolled back, not released: the table's and its indexes' locks go with the savepoint, so a
                # project with thousands of tables does not run the server out of lock slots.
                with conn.transaction(force_rollback=True):
                    (count,) = cursor.execute(sql.SQL("SELECT count(*) FROM {}").format(name)).fetchone()  # type: ignore[misc]
            except driver.errors.InsufficientPrivilege as exc:
                raise SeeddumpError(
                    f"Cannot count the rows of {table_key(schema, table)} without running its row-level security "
                    f"policies ({first_line(str(exc))}), and pg_dump cannot read them either: connect as a superuser "
                    "or a role with BYPASSRLS (or as its owner, unless the table forces row-level security on it)."
                ) from None
            counts[table_key(schema, table)] = int(count)
    return counts


# --- Finding pg_dump and pg_restore -----------------------------------------------------------------


@dataclass(frozen=True)
class Program:
    name: str
    path: Path
    major: int
    version: str

    def __str__(self) -> str:
        return f"{self.name} {self.version} ({self.path})"


def _candidate_dirs() -> Iterator[Path]:
    yield from conf.PG_BIN_DIRS
    for entry in os.environ.get("PATH", "").split(os.pathsep):
        if entry:
            yield Path(entry)
    # Debian and Ubuntu install every major version side by side here, newest last.
    for path in sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=_dir_version):
        yield Path(path)


def _dir_version(path: str) -> int:
    match = re.search(r"/(\d+)/bin$", path)
    return int(match.group(1)) if match else 0


@functools.lru_cache(maxsize=64)
def _probe(path: str) -> tuple[int, str] | None:
    try:
        output = subprocess.run([path, "--version"], capture_output=True, text=True, timeout=10, check=True).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    match = _VERSION_RE.search(output)
    if not match:
        return None
    return int(match.group(1)), match.group(0).split()[-1]


def installed_programs(name: str) -> list[Program]:
    """Every runnable copy of ``name`` in search order, without duplicates."""
    found: list[Program] = []
    seen: set[Path] = set()
    for folder in _candidate_dirs():
        candidate = folder / name
        try:
            if not (candidate.is_file() and os.access(candidate, os.X_OK)):
                continue
            resolved = candidate.resolve()
        except OSError:  # a PATH entry this user may not enter
            continue
        if resolved in seen:
            continue
        seen.add(resolved)
        probed = _probe(str(candidate))
        if probed:
            found.append(Program(name=name, path=candidate, major=probed[0], version=probed[1]))
    return found


def find_program(name: str, server_major: int, *, at_least: int | None = None) -> Program:
    """The copy of ``name`` to use against a server of ``server_major``.

    The server's own major version is preferred, then the nearest newer one. ``at_least`` raises
    the floor, for example to the version of the pg_dump that wrote an archive.
    """
    floor = max(server_major, at_least or 0)
    programs = installed_programs(name)
    usable = [p for p in programs if p.major >= floor]
    if usable:
        exact = [p for p in usable if p.major == server_major]
        return exact[0] if exact else min(usable, key=lambda p: p.major)
    wanted = f"{name} {floor} or newer"
    if not programs:
        raise SeeddumpError(
            f"You appear not to have the '{name}' program installed: need {wanted}. "
            f"Install the PostgreSQL {floor} client programs or set SEEDDUMP_PG_BIN_DIRS to their folder."
        )
    found = ", ".join(f"{p.version} at {p.path}" for p in programs)
    raise SeeddumpError(
        f"Need {wanted}, but only older ones are installed ({found}). "
        f"Install the PostgreSQL {floor} client programs or set SEEDDUMP_PG_BIN_DIRS to their folder."
    )


# --- Running them -----------------------------------------------------------------------------------


def command(program: Program, args: Sequence[str]) -> list[str]:
    return [str(program.path), *args]


def run(
    program: Program,
    args: Sequence[str],
    settings_dict: Mapping[str, Any],
    *,
    dbname: str | None = None,
    what: str,
    pass_fds: Sequence[int] = (),
) -> subprocess.CompletedProcess[str]:
    """Runs a PostgreSQL program against ``dbname`` and turns a failure into a one-line SeeddumpError."""
    env = {**os.environ, **client_env(settings_dict, dbname)}
    try:
        result = subprocess.run(
            command(program, args),
            env=env,
            capture_output=True,
            text=True,
            stdin=subprocess.DEVNULL,
            pass_fds=tuple(pass_fds),
        )
    except OSError as exc:
        raise SeeddumpError(f"Could not start {program.path}: {exc.strerror}.") from None
    if result.returncode != 0:
        raise ProgramFailed(f"{what} failed: {program_error(result.stderr, settings_dict)}")
    return result


def read_archive(
    program: Program, archive: Path, args: Sequence[str], *, pass_fds: Sequence[int] = (), what: str
) -> str:
    """pg_restore's text output for ``archive`` (``--list``, or ``--file=-`` of chosen entries): it reads the
    file and connects nowhere, so no libpq variable of this environment reaches it."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
    result = subprocess.run(
        command(program, [*args, str(archive)]),
        capture_output=True,
        text=True,
        pass_fds=tuple(pass_fds),
        env=env,
        check=False,
    )
    if result.returncode != 0:
        raise SeeddumpError(f"{program.name} could not read {what}: {first_line(result.stderr)}.")
    return result.stdout


def program_error(stderr: str, settings_dict: Mapping[str, Any]) -> str:
    """The most useful line of a PostgreSQL program's error output, password removed."""
    lines = [line.strip() for line in stderr.splitlines() if line.strip()]
    markers = ("error:", "FATAL:", "ERROR:")
    errors = [line for line in lines if any(marker in line for marker in markers)] or lines or ["no error output"]
    line = errors[0]
    for prefix in ("pg_dump: error:", "pg_restore: error:"):
        line = line.removeprefix(prefix).strip()
    if "ERROR:" in line:  # psql: "psql:<stdin>:12: ERROR:  relation ..."
        line = line.split("ERROR:", 1)[1].strip()
    return scrub(line, settings_dict)


class ScriptFailed(SeeddumpError):
    """``restore_in_transaction`` failed and its transaction was rolled back; ``reason`` says why."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def restore_in_transaction(
    pg_restore: Program,
    psql: Program,
    archive: Path,
    session: str,
    prologue: str,
    epilogue: str,
    settings_dict: Mapping[str, Any],
    dbname: str,
    pass_fds: Sequence[int] = (),
    restore_args: Sequence[str] = (),
) -> None:
    """Runs ``prologue``, the dump's SQL (pg_restore's script output) and ``epilogue`` in one transaction
    in ``dbname``, through psql, and commits only if every statement succeeded and pg_restore read the
    whole archive. Anything else rolls the whole transaction back and raises ScriptFailed.

    ``session`` runs before the transaction begins, so it must only be SET statements: nothing in it is
    rolled back."""
    env = {**os.environ, **client_env(settings_dict, dbname)}
    with tempfile.TemporaryFile("w+") as restore_errors, tempfile.TemporaryFile("w+") as psql_errors:
        try:
            client = subprocess.Popen(
                command(psql, ["--no-psqlrc", "--quiet", "--set=ON_ERROR_STOP=1", "--file=-"]),
                env=env,
                stdin=subprocess.PIPE,
                stdout=subprocess.DEVNULL,
                stderr=psql_errors,
            )
        except OSError as exc:
            raise SeeddumpError(f"Could not start {psql.path}: {exc.strerror}.") from None
        try:
            source = subprocess.Popen(
                command(pg_restore, ["--no-owner", "--no-privileges", *restore_args, "--file=-", str(archive)]),
                pass_fds=tuple(pass_fds),
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=restore_errors,
            )
        except OSError as exc:
            client.kill()
            client.wait()
            raise SeeddumpError(f"Could not start {pg_restore.path}: {exc.strerror}.") from None
        assert client.stdin is not None and source.stdout is not None
        try:
            client.stdin.write(PIN_SEARCH_PATH.encode() + session.encode() + b"BEGIN;\n" + prologue.encode())
            shutil.copyfileobj(source.stdout, client.stdin)
            complete = source.wait() == 0
            if complete:  # the COMMIT is only sent after pg_restore has written the whole archive
                client.stdin.write(epilogue.encode() + b"\nCOMMIT;\n")
            client.stdin.close()
        except BrokenPipeError:  # psql stopped at an error
            complete = False
        finally:
            source.kill()
            source.wait()
            with contextlib.suppress(BrokenPipeError):
                client.stdin.close()
            client.wait()
        if complete and client.returncode == 0:
            return
        psql_errors.seek(0)
        restore_errors.seek(0)
        errors = psql_errors.read() if client.returncode != 0 else restore_errors.read()
    raise ScriptFailed(program_error(errors, settings_dict))
