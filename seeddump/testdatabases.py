"""Seeded test databases: the dump's data beside each of pytest-django's test databases.

pytest-django's own test database stays empty and migrated, as its tests expect. A seeded test database
is a second database on the same server (``<test database>_seeded_<env>``), restored from the latest dump
of an environment through the snapshot cache, migrated forward to the code, and labelled with what is in
it: the dump's checksum and a fingerprint of every table's row count. It is reused (``--reuse-db``) only
while that label is seeddump's own and still describes the data, so a database that a test flushed is
rebuilt, never taken for seeded; and a seeded database never carries pytest-django's name.

A dump is code (``seeddump.sandbox``): the seeded database is restored by restoredump's rules for the database it
stands in for (the alias's configured one, as declared before pytest-django renamed it): as SEEDDUMP_OWNER, else
as that database's owner, so a superuser's session runs the dump's code, and the migrations on top of it, as a
throwaway member of that owner (``owner_beside``, ``migrate_as``), or is refused in one line unless trusted.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from django.core.management import call_command
from django.test.utils import override_settings

from seeddump import databases, driver, dumpfiles, postgres, restore, sandbox, shared, staleness
from seeddump.conf import conf
from seeddump.exceptions import SeeddumpError

Progress = Callable[[str], None]
KIND = "pytest"


def _quiet(message: str) -> None:
    pass


def seeded_name(test_database: str, environment: str) -> str:
    """The seeded database beside ``test_database`` (at most 63 bytes, PostgreSQL's limit)."""
    name = f"{test_database}_seeded_{environment}"
    if len(name.encode()) <= 63:
        return name
    tag = hashlib.sha256(name.encode()).hexdigest()[:8]
    return f"{test_database.encode()[:40].decode(errors='ignore')}_seeded_{tag}"


@dataclass(frozen=True)
class Seeded:
    alias: str
    name: str
    status: staleness.DumpStatus
    reused: bool
    migrated: int  # migrations applied on top of the dump
    source: str  # how it was made: "pg_restore", "snapshot" (a copy of the cached one), or "kept"
    seconds: float
    notes: tuple[str, ...] = ()  # worth telling at the end of the session (which dump was chosen, and why)
    media: str = ""  # the dump's media, which a seeded test database never gets ("24 file(s), 7.6 kB")

    def describe(self) -> str:
        if self.reused:
            return f"seeddump: {self.name} kept from the last session ({self.seconds:.1f} s)"
        how = "a copy of the cached snapshot" if self.source == "snapshot" else self.source
        return f"seeddump: {self.name} from the {self.status.environment} dump ({how}, {self.seconds:.1f} s)"


def _fingerprint(counts: dict[str, int]) -> str:
    return hashlib.sha256(json.dumps(sorted(counts.items())).encode()).hexdigest()[:16]


def _label(checksum: str, counts: dict[str, int]) -> dict[str, str]:
    return {"seeddump": KIND, "checksum": checksum, "counts": _fingerprint(counts)}


def _still_seeded(admin: driver.Connection, settings_dict: Mapping[str, Any], name: str, checksum: str) -> bool:
    """Ours, labelled from this dump, and its rows still those it was labelled with."""
    found = [db for db in databases.ours(admin, name, sizes=False) if db.name == name]
    if not found or found[0].label.get("seeddump") != KIND or found[0].label.get("checksum") != checksum:
        return False
    with postgres.connect(settings_dict, name) as conn:
        counts = postgres.count_rows(conn)
    return found[0].label.get("counts") == _fingerprint(counts)


def pull(environment: str, progress: Progress = _quiet) -> None:
    """Fetches the environment's newest shared dump into the dumps folder when SEEDDUMP_STORAGE has a newer one
    than the folder (or the folder none). A storage that does not answer is said through ``progress``, and the
    local dumps are used."""
    if shared.configured():
        dumpfiles.validate_environment(environment)
        shared.sync_latest(environment, conf.DIR, required=False, progress=progress)


def check_dump(environment: str) -> None:
    """What can be checked of the latest dump without a database: it is there, with readable metadata."""
    dumpfiles.validate_environment(environment)
    dumpfiles.read_metadata(dumpfiles.resolve_latest(conf.DIR, environment))


def owner_beside(admin: driver.Connection, settings_dict: Mapping[str, Any], stands_for: str | None) -> str:
    """The owner of a database seeddump restores for its own use beside ``stands_for`` (a seeded test database,
    smoketest's), by restoredump's rules for ``stands_for``: SEEDDUMP_OWNER (or OPTIONS["assume_role"]), else its
    owner; the connecting role when it does not exist, or when its owner is a role the connecting one may not act
    as (the connecting role is then no superuser: the dump's code runs with its rights, as before)."""
    configured = restore.configured_owner(settings_dict)
    try:
        return databases.restore_owner(admin, stands_for or "", configured)
    except SeeddumpError:
        if configured:
            raise
        return databases.current_user(admin)


@contextlib.contextmanager
def restoring_as(owner: str) -> Iterator[None]:
    """``restore.restore`` restores a database that does not exist yet as the connecting role, unless
    SEEDDUMP_OWNER names another: inside the block it names ``owner``."""
    with override_settings(SEEDDUMP_OWNER=owner):
        yield


def migrate_as(alias: str, name: str, owner: str, *, trusted: bool) -> str:
    """Django's migrate on ``name`` with the rights of ``owner`` at most: logged in as a throwaway member of it
    when seeddump connects as another role (a trigger the dump put on django_migrations runs there), refused in
    one line where none can be had unless ``trusted`` (``seeddump.sandbox``). Returns migrate's output."""
    settings_dict = postgres.settings_for(alias)
    output = io.StringIO()
    with (
        postgres.user_errors(settings_dict),
        postgres.connect_maintenance(settings_dict) as admin,
        sandbox.Sandbox(admin, settings_dict, owner, trusted=trusted) as dump_code,
    ):
        login = dump_code.login() if dump_code.needed else None
        # A database taken back by the connecting role (``build``): the owner may create there while it migrates.
        allowed = dump_code.needed and not databases.is_owned_by(admin, name, owner)
        with (
            databases.owner_may_create(settings_dict, name, owner, allowed=allowed),
            postgres.django_connection_to(alias, name, login),
        ):
            call_command("migrate", database=alias, interactive=False, verbosity=1, stdout=output)
    return output.getvalue()


def build(
    environment: str,
    alias: str,
    *,
    reuse: bool,
    trust: bool = False,
    stands_for: str | None = None,
    progress: Progress = _quiet,
) -> Seeded:
    """Makes (or, with ``reuse``, keeps) the seeded database beside the alias's test database.

    Call it once pytest-django has set up its test databases (``NAME`` is the test database's), with
    database access allowed: the plan loads the code's migrations, which some projects' migrations query.
    The dumps folder is taken as it is: the session pulls from a shared storage first (``pull``).
    ``stands_for`` is the alias's configured database (its name before pytest-django's): see ``owner_beside``.
    ``trust`` runs the dump's code as the connecting role where no throwaway login can be had.
    """
    started = time.monotonic()
    settings_dict = postgres.settings_for(alias)
    name = seeded_name(str(settings_dict["NAME"]), environment)
    # Test databases get no media.
    plan = restore.plan_restore(environment, using=alias, with_media=False, shared_storage="offline", trust=trust)
    checksum = plan.metadata.checksum
    notes = _without_media_note(plan)
    # One build per dump at a time: the first xdist worker restores and caches the snapshot, the others
    # wait, then copy the snapshot instead of each running pg_restore.
    lock = f"seeded test databases of {plan.dump_path.name}"
    with (
        postgres.user_errors(settings_dict),
        postgres.connect_maintenance(settings_dict) as admin,
        restore.target_lock(admin, lock, progress),
    ):
        owner = owner_beside(admin, settings_dict, stands_for)
        reused = reuse and _still_seeded(admin, settings_dict, name, checksum)
        source = "kept"
        if not reused:
            if databases.exists(admin, name) and not databases.is_ours(admin, name):
                raise SeeddumpError(
                    f"A database '{name}' that seeddump did not make is on the server; it will not be used "
                    "or replaced. Drop it, or run the tests against another database name."
                )
            _forget(admin, name)
            with restoring_as(owner):  # the dump's code runs as the owner; the database is ours (the swap)
                source = restore.restore(plan, restore.RestoreOptions(database=name), progress=progress).source
    # Migrations newer than the dump (or than a reused database) are applied, as pytest-django does.
    migrated = migrate_as(alias, name, owner, trusted=plan.trusted).count("... OK")
    if not reused or migrated:
        with postgres.user_errors(settings_dict), postgres.connect_maintenance(settings_dict) as admin:
            with postgres.connect(settings_dict, name) as conn:
                counts = postgres.count_rows(conn)
            databases.label(admin, name, _label(checksum, counts))
    elapsed = time.monotonic() - started
    media = plan.metadata.media.describe() if plan.metadata.media is not None else ""
    return Seeded(alias, name, plan.status, reused, migrated, source, elapsed, notes=notes, media=media)


def _without_media_note(plan: restore.RestorePlan) -> tuple[str, ...]:
    """The plan's notes but restoredump's "media ... are not restored: --no-media.": nobody passed --no-media
    here; a seeded test database never gets the dump's media (``Seeded.media`` says what it has)."""
    if plan.metadata.media is None:
        return plan.notes
    return tuple(note for note in plan.notes if not note.startswith("The dump's media ("))


def forget(alias: str, name: str) -> None:
    """Drops the label of a seeded database whose data a test may have changed for good (a flush):
    it is rebuilt before it is used again, in this session or a later one."""
    settings_dict = postgres.settings_for(alias)
    with postgres.user_errors(settings_dict), postgres.connect_maintenance(settings_dict) as admin:
        _forget(admin, name)


def _forget(admin: driver.Connection, name: str) -> None:
    if databases.exists(admin, name) and databases.is_ours(admin, name):
        databases.label(admin, name, {"seeddump": KIND, "checksum": "", "counts": ""})


def drop(alias: str, name: str) -> None:
    settings_dict = postgres.settings_for(alias)
    with postgres.user_errors(settings_dict), postgres.connect_maintenance(settings_dict) as admin:
        databases.drop(admin, name)
