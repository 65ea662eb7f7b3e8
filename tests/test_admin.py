"""The admin lists every dump, read-only."""

from __future__ import annotations

from pathlib import Path

import pytest
from django.contrib.auth.models import User
from django.core.management import call_command
from django.test import Client

from seeddump.models import DumpRecord
from tests.conftest import run_command

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
    assert record.checksum.removeprefix("sha256:")[:12] in html
    assert "reality_node" in html and "3000" in html
    assert 'alt="True"' in html  # on disk

    dump.unlink()
    html = admin_client_default.get("/admin/seeddump/dumprecord/").content.decode()
    assert 'alt="False"' in html

    assert admin_client_default.get("/admin/seeddump/dumprecord/add/").status_code == 403
    detail = admin_client_default.get(f"/admin/seeddump/dumprecord/{record.pk}/change/")
    assert detail.status_code == 200
    assert 'name="_save"' not in detail.content.decode()
