"""Scale benchmark: seeddump against plain pg_dump/pg_restore at about 250 MB, 1 GB and 4 GB, with clones.

    .venv/bin/python seeds/scripts/benchmark_scale.py [--sizes 250,1000,4000] [--seed-scale 10]

For each size it builds a database with bulk SQL (the demo's migrations, then three tables filled with
generate_series: accounts, events with two indexes and a foreign key, documents with jsonb) on the embedded
PostgreSQL 18, then times, each as a whole process:

- `generatedump` against `pg_dump -Fc` + a bare `manage.py help` (time and file size);
- a cold `restoredump` (cache dropped) against `createdb` + `pg_restore -j<cores>` + `manage.py help`;
- a warm `restoredump` (the ready copy), and a second `restoredump` started the moment a cold one returns
  (back to back: the first one's background work is still running);
- on a second PostgreSQL 18 whose data directory is on XFS with reflinks (a loop-mounted image; needs root
  and mkfs.xfs), a cold `restoredump` (which caches a clone) and a restore from that snapshot with no ready
  copy, with the disk the cache adds (the filesystem's used bytes, measured after the background work);
- the peak memory of seeddump's processes: the command with what it waited for (wait4), and the background
  process (which logs its own).

The demo's row-by-row `seed` runs once, at --seed-scale, for the restore-vs-seed ratio; the chart draws it at
its measured size and, dashed, at the same seconds per MB beyond. Writes scale.json and scale.md to --out and
the chart to docs/benchmark-scale.svg. Not part of the test run; it needs about 25 GB of free disk at 4 GB.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any
from urllib.parse import quote

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "seeds" / "scripts"))

from benchmark import as_users_run, drop, machine, wait_for_exit  # noqa: E402

DB = "seeddump_scale"
PLAIN_DB = "seeddump_scale_plain"
SEED_DB = "seeddump_scale_seed"
CHART = REPO / "docs" / "benchmark-scale.svg"

_FILL = """
CREATE TABLE IF NOT EXISTS bulk_account (id bigint PRIMARY KEY, name text NOT NULL, created_at timestamptz NOT NULL);
CREATE TABLE IF NOT EXISTS bulk_event (
    id bigint PRIMARY KEY, account_id bigint NOT NULL, created_at timestamptz NOT NULL, kind text NOT NULL,
    payload text NOT NULL);
CREATE TABLE IF NOT EXISTS bulk_document (id bigint PRIMARY KEY, body jsonb NOT NULL);
"""
_BATCH = """
INSERT INTO bulk_account SELECT g, 'account ' || g, now() - g * interval '1 minute'
  FROM generate_series({a0}::bigint + 1, {a1}) g;
INSERT INTO bulk_event SELECT g, 1 + (g * 7919) % {accounts}, now() - g * interval '1 second',
  (ARRAY['login','view','edit','share','delete'])[1 + g % 5], md5(g::text) || md5((g * 31)::text)
  FROM generate_series({e0}::bigint + 1, {e1}) g;
INSERT INTO bulk_document SELECT g, jsonb_build_object('n', g, 'title', 'doc ' || g, 'tags',
  jsonb_build_array(g % 7, g % 11), 'text', md5(g::text))
  FROM generate_series({d0}::bigint + 1, {d1}) g;
