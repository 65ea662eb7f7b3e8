"""The cache of migrated test databases: a project's pytest-django and ``manage.py test`` sessions, in
subprocesses, get their empty test database as a copy of the state its migrations made, on both servers."""

from __future__ import annotations

import hashlib
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from django.conf import settings as django_settings
from django.db import connections
from psycopg import sql

from seeddump import databases, postgres, testcache
from tests.conftest import REPO, InnerProject, database_names, database_url, own_name, run_bounded, shell_env

sys.path.insert(0, str(REPO / "seeds" / "scripts"))
import migrations_project

pytestmark = pytest.mark.django_db(transaction=True, databases="__all__")


class Project(InnerProject):
    def env(self, **extra: str) -> dict[str, str]:
        return shell_env(
            DATABASE_URL=database_url(self.alias, self.name),
            SEEDDUMP_DIR=str(self.dumps),
            SEEDDUMP_PG_BIN_DIRS=",".join(str(p) for p in django_settings.SEEDDUMP_PG_BIN_DIRS),  # the server's
            PYTHONPATH=str(REPO),
            PYTHONUNBUFFERED="1",
            PYTHONDONTWRITEBYTECODE="1",  # a branch's migration file of the same size must not come from a .pyc
            **extra,
        )

    def pytest(self, *args: str, **env: str) -> subprocess.CompletedProcess:
        argv = [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-s", "-v", "tests", *args]
        return self._run(argv, env)

    def manage_test(self, *args: str, **env: str) -> subprocess.CompletedProcess:
        argv = [sys.executable, "manage.py", "test", "tests", "--noinput", "-v", "2", *args]
        return self._run(argv, env)

    def manage(self, *args: str, **env: str) -> subprocess.CompletedProcess:
        return self._run([sys.executable, "manage.py", *args], env)

    def _run(self, argv: list[str], env: dict[str, str]) -> subprocess.CompletedProcess:
        connections.close_all()
        result = run_bounded(argv, cwd=self.folder, env=self.env(**env), timeout=300)
        assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
        return result

    def states(self) -> list[testcache.State]:
        with postgres.connect_maintenance(connections[self.alias].settings_dict) as admin:
            return testcache.states(admin, directory=self.dumps)


def _project(alias: str, folder: Path, made: list[Project]) -> Project:
    name = own_name("tcache", hashlib.sha256(str(folder).encode()).hexdigest()[:8])
    dumps = folder.parent / f"{folder.name}-dumps"
    dumps.mkdir()
    made.append(Project(folder, alias, name, dumps))
    return made[-1]


@pytest.fixture
def projects(alias: str) -> Iterator[list[Project]]:
    """The projects a test made: their test databases, declared databases and caches are dropped after it."""
    made: list[Project] = []
    yield made
    with postgres.connect_maintenance(connections[alias].settings_dict) as admin:
        for project in made:
            testcache.drop_all(admin, project.dumps)
            for (database,) in admin.execute(
                "SELECT datname FROM pg_database WHERE starts_with(datname, %s) OR datname = %s",
                (f"test_{project.name}", project.name),
            ).fetchall():
                admin.execute(sql.SQL("DROP DATABASE {} WITH (FORCE)").format(sql.Identifier(database)))


@pytest.fixture
def project(alias: str, tmp_path: Path, projects: list[Project]) -> Project:
    """A project with a short migration history (3 apps, 4 models each, 6 migrations each, plus Django's),
    whose test databases and cache are its own on the alias's server."""
    folder = tmp_path / "project"
    migrations_project.write_project(folder, apps=3, models=4, migrations=6)
    return _project(alias, folder, projects)


def checkout_elsewhere(project: Project, folder: Path, projects: list[Project]) -> Project:
    """The same project on another machine (a fresh CI checkout): its own folder, dumps folder and databases,
    hence no state of the cache of its own."""
    shutil.copytree(project.folder, folder)
    return _project(project.alias, folder, projects)


def made_lines(result: subprocess.CompletedProcess) -> list[str]:
    return re.findall(r"seeddump: test database \S+ [^\n]*", result.stdout + result.stderr)


def test_a_later_session_copies_the_migrated_state_instead_of_migrating(project: Project) -> None:
    first = project.pytest("--create-db")
    (line,) = made_lines(first)
    assert "migrated from an empty database" in line, line
    (state,) = project.states()
    assert (("app002", "0006_model000_added_0006") in state.migrations) and len(state.migrations) > 18
    assert state.name in line  # "kept as <state>"

    second = project.pytest("--create-db")
    assert made_lines(second) == [f"seeddump: test database {project.test_database} copied from {state.name}."]
    assert "3 passed" in second.stdout
    # The state stays closed to connections (as kept) and is the only one.
    assert [s.name for s in project.states()] == [state.name]
    with postgres.connect_maintenance(connections[project.alias].settings_dict) as admin:
        (allowed,) = admin.execute("SELECT datallowconn FROM pg_database WHERE datname = %s", (state.name,)).fetchone()
    assert allowed is False
    # Nothing else of the session is left: pytest-django drops its test database without --reuse-db.
    assert project.test_database not in database_names(project.alias)


def test_an_added_migration_is_applied_alone_on_a_copy_and_kept(project: Project) -> None:
    project.pytest()
    (base,) = project.states()
    added = migrations_project.add_migration(project.folder, "app001", "on_this_branch")

    result = project.pytest()

    (line,) = made_lines(result)
    assert f"copied from {base.name}, 1 migration(s) applied; kept as " in line, line
    newest = project.states()[0]
    assert set(newest.migrations) == set(base.migrations) | {("app001", added)}
    # The next session copies the new state, with nothing left to apply.
    again = project.pytest()
    assert made_lines(again) == [f"seeddump: test database {project.test_database} copied from {newest.name}."]


def test_another_branch_never_uses_a_state_that_holds_a_migration_it_lacks_or_changed(project: Project) -> None:
    project.pytest()
    (base,) = project.states()
    app = project.folder / "app001"
    pristine = {path: path.read_bytes() for path in app.rglob("*.py")}
    migrations_project.add_migration(project.folder, "app001", "branch_a")
    project.pytest()
    branch_a = project.states()[0]
    for path, content in pristine.items():  # back to the base, then branch B: same name, other content
        path.write_bytes(content)
    for stale in set(app.rglob("*.py")) - set(pristine):
        stale.unlink()
    migrations_project.add_migration(project.folder, "app001", "branch_b")
    (app / "migrations" / "0007_branch_b.py").rename(app / "migrations" / "0007_branch_a.py")

    result = project.pytest()

    (line,) = made_lines(result)
    assert f"copied from {base.name}, 1 migration(s) applied" in line, line  # never branch A's state
    assert branch_a.name not in line


def test_reuse_db_remakes_a_database_from_another_branch_and_says_so_once(project: Project) -> None:
    project.pytest("--reuse-db")
    pristine = {path: path.read_bytes() for path in (project.folder / "app002").rglob("*.py")}
    added = migrations_project.add_migration(project.folder, "app002", "feature")
    migrated = project.pytest("--reuse-db")
    assert "kept from an earlier run, 1 migration(s) applied" in made_lines(migrated)[0]
    for path, content in pristine.items():  # the branch switched back: the kept database holds its migration
        path.write_bytes(content)
    (project.folder / "app002" / "migrations" / f"{added}.py").unlink()

    result = project.pytest("--reuse-db")

    said = [line for line in result.stdout.splitlines() if "held migrations that this code lacks" in line]
    assert said == [
        f"seeddump: the kept test database {project.test_database} held migrations that this code lacks or has "
        f"changed (app002.{added}); it was made again from the cache of migrated test databases."
    ]
    with postgres.connect(connections[project.alias].settings_dict, project.test_database) as conn:
        recorded = conn.execute("SELECT name FROM public.django_migrations WHERE app = 'app002'").fetchall()
    assert (added,) not in recorded and ("0006_model000_added_0006",) in recorded


def test_a_copy_never_waits_for_another_session_changing_the_cache(project: Project) -> None:
    """Recording that a state was used is a courtesy for pruning: it is skipped rather than waited for. (Waiting
    serialised xdist workers: a worker copying the state blocks the comment until its copy ends.)"""
    project.pytest("--create-db")
    (state,) = project.states()
    with postgres.connect_maintenance(connections[project.alias].settings_dict) as other:  # keeping a state
        key = (testcache._CHANGE_LOCK_CLASS, testcache.prefix(project.dumps))
        other.execute("SELECT pg_advisory_lock(%s, hashtext(%s))", key)
        second = project.pytest("--create-db", SEEDDUMP_LOCK_TIMEOUT="1")

    assert made_lines(second) == [f"seeddump: test database {project.test_database} copied from {state.name}."]
    assert [(s.name, s.used) for s in project.states()] == [(state.name, state.used)]


def test_xdist_workers_each_copy_the_state_one_worker_made(project: Project) -> None:
    cold = project.pytest("-n", "2")
    warm = project.pytest("-n", "2")

    assert sorted(re.sub(r"_gw\d", "_gwN", line).split(" ")[4] for line in made_lines(cold)) == ["copied", "migrated"]
    (state,) = project.states()  # one worker migrated, the other waited and copied
    assert sorted(made_lines(warm)) == [
        f"seeddump: test database {project.test_database}_gw{n} copied from {state.name}." for n in (0, 1)
    ]


def test_manage_py_test_with_parallel_workers_and_keepdb(project: Project) -> None:
    project.pytest()
    (state,) = project.states()

    parallel = project.manage_test("--parallel", "2")
    kept = project.manage_test("--keepdb")
    again = project.manage_test("--keepdb")

    assert f"seeddump: test database {project.test_database} copied from {state.name}." in parallel.stderr
    assert "Ran 2 tests" in parallel.stderr and "Cloning test database" in parallel.stderr
    assert f"seeddump: test database {project.test_database} copied from {state.name}." in kept.stderr
    assert f"seeddump: test database {project.test_database} kept from an earlier run." in again.stderr


def test_a_foreign_database_under_the_cache_name_is_never_used(project: Project, alias: str) -> None:
    """A database named and labelled as a state of this cache, made by another role (anyone on a shared server
    with CREATEDB can), is never copied: the test database is migrated, by this project's own migrations."""
    project.pytest()
    (state,) = project.states()
    settings_dict = connections[alias].settings_dict
    role = own_name("other")
    with postgres.connect_maintenance(settings_dict) as admin:
        label = admin.execute(
            "SELECT shobj_description(oid, 'pg_database') FROM pg_database WHERE datname = %s", (state.name,)
        ).fetchone()[0]
        testcache.drop_all(admin, project.dumps)
        admin.execute(sql.SQL("CREATE ROLE {} CREATEDB").format(sql.Identifier(role)))
        try:
            admin.execute(sql.SQL("SET ROLE {}").format(sql.Identifier(role)))
            admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(state.name)))
            databases.label(admin, state.name, __import__("json").loads(label))
            admin.execute("RESET ROLE")

            result = project.pytest()

            (line,) = made_lines(result)
            assert "migrated from an empty database" in line, line
            assert not databases.is_ours(admin, state.name)  # left alone: not ours to drop either
        finally:
            admin.execute("RESET ROLE")
            admin.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(state.name)))
            admin.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(sql.Identifier(role)))


