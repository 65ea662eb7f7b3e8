"""Fixtures shared by the tests: real PostgreSQL servers, a private dumps folder, seeded data."""

from __future__ import annotations

import contextlib
import os
import secrets
import select
import shutil
import signal
import socket
import stat
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from io import StringIO
from pathlib import Path
from typing import Any
from urllib.parse import quote

import psycopg
import pytest
from django.conf import settings as django_settings
from django.core.management import call_command
from django.db import connections

from seeddump import driver, dumpfiles, finishing, postgres, snapshots, undo
from tests import suite_runs

REPO = Path(__file__).resolve().parent.parent
ALIASES = ["default", "system"]


def own_name(kind: str, token: str = "") -> str:
    """A name for a database or role a test makes on a server the suite shares: ``sdt_<RUN>_<kind>_<token>`` (a
    random token unless given), so that two runs at once never meet, and what a killed run made is dropped by the
    next (tests/suite_runs.py). Keep ``kind`` short: PostgreSQL cuts names at 63 bytes."""
    return f"{suite_runs.own_prefix(django_settings.RUN)}{kind}_{token or secrets.token_hex(3)}"


def unavailable(reason: str) -> None:
    """Skips with ``reason`` on a laptop; fails under CI, which must run every test."""
    if os.environ.get("CI"):
        pytest.fail(f"CI must run this test: {reason}")
    pytest.skip(reason)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Every test that runs against the machine's server says why when that server is missing."""
    if not django_settings.SYSTEM_UNAVAILABLE:
        return
    skip = pytest.mark.skip(reason=f"system PostgreSQL not reachable: {django_settings.SYSTEM_UNAVAILABLE}")
    for item in items:
        callspec = getattr(item, "callspec", None)
        if callspec is not None and callspec.params.get("alias") == "system":
            item.add_marker(skip)


@pytest.fixture(scope="session", autouse=True)
def _this_run_marked_alive(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """First drops what interrupted earlier runs of the suite left on each server (theirs only: runs still going
    are left alone), then says there that this run is alive until it ends (tests/suite_runs.py)."""
    temporary = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):
        temporary = temporary.parent  # the run's folder, above each worker's
    held = []
    for alias in connections.settings:
        settings_dict = connections[alias].settings_dict
        admin = postgres.connect_maintenance(settings_dict)
        suite_runs.drop_what_ended_runs_left(admin, settings_dict)
        suite_runs.mark_alive(admin, django_settings.RUN, temporary)
        held.append(admin)
    yield
    for admin in held:
        with contextlib.suppress(driver.Error):
            suite_runs.mark_ended(admin, django_settings.RUN)
        admin.close()


@pytest.fixture(params=ALIASES)
def alias(request: pytest.FixtureRequest) -> str:
    """The database alias under test: the embedded server, then the machine's."""
    return request.param


@pytest.fixture(autouse=True)
def media_root(tmp_path: Path, settings: Any) -> Path:
    """Each test's own MEDIA_ROOT (made when something writes to it)."""
    settings.MEDIA_ROOT = str(tmp_path / "media")
    return tmp_path / "media"


@pytest.fixture
def dumps_dir(tmp_path: Path, settings: Any) -> Iterator[Path]:
    """A private dumps folder; the snapshots cached for it (or for the folder the test switched to, such as a
    teammate's) are dropped afterwards on every server."""
    directory = tmp_path / "dumps"
    settings.SEEDDUMP_DIR = directory
    yield directory
    folders = {directory, Path(settings.SEEDDUMP_DIR)}
    for alias in connections.settings:
        with postgres.connect_maintenance(connections[alias].settings_dict) as admin:
            for folder in folders:
                snapshots.drop_all(admin, folder)
            target = connections[alias].settings_dict["NAME"]
            undo.drop(admin, target)  # what its restores kept for an undo
            undo.drop_pending(admin, target)  # and what a killed in-place restore left
            finishing.drop_leftovers(admin, target)


@dataclass
class Result:
    out: str
    err: str


def run_command(name: str, *args: str, **options: Any) -> Result:
    """Calls a management command as a user does and returns what it wrote."""
    out, err = StringIO(), StringIO()
    call_command(name, *args, stdout=out, stderr=err, **options)
    return Result(out.getvalue(), err.getvalue())


def table_rows(alias: str, table: str) -> list[tuple[Any, ...]]:
    with connections[alias].cursor() as cursor:
        cursor.execute(f'SELECT * FROM "{table}" ORDER BY 1')
        return cursor.fetchall()


