"""The connection as the project configured it: every libpq parameter of DATABASES' OPTIONS reaches seeddump's
own connections and pg_dump/pg_restore, and the project's application_name is kept."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from django.core.management import call_command
from django.db import connections

from seeddump import postgres
from tests.conftest import run_command

pytestmark = pytest.mark.django_db(transaction=True, databases="__all__")

OPTIONS = {
    "application_name": "acme",
    "connect_timeout": 7,
    "target_session_attrs": "read-write",
    "options": "-c lock_timeout=123s",
    "client_encoding": "UTF8",
}


@pytest.fixture
def configured(alias: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    connections[alias].close()
    monkeypatch.setitem(connections[alias].settings_dict, "OPTIONS", dict(OPTIONS))
    yield
    connections[alias].close()


@pytest.mark.usefixtures("configured")
def test_seeddump_connects_as_the_project_configured(alias: str) -> None:
    with postgres.connect(connections[alias].settings_dict) as conn:
        query = "SELECT current_setting('application_name'), current_setting('lock_timeout')"
        name, lock_timeout = conn.execute(query).fetchone()
    assert name == "acme/seeddump"  # the project's, and seeddump's to find its own sessions
    assert lock_timeout == "123s"


@pytest.mark.usefixtures("configured")
def test_pg_dump_and_pg_restore_get_every_parameter(alias: str, dumps_dir: Path, spy_bin: Path) -> None:
    call_command("seed", "dev", scale=1, database=alias, verbosity=0)
    run_command("generatedump", "dev", database=alias)
    run_command("restoredump", "dev", database=alias, interactive=False)  # a new dump: pg_restore runs

    log = spy_bin.read_text()
    for program in ("pg_dump", "pg_restore"):
        assert f"/{program} " in log
    for line in (
        "ENV PGAPPNAME=acme/seeddump",
        "ENV PGCONNECT_TIMEOUT=7",
        "ENV PGTARGETSESSIONATTRS=read-write",
        "ENV PGOPTIONS=-c lock_timeout=123s",
        "ENV PGCLIENTENCODING=UTF8",
    ):
        assert log.count(line) >= 2, (line, log)  # pg_dump's and pg_restore's
