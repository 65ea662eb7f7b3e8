from __future__ import annotations

from django.contrib import admin
from django.http import HttpRequest
from django.utils.html import format_html, format_html_join

from seeddump.models import DumpRecord


def _counts_table(counts: dict[str, int]):
    rows = format_html_join("", "<tr><td>{}</td><td style='text-align:right'>{}</td></tr>", sorted(counts.items()))
    return format_html("<table>{}</table>", rows)


@admin.register(DumpRecord)
class DumpRecordAdmin(admin.ModelAdmin):
    """Dumps are made by generatedump and described by their metadata: the admin only shows them."""

    list_display = [
        "file_name",
        "environment",
        "version",
        "created_at",
        "size",
        "rows",
        "short_checksum",
        "on_disk",
        "last_restored_at",
    ]
    list_filter = ["environment"]
    search_fields = ["file_name", "version", "note"]
    date_hierarchy = "created_at"
    fields = [
        "file_name",
        "environment",
        "version",
        "created_at",
        "size",
        "checksum",
        "on_disk",
        "last_restored_at",
        "note",
        "migrations_fingerprint",
        "per_table_counts",
    ]
    readonly_fields = fields

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: DumpRecord | None = None) -> bool:
        return False

    @admin.display(description="size", ordering="size_bytes")
    def size(self, record: DumpRecord) -> str:
        return f"{record.size_bytes / 1e6:.1f} MB"

    @admin.display(description="rows", ordering="total_records")
    def rows(self, record: DumpRecord):
        summary = f"{record.total_records:,} in {len(record.record_counts)} tables"
        return format_html("<details><summary>{}</summary>{}</details>", summary, _counts_table(record.record_counts))

    @admin.display(description="checksum")
    def short_checksum(self, record: DumpRecord) -> str:
        return record.checksum.removeprefix("sha256:")[:12]

    @admin.display(description="on disk", boolean=True)
    def on_disk(self, record: DumpRecord) -> bool:
        return record.on_disk()

    @admin.display(description="rows per table")
    def per_table_counts(self, record: DumpRecord):
        return _counts_table(record.record_counts)
