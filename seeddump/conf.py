"""seeddump's settings, read lazily so that ``override_settings`` works in tests.

Every setting is optional; the README lists them all.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

from django.conf import settings

from seeddump.exceptions import SeeddumpError

# pg_restore starts one process and one server connection per job: more than this is a typo, not a plan.
MAX_RESTORE_JOBS = 64


def restore_jobs_problem(value: object) -> str | None:
    """What is wrong with a number of pg_restore jobs (--jobs, SEEDDUMP_RESTORE_JOBS), or None."""
    try:
        jobs = int(str(value).strip())
    except ValueError:
        return f"must be a whole number of pg_restore jobs, not {str(value)[:40]!r}"
    if not 1 <= jobs <= MAX_RESTORE_JOBS:
        return f"must be from 1 to {MAX_RESTORE_JOBS} (one server connection each), not {jobs}"
    return None


class Settings:
    @property
    def DIR(self) -> Path:
        """Where dumps and their metadata live."""
        value = getattr(settings, "SEEDDUMP_DIR", None)
        if value:
            return Path(value)
        base = getattr(settings, "BASE_DIR", None) or Path.cwd()
        return Path(base) / "seeds" / "dumps"

    @property
    def PROTECTED_ENVIRONMENTS(self) -> frozenset[str]:
        """Environments that restoredump refuses to overwrite: a list, or one comma-separated string;
        compared without surrounding spaces and case, as init-db.sh does."""
        return _names(getattr(settings, "SEEDDUMP_PROTECTED_ENVIRONMENTS", ("prod", "production")))

    @property
    def PROTECTED_DATABASES(self) -> frozenset[str]:
        """Database names and hosts that are never restored over, whatever the dump's environment."""
        return _names(getattr(settings, "SEEDDUMP_PROTECTED_DATABASES", ()))

    @property
    def PG_BIN_DIRS(self) -> list[Path]:
        """Extra folders searched first for pg_dump and pg_restore."""
        value = getattr(settings, "SEEDDUMP_PG_BIN_DIRS", ())
        if isinstance(value, (str, Path)):
            value = [value]
        return [Path(v) for v in value]

    @property
    def VERSION(self) -> str | None:
        """A fixed dump version; when unset, the project's short git commit or a migration fingerprint."""
        return getattr(settings, "SEEDDUMP_VERSION", None)

    @property
    def PROJECT_DIR(self) -> Path:
        """The folder whose git commit names a dump's version."""
        value = getattr(settings, "SEEDDUMP_PROJECT_DIR", None) or getattr(settings, "BASE_DIR", None)
        return Path(value) if value else Path.cwd()

    @property
    def RESTORE_JOBS(self) -> int:
        """Parallel pg_restore jobs when --jobs is not given (SeeddumpError, one line, when it is no number of
        jobs: a system check says the same)."""
        value = getattr(settings, "SEEDDUMP_RESTORE_JOBS", None)
        if value is None or value == "":
            return min(os.cpu_count() or 1, MAX_RESTORE_JOBS)
        problem = restore_jobs_problem(value)
        if problem:
            raise SeeddumpError(f"SEEDDUMP_RESTORE_JOBS {problem}.")
        return int(value)

    @property
    def DUMP_COMPRESSION(self) -> str:
        """pg_dump's --compress value for new dumps.

        gzip level 5: on the 261 MB benchmark database, half the time of pg_dump's default level for a file
        10% larger; level 1 is faster still but 26% larger, and zstd/lz4 are not in every build.
        """
        return str(getattr(settings, "SEEDDUMP_DUMP_COMPRESSION", "5"))

    @property
    def MEDIA(self) -> bool:
        """generatedump archives MEDIA_ROOT beside the dump by default (as with --media)."""
        return bool(getattr(settings, "SEEDDUMP_MEDIA", False))

    @property
    def RESTORE_HOOKS(self) -> list[object]:
        """Run against the restored database before it is swapped in: a list is a management command with its
        arguments, a string the dotted path of a callable taking ``using`` (see seeddump.preswap)."""
        return list(getattr(settings, "SEEDDUMP_RESTORE_HOOKS", ()))

    @property
    def MAINTENANCE_DB(self) -> str:
        """The database seeddump connects to while it creates, renames and drops others."""
        return getattr(settings, "SEEDDUMP_MAINTENANCE_DB", "postgres")

    @property
    def CONNECT_TIMEOUT(self) -> int:
        """Seconds to wait for the server before saying it is unreachable."""
        return int(getattr(settings, "SEEDDUMP_CONNECT_TIMEOUT", 10))

    @property
    def LOCK_TIMEOUT(self) -> int:
        """Seconds a restoredump waits for another restore of the same database before giving up."""
        return int(getattr(settings, "SEEDDUMP_LOCK_TIMEOUT", 600))

    @property
    def SNAPSHOTS(self) -> bool:
        """Keep a template database of each restored dump so the next restore of it is a copy."""
        return bool(getattr(settings, "SEEDDUMP_SNAPSHOTS", True))

    @property
    def SNAPSHOTS_KEEP(self) -> int:
        """How many snapshots (of this dumps folder) to keep on a server."""
        return int(getattr(settings, "SEEDDUMP_SNAPSHOTS_KEEP", 3))

    @property
    def READY_COPIES(self) -> bool:
        """Keep one more copy of the last restored dump per database, so that restoring it again is two renames."""
        return bool(getattr(settings, "SEEDDUMP_READY_COPIES", True))

    @property
    def CLONES(self) -> bool | None:
        """Copy databases as copy-on-write clones (PostgreSQL 18's file_copy_method = clone): None (the default)
        when the server shows it can, True always on PostgreSQL 18, False never."""
        value = getattr(settings, "SEEDDUMP_CLONES", None)
        return None if value is None else bool(value)

    @property
    def CACHE_MAX_SIZE(self) -> int | None:
        """Bytes the snapshot cache (snapshots, ready copies, builds) may hold on a server; None: no bound."""
        value = getattr(settings, "SEEDDUMP_CACHE_MAX_SIZE", None)
        return None if value is None else int(value)

    @property
    def MIN_FREE_DISK(self) -> int | None:
        """Bytes that must stay free on the server's disk after the cache makes a copy (checked when the
        server's data directory is on this machine); None: not checked."""
        value = getattr(settings, "SEEDDUMP_MIN_FREE_DISK", 1024**3)
        return None if value is None else int(value)

    @property
    def UNDO(self) -> bool:
        """Keep the database (and media folder) a restore replaced, closed, until the next restore of it, so that
        ``restoredump --undo`` can put it back."""
        return bool(getattr(settings, "SEEDDUMP_UNDO", True))

    @property
    def BACKGROUND(self) -> bool:
        """restoredump returns once the database is in place and finishes the rest in a background process."""
        return bool(getattr(settings, "SEEDDUMP_BACKGROUND", True))

    @property
    def OWNER(self) -> str | None:
        """The role that owns what restoredump restores; default: the alias's OPTIONS["assume_role"],
        else the target database's owner (else, for a new database, the role seeddump connects as)."""
        return getattr(settings, "SEEDDUMP_OWNER", None) or None

    @property
    def STORAGE(self) -> str | None:
        """Alias in STORAGES where dumps are shared with the team (generatedump --push, restoredump)."""
        return getattr(settings, "SEEDDUMP_STORAGE", None) or None

    @property
    def STORAGE_TIMEOUT(self) -> float:
        """Seconds one read of the shared storage may take before it counts as stalled."""
        return float(getattr(settings, "SEEDDUMP_STORAGE_TIMEOUT", 60))

    @property
    def TRUST_DUMPS(self) -> bool:
        """Let a dump's code run as the connecting role (SET ROLE to the owner) where no throwaway member of the
        owner can be had (``seeddump.sandbox``), instead of refusing the restore."""
        return bool(getattr(settings, "SEEDDUMP_TRUST_DUMPS", False))

    @property
    def SIGNING_KEYS(self) -> list[str]:
        """Team keys for metadata signatures: the first signs, any verifies (a list rotates keys)."""
        value = getattr(settings, "SEEDDUMP_SIGNING_KEY", None)
        if not value:
            return []
        return [value] if isinstance(value, str) else [str(key) for key in value if key]

    @property
    def STORAGE_PREFIX(self) -> str:
        """Folder inside the shared storage."""
        return str(getattr(settings, "SEEDDUMP_STORAGE_PREFIX", "seeddump"))

    # --- smoketest ---

    @property
    def SMOKE_HEALTH_URL(self) -> str | None:
        """A health endpoint of the project's own to wait for; default: the one the smoke server serves."""
        return getattr(settings, "SEEDDUMP_SMOKE_HEALTH_URL", None) or None

    @property
    def SMOKE_API_URLS(self) -> list[str]:
        """API paths that must answer 200 with data (requested as the smoke-test user)."""
        return list(getattr(settings, "SEEDDUMP_SMOKE_API_URLS", []))

    @property
    def SMOKE_API_HEADERS(self) -> object:
        """A callable (or its dotted path) that takes the smoke-test user and returns the HTTP headers
        that authenticate it to the API (a token); default: the user's logged-in session."""
        return getattr(settings, "SEEDDUMP_SMOKE_API_HEADERS", None) or None

    @property
    def SMOKE_PAGES(self) -> list[str] | None:
        """Pages that must render without logging in; default: the admin's login page, if routed."""
        value = getattr(settings, "SEEDDUMP_SMOKE_PAGES", None)
        return None if value is None else list(value)

    @property
    def SMOKE_LOGIN_PAGES(self) -> list[str] | None:
        """Pages that must render for the smoke-test user; default: the admin's index and dump list, if routed."""
        value = getattr(settings, "SEEDDUMP_SMOKE_LOGIN_PAGES", None)
        return None if value is None else list(value)

    @property
    def SMOKE_LOGIN_URL(self) -> str | None:
        """Where the smoke-test user logs in (a form with username and password); default: the admin's."""
        return getattr(settings, "SEEDDUMP_SMOKE_LOGIN_URL", None) or None

    @property
    def SMOKE_IGNORE_TABLES(self) -> frozenset[str]:
        """Tables whose row counts the smoke test does not compare with the dump's (``schema.table`` or
        ``table`` for the public schema)."""
        return frozenset(str(name) for name in getattr(settings, "SEEDDUMP_SMOKE_IGNORE_TABLES", ()))

    @property
    def SMOKE_FILE_SAMPLE(self) -> int:
        """How many values of each FileField the smoke test checks on disk (0: none)."""
        return int(getattr(settings, "SEEDDUMP_SMOKE_FILE_SAMPLE", 20))

    @property
    def SMOKE_SERVER_COMMAND(self) -> list[str] | None:
        """argv that starts the web server, with {port} in it; default: runserver."""
        value = getattr(settings, "SEEDDUMP_SMOKE_SERVER_COMMAND", None)
        return list(value) if value else None

    @property
    def SMOKE_SERVER_TIMEOUT(self) -> float:
        """Seconds to wait for the web server's health endpoint."""
        return float(getattr(settings, "SEEDDUMP_SMOKE_SERVER_TIMEOUT", 30))

    @property
    def SMOKE_DATABASE_WAIT(self) -> float:
        """Seconds to wait for the database server to accept connections."""
        return float(getattr(settings, "SEEDDUMP_SMOKE_DATABASE_WAIT", 30))


def _names(value: object) -> frozenset[str]:
    """A list of names, or one comma-separated string of them, without case and surrounding spaces."""
    items: Iterable[object] = (
        value.split(",") if isinstance(value, str) else value if isinstance(value, Iterable) else ()
    )
    return frozenset(str(item).strip().lower() for item in items if str(item).strip())


conf = Settings()
