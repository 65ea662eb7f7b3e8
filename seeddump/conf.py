"""seeddump's settings, read lazily so that ``override_settings`` works in tests.

Every setting is optional; docs/reference/settings.md lists them all. Each ``SEEDDUMP_<NAME>`` is looked for in
Django's settings, then in ``PLUGINS_CONFIG["seeddump"]`` (as ``<NAME>`` or ``<name>``: a NetBox-style plugin list, see
``seeddump.netbox``), then in the environment variable of the same full name, typed: lists comma-separated (or a
JSON list), booleans ``true``/``false``, numbers as numbers. The first source that has a setting wins, whatever
its value (``None`` included): Django's settings, then PLUGINS_CONFIG, then the environment.
"""

from __future__ import annotations

import json
import os
import site
import sysconfig
from collections.abc import Iterable
from pathlib import Path

from django.conf import settings

from seeddump.exceptions import SeeddumpError

# The snapshot cache's default bound on a server: a 4 GB database's snapshot and ready copy fit, a third
# generation of it does not. None (or "none" in the environment) lifts it.
DEFAULT_CACHE_MAX_SIZE = 10 * 1024**3

# GeoDjango's: the extensions a Django project commonly needs that only a superuser may create.
DEFAULT_EXTENSIONS = (
    "postgis",
    "postgis_raster",
    "postgis_topology",
    "postgis_sfcgal",
    "postgis_tiger_geocoder",
    "address_standardizer",
    "address_standardizer_data_us",
)

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


class EnvValue(str):
    """A setting's value as the environment gave it: text, to be typed by the setting that reads it."""


_UNSET = object()
_TRUE = frozenset({"true", "1", "yes", "on"})
_FALSE = frozenset({"false", "0", "no", "off"})


def _raw(name: str) -> object:
    """SEEDDUMP_<name> from Django's settings, else PLUGINS_CONFIG["seeddump"], else the environment (an
    ``EnvValue``); ``_UNSET`` where none has it."""
    full = f"SEEDDUMP_{name}"
    if hasattr(settings, full):
        return getattr(settings, full)
    options = plugin_options()
    for key in plugin_keys(name):
        if key in options:
            return options[key]
    if full in os.environ:
        return EnvValue(os.environ[full])
    return _UNSET


def plugin_options() -> dict[object, object]:
    """``PLUGINS_CONFIG["seeddump"]``: seeddump's options where NetBox's settings keep them ({} when none)."""
    plugin = getattr(settings, "PLUGINS_CONFIG", None)
    options = plugin.get("seeddump") if isinstance(plugin, dict) else None
    return options if isinstance(options, dict) else {}


def plugin_keys(name: str) -> tuple[str, str, str]:
    """The keys of PLUGINS_CONFIG["seeddump"] that give SEEDDUMP_<name>, the first present winning."""
    return (name, name.lower(), f"SEEDDUMP_{name}")


def given(name: str) -> object | None:
    """SEEDDUMP_<name> as given, from whichever source has it (an environment value as its text); None when
    none has it."""
    value = _raw(name)
    return None if value is _UNSET else value


def _wrong(name: str, value: str, wanted: str) -> SeeddumpError:
    return SeeddumpError(
        f"SEEDDUMP_{name} in the environment must be {wanted}, not {value[:60]!r}. Fix or unset the variable."
    )


def _get(name: str, default: object) -> object:
    value = _raw(name)
    return default if value is _UNSET else value


def _bool(name: str, default: bool) -> bool:
    value = _raw(name)
    if value is _UNSET:
        return default
    if isinstance(value, EnvValue):
        text = value.strip().lower()
        if text in _TRUE or text in _FALSE:
            return text in _TRUE
        raise _wrong(name, value, "true or false")
    return bool(value)


def _optional_bool(name: str) -> bool | None:
    value = _raw(name)
    if value is _UNSET or value is None or (isinstance(value, EnvValue) and not value.strip()):
        return None
    return _bool(name, False)


def _number(name: str, default: float | None, kind: type) -> object:
    value = _raw(name)
    if value is _UNSET:
        return default
    if value is None:  # set to None: no number (no bound, not checked)
        return None
    if isinstance(value, EnvValue):
        text = value.strip()
        if text.lower() in ("", "none"):
            return None
        try:
            return kind(text)
        except ValueError:
            raise _wrong(name, value, "a whole number" if kind is int else "a number") from None
    return kind(value)  # type: ignore[call-arg]


def _int(name: str, default: int) -> int:
    value = _number(name, default, int)
    return default if value is None else int(value)  # type: ignore[call-overload]


def _optional_int(name: str, default: int | None = None) -> int | None:
    value = _number(name, default, int)
    return None if value is None else int(value)  # type: ignore[call-overload]


