"""Seeded data for ``manage.py test``: the test classes that ask for it see the latest dump of an environment.

    from seeddump.testing import seeded

    @seeded                                 # its tests see the latest dump (of --seeddump-env, default dev)
    class ReportTests(TestCase): ...

    @seeded("staging")                      # ... of another environment's dump
    class ImportTests(TransactionTestCase): ...

With seeddump's runner (``seeddump.testrunner``). The rules are the pytest plugin's, and so is the work: a
seeded test database beside each of Django's test databases (``<test database>_seeded_<env>``, one per
``--parallel`` worker, beside the worker's clone) is built by ``seeddump.testdatabases``, once per run and before
any test, in the runner's process. A ``TestCase`` class has its connections pointed at it from ``setUpClass``
(before Django opens the class's transaction) to its end; a ``TransactionTestCase`` from each test's
``_pre_setup`` to its flush, after which the database is rebuilt for the next. The other classes keep Django's
empty test database. ``--keepdb`` keeps the seeded databases, and a later run reuses one while its label still
describes its data. Without a dump the seeded classes are skipped and the run says why in one line at its end
(``--seeddump-require``: the run stops with that line before any test); a dump that cannot be used stops the run
with one line.

Only the aliases in SEEDDUMP_PYTEST_DATABASES (default ``["default"]``) that a class uses are seeded.
"""

from __future__ import annotations

import argparse
import contextlib
import unittest
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar, overload

from seeddump.exceptions import NoDump, SeeddumpError

Say = Callable[[str], None]
TestClass = TypeVar("TestClass", bound=type)
# Set on a class by ``seeded`` (and so on its subclasses): its tests see the seeded data.
_MARK = "_seeddump_seeded"


@overload
def seeded(environment: TestClass) -> TestClass: ...
@overload
def seeded(environment: str | None = None) -> Callable[[TestClass], TestClass]: ...
def seeded(environment: Any = None) -> Any:
    """Class decorator: the tests of this ``TestCase`` or ``TransactionTestCase`` (and of its subclasses) see the
    data of the latest dump of ``environment``, else of the class's ``seeddump_env``, else of ``--seeddump-env``
    (default dev)."""
    if isinstance(environment, type):
        return seeded()(environment)

    def decorate(cls: TestClass) -> TestClass:
        from django.test import TransactionTestCase

        if not issubclass(cls, TransactionTestCase):
            raise TypeError(f"seeddump: @seeded takes a django.test TestCase or TransactionTestCase, not {cls!r}.")
        if environment is not None:
            cls.seeddump_env = str(environment)  # type: ignore[attr-defined]
        if not vars(cls).get(_MARK):
            _hook(cls)
        return cls

    return decorate


def _hook(cls: Any) -> None:
    """Wraps the class's own (or inherited) ``setUpClass``, ``_pre_setup`` and ``_post_teardown``: the wrappers
    point the connections first and point them back last. A subclass that is decorated again runs both wrappers;
    the session points a class once."""
    own_setup_class = vars(cls).get("setUpClass")
    own_pre_setup = vars(cls).get("_pre_setup")
    own_post_teardown = vars(cls).get("_post_teardown")

    def setUpClass(klass: Any) -> None:
        if not _session(klass).start_class(klass):
            return  # skipped: no dump
        if own_setup_class is not None:
            own_setup_class.__get__(None, klass)()
        else:
            super(cls, klass).setUpClass()

    def _pre_setup(klass: Any) -> None:
        _session(klass).start_test(klass)
        if own_pre_setup is not None:
            own_pre_setup.__get__(None, klass)()
        else:
            super(cls, klass)._pre_setup()

    def _post_teardown(self: unittest.TestCase) -> None:
        try:
            if own_post_teardown is not None:
                own_post_teardown(self)
            else:
                super(cls, self)._post_teardown()
        finally:
            _session(type(self)).end_test(type(self))

    cls.setUpClass = classmethod(setUpClass)
    cls._pre_setup = classmethod(_pre_setup)
    cls._post_teardown = _post_teardown
    setattr(cls, _MARK, True)


def is_seeded(cls: type) -> bool:
    return bool(getattr(cls, _MARK, False))


# --- The run -------------------------------------------------------------------------------------------


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--seeddump-env",
        dest="seeddump_env",
        default=None,
        help="Environment whose latest dump seeds the @seeded test classes that name none (default: dev).",
    )
    parser.add_argument(
        "--seeddump-require",
        dest="seeddump_require",
        action="store_true",
        help="Without a dump, stop the run instead of skipping the @seeded test classes (for CI).",
    )