def demo_snapshot(alias: str) -> dict[str, list[tuple[Any, ...]]]:
    """Every row of the demo tables, in primary-key order."""
    tables = ("reality_team", "reality_agent", "reality_node", "emblems_emblem")
    return {table: table_rows(alias, table) for table in tables}


def schema_snapshot(alias: str) -> list[tuple[Any, ...]]:
    """Columns, constraints and indexes of the public schema."""
    with connections[alias].cursor() as cursor:
        cursor.execute(
            """
            SELECT 'column', table_name, column_name || ' ' || data_type || ' ' || is_nullable
            FROM information_schema.columns WHERE table_schema = 'public'
            UNION ALL
            SELECT 'index', tablename, indexdef FROM pg_indexes WHERE schemaname = 'public'
            UNION ALL
            SELECT 'constraint', conrelid::regclass::text, pg_get_constraintdef(oid)
            FROM pg_constraint WHERE connamespace = 'public'::regnamespace
            ORDER BY 1, 2, 3
            """
        )
        return cursor.fetchall()


def database_names(alias: str) -> set[str]:
    with connections[alias].cursor() as cursor:
        cursor.execute("SELECT datname FROM pg_database")
        return {name for (name,) in cursor.fetchall()}


def leftovers(alias: str) -> list[str]:
    """Scratch and replaced databases of the alias's own (test) database: never another project's."""
    target = connections[alias].settings_dict["NAME"]
    prefixes = (finishing.scratch_prefix(target), finishing.retired_prefix(target))
    return [name for name in database_names(alias) if name.startswith(prefixes)]


def _seed_and_dump(alias: str, directory: Path, media_root: Path, *options: str) -> Path:
    """Seeds the alias's test database (scale 1), dumps it into ``directory``, then empties the tables."""
    from django.test import override_settings

    with override_settings(SEEDDUMP_DIR=directory, MEDIA_ROOT=str(media_root)):
        call_command("seed", "dev", scale=1, database=alias, verbosity=0)
        result = run_command("generatedump", "dev", *options, database=alias, verbosity=0)
    with connections[alias].cursor() as cursor:
        cursor.execute(
            "TRUNCATE emblems_emblem, reality_node, reality_agent, reality_team, seeddump_dumprecord CASCADE"
        )
    return Path(result.out.strip().splitlines()[-1])


@pytest.fixture(scope="session")
def seeded_dumps(
    tmp_path_factory: pytest.TempPathFactory, django_db_setup: None, django_db_blocker: Any
) -> dict[str, Path]:
    """One seeded dump per server, made once per session: {alias: dump path}."""
    with django_db_blocker.unblock():
        return {
            alias: _seed_and_dump(
                alias, tmp_path_factory.mktemp(f"seeded-{alias}"), tmp_path_factory.mktemp(f"seeded-media-{alias}")
            )
            for alias in ALIASES
            if alias in connections.settings
        }


@dataclass(frozen=True)
class MediaDump:
    path: Path  # the dump; its media archive lies beside it
    files: dict[str, bytes]  # what MEDIA_ROOT held when it was made


def files_of(folder: Path) -> dict[str, bytes]:
    """Every file under ``folder`` (relative name -> bytes); links are listed as ``-> target``."""
    found: dict[str, bytes] = {}
    for path in sorted(folder.rglob("*")):
        name = path.relative_to(folder).as_posix()
        if path.is_symlink():
            found[name] = b"-> " + os.fsencode(os.readlink(path))
        elif path.is_file():
            found[name] = path.read_bytes()
    return found


@pytest.fixture(scope="session")
def media_dumps(
    tmp_path_factory: pytest.TempPathFactory, django_db_setup: None, django_db_blocker: Any
) -> dict[str, MediaDump]:
    """One seeded dump with media (the demo's emblems) per server, made once per session."""
    made: dict[str, MediaDump] = {}
    with django_db_blocker.unblock():
        for alias in ALIASES:
            if alias in connections.settings:
                media_root = tmp_path_factory.mktemp(f"media-root-{alias}")
                directory = tmp_path_factory.mktemp(f"media-dumps-{alias}")
                dump = _seed_and_dump(alias, directory, media_root, "--media")
                made[alias] = MediaDump(dump, files_of(media_root))
    return made


def copy_dump(dump: Path, directory: Path, *, latest: bool = True) -> Path:
    """Copies a dump and its metadata into ``directory`` (as the newest of its environment)."""
    directory.mkdir(parents=True, exist_ok=True)
    target = directory / dump.name
    shutil.copy2(dump, target)
    shutil.copy2(dumpfiles.metadata_path(dump), dumpfiles.metadata_path(target))
    if dumpfiles.media_path(dump).is_file():
        shutil.copy2(dumpfiles.media_path(dump), dumpfiles.media_path(target))
    if latest:
        dumpfiles.point_latest(target, dumpfiles.DUMP_NAME_RE.fullmatch(dump.name)["env"])  # type: ignore[index]
    return target