"""
_INDEXES = """
CREATE INDEX IF NOT EXISTS bulk_event_account_created ON bulk_event (account_id, created_at);
CREATE INDEX IF NOT EXISTS bulk_event_kind ON bulk_event (kind);
ALTER TABLE bulk_event ADD CONSTRAINT bulk_event_account_fk FOREIGN KEY (account_id) REFERENCES bulk_account (id);
ANALYZE;
"""
_EVENTS_PER_BATCH = 1_000_000


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="250,1000,4000", help="database sizes in MB (default 250,1000,4000)")
    parser.add_argument("--seed-scale", type=int, default=10, help="demo seed --scale for the seed ratio")
    parser.add_argument("--repeat", type=int, default=3, help="runs per figure up to --repeat-up-to MB (median)")
    parser.add_argument("--repeat-up-to", type=int, default=1000, help="larger sizes are run once (default 1000)")
    parser.add_argument("--out", type=Path, default=REPO / "bench-results", help="where to write the results")
    parser.add_argument("--no-clones", action="store_true", help="skip the XFS server (no root or mkfs.xfs)")
    return parser.parse_args()


class Runner:
    """Runs manage.py and the PostgreSQL programs against one server, timing whole processes."""

    def __init__(self, url: str, dumps: Path, bin_dir: Path, pg_env: dict[str, str]) -> None:
        self.env = {
            **os.environ,
            "DJANGO_SETTINGS_MODULE": "project.settings",
            "DATABASE_URL": url,
            "SEEDDUMP_DIR": str(dumps),
            "SEEDDUMP_VERSION": "scale",
            "SEEDDUMP_MEDIA": "false",
            "SEEDDUMP_PG_BIN_DIRS": str(bin_dir),
            "SEEDDUMP_LOCK_TIMEOUT": "3600",
        }
        as_users_run(self.env)
        self.pg_env = {**self.env, **pg_env}
        self.bin_dir = bin_dir
        self.dumps = dumps
        self.peak_kb = 0  # the largest seeddump process (with what it waited for) so far

    def run(self, argv: list[str], *, manage: bool = False, env: dict[str, str] | None = None) -> tuple[float, str]:
        """Seconds and standard output; a manage.py process's peak memory is kept."""
        argv = [sys.executable, "manage.py", *argv] if manage else [str(self.bin_dir / argv[0]), *argv[1:]]
        started = time.perf_counter()
        with tempfile.TemporaryFile("w+") as errors:
            process = subprocess.Popen(
                argv,
                cwd=REPO,
                env={**(self.env if manage else self.pg_env), **(env or {})},
                stdout=subprocess.PIPE,
                stderr=errors,
                text=True,
            )
            assert process.stdout is not None
            out = process.stdout.read()
            # wait4, not wait: the process's own peak memory, with that of what it waited for (its pg_dump or
            # pg_restore), and no other process's.
            _, status, usage = os.wait4(process.pid, 0)
            process.returncode = os.waitstatus_to_exitcode(status)
            seconds = time.perf_counter() - started
            errors.seek(0)
            err = errors.read()
        if process.returncode != 0:
            raise SystemExit(f"benchmark: {' '.join(argv[:4])} failed:\n{out}{err}")
        if manage and argv[2] in ("generatedump", "restoredump", "snapshots"):  # seeddump's, not the demo's seed
            self.peak_kb = max(self.peak_kb, usage.ru_maxrss)
        return seconds, out

    def settle(self) -> None:
        """This server's writes on disk before a timed step (see benchmark.settle), for the server it times."""
        psql = [str(self.bin_dir / "psql"), "-q", "-d", "postgres", "-c", "CHECKPOINT"]
        subprocess.run(psql, env=self.pg_env, capture_output=True, check=True)
        os.sync()

    def timed(self, argv: list[str], **options: Any) -> float:
        self.settle()
        return self.run(argv, **options)[0]

    def restoredump(self, *flags: str, cold: bool = False, wait: bool = True) -> tuple[float, dict[str, Any]]:
        if cold:
            self.run(["snapshots", "--drop-all", "-v0"], manage=True)
        self.settle()
        seconds, out = self.run(["restoredump", "scale", "--no-input", "--json", *flags], manage=True)
        document = json.loads(out)
        if wait and document["background"]:
            wait_for_exit(document["background"]["pid"])
        return seconds, document

    def background_peak_mb(self) -> float:
        log = (self.dumps / ".seeddump-background.log").read_text()
        found = [float(m) for m in re.findall(r"done \(peak memory (\d+) MB\)", log)]
        return max(found, default=0.0)


