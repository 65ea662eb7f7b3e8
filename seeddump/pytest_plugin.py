"""pytest plugin: the tests that ask for it see the data of the latest seeddump dump.

    @pytest.mark.seeddump                  # this test (a class, or a module with pytestmark) sees the dump's data
    @pytest.mark.seeddump("staging")       # ... of another environment's dump
    def test_report(seeded_db): ...        # the same, as a fixture
    pytest --seeddump-all                  # every test of the session that uses the database does

The other tests keep pytest-django's empty, migrated test database, in the same session. A seeded test
is pointed (for its whole duration, before pytest-django opens its transaction) at a seeded database
beside pytest-django's (``seeddump.testdatabases``), built once per session and xdist worker from the
snapshot cache, and rebuilt after a transactional test, whose flush empties it. ``--reuse-db`` keeps it
between sessions while its label still describes its data. With a shared storage (SEEDDUMP_STORAGE) the
session pulls a newer dump first, once (in the xdist controller). Without any dump the seeded tests are
skipped with one line saying how to get one (``--seeddump-require``: they fail), and every other test runs. A
dump that cannot be used stops the session with one line; a stale dump is migrated forward and said once at
the end of the session.
"""

from __future__ import annotations

import contextlib
import os
import unittest
from collections.abc import Iterator
from typing import Any, NoReturn

import pytest

MARKER = "seeddump"
_FIXTURE = "_seeddump_database"
_DATABASE_FIXTURES = frozenset(
    {"db", "transactional_db", "django_db_reset_sequences", "django_db_serialized_rollback", "live_server"}
)
_TRANSACTIONAL_FIXTURES = frozenset({"transactional_db", "django_db_reset_sequences", "live_server"})
_NOTES = "seeddump_notes"
_BUILT = "seeddump_built"


class _Seeding:
    """This session's (or xdist worker's) seeded databases, by environment and alias."""

    def __init__(self, config: pytest.Config) -> None:
        self.config = config
        self.ready_names: dict[str, dict[str, str]] = {}
        self.made: set[tuple[str, str]] = set()  # (alias, name) built by this session
        self.notes: list[str] = []  # said once at the end of the session
        self.built: list[str] = []  # how each seeded database was made
        self.failure: str | None = None
        self.missing: dict[str, str] = {}  # environment: why its seeded tests skip (or fail)
        self.pulled: set[str] = set()  # environments whose shared dump this session already asked for
        self.declared: dict[str, str] = {}  # alias: its database's NAME before pytest-django's test name

    # As pytest-django treats its own test database: --create-db rebuilds it at the start of the session,
    # --reuse-db keeps it at the end (with both: recreated now, reused next time).
    @property
    def reuse(self) -> bool:
        """An existing seeded database may be kept (if it still holds the seed) instead of rebuilt."""
        return self.keep and not bool(getattr(self.config.option, "create_db", False))

    @property
    def keep(self) -> bool:
        """The seeded databases outlive the session, for the next --reuse-db session."""
        return bool(getattr(self.config.option, "reuse_db", False))

    def ready(self, request: pytest.FixtureRequest, environment: str) -> dict[str, str]:
        from seeddump import testdatabases
        from seeddump.conf import conf
        from seeddump.exceptions import NoDump, SeeddumpError

        if self.failure:
            _stop(request, self.failure)
        if environment in self.missing:
            _without_dump(request, self.missing[environment])
        if environment in self.ready_names:
            return self.ready_names[environment]
        # A serial session asks the shared storage once per environment; xdist workers never (the controller
        # did, before they started: pytest_sessionstart).
        if environment not in self.pulled and not hasattr(self.config, "workerinput"):
            self.pulled.add(environment)
            try:
                testdatabases.pull(environment, progress=lambda line: _add_note(self.notes, f"seeddump: {line}"))
            except SeeddumpError as exc:
                self.failure = f"seeddump: cannot pull the {environment} dump from the shared storage: {exc}"
            if self.failure:
                _stop(request, self.failure)
        names = {}
        for alias in conf.PYTEST_DATABASES:
            try:
                seeded = testdatabases.build(
                    environment,
                    alias,
                    reuse=self.reuse,
                    trust=_trusted(self.config),
                    stands_for=self.declared.get(alias),
                )
            except NoDump as exc:
                self.missing[environment] = _missing_line(self.config, exc)
                _add_note(self.notes, self.missing[environment])
            except SeeddumpError as exc:
                self.failure = f"seeddump: cannot build the seeded test database of '{alias}': {exc}"
            if self.failure:  # outside the except clause: the message alone, no chained exception
                _stop(request, self.failure)
            if environment in self.missing:
                _without_dump(request, self.missing[environment])
            names[alias] = seeded.name
            self.made.add((alias, seeded.name))
            self.built.append(seeded.describe())
            for note in seeded.notes:
                _add_note(self.notes, f"seeddump: {note}")
            if seeded.media and self.config.get_verbosity() > 0:
                _add_note(
                    self.notes,
                    f"seeddump: the {environment} dump's media ({seeded.media}) are not restored for the tests: "
                    "a seeded test database gets the dump's rows, never its files.",
                )
            if seeded.status.stale:
                note = seeded.status.message()
                if seeded.migrated:
                    note += f" ({seeded.migrated} migration(s) applied to the seeded test database.)"
                _add_note(self.notes, note)
        self.ready_names[environment] = names
        return names

    def flushed(self, environment: str) -> None:
        """A transactional test emptied the seeded databases: rebuild them before the next seeded test."""
        from seeddump import testdatabases

        for alias, name in self.ready_names.pop(environment, {}).items():
            testdatabases.forget(alias, name)

    def finish(self) -> None:
        from seeddump import testdatabases

        if not self.keep:
            for alias, name in sorted(self.made):
                testdatabases.drop(alias, name)


