from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.db import DEFAULT_DB_ALIAS

from seeddump import postgres, snapshots
from seeddump.exceptions import SeeddumpError


class Command(BaseCommand):
    # Fast commands that check what they need themselves; `check` and `migrate` report stale dumps.
    requires_system_checks: list[str] = []
    help = "Lists the cached snapshots (and ready copies) of restored dumps on the database server, or drops them."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--database", default=DEFAULT_DB_ALIAS, help="Whose server. Default: 'default'.")
        group = parser.add_mutually_exclusive_group()
        group.add_argument("--prune", action="store_true", help="Drop stale snapshots and those over the limit.")
        group.add_argument(
            "--drop-all", action="store_true", help="Drop every snapshot and ready copy of this dumps folder."
        )

    def handle(self, *args: Any, **options: Any) -> None:
        try:
            settings_dict = postgres.settings_for(options["database"])
            with postgres.user_errors(settings_dict), postgres.connect_maintenance(settings_dict) as admin:
                if options["prune"] or options["drop_all"]:
                    with snapshots.snapshot_lock(admin):
                        dropped = snapshots.drop_all(admin) if options["drop_all"] else snapshots.prune(admin)
                    for name in dropped:
                        self.stdout.write(f"Dropped {name}")
                    if not dropped:
                        self.stdout.write("No snapshot to drop.")
                    return
                found = snapshots.list_snapshots(admin)
                ready = snapshots.list_snapshots(admin, kind=snapshots.READY_PREFIX)
                empty = snapshots.list_snapshots(admin, kind=snapshots.EMPTY_PREFIX)
        except SeeddumpError as exc:
            raise CommandError(str(exc)) from None
        if not found and not ready and not empty:
            self.stdout.write("No cached snapshots.")
            return
        for snapshot in found + ready:
            created = f"{snapshot.created:%Y-%m-%d %H:%M} UTC" if snapshot.created else "unknown"
            self.stdout.write(
                f"{snapshot.name}  {snapshot.size_bytes / 1e6:8.1f} MB  {created}  "
                f"{snapshot.dump_file or '(no dump recorded)'}"
                + (f"  (ready copy for '{snapshot.database}')" if snapshot.database else "")
            )
        for database in empty:
            self.stdout.write(
                f"{database.name}  {database.size_bytes / 1e6:8.1f} MB  "
                f"(empty, for the next pg_restore into '{database.database}')"
            )
        total = sum(s.size_bytes for s in found + ready + empty) / 1e6
        self.stdout.write(
            f"{len(found)} snapshot(s), {len(ready)} ready cop{'y' if len(ready) == 1 else 'ies'}, {total:.1f} MB."
        )
