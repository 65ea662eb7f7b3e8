"""pytest plugin: pytest-django's test database built from the latest seeddump dump.

    pytest --seeddump-env dev      # or seeddump_env = dev in the ini file, or SEEDDUMP_PYTEST_ENV=dev

Just before pytest-django sets up its test databases, the latest dump of the environment is restored
into each test database (through the snapshot cache when one exists, so this is a file copy), and
pytest-django is told to keep that database: it then applies any migrations newer than the dump. With
--reuse-db the test database is restored again only when the dump changed. Under pytest-xdist each
worker gets its own test database, each restored from the same snapshot.
"""

from __future__ import annotations

import os
from typing import Any

import pytest
from psycopg import sql

COMMENT_PREFIX = "seeddump:"
_USER_REUSE = pytest.StashKey[bool]()


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("seeddump", "seeded test databases from seeddump dumps")
    group.addoption(
        "--seeddump-env",
        dest="seeddump_env",
        default=None,
        help="Build the test databases from the latest seeddump dump of this environment.",
    )
    parser.addini("seeddump_env", "Environment whose latest dump builds the test databases.", default="")


def _environment(config: pytest.Config) -> str | None:
    value = config.getoption("seeddump_env") or config.getini("seeddump_env") or os.environ.get("SEEDDUMP_PYTEST_ENV")
    return str(value) if value else None


@pytest.hookimpl(trylast=True)
def pytest_configure(config: pytest.Config) -> None:
    if not _environment(config) or not hasattr(config.option, "reuse_db"):
        return
    # Remember what the user asked for, then make pytest-django keep (and migrate) the database the
    # plugin restores instead of creating an empty one.
    config.stash[_USER_REUSE] = bool(config.option.reuse_db) and not bool(config.option.create_db)
    config.option.reuse_db = True
    config.option.create_db = False


@pytest.hookimpl(hookwrapper=True)
def pytest_fixture_setup(fixturedef: Any, request: pytest.FixtureRequest) -> Any:
    # By now the fixtures django_db_setup depends on have run, xdist's per-worker names included.
    if fixturedef.argname == "django_db_setup":
        environment = _environment(request.config)
        if environment:
            _build_test_databases(environment, reuse=request.config.stash.get(_USER_REUSE, False))
    yield


def _build_test_databases(environment: str, *, reuse: bool) -> None:
    from django.conf import settings
    from django.db import connections

    from seeddump import postgres
    from seeddump.exceptions import SeeddumpError
    from seeddump.restore import plan_restore, restore

    aliases = getattr(settings, "SEEDDUMP_PYTEST_DATABASES", ["default"])
    for alias in aliases:
        test_name = connections[alias].creation._get_test_db_name()  # type: ignore[attr-defined]
        try:
            plan = plan_restore(environment, using=alias)
            settings_dict = postgres.settings_for(alias)
            marker = COMMENT_PREFIX + plan.metadata.checksum
            if reuse and _comment(settings_dict, test_name) == marker:
                continue
            restore(plan, database=test_name)
            with postgres.connect_maintenance(settings_dict) as admin:
                admin.execute(
                    sql.SQL("COMMENT ON DATABASE {} IS {}").format(sql.Identifier(test_name), sql.Literal(marker))
                )
        except SeeddumpError as exc:
            raise pytest.UsageError(f"seeddump: cannot build the test database '{test_name}': {exc}") from None


def _comment(settings_dict: Any, name: str) -> str | None:
    from seeddump import postgres

    with postgres.connect_maintenance(settings_dict) as admin:
        row = admin.execute(
            "SELECT shobj_description(oid, 'pg_database') FROM pg_database WHERE datname = %s", (name,)
        ).fetchone()
    return row[0] if row else None