def _float(name: str, default: float) -> float:
    value = _number(name, default, float)
    return default if value is None else float(value)  # type: ignore[arg-type]


def _list(name: str, default: Iterable[object] = ()) -> list[object]:
    """A list: from the environment comma-separated, or a JSON list (for hooks: ``[["createsuperuser", ...]]``)."""
    value = _raw(name)
    if value is _UNSET or value is None:
        return list(default)
    if isinstance(value, EnvValue):
        text = value.strip()
        if text.startswith("["):
            try:
                parsed = json.loads(text)
            except ValueError:
                raise _wrong(name, value, "a comma-separated list or a JSON list") from None
            if not isinstance(parsed, list):
                raise _wrong(name, value, "a comma-separated list or a JSON list")
            return parsed
        return [item.strip() for item in text.split(",") if item.strip()]
    if isinstance(value, (str, Path)):
        return [value]
    return list(value) if isinstance(value, Iterable) else [value]


class Settings:
    @property
    def DIR(self) -> Path:
        """Where dumps and their metadata live."""
        value = _get("DIR", None)
        if value:
            return Path(str(value))
        base = getattr(settings, "BASE_DIR", None) or Path.cwd()
        return Path(base) / "seeds" / "dumps"

    @property
    def PROTECTED_ENVIRONMENTS(self) -> frozenset[str]:
        """Environments that restoredump refuses to overwrite: a list, or one comma-separated string;
        compared without surrounding spaces and case, as init-db.sh does."""
        return _names(_get("PROTECTED_ENVIRONMENTS", ("prod", "production")))

    @property
    def PROTECTED_DATABASES(self) -> frozenset[str]:
        """Database names and hosts that are never restored over, whatever the dump's environment."""
        return _names(_get("PROTECTED_DATABASES", ()))

    @property
    def PG_BIN_DIRS(self) -> list[Path]:
        """Extra folders searched first for pg_dump and pg_restore."""
        return [Path(str(v)) for v in _list("PG_BIN_DIRS")]

    @property
    def VERSION(self) -> str | None:
        """A fixed dump version; when unset, the project's short git commit or a migration fingerprint."""
        value = _get("VERSION", None)
        return str(value) if value else None

    @property
    def PROJECT_DIR(self) -> Path:
        """The folder whose git commit names a dump's version."""
        value = _get("PROJECT_DIR", None) or getattr(settings, "BASE_DIR", None)
        return Path(str(value)) if value else Path.cwd()

    @property
    def RESTORE_JOBS(self) -> int:
        """Parallel pg_restore jobs when --jobs is not given (SeeddumpError, one line, when it is no number of
        jobs: a system check says the same)."""
        value = _get("RESTORE_JOBS", None)
        if value is None or value == "":
            return min(os.cpu_count() or 1, MAX_RESTORE_JOBS)
        problem = restore_jobs_problem(value)
        if problem:
            raise SeeddumpError(f"SEEDDUMP_RESTORE_JOBS {problem}.")
        return int(str(value).strip())

    @property
    def DUMP_COMPRESSION(self) -> str:
        """pg_dump's --compress value for new dumps.

        gzip level 5: on the 261 MB benchmark database, half the time of pg_dump's default level for a file
        10% larger; level 1 is faster still but 26% larger, and zstd/lz4 are not in every build.
        """
        return str(_get("DUMP_COMPRESSION", "5"))

    @property
    def EXCLUDE_TABLE_DATA(self) -> list[str]:
        """Tables whose rows generatedump leaves out (their schema is dumped): Django model labels
        (``sessions.Session``) or table names with shell-style patterns (``django_cache*``, ``audit.*``)."""
        return [str(name) for name in _list("EXCLUDE_TABLE_DATA")]

    @property
    def MEDIA(self) -> bool:
        """generatedump archives MEDIA_ROOT beside the dump by default (as with --media)."""
        return _bool("MEDIA", False)

    @property
    def RESTORE_HOOKS(self) -> list[object]:
        """Run against the restored database before it is swapped in: a list is a management command with its
        arguments, a string the dotted path of a callable taking ``using`` (see seeddump.preswap)."""
        return _list("RESTORE_HOOKS")

    @property
    def EXTENSIONS(self) -> frozenset[str]:
        """Extensions only a superuser may create that seeddump makes for a dump that asks for them (trusted ones
        it always makes): PostGIS's family by default."""
        return frozenset(str(name) for name in _list("EXTENSIONS", DEFAULT_EXTENSIONS))

    @property
    def TEMPLATE(self) -> str | None:
        """The template the databases a restore makes are created from (default ``template0``): one that holds
        extensions only a superuser may create (``template_postgis``), for restores as a role that is not one."""
        value = _get("TEMPLATE", None)
        return str(value) if value else None

    @property
    def MAINTENANCE_DB(self) -> str:
        """The database seeddump connects to while it creates, renames and drops others."""
        return str(_get("MAINTENANCE_DB", "postgres"))

    @property
    def CONNECT_TIMEOUT(self) -> int:
        """Seconds to wait for the server before saying it is unreachable."""
        return _int("CONNECT_TIMEOUT", 10)

    @property
    def LOCK_TIMEOUT(self) -> int:
        """Seconds a restoredump waits for another restore of the same database before giving up."""
        return _int("LOCK_TIMEOUT", 600)

    @property
    def SNAPSHOTS(self) -> bool:
        """Keep a template database of each restored dump so the next restore of it is a copy."""
        return _bool("SNAPSHOTS", True)

    @property
    def SNAPSHOTS_KEEP(self) -> int:
        """How many snapshots (of this dumps folder) to keep on a server."""
        return _int("SNAPSHOTS_KEEP", 3)

    @property
    def TEST_CACHE(self) -> bool:
        """Django's test databases (pytest-django, manage.py test) come from the cache of migrated ones."""
        return _bool("TEST_CACHE", True)

    @property
    def TEST_CACHE_KEEP(self) -> int:
        """How many migrated test databases (states of the migrations) of this dumps folder to keep on a server."""
        return _int("TEST_CACHE_KEEP", 4)

    @property
    def READY_COPIES(self) -> bool:
        """Keep one more copy of the last restored dump per database, so that restoring it again is two renames."""
        return _bool("READY_COPIES", True)

    @property
    def CLONES(self) -> bool | None:
        """Copy databases as copy-on-write clones (PostgreSQL 18's file_copy_method = clone): None (the default)
        when the server shows it can, True always on PostgreSQL 18, False never."""
        return _optional_bool("CLONES")

    @property
    def CACHE_MAX_SIZE(self) -> int | None:
        """Bytes the snapshot cache (snapshots, ready copies, builds) may hold on a server; None: no bound."""
        return _optional_int("CACHE_MAX_SIZE", DEFAULT_CACHE_MAX_SIZE)

    @property
    def MIN_FREE_DISK(self) -> int | None:
        """Bytes that must stay free on the server's disk after the cache makes a copy (checked when the
        server's data directory is on this machine); None: not checked."""
        return _optional_int("MIN_FREE_DISK", 1024**3)

    @property
    def UNDO(self) -> bool:
        """Keep the database (and media folder) a restore replaced, closed, until the next restore of it, so that
        ``restoredump --undo`` can put it back."""
        return _bool("UNDO", True)

    @property
    def BACKGROUND(self) -> bool:
        """restoredump returns once the database is in place and finishes the rest in a background process."""
        return _bool("BACKGROUND", True)

    @property
    def OWNER(self) -> str | None:
        """The role that owns what restoredump restores; default: the alias's OPTIONS["assume_role"],
        else the target database's owner (else, for a new database, the role seeddump connects as)."""
        value = _get("OWNER", None)
        return str(value) if value else None

    @property
    def STORAGE(self) -> str | None:
        """Alias in STORAGES where dumps are shared with the team (generatedump --push, restoredump)."""
        value = _get("STORAGE", None)
        return str(value) if value else None

    @property
    def STORAGE_TIMEOUT(self) -> float:
        """Seconds one read of the shared storage may take before it counts as stalled."""
        return _float("STORAGE_TIMEOUT", 60)

    @property
    def TRUST_DUMPS(self) -> bool:
        """Let a dump's code run as the connecting role (SET ROLE to the owner) where no throwaway member of the
        owner can be had (``seeddump.sandbox``), instead of refusing the restore."""
        return _bool("TRUST_DUMPS", False)

    @property
    def SIGNING_KEYS(self) -> list[str]:
        """Team keys for metadata signatures: the first signs, any verifies (a list rotates keys)."""
        return [str(key) for key in _list("SIGNING_KEY") if key]

    @property
    def STORAGE_PREFIX(self) -> str:
        """Folder inside the shared storage."""
        return str(_get("STORAGE_PREFIX", "seeddump"))

    @property
    def PYTEST_DATABASES(self) -> list[str]:
        """The aliases the pytest plugin seeds."""
        return [str(alias) for alias in _list("PYTEST_DATABASES", ["default"])]

    # --- smoketest ---

    @property
    def SMOKE_HEALTH_URL(self) -> str | None:
        """A health endpoint of the project's own to wait for; default: the one the smoke server serves."""
        value = _get("SMOKE_HEALTH_URL", None)
        return str(value) if value else None

    @property
    def SMOKE_HEALTH_PATH(self) -> str:
        """Where the smoke server's own health endpoint answers."""
        return str(_get("SMOKE_HEALTH_PATH", "/__seeddump__/healthz/"))

    @property
    def SMOKE_API_URLS(self) -> list[str]:
        """API paths that must answer 200 with data (requested as the smoke-test user)."""
        return [str(url) for url in _list("SMOKE_API_URLS")]

    @property
    def SMOKE_API_HEADERS(self) -> object:
        """A callable (or its dotted path) that takes the smoke-test user and returns the HTTP headers
        that authenticate it to the API (a token); default: the user's logged-in session."""
        return _get("SMOKE_API_HEADERS", None) or None

    @property
    def SMOKE_PAGES(self) -> list[str] | None:
        """Pages that must render without logging in; default: the admin's login page, if routed."""
        return None if _raw("SMOKE_PAGES") is _UNSET else [str(page) for page in _list("SMOKE_PAGES")]

    @property
    def SMOKE_LOGIN_PAGES(self) -> list[str] | None:
        """Pages that must render for the smoke-test user; default: the admin's index and dump list, if routed."""
        if _raw("SMOKE_LOGIN_PAGES") is _UNSET:
            return None
        return [str(page) for page in _list("SMOKE_LOGIN_PAGES")]

    @property
    def SMOKE_LOGIN_URL(self) -> str | None:
        """Where the smoke-test user logs in (a form with username and password); default: the admin's."""
        value = _get("SMOKE_LOGIN_URL", None)
        return str(value) if value else None

    @property
    def SMOKE_IGNORE_TABLES(self) -> frozenset[str]:
        """Tables whose row counts the smoke test does not compare with the dump's (``schema.table`` or
        ``table`` for the public schema)."""
        return frozenset(str(name) for name in _list("SMOKE_IGNORE_TABLES"))

    @property
    def SMOKE_FILE_SAMPLE(self) -> int:
        """How many values of each FileField the smoke test checks on disk (0: none)."""
        return _int("SMOKE_FILE_SAMPLE", 20)

    @property
    def SMOKE_SERVER_COMMAND(self) -> list[str] | None:
        """argv that starts the web server, with {port} in it; default: runserver."""
        value = _list("SMOKE_SERVER_COMMAND")
        return [str(part) for part in value] if value else None

    @property
    def SMOKE_SERVER_TIMEOUT(self) -> float:
        """Seconds to wait for the web server's health endpoint."""
        return _float("SMOKE_SERVER_TIMEOUT", 30)

    @property
    def SMOKE_DATABASE_WAIT(self) -> float:
        """Seconds to wait for the database server to accept connections."""
        return _float("SMOKE_DATABASE_WAIT", 30)


