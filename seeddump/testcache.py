"""The migrated test database cache: Django's empty test database, kept on the server by the code's migrations.

Django's test runners (pytest-django and ``manage.py test`` alike) make each test database by running every
migration (``DatabaseCreation.create_test_db``): minutes in a project with hundreds. ``install`` makes them
take it from a cache instead. Once a test database has been migrated, a copy of it is kept on the same server
as ``seeddump_tdb_<folder>_<key>_<state>``: closed to connections, owned by the connecting role and labelled
with every migration it holds (app, name and a hash of the migration's file). A later test database is a copy
of the nearest kept state whose migrations are all in the code, unchanged (the migration graph, not equality):
with the same migrations the copy is all there is; with migrations added, migrate applies only those and the
new state is kept too; a state that holds a migration the code lacks or has changed (another branch) is never
used. ``<key>`` is what must be equal besides: the role, Django's version, the test database's encoding
options, the swappable user model and the apps without migrations (their models' files). At most
SEEDDUMP_TEST_CACHE_KEEP states of the dumps folder are kept, the most recently used first.

A kept test database (``--keepdb``, pytest-django's ``--reuse-db``) is used only while every migration it holds
is the code's: one from another branch is made again from the cache, and said once. With migrations turned off
(``--no-migrations``, ``TEST["MIGRATE"] = False``) or another engine than PostgreSQL, Django builds the database
itself, as without seeddump.

A cached state is made by this project's own migrations, as the connecting role, and only that role's copies
are used: nothing from a dump or another role reaches it.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import sys
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from seeddump import databases, driver, postgres, snapshots
from seeddump.conf import conf
from seeddump.driver import sql
from seeddump.exceptions import SeeddumpError

PREFIX = snapshots.TEST_PREFIX
KIND = "migrated"
# Advisory locks, the second key being the folder's prefix: one session migrates a state (of a key) at a time
# while the others wait to copy it; one changes the folder's cache (keeps, labels, drops) at a time.
_BUILD_LOCK_CLASS = 0x5EF0
_CHANGE_LOCK_CLASS = 0x5EF1

Say = Callable[[str], None]
Migration = tuple[str, str]  # (app label, migration name)


def _quiet(message: str) -> None:
    pass


def _hash(text: str | bytes, length: int = 12) -> str:
    return hashlib.sha256(text if isinstance(text, bytes) else text.encode()).hexdigest()[:length]


@dataclass(frozen=True)
class Code:
    """The code's migrations: a hash of the file of every migration on disk and of every migration a squash
    on disk replaces (a database migrated through the squash records those), and the key of what else must
    be equal."""

    migrations: Mapping[Migration, str]
    key: str
    portable: str  # the key but the role: for a state shared through the storage (restored as any role)

    def lacks(self, state: State | None) -> int:
        """How many of the code's migration files ``state`` (None: an empty database) has not applied."""
        held = state.migrations if state is not None else {}
        return sum(1 for key, digest in self.migrations.items() if key not in held and not _replaced(digest))

    def holds(self, migrations: Mapping[Migration, str]) -> bool:
        """Every one of ``migrations`` is in the code, unchanged."""
        return all(self.migrations.get(migration) == digest for migration, digest in migrations.items())

    def foreign(self, applied: Iterator[Migration] | list[Migration], recorded: Mapping[Migration, str]) -> list[str]:
        """Which of ``applied`` (with the hashes ``recorded`` when it was made) the code lacks or has changed."""
        return [
            f"{app}.{name}"
            for app, name in applied
            if (app, name) not in self.migrations
            or recorded.get((app, name), self.migrations[(app, name)]) != self.migrations[(app, name)]
        ]


