from __future__ import annotations

from django.contrib import admin
from django.db.models import QuerySet
from django.http import HttpRequest
from django.utils.html import format_html, format_html_join

from seeddump.models import DumpRecord
from seeddump.staleness import code_migrations_cached


def _schema_state(record: DumpRecord) -> tuple[bool, str]:
    """(stale, description) of a dump against the code's migrations."""
    applied = record.applied_migrations()
    if applied is None:
        return True, "unknown (unreadable metadata)"
    missing, unknown = code_migrations_cached().compare(applied)
    parts = []
    if missing:
        parts.append(f"{len(missing)} behind")
    if unknown:
        parts.append(f"{len(unknown)} unknown")
    return bool(parts), ", ".join(parts) or "current"


class StaleFilter(admin.SimpleListFilter):
    title = "schema"
    parameter_name = "schema"

    def lookups(self, request: HttpRequest, model_admin: admin.ModelAdmin) -> list[tuple[str, str]]:
        return [("stale", "Stale"), ("current", "Current")]

    def queryset(self, request: HttpRequest, queryset: QuerySet) -> QuerySet:
        if self.value() not in ("stale", "current"):
            return queryset
        wanted = self.value() == "stale"
        # Staleness depends on the code, not on a column: decide per record (dumps are few).
        ids = [record.pk for record in queryset if _schema_state(record)[0] == wanted]
        return queryset.filter(pk__in=ids)


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
        "schema",
        "on_disk",
        "last_restored_at",
    ]
    list_filter = ["environment", StaleFilter]
    search_fields = ["file_name", "version", "note"]
    date_hierarchy = "created_at"
    fields = [
        "file_name",
        "environment",
        "version",
        "created_at",
        "size",
        "checksum",
        "schema",
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

    @admin.display(description="schema")
    def schema(self, record: DumpRecord):
        stale, description = _schema_state(record)
        css = "color: var(--error-fg, #ba2121)" if stale else "color: var(--message-success-fg, #447e36)"
        return format_html('<span style="{}">{}</span>', css, ("stale: " if stale else "") + description)

    @admin.display(description="on disk", boolean=True)
    def on_disk(self, record: DumpRecord) -> bool:
        return record.on_disk()

    @admin.display(description="rows per table")
    def per_table_counts(self, record: DumpRecord):
        return _counts_table(record.record_counts)
