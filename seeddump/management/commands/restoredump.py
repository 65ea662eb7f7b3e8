from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import replace
from typing import Any

from django.core.checks import Tags
from django.core.management import call_command
from django.core.management.base import CommandError, CommandParser
from django.db import DEFAULT_DB_ALIAS

from seeddump import background, dumpfiles
from seeddump.conf import conf, restore_jobs_problem
from seeddump.exceptions import SeeddumpError
from seeddump.management.progress import SeeddumpCommand, how_to_run, progress_writer
from seeddump.restore import (
    RestoreOptions,
    RestorePlan,
    after_swap,
    find_undo,
    interrupt_on_sigterm,
    interruptions_judged,
    plan_restore,
    restore,
    undo_last,
)
from seeddump.undo import UndoCopy


class Command(SeeddumpCommand):
    version_programs = True  # --version names the pg_dump and pg_restore it would choose from
    # Fast commands that check what they need themselves; `check` and `migrate` report stale dumps.
    requires_system_checks = [Tags.compatibility]  # seeddump.E001: an older Django, said in one line
    help = (
        "Verifies a dump and replaces the database with it. The database is only replaced once the "
        "restored copy is complete and checked; on any failure it is left as it was."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("environment", nargs="?", help="Environment whose latest dump to restore, such as dev.")
        parser.add_argument(
            "--undo",
            action="store_true",
            help="Put back the database (and media folder) the last restore replaced, instead of restoring.",
        )
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
        parser.add_argument(
            "--wait",
            action="store_false",
            dest="background",
            default=None,
            help="Drop the replaced database and cache the snapshot before returning, not in the background.",
        )
        parser.add_argument(
            "--in-place",
            action="store_true",
            help="Restore into the existing database in one transaction, for a role that may not create "
            "databases. Slower; never cached.",
        )
        parser.add_argument(
            "--no-media",
            action="store_false",
            dest="media",
            help="Leave MEDIA_ROOT as it is, even when the dump has media files.",
        )
        parser.add_argument(
            "--migrate",
            action="store_true",
            help="Apply the code's newer migrations to the restored database before it replaces yours.",
        )
        parser.add_argument(
            "--force", action="store_true", help="Restore a dump that holds migrations this code does not have."
        )
        parser.add_argument(
            "--trust",
            action="store_true",
            help="Let the dump's code run as the connecting role (acting as the owner) where the server allows no "
            "throwaway login for it; only for a dump you trust as much as that role.",
        )
        storage = parser.add_mutually_exclusive_group()
        storage.add_argument(
            "--pull", action="store_true", help="Check the shared storage for a newer dump; fail if it is unreachable."
        )
        storage.add_argument("--offline", action="store_true", help="Never ask the shared storage.")
        parser.add_argument("--json", action="store_true", help="Print one JSON document with what was done.")
        parser.add_argument(
            "--no-input",
            "--noinput",
            action="store_false",
            dest="interactive",
            help="Do not ask for confirmation.",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        verbosity, as_json = options["verbosity"], options["json"]
        if options["jobs"] is not None and (problem := restore_jobs_problem(options["jobs"])):
            raise CommandError(f"--jobs {problem}.")
        try:
            conf.RESTORE_JOBS  # noqa: B018 - a bad setting is said now, before anything is touched
        except SeeddumpError as exc:
            raise CommandError(str(exc)) from None
        if as_json and options["interactive"]:
            raise CommandError("--json needs --no-input: a script cannot answer the confirmation.")
        progress = progress_writer(self, verbosity, to_stderr=as_json)
        if options["undo"]:
            return self._undo(options, progress)
        if options["environment"] is None:
            raise CommandError("Name the environment to restore (such as dev), or pass --undo.")
        if failure := background.last_failure():
            self.stderr.write(
                self.style.WARNING(
                    f"Last time, {failure}; this restore tidies up after it. Log: {background.log_path()}"
                )
            )
        shared_storage = "pull" if options["pull"] else ("offline" if options["offline"] else "auto")
        try:
            # from the first step on, SIGTERM (docker stop, a cancelled job) is an interruption, said in a line
            with interrupt_on_sigterm():
                plan = plan_restore(
                    options["environment"],
                    dump=options["dump"],
                    using=options["database"],
                    force=options["force"],
                    shared_storage=shared_storage,
                    with_media=options["media"],
                    trust=options["trust"],
                    progress=progress,
                )
                for note in plan.notes:
                    self.stderr.write(self.style.WARNING(note))
                if options["interactive"] and not self._confirmed(plan):
                    raise CommandError("Restore cancelled; the database was not changed.")
                in_background = conf.BACKGROUND if options["background"] is None else options["background"]
                with interruptions_judged():
                    choices = RestoreOptions(
                        jobs=options["jobs"],
                        use_snapshots=None if options["snapshot"] else False,
                        defer=in_background,
                        in_place=options["in_place"],
                        migrate=options["migrate"],
                    )
                    result = restore(plan, choices, progress=progress)
                    if result.followup is not None:
                        with after_swap(result.database, plan.dump_path.name, result.undo_copy, {}):
                            pid = background.finish_later(result.followup, progress)
                        result = replace(result, followup=result.followup if pid else None, background_pid=pid)
        except SeeddumpError as exc:
            raise CommandError(str(exc), returncode=getattr(exc, "exit_status", 1)) from None
        except KeyboardInterrupt:
            raise CommandError("Restore interrupted; the database was not changed.") from None
        if verbosity >= 1 and not as_json:
            source = {
                "snapshot": " from its cached snapshot" + (" (a clone)" if result.cloned else ""),
                "ready copy": " from its ready copy",
                "in place": " in place",
            }
            self.stdout.write(
                self.style.SUCCESS(
                    f"Restored {plan.dump_path.name} into '{result.database}'"
                    f"{source.get(result.source, '')}: {result.rows} rows in "
                    f"{result.tables} tables, {result.seconds:.1f}s."
                )
            )
            if result.migrated:  # before the swap, so said before what follows it
                self.stdout.write(
                    f"Applied {len(result.migrated)} migration(s) to the restored database before the swap: "
                    f"{', '.join(result.migrated)}."
                )
            for line in result.hooks:
                self.stdout.write(line)
            if result.media_root is not None and plan.metadata.media is not None:
                self.stdout.write(
                    self.style.SUCCESS(
                        f"Restored its media ({plan.metadata.media.describe()}) into {result.media_root}."
                    )
                )
            if result.cache_note:
                self.stdout.write(result.cache_note)
            if result.cost_note:
                self.stdout.write(result.cost_note)
            if result.roles_note:
                self.stderr.write(self.style.WARNING(result.roles_note))
            if result.undo_copy is not None:
                self.stdout.write(f"Undo it with: {how_to_run('restoredump --undo')} (until the next restore)")
            elif result.undo_note:
                self.stdout.write(f"The replaced database is not kept for an undo: {result.undo_note}.")
            if result.followup is not None:
                self.stdout.write(
                    f"Finishing in the background (pid {result.background_pid}): "
                    f"{', '.join(result.followup.describe())}; log: {background.log_path()}"
                )
        if result.skipped_settings:
            self.stderr.write(
                self.style.WARNING(
                    f"'{result.database}' lost {len(result.skipped_settings)} setting(s) this role may not make; "
                    f"run as a superuser: {'; '.join(result.skipped_settings)}"
                )
            )
        if failure:
            background.acknowledge_failure()  # this restore tidied up after it
        migrated = self._report_migrations(plan, options, result.migrated)
        if as_json:
            status = plan.status
            document = {
                "result": "restored",
                "database": result.database,
                "dump": str(plan.dump_path),
                "environment": plan.environment,
                "version": plan.metadata.version,
                "checksum": plan.metadata.checksum,
                "fromSnapshot": result.from_snapshot,
                "source": result.source,
                "background": None
                if result.followup is None
                else {"pid": result.background_pid, "work": result.followup.describe()},
                "hooks": list(result.hooks),
                "seconds": round(result.seconds, 3),
                "tables": result.tables,
                "rows": result.rows,
                "recordCounts": plan.metadata.record_counts,
                "missingMigrations": [f"{app}.{name}" for app, name in status.missing],
                "unknownMigrations": [f"{app}.{name}" for app, name in status.unknown],
                "migrated": migrated,
                "skippedSettings": list(result.skipped_settings),
                "undo": None if result.undo_copy is None else {"database": result.undo_copy},
                "undoNote": result.undo_note,
                "cacheNote": result.cache_note,
                "clones": result.cloned,
                "media": None
                if result.media_root is None or plan.metadata.media is None
                else {"root": str(result.media_root), **plan.metadata.media.to_json()},
            }
            self.stdout.write(json.dumps(document, indent=2))

    _NOT_WITH_UNDO = ("dump", "jobs", "in_place", "migrate", "force", "pull", "offline", "trust")

    def _undo(self, options: dict[str, Any], progress: Callable[[str], None]) -> None:
        given = [name for name in self._NOT_WITH_UNDO if options[name]]
        if not options["snapshot"]:
            given.append("no_snapshot")
        if given:
            shown = ", ".join("--" + name.replace("_", "-") for name in given)
            raise CommandError(f"--undo puts back the replaced database as it was; it does not take {shown}.")
        using = options["database"]
        try:
            # find_undo may finish an earlier run's work: SIGTERM is an interruption from here on
            with interrupt_on_sigterm():
                copy = find_undo(using)
                if options["interactive"] and not self._confirmed_undo(using, copy):
                    raise CommandError("Undo cancelled; the database was not changed.")
                with interruptions_judged():
                    result = undo_last(
                        using, environment=options["environment"], with_media=options["media"], progress=progress
                    )
        except SeeddumpError as exc:
            raise CommandError(str(exc), returncode=getattr(exc, "exit_status", 1)) from None
        except KeyboardInterrupt:
            raise CommandError("Undo interrupted; the database was not changed.") from None
        if options["json"]:
            document = {
                "result": "undone",
                "database": result.database,
                "undid": result.copy.replaced_by,
                "environment": result.copy.environment,
                "replacedAt": None if result.copy.replaced_at is None else dumpfiles.isoformat(result.copy.replaced_at),
                "seconds": round(result.seconds, 3),
                "media": None if result.media_root is None else {"root": str(result.media_root)},
                "skippedSettings": list(result.skipped_settings),
            }
            self.stdout.write(json.dumps(document, indent=2))
            return
        if options["verbosity"] >= 1:
            self.stdout.write(self.style.SUCCESS(f"Put back {result.copy.describe()}, in {result.seconds:.1f}s."))
            if result.media_root is not None:
                self.stdout.write(self.style.SUCCESS(f"Put back its media folder {result.media_root}."))
            self.stdout.write("Nothing more to undo: the undone restore's database was dropped.")
        if result.skipped_settings:
            self.stderr.write(
                self.style.WARNING(
                    f"'{result.database}' lost {len(result.skipped_settings)} setting(s) this role may not make; "
                    f"run as a superuser: {'; '.join(result.skipped_settings)}"
                )
            )

    def _confirmed_undo(self, using: str, copy: UndoCopy | None) -> bool:
        if copy is None:
            return True  # undo_last says there is nothing to undo
        self.stdout.write(
            f"This puts back {copy.describe()}"
            + (" (and its media folder)" if copy.media == "kept" else "")
            + ".\nEverything in that database now will be lost."
        )
        try:
            answer = input("Type 'yes' to continue, or 'no' to cancel: ")
        except EOFError:
            return False
        return answer.strip().lower() == "yes"

    def _report_migrations(
        self, plan: RestorePlan, options: dict[str, Any], before_swap: tuple[str, ...] | None
    ) -> bool:
        """Says how the restored database stands against the code's migrations; True if it migrated."""
        status = plan.status
        if before_swap:  # said with the restore's own lines (handle)
            return True
        if status.unknown:
            self.stderr.write(
                self.style.WARNING(
                    f"The restored database holds migrations this code does not have: {status.problems()}."
                )
            )
        if not status.missing:
            return False
        if options["migrate"]:
            # The raw streams: migrate wraps them itself and would otherwise end every line twice.
            call_command(
                "migrate",
                database=options["database"],
                interactive=False,
                verbosity=options["verbosity"],
                stdout=getattr(self.stderr if options["json"] else self.stdout, "_out", self.stdout),
                stderr=getattr(self.stderr, "_out", self.stderr),
            )
            return True
        self.stderr.write(
            self.style.WARNING(
                f"The restored database is behind the code: {status.problems()}. "
                f"Run: python manage.py migrate (or restoredump --migrate), then regenerate the dump with: "
                f"python manage.py generatedump {plan.environment}"
            )
        )
        return False

    def _confirmed(self, plan: RestorePlan) -> bool:
        metadata = plan.metadata
        self.stdout.write(
            f"This replaces the {plan.server.describe()} with {plan.dump_path.name} "
            f"(taken {metadata.timestamp:%Y-%m-%d %H:%M} UTC, {metadata.total_rows} rows)"
            + (
                f", and the media folder with the dump's {metadata.media.describe()}"
                if plan.media_archive and metadata.media
                else ""
            )
            + ".\nEverything in that database"
            + (" and folder" if plan.media_archive else "")
            + (
                f" now is kept until the next restore: {how_to_run('restoredump --undo')} puts it back."
                if conf.UNDO
                else " now will be lost."
            )
        )
        try:
            answer = input("Type 'yes' to continue, or 'no' to cancel: ")
        except EOFError:
            return False
        return answer.strip().lower() == "yes"
