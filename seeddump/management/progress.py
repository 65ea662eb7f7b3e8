"""Step-by-step output for long commands."""

from __future__ import annotations

import time
from collections.abc import Callable

from django.core.management.base import BaseCommand


def progress_writer(command: BaseCommand, verbosity: int) -> Callable[[str], None]:
    """Writes each step with the seconds since the command started, at --verbosity 2 and above."""
    started = time.monotonic()

    def write(message: str) -> None:
        if verbosity >= 2:
            command.stdout.write(f"[{time.monotonic() - started:6.1f}s] {message}")

    return write
