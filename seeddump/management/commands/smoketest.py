from __future__ import annotations

import json
from pathlib import Path
from typing import Any, TextIO

from django.core.checks import Tags
from django.core.management.base import CommandError, CommandParser
from django.db import DEFAULT_DB_ALIAS

from seeddump import dumpfiles
from seeddump.conf import conf
from seeddump.exceptions import SeeddumpError
from seeddump.management.progress import SeeddumpCommand
from seeddump.restore import interrupt_on_sigterm
from seeddump.smoke import FAIL, NOTE, PASS, SKIP, CheckResult, SmokeTest


class Command(SeeddumpCommand):
    version_programs = True  # --version names the pg_dump and pg_restore it would choose from
    help = (
        "Checks the whole stack end to end in a database of its own: PostgreSQL programs, a restore of the "
        "latest dump, its row counts, migrations, a running web server, its API and pages."
    )
    requires_system_checks = [Tags.compatibility]  # seeddump.E001: an older Django, said in one line

    def add_arguments(self, parser: CommandParser) -> None:
        # ENV positionally as the other commands take it; --env as before.
        parser.add_argument(
            "environment", nargs="?", default=None, help="Environment of the dump, such as dev. Default: dev."
        )
        parser.add_argument("--env", default=None, dest="env_option", metavar="ENV", help="The same as ENV.")
        parser.add_argument("--database", default=DEFAULT_DB_ALIAS, help="Database alias. Default: 'default'.")
        parser.add_argument(
            "--overwrite",
            action="store_true",
            help="Restore over the configured database itself (its data is replaced) instead of a database "
            "of the smoke test's own beside it.",
        )
        parser.add_argument(
            "--trust",
            action="store_true",
            help="Run the dump's code as the connecting role where no throwaway member of the owner can log in "
            "(as restoredump --trust).",
        )
        parser.add_argument(
            "--keep-database", action="store_true", help="Keep the smoke test's database afterwards, to look at it."
        )
        parser.add_argument(
            "--skip-dump-restore", action="store_true", help="Test the configured database as it is, no restore."
        )
        parser.add_argument("--skip-frontend", action="store_true", help="Do not fetch the HTML pages.")
        parser.add_argument("--json", action="store_true", help="Print one JSON document instead of lines.")
        parser.add_argument(
            "--log-file", default=None, help="Detailed log. Default: smoketest.log in the dumps folder (SEEDDUMP_DIR)."
        )

    def handle(self, *args: Any, **options: Any) -> None:
        as_json, verbosity = options["json"], options["verbosity"]
        given, option = options["environment"], options.pop("env_option")
        if given and option and given != option:
            raise CommandError(f"Two environments given ({given} and --env {option}): pass one.")
        options["environment"] = given or option or "dev"
        if options["overwrite"] and options["skip_dump_restore"]:
            raise CommandError("--overwrite restores the dump; --skip-dump-restore does not. Pass one of them.")
        try:
            if options["log_file"]:
                log_path = Path(options["log_file"]).absolute()
            else:
                log_path = dumpfiles.ensure_directory(conf.DIR) / "smoketest.log"
            log_file: TextIO = dumpfiles.open_own(log_path, append=False)
        except SeeddumpError as exc:
            raise CommandError(f"Cannot write the log file: {exc}") from None

        def log(line: str) -> None:
            log_file.write(line.rstrip("\n") + "\n")
            log_file.flush()

        def report(result: CheckResult) -> None:
            if not as_json and verbosity >= 1:
                self.stdout.write(self._line(result))

        smoke = SmokeTest(
            options["environment"],
            using=options["database"],
            skip_dump_restore=options["skip_dump_restore"],
            skip_frontend=options["skip_frontend"],
            overwrite=options["overwrite"],
            keep_database=options["keep_database"],
            trust=options["trust"],
            report=report,
            log=log,
        )
        try:
            with interrupt_on_sigterm():
                result = smoke.run()
        except KeyboardInterrupt:
            raise CommandError(f"Smoke test interrupted. Details in {log_path}") from None
        finally:
            log_file.close()
        result.log_file = str(log_path)

        if as_json:
            self.stdout.write(json.dumps(result.to_json(), indent=2))
        elif verbosity >= 1:
            summary = (
                f"{result.count(PASS)} passed, {result.count(FAIL)} failed, {result.count(SKIP)} skipped"
                + (f", {result.count(NOTE)} notes" if result.count(NOTE) else "")
                + f" in {result.seconds:.1f}s. Log: {log_path}"
            )
            style = self.style.SUCCESS if result.passed else self.style.ERROR
            self.stdout.write(style(("Smoke test passed: " if result.passed else "Smoke test FAILED: ") + summary))
        if not result.passed:
            first = result.failures()[0]
            raise CommandError(
                f"Smoke test failed: {len(result.failures())} check(s) failed, first {first.phase}: {first.name}: "
                f"{first.detail} Details in {log_path}"
            )

    def _line(self, result: CheckResult) -> str:
        styles = {PASS: self.style.SUCCESS, FAIL: self.style.ERROR, SKIP: self.style.WARNING, NOTE: self.style.NOTICE}
        tag = styles[result.status](f"{result.status.upper():4}")
        detail = f" — {result.detail}" if result.detail else ""
        return f"  {tag}  {result.phase}: {result.name} ({result.seconds:.2f}s){detail}"
