"""The code's migrations, written down by a process that loaded Django's apps, for one that does not.

``python -m seeddump restore`` (``seeddump.cli``) restores without ``django.setup()``: a project's start-up
(importing every app's models) can cost seconds, and a warm restore is a rename. What it still needs from
the apps is the code's migration set, to choose the dump that fits the checked-out code (``staleness``).
Every process that loads the migrations with the apps ready (restoredump, listdumps, the checks, the
receiver after ``migrate``) writes them down here, beside what they came from:

- the settings that decide which apps and migration modules there are (INSTALLED_APPS,
  MIGRATION_MODULES) as the settings module declares them: one file per combination,
  ``.seeddump-code-<key>.json`` in the dumps folder. An app's ``ready()`` may change them
  (django-debug-toolbar adds ``MIGRATION_MODULES["debug_toolbar"] = None``) and ``python -m seeddump`` runs
  no ``ready()``, so the key is taken from the values seen before any app was ready (``remember_declared``);
  the migrations written down are those the ready apps give;
- where each app's top-level package is imported from (another checkout of the project has other files);
- every migration folder's listing (names, sizes, modification times).

``read`` gives them back only while all of that is unchanged; otherwise it says why not, and the caller
loads Django instead. A test runner that turns migrations off (pytest-django's ``--no-migrations`` sets
MIGRATION_MODULES to an object that answers None for every app) changes nothing here: seeddump's question is
which migrations the code has, and the apps' own modules answer it (``migration_modules_in_effect``); such a
session writes nothing down. Whether anything receives ``seeddump.signals.database_swapped`` is written down
too: a receiver is the project's code, and only runs where the apps are loaded.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.util
import json
import os
import secrets
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

from django.conf import settings

from seeddump import dumpfiles, signals
from seeddump.conf import conf
from seeddump.exceptions import SeeddumpError

Key = tuple[str, str]
_FORMAT = 1
_PREFIX = ".seeddump-code-"


@dataclass(frozen=True)
class WrittenDown:
    """The code's migrations as a process with the apps ready saw them."""

    nodes: frozenset[Key]
    replacements: dict[Key, frozenset[Key]]
    installed: frozenset[str]  # labels of the installed apps


Modules = dict[str, "str | None"]
# (INSTALLED_APPS, MIGRATION_MODULES) as the settings module declared them, before any app's ready() ran.
_declared: tuple[list[str], Modules] | None = None


def _modules_of(value: object) -> Modules | None:
    """MIGRATION_MODULES as a dict; None for what is not a mapping (a test runner's object that turns every
    app's migrations off)."""
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        return None
    return {str(label): None if module is None else str(module) for label, module in value.items()}


def remember_declared() -> None:
    """Keeps the apps and migration modules the settings declare, once, before any app's ``ready()`` can
    change them: called while Django imports the app configs (``seeddump.apps``) and by the pytest plugin."""
    global _declared
    if _declared is None:
        modules = _modules_of(getattr(settings, "MIGRATION_MODULES", None))
        _declared = ([str(app) for app in settings.INSTALLED_APPS], modules or {})


def _declared_settings() -> tuple[list[str], Modules]:
    if _declared is not None:
        return _declared
    # No app config was imported in this process (python -m seeddump): the settings are as declared.
    modules = _modules_of(getattr(settings, "MIGRATION_MODULES", None))
    return [str(app) for app in settings.INSTALLED_APPS], modules or {}


def settings_key() -> str:
    """Twelve hex digits naming the settings that decide the apps and their migration modules, as declared."""
    installed, modules = _declared_settings()
    text = json.dumps([installed, sorted(modules.items(), key=lambda item: item[0])])
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def migrations_turned_off() -> bool:
    """True while a test runner has turned the apps' migrations off (MIGRATION_MODULES is not a mapping)."""
    return _modules_of(getattr(settings, "MIGRATION_MODULES", None)) is None


@contextlib.contextmanager
def migration_modules_in_effect() -> Iterator[None]:
    """Within the block Django's migration loader finds the apps' migrations even where a test runner turned
    them off (``--no-migrations``): the modules the settings declared. Otherwise nothing changes."""
    if not migrations_turned_off():
        yield
        return
    turned_off = settings.MIGRATION_MODULES
    settings.MIGRATION_MODULES = _declared_settings()[1]
    try:
        yield
    finally:
        settings.MIGRATION_MODULES = turned_off


def path() -> Path:
    return conf.DIR / f"{_PREFIX}{settings_key()}.json"