@dataclass
class Seeding:
    """One run's seeded databases. Made by the runner; a ``--parallel`` worker has the runner's (inherited with
    the fork start method, handed over by ``resume`` with spawn)."""

    environment: str  # of the classes that name none
    require: bool
    keep: bool  # --keepdb: kept at the end, and reused while they still hold the seed
    declared: Mapping[str, str]  # alias: its database's NAME before the runner's test name (whose owner owns ours)
    needs: dict[str, set[str]] = field(default_factory=dict)  # environment: the aliases its classes use
    ready: set[tuple[str, str]] = field(default_factory=set)  # (alias, name) holding the seed now
    made: set[tuple[str, str]] = field(default_factory=set)  # (alias, name) this run built
    missing: dict[str, str] = field(default_factory=dict)  # environment: why its classes are skipped
    notes: list[str] = field(default_factory=list)  # said once at the end of the run
    pointed: dict[type, tuple[contextlib.ExitStack, dict[str, str]]] = field(default_factory=dict, repr=False)

    @classmethod
    def for_run(cls, *, environment: str | None, require: bool, keep: bool) -> Seeding:
        from django.conf import settings

        from seeddump import codestate

        # As the settings declare them, before the runner renames the databases (and, with TEST["MIGRATE"] off,
        # replaces the migration modules: seeddump still needs to know the code's).
        codestate.remember_declared()
        declared = {alias: str(entry["NAME"]) for alias, entry in settings.DATABASES.items() if entry.get("NAME")}
        return cls(environment or "dev", require, keep, declared)

    def __getstate__(self) -> dict[str, Any]:
        return {**vars(self), "pointed": {}}  # for a spawned worker: what is pointed is this process's

    # The runner's process, before and after the tests.

    def find(self, tests: Iterable[unittest.TestCase]) -> None:
        """Notes which environments and aliases the seeded classes among ``tests`` need."""
        for test in tests:
            klass = type(test)
            if is_seeded(klass):
                self.needs.setdefault(self.environment_of(klass), set()).update(_aliases(klass))

    def prepare(self, workers: int, say: Say) -> None:
        """Builds every seeded database the run needs (each ``--parallel`` worker's, beside its clone), before
        any test. Raises SeeddumpError with the line to stop the run with."""
        from django.db import connections

        from seeddump import postgres, shared, testdatabases

        for environment, aliases in sorted(self.needs.items()):
            if shared.configured():
                try:
                    testdatabases.pull(environment, progress=lambda line: say(f"seeddump: {line}"))
                except SeeddumpError as exc:
                    raise SeeddumpError(
                        f"seeddump: cannot pull the {environment} dump from the shared storage: {exc}"
                    ) from None
            for alias in sorted(aliases):
                creation = connections[alias].creation
                names = [creation.get_test_db_clone_settings(str(n))["NAME"] for n in range(1, workers + 1)]
                for name in names if workers > 1 else [str(postgres.settings_for(alias)["NAME"])]:
                    with postgres.django_connection_to(alias, name):  # the worker's clone: its seeded database
                        self._build(environment, alias, say)
                    if environment in self.missing:
                        break
                if environment in self.missing:
                    break

    def finish(self, say: Say) -> None:
        """Says the run's notes, and drops its seeded databases unless they are kept (--keepdb)."""
        from seeddump import testdatabases

        for klass in list(self.pointed):  # left pointed by an interruption: Django's teardown needs its own names
            self._point_back(klass)
        for note in self.notes:
            say(note)
        if not self.keep:
            for alias, name in sorted(self.made):
                testdatabases.drop(alias, name)
            self.made.clear()

    # A test class, in whichever process runs it.

    def environment_of(self, klass: type) -> str:
        return str(getattr(klass, "seeddump_env", None) or self.environment)

    def start_class(self, klass: type) -> bool:
        """Before the class's own ``setUpClass``: False when its tests are to be skipped (no dump), else a
        ``TestCase``'s connections are pointed at the seeded databases for the whole class."""
        from django.test import TestCase

        environment = self.environment_of(klass)
        if environment in self.missing:
            klass.__unittest_skip__ = True  # type: ignore[attr-defined]  # each test is skipped, with the line
            klass.__unittest_skip_why__ = self.missing[environment]  # type: ignore[attr-defined]
            return False
        if klass not in self.pointed:
            klass.addClassCleanup(self._point_back, klass)  # type: ignore[attr-defined]  # after its own
            if issubclass(klass, TestCase):
                self._point(klass)
        return True

    def start_test(self, klass: type) -> None:
        """Before a ``TransactionTestCase``'s test (its fixtures included): its connections are pointed at the
        seeded databases, rebuilt first if the previous test flushed them."""
        from django.test import TestCase

        if not issubclass(klass, TestCase) and klass not in self.pointed:
            self._point(klass)

    def end_test(self, klass: type) -> None:
        """After a ``TransactionTestCase``'s test, whose flush emptied the seeded databases: they are rebuilt
        before they are used again (in this run, or a later one with --keepdb)."""
        from django.test import TestCase

        from seeddump import testdatabases

        if issubclass(klass, TestCase) or klass not in self.pointed:
            return
        for alias, name in self._point_back(klass).items():
            testdatabases.forget(alias, name)
            self.ready.discard((alias, name))

    def _names(self, klass: type) -> dict[str, str]:
        """The class's seeded databases, beside the test databases its connections name (not pointed)."""
        from seeddump import postgres, testdatabases

        environment = self.environment_of(klass)
        return {
            alias: testdatabases.seeded_name(str(postgres.settings_for(alias)["NAME"]), environment)
            for alias in _aliases(klass)
        }

    def _point(self, klass: type) -> None:
        from seeddump import postgres

        environment = self.environment_of(klass)
        names = self._names(klass)
        for alias, name in names.items():
            if (alias, name) not in self.ready:  # flushed by a TransactionTestCase, or a class the runner missed
                self._build(environment, alias, _quiet)
                if environment in self.missing:
                    raise SeeddumpError(self.missing[environment])
        pointed = contextlib.ExitStack()
        for alias, name in names.items():
            pointed.enter_context(postgres.django_connection_to(alias, name))
        self.pointed[klass] = (pointed, names)

    def _point_back(self, klass: type) -> dict[str, str]:
        """Points the class's connections back at the test databases; returns the seeded ones they were at."""
        pointed, names = self.pointed.pop(klass, (None, {}))
        if pointed is not None:
            pointed.close()
        return names

    def _build(self, environment: str, alias: str, say: Say) -> None:
        """The seeded database of ``alias``'s test database as the connection names it now."""
        from seeddump import shared, testdatabases

        try:
            seeded = testdatabases.build(
                environment, alias, reuse=self.keep, stands_for=self.declared.get(alias), progress=_quiet
            )
        except NoDump as exc:
            how = "" if shared.configured() else " (or set SEEDDUMP_STORAGE to pull the team's)"
            if self.require:
                raise SeeddumpError(f"seeddump: the seeded tests cannot run: {exc}{how}.") from None
            self.missing[environment] = (
                f"seeddump: the seeded tests did not run: {exc}{how}; without --seeddump-require they are skipped."
            )
            self._note(self.missing[environment])
            return
        except SeeddumpError as exc:
            raise SeeddumpError(f"seeddump: cannot build the seeded test database of '{alias}': {exc}") from None
        self.ready.add((alias, seeded.name))
        self.made.add((alias, seeded.name))
        say(seeded.describe())
        for note in seeded.notes:
            self._note(f"seeddump: {note}")
        if seeded.status.stale:
            note = seeded.status.message()
            if seeded.migrated:
                note += f" ({seeded.migrated} migration(s) applied to the seeded test database.)"
            self._note(note)

    def _note(self, note: str) -> None:
        """Once; of two that say the same, the longer (one that adds "... applied") is kept."""
        if any(kept.startswith(note) for kept in self.notes):
            return
        self.notes[:] = [kept for kept in self.notes if not note.startswith(kept)]
        self.notes.append(note)


