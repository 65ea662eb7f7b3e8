"""System checks: ``python manage.py check`` reports dumps that no longer match the code, settings seeddump
cannot use, and databases it cannot work with."""

from __future__ import annotations

import difflib
import os
import sys
from types import FrameType
from typing import Any

import django
from django.conf import settings
from django.core.checks import CheckMessage, Error, Warning

from seeddump import conf as conf_module
from seeddump.conf import MAX_RESTORE_JOBS, conf, restore_jobs_problem
from seeddump.exceptions import SeeddumpError
from seeddump.staleness import latest_statuses

# Django 4.2 left support in April 2026; pyproject.toml says the same to pip.
MIN_DJANGO = (5, 2)
_SETTINGS_REFERENCE = "The settings reference (docs/reference/settings.md)"


def check_dumps(app_configs: Any = None, **kwargs: Any) -> list[CheckMessage]:
    """Reads the dumps folder and the code's migration files only: no database is queried, whichever
    ``databases`` Django hands in (all of them from ``check`` on Django 6.1)."""
    if _said_after_migrate():
        return []
    statuses, errors = latest_statuses(conf.DIR)
    regenerating = _regenerating()
    messages: list[CheckMessage] = [
        Warning(
            f"{status.label[0].upper()}{status.label[1:]} is stale: {status.problems()}.",
            hint=status.fix(),
            obj=str(status.dump_path),
            id="seeddump.W001",
        )
        for status in statuses
        if status.stale and status.environment not in regenerating
    ]
    messages += [
        Warning(
            error,
            hint="Remove the broken dump or its latest link, or regenerate it with generatedump.",
            id="seeddump.W002",
        )
        for error in errors
    ]
    return messages


def _said_after_migrate() -> bool:
    """True inside a ``migrate`` whose own line after the migrations (staleness.warn_stale_dumps) names each stale
    dump: the checks it runs first would name them a second time.

    Django tells a check nothing of the command that runs it, so the caller's frames are asked: the migrate
    command (or a project's subclass of it) with its options. ``--plan``, ``--check``, ``--prune`` and
    ``-v 0`` end before that line, and keep the check's warning.
    """
    from django.core.management.commands.migrate import Command as Migrate

    frame: FrameType | None = sys._getframe(1)
    while frame is not None:
        options = frame.f_locals.get("options")
        if isinstance(frame.f_locals.get("self"), Migrate) and isinstance(options, dict):
            quiet = options.get("verbosity", 1) < 1
            return not quiet and not any(options.get(name) for name in ("plan", "check_unapplied", "prune"))
        frame = frame.f_back
    return False


def _regenerating() -> set[str]:
    """The environments whose dump this process is making (a generatedump, or a project's subclass of it that
    runs every check): W001 would tell the user to run what they are running."""
    frame: FrameType | None = sys._getframe(1)
    while frame is not None:
        command, options = frame.f_locals.get("self"), frame.f_locals.get("options")
        classes = type(command).__mro__
        generating = any(kind.__module__ == "seeddump.management.commands.generatedump" for kind in classes)
        if generating and isinstance(options, dict) and options.get("environment"):
            return {str(options["environment"])}
        frame = frame.f_back
    return set()


def check_settings(app_configs: Any = None, **kwargs: Any) -> list[CheckMessage]:
    """Settings whose bad value would otherwise surface in the middle of a restore: from Django's settings,
    PLUGINS_CONFIG or the environment (conf)."""
    messages: list[CheckMessage] = []
    value = conf_module.given("RESTORE_JOBS")
    problem = None if value is None or value == "" else restore_jobs_problem(value)
    if problem is not None:
        messages.append(
            Error(
                f"SEEDDUMP_RESTORE_JOBS {problem}.",
                hint=f"Set it to a number of parallel pg_restore jobs from 1 to {MAX_RESTORE_JOBS}, or remove it "
                "(default: the CPU count).",
                id="seeddump.E002",
            )
        )
    for name in sorted(conf_module.NAMES - {"RESTORE_JOBS", "SIGNING_KEY"}):
        try:
            getattr(conf, name)
        except SeeddumpError as exc:
            messages.append(Error(str(exc), hint=_SETTINGS_REFERENCE + " says what each takes.", id="seeddump.E003"))
    return messages + _dumps_folder_in_installed_packages()


def check_setting_names(app_configs: Any = None, **kwargs: Any) -> list[CheckMessage]:
    """``SEEDDUMP_*`` names seeddump will never read: a misspelt setting (in Django's settings, NetBox's
    ``PLUGINS_CONFIG["seeddump"]`` or the environment), or one set in a module that is not Django's settings
    (a platform's configuration file that does not pass it on)."""
    known = {f"SEEDDUMP_{name}" for name in conf_module.NAMES}
    messages: list[CheckMessage] = []
    for name in sorted(n for n in dir(settings) if n.startswith("SEEDDUMP_") and n not in known):
        close = difflib.get_close_matches(name, sorted(known), n=1)
        messages.append(
            Warning(
                f"{name} is not a seeddump setting; seeddump ignores it.",
                hint=f"Did you mean {close[0]}?" if close else _SETTINGS_REFERENCE + " lists them all.",
                id="seeddump.W005",
            )
        )
    settings_module = getattr(settings, "SETTINGS_MODULE", None)
    for module_name, module in sorted(sys.modules.items(), key=lambda item: item[0]):
        if module is None or module_name == settings_module or module_name.split(".")[0] == "seeddump":
            continue
        names = [n for n in getattr(module, "__dict__", {}) if n.startswith("SEEDDUMP_") and n in known]
        for name in names:
            if not hasattr(settings, name) and module_name.rsplit(".", 1)[-1] in _CONFIGURATION_MODULES:
                messages.append(
                    Warning(
                        f"{name} is set in {module_name}, which Django's settings do not read: seeddump cannot see it.",
                        hint=f"Set it in the settings module, as the environment variable {name}, or in "
                        f"PLUGINS_CONFIG['seeddump'] as {name.removeprefix('SEEDDUMP_')!r}.",
                        id="seeddump.W004",
                    )
                )
    return messages + _unknown_plugin_options() + _unknown_environment_variables(known)