_SEEDING = pytest.StashKey[_Seeding]()


def _stop(request: pytest.FixtureRequest, message: str) -> NoReturn:
    """Ends the session with ``message`` and nothing else (no traceback, no error per test)."""
    if hasattr(request.config, "workerinput"):
        # An xdist worker cannot exit (the controller takes it for a crash): fail this test with the
        # message alone and run no more.
        request.session.shouldstop = message
        pytest.fail(message, pytrace=False)
    pytest.exit(message, returncode=pytest.ExitCode.USAGE_ERROR)


def _without_dump(request: pytest.FixtureRequest, line: str) -> NoReturn:
    """A seeded test with no dump to seed it: skipped, or failed with --seeddump-require."""
    if _required(request.config):
        pytest.fail(line, pytrace=False)
    pytest.skip(line)


def _missing_line(config: pytest.Config, exc: Exception) -> str:
    from seeddump import shared

    how = "" if shared.configured() else " (or set SEEDDUMP_STORAGE to pull the team's)"
    then = "they fail" if _required(config) else "without --seeddump-require they are skipped"
    return f"seeddump: the seeded tests did not run: {exc}{how}; {then}."


def _add_note(notes: list[str], note: str) -> None:
    """Adds a note once; of two that say the same, the longer (one that adds "... applied") is kept."""
    if any(kept.startswith(note) for kept in notes):
        return
    notes[:] = [kept for kept in notes if not note.startswith(kept)]
    notes.append(note)


def pytest_sessionstart(session: pytest.Session) -> None:
    """In a session or xdist worker that makes test databases: pytest-django's come from the cache of migrated
    test databases. In the xdist controller, before the workers start: pulls a newer shared dump once, and
    checks an explicitly configured environment's dump."""
    config = session.config
    controller = bool(getattr(config.option, "numprocesses", None)) and not hasattr(config, "workerinput")
    if not controller:
        _cache_test_databases(config)
        return
    from seeddump import shared, testdatabases
    from seeddump.exceptions import NoDump, SeeddumpError

    environment = _environment(config)
    reporter = config.pluginmanager.get_plugin("terminalreporter")
    try:
        if shared.configured():
            testdatabases.pull(environment, progress=lambda line: reporter and reporter.write_line(f"seeddump: {line}"))
        if _configured_environment(config) or _everyone(config):
            testdatabases.check_dump(environment)
    except NoDump:
        return  # the workers skip (or fail) the seeded tests alone, each with the line
    except SeeddumpError as exc:
        raise pytest.UsageError(f"seeddump: cannot build the seeded test databases: {exc}") from None


