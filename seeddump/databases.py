"""The databases seeddump makes on the server, whose they are, and giving one the identity of another.

Every database seeddump makes (scratch and build databases, snapshots, ready copies, prepared empty
databases, and a replaced database once it is swapped out) belongs to the role seeddump connects as,
and is only used, claimed or dropped while it still does. Names and comments are readable by every
role, and any role that may create databases can give one of its own a seeddump name and label; what
it cannot do is make it owned by someone else. So a database under a seeddump name that another role
owns is *foreign*: never used, never dropped, only listed.

A restored database takes the target's identity in the same transaction that puts it in place: owner,
privileges (ACL), the per-database and per-role-in-database settings, connection limit, comment and
whether it accepts connections. Encoding and locale (provider included) can only be set when a database
is created: they make its ``Shape``, and a copy serves only targets of the same shape and owner.

The objects *inside* a restored database belong to the owner role (see ``restore_owner``): pg_restore
runs as that role (``--role``), so the dump's SQL has that role's rights and not those of whoever
connects. The scratch database stays seeddump's until the swap; while pg_restore runs, the owner role
is granted CREATE on it and owns its ``public`` schema as it does in the target (``allow_restore``),
which ``give_identity`` and ``end_restore`` take back.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, replace
from typing import Any

from seeddump import driver, postgres
from seeddump.conf import conf
from seeddump.driver import sql
from seeddump.exceptions import SeeddumpError

# Settings whose value is a list of quoted names, stored as one string: copied element by element (as
# pg_dump does), or ALTER DATABASE SET would store the whole list as one name.
_LIST_SETTINGS = frozenset(
    {
        "search_path",
        "temp_tablespaces",
        "session_preload_libraries",
        "local_preload_libraries",
        "shared_preload_libraries",
        "unix_socket_directories",
    }
)
_SETTING_NAME_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_$]*(\.[A-Za-z_][A-Za-z0-9_$]*)*")


# --- Shape and identity ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Shape:
    """What a database's files depend on, fixed when it is created: encoding and locale."""

    encoding: str
    collate: str
    ctype: str
    provider: str = "c"  # libc; "i" ICU, "b" builtin (PostgreSQL 17+)
    locale: str | None = None  # the ICU or builtin locale
    icu_rules: str | None = None

    def key(self) -> str:
        return json.dumps([self.encoding, self.collate, self.ctype, self.provider, self.locale, self.icu_rules])

    def create_options(self, server_major: int) -> sql.Composable:
        options = sql.SQL(" ENCODING {} LC_COLLATE {} LC_CTYPE {}").format(
            sql.Literal(self.encoding), sql.Literal(self.collate), sql.Literal(self.ctype)
        )
        if server_major < 15:
            return options
        provider = {"c": "libc", "i": "icu", "b": "builtin"}[self.provider]
        options += sql.SQL(" LOCALE_PROVIDER {}").format(sql.SQL(provider))
        if self.provider == "i" and self.locale:
            options += sql.SQL(" ICU_LOCALE {}").format(sql.Literal(self.locale))
        if self.provider == "b" and self.locale:
            options += sql.SQL(" BUILTIN_LOCALE {}").format(sql.Literal(self.locale))
        if self.icu_rules:
            options += sql.SQL(" ICU_RULES {}").format(sql.Literal(self.icu_rules))
        return options


@dataclass(frozen=True)
class Grant:
    grantee: str | None  # None: PUBLIC
    privilege: str  # CREATE, TEMPORARY or CONNECT
    grantable: bool


@dataclass(frozen=True)
class Setting:
    role: str | None  # None: for every role (ALTER DATABASE … SET), else ALTER ROLE … IN DATABASE … SET
    name: str
    value: str


@dataclass(frozen=True)
class Identity:
    """Who a database is, apart from its contents."""

    owner: str
    shape: Shape
    acl: tuple[Grant, ...] | None = None  # None: PostgreSQL's default privileges
    settings: tuple[Setting, ...] = ()
    connection_limit: int = -1
    comment: str | None = None
    allow_connections: bool = True
    is_template: bool = False

    def cache_key(self, creator: str) -> str:
        """Eight hex digits naming what a cached copy for this identity depends on: the role that made it,
        the owner of its objects and its shape. Copies for another key are never used."""
        text = json.dumps([creator, self.owner, self.shape.key()])
        return hashlib.sha256(text.encode()).hexdigest()[:8]


