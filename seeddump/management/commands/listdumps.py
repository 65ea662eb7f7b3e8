from __future__ import annotations

import json
from typing import Any

from django.core.checks import Tags
from django.core.management.base import CommandError, CommandParser
from django.db import DEFAULT_DB_ALIAS

from seeddump import catalog, dumpfiles
from seeddump.exceptions import SeeddumpError
from seeddump.management.progress import SeeddumpCommand


class Command(SeeddumpCommand):
    help = (
        "Lists every dump, local and shared, with whether it is the latest, the one restoredump chooses for this "
        "code, stale, made on another branch, or cached as a snapshot."
    )
    requires_system_checks = [Tags.compatibility]  # seeddump.E001: an older Django, said in one line

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("environment", nargs="?", help="Only this environment.")
        parser.add_argument("--json", action="store_true", help="Print one JSON document.")
        parser.add_argument("--offline", action="store_true", help="Do not ask the shared storage.")
        parser.add_argument("--database", default=DEFAULT_DB_ALIAS, help="Whose server holds the snapshots.")

    def handle(self, *args: Any, **options: Any) -> None:
        environment = options["environment"]
        try:
            if environment is not None:
                dumpfiles.validate_environment(environment)
            entries, warnings = catalog.list_entries(environment, using=options["database"], offline=options["offline"])
        except SeeddumpError as exc:
            raise CommandError(str(exc)) from None
        if options["json"]:
            document = {"dumps": [e.to_json() for e in entries], "warnings": warnings}
            self.stdout.write(json.dumps(document, indent=2))
            return
        for warning in warnings:
            self.stderr.write(self.style.WARNING(warning))
        if not entries:
            self.stdout.write("No dumps.")
            return
        # Columns as wide as their longest value: a <commit>-dirty-<hex> version or a long environment name
        # keeps its row in line.
        name_width = max(len("DUMP"), *(len(e.name) for e in entries))
        version_width = max(len("VERSION"), *(len(e.metadata.version) for e in entries))
        self.stdout.write(
            f"{'DUMP':{name_width}} {'VERSION':{version_width}} {'CREATED (UTC)':17} {'SIZE':>9} {'ROWS':>9}  "
            f"{'MEDIA':18} WHERE   FLAGS"
        )
        for e in entries:
            where = "both" if e.local and e.shared else ("local" if e.local else "shared")
            flags = [
                f
                for f, on in (
                    ("latest", e.latest),
                    ("chosen", e.chosen),
                    ("stale", e.stale),
                    ("other-branch", not e.fits),
                    ("snapshot", e.snapshot),
                    ("media-missing", e.media_missing),
                    (f"data-left-out:{len(e.metadata.excluded_table_data)}", bool(e.metadata.excluded_table_data)),
                )
                if on
            ]
            media = e.metadata.media
            media_column = f"{media.files} files {media.size_bytes / 1e6:.1f}MB" if media is not None else "-"
            self.stdout.write(
                f"{e.name:{name_width}} {e.metadata.version:{version_width}} {e.created:%Y-%m-%d %H:%M}  "
                f"{e.metadata.size_bytes / 1e6:7.1f}MB "
                f"{e.metadata.total_rows:>9}  {media_column:18} {where:7} {','.join(flags)}"
            )
