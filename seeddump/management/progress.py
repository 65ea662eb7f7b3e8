"""Step-by-step output for long commands."""

from __future__ import annotations

import time
from collections.abc import Callable

from django.core.management.base import BaseCommand


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