def _shape_columns(server_major: int) -> str:
    locale = "NULL" if server_major < 15 else ("datlocale" if server_major >= 17 else "daticulocale")
    provider = "'c'" if server_major < 15 else "datlocprovider::text"
    rules = "daticurules" if server_major >= 16 else "NULL"
    return f"pg_encoding_to_char(encoding), datcollate, datctype, {provider}, {locale}, {rules}"


def shape_of(admin: driver.Connection, name: str) -> Shape | None:
    row = admin.execute(
        f"SELECT {_shape_columns(postgres.server_major(admin))} FROM pg_database WHERE datname = %s", (name,)
    ).fetchone()
    return None if row is None else Shape(*row)


def identity_of(admin: driver.Connection, name: str) -> Identity | None:
    """The identity of the database ``name``, or None when there is none."""
    row = admin.execute(
        f"""
        SELECT {_shape_columns(postgres.server_major(admin))}, oid, datdba::regrole::text, datconnlimit,
               datallowconn, shobj_description(oid, 'pg_database'), datacl IS NULL, datistemplate
        FROM pg_database WHERE datname = %s
        """,
        (name,),
    ).fetchone()
    if row is None:
        return None
    shape = Shape(*row[:6])
    oid, owner, limit, allow, comment, default_acl, is_template = row[6:]
    acl = None
    if not default_acl:
        grants = admin.execute(
            """
            SELECT CASE WHEN a.grantee = 0 THEN NULL ELSE a.grantee::regrole::text END, a.privilege_type,
                   a.is_grantable
            FROM pg_database d, aclexplode(d.datacl) a WHERE d.oid = %s ORDER BY 1 NULLS FIRST, 2
            """,
            (oid,),
        ).fetchall()
        acl = tuple(Grant(*grant) for grant in grants)
        if set(acl) == set(default_acl_of(_unquote(owner))):
            acl = None  # as good as PostgreSQL's defaults
    settings = []
    for role, config in admin.execute(
        """
        SELECT CASE WHEN s.setrole = 0 THEN NULL ELSE s.setrole::regrole::text END, s.setconfig
        FROM pg_db_role_setting s WHERE s.setdatabase = %s ORDER BY 1 NULLS FIRST
        """,
        (oid,),
    ).fetchall():
        for entry in config:
            setting_name, _, value = entry.partition("=")
            settings.append(Setting(role, setting_name, value))
    return Identity(
        owner=_unquote(owner),
        shape=shape,
        acl=acl,
        settings=tuple(settings),
        connection_limit=limit,
        comment=comment,
        allow_connections=allow,
        is_template=is_template,
    )


def _unquote(regrole: str) -> str:
    """A role name as ``::regrole::text`` shows it (quoted when it needs to be) back to the plain name."""
    if regrole.startswith('"') and regrole.endswith('"'):
        return regrole[1:-1].replace('""', '"')
    return regrole


def new_identity(admin: driver.Connection, owner: str) -> Identity:
    """The identity of a database that did not exist yet: made like ``template0``, owned by ``owner``."""
    shape = shape_of(admin, "template0")
    assert shape is not None
    return Identity(owner=owner, shape=shape)


# --- Who may do what --------------------------------------------------------------------------------


def current_user(admin: driver.Connection) -> str:
    (user,) = admin.execute("SELECT current_user").fetchone()  # type: ignore[misc]
    return str(user)


def _may_act_as(admin: driver.Connection, role: str) -> bool:
    # PostgreSQL 16 split role membership into INHERIT and SET; SET ROLE (pg_restore --role) needs the latter.
    privilege = "SET" if postgres.server_major(admin) >= 16 else "MEMBER"
    (allowed,) = admin.execute(  # type: ignore[misc]
        "SELECT pg_has_role(current_user, r.oid, %s) FROM pg_roles r WHERE r.rolname = %s", (privilege, role)
    ).fetchone() or (None,)
    if allowed is None:
        raise SeeddumpError(f"There is no role '{role}' on the server. Create it, or change SEEDDUMP_OWNER.")
    return bool(allowed)


