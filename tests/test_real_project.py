"""seeddump in a project it did not write: a Wagtail site made by ``wagtail start``, on the machine's server.

The site is changed only as the README's "Using it in your project" says (the steps are the same, in the
same order), then filled, dumped, restored cold and warm, smoke-tested, and tested with a seeded pytest test.
"""

from __future__ import annotations

import secrets
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from django.conf import settings as django_settings
from django.db import connections
from psycopg import sql

from seeddump import postgres, snapshots
from tests.conftest import as_the_project, own_name, run_bounded, shell_env

pytestmark = [pytest.mark.slow, pytest.mark.django_db(databases="__all__")]

WAGTAIL = Path(sys.executable).with_name("wagtail")

# README, "Using it in your project", step 2: the settings a project adds.
SETTINGS = """

# --- seeddump (README: Using it in your project) ---
INSTALLED_APPS += ["seeddump"]
# The project's own move to PostgreSQL (not seeddump's): Wagtail 8's search index asks for it there (postgres.E005).
INSTALLED_APPS += [app for app in ["django.contrib.postgres"] if app not in INSTALLED_APPS]
DATABASES = {{
    "default": {{
        "ENGINE": "django.db.backends.postgresql",
        "NAME": "{name}",
        "USER": "{user}",
        "HOST": "{host}",
        "PORT": "{port}",
    }}
}}
SEEDDUMP_SMOKE_PAGES = ["/", "/django-admin/login/"]
"""

# README, "Team and CI": the team's shared storage, S3 through django-storages.
STORAGE = """
from django.conf import global_settings

STORAGES = {{**globals().get("STORAGES", global_settings.STORAGES), "dumps": {{
    "BACKEND": "storages.backends.s3.S3Storage", "OPTIONS": {{
    "bucket_name": "{bucket}", "endpoint_url": "{endpoint}", "access_key": "test", "secret_key": "test",
    "region_name": "us-east-1", "file_overwrite": True}}}}}}
SEEDDUMP_STORAGE = "dumps"
"""

# The project's own slow seed script, as it would have one: pages and users.
SEED = """
from django.contrib.auth import get_user_model
from home.models import HomePage

home = HomePage.objects.get(depth=2)
for n in range(40):
    home.add_child(instance=HomePage(title=f"Seeded page {n}", slug=f"seeded-{n}"))
for n in range(15):
    get_user_model().objects.create_user(f"editor{n}", f"editor{n}@example.com", "a-password")
"""

# README, step 7: a test of the project that asks for the seeded data, next to one that expects none.
TESTS = """
import pytest
from wagtail.models import Page


@pytest.mark.seeddump
def test_the_seeded_pages_are_there():
    assert Page.objects.filter(title__startswith="Seeded page").count() == 40


@pytest.mark.django_db
def test_other_tests_keep_an_empty_database():
    assert not Page.objects.filter(title__startswith="Seeded page").exists()
"""


def run(argv: list[str], cwd: Path, timeout: float = 240, answer: str = "") -> subprocess.CompletedProcess:
    """A command in the site, with the environment a developer's shell would have (no test settings)."""
    return run_bounded(argv, cwd=cwd, env=shell_env(), stdin=answer, timeout=timeout)


def manage(site: Path, *args: str, answer: str = "") -> subprocess.CompletedProcess:
    result = run([sys.executable, "manage.py", *args], site, answer=answer)
    assert result.returncode == 0, f"manage.py {' '.join(args)}:\n{result.stdout}\n{result.stderr}"
    return result


@pytest.fixture
def site(tmp_path: Path) -> Iterator[tuple[Path, str]]:
    if django_settings.SYSTEM_UNAVAILABLE:
        pytest.skip(f"system PostgreSQL not reachable: {django_settings.SYSTEM_UNAVAILABLE}")
    if not WAGTAIL.exists():
        pytest.fail(f"{WAGTAIL} is missing: install the test extra (bash seeds/scripts/install.sh)")
    site = tmp_path / "site"
    site.mkdir()
    result = run([str(WAGTAIL), "start", "mysite", str(site)], tmp_path)
    assert result.returncode == 0, result.stderr
    system = connections["system"].settings_dict
    name = own_name("wagtail")
    with postgres.connect_maintenance(system) as admin:
        admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    with (site / "mysite" / "settings" / "base.py").open("a") as settings_file:
        settings_file.write(
            SETTINGS.format(name=name, user=system["USER"], host=system["HOST"], port=system["PORT"] or 5432)
        )
    yield site, name
    with postgres.connect_maintenance(system) as admin:
        snapshots.drop_all(admin, site / "seeds" / "dumps")
        for (database,) in admin.execute(
            "SELECT datname FROM pg_database WHERE datname LIKE %s OR datname LIKE %s OR datname LIKE %s",
            (f"%{name}%", "seeddump_smoke_%", "seeddump_%"),
        ).fetchall():
            if name in database or _made_for(admin, database, name):
                admin.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(database)))
    shutil.rmtree(site, ignore_errors=True)


