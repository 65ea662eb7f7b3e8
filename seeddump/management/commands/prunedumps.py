from __future__ import annotations

from typing import Any

from django.core.checks import Tags
from django.core.management.base import CommandError, CommandParser
from django.db import DEFAULT_DB_ALIAS

from seeddump import catalog, snapshots
from seeddump.exceptions import SeeddumpError
from seeddump.management.progress import SeeddumpCommand


class Command(SeeddumpCommand):
    help = (
        "Deletes older local dumps of an environment (never the latest), with their metadata, media, admin records, "
        "and the snapshots and ready copies of them this role keeps on the server."
    )
    requires_system_checks = [Tags.compatibility]  # seeddump.E001: an older Django, said in one line

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "environment", help="Environment whose older dumps go, such as dev (the latest one always stays)."
        )
        parser.add_argument("--keep", type=int, required=True, help="How many of the newest dumps to keep.")
        parser.add_argument("--dry-run", action="store_true", help="Only say what would be deleted.")
        parser.add_argument("--database", default=DEFAULT_DB_ALIAS, help="Whose server and admin records.")

    def handle(self, *args: Any, **options: Any) -> None:
        try:
            pruned = catalog.prune(
                options["environment"], options["keep"], dry_run=options["dry_run"], using=options["database"]
            )
        except SeeddumpError as exc:
            raise CommandError(str(exc)) from None
        verb = "Would remove" if options["dry_run"] else "Removed"
        for item in pruned:
            self.stdout.write(f"{verb} {item.name}{_copies(item.copies)}")
        if not pruned:
            self.stdout.write(f"Nothing to remove: {options['environment']} has at most {options['keep']} dumps.")


def _copies(names: tuple[str, ...]) -> str:
    """`` and its snapshot seeddump_snap_…, its ready copy seeddump_ready_…`` (what this role kept of the dump)."""
    kinds = ((snapshots.PREFIX, "snapshot"), (snapshots.READY_PREFIX, "ready copy"))
    said = [f"its {what} {name}" for prefix, what in kinds for name in names if name.startswith(prefix)]
    return f" and {', '.join(said)}" if said else ""