def restore_owner(admin: driver.Connection, target: str, configured: str | None) -> str:
    """The role the restored objects (and the database) belong to, checked to be one seeddump may act as.

    ``configured`` (SEEDDUMP_OWNER, or the alias's ``OPTIONS["assume_role"]``) comes first; then the
    owner of the existing target; a database that does not exist yet belongs to the connecting role."""
    user = current_user(admin)
    if configured:
        owner, why = configured, "SEEDDUMP_OWNER (or OPTIONS['assume_role'])"
    else:
        row = admin.execute("SELECT datdba::regrole::text FROM pg_database WHERE datname = %s", (target,)).fetchone()
        if row is None:
            return user
        owner, why = _unquote(row[0]), f"the owner of database '{target}'"
    if owner != user and not _may_act_as(admin, owner):
        raise SeeddumpError(
            f"restoredump connects as '{user}', which may not act as '{owner}' ({why}), and everything it "
            f"restores must belong to '{owner}'. Connect as '{owner}', run GRANT \"{owner}\" TO \"{user}\", "
            "or set SEEDDUMP_OWNER to a role it may act as."
        )
    return owner


def may_create(admin: driver.Connection) -> bool:
    """Whether the connecting role may create (and rename) databases."""
    (allowed,) = admin.execute(  # type: ignore[misc]
        "SELECT rolsuper OR rolcreatedb FROM pg_roles WHERE rolname = current_user"
    ).fetchone()
    return bool(allowed)


def check_may_create(admin: driver.Connection, target: str) -> None:
    """Restoring beside ``target`` and swapping it in needs the CREATEDB privilege."""
    if not may_create(admin):
        user = current_user(admin)
        raise SeeddumpError(
            f"Role '{user}' may not create databases (it lacks CREATEDB), and restoredump restores beside "
            f"'{target}' before it swaps the copy in. Grant it (ALTER ROLE \"{user}\" CREATEDB), or restore "
            "into the existing database with: restoredump --in-place"
        )


# --- Making, finding and dropping ---------------------------------------------------------------------


@dataclass(frozen=True)
class Database:
    """A database under a seeddump name, with the label seeddump gave it (empty if none)."""

    name: str
    owner: str
    ours: bool  # owned by the connecting role; anything else is foreign and never used
    size_bytes: int
    label: Mapping[str, Any]
    droppable: bool = False  # the connecting role may drop it (its owner, a member of the owner, a superuser)


def with_prefix(admin: driver.Connection, prefix: str, *, sizes: bool = True) -> list[Database]:
    """Every database whose name starts with ``prefix``, ours or not, with its label. One that another session
    is dropping meanwhile (its files gone, its row not yet) is left out: on a shared server that is anyone's
    DROP DATABASE, at any moment."""
    # pg_database_size needs CONNECT: another role's copy this one may not enter counts as 0. It is NULL for a
    # database whose files are gone.
    size = (
        "CASE WHEN has_database_privilege(d.oid, 'CONNECT') THEN pg_database_size(d.oid) ELSE 0 END" if sizes else "0"
    )
    rows = admin.execute(
        f"""
        SELECT d.datname, d.datdba::regrole::text, d.datdba = r.oid, {size},
               shobj_description(d.oid, 'pg_database'), pg_has_role(current_user, d.datdba, 'MEMBER')
        FROM pg_database d, pg_roles r
        WHERE r.rolname = current_user AND starts_with(d.datname, %s)
        ORDER BY d.datname
        """,
        (prefix,),
    ).fetchall()
    found = []
    for name, owner, ours, size_bytes, comment, droppable in rows:
        if size_bytes is None:
            continue  # being dropped
        try:
            label = json.loads(comment or "{}")
        except ValueError:
            label = {}
        label = label if isinstance(label, dict) else {}
        found.append(Database(name, _unquote(owner), bool(ours), int(size_bytes), label, bool(droppable)))
    return found