@dataclass(frozen=True)
class State:
    """A kept migrated database."""

    name: str
    migrations: Mapping[Migration, str]
    used: str  # ISO time it was last copied (or made)
    created: str
    dump: str = ""  # the checksum of the shared dump it was restored from ("": migrated here)
    owner: str = ""  # of a state from a dump: the role its code runs as (the objects' owner)

    def derived(self) -> dict[str, str]:
        """What a state made from this one carries on: the dump it came from, whose code it holds."""
        return {"dump": self.dump, "owner": self.owner} if self.dump else {}


def _replaced(digest: str) -> bool:
    return digest.startswith("squashed into ")


def _file_hash(module_name: str) -> str:
    module = sys.modules.get(module_name)
    path = getattr(module, "__file__", None)
    return _hash(Path(path).read_bytes() if path and os.path.isfile(path) else module_name)


def _models_hash(label: str) -> str:
    from django.apps import apps

    module = apps.get_app_config(label).models_module
    return _file_hash(module.__name__) if module is not None else "-"


def code(connection: Any, role: str) -> Code | None:
    """The code's migrations for a test database of ``connection`` made by ``role``; None when migrations are
    turned off (the runner makes the tables from the models: nothing to cache by)."""
    import django
    from django.conf import settings
    from django.db.migrations.loader import MigrationLoader

    from seeddump import codestate

    test = connection.settings_dict.get("TEST") or {}
    if test.get("MIGRATE") is False or codestate.migrations_turned_off():
        return None
    loader = MigrationLoader(None, ignore_no_migrations=True)
    migrations = {key: _file_hash(type(migration).__module__) for key, migration in loader.disk_migrations.items()}
    for key, migration in loader.disk_migrations.items():
        for replaced in migration.replaces or ():
            migrations.setdefault((replaced[0], replaced[1]), f"squashed into {key[1]}: {migrations[key]}")
    unmigrated = [f"{label}:{_models_hash(label)}" for label in sorted(loader.unmigrated_apps)]
    what = [
        django.get_version(),
        test.get("CHARSET"),
        test.get("COLLATION"),
        test.get("TEMPLATE"),
        str(getattr(settings, "AUTH_USER_MODEL", "")),
        unmigrated,
    ]
    return Code(migrations, _hash(json.dumps([role, *what]), 8), _hash(json.dumps(what), 8))


# --- The states on the server --------------------------------------------------------------------------


def prefix(directory: Path | None = None) -> str:
    return snapshots.folder_prefix(directory, PREFIX)


def state_name(key: str, migrations: Mapping[Migration, str], directory: Path | None = None) -> str:
    return f"{prefix(directory)}{key}_{_hash(json.dumps(listed(migrations)), 16)}"


def listed(migrations: Mapping[Migration, str]) -> list[list[str]]:
    return sorted([app, name, digest] for (app, name), digest in migrations.items())


def _labelled(kind: str) -> dict[str, str]:
    """What every label of the cache says: what the database is, and whose dumps folder it belongs to (``snapshots
    --prune --all-folders`` drops the states of a folder that is gone)."""
    return {"seeddump": kind, "folder": str(conf.DIR.resolve())}


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="microseconds")  # a state made after a copy is newer


def states(admin: driver.Connection, key: str | None = None, directory: Path | None = None) -> list[State]:
    """This folder's kept states that are ours and labelled as such (of ``key``, or any), most recently used
    first."""
    found = []
    for database in databases.ours(admin, prefix(directory), sizes=False):
        label = database.label
        if label.get("seeddump") != KIND or (key is not None and label.get("key") != key):
            continue
        try:
            migrations = {(str(app), str(name)): str(digest) for app, name, digest in label.get("migrations", [])}
        except (TypeError, ValueError):
            continue
        created = str(label.get("created") or "")
        used = str(label.get("used") or created)
        dump, owner = str(label.get("dump") or ""), str(label.get("owner") or "")
        found.append(State(database.name, migrations, used, created, dump, owner))
    return sorted(found, key=lambda state: state.used, reverse=True)