def _cache_test_databases(config: pytest.Config) -> None:
    """pytest-django's test databases are copies of the migrated state its code's migrations make (see
    ``seeddump.testcache``), where Django is set up with PostgreSQL databases and SEEDDUMP_TEST_CACHE is on."""
    from django.apps import apps
    from django.conf import settings

    if not settings.configured or not apps.ready:
        return
    from seeddump import sharedtestcache, testcache

    seeding = config.stash[_SEEDING]

    def say(line: str) -> None:
        _add_note(seeding.notes, line)

    pull = sharedtestcache.puller(say, trust=_trusted(config), stands_for=seeding.declared)
    testcache.install(say=say, report=seeding.built.append, pull=pull)


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("seeddump", "seeded test databases from seeddump dumps")
    group.addoption(
        "--seeddump-env",
        dest="seeddump_env",
        default=None,
        help="Environment whose latest dump seeds the tests that ask for it (default: dev).",
    )
    group.addoption(
        "--seeddump-all",
        dest="seeddump_all",
        action="store_true",
        default=None,
        help="Every test that uses the database sees the seeded data, not only those that ask for it.",
    )
    group.addoption(
        "--seeddump-require",
        dest="seeddump_require",
        action="store_true",
        default=None,
        help="Without a dump, the seeded tests fail instead of being skipped (for CI).",
    )
    group.addoption(
        "--seeddump-trust",
        dest="seeddump_trust",
        action="store_true",
        default=None,
        help="Run the dump's code as the connecting role where no throwaway member of the owner can log in "
        "(as restoredump --trust; SEEDDUMP_TRUST_DUMPS does the same).",
    )
    parser.addini("seeddump_env", "Environment whose latest dump seeds the tests that ask for it.", default="")
    parser.addini("seeddump_require", "Without a dump, the seeded tests fail.", type="bool", default=False)
    parser.addini("seeddump_all", "Every database test sees the seeded data.", type="bool", default=False)
    parser.addini("seeddump_trust", "Run the dump's code as the connecting role.", type="bool", default=False)


def _configured_environment(config: pytest.Config) -> str | None:
    value = config.getoption("seeddump_env") or config.getini("seeddump_env") or os.environ.get("SEEDDUMP_PYTEST_ENV")
    return str(value) if value else None


def _environment(config: pytest.Config) -> str:
    return _configured_environment(config) or "dev"


def _required(config: pytest.Config) -> bool:
    return bool(config.getoption("seeddump_require") or config.getini("seeddump_require"))


def _trusted(config: pytest.Config) -> bool:
    return bool(config.getoption("seeddump_trust") or config.getini("seeddump_trust"))


def _everyone(config: pytest.Config) -> bool:
    return bool(config.getoption("seeddump_all") or config.getini("seeddump_all"))


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "seeddump(env=None): the test sees the data of the latest seeddump dump of env (default: --seeddump-env, "
        "else dev) instead of an empty database; implies django_db.",
    )
    config.stash[_SEEDING] = _Seeding(config)
    _remember_declared_settings(config.stash[_SEEDING])


def _remember_declared_settings(seeding: _Seeding) -> None:
    """The migration modules as the settings declare them, before pytest-django's ``--no-migrations`` replaces
    them for its empty database (seeddump still needs them: which migrations the dump's code has); and each
    database's NAME before pytest-django gives it the test database's (its owner owns the seeded one)."""
    from django.conf import settings

    if settings.configured:
        from seeddump import codestate

        codestate.remember_declared()
        for alias, declared in settings.DATABASES.items():
            if declared.get("NAME"):
                seeding.declared[alias] = str(declared["NAME"])


def _uses_database(item: pytest.Item) -> bool:
    return item.get_closest_marker("django_db") is not None or bool(_DATABASE_FIXTURES & set(_names(item)))


def _names(item: pytest.Item) -> list[str]:
    return list(getattr(item, "fixturenames", []))


