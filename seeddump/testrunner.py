"""``manage.py test`` with the cache of migrated test databases (``seeddump.testcache``).

    TEST_RUNNER = "seeddump.testrunner.DiscoverRunner"

Or, for a project's own runner, ``class Runner(CachedTestDatabases, TheProjectsRunner)``. Django's runner then
makes each test database (``--parallel N`` clones it per worker, ``--keepdb`` keeps it) from the nearest state
of the code's migrations kept on the server, migrating only what that state lacks.
"""

from __future__ import annotations

from typing import Any

from django.test.runner import DiscoverRunner as DjangoDiscoverRunner

from seeddump import sharedtestcache, testcache


class CachedTestDatabases:
    """A test runner mixin: its test databases come from seeddump's cache of migrated test databases."""

    def setup_databases(self, **kwargs: Any) -> Any:
        from django.conf import settings

        log = getattr(self, "log", None)
        say = (lambda line: log(line)) if callable(log) else testcache.say_on_stderr
        declared = {alias: str(values.get("NAME") or "") for alias, values in settings.DATABASES.items()}
        testcache.install(say=say, pull=sharedtestcache.puller(say, stands_for=declared))
        return super().setup_databases(**kwargs)  # type: ignore[misc]


class DiscoverRunner(CachedTestDatabases, DjangoDiscoverRunner):
    """Django's own runner, with the cache of migrated test databases."""
