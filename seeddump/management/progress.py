"""What seeddump's commands share besides their work: step-by-step output, the version line, and how to run
them again (the interpreter and script the user ran)."""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import django
from django.core.management.base import BaseCommand, CommandParser

import seeddump


def progress_writer(command: BaseCommand, verbosity: int, *, to_stderr: bool = False) -> Callable[[str], None]:
    """Writes each step with the seconds since the command started.

    Shown on a terminal, and in logs (CI) only at --verbosity 2, so a pipeline's output stays short.
    ``to_stderr`` keeps standard output for a JSON document.
    """
    started = time.monotonic()
    stream = command.stderr if to_stderr else command.stdout
    shown = verbosity >= 2 or (verbosity >= 1 and stream.isatty())

    def write(message: str) -> None:
        if shown:
            stream.write(f"[{time.monotonic() - started:6.1f}s] {message}")

    return write


def version_line(*, programs: bool = False) -> str:
    """``seeddump 0.1.0 (Django 6.1, Python 3.13.1)``; with ``programs``, the PostgreSQL client programs found
    too (probed here: only when asked, never on every command's start)."""
    line = f"seeddump {seeddump.__version__} (Django {django.get_version()}, Python {platform.python_version()})"
    if not programs:
        return line
    from seeddump import postgres

    found = []
    for name in ("pg_dump", "pg_restore"):
        versions = list(dict.fromkeys(program.version for program in postgres.installed_programs(name)))
        found.append(f"{name} {', '.join(versions) if versions else 'not found'}")
    return f"{line}; PostgreSQL client programs: {'; '.join(found)} (SEEDDUMP_PG_BIN_DIRS, then PATH)"


class _VersionAction(argparse.Action):
    """``--version``: seeddump's version line, made when asked for (Django's prints its own version only)."""

    def __init__(self, option_strings: Sequence[str], dest: str, programs: bool = False, **kwargs: Any) -> None:
        kwargs.pop("version", None)
        super().__init__(option_strings, dest, nargs=0, default=argparse.SUPPRESS, **kwargs)
        self.programs = programs

    def __call__(self, parser: argparse.ArgumentParser, *args: Any, **kwargs: Any) -> None:
        sys.stdout.write(version_line(programs=self.programs) + "\n")  # where argparse's own goes
        parser.exit()


class SeeddumpCommand(BaseCommand):
    """A seeddump command: ``--version`` says seeddump's version (with ``version_programs``, the PostgreSQL
    client programs it would use too), not only Django's."""

    version_programs = False

    def get_version(self) -> str:
        return version_line()

    def add_base_argument(self, parser: CommandParser, *args: Any, **kwargs: Any) -> None:
        if "--version" in args:
            kwargs.update(action=_VersionAction, programs=self.version_programs)
            kwargs["help"] = "Show seeddump's version (and Django's, Python's) and exit."
        super().add_base_argument(parser, *args, **kwargs)


def how_to_run(command: str) -> str:
    """``command`` (such as ``restoredump --undo``) as the user can type it again in the same shell: with the
    interpreter and the manage.py that ran this one (``.venv/bin/python manage.py …`` when that is what ran,
    ``python manage.py …`` when ``python`` on PATH is that interpreter), or django-admin. Run any other way
    (``python -m seeddump``, ``call_command`` in a project's code or tests): ``python manage.py …``."""
    script = sys.argv[0] if sys.argv else ""
    name = Path(script).name
    if name == "django-admin":
        return f"django-admin {command}"
    if name != "manage.py":
        return f"python manage.py {command}"
    return f"{_interpreter()} {script} {command}"


def _interpreter() -> str:
    executable = Path(sys.executable).absolute()
    for name in ("python", "python3"):
        on_path = shutil.which(name)
        if on_path is not None and Path(on_path).absolute() == executable:  # not resolved: a venv's python links
            return name
    if executable.is_relative_to(Path.cwd()):
        return os.path.relpath(executable)
    return str(executable)