def pytest_itemcollected(item: pytest.Item) -> None:
    """Marks a seeded test as it is collected: before any pytest_collection_modifyitems, so pytest-django
    orders it with the database tests whichever plugin's hook runs first."""
    marked = item.get_closest_marker(MARKER) is not None
    if _unittest(item):
        return  # refused (marked) or left alone in pytest_collection_modifyitems
    if not (marked or "seeded_db" in _names(item) or (_everyone(item.config) and _uses_database(item))):
        return
    if marked and not _uses_database(item) and "seeded_db" not in _names(item):
        item.add_marker(pytest.mark.django_db)
    fixturenames = getattr(item, "fixturenames", None)
    if isinstance(fixturenames, list) and _FIXTURE not in fixturenames:
        # First, so that it points the connections at the seeded database before pytest-django's
        # fixtures open their transaction there, and points them back after those have finished.
        fixturenames.insert(0, _FIXTURE)


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        # A Django TestCase opens its transaction for the whole class, before any function-scoped fixture
        # could point its connection at the seeded database: it keeps pytest-django's.
        if _unittest(item) and item.get_closest_marker(MARKER) is not None:
            raise pytest.UsageError(
                f"seeddump: {item.nodeid} is a unittest TestCase; the seeddump marker works on pytest-style "
                "tests (functions and plain classes). Use one, or the seeded_db fixture in one."
            )


def _unittest(item: pytest.Item) -> bool:
    cls = getattr(item, "cls", None)
    return isinstance(cls, type) and issubclass(cls, unittest.TestCase)


def _marked_environment(item: pytest.Item) -> str | None:
    marker = item.get_closest_marker(MARKER)
    if marker is None:
        return None
    value = marker.kwargs.get("env") or (marker.args[0] if marker.args else None)
    return str(value) if value else None


def _transactional(item: pytest.Item) -> bool:
    marker = item.get_closest_marker("django_db")
    flushed_by_marker = marker is not None and bool(
        marker.kwargs.get("transaction") or marker.kwargs.get("reset_sequences")
    )
    return flushed_by_marker or bool(_TRANSACTIONAL_FIXTURES & set(_names(item)))


@pytest.fixture(scope="session")
def _seeddump_session(
    request: pytest.FixtureRequest, django_db_setup: None, django_db_blocker: Any
) -> Iterator[_Seeding]:
    seeding = request.config.stash[_SEEDING]
    yield seeding
    with django_db_blocker.unblock():
        seeding.finish()


@pytest.fixture
def _seeddump_database(
    request: pytest.FixtureRequest, _seeddump_session: _Seeding, django_db_blocker: Any
) -> Iterator[None]:
    from seeddump import postgres

    environment = _marked_environment(request.node) or _environment(request.config)
    # Building loads the project's migrations and migrates: both may query the database.
    with django_db_blocker.unblock():
        names = _seeddump_session.ready(request, environment)
    with contextlib.ExitStack() as pointed:
        for alias, name in names.items():
            pointed.enter_context(postgres.django_connection_to(alias, name))
        yield
    if _transactional(request.node):
        _seeddump_session.flushed(environment)


@pytest.fixture
def seeded_db(db: None) -> None:
    """Database access, with the data of the latest seeddump dump (see the ``seeddump`` marker)."""


def pytest_sessionfinish(session: pytest.Session) -> None:
    workeroutput = getattr(session.config, "workeroutput", None)
    if workeroutput is not None:  # an xdist worker: the controller says it
        seeding = session.config.stash[_SEEDING]
        workeroutput[_NOTES] = seeding.notes
        workeroutput[_BUILT] = seeding.built


@pytest.hookimpl(optionalhook=True)
def pytest_testnodedown(node: Any, error: Any) -> None:
    seeding = node.config.stash[_SEEDING]
    output = getattr(node, "workeroutput", {})
    seeding.built.extend(output.get(_BUILT, []))
    for note in output.get(_NOTES, []):
        _add_note(seeding.notes, note)


def pytest_terminal_summary(terminalreporter: Any, config: pytest.Config) -> None:
    seeding = config.stash[_SEEDING]
    for line in sorted(seeding.built):
        terminalreporter.write_line(line)
    for note in seeding.notes:
        terminalreporter.write_line(note, yellow=True)