def write_down(
    nodes: Iterable[Key],
    replacements: Mapping[Key, Iterable[Key]],
    installed: Iterable[str],
    packages: Iterable[str],
    folders: Iterable[Path],
) -> None:
    """Writes down the code's migrations (see the module docstring), when the dumps folder exists and what
    is there differs; a failure to write only costs the next ``python -m seeddump`` Django's start-up."""
    directory = conf.DIR
    if not directory.is_dir() or migrations_turned_off():
        return  # a test session without migrations is not how the project's commands see the code
    document = {
        "format": _FORMAT,
        "nodes": sorted([app, name] for app, name in nodes),
        "replacements": sorted(
            [[*key, sorted([app, name] for app, name in replaced)] for key, replaced in replacements.items()]
        ),
        "installed": sorted(installed),
        "packages": {name: _locations(name) for name in sorted(set(packages))},
        "folders": {str(folder): _listing(folder) for folder in sorted(set(folders))},
        "swapReceivers": bool(signals.database_swapped.receivers),
    }
    text = json.dumps(document, indent=1)
    target = path()
    with contextlib.suppress(OSError):
        if target.read_text() == text:
            return
    with contextlib.suppress(OSError, SeeddumpError):
        dumpfiles.check_directory(directory)
        partial = target.with_name(f".{target.name}.{secrets.token_hex(4)}")
        with dumpfiles.open_own(partial, append=False) as handle:
            handle.write(text)
        os.replace(partial, target)


def read() -> WrittenDown | str:
    """The code's migrations as last written down for these settings, while nothing they came from has
    changed; else why they cannot be used (a sentence, for ``-v 2``)."""
    where = path()
    try:
        document = json.loads(where.read_text())
    except FileNotFoundError:
        others = sorted(where.parent.glob(f"{_PREFIX}*.json"))
        if others:
            return (
                f"the code's migrations are written down only for other settings ({len(others)} file(s) "
                f"{_PREFIX}*.json; INSTALLED_APPS or MIGRATION_MODULES differ from those of this process); "
                "restoredump, listdumps, check or migrate with these settings write them"
            )
        return (
            "the code's migrations are not written down for these settings yet (restoredump, listdumps, check "
            "and migrate write them)"
        )
    except (OSError, ValueError) as exc:
        return f"{where.name} cannot be read ({exc})"
    try:
        if document["format"] != _FORMAT:
            return f"{where.name} is of another seeddump version"
        for name, locations in document["packages"].items():
            if _locations(name) != locations:
                return f"the package {name} is imported from another folder than when the migrations were written down"
        for folder, listing in document["folders"].items():
            if _listing(Path(folder)) != listing:
                return f"a migration in {folder} changed since the code's migrations were written down"
        if document["swapReceivers"]:
            return "a receiver of seeddump.signals.database_swapped is connected, and it runs in Django"
        return WrittenDown(
            nodes=frozenset((app, name) for app, name in document["nodes"]),
            replacements={
                (app, name): frozenset((a, n) for a, n in replaced) for app, name, replaced in document["replacements"]
            },
            installed=frozenset(document["installed"]),
        )
    except (KeyError, TypeError, ValueError) as exc:
        return f"{where.name} is not what seeddump writes ({type(exc).__name__}: {exc})"


def _locations(package: str) -> list[str] | None:
    """Where a top-level package is imported from (None: not importable); finds it without importing it."""
    try:
        spec = importlib.util.find_spec(package)
    except (ImportError, ValueError):
        return None
    if spec is None:
        return None
    if spec.submodule_search_locations is not None:
        return sorted(str(location) for location in spec.submodule_search_locations)
    return [str(spec.origin)]


def _listing(folder: Path) -> str | None:
    """A digest of a migration folder's entries (name, size, modification time); None when it is missing."""
    try:
        entries = sorted(
            f"{entry.name}/" if entry.is_dir() else f"{entry.name} {info.st_size} {info.st_mtime_ns}"
            for entry in os.scandir(folder)
            if entry.name != "__pycache__" and (info := entry.stat()) is not None
        )
    except (FileNotFoundError, NotADirectoryError):
        return None
    except OSError:
        return "unreadable"
    return hashlib.sha256("\n".join(entries).encode()).hexdigest()


def migration_folders(labels_and_modules: Iterable[tuple[str, str | None, Path]]) -> tuple[list[str], list[Path]]:
    """(top-level packages, folders) of the apps' migration modules, from (label, module name or None,
    the app's folder) per app: where a migration module would be found, whether it exists yet or not."""
    packages: list[str] = []
    folders: list[Path] = []
    for _label, module, app_folder in labels_and_modules:
        if module is None:  # MIGRATION_MODULES = {label: None}: no migrations for the app
            continue
        packages.append(module.split(".")[0])
        folders.append(_module_folder(module) or app_folder / module.rsplit(".", 1)[-1])
    return packages, folders


def _module_folder(module: str) -> Path | None:
    try:
        spec = importlib.util.find_spec(module)
    except (ImportError, ValueError):
        spec = None
    if spec is not None and spec.submodule_search_locations:
        return Path(next(iter(spec.submodule_search_locations)))
    parent, _, last = module.rpartition(".")
    if not parent:
        return None
    with contextlib.suppress(ImportError, ValueError):
        parent_spec = importlib.util.find_spec(parent)
        if parent_spec is not None and parent_spec.submodule_search_locations:
            return Path(next(iter(parent_spec.submodule_search_locations))) / last
    return None