def _names(value: object) -> frozenset[str]:
    """A list of names, or one comma-separated string of them, without case and surrounding spaces."""
    items: Iterable[object] = (
        value.split(",") if isinstance(value, str) else value if isinstance(value, Iterable) else ()
    )
    return frozenset(str(item).strip().lower() for item in items if str(item).strip())


conf = Settings()

# Every setting's name without the prefix: the properties above.
NAMES = frozenset(name for name, value in vars(Settings).items() if isinstance(value, property))
# Settings read under another name than their property's.
NAMES = (NAMES - {"SIGNING_KEYS"}) | {"SIGNING_KEY"}

# SEEDDUMP_* environment variables that are no setting but are read as such: by the smoke test's web server
# (SMOKE_SERVER), the pytest plugin (PYTEST_ENV), seeds/scripts/init-db.sh in the database's container (ENV,
# DUMPS_DIR, METADATA; a .env file often serves that container and the project alike) and this repository's
# test scripts (TEST_SYSTEM_URL, TEST_PYTHON, PYTHON_CACHE).
OTHER_ENVIRONMENT_NAMES = frozenset(
    {"SMOKE_SERVER", "PYTEST_ENV", "ENV", "DUMPS_DIR", "METADATA", "TEST_SYSTEM_URL", "TEST_PYTHON", "PYTHON_CACHE"}
)


def installed_packages_folders() -> list[Path]:
    """The folders pip installs packages into for this interpreter: the virtualenv's or the system's
    site-packages (sysconfig's purelib and platlib, ``site.getsitepackages()``) and the user's
    (``pip install --user``, ``site.getusersitepackages()``)."""
    paths = sysconfig.get_paths()
    found = [paths.get("purelib"), paths.get("platlib"), *site.getsitepackages(), site.getusersitepackages()]
    return [Path(folder).resolve() for folder in dict.fromkeys(found) if folder]


def installed_packages_folder(path: Path) -> Path | None:
    """The folder of installed packages that holds ``path``, or None. What lies there goes with the virtualenv
    (or the next upgrade of the package) and is in no project's git checkout: the settings of an application
    installed from PyPI (``python -m pretix``) put BASE_DIR there."""
    resolved = Path(path).resolve()
    return next((folder for folder in installed_packages_folders() if resolved.is_relative_to(folder)), None)