def nearest(admin: driver.Connection, code: Code, directory: Path | None = None) -> State | None:
    """The kept state with the most migrations, all of them the code's unchanged; None if there is none."""
    usable = [state for state in states(admin, code.key, directory) if code.holds(state.migrations)]
    return max(usable, key=lambda state: len(state.migrations), default=None)


def _building(admin: driver.Connection, code: Code, say: Say) -> Any:
    """The lock for migrating a new state of ``code.key``: a second worker waits, then copies it."""
    return postgres.advisory_lock(
        admin,
        (_BUILD_LOCK_CLASS, prefix() + code.key),
        waiting=lambda holder: say(f"Waiting for {holder}, which migrates a test database for the cache"),
        busy=lambda holder: f"{holder} was still migrating a test database for the cache",
    )


def _changing(admin: driver.Connection, directory: Path | None = None, *, wait: bool = True) -> Any:
    """The lock for keeping, labelling and dropping this folder's states (each a moment, or a copy)."""
    return postgres.advisory_lock(
        admin,
        (_CHANGE_LOCK_CLASS, prefix(directory)),
        waiting=_quiet,
        busy=lambda holder: f"The cache of migrated test databases was still in use by {holder}. Try again.",
        wait=wait,
    )


def keep(
    admin: driver.Connection,
    source: str,
    code: Code,
    migrations: Mapping[Migration, str],
    derived: Mapping[str, str] | None = None,
    *,
    move: bool = False,
) -> str | None:
    """Keeps a copy of the migrated test database ``source`` (no session may be connected to it; with ``move``,
    ``source`` itself) as the state of ``migrations``, unless that state is kept already; then drops states over
    SEEDDUMP_TEST_CACHE_KEEP. ``derived``: the shared dump it came from (``State.derived``). Returns the name of the
    new state, or None."""
    name = state_name(code.key, migrations)
    with _changing(admin):
        if databases.exists(admin, name):
            return None
        if move:
            databases.rename(admin, source, name)
            databases.close(admin, name)
        else:
            databases.clone(admin, source, name, closed=True, small=True)
        label = {"key": code.key, "created": _now(), "used": _now(), "migrations": listed(migrations)}
        databases.label(admin, name, {**_labelled(KIND), **label, **(derived or {})})
        _prune(admin, conf.TEST_CACHE_KEEP)
    return name


def _used(admin: driver.Connection, state: State, code: Code) -> None:
    """Records that ``state`` was just copied (pruning keeps the most recently used), unless that would wait: an
    xdist worker copying the same state at this moment blocks the comment until its copy ends (and records the
    use itself then), and a session keeping a state holds the cache's lock for a copy. Waiting serialised the
    workers."""
    label = {"key": code.key, "created": state.created, "used": _now(), "migrations": listed(state.migrations)}
    giving_up = contextlib.suppress(postgres.LockBusy, driver.errors.LockNotAvailable)
    with giving_up, _changing(admin, wait=False), postgres.lock_timeout(admin, "1ms"):
        if databases.is_ours(admin, state.name):
            databases.label(admin, state.name, {**_labelled(KIND), **label, **state.derived()})


def prune(admin: driver.Connection, keep: int | None = None, directory: Path | None = None) -> list[str]:
    """Drops this folder's states (ours) beyond the ``keep`` most recently used (SEEDDUMP_TEST_CACHE_KEEP), and
    unlabelled databases under the cache's names (a copy stopped before its label). Returns their names."""
    with _changing(admin, directory):
        return _prune(admin, conf.TEST_CACHE_KEEP if keep is None else keep, directory)


def _prune(admin: driver.Connection, keep: int, directory: Path | None = None) -> list[str]:
    labelled = {state.name for state in states(admin, directory=directory)[:keep]}
    dropped = []
    for database in databases.ours(admin, prefix(directory), sizes=False):
        if database.name not in labelled and databases.drop(admin, database.name):
            dropped.append(database.name)
    return dropped


def drop_all(admin: driver.Connection, directory: Path | None = None) -> list[str]:
    return prune(admin, keep=0, directory=directory)


