from __future__ import annotations

import json
from collections.abc import Collection
from typing import Any

from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponse
from django.template.response import TemplateResponse
from django.utils.html import format_html, format_html_join

from seeddump import dumpfiles, media
from seeddump.conf import conf
from seeddump.exceptions import SeeddumpError
from seeddump.models import DumpRecord
from seeddump.staleness import code_migrations_cached, code_migrations_loaded_once


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


def _left_out(record: DumpRecord) -> set[str]:
    """The tables whose rows the dump left out on purpose (SEEDDUMP_EXCLUDE_TABLE_DATA)."""
    tables = record.metadata.get("excludedTableData") if isinstance(record.metadata, dict) else None
    return {str(table) for table in tables} if isinstance(tables, list) else set()


def _counts_table(counts: dict[str, int], left_out: Collection[str] = ()):
    shown = [(table, "left out" if table in left_out else count) for table, count in sorted(counts.items())]
    rows = format_html_join("", "<tr><td>{}</td><td style='text-align:right'>{}</td></tr>", shown)
    return format_html("<table>{}</table>", rows)


# What the detail page shows, all read-only: dumps are made by generatedump, not edited here.
_SHOWN = (
    "file_name",
    "environment",
    "version",
    "created_at",
    "size",
    "media_files",
    "checksum",
    "schema",
    "on_disk",
    "last_restored_at",
    "note",
    "migrations_fingerprint",
    "per_table_counts",
    "metadata_json",
)


def _rendered(response: HttpResponse) -> HttpResponse:
    """Renders a template response now, while the migrations loaded for this page are at hand."""
    if isinstance(response, TemplateResponse):
        response.render()
    return response


@admin.register(DumpRecord)
class DumpRecordAdmin(admin.ModelAdmin):
    """Dumps are made by generatedump and described by their metadata: the admin only shows them."""

    # Few, narrow columns: beside a real project's app sidebar at 1600 px, eleven scrolled off. The version
    # is in the file name, the checksum on the detail page.
    list_display = ["file_name", "environment", "created_at", "size", "rows", "schema", "file", "last_restored_at"]
    actions = ["verify_checksums", "delete_with_files"]
    list_filter = ["environment", StaleFilter]
    search_fields = ["file_name", "version", "note"]
    date_hierarchy = "created_at"
    fields = _SHOWN
    readonly_fields = _SHOWN

    def changelist_view(self, request: HttpRequest, extra_context: dict[str, Any] | None = None) -> HttpResponse:
        with code_migrations_loaded_once():  # once per page; the columns are computed while rendering
            return _rendered(super().changelist_view(request, extra_context))

    def change_view(
        self, request: HttpRequest, object_id: str, form_url: str = "", extra_context: dict[str, Any] | None = None
    ) -> HttpResponse:
        with code_migrations_loaded_once():
            return _rendered(super().change_view(request, object_id, form_url, extra_context))

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: DumpRecord | None = None) -> bool:
        return False

    @admin.display(description="size", ordering="size_bytes")
    def size(self, record: DumpRecord):
        """The dump's size, and under it its media's (files and size), when it has media."""
        summary = record.media_summary()
        if summary is None:
            return f"{record.size_bytes / 1e6:.1f} MB"
        return format_html(
            '{}<br><span class="mini quiet">+ media: {} files, {}</span>',
            f"{record.size_bytes / 1e6:.1f} MB",
            summary[0],
            dumpfiles.human_size(summary[2]),
        )

    @admin.display(description="media")
    def media_files(self, record: DumpRecord) -> str:  # not ``media``: ModelAdmin.media is its CSS and JS
        summary = record.media_summary()
        if summary is None:
            return "none (made without --media)"
        path = record.path
        where = "" if path is None or dumpfiles.media_path(path).is_file() else " (the archive is not on disk)"
        return (
            f"{summary[0]} files, {dumpfiles.human_size(summary[1])} unpacked, "
            f"{dumpfiles.human_size(summary[2])} archived{where}"
        )

    @admin.display(description="rows", ordering="total_records")
    def rows(self, record: DumpRecord):
        left_out = _left_out(record)
        summary = f"{record.total_records:,} in {len(record.record_counts)} tables"
        if left_out:
            summary += f" ({len(left_out)} left out)"
        table = _counts_table(record.record_counts, left_out)
        return format_html("<details><summary>{}</summary>{}</details>", summary, table)

    @admin.display(description="file")
    def file(self, record: DumpRecord) -> str:
        """Whether the dump is on disk, and whether it is its environment's latest."""
        if not record.on_disk():
            return "gone"
        return "latest" if self.latest(record) else "on disk"

    @admin.display(description="schema")
    def schema(self, record: DumpRecord):
        stale, description = _schema_state(record)
        css = "color: var(--error-fg, #ba2121)" if stale else "color: var(--message-success-fg, #447e36)"
        return format_html('<span style="{}">{}</span>', css, ("stale: " if stale else "") + description)

    @admin.display(description="latest", boolean=True)
    def latest(self, record: DumpRecord) -> bool:
        try:
            return dumpfiles.resolve_latest(conf.DIR, record.environment).name == record.file_name
        except SeeddumpError:
            return False

    @admin.display(description="metadata")
    def metadata_json(self, record: DumpRecord):
        return format_html("<pre>{}</pre>", json.dumps(record.metadata, indent=2))

    @admin.action(description="Verify the checksum of the selected dumps")
    def verify_checksums(self, request: HttpRequest, queryset: QuerySet) -> None:
        for record in queryset:
            try:
                path = record.path
                if path is None:
                    raise SeeddumpError(f"the file is not in {conf.DIR}")
                metadata = dumpfiles.read_metadata(path)
                dumpfiles.verify(path, metadata)
                if metadata.media is not None:
                    media.check(dumpfiles.media_path(path), metadata.media)
            except SeeddumpError as exc:
                self.message_user(request, f"Checksum FAILED for {record.file_name}: {exc}", messages.ERROR)
            else:
                with_media = " and its media archive" if metadata.media is not None else ""
                self.message_user(
                    request, f"Checksum OK for {record.file_name}{with_media} ({metadata.checksum[:19]}…)"
                )

    @admin.action(description="Delete the selected records and their dump files", permissions=["delete"])
    def delete_with_files(self, request: HttpRequest, queryset: QuerySet) -> None:
        """The plain delete action removes records only; this one removes the files as well."""
        removed = 0
        for record in queryset:
            path = record.path  # None unless the record names a dump file in SEEDDUMP_DIR
            if path is not None:
                path.unlink()
                for companion in dumpfiles.companions(path):
                    companion.unlink(missing_ok=True)
                removed += 1
        count = queryset.count()
        queryset.delete()
        self.message_user(request, f"Deleted {count} record(s) and {removed} dump file(s).")

    @admin.display(description="on disk", boolean=True)
    def on_disk(self, record: DumpRecord) -> bool:
        return record.on_disk()

    @admin.display(description="rows per table")
    def per_table_counts(self, record: DumpRecord):
        return _counts_table(record.record_counts, _left_out(record))
