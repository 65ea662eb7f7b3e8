"""The supported platform: Django 5.2 to 6.1 and PostgreSQL 14 and newer, whichever of them this run is on.

seeds/scripts/test-versions.sh runs this file on every combination of seeds/scripts/versions.txt.
"""

from __future__ import annotations

import textwrap
from io import StringIO
from pathlib import Path

import django
import pytest
from django.core.management import CommandError, call_command
from django.db import connections

from seeddump import postgres
from tests.conftest import manage
from tests.test_stale import MISSING, dump_behind_the_code

pytestmark = pytest.mark.django_db(transaction=True, databases="__all__")


def test_seeddump_has_no_migration_to_make_on_this_django() -> None:
    """Django 6.0 changed DEFAULT_AUTO_FIELD's default: seeddump's models must not churn on any version."""
    out = StringIO()
    call_command("makemigrations", "seeddump", check=True, dry_run=True, stdout=out)  # SystemExit(1) on a change
    assert "No changes detected" in out.getvalue()


ELSEWHERE = """
from project.settings import *  # noqa: F403

# A database nobody can reach: on Django 6.1 `check` hands every alias to every check.
DATABASES = {**DATABASES, "elsewhere": {"ENGINE": "django.db.backends.postgresql", "NAME": "nowhere",
    "USER": "nobody", "HOST": "127.0.0.1", "PORT": 1, "OPTIONS": {"connect_timeout": 2}}}
"""


@pytest.mark.parametrize("alias", ["default"])
def test_a_stale_dump_is_named_once_by_check_and_by_migrate_whatever_the_databases(
    alias: str, dumps_dir: Path, tmp_path: Path, migrated_back_at_the_end: None
) -> None:
    dump_behind_the_code(alias)
    (tmp_path / "elsewhere_settings.py").write_text(textwrap.dedent(ELSEWHERE))
    env = {"DJANGO_SETTINGS_MODULE": "elsewhere_settings", "PYTHONPATH": str(tmp_path)}

    runs = (["check"], ["check", "--database", "default"], ["migrate", "--no-input"], ["migrate", "--plan"])
    for argv in runs:
        result = manage(*argv, alias=alias, dumps_dir=dumps_dir, env=env)
        output = result.stdout + result.stderr
        assert result.returncode == 0, output
        named = [line for line in output.splitlines() if "is stale" in line]
        assert len(named) == 1 and MISSING in named[0], (argv, output)
        assert "elsewhere" not in output and "Traceback" not in output


def test_a_server_older_than_the_floor_is_refused_in_one_line(
    alias: str, dumps_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No server of an unsupported major is at hand here: the floor is raised above the real server's major."""
    with postgres.connect(connections[alias].settings_dict) as conn:
        major = postgres.server_major(conn)
    with monkeypatch.context() as patch, pytest.raises(CommandError) as refused:
        patch.setattr(postgres, "MIN_SERVER_MAJOR", major + 1)
        call_command("generatedump", "dev", database=alias, stdout=StringIO(), stderr=StringIO())
    message = str(refused.value)
    assert f"runs PostgreSQL {major}." in message
    assert f"seeddump needs PostgreSQL {major + 1} or newer. Upgrade the server" in message
    assert "\n" not in message
    assert not list(dumps_dir.glob("dev/*.dump"))


def test_the_django_this_run_is_on_is_one_seeddump_declares() -> None:
    """Each run of test-versions.sh pins a Django series: it must be one the classifiers name."""
    from tests.test_package import declared

    assert f"{django.VERSION[0]}.{django.VERSION[1]}" in declared("Django")