# --- The test database ---------------------------------------------------------------------------------


def applied(conn: driver.Connection) -> list[Migration] | None:
    """The migrations recorded in the database ``conn`` is connected to; None without Django's table."""
    table = postgres.project_table(conn, "django_migrations")
    if table is None:
        return None
    rows = conn.execute(sql.SQL("SELECT app, name FROM {}").format(table)).fetchall()
    return [(str(app), str(name)) for app, name in rows]


def _label_of(admin: driver.Connection, name: str) -> tuple[str, dict[Migration, str]]:
    """The key and the migrations that seeddump's label on the test database ``name`` says it was made with
    (``("", {})`` where there is no such label: a database Django made alone)."""
    row = admin.execute(
        "SELECT pg_catalog.shobj_description(oid, 'pg_database') FROM pg_catalog.pg_database WHERE datname = %s",
        (name,),
    ).fetchone()
    try:
        label = json.loads(row[0] or "{}") if row else {}
        if not isinstance(label, dict) or label.get("seeddump") != "test":
            return "", {}
        entries = {(str(app), str(migration)): str(digest) for app, migration, digest in label.get("migrations", [])}
        return str(label.get("key") or ""), entries
    except (TypeError, ValueError):
        return "", {}


def _stale(admin: driver.Connection, settings_dict: Mapping[str, Any], name: str, code: Code) -> list[str]:
    """The migrations of the kept test database ``name`` that the code lacks or has changed."""
    with postgres.connect(settings_dict, name) as conn:
        recorded = applied(conn) or []
    return code.foreign(recorded, _label_of(admin, name)[1])


@dataclass
class Made:
    """How a test database was made."""

    name: str
    source: str  # "cache", "kept", "migrated"
    applied: int  # migrations migrate applied on top of it
    state: State | None = None  # the cached state it was copied from
    kept: str | None = None  # the state this session added to the cache


def create_test_db(creation: Any, original: Callable[..., str], say: Say, *args: Any, **kwargs: Any) -> str:
    """Django's ``DatabaseCreation.create_test_db``, with the empty migrated database taken from the cache."""
    options = _options(*args, **kwargs)
    connection = creation.connection
    settings_dict = dict(connection.settings_dict)
    name = creation._get_test_db_name()
    try:
        with postgres.connect_maintenance(settings_dict) as admin:
            found = code(connection, databases.current_user(admin))
            asks = databases.exists(admin, name) and not options["keepdb"] and not options["autoclobber"]
    except (driver.Error, SeeddumpError):
        return original(*args, **kwargs)  # Django says what is wrong with the server, as without seeddump
    if found is None or asks:
        return original(*args, **kwargs)  # nothing to cache by, or Django asks before it drops a database
    if options["verbosity"] >= 1:
        action = "Using existing" if options["keepdb"] else "Creating"
        creation.log(
            f"{action} test database for alias {creation._get_database_display_str(options['verbosity'], name)} "
            "(seeddump's cache of migrated test databases)..."
        )
    creation._seeddump_verbosity = options["verbosity"]
    made = _make(creation, found, name, options["keepdb"], say)
    if options["serialize"]:
        connection._test_serialized_contents = creation.serialize_db_to_string()
    from django.core.management import call_command

    call_command("createcachetable", database=connection.alias)
    connection.ensure_connection()
    if os.environ.get("RUNNING_DJANGOS_TEST_SUITE") == "true":
        creation.mark_expected_failures_and_skips()
    report = getattr(creation, "_seeddump_report", None)
    if report is not None:
        report(_describe(made))
    elif options["verbosity"] >= 2:
        creation.log(_describe(made))
    return name


