"""The cache of migrated test databases through the shared storage: a fresh CI machine copies instead of migrating.

``push`` dumps the kept state of this code's migrations (``seeddump.testcache``) as a dump of the environment
``migrated``, the migrations it holds (app, name and file hash) and the cache key without the role in its
metadata, signed like any dump when SEEDDUMP_SIGNING_KEY is set, and uploads it to SEEDDUMP_STORAGE.

``pull`` is what the pytest plugin and ``seeddump.testrunner`` give the cache when a storage is configured: before a
test database is migrated, the shared state with the most migrations, all of them the code's unchanged, is
downloaded when it holds more than any state kept on the server; it is verified and restored as restoredump would
(its code, and then the code's newer migrations, running as the owner at most: ``seeddump.sandbox``) and kept as a
state. A storage that does not answer, or holds nothing usable, is said once and the database is migrated here.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from seeddump import databases, dumpfiles, dumps, postgres, restore, shared, testcache, testdatabases
from seeddump.conf import conf
from seeddump.exceptions import SeeddumpError

ENVIRONMENT = "migrated"
_EXTRA = "migratedTestDatabase"

Say = Callable[[str], None]


def _quiet(message: str) -> None:
    pass


def _shared_migrations(metadata: dumpfiles.Metadata, code: testcache.Code) -> dict[testcache.Migration, str] | None:
    """The migrations of a shared state made for code like this one (same key but the role); None otherwise."""
    info = metadata.extra.get(_EXTRA)
    if not isinstance(info, dict) or info.get("key") != code.portable:
        return None
    try:
        return {(str(app), str(name)): str(digest) for app, name, digest in info.get("migrations", [])}
    except (TypeError, ValueError):
        return None


def push(alias: str = "default", progress: Say = _quiet) -> Path:
    """Dumps and uploads the kept state of the code's migrations for the alias's test databases; returns the dump."""
    from django.db import connections

    if not shared.configured():
        raise SeeddumpError("SEEDDUMP_STORAGE is not set: there is nowhere to push the migrated test database.")
    settings_dict = postgres.settings_for(alias)
    with postgres.user_errors(settings_dict), postgres.connect_maintenance(settings_dict) as admin:
        code = testcache.code(connections[alias], databases.current_user(admin))
        if code is None:
            raise SeeddumpError("Migrations are turned off for the test databases: there is no migrated state to push.")
        state = testcache.nearest(admin, code)
        if state is None or code.lacks(state):
            raise SeeddumpError(
                "No migrated test database of this code's migrations is kept on this server yet: run the tests once "
                "(pytest or manage.py test), then push."
            )
        copy = f"{testcache.prefix()}push_{os.getpid()}"  # under the cache's names: a killed push's is pruned
        databases.clone(admin, state.name, copy)
    try:
        with postgres.django_connection_to(alias, copy):
            generated = dumps.generate_dump(
                ENVIRONMENT,
                using=alias,
                note=f"the migrated test database of {len(state.migrations)} migrations",
                allow_empty=True,
                with_media=False,
                extra={_EXTRA: {"key": code.portable, "migrations": testcache.listed(state.migrations)}},
                progress=progress,
            )
    finally:
        with postgres.connect_maintenance(settings_dict) as admin:
            databases.drop(admin, copy)
    shared.push(generated.path, progress)
    return generated.path


def puller(say: Say, *, trust: bool = False, stands_for: dict[str, str] | None = None) -> testcache.Pull | None:
    """The ``pull`` for ``testcache.install`` when a shared storage is configured (else None)."""
    if not shared.configured():
        return None

    def pull(connection: Any, code: testcache.Code, nearest: testcache.State | None) -> bool:
        try:
            declared = (stands_for or {}).get(connection.alias)
            return _pull(connection.alias, code, nearest, say, trust=trust, stands_for=declared)
        except SeeddumpError as exc:
            say(f"seeddump: the shared migrated test database was not used: {exc} It is migrated here.")
            return False

    return pull


def _pull(
    alias: str, code: testcache.Code, nearest: testcache.State | None, say: Say, *, trust: bool, stands_for: str | None
) -> bool:
    held = len(nearest.migrations) if nearest is not None else 0
    remotes = shared.list_remote(ENVIRONMENT, warn=lambda line: say(f"seeddump: {line}"))
    usable = []
    for remote in remotes:
        shared_ones = _shared_migrations(remote.metadata, code)
        if shared_ones is not None and code.holds(shared_ones) and len(shared_ones) > held:
            usable.append((len(shared_ones), remote.metadata.timestamp, remote))
    if not usable:
        return False
    count, _, remote = max(usable, key=lambda found: found[:2])
    path = shared.pull(remote, conf.DIR, progress=_quiet)
    plan = restore.plan_restore(
        ENVIRONMENT, dump=path, using=alias, with_media=False, shared_storage="offline", trust=trust
    )
    settings_dict = postgres.settings_for(alias)
    scratch = f"{testcache.prefix()}pull_{os.getpid()}"  # under the cache's names: a killed pull's is pruned
    with postgres.user_errors(settings_dict), postgres.connect_maintenance(settings_dict) as admin:
        owner = testdatabases.owner_beside(admin, settings_dict, stands_for)
        databases.drop(admin, scratch)
    try:
        with testdatabases.restoring_as(owner):
            restore.restore(plan, restore.RestoreOptions(database=scratch, use_snapshots=False))
        with postgres.connect_maintenance(settings_dict) as admin:
            databases.take_back(admin, scratch)
        # The code's migrations that the shared state lacks, with the owner's rights at most (as its code).
        testdatabases.migrate_as(alias, scratch, owner, trusted=plan.trusted)
        with postgres.connect(settings_dict, scratch) as conn:
            applied = testcache.applied(conn) or []
        migrations = {migration: code.migrations[migration] for migration in applied if migration in code.migrations}
        if len(migrations) != len(applied):
            return False  # it records a migration this code does not have: never a state of this code
        with postgres.connect_maintenance(settings_dict) as admin:
            kept = testcache.keep(
                admin, scratch, code, migrations, {"dump": plan.metadata.checksum, "owner": owner}, move=True
            )
    finally:
        with postgres.connect_maintenance(settings_dict) as admin:
            databases.drop(admin, scratch)
    more = f"; {len(migrations) - count} more applied here" if len(migrations) > count else ""
    say(f"seeddump: pulled the shared migrated test database {remote.name} ({count} migrations{more}).")
    return kept is not None