def build(admin: Any, runner: Runner, megabytes: int) -> tuple[int, dict[str, int]]:
    """Fills DB to about ``megabytes``: the demo's migrations, then bulk tables. Its size and row counts."""
    drop(admin, DB)
    admin.execute(f'CREATE DATABASE "{DB}"')
    runner.run(["migrate", "--no-input", "-v0"], manage=True)
    from seeddump import postgres

    settings = postgres.settings_for("default")
    with postgres.connect(settings, DB) as conn:
        conn.execute(_FILL)
        events, size = 0, 0
        while True:
            remaining = megabytes * 1e6 / 1.28 - size  # about 200 bytes of tables per event, with its share
            batch = int(min(_EVENTS_PER_BATCH, max(20_000, remaining / 200)))
            e0, e1 = events, events + batch
            conn.execute(
                _BATCH.format(a0=e0 // 20, a1=e1 // 20, accounts=max(e1 // 20, 1), e0=e0, e1=e1, d0=e0 // 4, d1=e1 // 4)
            )
            events = e1
            (size,) = conn.execute("SELECT pg_database_size(current_database())").fetchone()  # type: ignore[misc]
            if size * 1.28 >= megabytes * 1e6:  # the indexes add about a quarter
                break
        conn.execute(_INDEXES)
        counts = {}
        for table in ("bulk_account", "bulk_event", "bulk_document"):
            (counts[table],) = conn.execute(f"SELECT count(*) FROM {table}").fetchone()  # type: ignore[misc]
        (size,) = conn.execute("SELECT pg_database_size(current_database())").fetchone()  # type: ignore[misc]
    return int(size), counts


def used_bytes(folder: Path) -> int:
    stats = os.statvfs(folder)
    return (stats.f_blocks - stats.f_bfree) * stats.f_frsize


def measure_size(args: argparse.Namespace, runner: Runner, admin: Any, megabytes: int, help_s: float) -> dict:
    from seeddump import dumpfiles

    print(f"\n== {megabytes} MB: building with bulk SQL...", flush=True)
    started = time.perf_counter()
    size, counts = build(admin, runner, megabytes)
    print(f"built {size / 1e6:.0f} MB ({counts}) in {time.perf_counter() - started:.0f}s", flush=True)
    r: dict[str, Any] = {"target_mb": megabytes, "bytes": size, "rows": counts}
    plain = args.out / "scale-plain.dump"
    repeat = args.repeat if megabytes <= args.repeat_up_to else 1
    r["repeat"] = repeat

    def median(measure: Any) -> float:
        return statistics.median(measure() for _ in range(repeat))

    r["pg_dump"] = median(lambda: runner.timed(["pg_dump", "-Fc", "-d", DB, "-f", str(plain)]))
    runner.run(["snapshots", "--drop-all", "-v0"], manage=True)
    for old in runner.dumps.glob("scale-seeded-*"):
        old.unlink()
    r["generatedump"] = median(lambda: runner.timed(["generatedump", "scale", "-v0"], manage=True))
    ours = runner.dumps / os.readlink(runner.dumps / "scale-seeded-latest.dump")
    r["pg_dump_bytes"], r["generatedump_bytes"] = plain.stat().st_size, ours.stat().st_size
    kept = args.out / f"scale-{megabytes}"  # for the clones, measured after every size
    kept.mkdir(exist_ok=True)
    for old in kept.iterdir():
        old.unlink()
    for path in (ours, dumpfiles.metadata_path(ours)):
        os.link(path, kept / path.name)
    r["dump"] = str(kept / ours.name)
    print(f"dump: generatedump {r['generatedump']:.1f}s, pg_dump {r['pg_dump']:.1f}s", flush=True)

    jobs = os.cpu_count() or 1

    def plain_restore() -> float:
        runner.run(["dropdb", "--if-exists", PLAIN_DB])
        runner.settle()
        started = time.perf_counter()
        runner.run(["createdb", PLAIN_DB])
        runner.run(["pg_restore", f"-j{jobs}", "-d", PLAIN_DB, str(ours)])
        return time.perf_counter() - started

    r["pg_restore"] = median(plain_restore)
    runner.run(["dropdb", "--if-exists", PLAIN_DB])
    print(f"plain createdb + pg_restore -j{jobs}: {r['pg_restore']:.1f}s", flush=True)

    r["cold"] = median(lambda: runner.restoredump(cold=True)[0])
    r["warm"] = median(lambda: runner.restoredump()[0])
    r["warm_source"] = runner.restoredump()[1]["source"]

    def back_to_back(*first_flags: str) -> float:
        """The second of two restores, started the moment the first returns (with its background work
        still running, unless ``first_flags`` leave it none)."""
        runner.run(["snapshots", "--drop-all", "-v0"], manage=True)
        runner.settle()
        _, first = runner.restoredump(*first_flags, wait=False)
        second_s, second = runner.restoredump(wait=True)
        if first["background"]:
            wait_for_exit(first["background"]["pid"])
        r["back_to_back_source"] = second["source"]
        return second_s

    r["back_to_back_second"] = median(back_to_back)
    # The same, after a first restore that left nothing to do: what the earlier restore's own writes cost.
    r["after_a_restore"] = median(lambda: back_to_back("--no-snapshot", "--wait"))
    print(
        f"restoredump: cold {r['cold']:.1f}s, warm {r['warm']:.2f}s ({r['warm_source']}), back to back "
        f"second {r['back_to_back_second']:.1f}s, after one without background work {r['after_a_restore']:.1f}s",
        flush=True,
    )
    r["cache_bytes"] = cache_bytes(runner)
    r["help"] = help_s
    r["peak_mb"] = max(runner.peak_kb / 1024, runner.background_peak_mb())
    return r


def cache_bytes(runner: Runner) -> int:
    _, out = runner.run(["snapshots"], manage=True)
    match = re.search(r"ready cop(?:y|ies), ([\d.]+) MB", out)
    return int(float(match.group(1)) * 1e6) if match else 0


def measure_clones(args: argparse.Namespace, runner: Runner, xfs: Any, dump: Path, r: dict[str, Any]) -> None:
    """Restores the size's dump into the XFS server: a cold restore that caches a clone, then one from it."""
    from seeddump import dumpfiles

    dumps = args.out / "dumps-xfs"
    dumps.mkdir(parents=True, exist_ok=True)
    for old in dumps.glob("scale-seeded-*"):
        old.unlink()
    for path in (dump, dumpfiles.metadata_path(dump)):
        os.link(path, dumps / path.name)
    (dumps / "scale-seeded-latest.dump").unlink(missing_ok=True)
    (dumps / "scale-seeded-latest.dump").symlink_to(dump.name)
    clone_runner = Runner(
        xfs.url(DB), dumps, runner.bin_dir, {"PGHOST": str(xfs.socket_dir), "PGPORT": "5432", "PGUSER": "postgres"}
    )
    clone_runner.run(["snapshots", "--drop-all", "-v0"], manage=True)
    import psycopg

    with psycopg.connect(host=str(xfs.socket_dir), user="postgres", dbname="postgres", autocommit=True) as admin:
        drop(admin, DB)
    before = used_bytes(xfs.mount)
    r["clone_cold"], cold = clone_runner.restoredump(cold=False)
    after_target = used_bytes(xfs.mount)
    r["clone_cold_background"] = cold["background"]["work"] if cold["background"] else []
    r["clones"] = cold["clones"]
    with psycopg.connect(host=str(xfs.socket_dir), user="postgres", dbname="postgres", autocommit=True) as admin:
        (target_size,) = admin.execute("SELECT pg_database_size(%s)", (DB,)).fetchone()  # type: ignore[misc]
    r["clone_target_bytes"] = target_size
    r["clone_disk_added"] = after_target - before
    r["clone_cache_extra"] = after_target - before - target_size  # what the cache adds beyond the database
    r["clone_repeat"] = args.repeat  # a second or less each: a median at every size
    warm_runs = [clone_runner.restoredump() for _ in range(args.repeat)]
    r["clone_warm"] = statistics.median(seconds for seconds, _ in warm_runs)
    r["clone_warm_source"] = warm_runs[-1][1]["source"]
    r["clone_peak_background_mb"] = clone_runner.background_peak_mb()
    runner.peak_kb = max(runner.peak_kb, clone_runner.peak_kb)
    clone_runner.run(["snapshots", "--drop-all", "-v0"], manage=True)
    with psycopg.connect(host=str(xfs.socket_dir), user="postgres", dbname="postgres", autocommit=True) as admin:
        drop(admin, DB)
    print(
        f"clones: cold {r['clone_cold']:.1f}s (background: {r['clone_cold_background']}), from the snapshot "
        f"{r['clone_warm']:.2f}s, cache adds {r['clone_cache_extra'] / 1e6:.1f} MB on disk",
        flush=True,
    )


def seed_once(args: argparse.Namespace, runner: Runner, admin: Any) -> dict[str, float]:
    drop(admin, SEED_DB)
    admin.execute(f'CREATE DATABASE "{SEED_DB}"')
    env = {"DATABASE_URL": runner.env["DATABASE_URL"].rsplit("/", 1)[0] + "/" + SEED_DB}
    runner.run(["migrate", "--no-input", "-v0"], manage=True, env=env)
    print(f"seeding at scale {args.seed_scale} (row by row)...", flush=True)
    seconds = runner.timed(["seed", "scale", "--scale", str(args.seed_scale), "-v0"], manage=True, env=env)
    (size,) = admin.execute("SELECT pg_database_size(%s)", (SEED_DB,)).fetchone()
    drop(admin, SEED_DB)
    return {"seconds": seconds, "bytes": size}


def main() -> None:
    args = parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    from project import embedded

    socket_dir, _port, bin_dirs = embedded.start(embedded.data_dir(REPO), DB)
    url = f"postgres://postgres@/{quote(socket_dir, safe='/')}/{DB}"
    os.environ.update(
        {"DJANGO_SETTINGS_MODULE": "project.settings", "DATABASE_URL": url, "SEEDDUMP_DIR": str(args.out / "dumps")}
    )
    import django

    django.setup()
    from seeddump import postgres

    settings = postgres.settings_for("default")
    runner = Runner(url, args.out / "dumps", bin_dirs[0], postgres.client_env(settings))
    help_s = sorted(runner.timed(["help"], manage=True) for _ in range(3))[1]
    results: dict[str, Any] = {"machine": machine(), "help": help_s, "sizes": []}
    with postgres.connect_maintenance(settings) as admin:
        results["server"] = postgres.server_version_text(admin)
        results["seed"] = seed_once(args, runner, admin)
        for megabytes in (int(size) for size in args.sizes.split(",")):
            runner.peak_kb = 0
            r = measure_size(args, runner, admin, megabytes, help_s)
            results["sizes"].append(r)
            write(args, results)
    if not args.no_clones:
        from tests.xfs import xfs_server

        largest = max(r["bytes"] for r in results["sizes"])
        image = f"{max(4, int(largest * 3.2 / 2**30) + 2)}G"
        try:
            with xfs_server(image) as xfs:
                for r in results["sizes"]:
                    print(f"\n== clones at {r['target_mb']} MB", flush=True)
                    runner.peak_kb = 0
                    measure_clones(args, runner, xfs, Path(r["dump"]), r)
                    r["peak_mb"] = max(r["peak_mb"], runner.peak_kb / 1024)
                    write(args, results)
        except BaseException as exc:  # pytest's skip outside pytest: say why and keep the rest
            if type(exc).__name__ not in ("Skipped", "Failed"):
                raise
            results["clonesSkipped"] = str(exc)
    write(args, results)
    print("\n" + report(results)["markdown"])


def write(args: argparse.Namespace, results: dict[str, Any]) -> None:
    document = report(results)
    (args.out / "scale.json").write_text(json.dumps({**results, "markdown": document["markdown"]}, indent=2) + "\n")
    (args.out / "scale.md").write_text(document["markdown"] + "\n")
    CHART.parent.mkdir(exist_ok=True)
    CHART.write_text(chart(results))


def report(results: dict[str, Any]) -> dict[str, Any]:
    help_s = results["help"]
    seed = results.get("seed") or {}
    per_mb = seed["seconds"] / (seed["bytes"] / 1e6) if seed else None
    lines = [
        f"Machine: {results['machine']}. PostgreSQL {results.get('server', '?')} (embedded; clones on a second "
        f"PostgreSQL 18 with its data directory on XFS with reflinks, in a loop-mounted image).",
        f"Bare `manage.py help`: {help_s:.2f} s. Demo `seed`: {seed.get('seconds', 0):.1f} s for "
        f"{seed.get('bytes', 0) / 1e6:.0f} MB ({per_mb or 0:.2f} s per MB).",
        "",
    ]
    base_warm = results["sizes"][0]["warm"] if results["sizes"] else None
    for r in results["sizes"]:
        size_mb = r["bytes"] / 1e6
        plain_restore = r["pg_restore"] + help_s
        plain_dump = r["pg_dump"] + help_s
        rows = sum(r["rows"].values())
        lines += [
            f"**{size_mb:,.0f} MB** ({rows:,} rows in the bulk tables; median of {r.get('repeat', 1)})",
            "",
            "| step | seeddump | plain | ratio | target |",
            "| --- | --- | --- | --- | --- |",
            f"| dump | generatedump {r['generatedump']:.1f} s, {r['generatedump_bytes'] / 1e6:.0f} MB "
            f"| pg_dump -Fc {r['pg_dump']:.1f} s + help {help_s:.2f} s, {r['pg_dump_bytes'] / 1e6:.0f} MB "
            f"| {r['generatedump'] / plain_dump:.2f} time, {r['generatedump_bytes'] / r['pg_dump_bytes']:.2f} size "
            "| ≤ 1.1, ≤ 1.15 |",
            f"| cold restore | restoredump {r['cold']:.1f} s | createdb + pg_restore -j {r['pg_restore']:.1f} s "
            f"+ help | {r['cold'] / plain_restore:.2f} | ≤ 1.1 |",
            f"| warm restore ({r['warm_source']}) | restoredump {r['warm']:.2f} s | pg_restore {r['pg_restore']:.1f} s "
            f"| {r['warm'] / r['pg_restore']:.3f}; vs 250 MB: {r['warm'] / base_warm:.2f} | ≤ 1.5 vs 250 MB |",
            f"| back to back | second restoredump {r['back_to_back_second']:.1f} s ({r['back_to_back_source']}) "
            f"| cold restoredump {r['cold']:.1f} s | {r['back_to_back_second'] / r['cold']:.2f} | ≤ 1.1 |",
            f"| back to back, against the same without background work | second restoredump "
            f"{r['back_to_back_second']:.1f} s | cold restoredump right after a `--no-snapshot --wait` one "
            f"{r['after_a_restore']:.1f} s | {r['back_to_back_second'] / r['after_a_restore']:.2f} | — |",
            f"| restore vs seed | cold restoredump {r['cold']:.1f} s | seed at {per_mb or 0:.2f} s/MB: "
            f"{(per_mb or 0) * size_mb:,.0f} s | {(per_mb or 0) * size_mb / r['cold']:.0f}x faster | — |",
            f"| cache on disk (plain copies) | snapshot + ready copy {r['cache_bytes'] / 1e6:,.0f} MB "
            f"| database {size_mb:,.0f} MB | {r['cache_bytes'] / r['bytes']:.2f} | — |",
        ]
        if "clone_cold" in r:
            lines += [
                f"| clones: cold restore | restoredump {r['clone_cold']:.1f} s, background: "
                f"{', '.join(r['clone_cold_background']) or 'nothing'} | createdb + pg_restore -j + help "
                f"{plain_restore:.1f} s | {r['clone_cold'] / plain_restore:.2f} | no pg_restore after |",
                f"| clones: from the snapshot, no ready copy | restoredump {r['clone_warm']:.2f} s "
                f"({r['clone_warm_source']}; median of {r.get('clone_repeat', 1)}) "
                f"| bare manage.py help {help_s:.2f} s | {r['clone_warm'] / help_s:.2f} "
                "| ≤ 1.5 |",
                f"| clones: disk the cache adds | {r['clone_cache_extra'] / 1e6:,.1f} MB "
                f"| database {r['clone_target_bytes'] / 1e6:,.0f} MB "
                f"| {r['clone_cache_extra'] / r['clone_target_bytes']:.3f} | ≤ 0.05 |",
            ]
        peak = max(r.get("peak_mb", 0), r.get("clone_peak_background_mb", 0))
        lines += [f"| peak memory of seeddump's processes | {peak:.0f} MB | — | — | ≤ 150 MB at 4 GB |", ""]
    if results.get("clonesSkipped"):
        lines.append(f"Clones not measured: {results['clonesSkipped']}")
    return {"markdown": "\n".join(lines)}


def chart(results: dict[str, Any]) -> str:
    """Time against database size, log-log, as a small hand-written SVG (no plotting library to install)."""
    import math

    sizes = results["sizes"]
    seed = results.get("seed") or {}
    series: list[tuple[str, str, list[tuple[float, float]], bool]] = [
        ("plain createdb + pg_restore -j", "#888888", [(r["bytes"], r["pg_restore"]) for r in sizes], False),
        ("restoredump, cold", "#1f77b4", [(r["bytes"], r["cold"]) for r in sizes], False),
        ("restoredump, warm (ready copy)", "#2ca02c", [(r["bytes"], r["warm"]) for r in sizes], False),
        (
            "restoredump from a clone (XFS)",
            "#9467bd",
            [(r["bytes"], r["clone_warm"]) for r in sizes if "clone_warm" in r],
            False,
        ),
    ]
    if seed:
        per_byte = seed["seconds"] / seed["bytes"]
        series.insert(0, ("demo seed (measured)", "#d62728", [(seed["bytes"], seed["seconds"])], False))
        extrapolated = [(seed["bytes"], seed["seconds"])] + [(r["bytes"], r["bytes"] * per_byte) for r in sizes]
        series.insert(1, ("demo seed (same s/MB, extrapolated)", "#d62728", extrapolated, True))
    points = [p for _, _, pts, _ in series for p in pts]
    if not points:
        return "<svg xmlns='http://www.w3.org/2000/svg'/>"
    width, height, left, right, top, bottom = 760, 440, 70, 250, 20, 50
    xs = [math.log10(x) for x, _ in points]
    ys = [math.log10(max(y, 0.01)) for _, y in points]
    x0, x1 = math.floor(min(xs)), math.ceil(max(xs) + 0.01)
    y0, y1 = math.floor(min(ys)), math.ceil(max(ys) + 0.01)

    def px(x: float, y: float) -> tuple[float, float]:
        fx = (math.log10(x) - x0) / (x1 - x0)
        fy = (math.log10(max(y, 0.01)) - y0) / (y1 - y0)
        return left + fx * (width - left - right), height - bottom - fy * (height - top - bottom)

    out = [
        f"<svg xmlns='http://www.w3.org/2000/svg' width='{width}' height='{height}' font-family='sans-serif' "
        "font-size='12'>",
        f"<rect width='{width}' height='{height}' fill='white'/>",
    ]
    for exponent in range(x0, x1 + 1):
        x, _ = px(10**exponent, 10**y0)
        label = f"{10**exponent / 1e6:g} MB" if 10**exponent < 1e9 else f"{10**exponent / 1e9:g} GB"
        out.append(f"<line x1='{x}' y1='{top}' x2='{x}' y2='{height - bottom}' stroke='#eee'/>")
        out.append(f"<text x='{x}' y='{height - bottom + 18}' text-anchor='middle'>{label}</text>")
    for exponent in range(y0, y1 + 1):
        _, y = px(10**x0, 10**exponent)
        out.append(f"<line x1='{left}' y1='{y}' x2='{width - right}' y2='{y}' stroke='#eee'/>")
        out.append(f"<text x='{left - 8}' y='{y + 4}' text-anchor='end'>{10**exponent:g} s</text>")
    out.append(f"<text x='{(left + width - right) / 2}' y='{height - 12}' text-anchor='middle'>database size</text>")
    for index, (name, colour, pts, dashed) in enumerate(series):
        coords = [px(x, y) for x, y in sorted(pts)]
        dash = " stroke-dasharray='5,4'" if dashed else ""
        if len(coords) > 1:
            path = " ".join(f"{x:.1f},{y:.1f}" for x, y in coords)
            out.append(f"<polyline points='{path}' fill='none' stroke='{colour}' stroke-width='2'{dash}/>")
        for x, y in coords if not dashed else coords[:1]:
            out.append(f"<circle cx='{x:.1f}' cy='{y:.1f}' r='3.5' fill='{colour}'/>")
        ly = top + 10 + index * 20
        out.append(
            f"<line x1='{width - right + 15}' y1='{ly}' x2='{width - right + 40}' y2='{ly}' stroke='{colour}' "
            f"stroke-width='2'{dash}/>"
        )
        out.append(f"<text x='{width - right + 46}' y='{ly + 4}'>{name}</text>")
    out.append("</svg>")
    return "\n".join(out) + "\n"


if __name__ == "__main__":
    main()
