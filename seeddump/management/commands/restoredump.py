from __future__ import annotations

from typing import Any

from django.core.management import call_command
from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.db import DEFAULT_DB_ALIAS

from seeddump.exceptions import SeeddumpError
from seeddump.management.progress import progress_writer
from seeddump.restore import RestorePlan, interrupt_on_sigterm, plan_restore, restore


class Command(BaseCommand):
    # Fast commands that check what they need themselves; `check` and `migrate` report stale dumps.
    requires_system_checks: list[str] = []
    help = (
        "Verifies a dump and replaces the database with it. The database is only replaced once the "
        "restored copy is complete and checked; on any failure it is left as it was."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("environment", help="Environment whose latest dump to restore, such as dev.")
        parser.add_argument("--dump", help="Restore this dump file instead of the environment's latest.")
        parser.add_argument(
            "--database", default=DEFAULT_DB_ALIAS, help="Database alias to replace. Defaults to 'default'."
        )
        parser.add_argument("--jobs", type=int, help="Parallel pg_restore jobs. Defaults to the CPU count.")
        parser.add_argument(
            "--no-snapshot",
            action="store_false",
            dest="snapshot",
            help="Neither use nor keep a cached snapshot of the dump; always run pg_restore.",
        )
        parser.add_argument("--migrate", action="store_true", help="Apply the code's newer migrations after restoring.")
        parser.add_argument(
            "--force", action="store_true", help="Restore a dump that holds migrations this code does not have."
        )
        parser.add_argument(
            "--no-input",
            "--noinput",
            action="store_false",
            dest="interactive",
            help="Do not ask for confirmation.",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        verbosity = options["verbosity"]
        if options["jobs"] is not None and options["jobs"] < 1:
            raise CommandError("--jobs must be 1 or more.")
        try:
            plan = plan_restore(
                options["environment"], dump=options["dump"], using=options["database"], force=options["force"]
            )
            if options["interactive"] and not self._confirmed(plan):
                raise CommandError("Restore cancelled; the database was not changed.")
            with interrupt_on_sigterm():
                result = restore(
                    plan,
                    jobs=options["jobs"],
                    use_snapshots=None if options["snapshot"] else False,
                    progress=progress_writer(self, verbosity),
                )
        except SeeddumpError as exc:
            raise CommandError(str(exc)) from None
        except KeyboardInterrupt:
            raise CommandError("Restore interrupted; the database was not changed.") from None
        if verbosity >= 1:
            self.stdout.write(
                self.style.SUCCESS(
                    f"Restored {plan.dump_path.name} into '{result.database}'"
                    f"{' from its cached snapshot' if result.from_snapshot else ''}: {result.rows} rows in "
                    f"{result.tables} tables, {result.seconds:.1f}s."
                )
            )
        self._report_migrations(plan, options)

    def _report_migrations(self, plan: RestorePlan, options: dict[str, Any]) -> None:
        status = plan.status
        if status.unknown:
            self.stderr.write(
                self.style.WARNING(
                    f"The restored database holds migrations this code does not have: {status.problems()}."
                )
            )
        if not status.missing:
            return
        if options["migrate"]:
            # The raw streams: migrate wraps them itself and would otherwise end every line twice.
            call_command(
                "migrate",
                database=options["database"],
                interactive=False,
                verbosity=options["verbosity"],
                stdout=getattr(self.stdout, "_out", self.stdout),
                stderr=getattr(self.stderr, "_out", self.stderr),
            )
            return
        self.stderr.write(
            self.style.WARNING(
                f"The restored database is behind the code: {status.problems()}. "
                f"Run: python manage.py migrate (or restoredump --migrate), then regenerate the dump with: "
                f"python manage.py generatedump {plan.environment}"
            )
        )

    def _confirmed(self, plan: RestorePlan) -> bool:
        metadata = plan.metadata
        self.stdout.write(
            f"This replaces the {plan.server.describe()} with {plan.dump_path.name} "
            f"(taken {metadata.timestamp:%Y-%m-%d %H:%M} UTC, {metadata.total_rows} rows).\n"
            "Everything in that database now will be lost."
        )
        try:
            answer = input("Type 'yes' to continue, or 'no' to cancel: ")
        except EOFError:
            return False
        return answer.strip().lower() == "yes"