def _aliases(klass: type) -> list[str]:
    """The seeded aliases (SEEDDUMP_PYTEST_DATABASES) the class uses, mirrors left out as Django leaves them."""
    from django.db import connections

    from seeddump.conf import conf

    databases = getattr(klass, "databases", ())
    return [
        alias
        for alias in conf.PYTEST_DATABASES
        if (databases == "__all__" or alias in databases)
        and alias in connections.settings
        and not (connections.settings[alias].get("TEST") or {}).get("MIRROR")
    ]


def _quiet(line: str) -> None:
    pass


# --- The process's session -----------------------------------------------------------------------------

_current: Seeding | None = None


def begin(seeding: Seeding) -> None:
    """Makes ``seeding`` this process's: the seeded classes use its databases."""
    global _current
    _current = seeding


def end() -> None:
    global _current
    _current = None


def resume(seeding: Seeding) -> None:
    """In a ``--parallel`` worker started with the spawn start method (``ParallelTestSuite.process_setup``): the
    runner's seeding, databases built. A forked worker inherits it."""
    begin(seeding)


def current() -> Seeding | None:
    return _current


def _session(klass: type) -> Seeding:
    if _current is None:
        raise SeeddumpError(
            f"seeddump: {klass.__qualname__} is @seeded: run the tests with seeddump's runner "
            '(TEST_RUNNER = "seeddump.testrunner.DiscoverRunner").'
        )
    return _current
