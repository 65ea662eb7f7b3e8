"""System checks: ``python manage.py check`` reports dumps that no longer match the code."""

from __future__ import annotations

from typing import Any

from django.core.checks import CheckMessage, Warning

from seeddump.conf import conf
from seeddump.staleness import latest_statuses


def check_dumps(app_configs: Any = None, **kwargs: Any) -> list[CheckMessage]:
    statuses, errors = latest_statuses(conf.DIR)
    messages: list[CheckMessage] = [
        Warning(
            f"{status.label[0].upper()}{status.label[1:]} is stale: {status.problems()}.",
            hint=status.fix(),
            obj=str(status.dump_path),
            id="seeddump.W001",
        )
        for status in statuses
        if status.stale
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
