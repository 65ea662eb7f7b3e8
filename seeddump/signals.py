"""After ``migrate``: warn about dumps that no longer match the migrations."""

from __future__ import annotations

import sys
from typing import Any

from django.apps import AppConfig
from django.core.management.color import color_style

from seeddump.conf import conf
from seeddump.staleness import latest_statuses


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
