"""Every row of a project's tables, read the same way by the tests and by the projects' own seeded pytest tests:
{table: rows ordered by primary key}, geometries as EWKB (their SRID included), every value as text."""

from __future__ import annotations

from typing import Any

# Not the project's data: PostGIS's own table, and the admin's records of dumps, which each restore writes.
SKIPPED = {"spatial_ref_sys", "seeddump_dumprecord"}


def read(cursor: Any) -> dict[str, list[list[str | None]]]:
    """Takes a DB-API cursor (psycopg's or Django's) on the database to read."""
    cursor.execute(
        """
        SELECT c.relname,
               array_agg(a.attname::text ORDER BY a.attnum),
               array_agg(format_type(a.atttypid, a.atttypmod) ORDER BY a.attnum),
               coalesce((SELECT array_agg(k.attname::text ORDER BY array_position(i.indkey::int2[], k.attnum))
                         FROM pg_index i JOIN pg_attribute k ON k.attrelid = i.indrelid AND k.attnum = ANY(i.indkey)
                         WHERE i.indrelid = c.oid AND i.indisprimary), '{}')
        FROM pg_class c
        JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped
        WHERE c.relnamespace = 'public'::regnamespace AND c.relkind IN ('r', 'p')
        GROUP BY c.oid, c.relname
        ORDER BY c.relname
        """
    )
    tables = cursor.fetchall()
    found: dict[str, list[list[str | None]]] = {}
    for table, columns, types, keys in tables:
        if table in SKIPPED:
            continue
        values = [
            f"encode(public.ST_AsEWKB(\"{column}\"), 'hex')" if kind.startswith("geometry") else f'"{column}"::text'
            for column, kind in zip(columns, types, strict=True)
        ]
        order = ", ".join(f'"{key}"' for key in keys) or ", ".join(str(n + 1) for n in range(len(columns)))
        cursor.execute(f'SELECT {", ".join(values)} FROM public."{table}" ORDER BY {order}')
        found[table] = [list(row) for row in cursor.fetchall()]
    return found


def counts(contents: dict[str, list[list[str | None]]]) -> dict[str, int]:
    return {table: len(rows) for table, rows in contents.items()}