def test_the_cache_is_bounded_and_migrations_turned_off_are_not_cached(project: Project) -> None:
    project.pytest("--no-migrations")
    assert project.states() == []  # the tables came from the models: nothing to key a state by
    project.pytest()
    migrations_project.add_migration(project.folder, "app000", "one")
    project.pytest(SEEDDUMP_TEST_CACHE_KEEP="1")
    (kept,) = project.states()
    assert ("app000", "0007_one") in kept.migrations
    result = project.pytest(SEEDDUMP_TEST_CACHE="false")
    assert made_lines(result) == []


def test_a_fresh_ci_machine_pulls_the_shared_state_instead_of_migrating(
    project: Project, projects: list[Project], tmp_path: Path
) -> None:
    storage = {"SEEDDUMP_STORAGE": "shared", "SHARED_DUMPS": str(tmp_path / "shared")}
    project.pytest(**storage)  # a CI job on main: nothing shared yet, migrated and kept here
    pushed = project.manage("testcache", "--push", **storage)
    assert re.search(r"Pushed migrated-\S+\.dump\.", pushed.stdout), pushed.stdout
    ci = checkout_elsewhere(project, tmp_path / "ci", projects)
    added = migrations_project.add_migration(ci.folder, "app002", "on_this_branch")

    result = ci.pytest(**storage)

    assert re.search(
        r"seeddump: pulled the shared migrated test database migrated-\S+\.dump \(\d+ migrations; 1 more applied "
        r"here\)\.",
        result.stdout,
    ), result.stdout
    (state,) = ci.states()
    assert state.dump.startswith("sha256:") and ("app002", added) in state.migrations
    assert made_lines(result) == [f"seeddump: test database {ci.test_database} copied from {state.name}."]


