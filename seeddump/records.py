"""Keeps the DumpRecord table (what the admin lists) in step with the dumps on disk.

What a restore writes and reads here is plain SQL on a table of known name: finishing a restore needs none
of Django's apps (``python -m seeddump restore`` and the background process run without them). generatedump
and the admin use the model."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from django.apps import apps
from django.conf import settings
from django.db import connections, transaction

from seeddump import driver, dumpfiles, postgres
from seeddump.driver import sql
from seeddump.exceptions import SeeddumpError

if TYPE_CHECKING:
    from seeddump.models import DumpRecord

TABLE = "seeddump_dumprecord"  # DumpRecord's table, known without loading the model


def installed() -> bool:
    """Whether these settings install seeddump's app (and so its records), told from the settings alone when
    Django's apps are not loaded (NetBox installs it as a plugin)."""
    if apps.ready:
        return apps.is_installed("seeddump")
    entries = [*settings.INSTALLED_APPS, *getattr(settings, "PLUGINS", ())]
    return any(entry == "seeddump" or str(entry).startswith("seeddump.") for entry in entries)


def _model() -> type[DumpRecord] | None:
    """The records' model, or None when seeddump is not in INSTALLED_APPS (a test settings module, say):
    restores and the pytest plugin work without the admin's records."""
    if not installed():
        return None
    from seeddump.models import DumpRecord

    return DumpRecord


def table_exists(using: str) -> bool:
    model = _model()
    if model is None:
        return False
    connection = connections[using]
    with connection.cursor() as cursor:
        return model._meta.db_table in connection.introspection.table_names(cursor)


def _fields(metadata: dumpfiles.Metadata) -> dict[str, object]:
    return {
        "environment": metadata.environment,
        "version": metadata.version,
        "created_at": metadata.timestamp,
        "size_bytes": metadata.size_bytes,
        "checksum": metadata.checksum,
        "record_counts": metadata.record_counts,
        "total_records": metadata.total_rows,
        "migrations_fingerprint": metadata.migrations_fingerprint,
        "note": metadata.note,
        "metadata": metadata.to_json(),
    }


@contextlib.contextmanager
def _writing(using: str) -> Iterator[None]:
    """A transaction on the project's connection that the role's own timeouts do not end: an app role with
    ``idle_in_transaction_session_timeout`` of a few milliseconds would otherwise lose the session between
    update_or_create's SELECT … FOR UPDATE and its INSERT (the pause is Python's, not the server's)."""
    with transaction.atomic(using=using), connections[using].cursor() as cursor:
        cursor.execute("SET LOCAL idle_in_transaction_session_timeout = 0")
        cursor.execute("SET LOCAL statement_timeout = 0")
        yield


def record_dump(using: str, dump_path: Path, metadata: dumpfiles.Metadata) -> bool:
    """Adds or refreshes the record of one dump. False when seeddump's table is not migrated there."""
    if not table_exists(using):
        return False
    model = _model()
    assert model is not None
    with _writing(using):
        model.objects.using(using).update_or_create(file_name=dump_path.name, defaults=_fields(metadata))
    return True


def restore_times(settings_dict: Mapping[str, Any], database: str) -> dict[str, datetime]:
    """When each dump was last restored, as ``database`` knows it (empty when it cannot tell).

    Read with plain SQL that runs none of the database's code, which may be a restored dump's: only from a
    real table of that name (not a view), with row-level security off (a policy is never evaluated)."""
    if not installed():
        return {}
    try:
        with postgres.connect(settings_dict, database) as conn:
            conn.execute("SET row_security = off")
            table = postgres.project_table(conn, TABLE)
            if table is None:
                return {}
            rows = conn.execute(
                sql.SQL("SELECT file_name, last_restored_at FROM {} WHERE last_restored_at IS NOT NULL").format(table)
            ).fetchall()
    except (driver.Error, SeeddumpError):
        return {}
    return {name: when for name, when in rows if isinstance(name, str) and isinstance(when, datetime)}


_COLUMNS = (
    "environment",
    "version",
    "created_at",
    "size_bytes",
    "checksum",
    "record_counts",
    "total_records",
    "migrations_fingerprint",
    "note",
    "metadata",
)


def _upsert(table: sql.Composable) -> sql.Composed:
    return sql.SQL(
        "INSERT INTO {table} AS existing (file_name, {columns}, last_restored_at) VALUES (%s, {values}, %s) "
        "ON CONFLICT (file_name) DO UPDATE SET {updates}, "
        "last_restored_at = COALESCE(EXCLUDED.last_restored_at, existing.last_restored_at)"
    ).format(
        table=table,
        columns=sql.SQL(", ").join(map(sql.Identifier, _COLUMNS)),
        values=sql.SQL(", ").join(sql.Placeholder() * len(_COLUMNS)),
        updates=sql.SQL(", ").join(sql.SQL("{0} = EXCLUDED.{0}").format(sql.Identifier(name)) for name in _COLUMNS),
    )


def sync_from_disk(
    settings_dict: Mapping[str, Any], database: str, directory: Path, restore_times: Mapping[str, datetime]
) -> int:
    """Records every dump in ``directory`` whose metadata can be read into ``database``, with the given restore
    times, logged in with ``settings_dict`` (a restore's sandbox login: a trigger there runs as the owner at
    most). Plain SQL, in one transaction: no model, so no Django apps to load after a restore.

    Records of dumps that are no longer on disk are kept: the admin shows them as gone. Returns how many dumps
    were recorded; 0 when ``database`` has no table of records (a real table: never a view)."""
    if not installed():
        return 0
    rows = []
    for dump_path in dumpfiles.list_dumps(directory):
        try:
            metadata = dumpfiles.read_metadata(dump_path)
        except SeeddumpError:
            continue  # a dump whose metadata is broken cannot be described; restoredump refuses it anyway
        fields = _fields(metadata)
        values = [
            driver.Json(fields[name]) if name in ("record_counts", "metadata") else fields[name] for name in _COLUMNS
        ]
        rows.append((dump_path.name, *values, restore_times.get(dump_path.name)))
    with postgres.connect(settings_dict, database) as conn, conn.transaction():
        conn.execute("SET LOCAL row_security = off")  # a policy is never evaluated: a write it governs fails
        conn.execute("SET LOCAL idle_in_transaction_session_timeout = 0")
        conn.execute("SET LOCAL statement_timeout = 0")
        table = postgres.project_table(conn, TABLE)
        if table is None:
            return 0
        with conn.cursor() as cursor:
            cursor.executemany(_upsert(table), rows)
    return len(rows)
