"""Which database backends seeddump works with: every one that is PostgreSQL underneath (Django's, GeoDjango's
postgis, a wrapper of either), as the backend itself says; anything else is refused in one line, and ``check``
says so first (seeddump.E004)."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from seeddump import postgres
from tests.conftest import database_url, manage

pytestmark = pytest.mark.django_db(transaction=True, databases="__all__")


@pytest.mark.parametrize(
    "engine",
    ["django.db.backends.postgresql", "django.contrib.gis.db.backends.postgis", "tests.wrapped_backend"],
)
def test_backends_that_are_postgresql_underneath_are_accepted(engine: str) -> None:
    assert postgres.engine_problem(engine) is None


@pytest.mark.parametrize(
    ("engine", "said"),
    [
        ("django.db.backends.sqlite3", "uses django.db.backends.sqlite3 (a sqlite backend); seeddump works with"),
        ("no_such.backend", "uses no_such.backend, which cannot be loaded"),
    ],
)
def test_other_backends_are_refused_in_one_line(engine: str, said: str) -> None:
    problem = postgres.engine_problem(engine)
    assert problem is not None and said in problem and "\n" not in problem


@pytest.mark.parametrize("alias", ["system"])
def test_geodjangos_engine_goes_through_the_commands(alias: str, dumps_dir: Path) -> None:
    """GeoDjango's own engine (DATABASE_URL=postgis://...) was refused by every command."""
    env = {"DATABASE_URL": database_url(alias).replace("postgres://", "postgis://", 1)}
    checked = manage("check", alias=alias, dumps_dir=dumps_dir, env=env)
    assert checked.returncode == 0, checked.stderr
    assert "seeddump.E004" not in checked.stdout + checked.stderr
    for argv in (["generatedump", "dev", "--allow-empty"], ["restoredump", "dev", "--no-input"], ["listdumps"]):
        result = manage(*argv, alias=alias, dumps_dir=dumps_dir, env=env)
        assert result.returncode == 0, (argv, result.stdout, result.stderr)
        assert "PostgreSQL only" not in result.stderr


SQLITE_SETTINGS = """
from project.settings import *  # noqa: F403

DATABASES = {"default": {"ENGINE": "django.db.backends.sqlite3", "NAME": ":memory:"}}
"""


@pytest.mark.parametrize("alias", ["default"])
def test_check_names_a_database_seeddump_cannot_work_with(alias: str, dumps_dir: Path, tmp_path: Path) -> None:
    (tmp_path / "sqlite_settings.py").write_text(textwrap.dedent(SQLITE_SETTINGS))
    env = {"DJANGO_SETTINGS_MODULE": "sqlite_settings", "PYTHONPATH": str(tmp_path)}
    checked = manage("check", alias=alias, dumps_dir=dumps_dir, env=env)
    assert checked.returncode == 1
    assert "seeddump.E004" in checked.stderr
    assert "DATABASES['default'] uses django.db.backends.sqlite3 (a sqlite backend)" in checked.stderr
    refused = manage("generatedump", "dev", alias=alias, dumps_dir=dumps_dir, env=env)
    assert refused.returncode == 1
    assert refused.stderr.strip().splitlines()[-1].startswith("CommandError: DATABASES['default'] uses")
    assert "Traceback" not in refused.stderr
