"""Benchmark: a pytest session's database set-up from the dump, against migrate + seed.

    .venv/bin/python seeds/scripts/benchmark_pytest.py [--scale 10]

Seeds and dumps the demo data once, then times two pytest sessions of the same one-test suite, each
creating its test database from scratch: one with `--seeddump-all` (the plugin restores the dev dump;
the first session restores cold and caches a snapshot, the next ones copy it) and one whose
django_db_setup runs the demo's `seed` command, as teams without seeddump do. Prints the wall times.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]

TEST = """
import pytest
from project.reality.models import RealityNode

@pytest.mark.django_db
def test_seeded():
    assert RealityNode.objects.count() == {nodes}
"""

SEED_CONFTEST = """
import pytest
from django.core.management import call_command

@pytest.fixture(scope="session")
def django_db_setup(django_db_setup, django_db_blocker):
    with django_db_blocker.unblock():
        call_command("seed", "dev", scale={scale}, verbosity=0)
"""


def timed(argv: list[str], cwd: Path, env: dict[str, str]) -> float:
    started = time.perf_counter()
    result = subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True)
    if result.returncode != 0:
        raise SystemExit(f"failed: {' '.join(argv)}\n{result.stdout}{result.stderr}")
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scale", type=int, default=10)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="seeddump-bench-pytest-"))
    sys.path.insert(0, str(REPO))
    from project import embedded

    socket_dir, _, bin_dirs = embedded.start(embedded.data_dir(REPO), "seeddump_bench_pytest")
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "project.settings",
        "DATABASE_URL": f"postgres://postgres@/{socket_dir}/seeddump_bench_pytest",
        "SEEDDUMP_DIR": str(work / "dumps"),
        "SEEDDUMP_PG_BIN_DIRS": ",".join(map(str, bin_dirs)),
        "PYTHONPATH": str(REPO),
    }
    manage = [sys.executable, str(REPO / "manage.py")]
    timed([*manage, "migrate", "-v0"], REPO, env)
    seed_seconds = timed([*manage, "seed", "dev", "--scale", str(args.scale), "-v0"], REPO, env)
    timed([*manage, "generatedump", "dev", "-v0"], REPO, env)
    timed([*manage, "snapshots", "--drop-all", "-v0"], REPO, env)
    nodes = 3000 * args.scale

    for name, conftest in (("plugin", ""), ("seed", SEED_CONFTEST.format(scale=args.scale))):
        suite = work / name
        suite.mkdir()
        (suite / "test_seeded.py").write_text(TEST.format(nodes=nodes))
        (suite / "conftest.py").write_text(conftest)
        (suite / "pytest.ini").write_text("[pytest]\n")
    pytest = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--create-db"]
    first = timed([*pytest, "--seeddump-all"], work / "plugin", env)
    warm = timed([*pytest, "--seeddump-all"], work / "plugin", env)
    seeded = timed(pytest, work / "seed", env)
    timed([*manage, "snapshots", "--drop-all", "-v0"], REPO, env)
    print(f"scale {args.scale} ({nodes} nodes); the seed command alone: {seed_seconds:.1f} s")
    print(f"pytest session, test database from migrate + seed:               {seeded:.1f} s")
    print(f"pytest session, test database from the dump (first, cold):       {first:.1f} s")
    print(f"pytest session, test database from the dump (snapshot cached):   {warm:.1f} s")


if __name__ == "__main__":
    main()
