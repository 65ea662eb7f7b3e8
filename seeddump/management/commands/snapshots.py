from __future__ import annotations

from typing import Any

from django.core.checks import Tags
from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.db import DEFAULT_DB_ALIAS

from seeddump import background, postgres, snapshots
from seeddump.exceptions import SeeddumpError


class Command(BaseCommand):
    # Fast commands that check what they need themselves; `check` and `migrate` report stale dumps.
    requires_system_checks = [Tags.compatibility]  # seeddump.E001: an older Django, said in one line
    help = "Lists the cached snapshots, ready copies and empty databases of restoredump on the server, or drops them."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--database", default=DEFAULT_DB_ALIAS, help="Whose server. Default: 'default'.")
        group = parser.add_mutually_exclusive_group()
        group.add_argument("--prune", action="store_true", help="Drop stale snapshots and those over the limit.")
        group.add_argument(
            "--drop-all", action="store_true", help="Drop every snapshot and ready copy of this dumps folder."
        )
        parser.add_argument(
            "--all-folders",
            action="store_true",
            help="Every dumps folder's copies on the server: list them, or with --prune also drop everything of "
            "folders that no longer exist on this machine.",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        if failure := background.last_failure():
            self.stderr.write(
                self.style.WARNING(
                    f"Last time, {failure}: the cache below may lack what it was making. Log: {background.log_path()}"
                )
            )
        all_folders = options["all_folders"]
        if all_folders and options["drop_all"]:
            raise CommandError("--all-folders goes with --prune or a listing; --drop-all only drops this folder's.")
        try:
            settings_dict = postgres.settings_for(options["database"])
            with postgres.user_errors(settings_dict), postgres.connect_maintenance(settings_dict) as admin:
                if options["prune"] or options["drop_all"]:
                    if all_folders:
                        dropped = snapshots.prune_all_folders(admin)
                    else:
                        with snapshots.snapshot_lock(admin):
                            dropped = snapshots.drop_all(admin) if options["drop_all"] else snapshots.prune(admin)
                    for name in dropped:
                        self.stdout.write(f"Dropped {name}")
                    if not dropped:
                        self.stdout.write("No snapshot to drop.")
                    return
                found = snapshots.list_snapshots(admin, all_folders=all_folders)
                ready = snapshots.list_snapshots(admin, kind=snapshots.READY_PREFIX, all_folders=all_folders)
                empty = snapshots.list_snapshots(admin, kind=snapshots.EMPTY_PREFIX, all_folders=all_folders)
                foreign = snapshots.foreign(admin, all_folders=all_folders)
        except SeeddumpError as exc:
            raise CommandError(str(exc)) from None
        for copy in foreign:
            self.stderr.write(
                self.style.WARNING(
                    f"{copy.name}  foreign: owned by '{copy.owner}', not by the role seeddump connects as; "
                    "never used or dropped by seeddump. Drop it yourself if nobody should have made it."
                )
            )
        if not found and not ready and not empty:
            self.stdout.write("No cached snapshots.")
            return
        for snapshot in found + ready:
            created = f"{snapshot.created:%Y-%m-%d %H:%M} UTC" if snapshot.created else "unknown"
            self.stdout.write(
                f"{snapshot.name}  {snapshot.size_bytes / 1e6:8.1f} MB  {created}  "
                f"{snapshot.dump_file or '(no dump recorded)'}"
                + (f"  (ready copy for '{snapshot.database}')" if snapshot.database else "")
                + (f"  [{snapshot.folder or 'folder not recorded'}]" if all_folders else "")
            )
        for database in empty:
            self.stdout.write(
                f"{database.name}  {database.size_bytes / 1e6:8.1f} MB  "
                f"(empty, for the next pg_restore into '{database.database}')"
                + (f"  [{database.folder or 'folder not recorded'}]" if all_folders else "")
            )
        total = sum(s.size_bytes for s in found + ready + empty) / 1e6
        self.stdout.write(
            f"{len(found)} snapshot(s), {len(ready)} ready cop{'y' if len(ready) == 1 else 'ies'}, {total:.1f} MB."
        )