def ours(admin: driver.Connection, prefix: str, *, sizes: bool = True) -> list[Database]:
    return [database for database in with_prefix(admin, prefix, sizes=sizes) if database.ours]


def exists(admin: driver.Connection, name: str) -> bool:
    (found,) = admin.execute(  # type: ignore[misc]
        "SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = %s)", (name,)
    ).fetchone()
    return bool(found)


# A sample of what an in-place restore certainly drops: the database's own relations that belong to no
# extension, and its schemas that hold none (a schema holding the dump's extension is kept, with its oid).
_DROPPED_IN_PLACE = r"""
SELECT oid FROM (
    SELECT c.oid FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
    WHERE n.nspname <> 'information_schema' AND n.nspname NOT LIKE 'pg\_%'
      AND c.relkind IN ('r', 'p', 'v', 'm', 'S', 'f')
      AND NOT EXISTS (
          SELECT 1 FROM pg_depend d WHERE d.classid = 'pg_class'::regclass AND d.objid = c.oid AND d.deptype = 'e'
      )
    UNION ALL
    SELECT n.oid FROM pg_namespace n
    WHERE n.nspname <> 'information_schema' AND n.nspname NOT LIKE 'pg\_%'
      AND NOT EXISTS (SELECT 1 FROM pg_extension e WHERE e.extnamespace = n.oid)
) own ORDER BY oid LIMIT 64
"""


def own_objects(settings_dict: Mapping[str, Any], name: str) -> list[int] | None:
    """Oids of up to 64 of the database's own objects that an in-place restore drops (relations that belong
    to no extension, schemas that hold none), in order; None when it cannot be read (no such database).
    Objects keep their oid for life and a new one never gets an old one's: once none of those listed before
    an in-place restore is left, its transaction committed. Reading them runs none of the database's code."""
    if not name:
        return None
    try:
        with postgres.connect(settings_dict, name) as conn:
            rows = conn.execute(_DROPPED_IN_PLACE).fetchall()
    except SeeddumpError:
        return None
    return [int(oid) for (oid,) in rows]


def end_sessions_and_wait(admin: driver.Connection, name: str, seconds: int = 30) -> None:
    """Ends every other session on ``name`` it may end and waits (up to ``seconds`` each) until they are gone:
    after that, whatever transaction one of them had open is committed or rolled back for good."""
    for pid, _user, _application, _address in _sessions(admin, name):
        with contextlib.suppress(driver.errors.InsufficientPrivilege):
            admin.execute("SELECT pg_terminate_backend(%s, %s)", (pid, seconds * 1000))


def size_of(admin: driver.Connection, name: str) -> int:
    """The database's size on disk in bytes (0 if there is none)."""
    row = admin.execute(
        "SELECT CASE WHEN has_database_privilege(oid, 'CONNECT') THEN pg_database_size(oid) ELSE 0 END "
        "FROM pg_database WHERE datname = %s",
        (name,),
    ).fetchone()
    return int(row[0]) if row else 0


def oid_of(admin: driver.Connection, name: str) -> int | None:
    """The database's oid: it stays with the database through renames, so it tells a database from
    another later given the same name."""
    row = admin.execute("SELECT oid FROM pg_database WHERE datname = %s", (name,)).fetchone()
    return None if row is None else int(row[0])


def is_ours(admin: driver.Connection, name: str) -> bool:
    row = admin.execute(
        """
        SELECT d.datdba = r.oid FROM pg_database d, pg_roles r WHERE r.rolname = current_user AND d.datname = %s
        """,
        (name,),
    ).fetchone()
    return bool(row and row[0])


def create(admin: driver.Connection, name: str, shape: Shape) -> None:
    """Creates the empty database ``name`` of ``shape``, owned by the connecting role: from ``template0``, or
    from SEEDDUMP_TEMPLATE (a template holding extensions only a superuser may create, ``template_postgis``)."""
    template = conf.TEMPLATE or "template0"
    query = sql.SQL("CREATE DATABASE {} TEMPLATE {}").format(sql.Identifier(name), sql.Identifier(template))
    admin.execute(query + shape.create_options(postgres.server_major(admin)))


