"""generatedump: dump a seeded database to a versioned, checksummed file."""

from __future__ import annotations

import contextlib
import errno
import fnmatch
import json
import os
import re
import shutil
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from django.db import DatabaseError

from seeddump import driver, dumpfiles, media, postgres, records, signing, versions
from seeddump.conf import conf
from seeddump.driver import sql
from seeddump.exceptions import SeeddumpError

_MODEL_LABEL = re.compile(r"\w+\.\w+")  # app_label.ModelName (or a schema.table pattern: tried as a model first)

Progress = Callable[[str], None]

# Tables Django fills by itself (migrate, login): rows there do not make a database "seeded".
BOOKKEEPING_TABLES = frozenset(
    {
        "django_migrations",
        "django_content_type",
        "auth_permission",
        "django_session",
        "django_admin_log",
        "seeddump_dumprecord",
    }
)


@dataclass(frozen=True)
class GeneratedDump:
    path: Path
    metadata: dumpfiles.Metadata
    recorded: bool
    record_note: str | None = None  # why the admin's record was not written, when the table is there
    media_skipped: tuple[str, ...] = ()  # links and special files under MEDIA_ROOT left out of the archive
    uncommitted_migrations: tuple[str, ...] = ()  # why the version is marked -dirty (see ``versions``)

    @property
    def media_path(self) -> Path | None:
        return dumpfiles.media_path(self.path) if self.metadata.media is not None else None


def _quiet(message: str) -> None:
    pass


def _likely_size(directory: Path, environment: str) -> int | None:
    """The size of the environment's latest dump: what the next one probably needs."""
    try:
        return dumpfiles.resolve_latest(directory, environment).stat().st_size
    except (SeeddumpError, OSError):
        return None


def _out_of_space(directory: Path, file_name: str, needed: int | None) -> SeeddumpError:
    free = shutil.disk_usage(directory).free
    need = f"about {needed / 1e6:.1f} MB needed, " if needed else ""
    return SeeddumpError(
        f"The disk of {directory} is full: writing {file_name} failed ({need}{free / 1e6:.1f} MB free). Nothing "
        "was kept of this dump. Free some space (python manage.py prunedumps ENV) and run generatedump again."
    )


def _applied_migrations(conn: driver.Connection) -> list[tuple[str, str]]:
    table = postgres.project_table(conn, "django_migrations")
    if table is None:
        return []
    rows = conn.execute(sql.SQL("SELECT app, name FROM {} ORDER BY app, name").format(table)).fetchall()
    return [(str(app), str(name)) for app, name in rows]


def generate_dump(
    environment: str,
    *,
    using: str = "default",
    note: str = "",
    allow_empty: bool = False,
    with_media: bool | None = None,
    extra: Mapping[str, Any] | None = None,
    progress: Progress = _quiet,
) -> GeneratedDump:
    """Dumps the alias's database; with ``with_media`` (default: SEEDDUMP_MEDIA) MEDIA_ROOT is archived
    beside it, while pg_dump runs (see ``seeddump.media``). ``extra`` goes into the metadata as it is (signed
    with the rest)."""
    dumpfiles.validate_environment(environment)
    settings_dict = postgres.settings_for(using)
    media_root = media.media_root() if (conf.MEDIA if with_media is None else with_media) else None
    with postgres.user_errors(settings_dict):
        return _generate(environment, settings_dict, using, note, allow_empty, media_root, progress, extra or {})


