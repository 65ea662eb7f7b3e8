"""seeddump: versioned pg_dump snapshots of a seeded Django database."""

__version__ = "0.1.0"