def clone(admin: driver.Connection, template: str, name: str, *, closed: bool = False, small: bool = False) -> None:
    """Creates ``name`` as a copy of ``template`` (owned by the connecting role; closed to connections).

    A copy of a snapshot copies the template's files (FILE_COPY: one checkpoint before, one after) rather than
    write every page to WAL (WAL_LOG, the default since PostgreSQL 15): in the benchmark (250 MB) a warm
    restore's copy took 0.6 s against 0.8 s. A ``small`` one (a migrated test database: 25 MB for 320 empty
    tables) goes through WAL: its two checkpoints flush everything every session on the server wrote, which cost
    1.2 s of a 1.5 s copy there against 0.35 s through WAL, and its drop was 0.3 s slower."""
    query = sql.SQL("CREATE DATABASE {} TEMPLATE {}").format(sql.Identifier(name), sql.Identifier(template))
    if postgres.server_major(admin) >= 15:
        query += sql.SQL(" STRATEGY WAL_LOG" if small else " STRATEGY FILE_COPY")
    if closed:
        query += sql.SQL(" ALLOW_CONNECTIONS false")
    admin.execute(query)


def rename(admin: driver.Connection, old: str, new: str) -> None:
    admin.execute(sql.SQL("ALTER DATABASE {} RENAME TO {}").format(sql.Identifier(old), sql.Identifier(new)))


def close(admin: driver.Connection, name: str, *, closed: bool = True) -> None:
    """No connections from now on (or again, with ``closed`` false): a copy nobody may connect to stays
    exactly as verified."""
    query = sql.SQL("ALTER DATABASE {} WITH ALLOW_CONNECTIONS {}").format(sql.Identifier(name), sql.Literal(not closed))
    admin.execute(query)


def label(admin: driver.Connection, name: str, values: Mapping[str, Any]) -> None:
    """Records in the database's comment what seeddump made it for (readable by all: never proof)."""
    comment = json.dumps(dict(values))
    admin.execute(sql.SQL("COMMENT ON DATABASE {} IS {}").format(sql.Identifier(name), sql.Literal(comment)))


def drop(admin: driver.Connection, name: str) -> bool:
    """Drops ``name`` if it is ours; a foreign database of that name is left alone. True if dropped."""
    if not is_ours(admin, name):
        return False
    admin.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))
    return True


def drop_owned_by(admin: driver.Connection, name: str, owner: str) -> bool:
    """Drops ``name`` if ``owner`` still owns it and the connecting role may drop it (``snapshots --drop-all``
    for another role's copies of this project's cache); True if dropped."""
    row = admin.execute(
        "SELECT datdba::regrole::text, pg_has_role(current_user, datdba, 'MEMBER') FROM pg_database WHERE datname = %s",
        (name,),
    ).fetchone()
    if not row or _unquote(row[0]) != owner or not row[1]:
        return False
    admin.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))
    return True


def take_back(admin: driver.Connection, name: str) -> None:
    """Makes a database seeddump restored for its own use (owned by the restore's owner) the connecting
    role's again, so that ``drop`` may drop it. Only possible for a member of its owner role."""
    if exists(admin, name) and not is_owned_by(admin, name, current_user(admin)):
        query = sql.SQL("ALTER DATABASE {} OWNER TO CURRENT_USER").format(sql.Identifier(name))
        admin.execute(query)


# --- Restoring as the owner ---------------------------------------------------------------------------


def allow_restore(conn: driver.Connection, owner: str) -> None:
    """In a new database of ours (``conn`` is connected to it), lets ``owner`` create what a dump holds.

    Where the ``public`` schema belongs to ``pg_database_owner`` (PostgreSQL 15 and later), it is the owner's
    while the dump loads, as it is in the target the owner owns: pg_dump writes ``COMMENT ON SCHEMA public``
    when the comment is not the default one, and only the schema's owner may run it."""
    database = conn.info.dbname
    role = sql.Identifier(owner)
    conn.execute(sql.SQL("GRANT CREATE ON DATABASE {} TO {}").format(sql.Identifier(database), role))
    if _public_owner(conn) == "pg_database_owner":  # its privileges go with it, and come back unchanged
        conn.execute(sql.SQL("ALTER SCHEMA public OWNER TO {}").format(role))
    else:
        conn.execute(sql.SQL("GRANT CREATE ON SCHEMA public TO {}").format(role))


