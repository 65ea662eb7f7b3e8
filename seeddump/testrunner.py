"""``manage.py test`` with seeddump: test databases from the cache of migrated test databases
(``seeddump.testcache``), and the seeded data for the test classes that ask for it (``seeddump.testing``).

    TEST_RUNNER = "seeddump.testrunner.DiscoverRunner"

Or, for a project's own runner, ``class Runner(SeededTestDatabases, CachedTestDatabases, TheProjectsRunner)``.
Django's runner then makes each test database (``--parallel N`` clones it per worker, ``--keepdb`` keeps it) from
the nearest state of the code's migrations kept on the server, migrating only what that state lacks; and, when
the run has ``@seeded`` classes, a seeded database beside each (one per worker), dropped at the end unless
``--keepdb``. Options: ``--seeddump-env ENV`` (the environment of the classes that name none; default dev) and
``--seeddump-require`` (no dump stops the run instead of skipping the seeded classes).
"""

from __future__ import annotations

import argparse
import logging
from typing import Any

from django.core.management import CommandError
from django.test.runner import DiscoverRunner as DjangoDiscoverRunner
from django.test.runner import ParallelTestSuite
from django.test.utils import iter_test_cases  # type: ignore[attr-defined]

from seeddump import sharedtestcache, testcache, testing
from seeddump.exceptions import SeeddumpError


class CachedTestDatabases:
    """A test runner mixin: its test databases come from seeddump's cache of migrated test databases."""

    def setup_databases(self, **kwargs: Any) -> Any:
        from django.conf import settings

        log = getattr(self, "log", None)
        say = (lambda line: log(line)) if callable(log) else testcache.say_on_stderr
        declared = {alias: str(values.get("NAME") or "") for alias, values in settings.DATABASES.items()}
        testcache.install(say=say, pull=sharedtestcache.puller(say, stands_for=declared))
        return super().setup_databases(**kwargs)  # type: ignore[misc]


class SeededParallelTestSuite(ParallelTestSuite):
    """Django's parallel suite whose workers use the run's seeded databases: a forked worker inherits them, a
    spawned one is handed them (Django calls ``process_setup`` in spawned workers only)."""

    process_setup = testing.resume  # type: ignore[assignment]

    @property  # type: ignore[misc]
    def process_setup_args(self) -> tuple[Any, ...]:  # type: ignore[override]
        return (testing.current(),)


class SeededTestDatabases:
    """A test runner mixin (before a ``DiscoverRunner``): the ``@seeded`` test classes see the latest dump."""

    parallel_test_suite = SeededParallelTestSuite

    @classmethod
    def add_arguments(cls, parser: argparse.ArgumentParser) -> None:
        super().add_arguments(parser)  # type: ignore[misc]
        testing.add_arguments(parser)

    def __init__(self, *args: Any, seeddump_env: str | None = None, seeddump_require: bool = False, **kwargs: Any):
        super().__init__(*args, **kwargs)
        keep = bool(getattr(self, "keepdb", False))
        self.seeding = testing.Seeding.for_run(environment=seeddump_env, require=seeddump_require, keep=keep)

    def build_suite(self, *args: Any, **kwargs: Any) -> Any:
        suite = super().build_suite(*args, **kwargs)  # type: ignore[misc]
        self.seeding.find(iter_test_cases(suite))
        return suite

    def setup_databases(self, **kwargs: Any) -> Any:
        old_config = super().setup_databases(**kwargs)  # type: ignore[misc]
        testing.begin(self.seeding)
        try:
            self.seeding.prepare(workers=int(getattr(self, "parallel", 1)), say=self._say)
        except SeeddumpError as exc:
            self.teardown_databases(old_config)
            raise CommandError(str(exc)) from None
        return old_config

    def teardown_databases(self, old_config: Any, **kwargs: Any) -> None:
        try:
            self.seeding.finish(say=lambda line: self._say(line, logging.WARNING))
        finally:
            testing.end()
            super().teardown_databases(old_config, **kwargs)  # type: ignore[misc]

    def _say(self, line: str, level: int = logging.INFO) -> None:
        log = getattr(self, "log", None)
        if callable(log):
            log(line, level)
        else:
            testcache.say_on_stderr(line)


class DiscoverRunner(SeededTestDatabases, CachedTestDatabases, DjangoDiscoverRunner):  # type: ignore[misc]
    """Django's own runner, with the cache of migrated test databases and the seeded test classes."""