@pytest.fixture
def seeded_dump(alias: str, seeded_dumps: dict[str, Path], dumps_dir: Path) -> Path:
    """The session's seeded dump for ``alias``, copied into this test's dumps folder as dev's latest."""
    return copy_dump(seeded_dumps[alias], dumps_dir)


def database_url(alias: str, name: str | None = None, user: str | None = None) -> str:
    """A DATABASE_URL for the alias's test database (or another database on its server, or as another role)."""
    sd = connections[alias].settings_dict
    user = quote(user or sd["USER"] or "")
    password = f":{quote(str(sd['PASSWORD']))}" if sd.get("PASSWORD") else ""
    host, port = str(sd["HOST"] or ""), f":{sd['PORT']}" if sd.get("PORT") else ""
    if host.startswith("/"):  # a socket folder goes in the path
        return f"postgres://{user}{password}@/{host}/{name or sd['NAME']}"
    return f"postgres://{user}{password}@{host}{port}/{name or sd['NAME']}"


def manage_env(alias: str, dumps_dir: Path, env: dict[str, str] | None = None) -> dict[str, str]:
    """The environment of a ``manage.py`` process against the alias's test database."""
    return {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "project.settings",
        "DATABASE_URL": database_url(alias),
        "SEEDDUMP_DIR": str(dumps_dir),
        "SEEDDUMP_PG_BIN_DIRS": ",".join(str(p) for p in django_settings.SEEDDUMP_PG_BIN_DIRS),
        "PYTHONUNBUFFERED": "1",
        "SEEDDUMP_BACKGROUND": "false",  # see tests/settings.py
        "SEEDDUMP_LOCK_TIMEOUT": "60",  # a stuck test fails alone, long before CI's limit
        "MEDIA_ROOT": str(django_settings.MEDIA_ROOT),
        "SEEDDUMP_MEDIA": "false",  # see tests/settings.py
        **(env or {}),
    }


def manage(
    *args: str, alias: str, dumps_dir: Path, env: dict[str, str] | None = None, stdin: str | None = None
) -> subprocess.CompletedProcess:
    """Runs ``python manage.py ...`` in a new process against the alias's test database.

    This process's connections are closed first: a restore in the child ends every other session on
    the database it replaces, and the next query here reconnects.
    """
    connections.close_all()
    argv = [sys.executable, "manage.py", *args]
    return run_bounded(argv, cwd=REPO, env=manage_env(alias, dumps_dir, env), stdin=stdin or "", timeout=180)