def _generate(
    environment: str,
    settings_dict: Mapping[str, Any],
    using: str,
    note: str,
    allow_empty: bool,
    media_root: Path | None,
    progress: Progress,
    extra: Mapping[str, Any],
) -> GeneratedDump:
    directory = dumpfiles.ensure_directory(conf.DIR)
    for leftover in dumpfiles.remove_abandoned_partials(directory):
        progress(f"Removed {leftover.name}, left by an interrupted generatedump")
    started = time.monotonic()

    with postgres.connect(settings_dict) as conn:
        server_major = postgres.server_major(conn)
        pg_dump = postgres.find_program("pg_dump", server_major)
        progress(f"Using {pg_dump}")
        # One snapshot for the counts, the migration list and pg_dump, so the metadata describes
        # exactly the rows in the file even while other sessions write.
        conn.execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
        (snapshot,) = conn.execute("SELECT pg_export_snapshot()").fetchone()  # type: ignore[misc]
        progress("Counting rows")
        counts = postgres.count_rows(conn, lift_forced_security=False)  # as pg_dump reads them, read-only
        excluded = excluded_tables(counts, conf.EXCLUDE_TABLE_DATA)
        if excluded:
            progress(f"Leaving out the rows of {', '.join(excluded)} (SEEDDUMP_EXCLUDE_TABLE_DATA)")
            counts = {table: 0 if table in excluded else rows for table, rows in counts.items()}
        migrations = _applied_migrations(conn)
        # As pg_dump sees them: those it dumps (not the built-in ones made by initdb, plpgsql).
        extensions = tuple(
            (str(name), str(schema), str(version))
            for name, schema, version in conn.execute(
                "SELECT e.extname, n.nspname, e.extversion FROM pg_extension e "
                "JOIN pg_namespace n ON n.oid = e.extnamespace WHERE e.oid >= 16384 ORDER BY e.oid"
            ).fetchall()
        )
        seeded_rows = sum(n for table, n in counts.items() if table not in BOOKKEEPING_TABLES)
        if seeded_rows == 0 and not allow_empty:
            raise SeeddumpError(
                f"The {postgres.server_of(settings_dict).describe()} holds no data to dump. Seed it first "
                "(for example: python manage.py seed), or pass --allow-empty to dump it anyway."
            )
        version = versions.project_version(migrations)
        moment = datetime.now(timezone.utc).replace(microsecond=0)
        partial = dumpfiles.new_partial(directory, environment)
        media_partial = dumpfiles.new_partial(directory, environment) if media_root is not None else None
        published: list[Path] = []
        try:
            progress(f"Dumping {sum(counts.values())} rows of {len(counts)} tables")
            args = [
                "--format=custom",
                f"--compress={conf.DUMP_COMPRESSION}",
                f"--snapshot={snapshot}",
                f"--file={partial}",
                *(f"--exclude-table-data={_exact_pattern(table)}" for table in excluded),
            ]
            with ThreadPoolExecutor(max_workers=1, thread_name_prefix="seeddump-media") as pool:
                # The files are archived while pg_dump runs: as close to the dump's moment as files allow.
                archiving = None
                if media_root is not None and media_partial is not None:
                    progress(f"Archiving the media in {media_root}")
                    archiving = pool.submit(media.archive, media_root, media_partial, exclude=(directory,))
                try:
                    postgres.run(pg_dump, args, settings_dict, what="pg_dump")
                except SeeddumpError as exc:
                    if "No space left on device" in str(exc):
                        raise _out_of_space(directory, partial.name, _likely_size(directory, environment)) from None
                    if "out of shared memory" in str(exc):
                        raise SeeddumpError(
                            f"{str(exc).rstrip('.')}. pg_dump locks every table it dumps in one transaction: raise "
                            "max_locks_per_transaction on the server (and restart it)."
                        ) from None
                    raise
                finally:
                    archived = archiving.result() if archiving is not None else None
            conn.execute("COMMIT")
            progress("Computing the checksum")
            checksum = dumpfiles.sha256_of(partial)
            size = partial.stat().st_size
            final = dumpfiles.publish(partial, environment, version.text, moment)
            published.append(final)
            media_info = None
            if archived is not None and media_partial is not None:
                media_final = dumpfiles.media_path(final)
                media_info = dumpfiles.MediaInfo(
                    file=media_final.name,
                    size_bytes=media_partial.stat().st_size,
                    checksum=dumpfiles.sha256_of(media_partial),
                    files=archived.files,
                    bytes=archived.bytes,
                )
                os.replace(media_partial, media_final)  # the name is the new dump's own: nothing else has it
                published.append(media_final)
        except BaseException as exc:
            for leftover in [partial, *([media_partial] if media_partial else []), *published]:
                with contextlib.suppress(FileNotFoundError):
                    leftover.unlink()
            if isinstance(exc, OSError) and exc.errno == errno.ENOSPC:
                raise _out_of_space(directory, partial.name, _likely_size(directory, environment)) from None
            raise

        metadata = dumpfiles.Metadata(
            environment=environment,
            version=version.text,
            timestamp=moment,
            checksum=checksum,
            record_counts=counts,
            migrations=migrations,
            migrations_fingerprint=dumpfiles.migrations_fingerprint(migrations),
            server_version=postgres.server_version_text(conn),
            pg_dump_version=pg_dump.version,
            database=str(settings_dict.get("NAME") or ""),
            size_bytes=size,
            duration_seconds=time.monotonic() - started,
            dump_file=final.name,
            compression=conf.DUMP_COMPRESSION,
            note=note,
            media=media_info,
            excluded_table_data=tuple(excluded),
            extensions=extensions,
            extra=dict(extra),
        )
    metadata = signing.sign(metadata)
    try:
        dumpfiles.write_metadata(final, metadata)
        dumpfiles.point_latest(final, environment)
    except BaseException as exc:  # no dump may stay without its metadata
        final.unlink()
        for companion in dumpfiles.companions(final):
            companion.unlink(missing_ok=True)
        if isinstance(exc, OSError) and exc.errno == errno.ENOSPC:
            name = dumpfiles.metadata_path(final).name
            raise _out_of_space(directory, name, len(json.dumps(metadata.to_json())) + 4096) from None
        raise
    dumpfiles.remember_verified(final, checksum)  # the first restore need not hash it again
    record_note = None
    try:
        recorded = records.record_dump(using, final, metadata)
    except DatabaseError as exc:  # the dump is made and complete: its admin record is a note, not a failure
        recorded = False
        reason = postgres.first_line(str(exc))
        record_note = (
            f"The dump is made, but the admin's record of it was not written ({reason}); the next generatedump "
            "or restoredump writes it."
        )
    skipped = archived.skipped if archived is not None else ()
    return GeneratedDump(
        path=final,
        metadata=metadata,
        recorded=recorded,
        record_note=record_note,
        media_skipped=skipped,
        uncommitted_migrations=version.uncommitted,
    )


