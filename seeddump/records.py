"""Keeps the DumpRecord table (what the admin lists) in step with the dumps on disk."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import psycopg
from django.apps import apps
from django.db import connections, transaction
from psycopg import sql

from seeddump import dumpfiles, postgres
from seeddump.exceptions import SeeddumpError

if TYPE_CHECKING:
    from seeddump.models import DumpRecord


def _model() -> type[DumpRecord] | None:
    """The records' model, or None when seeddump is not in INSTALLED_APPS (a test settings module, say):
    restores and the pytest plugin work without the admin's records."""
    if not apps.is_installed("seeddump"):
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
    model = _model()
    if model is None:
        return {}
    table = model._meta.db_table
    try:
        with postgres.connect(settings_dict, database) as conn:
            conn.execute("SET row_security = off")
            kind = conn.execute("SELECT relkind FROM pg_class WHERE oid = to_regclass(%s)", (f'"{table}"',)).fetchone()
            if kind is None or kind[0] != "r":
                return {}
            rows = conn.execute(
                sql.SQL("SELECT file_name, last_restored_at FROM {} WHERE last_restored_at IS NOT NULL").format(
                    sql.Identifier(table)
                )
            ).fetchall()
    except (psycopg.Error, SeeddumpError):
        return {}
    return {name: when for name, when in rows if isinstance(name, str) and isinstance(when, datetime)}


def sync_from_disk(using: str, directory: Path, restore_times: Mapping[str, datetime]) -> int:
    """Records every dump in ``directory`` whose metadata can be read, with the given restore times.

    Records of dumps that are no longer on disk are kept: the admin shows them as gone.
    Returns how many dumps were recorded.
    """
    if not table_exists(using):
        return 0
    model = _model()
    assert model is not None
    recorded = 0
    for dump_path in dumpfiles.list_dumps(directory):
        try:
            metadata = dumpfiles.read_metadata(dump_path)
        except SeeddumpError:
            continue  # a dump whose metadata is broken cannot be described; restoredump refuses it anyway
        fields = _fields(metadata)
        restored_at = restore_times.get(dump_path.name)
        if restored_at is not None:
            fields["last_restored_at"] = restored_at
        with _writing(using):
            model.objects.using(using).update_or_create(file_name=dump_path.name, defaults=fields)
        recorded += 1
    return recorded