def end_restore(conn: driver.Connection, owner: str) -> None:
    """Takes back what ``allow_restore`` gave (``give_identity`` replaces the database's ACL): ``public``
    goes back to ``pg_database_owner`` with the privileges it had, or the schema grant is revoked."""
    if _public_owner(conn) == owner and postgres.server_major(conn) >= 14:  # the role came in 14
        conn.execute(sql.SQL("ALTER SCHEMA public OWNER TO pg_database_owner"))
    conn.execute(sql.SQL("REVOKE CREATE ON SCHEMA public FROM {}").format(sql.Identifier(owner)))


def _public_owner(conn: driver.Connection) -> str | None:
    row = conn.execute(
        "SELECT pg_catalog.pg_get_userbyid(nspowner) FROM pg_catalog.pg_namespace WHERE nspname = 'public'"
    ).fetchone()
    return row[0] if row else None


@contextlib.contextmanager
def owner_may_create(settings_dict: Mapping[str, Any], database: str, owner: str, *, allowed: bool) -> Iterator[None]:
    """Inside the block (when ``allowed``), ``owner`` may create in ``database`` (ours, not yet swapped in), as
    while pg_restore runs: for the migrations and hooks that run there as the owner."""
    if not allowed:
        yield
        return
    with postgres.connect(settings_dict, database) as conn:
        allow_restore(conn, owner)
    try:
        yield
    finally:
        with postgres.connect(settings_dict, database) as conn:
            end_restore(conn, owner)


# --- Identity ----------------------------------------------------------------------------------------


def _split_list(value: str) -> list[str]:
    """The elements of a list setting as PostgreSQL stores it (``"$user", public``), unquoted."""
    elements, current, quoted, i = [], "", False, 0
    while i < len(value):
        char = value[i]
        if quoted:
            if char == '"' and value[i + 1 : i + 2] == '"':
                current += '"'
                i += 1
            elif char == '"':
                quoted = False
            else:
                current += char
        elif char == '"':
            quoted = True
        elif char == ",":
            elements.append(current.strip())
            current = ""
        else:
            current += char
        i += 1
    if current.strip() or elements:
        elements.append(current.strip())
    return elements


def _setting_value(setting: Setting) -> sql.Composable:
    if setting.name.lower() in _LIST_SETTINGS:
        return sql.SQL(", ").join(sql.Literal(element) for element in _split_list(setting.value))
    return sql.Literal(setting.value)


def _setting_name(name: str) -> sql.Composable:
    if not _SETTING_NAME_RE.fullmatch(name):
        raise SeeddumpError(f"Cannot copy the database setting {name!r}: not a setting name PostgreSQL writes.")
    return sql.SQL(".").join(sql.Identifier(part) for part in name.split("."))


def default_acl_of(owner: str) -> tuple[Grant, ...]:
    """PostgreSQL's default privileges on a database: the owner may do everything, everyone may connect
    and make temporary tables."""
    owners = (Grant(owner, privilege, False) for privilege in ("CREATE", "TEMPORARY", "CONNECT"))
    return (*owners, Grant(None, "TEMPORARY", False), Grant(None, "CONNECT", False))


def _whose(setting: Setting) -> sql.Composable:
    if setting.role is None:
        return sql.SQL("DATABASE")
    return sql.SQL("ROLE {} IN DATABASE").format(sql.Identifier(setting.role))


def _grantee(role: str | None) -> sql.Composable:
    return sql.SQL("PUBLIC") if role is None else sql.Identifier(role)


