from __future__ import annotations

import argparse
import json
from typing import Any

from django.core.checks import Tags
from django.core.management.base import CommandError, CommandParser
from django.db import DEFAULT_DB_ALIAS

from seeddump import dumpfiles, shared
from seeddump.dumps import generate_dump
from seeddump.exceptions import SeeddumpError
from seeddump.management.progress import SeeddumpCommand, progress_writer


class Command(SeeddumpCommand):
    version_programs = True  # --version names the pg_dump and pg_restore it would choose from
    # Fast commands that check what they need themselves; `check` and `migrate` report stale dumps.
    requires_system_checks = [Tags.compatibility]  # seeddump.E001: an older Django, said in one line
    help = "Dumps the seeded database to a versioned, checksummed file in SEEDDUMP_DIR and points 'latest' at it."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("environment", help="Environment the dump is for, such as dev or staging.")
        parser.add_argument(
            "--database", default=DEFAULT_DB_ALIAS, help="Database alias to dump. Defaults to 'default'."
        )
        parser.add_argument("--note", default="", help="A note stored in the dump's metadata.")
        parser.add_argument("--allow-empty", action="store_true", help="Dump even when the database holds no data.")
        parser.add_argument(
            "--media",
            action=argparse.BooleanOptionalAction,
            default=None,
            help="Archive MEDIA_ROOT beside the dump (default: the SEEDDUMP_MEDIA setting, else off).",
        )
        parser.add_argument("--push", action="store_true", help="Upload the dump to the shared storage too.")
        parser.add_argument("--json", action="store_true", help="Print one JSON document with what was done.")

    def handle(self, *args: Any, **options: Any) -> None:
        verbosity, as_json = options["verbosity"], options["json"]
        progress = progress_writer(self, verbosity, to_stderr=as_json)
        try:
            result = generate_dump(
                options["environment"],
                using=options["database"],
                note=options["note"],
                allow_empty=options["allow_empty"],
                with_media=options["media"],
                progress=progress,
            )
            pushed = shared.push(result.path, progress) if options["push"] else []
        except SeeddumpError as exc:
            raise CommandError(str(exc)) from None
        metadata = result.metadata
        if result.record_note:
            self.stderr.write(self.style.WARNING(result.record_note))
        elif not result.recorded:
            self.stderr.write(
                self.style.WARNING(
                    "seeddump's table is not migrated in this database, so the admin will not list this dump. "
                    "Run: python manage.py migrate"
                )
            )
        if metadata.media is not None and metadata.media.files == 0:
            self.stderr.write(
                self.style.WARNING("MEDIA_ROOT holds no files (or does not exist): the dump's media archive is empty.")
            )
        if result.media_skipped:
            shown = ", ".join(result.media_skipped[:3]) + (" …" if len(result.media_skipped) > 3 else "")
            self.stderr.write(
                self.style.WARNING(
                    f"Left {len(result.media_skipped)} link(s) or special file(s) in MEDIA_ROOT out of the media "
                    f"archive ({shown}): only plain files and folders travel with a dump."
                )
            )
        if result.uncommitted_migrations:
            uncommitted = result.uncommitted_migrations
            shown = ", ".join(uncommitted[:3]) + (f" and {len(uncommitted) - 3} more" if len(uncommitted) > 3 else "")
            self.stderr.write(
                self.style.WARNING(
                    f"The database has migrations whose files are not committed ({shown}): the dump's version "
                    f"is {metadata.version}, so that it is never taken for a dump of the committed code."
                )
            )
        if as_json:
            document = {
                "path": str(result.path),
                "metadataPath": str(dumpfiles.metadata_path(result.path)),
                "mediaPath": str(result.media_path) if result.media_path else None,
                "pushed": pushed,
                **metadata.to_json(),
            }
            self.stdout.write(json.dumps(document, indent=2))
            return
        if verbosity >= 1:
            self.stdout.write(
                self.style.SUCCESS(
                    f"Dumped {metadata.total_rows} rows of {len(metadata.record_counts)} tables "
                    f"({metadata.size_bytes / 1e6:.1f} MB) in {metadata.duration_seconds:.1f}s"
                    + (
                        f", with {metadata.media.describe()} of media "
                        f"({dumpfiles.human_size(metadata.media.size_bytes)} archived)"
                        if metadata.media is not None
                        else ""
                    )
                    + (" and pushed it to the shared storage" if pushed else "")
                    + ":"
                )
            )
        self.stdout.write(str(result.path))
