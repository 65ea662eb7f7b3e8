"""The PostgreSQL driver of seeddump's own connections: the one Django's PostgreSQL backend uses.

Django takes psycopg (3) when it can be imported, else psycopg2 (``django.db.backends.postgresql.psycopg_any``);
seeddump does the same, so that installing it never changes a project's driver: a project on psycopg2 stays on
psycopg2 (psycopg 3 is the optional extra ``seeddump[psycopg]``).

Everything seeddump needs of a connection is psycopg 3's API: ``connect`` gives an autocommit connection with
``execute`` (returning the cursor), ``transaction()`` (savepoints when nested, ``force_rollback``), ``info``
(``dbname``, ``user``, ``server_version``), ``pgconn.encrypt_password`` and closing on leaving a ``with``
block; ``copy_from`` sends COPY text data. ``Error``, ``OperationalError``, ``errors`` (one class per
SQLSTATE, same names in both), ``sql`` and ``Json`` come from the driver in use. Under psycopg2 the
connection is psycopg2's own class (``sql`` renders against it), given those methods in ``seeddump._psycopg2``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

try:  # as Django's backend decides
    import psycopg

    PSYCOPG3 = True
except ImportError:
    PSYCOPG3 = False

if TYPE_CHECKING or PSYCOPG3:
    import psycopg
    from psycopg import Error, OperationalError, errors, sql
    from psycopg.types.json import Jsonb as Json

    NAME = "psycopg"

    class Connection(psycopg.Connection[Any]):
        """psycopg's connection, knowing the schemas the project's own sessions search
        (``postgres.project_table``)."""

        project_schemas: tuple[str, ...] = ("public",)

    def connect(**kwargs: Any) -> Connection:
        """An autocommit connection with libpq's keywords."""
        return Connection.connect(**kwargs, autocommit=True)

    def copy_from(conn: Connection, statement: sql.Composed, data: str) -> None:
        """Runs ``COPY ... FROM STDIN`` with ``data`` in COPY's text format."""
        with conn.cursor().copy(statement) as copy:
            copy.write(data)

else:  # pragma: no cover - run by tests/test_psycopg2.py, with psycopg 3 hidden
    from seeddump._psycopg2 import (  # type: ignore[assignment]
        Connection,
        Error,
        Json,
        OperationalError,
        connect,
        copy_from,
        errors,
        sql,
    )

    NAME = "psycopg2"

__all__ = [
    "NAME",
    "PSYCOPG3",
    "Connection",
    "Error",
    "Json",
    "OperationalError",
    "connect",
    "copy_from",
    "errors",
    "sql",
]
