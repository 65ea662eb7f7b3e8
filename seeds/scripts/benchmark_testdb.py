"""Benchmark: the empty test database from seeddump's cache of migrated test databases, against migrating it.

    .venv/bin/python seeds/scripts/benchmark_testdb.py [--apps 16 --models 20 --migrations 25] [--url URL]

Writes a project with a long migration history (``migrations_project.py``: by default 320 tables and 400
migrations, plus Django's own, with data migrations every third step), then times, side by side in one run on
the server at URL (default: the machine's, postgres://postgres@127.0.0.1:5432; django-migrations-ci runs the
machine's pg_dump and psql, which must match it):

- pytest-django alone: ``--create-db`` (every migration) and a second ``--reuse-db`` session;
- seeddump: the first session (migrates, keeps the state), a cache hit with ``--create-db``, ``--reuse-db``, one
  migration added (a copy of the state, then that migration alone), ``pytest -n 2`` against one worker,
  ``manage.py test --parallel 2`` against ``--parallel 1``;
- django-migrations-ci (PyPI, installed into this interpreter if missing): its first and its cached session.

Each pytest session runs the project's one pytest test and two TestCase tests. "set-up" is the longest test
set-up pytest reports (pytest-django makes the test database in the first one); "session" the whole command.
Prints a table and writes it as JSON beside the project (``--json``).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(Path(__file__).resolve().parent))
import migrations_project  # noqa: E402

MIGRATIONS_CI = "django-migrations-ci==0.14"


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--apps", type=int, default=16)
    parser.add_argument("--models", type=int, default=20)
    parser.add_argument("--migrations", type=int, default=25, help="per app")
    parser.add_argument("--url", default="postgres://postgres@127.0.0.1:5432", help="server, without a database")
    parser.add_argument("--repeat", type=int, default=3, help="sessions per cache-hit and worker figure (the median)")
    parser.add_argument("--json", type=Path, default=None)
    parser.add_argument("--skip-migrations-ci", action="store_true")
    return parser.parse_args()


class Project:
    def __init__(self, folder: Path, url: str) -> None:
        self.folder = folder
        self.env = {
            **{k: v for k, v in os.environ.items() if not k.startswith(("DJANGO_", "SEEDDUMP_", "PYTEST_"))},
            "DATABASE_URL": f"{url.rstrip('/')}/bench_testdb",
            "SEEDDUMP_DIR": str(folder / "dumps"),
            "PYTHONPATH": os.pathsep.join([str(REPO), str(folder)]),
            "PYTHONDONTWRITEBYTECODE": "1",
        }

    def run(self, argv: list[str], **env: str) -> tuple[float, str]:
        started = time.perf_counter()
        result = subprocess.run(argv, cwd=self.folder, env={**self.env, **env}, capture_output=True, text=True)
        seconds = time.perf_counter() - started
        if result.returncode != 0:
            raise SystemExit(f"failed: {' '.join(argv)}\n{result.stdout[-4000:]}{result.stderr[-4000:]}")
        return seconds, result.stdout + result.stderr

    def pytest(self, *args: str, **env: str) -> tuple[float, float]:
        """(session seconds, longest test set-up seconds)."""
        argv = [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q", "--durations=0", "-vv", *args]
        seconds, output = self.run(argv, **env)
        setups = [float(s) for s in re.findall(r"^(\d+\.\d+)s setup ", output, re.MULTILINE)]
        return seconds, max(setups, default=0.0)

    def manage(self, *args: str, **env: str) -> float:
        return self.run([sys.executable, "manage.py", *args], **env)[0]


def median(repeat: int, measure: Any) -> tuple[float, float]:
    results = [measure() for _ in range(repeat)]
    return statistics.median(r[0] for r in results), statistics.median(r[1] for r in results)


def machine() -> str:
    cpu = ""
    with open("/proc/cpuinfo") as info:
        for line in info:
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    return (
        f"{os.cpu_count()} cores ({cpu}), {platform.system()} {platform.release()}, Python {platform.python_version()}"
    )


def main() -> None:
    args = parse_args()
    work = Path(tempfile.mkdtemp(prefix="seeddump-bench-testdb-"))
    try:
        measure(args, work)
    finally:  # a failed run leaves nothing on the server either: its states, test databases and project database
        if (work / "project" / "manage.py").is_file():
            Project(work / "project", args.url).run([sys.executable, "manage.py", "testcache", "--drop-all"])
        drop_databases(args.url, "%bench_testdb%")
        shutil.rmtree(work, ignore_errors=True)


def measure(args: argparse.Namespace, work: Path) -> None:
    folder = work / "project"
    migrations_project.write_project(folder, args.apps, args.models, args.migrations)
    (folder / "dumps").mkdir()
    project = Project(folder, args.url)
    off = {"SEEDDUMP_TEST_CACHE": "false"}
    r: dict[str, Any] = {
        "machine": machine(),
        "tables": args.apps * args.models,
        "migrations": args.apps * args.migrations,
    }
    drop_databases(args.url, "%bench_testdb%")
    create_database(args.url, "bench_testdb")
    project.manage("testcache", "--drop-all")

    def runner(parallel: str) -> tuple[float, float]:
        return project.manage("test", "tests", "--noinput", "--parallel", parallel), 0.0

    r["pytest_django_create_db"] = project.pytest("--create-db", **off)
    project.pytest("--reuse-db", **off)
    r["pytest_django_reuse_db"] = project.pytest("--reuse-db", **off)
    r["seeddump_first"] = project.pytest("--create-db")
    r["seeddump_hit"] = median(args.repeat, lambda: project.pytest("--create-db"))
    project.pytest("--reuse-db")
    r["seeddump_reuse_db"] = project.pytest("--reuse-db")
    # Medians: one worker against two is a ratio of two short times, each within a few hundred milliseconds.
    r["seeddump_n1"] = median(args.repeat, lambda: project.pytest("--create-db", "-n", "1"))
    r["seeddump_n2"] = median(args.repeat, lambda: project.pytest("--create-db", "-n", "2"))
    r["runner_parallel1"] = median(args.repeat, lambda: runner("1"))[0]
    r["runner_parallel2"] = median(args.repeat, lambda: runner("2"))[0]
    r["runner_parallel2_off"] = project.manage("test", "tests", "--noinput", "--parallel", "2", **off)

    # One migration added: the copy of the state, then that migration alone (its own time measured by migrating
    # a database that has all the others: `migrate` with it, less `migrate` with nothing to do).
    app = folder / "app000"
    pristine = {path: path.read_bytes() for path in app.rglob("*.py")}
    project.manage("migrate", "-v0")
    added = migrations_project.add_migration(folder, "app000", "added_for_the_benchmark")
    startup = project.run(
        [sys.executable, "-c", "import django; django.setup()"], DJANGO_SETTINGS_MODULE="many.settings"
    )[0]
    idle = project.manage("migrate", "app001", "-v0")
    own = project.manage("migrate", "app000", added, "-v0")
    r["added_migration"] = project.pytest("--create-db")
    # "That migration's own time": what `migrate` takes to apply it, less Python's and Django's start-up (Django
    # renders the models' state of every migration before it applies one; with nothing to apply it renders it too).
    r["added_migration_alone"] = max(own - startup, 0.0)
    r["migrate_nothing_to_do"] = max(idle - startup, 0.0)
    for path in set(app.rglob("*.py")) - set(pristine):
        path.unlink()
    for path, content in pristine.items():
        path.write_bytes(content)
    project.manage("testcache", "--drop-all")
    drop_databases(args.url, "%bench_testdb%")
    create_database(args.url, "bench_testdb")

    if not args.skip_migrations_ci:
        try:
            __import__("django_migrations_ci")
        except ImportError:
            subprocess.run([sys.executable, "-m", "pip", "install", "-q", MIGRATIONS_CI], check=True)
        settings = folder / "many" / "settings.py"
        # Its cache files in the project (its default, ~/.migrateci, would carry one run's into the next).
        added = '\nINSTALLED_APPS.append("django_migrations_ci")\nMIGRATECI_LOCATION = str(BASE_DIR / "migrateci")\n'
        settings.write_text(settings.read_text() + added)
        r["migrations_ci_first"] = project.pytest("--migrateci", "--reuse-db", **off)

        def cached() -> tuple[float, float]:  # a fresh CI machine: its cache files, no test database
            drop_databases(args.url, "test_bench_testdb%")
            return project.pytest("--migrateci", "--reuse-db", **off)

        r["migrations_ci_hit"] = median(args.repeat, cached)
    report(r)
    if args.json:
        args.json.write_text(json.dumps(r, indent=2))


def drop_databases(url: str, pattern: str) -> None:
    """Drops the databases whose names are LIKE ``pattern`` (the benchmark's own) on the server."""
    import psycopg

    with psycopg.connect(f"{url.rstrip('/')}/postgres", autocommit=True) as admin:
        for (name,) in admin.execute("SELECT datname FROM pg_database WHERE datname LIKE %s", (pattern,)).fetchall():
            admin.execute(psycopg.sql.SQL("DROP DATABASE {} WITH (FORCE)").format(psycopg.sql.Identifier(name)))


def create_database(url: str, name: str) -> None:
    import psycopg

    with psycopg.connect(f"{url.rstrip('/')}/postgres", autocommit=True) as admin:
        admin.execute(psycopg.sql.SQL("CREATE DATABASE {}").format(psycopg.sql.Identifier(name)))


def report(r: dict[str, Any]) -> None:
    migrate = r["pytest_django_create_db"][1]
    lines = [
        f"Machine: {r['machine']}",
        f"Project: {r['tables']} tables, {r['migrations']} migrations (plus Django's), PostgreSQL at --url",
        "",
        "| pytest session (one test + two TestCase tests) | session | test database set-up |",
        "|---|---|---|",
        _row("pytest-django `--create-db` (migrates)", r["pytest_django_create_db"]),
        _row("pytest-django `--reuse-db` (kept)", r["pytest_django_reuse_db"]),
        _row("seeddump, first session (migrates, keeps the state)", r["seeddump_first"]),
        _row("seeddump, cache hit, `--create-db`", r["seeddump_hit"]),
        _row("seeddump, `--reuse-db` (kept)", r["seeddump_reuse_db"]),
        _row("seeddump, one migration added", r["added_migration"]),
        _row("seeddump, `-n 1`", r["seeddump_n1"]),
        _row("seeddump, `-n 2` (each worker a copy)", r["seeddump_n2"]),
    ]
    if "migrations_ci_first" in r:
        lines += [
            _row("django-migrations-ci, first (`--migrateci --reuse-db`)", r["migrations_ci_first"]),
            _row("django-migrations-ci, cached", r["migrations_ci_hit"]),
        ]
    hit = r["seeddump_hit"]
    lines += [
        "",
        f"manage.py test --parallel 1 / 2 with seeddump: {r['runner_parallel1']:.2f} s / "
        f"{r['runner_parallel2']:.2f} s ({r['runner_parallel2'] / r['runner_parallel1']:.2f} x); --parallel 2 "
        f"without: {r['runner_parallel2_off']:.2f} s",
        f"cache hit set-up: {hit[1]:.2f} s = {100 * hit[1] / migrate:.1f} % of the migrating set-up ({migrate:.1f} s); "
        f"whole session {hit[0] / r['pytest_django_create_db'][0]:.3f} x",
        f"one migration added: set-up {r['added_migration'][1]:.2f} s; the hit's {hit[1]:.2f} s + migrate applying it "
        f"{r['added_migration_alone']:.2f} s + 1 s = {hit[1] + r['added_migration_alone'] + 1:.2f} s (migrate with "
        f"nothing to do: {r['migrate_nothing_to_do']:.2f} s)",
        f"-n 2: longest worker set-up {r['seeddump_n2'][1]:.2f} s = "
        f"{r['seeddump_n2'][1] / max(r['seeddump_n1'][1], 0.01):.2f} x one worker's",
    ]
    if "migrations_ci_hit" in r:
        mci = r["migrations_ci_hit"][0] / r["pytest_django_create_db"][0]
        lines.append(f"django-migrations-ci cached session: {mci:.3f} x the migrating one")
    print("\n".join(lines))


def _row(what: str, result: tuple[float, float]) -> str:
    return f"| {what} | {result[0]:.2f} s | {result[1]:.2f} s |"


if __name__ == "__main__":
    main()
