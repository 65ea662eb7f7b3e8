from __future__ import annotations

from typing import Any

from django.core.checks import Tags
from django.core.management.base import CommandError, CommandParser
from django.db import DEFAULT_DB_ALIAS, connections

from seeddump import databases, postgres, sharedtestcache, testcache
from seeddump.exceptions import SeeddumpError
from seeddump.management.progress import SeeddumpCommand


class Command(SeeddumpCommand):
    help = (
        "Lists the migrated test databases that seeddump keeps on the server for pytest-django and manage.py test "
        "(the states of the code's migrations), pushes this code's to the shared storage, or drops them."
    )
    requires_system_checks = [Tags.compatibility]  # seeddump.E001: an older Django, said in one line

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--database", default=DEFAULT_DB_ALIAS, help="Whose server. Default: 'default'.")
        group = parser.add_mutually_exclusive_group()
        group.add_argument(
            "--push",
            action="store_true",
            help="Dump the kept state of this code's migrations and upload it to SEEDDUMP_STORAGE, for CI machines "
            "to copy instead of migrating.",
        )
        group.add_argument("--drop-all", action="store_true", help="Drop every kept state of this dumps folder.")

    def handle(self, *args: Any, **options: Any) -> None:
        alias = options["database"]
        try:
            if options["push"]:
                path = sharedtestcache.push(alias, progress=self._progress(options["verbosity"]))
                self.stdout.write(self.style.SUCCESS(f"Pushed {path.name}."))
                return
            settings_dict = postgres.settings_for(alias)
            with postgres.user_errors(settings_dict), postgres.connect_maintenance(settings_dict) as admin:
                if options["drop_all"]:
                    dropped = testcache.drop_all(admin)
                    for name in dropped:
                        self.stdout.write(f"Dropped {name}")
                    if not dropped:
                        self.stdout.write("No migrated test database to drop.")
                    return
                code = testcache.code(connections[alias], databases.current_user(admin))
                states = testcache.states(admin)
        except SeeddumpError as exc:
            raise CommandError(str(exc)) from None
        if not states:
            self.stdout.write("No migrated test database is kept: the next test run migrates and keeps one.")
        for state in states:
            fits = "" if code is None else ("  (fits this code)" if code.holds(state.migrations) else "")
            lacks = f", lacks {code.lacks(state)}" if code is not None and fits and code.lacks(state) else ""
            source = f"  from a shared dump {state.dump[:19]}" if state.dump else ""
            used = state.used[:19].replace("T", " ")
            self.stdout.write(f"{state.name}  {len(state.migrations)} migrations{lacks}  used {used}{fits}{source}")

    def _progress(self, verbosity: int) -> Any:
        def progress(line: str) -> None:
            if verbosity >= 1:
                self.stdout.write(line)

        return progress
