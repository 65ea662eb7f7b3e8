"""The admin lists every dump, read-only."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from django.contrib.auth.models import User
from django.core.management import call_command
from django.test import Client

from seeddump.models import DumpRecord
from tests.conftest import run_command, write_reality_migration

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def admin_client_default() -> Client:
    user = User.objects.create_superuser("admin", "admin@example.com", "pw")
    client = Client()
    client.force_login(user)
    return client


def test_admin_lists_dumps_read_only(dumps_dir: Path, admin_client_default: Client) -> None:
    call_command("seed", "dev", scale=1, verbosity=0)
    dump = Path(run_command("generatedump", "dev").out.split()[-1])
    record = DumpRecord.objects.get(file_name=dump.name)

    page = admin_client_default.get("/admin/seeddump/dumprecord/")
    html = page.content.decode()
    assert page.status_code == 200
    assert dump.name in html
    assert "reality_node" in html and "3000" in html
    assert '<td class="field-file">latest</td>' in html

    dump.unlink()
    html = admin_client_default.get("/admin/seeddump/dumprecord/").content.decode()
    assert '<td class="field-file">gone</td>' in html

    assert admin_client_default.get("/admin/seeddump/dumprecord/add/").status_code == 403
    detail = admin_client_default.get(f"/admin/seeddump/dumprecord/{record.pk}/change/")
    assert detail.status_code == 200
    assert 'name="_save"' not in detail.content.decode()
    assert record.checksum in detail.content.decode() and record.version in detail.content.decode()


def test_the_schema_column_sees_migrations_written_while_the_server_runs(
    dumps_dir: Path, admin_client_default: Client, reality_migrations: Callable[..., Path]
) -> None:
    """A dump made on a branch with a migration this checkout does not have yet is stale ("unknown"); once the
    migration is written (the branch is checked out) the same running server shows it current."""
    call_command("seed", "dev", scale=1, verbosity=0)
    dump = Path(run_command("generatedump", "dev").out.split()[-1])
    record = DumpRecord.objects.get(file_name=dump.name)
    record.metadata["migrations"]["reality"].append("0003_future")
    record.save()
    assert "stale: 1 unknown" in admin_client_default.get("/admin/seeddump/dumprecord/").content.decode()

    package = reality_migrations("future_migrations")  # the app's migrations as the checked-out branch has them
    write_reality_migration(package, "0003_future", "[]")

    html = admin_client_default.get("/admin/seeddump/dumprecord/").content.decode()
    assert "stale: 1 unknown" not in html and ">current<" in html
    detail = admin_client_default.get(f"/admin/seeddump/dumprecord/{record.pk}/change/").content.decode()
    assert "current" in detail