def test_no_shared_state_or_no_storage_is_one_line_and_a_migrated_database(project: Project, tmp_path: Path) -> None:
    storage = {"SEEDDUMP_STORAGE": "shared", "SHARED_DUMPS": str(tmp_path / "shared")}
    push = [sys.executable, "manage.py", "testcache", "--push"]
    nothing_kept = run_bounded(push, cwd=project.folder, env=project.env(**storage), timeout=120)
    assert nothing_kept.returncode == 1 and "Traceback" not in nothing_kept.stderr
    assert nothing_kept.stderr.strip().splitlines() == [
        "CommandError: No migrated test database of this code's migrations is kept on this server yet: run the tests "
        "once (pytest or manage.py test), then push."
    ]
    project.pytest()
    listed = project.manage("testcache")
    (state,) = project.states()
    assert listed.stdout.startswith(f"{state.name}  ") and "(fits this code)" in listed.stdout
    assert f"{state.name}  " in project.manage("snapshots").stdout  # the server's copies, listed in one place
    nowhere = run_bounded(push, cwd=project.folder, env=project.env(), timeout=120)
    assert nowhere.returncode == 1
    assert nowhere.stderr.strip().splitlines() == [
        "CommandError: SEEDDUMP_STORAGE is not set: there is nowhere to push the migrated test database."
    ]
    assert project.manage("testcache", "--drop-all").stdout == f"Dropped {state.name}\n"
    assert project.states() == []