def run_bounded(
    argv: list[str], *, cwd: Path, env: dict[str, str], stdin: str = "", timeout: float
) -> subprocess.CompletedProcess:
    """Runs a process in a session of its own; past ``timeout`` it is killed with whatever it started."""
    process = subprocess.Popen(
        argv,
        cwd=cwd,
        env=env,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        out, err = process.communicate(stdin, timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.communicate()
        raise
    return subprocess.CompletedProcess(argv, process.returncode, out, err)


def shell_env(**extra: str) -> dict[str, str]:
    """A developer's shell in another project: none of this test session's Django, seeddump or pytest settings."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DJANGO_", "SEEDDUMP_", "PYTEST_", "VIRTUAL_"))}
    env.pop("PYTHONPATH", None)
    return {**env, **extra}


_started: list[subprocess.Popen] = []


@pytest.fixture(autouse=True)
def _kill_started_processes() -> Iterator[None]:
    """Every process a test started with ``start_manage`` (and what it started: its pg_restore, a gate
    wrapper) is killed when the test ends, so that a failing test cannot leave a restore holding a lock
    that every later test would wait for."""
    yield
    while _started:
        process = _started.pop()
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)  # its own session: its process group
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.communicate(timeout=30)


def start_manage(*args: str, alias: str, dumps_dir: Path, env: dict[str, str] | None = None) -> subprocess.Popen:
    """Starts ``python manage.py ...`` in its own session, without waiting for it (killed with the test)."""
    connections.close_all()
    process = subprocess.Popen(
        [sys.executable, "manage.py", *args],
        cwd=REPO,
        env=manage_env(alias, dumps_dir, env),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    _started.append(process)
    return process


def wait_for_exit(pid: int, timeout: float = 120) -> None:
    """Blocks until the process ``pid`` has exited, such as restoredump's background process (not our child,
    so no waitpid: its pidfd becomes readable when it exits)."""
    try:
        fd = os.pidfd_open(pid)
    except ProcessLookupError:
        return  # already gone
    try:
        ready, _, _ = select.select([fd], [], [], timeout)
        assert ready, f"process {pid} still running after {timeout}s"
    finally:
        os.close(fd)


def psycopg_connect(alias: str, name: str) -> psycopg.Connection:
    """A direct connection to another database on the alias's server, searching the schemas the project does."""
    return as_the_project(postgres.connect(connections[alias].settings_dict, name))


def as_the_project(conn: psycopg.Connection) -> psycopg.Connection:
    """seeddump's own sessions search the system catalog only (postgres.SAFE_SEARCH_PATH); a test that acts as
    the project (its tables by their bare names, CREATE EXTENSION into public) gets the database's own path."""
    conn.execute("RESET search_path")
    return conn


@pytest.fixture
def migrated_back_at_the_end(alias: str) -> Iterator[None]:
    """Tests that move the schema around leave it fully migrated for the next test."""
    yield
    connections[alias].close()
    with connections[alias].cursor() as cursor:
        cursor.execute("DELETE FROM django_migrations WHERE name = '0099_from_another_branch'")
    call_command("migrate", database=alias, verbosity=0)


@pytest.fixture
def cleanup_databases() -> Iterator[list[tuple[str, str]]]:
    """Databases a test creates by hand, dropped afterwards: append (alias, name)."""
    created: list[tuple[str, str]] = []
    yield created
    for alias, name in created:
        with connections[alias].cursor() as cursor:
            cursor.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
def spy_bin(alias: str, tmp_path: Path, settings) -> Iterator[Path]:
    """pg_dump and pg_restore wrappers that log the argv and environment they get, then run the real ones."""
    folder = tmp_path / "spy-bin"
    folder.mkdir()
    log = tmp_path / "spy.log"
    for name in ("pg_dump", "pg_restore"):
        real = postgres.find_program(name, connections[alias].pg_version // 10000).path
        script = folder / name
        script.write_text(
            "#!/bin/sh\n"
            f'printf "%s\\n" "ARGV $0 $*" >> "{log}"\n'
            f'[ -n "$PGPASSWORD" ] && printf "%s\\n" "ENV has PGPASSWORD" >> "{log}"\n'
            f'env | grep "^PG" | grep -v "^PGPASSWORD=" | sed "s/^/ENV /" >> "{log}"\n'
            f'exec "{real}" "$@"\n'
        )
        script.chmod(script.stat().st_mode | stat.S_IXUSR)
    postgres._probe.cache_clear()
    settings.SEEDDUMP_PG_BIN_DIRS = [folder]
    yield log
    postgres._probe.cache_clear()


@pytest.fixture
def reality_migrations(tmp_path: Path, settings: Any, monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[..., Path]]:
    """Makes the demo's reality migrations those of another checkout or branch: ``copy(package, folder)`` copies
    them into ``folder/package`` (default: the test's tmp_path), importable and the app's MIGRATION_MODULES."""
    made: list[str] = []

    def copy(package: str, folder: Path | None = None) -> Path:
        folder = folder or tmp_path
        target = folder / package
        shutil.copytree(
            REPO / "project" / "reality" / "migrations", target, ignore=shutil.ignore_patterns("__pycache__")
        )
        monkeypatch.syspath_prepend(str(folder))
        settings.MIGRATION_MODULES = {"reality": package}
        made.append(package)
        return target

    yield copy
    for name in [name for name in sys.modules if name.split(".")[0] in made]:
        del sys.modules[name]  # the next test's copy is another folder


def write_reality_migration(package: Path, name: str, operations: str, preamble: str = "") -> None:
    """A migration ``name`` after reality.0002_node_rank in ``package``, with these operations (Python source)."""
    (package / f"{name}.py").write_text(
        f"from django.db import migrations\n\n{preamble}\n"
        "class Migration(migrations.Migration):\n"
        "    dependencies = [('reality', '0002_node_rank')]\n"
        f"    operations = {operations}\n"
    )


@pytest.fixture(scope="module")
def s3_server() -> Iterator[str]:
    """moto's S3 server on loopback, as a real HTTP server the S3 client talks to."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    server = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while True:  # wait for it to listen, bounded
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            break
        except OSError:
            assert time.monotonic() < deadline, "moto's S3 server did not start"
            time.sleep(0.1)
    yield url
    server.terminate()
    server.wait(timeout=10)


@dataclass
class InnerProject:
    """A project of a test's own, run in subprocesses against a database named for it on the alias's server."""

    folder: Path
    alias: str
    name: str  # its database's NAME; Django's test database is test_<name>
    dumps: Path

    @property
    def test_database(self) -> str:
        return f"test_{self.name}"