def _made_for(admin: psycopg.Connection, database: str, name: str) -> bool:
    """A copy seeddump made of this test's database (its label names it), never another project's."""
    (comment,) = admin.execute(
        "SELECT coalesce(shobj_description(oid, 'pg_database'), '') FROM pg_database WHERE datname = %s", (database,)
    ).fetchone() or ("",)
    return f'"{name}"' in comment


def _pages(name: str) -> int:
    with as_the_project(postgres.connect(connections["system"].settings_dict, name)) as conn:
        (count,) = conn.execute("SELECT count(*) FROM wagtailcore_page WHERE title LIKE 'Seeded page%%'").fetchone()
    return int(count)


def test_a_wagtail_site_dumps_restores_smoke_tests_and_seeds_its_tests(site: tuple[Path, str], s3_server: str) -> None:
    site_dir, name = site
    manage(site_dir, "migrate", "-v0")  # README step 3
    manage(site_dir, "shell", "-c", SEED)  # the project's own seed

    dumped = manage(site_dir, "generatedump", "dev")  # README step 4
    assert "seeds/dumps/dev-seeded-" in dumped.stdout + dumped.stderr
    with as_the_project(postgres.connect(connections["system"].settings_dict, name)) as conn:
        conn.execute("UPDATE wagtailcore_page SET title = 'Local work' WHERE title LIKE 'Seeded page 3%%'")
    assert _pages(name) == 29

    cold = manage(site_dir, "restoredump", "dev", answer="yes\n")  # README step 5: it asks first
    assert _pages(name) == 40, cold.stdout + cold.stderr
    warm = manage(site_dir, "restoredump", "dev", "--no-input")
    assert _pages(name) == 40
    assert "snapshot" in warm.stdout + warm.stderr or "ready copy" in warm.stdout + warm.stderr, warm.stdout

    smoke = manage(site_dir, "smoketest")  # README step 6
    assert "Smoke test passed" in smoke.stdout, smoke.stdout
    assert "PASS  frontend: GET / (" in smoke.stdout
    assert (site_dir / "seeds" / "dumps" / "smoketest.log").exists()

    # README step 7: pytest-django and a pytest.ini; the tests ask for the seeded data with a marker.
    (site_dir / "pytest.ini").write_text("[pytest]\nDJANGO_SETTINGS_MODULE = mysite.settings.dev\n")
    (site_dir / "test_seeded.py").write_text(TESTS)
    pytest_argv = [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "test_seeded.py"]
    tests = run(pytest_argv, site_dir, timeout=280)
    assert tests.returncode == 0, tests.stdout + tests.stderr
    assert "2 passed" in tests.stdout

    # A teammate's fresh clone: no dumps (they are git-ignored). The other tests run; the seeded one skips.
    dumps = site_dir / "seeds" / "dumps"
    aside = site_dir.parent / "dumps-aside"
    dumps.rename(aside)
    fresh = run(pytest_argv, site_dir, timeout=280)
    assert fresh.returncode == 0, fresh.stdout + fresh.stderr
    assert "1 passed, 1 skipped" in fresh.stdout, fresh.stdout
    assert fresh.stdout.count("seeddump: the seeded tests did not run: There is no dev dump in") == 1, fresh.stdout
    aside.rename(dumps)

    # With the team's shared storage (S3, here moto's server), the session pulls the dump itself, once.
    import boto3

    bucket = f"wagtail-{secrets.token_hex(3)}"
    credentials = {"aws_access_key_id": "test", "aws_secret_access_key": "test", "region_name": "us-east-1"}
    boto3.client("s3", endpoint_url=s3_server, **credentials).create_bucket(Bucket=bucket)
    with (site_dir / "mysite" / "settings" / "base.py").open("a") as settings_file:
        settings_file.write(STORAGE.format(bucket=bucket, endpoint=s3_server))
    manage(site_dir, "generatedump", "dev", "--push")
    shutil.rmtree(dumps)
    pulled = run(pytest_argv, site_dir, timeout=280)
    assert pulled.returncode == 0, pulled.stdout + pulled.stderr
    assert "2 passed" in pulled.stdout
    assert pulled.stdout.count("seeddump: Downloading dev-seeded-") == 1, pulled.stdout