# Modules where settings are written outside Django's settings module (NetBox's configuration.py, split
# settings' local files): a SEEDDUMP_* there that Django's settings lack never reaches seeddump.
_CONFIGURATION_MODULES = frozenset({"configuration", "local_settings", "config", "settings_local", "local"})


def check_database_engine(app_configs: Any = None, **kwargs: Any) -> list[CheckMessage]:
    """The databases seeddump works on (``default`` and SEEDDUMP_PYTEST_DATABASES) are PostgreSQL underneath,
    said before a command refuses them. Reads the settings and imports a backend that is not Django's own."""
    from django.db import connections

    from seeddump.postgres import engine_problem

    try:
        aliases = ["default", *conf.PYTEST_DATABASES]
    except SeeddumpError:
        aliases = ["default"]  # check_settings reports the setting
    messages: list[CheckMessage] = []
    for alias in dict.fromkeys(aliases):
        if alias not in connections.settings:
            continue
        problem = engine_problem(str(connections.settings[alias].get("ENGINE") or ""))
        if problem:
            messages.append(
                Error(
                    f"DATABASES['{alias}'] {problem}",
                    hint="seeddump needs a PostgreSQL backend: Django's, GeoDjango's postgis, or one that wraps them.",
                    id="seeddump.E004",
                )
            )
    return messages


def check_django_version(app_configs: Any = None, **kwargs: Any) -> list[CheckMessage]:
    if django.VERSION >= MIN_DJANGO:
        return []
    oldest = ".".join(map(str, MIN_DJANGO))
    return [
        Error(
            f"seeddump needs Django {oldest} or newer; this project runs Django {django.get_version()}.",
            hint=f"Upgrade the project to Django {oldest} LTS or newer, or uninstall seeddump.",
            id="seeddump.E001",
        )
    ]


def _unknown_plugin_options() -> list[CheckMessage]:
    """Keys of ``PLUGINS_CONFIG["seeddump"]`` (NetBox) that give no setting: NetBox passes any key on."""
    messages: list[CheckMessage] = []
    readable = {key for name in conf_module.NAMES for key in conf_module.plugin_keys(name)}
    for key in sorted(str(key) for key in conf_module.plugin_options()):
        if key in readable:
            continue
        close = difflib.get_close_matches(key.upper().removeprefix("SEEDDUMP_"), sorted(conf_module.NAMES), n=1)
        hint = _SETTINGS_REFERENCE + " lists them all; here they go without the SEEDDUMP_ prefix."
        if close:  # said as the key was written: prefixed, lower case or upper case
            meant = f"SEEDDUMP_{close[0]}" if key.startswith("SEEDDUMP_") else close[0]
            hint = f"Did you mean {(meant.lower() if key.islower() else meant)!r}?"
        messages.append(
            Warning(
                f"PLUGINS_CONFIG['seeddump'] has {key!r}, which is not a seeddump setting; seeddump ignores it.",
                hint=hint,
                id="seeddump.W006",
            )
        )
    return messages


def _unknown_environment_variables(known: set[str]) -> list[CheckMessage]:
    """``SEEDDUMP_*`` environment variables that give no setting: a misspelt one is otherwise silently ignored."""
    others = {f"SEEDDUMP_{name}" for name in conf_module.OTHER_ENVIRONMENT_NAMES}
    messages: list[CheckMessage] = []
    for name in sorted(n for n in os.environ if n.startswith("SEEDDUMP_") and n not in known | others):
        close = difflib.get_close_matches(name, sorted(known), n=1)
        messages.append(
            Warning(
                f"The environment variable {name} is not a seeddump setting; seeddump ignores it.",
                hint=f"Did you mean {close[0]}?" if close else _SETTINGS_REFERENCE + " lists them all.",
                id="seeddump.W007",
            )
        )
    return messages


def _dumps_folder_in_installed_packages() -> list[CheckMessage]:
    """A dumps folder among the installed packages (a project installed from PyPI, whose BASE_DIR is in
    site-packages) is lost with the virtualenv, and no .gitignore of the project keeps it out of anything."""
    directory = conf.DIR
    packages = conf_module.installed_packages_folder(directory)
    if packages is None:
        return []
    why = "SEEDDUMP_DIR" if conf_module.given("DIR") else "the default, from BASE_DIR"
    return [
        Warning(
            f"The dumps folder {directory} ({why}) is inside the installed packages' folder {packages}: dumps "
            "there are lost with the virtualenv or the next upgrade.",
            hint="Set SEEDDUMP_DIR to a folder of your own outside it (e.g. SEEDDUMP_DIR=/srv/myproject/seeds/dumps).",
            id="seeddump.W008",
        )
    ]
