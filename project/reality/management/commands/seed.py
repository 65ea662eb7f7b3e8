from __future__ import annotations

import time
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.db import DEFAULT_DB_ALIAS

from project.reality.seeding import plan_for, seed
from seeddump.dumpfiles import ENVIRONMENT_RE


class Command(BaseCommand):
    help = "Fills the demo tables with deterministic data, row by row (slow, like real seed scripts)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("environment", nargs="?", default="dev", help="Names the data set. Default: dev.")
        parser.add_argument("--scale", type=int, default=10, help="Size of the data set. Default: 10.")
        parser.add_argument("--database", default=DEFAULT_DB_ALIAS)

    def handle(self, *args: Any, **options: Any) -> None:
        environment, scale, verbosity = options["environment"], options["scale"], options["verbosity"]
        if not ENVIRONMENT_RE.fullmatch(environment):
            raise CommandError(f"Invalid environment name {environment!r}: use lower-case letters and digits.")
        if scale < 1:
            raise CommandError("--scale must be 1 or more.")
        started = time.monotonic()
        if verbosity >= 1:
            self.stdout.write(f"Seeding {environment} at scale {scale} ({plan_for(scale).rows} rows)")

        # Per-team progress on a terminal; in logs (CI) only at --verbosity 2.
        shown = verbosity >= 2 or (verbosity >= 1 and self.stdout.isatty())

        def progress(message: str) -> None:
            if shown:
                self.stdout.write(f"  [{time.monotonic() - started:6.1f}s] {message}")

        plan = seed(environment, scale, progress, using=options["database"])
        if verbosity >= 1:
            self.stdout.write(self.style.SUCCESS(f"Seeded {plan.rows} rows in {time.monotonic() - started:.1f}s."))