def give_identity(admin: driver.Connection, name: str, identity: Identity) -> list[str]:
    """Makes the database ``name`` what ``identity`` describes, apart from its shape. Run it inside the
    transaction that puts ``name`` in place, so that nobody sees it without its identity.

    A setting this role may not make (another role's, or one only a superuser may set) is skipped: the
    statements that would make them are returned, for the user to run as a role that may."""
    database = sql.Identifier(name)
    if not is_owned_by(admin, name, identity.owner):
        admin.execute(sql.SQL("ALTER DATABASE {} OWNER TO {}").format(database, sql.Identifier(identity.owner)))
    # Privileges: start from none at all, then grant exactly the target's (or PostgreSQL's defaults).
    current = identity_of(admin, name)
    assert current is not None
    grantees = {grant.grantee for grant in current.acl or ()} | {None, identity.owner}
    for grantee in sorted(grantees, key=lambda role: role or ""):
        admin.execute(sql.SQL("REVOKE ALL ON DATABASE {} FROM {} CASCADE").format(database, _grantee(grantee)))
    for grant in identity.acl or default_acl_of(identity.owner):
        option = sql.SQL(" WITH GRANT OPTION") if grant.grantable else sql.SQL("")
        admin.execute(
            sql.SQL("GRANT {} ON DATABASE {} TO {}").format(sql.SQL(grant.privilege), database, _grantee(grant.grantee))
            + option
        )
    skipped = give_settings(admin, name, identity.settings, current.settings)
    admin.execute(
        sql.SQL("ALTER DATABASE {} WITH CONNECTION LIMIT {} ALLOW_CONNECTIONS {}").format(
            database, sql.Literal(identity.connection_limit), sql.Literal(identity.allow_connections)
        )
    )
    if identity.is_template:
        admin.execute(sql.SQL("ALTER DATABASE {} IS_TEMPLATE true").format(database))
    admin.execute(sql.SQL("COMMENT ON DATABASE {} IS {}").format(database, sql.Literal(identity.comment)))
    return skipped


def give_settings(
    admin: driver.Connection, name: str, settings: tuple[Setting, ...], current: tuple[Setting, ...] | None = None
) -> list[str]:
    """The database ``name`` gets ``settings`` (per database and per role in it) and no others; the statements
    of those this role may not make are returned, skipped."""
    database = sql.Identifier(name)
    if current is None:
        found = identity_of(admin, name)
        current = found.settings if found is not None else ()
    if current == settings:
        return []
    for setting in current:
        admin.execute(sql.SQL("ALTER {} {} RESET ALL").format(_whose(setting), database))
    skipped = []
    for setting in settings:
        setting_name, value = _setting_name(setting.name), _setting_value(setting)
        statement = sql.SQL("ALTER {} {} SET {} = {}").format(_whose(setting), database, setting_name, value)
        try:
            with admin.transaction():  # a savepoint
                admin.execute(statement)
        except driver.errors.InsufficientPrivilege:
            skipped.append(statement.as_string(admin))
    return skipped


def is_owned_by(admin: driver.Connection, name: str, role: str) -> bool:
    row = admin.execute(
        "SELECT d.datdba = r.oid FROM pg_database d, pg_roles r WHERE d.datname = %s AND r.rolname = %s",
        (name, role),
    ).fetchone()
    return bool(row and row[0])


# --- Putting a database in place ------------------------------------------------------------------------


def _sessions(admin: driver.Connection, name: str) -> list[tuple[int, str, str, str]]:
    rows = admin.execute(
        """
        SELECT pid, coalesce(usename, '?'), coalesce(nullif(application_name, ''), 'no application name'),
               coalesce(host(client_addr), 'the local socket')
        FROM pg_stat_activity
        WHERE datname = %s AND pid <> pg_backend_pid()
          -- The server stops autovacuum itself for a rename, copy or drop; no role may end it otherwise.
          AND backend_type IS DISTINCT FROM 'autovacuum worker'
        """,
        (name,),
    ).fetchall()
    return [(int(pid), str(user), str(app), str(addr)) for pid, user, app, addr in rows]


def end_sessions(admin: driver.Connection, name: str) -> None:
    """Ends every other session on ``name``; when one may not be ended, says which and what to do."""
    refused = []
    for pid, user, application, address in _sessions(admin, name):
        try:
            admin.execute("SELECT pg_terminate_backend(%s)", (pid,))
        except driver.errors.InsufficientPrivilege:
            refused.append(f"pid {pid}, user {user}, {application}, from {address}")
    if refused:
        raise SeeddumpError(
            f"Database '{name}' is in use by a session this role may not end ({'; '.join(refused)}). "
            "Close that program (or have a superuser run SELECT pg_terminate_backend(pid)), then try again; "
            "nothing was changed."
        )