def _options(
    verbosity: int = 1, autoclobber: bool = False, serialize: bool | None = None, keepdb: bool = False
) -> dict[str, Any]:
    """``create_test_db``'s arguments by name. ``serialize`` unset: Django 6.1 serializes in ``serialize_test_db``
    (None), older Djangos here (True), as each one's own default."""
    if serialize is None:
        import inspect

        from django.db.backends.base.creation import BaseDatabaseCreation

        serialize = inspect.signature(BaseDatabaseCreation.create_test_db).parameters["serialize"].default
    return {"verbosity": verbosity, "autoclobber": autoclobber, "serialize": bool(serialize), "keepdb": keepdb}


def _describe(made: Made) -> str:
    if made.source == "kept":
        how = "kept from an earlier run"
    elif made.source == "cache":
        how = f"copied from {made.state.name if made.state else '?'}"
    else:
        how = "migrated from an empty database"
    then = f", {made.applied} migration(s) applied" if made.applied else ""
    kept = f"; kept as {made.kept}" if made.kept else ""
    return f"seeddump: test database {made.name} {how}{then}{kept}."


def _make(creation: Any, code: Code, name: str, keepdb: bool, say: Say) -> Made:
    """Makes the test database ``name`` (kept, a copy of the nearest state, or Django's empty one) and migrates it
    to the code."""
    settings_dict = dict(creation.connection.settings_dict)
    with postgres.connect_maintenance(settings_dict) as admin:
        if keepdb and databases.exists(admin, name):
            foreign = _stale(admin, settings_dict, name, code)
            if not foreign:
                return _migrated(creation, code, Made(name, "kept", 0), admin)
            shown = ", ".join(foreign[:3]) + (f" and {len(foreign) - 3} more" if len(foreign) > 3 else "")
            say(
                f"seeddump: the kept test database {name} held migrations that this code lacks or has changed "
                f"({shown}); it was made again from the cache of migrated test databases."
            )
        if databases.exists(admin, name):  # Django's clobbering, or a stale kept one
            admin.execute(sql.SQL("DROP DATABASE {} WITH (FORCE)").format(sql.Identifier(name)))
        state = nearest(admin, code)
        pull = getattr(creation, "_seeddump_pull", None)
        if state is not None and (pull is None or not code.lacks(state)):
            return _copied(creation, code, state, name, admin)
        try:
            with _building(admin, code, say):
                state = nearest(admin, code)  # another worker may have made (or pulled) it while this one waited
                if pull is not None and code.lacks(state) and pull(creation.connection, code, state):
                    state = nearest(admin, code)
                if state is not None:
                    return _copied(creation, code, state, name, admin)
                _create_empty(admin, creation, name)
                return _migrated(creation, code, Made(name, "migrated", 0), admin)
        except postgres.LockBusy:  # the other worker is slow: migrate this one too, side by side
            _create_empty(admin, creation, name)
            return _migrated(creation, code, Made(name, "migrated", 0), admin)


def _create_empty(admin: driver.Connection, creation: Any, name: str) -> None:
    """Django's own empty test database (its encoding, template and collation from TEST)."""
    suffix = creation.sql_table_creation_suffix()
    admin.execute(sql.SQL("CREATE DATABASE {} ").format(sql.Identifier(name)) + sql.SQL(suffix))


def _copied(creation: Any, code: Code, state: State, name: str, admin: driver.Connection) -> Made:
    databases.clone(admin, state.name, name, small=True)
    _used(admin, state, code)
    return _migrated(creation, code, Made(name, "cache", 0, state=state), admin)