def excluded_tables(counts: Mapping[str, int], names: Sequence[str]) -> list[str]:
    """The tables of ``counts`` (recordCounts keys) that ``names`` leave out: a Django model label
    (``app_label.ModelName``) names its table; anything else is a shell-style pattern matched against the key
    (``schema.table``, bare in public) and, for public tables, against ``public.table`` too. A name that is
    neither a known model nor matches a table is a SeeddumpError: a typo would otherwise dump the rows."""
    from django.apps import apps

    excluded: set[str] = set()
    for name in names:
        matched: set[str] = set()
        if _MODEL_LABEL.fullmatch(name):
            try:
                model = apps.get_model(name)
            except (LookupError, ValueError):
                model = None
            if model is not None:
                matched = {table for table in counts if table.rsplit(".", 1)[-1] == model._meta.db_table}
        if not matched:
            matched = {
                table
                for table in counts
                if fnmatch.fnmatchcase(table, name)
                or ("." not in table and fnmatch.fnmatchcase(f"public.{table}", name))
            }
        if not matched:
            raise SeeddumpError(
                f"SEEDDUMP_EXCLUDE_TABLE_DATA names {name!r}, which is no model of this project and matches no table "
                "of the database. Fix or remove it."
            )
        excluded |= matched
    return sorted(excluded)


def _exact_pattern(table: str) -> str:
    """pg_dump's pattern for exactly this recordCounts key: double-quoted, so that nothing in it is a wildcard."""
    schema, _, name = table.rpartition(".")
    quoted = '"' + (name or table).replace('"', '""') + '"'
    return f'"{(schema or "public").replace(chr(34), chr(34) * 2)}".{quoted}'