def test_a_hostile_shared_state_runs_its_code_as_the_owner_at_most(
    project: Project, projects: list[Project], tmp_path: Path, alias: str
) -> None:
    """A shared migrated state is a dump, and a dump is code: a trigger in it that tries to make the project's
    role a superuser, fired by the migration the CI machine applies on top, runs as a throwaway member of the
    owner of the database the test database stands for, and is refused."""
    storage = {"SEEDDUMP_STORAGE": "shared", "SHARED_DUMPS": str(tmp_path / "shared")}
    settings_dict = connections[alias].settings_dict
    app = own_name("app")
    project.pytest()
    (state,) = project.states()
    with postgres.connect_maintenance(settings_dict) as admin:
        admin.execute(sql.SQL("CREATE ROLE {} LOGIN").format(sql.Identifier(app)))
        try:
            admin.execute(sql.SQL("ALTER DATABASE {} ALLOW_CONNECTIONS true").format(sql.Identifier(state.name)))
            with postgres.connect(settings_dict, state.name) as conn:
                conn.execute(
                    sql.SQL(
                        """
                        CREATE TABLE public.escalation (outcome text);
                        CREATE FUNCTION public.escalate() RETURNS trigger LANGUAGE plpgsql AS $$
                        BEGIN
                            BEGIN
                                EXECUTE 'ALTER ROLE {} SUPERUSER';
                                INSERT INTO public.escalation VALUES ('escalated as ' || current_user);
                            EXCEPTION WHEN OTHERS THEN
                                INSERT INTO public.escalation VALUES ('refused to ' || current_user);
                            END;
                            RETURN NEW;
                        END $$;
                        CREATE TRIGGER escalate AFTER INSERT ON public.django_migrations
                            FOR EACH ROW EXECUTE FUNCTION public.escalate();
                        """
                    ).format(sql.Identifier(app))
                )
            admin.execute(sql.SQL("ALTER DATABASE {} ALLOW_CONNECTIONS false").format(sql.Identifier(state.name)))
            project.manage("testcache", "--push", **storage)
            ci = checkout_elsewhere(project, tmp_path / "ci", projects)
            # The database the CI's test database stands for belongs to the project's role.
            admin.execute(sql.SQL("CREATE DATABASE {} OWNER {}").format(sql.Identifier(ci.name), sql.Identifier(app)))
            migrations_project.add_migration(ci.folder, "app000", "fires_the_trigger")

            result = ci.pytest("--reuse-db", **storage)  # kept, to read what the trigger did

            assert "seeddump: pulled the shared migrated test database" in result.stdout, result.stdout
            (super_,) = admin.execute("SELECT rolsuper FROM pg_roles WHERE rolname = %s", (app,)).fetchone()
            assert super_ is False
            with postgres.connect(settings_dict, ci.test_database) as conn:
                (outcome,) = conn.execute("SELECT outcome FROM public.escalation").fetchone()
            assert outcome == f"refused to {app}", outcome  # the sandbox's login acts as the owner, no more
            (pulled,) = ci.states()
            assert pulled.owner == app
        finally:
            for made in projects:  # before the role: what it owns goes first
                testcache.drop_all(admin, made.dumps)
                for name in (made.name, made.test_database):
                    admin.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))
            admin.execute(sql.SQL("DROP OWNED BY {}").format(sql.Identifier(app)))
            admin.execute(sql.SQL("DROP ROLE {}").format(sql.Identifier(app)))
