"""seeddump's signals, and its receiver after ``migrate`` that warns about dumps that no longer match the migrations.

``database_swapped`` is sent the moment a restore's (or an undo's) swap has committed, before anything else
happens: ``database`` now holds what was restored, and ``replaced`` names the database it replaced (kept for an
undo or to be dropped; None when there was none). Whatever happens after it (an interruption, a lost
connection) finds the restore whole: this is the point of no return."""

from __future__ import annotations

import sys
from typing import Any

from django.apps import AppConfig
from django.core.management.color import color_style
from django.dispatch import Signal

from seeddump.conf import conf
from seeddump.staleness import latest_statuses

database_swapped = Signal()  # sender: the alias; database, replaced


def warn_stale_dumps(
    *,
    app_config: AppConfig,
    verbosity: int,
    using: str,
    plan: list[Any] | None = None,
    stdout: Any = None,
    **kwargs: Any,
) -> None:
    if plan is None or verbosity < 1:  # flush and test teardown send no plan
        return
    stdout = stdout or sys.stdout
    style = color_style()
    statuses, errors = latest_statuses(conf.DIR)
    for status in statuses:
        if status.stale:
            stdout.write(style.WARNING(status.message()) + "\n")
    for error in errors:
        stdout.write(style.WARNING(f"seeddump: {error}") + "\n")