def _migrated(creation: Any, code: Code, made: Made, admin: driver.Connection) -> Made:
    """Points the connection at the test database, applies the migrations it lacks (Django's ``migrate``, as
    the runner would: only when there are some, or the tables of apps without migrations may be missing),
    labels it with what it holds, and keeps that state when it is a new one."""
    from django.conf import settings
    from django.core.management import call_command
    from django.db.migrations.executor import MigrationExecutor

    connection = creation.connection
    connection.close()
    settings.DATABASES[connection.alias]["NAME"] = made.name
    connection.settings_dict["NAME"] = made.name
    if made.source == "cache" and made.state is not None and not code.lacks(made.state):
        # A copy of a state holding every migration of the code: nothing to plan (Django's loader would build
        # the graph again), and what it holds is the state's label. Each xdist worker saves that CPU.
        databases.label(
            admin, made.name, {**_labelled("test"), "key": code.key, "migrations": listed(made.state.migrations)}
        )
        return made
    executor = MigrationExecutor(connection)
    plan = executor.migration_plan(executor.loader.graph.leaf_nodes())
    same_apps = made.source == "cache" or (made.source == "kept" and _label_of(admin, made.name)[0] == code.key)
    migrated = bool(plan) or not same_apps
    derived = made.state.derived() if made.state is not None else {}
    if migrated and derived:  # a shared dump's code is in it: migrate with its owner's rights at most
        from seeddump import testdatabases

        trusted = conf.TRUST_DUMPS or bool(conf.SIGNING_KEYS)
        testdatabases.migrate_as(connection.alias, made.name, derived["owner"], trusted=trusted)
        made.applied = len(plan)
    elif migrated:
        verbosity = max(int(getattr(creation, "_seeddump_verbosity", 1)) - 1, 0)
        call_command("migrate", verbosity=verbosity, interactive=False, database=connection.alias, run_syncdb=True)
        made.applied = len(plan)
    applied = _recorded_by_django(connection)
    migrations = {migration: code.migrations[migration] for migration in applied if migration in code.migrations}
    databases.label(admin, made.name, {**_labelled("test"), "key": code.key, "migrations": listed(migrations)})
    if migrated and len(migrations) == len(applied):  # a state of the code's own migrations only
        connection.close()
        try:
            made.kept = keep(admin, made.name, code, migrations, derived)
        except (driver.Error, postgres.LockBusy):
            made.kept = None  # another session is connected to it (a mirror alias): a later run keeps it
    return made


def _recorded_by_django(connection: Any) -> list[Migration]:
    from django.db.migrations.recorder import MigrationRecorder

    return list(MigrationRecorder(connection).applied_migrations())


# --- Installing ----------------------------------------------------------------------------------------


Pull = Callable[[Any, Code, "State | None"], bool]


def install(
    say: Say = _quiet, report: Say | None = None, aliases: Iterator[str] | None = None, pull: Pull | None = None
) -> list[str]:
    """Makes the test databases of Django's PostgreSQL connections (all, or ``aliases``) come from the cache;
    returns the aliases it did. ``say`` is given what the user should hear once (a stale kept database);
    ``report`` how each test database was made (default: Django's log, at verbosity 2); ``pull(connection, code,
    nearest)`` is asked for a better state than ``nearest`` before migrating (``seeddump.sharedtestcache``). Idempotent;
    SEEDDUMP_TEST_CACHE off does nothing."""
    from django.db import connections

    if not conf.TEST_CACHE:
        return []
    done = []
    for alias in aliases if aliases is not None else list(connections):
        connection = connections[alias]
        creation: Any = connection.creation  # given seeddump's attributes below
        if connection.vendor != "postgresql":
            continue
        if not getattr(creation, "_seeddump_cache", False):
            original = creation.create_test_db

            def create_test_db(*args: Any, _creation: Any = creation, _original: Any = original, **kwargs: Any) -> str:
                return create_test_db_cached(_creation, _original, *args, **kwargs)

            creation.create_test_db = create_test_db
            creation._seeddump_cache = True
        creation._seeddump_say = say
        creation._seeddump_report = report
        creation._seeddump_pull = pull
        done.append(alias)
    return done


def create_test_db_cached(creation: Any, original: Callable[..., str], *args: Any, **kwargs: Any) -> str:
    say = getattr(creation, "_seeddump_say", _quiet)
    return create_test_db(creation, original, say, *args, **kwargs)


def say_on_stderr(line: str) -> None:
    sys.stderr.write(line + "\n")
