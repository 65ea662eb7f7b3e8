"""``python -m seeddump restore ENV [options]``: restoredump without Django's start-up (``--help`` lists the
commands, ``--version`` says seeddump's).

``manage.py restoredump`` first runs ``django.setup()``, which imports every installed app's models: seconds
in a large project, for a restore whose own work can be a rename. This entry point imports the settings
module only (``--settings``, ``--pythonpath`` and DJANGO_SETTINGS_MODULE as django-admin takes them; else
the module that ``./manage.py`` names) and runs the same command (``restoredump``'s ``Command``: the same
options, output, exit codes and safety), with the code's migrations as a full-Django process last wrote them
down (``codestate``). It loads Django's apps first, and says why at ``-v 2``, where a restore needs them:

- ``--migrate`` and SEEDDUMP_RESTORE_HOOKS run the project's code against the restored database;
- the code's migrations are not written down for these settings, or a migration folder changed since;
- something receives ``seeddump.signals.database_swapped``.

The ``seeddump`` console script is the same: ``seeddump restore dev``.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
from pathlib import Path

USAGE = "usage: python -m seeddump COMMAND [options]   (the same as: seeddump COMMAND [options])\n"
COMMANDS = (
    "commands:\n"
    "  restore ENV [options]  restore the latest dump of ENV (such as dev) into the project's database: manage.py\n"
    "                         restoredump without Django's start-up (python -m seeddump restore --help: its options)\n"
    "options:\n"
    "  -h, --help             show this help and exit\n"
    "  --version              show seeddump's version (and Django's, Python's) and exit\n"
    "The other commands run through the project's manage.py: generatedump, listdumps, prunedumps, restoredump,\n"
    "smoketest, snapshots, testcache (python manage.py help COMMAND).\n"
)
_PROG = "python -m seeddump"
_MANAGE_DEFAULT = re.compile(
    r"""os\.environ\.setdefault\(\s*["']DJANGO_SETTINGS_MODULE["']\s*,\s*["']([\w.]+)["']\s*\)"""
)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv:
        sys.stderr.write(f"{USAGE}Name a command.\n{COMMANDS}")
        return 2
    if argv[0] in ("-h", "--help"):
        sys.stdout.write(f"{USAGE}\n{COMMANDS}")
        return 0
    if argv[0] == "--version":
        from seeddump.management.progress import version_line

        sys.stdout.write(version_line() + "\n")
        return 0
    verb, rest = argv[0], argv[1:]
    if verb != "restore":
        sys.stderr.write(f"Unknown command '{verb}': python -m seeddump has one, restore.\n{USAGE}{COMMANDS}")
        return 2
    given = _early_options(rest)
    problem = _load_settings(given)
    if problem:
        sys.stderr.write(f"CommandError: {problem}\n")
        return 1
    import django
    from django.core import checks

    from seeddump.checks import check_django_version

    reason = full_path_reason(migrate=given.migrate)
    if reason is not None:
        if given.verbosity >= 2:
            sys.stderr.write(f"Loading Django's apps: {reason}.\n")
        django.setup()
    else:
        # What restoredump's system checks (Tags.compatibility) find when the app is loaded.
        checks.register(check_django_version, "seeddump", checks.Tags.compatibility)
        if given.verbosity >= 2:
            sys.stderr.write("Not loading Django's apps: the code's migrations are as last written down.\n")
    from seeddump.management.commands.restoredump import Command

    Command().run_from_argv([_PROG, verb, *rest])  # exits with the command's status on a CommandError
    return 0


def full_path_reason(*, migrate: bool) -> str | None:
    """Why this restore needs Django's apps loaded, or None when it can go without (see the module docstring)."""
    from seeddump import codestate
    from seeddump.conf import conf
    from seeddump.exceptions import SeeddumpError

    if migrate:
        return "--migrate runs the project's migrations"
    try:
        hooks = conf.RESTORE_HOOKS
    except SeeddumpError as exc:
        return f"SEEDDUMP_RESTORE_HOOKS is not right ({exc})"
    if hooks:
        return "SEEDDUMP_RESTORE_HOOKS run the project's code"
    written = codestate.read()
    return written if isinstance(written, str) else None


def _early_options(argv: list[str]) -> argparse.Namespace:
    """The options needed before the settings are loaded (as django-admin reads them first)."""
    parser = argparse.ArgumentParser(add_help=False, allow_abbrev=False)
    parser.add_argument("--settings")
    parser.add_argument("--pythonpath")
    parser.add_argument("--migrate", action="store_true")
    parser.add_argument("-v", "--verbosity", type=int, choices=[0, 1, 2, 3], default=1)
    given, _ = parser.parse_known_args(argv)
    return given


def _load_settings(given: argparse.Namespace) -> str | None:
    """Imports the settings module; what is wrong, in a sentence, when it cannot."""
    if given.pythonpath:
        sys.path.insert(0, given.pythonpath)
    if given.settings:
        os.environ["DJANGO_SETTINGS_MODULE"] = given.settings
    if not os.environ.get("DJANGO_SETTINGS_MODULE"):
        module = settings_module_of(Path.cwd() / "manage.py")
        if module is None:
            return (
                "No settings module: pass --settings or set DJANGO_SETTINGS_MODULE (or run this in the folder of "
                "the project's manage.py)."
            )
        os.environ["DJANGO_SETTINGS_MODULE"] = module
    if "" not in sys.path and os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())  # the console script's path lacks the project folder, manage.py's has it
    from django.conf import settings
    from django.core.exceptions import ImproperlyConfigured

    try:
        settings.INSTALLED_APPS  # noqa: B018 - imports the settings module
    except ImproperlyConfigured as exc:
        return f"The settings cannot be loaded: {exc}"
    except ImportError as exc:
        return (
            f"The settings module {os.environ['DJANGO_SETTINGS_MODULE']} cannot be imported ({exc}). "
            "Run this in the project's folder, or pass --pythonpath."
        )
    return None


def settings_module_of(manage_py: Path) -> str | None:
    """The settings module a project's manage.py sets by default, if it says so the usual way."""
    try:
        found = _MANAGE_DEFAULT.search(manage_py.read_text())
    except (OSError, UnicodeDecodeError):
        return None
    return found[1] if found else None