@dataclass(frozen=True)
class Swapped:
    replaced: bool  # a database was there and is now ``Replaced.name``
    skipped_settings: list[str]  # statements of settings this role could not copy (see ``give_identity``)


@dataclass(frozen=True)
class Replaced:
    """What the swap makes of the database it replaces, in the swap's own transaction: so that no instant
    after the commit finds it under a name that does not say what it is for."""

    name: str  # its new name
    label: Mapping[str, Any]  # its label (``label``)
    closed: bool = False  # closed to connections: a copy kept for an undo stays exactly as it was
    # Databases of ours renamed in the same transaction (old name, new name): an earlier undo copy retired.
    aside: tuple[tuple[str, str], ...] = ()


def swap(
    admin: driver.Connection,
    target: str,
    source: str,
    replaced: Replaced,
    owner: str,
    settings: tuple[Setting, ...] | None = None,
) -> Swapped:
    """Puts ``source`` in the place of ``target`` in one transaction, with the target's identity (read in
    that transaction) and ``owner``; a target that did not exist gets PostgreSQL's defaults. In the same
    transaction the replaced database becomes ``replaced`` (ours, renamed, labelled, maybe closed) and the
    databases it sets aside are renamed: either all of it happened or none of it.

    ``settings``: the target's settings as read before a dump's code ran, which they replace. That code runs
    with the owner's rights, and the owner may change the target's own (ALTER DATABASE ... SET search_path):
    what it set there must not become the restored database's."""
    user = current_user(admin)
    for attempt in range(3):
        end_sessions(admin, target)
        try:
            with admin.transaction():
                for old, new in replaced.aside:
                    if is_ours(admin, old):
                        rename(admin, old, new)
                identity = identity_of(admin, target)
                if identity is not None:
                    # RENAME waits up to 5 s for the ended sessions to go away.
                    rename(admin, target, replaced.name)
                    if not is_owned_by(admin, replaced.name, user):
                        to_user = sql.SQL("ALTER DATABASE {} OWNER TO {}").format(
                            sql.Identifier(replaced.name), sql.Identifier(user)
                        )
                        admin.execute(to_user)
                    if replaced.closed:
                        close(admin, replaced.name)
                    if identity.is_template:  # else it could never be dropped; the restored one becomes it
                        admin.execute(
                            sql.SQL("ALTER DATABASE {} IS_TEMPLATE false").format(sql.Identifier(replaced.name))
                        )
                    label(admin, replaced.name, {**replaced.label, "owner": identity.owner})
                    new_identity = replace(identity, owner=owner)
                    if settings is not None:
                        new_identity = replace(new_identity, settings=settings)
                else:
                    new_identity = Identity(owner=owner, shape=Shape("", "", ""))  # the shape is the source's
                rename(admin, source, target)
                try:
                    skipped = give_identity(admin, target, new_identity)
                except (driver.errors.ObjectInUse, driver.OperationalError):
                    raise  # sessions came back; the server went away (said as such by ``user_errors``)
                except driver.Error as exc:
                    raise _identity_error(target, exc) from None
            return Swapped(identity is not None, skipped)
        except driver.errors.ObjectInUse:
            if attempt == 2:
                raise SeeddumpError(
                    f"Database '{target}' kept getting new connections, so it could not be replaced. "
                    "Stop the processes that use it (runserver, workers, shells) and try again."
                ) from None
    raise AssertionError("unreachable")


def _identity_error(target: str, exc: driver.Error) -> SeeddumpError:
    reason = str(exc).strip().splitlines()[0].rstrip(".") if str(exc).strip() else type(exc).__name__
    return SeeddumpError(
        f"Could not give the restored database the owner, privileges and settings of '{target}' ({reason}); "
        "nothing was changed. Restore as a role that may (a superuser, or the owner of all it names)."
    )
