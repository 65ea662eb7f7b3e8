"""psycopg 3's API, as ``seeddump.driver`` describes it, on psycopg2 (for a project whose driver is psycopg2).

The connection is psycopg2's own class with psycopg 3's methods added (``psycopg2.sql`` renders only against
psycopg2's connections), its cursors return themselves from ``execute``, and it is closed on leaving a ``with``
block (psycopg2 only ends the transaction there)."""

from __future__ import annotations

import contextlib
import io
from collections.abc import Iterator
from typing import Any

try:
    import psycopg2
    import psycopg2.errors as errors
    import psycopg2.extensions
    import psycopg2.sql as sql
    from psycopg2 import Error, OperationalError
    from psycopg2.extras import Json
except ImportError:  # neither driver: Django's PostgreSQL backend cannot run either
    raise ImportError(
        "seeddump needs a PostgreSQL driver: psycopg (pip install 'seeddump[psycopg]') or psycopg2."
    ) from None

__all__ = ["Connection", "Error", "Json", "OperationalError", "connect", "copy_from", "errors", "sql"]


class Cursor(psycopg2.extensions.cursor):
    def execute(self, query: Any, params: Any = None) -> Cursor:  # type: ignore[override]
        super().execute(query, params)
        return self


class _PgConn:
    def __init__(self, conn: Connection) -> None:
        self._conn = conn

    def encrypt_password(self, password: bytes, user: bytes, algorithm: bytes | None = None) -> bytes:
        method = algorithm.decode() if algorithm else None
        encrypted = psycopg2.extensions.encrypt_password(password.decode(), user.decode(), self._conn, method)
        return str(encrypted).encode()


class Connection(psycopg2.extensions.connection):
    project_schemas: tuple[str, ...] = ("public",)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.cursor_factory = Cursor
        self._depth = 0

    def execute(self, query: Any, params: Any = None) -> Cursor:
        cursor = self.cursor()
        return cursor.execute(query, params)  # type: ignore[no-any-return]

    @property
    def pgconn(self) -> _PgConn:
        return _PgConn(self)

    @contextlib.contextmanager
    def transaction(self, force_rollback: bool = False) -> Iterator[Connection]:
        """BEGIN ... COMMIT on this autocommit connection, a savepoint inside a transaction (a nested one, or one
        begun with an explicit BEGIN, as psycopg 3 does); rolled back on an exception or with ``force_rollback``."""
        depth = self._depth
        outer = self.get_transaction_status() == psycopg2.extensions.TRANSACTION_STATUS_IDLE
        savepoint = f"seeddump_savepoint_{depth}"

        def undo() -> None:
            self.execute("ROLLBACK" if outer else f"ROLLBACK TO SAVEPOINT {savepoint}")
            if not outer:
                self.execute(f"RELEASE SAVEPOINT {savepoint}")

        self.execute("BEGIN" if outer else f"SAVEPOINT {savepoint}")
        self._depth += 1
        try:
            yield self
        except BaseException:
            self._depth = depth
            if not self.closed:
                undo()
            raise
        self._depth = depth
        if force_rollback:
            undo()
        else:
            self.execute("COMMIT" if outer else f"RELEASE SAVEPOINT {savepoint}")

    def __enter__(self) -> Connection:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def connect(**kwargs: Any) -> Connection:
    """An autocommit connection with libpq's keywords."""
    conn = psycopg2.connect(connection_factory=Connection, **kwargs)
    conn.autocommit = True
    return conn  # type: ignore[no-any-return]


def copy_from(conn: Connection, statement: Any, data: str) -> None:
    """Runs ``COPY ... FROM STDIN`` with ``data`` in COPY's text format."""
    with conn.cursor() as cursor:
        cursor.copy_expert(statement, io.StringIO(data))
