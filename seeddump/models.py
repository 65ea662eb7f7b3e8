from __future__ import annotations

from pathlib import Path

from django.db import models

from seeddump.conf import conf


class DumpRecord(models.Model):
    """One dump file and its metadata, as the admin lists it.

    The file on disk is the source of truth; a record is rebuilt from its metadata after every
    generatedump and restoredump, so the list survives restoring a database that predates a dump.
    """

    file_name = models.CharField(max_length=255, unique=True)
    environment = models.CharField(max_length=32, db_index=True)
    version = models.CharField(max_length=40)
    created_at = models.DateTimeField(help_text="When the dump was taken (UTC).")
    size_bytes = models.BigIntegerField()
    checksum = models.CharField(max_length=71)
    record_counts = models.JSONField(default=dict)
    total_records = models.BigIntegerField(default=0)
    migrations_fingerprint = models.CharField(max_length=64, blank=True)
    note = models.TextField(blank=True)
    metadata = models.JSONField(default=dict)
    last_restored_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at", "-file_name"]
        verbose_name = "dump"

    def __str__(self) -> str:
        return self.file_name

    @property
    def path(self) -> Path | None:
        """The dump file in SEEDDUMP_DIR, if the record names one: records travel inside dumps, so the name
        is checked to be a dump's before anything touches a file because of it."""
        from seeddump.dumpfiles import dump_in

        return dump_in(conf.DIR, self.file_name)

    def on_disk(self) -> bool:
        return self.path is not None

    def media_summary(self) -> tuple[int, int, int] | None:
        """(files, bytes unpacked, archive bytes) of the dump's media, or None when it has none."""
        fields = self.metadata.get("media") if isinstance(self.metadata, dict) else None
        if not isinstance(fields, dict):
            return None
        values = [fields.get(name) for name in ("files", "bytes", "sizeBytes")]
        if not all(isinstance(value, int) and not isinstance(value, bool) for value in values):
            return None
        return values[0], values[1], values[2]  # type: ignore[return-value]

    def applied_migrations(self) -> list[tuple[str, str]] | None:
        """The migrations in the dump, or None when the stored metadata does not say."""
        from seeddump.dumpfiles import ungroup_migrations

        grouped = self.metadata.get("migrations") if isinstance(self.metadata, dict) else None
        if not isinstance(grouped, dict):
            return None
        try:
            return ungroup_migrations(grouped)
        except (TypeError, ValueError):
            return None
