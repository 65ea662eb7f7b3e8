"""The crash matrix: every state change a restore makes, times every fault, judged by one invariant.

    .venv/bin/python seeds/scripts/crashmatrix.py [--database-url URL] [--paths cold,warm,in-place]
        [--faults kill,term,sessions] [--jobs 2] [--dump PATH]

How: each path's ``manage.py restoredump`` runs once with the probe (``crashmatrix_hook/``, first on PYTHONPATH)
recording its state changes in order: every SQL statement seeddump's own connections run but SELECT/SHOW/SET,
every COMMIT, every rename/replace/unlink/rmdir/rmtree (and the media's renameat2), every child process's
exit. The cases are generated from that list: for change N and fault F, the same restore runs again and the
probe applies F right after change N: ``kill`` (SIGKILL), ``term`` (SIGTERM, what Ctrl-C and docker stop send),
``sessions`` (for SQL changes: every server session of this restore ended with pg_terminate_backend).

The invariant, after each case: the target holds either the old state (its rows and MEDIA_ROOT's files as
before) and the run failed saying "not changed" or "interrupted", or the dump (the media exchange done or
recorded) and the run exited 0, or 3 saying "now holds", and ``restoredump --undo`` brings the old database
and files back; then the next ``restoredump`` succeeds, and nothing is left behind: no scratch, retired or
pending database of the target, no throwaway role of the run able to log in, nothing beside MEDIA_ROOT.
(A SIGKILLed run says nothing: only its state is judged.)

Without --database-url the project's embedded server is used; without --dump the script seeds a database and
makes a dump with media. Cases run ``--jobs`` at a time, each on a target database of its own. Prints per path
the changes x faults, how many held and broke, and every broken case with why; exit status 1 if any broke.
"""

from __future__ import annotations

import argparse
import os
import secrets
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote

import psycopg
from psycopg import sql

REPO = Path(__file__).resolve().parents[2]
HOOK = Path(__file__).resolve().parent / "crashmatrix_hook"
FAULTS = ("kill", "term", "sessions")
TIMEOUT = 120  # seconds a run may take before it is killed with what it started (a stuck case fails alone)
OLD_TEAM = "crashmatrix: the old state"
OLD_FILES = {"notes.txt": b"my notes", "emblems/mine.svg": b"<svg>the old state</svg>"}


@dataclass(frozen=True)
class Path_:
    """A restore path: restoredump's arguments, and whether a snapshot of the dump is cached beforehand."""

    name: str
    args: tuple[str, ...]
    snapshots: bool = False


PATHS = {
    "cold": Path_("cold", ()),
    "warm": Path_("warm", (), snapshots=True),
    "in-place": Path_("in-place", ("--in-place",)),
}


@dataclass(frozen=True)
class Change:
    number: int
    kind: str  # sql, file, exit
    shape: str
    where: str

    def __str__(self) -> str:
        return f"#{self.number} {self.kind} {self.shape!r} ({self.where})"


@dataclass(frozen=True)
class Case:
    path: str
    change: Change
    fault: str

    @property
    def key(self) -> str:
        """How a test names the case (stable while the path's changes stay the same)."""
        return f"{self.path} #{self.change.number} {self.fault}"

    def __str__(self) -> str:
        return f"{self.path}: {self.fault} after {self.change}"


@dataclass
class Outcome:
    case: Case
    held: bool
    state: str = ""  # old, new, or what was found
    why: str = ""


@dataclass
class Report:
    changes: dict[str, list[Change]] = field(default_factory=dict)
    outcomes: list[Outcome] = field(default_factory=list)
    seconds: float = 0.0

    def broken(self) -> list[Outcome]:
        return [outcome for outcome in self.outcomes if not outcome.held]

    def text(self) -> str:
        lines = []
        for path, changes in self.changes.items():
            mine = [outcome for outcome in self.outcomes if outcome.case.path == path]
            faults = sorted({outcome.case.fault for outcome in mine}, key=FAULTS.index)
            counts = ", ".join(
                f"{fault} {sum(1 for outcome in mine if outcome.case.fault == fault)}" for fault in faults
            )
            held = sum(outcome.held for outcome in mine)
            new = sum(outcome.held and outcome.state.startswith("new") for outcome in mine)
            lines.append(
                f"{path}: {len(changes)} changes x faults ({counts}) = {len(mine)} cases; held {held} "
                f"(old state {held - new}, new state {new}), broke {len(mine) - held}"
            )
            lines += [f"  BROKE {outcome.case}: {outcome.why}" for outcome in mine if not outcome.held]
        lines.append(f"{len(self.outcomes)} cases in {self.seconds:.0f}s")
        return "\n".join(lines)


@dataclass(frozen=True)
class Server:
    """The server the matrix runs on: its connection settings (Django's keys) and its PostgreSQL programs."""

    settings: Mapping[str, Any]
    bin_dirs: tuple[Path, ...]
    maintenance_db: str = "postgres"

    def connect(self, dbname: str | None = None) -> psycopg.Connection:
        params = {
            "host": self.settings.get("HOST") or None,
            "port": self.settings.get("PORT") or None,
            "user": self.settings.get("USER") or None,
            "password": self.settings.get("PASSWORD") or None,
            "dbname": dbname or self.maintenance_db,
        }
        return psycopg.connect(**{k: v for k, v in params.items() if v is not None}, autocommit=True)

    def url(self, name: str, application_name: str) -> str:
        user = quote(str(self.settings.get("USER") or ""))
        password = f":{quote(str(self.settings['PASSWORD']))}" if self.settings.get("PASSWORD") else ""
        host, port = str(self.settings.get("HOST") or ""), self.settings.get("PORT")
        query = f"?application_name={application_name}"
        if host.startswith("/"):  # a socket folder goes in the path
            return f"postgres://{user}{password}@/{host}/{name}{query}"
        return f"postgres://{user}{password}@{host}{f':{port}' if port else ''}/{name}{query}"


@dataclass
class Slot:
    """One target database and its MEDIA_ROOT; a case holds a slot while it runs."""

    target: str
    folder: Path  # holds MEDIA_ROOT (media/) and nothing else

    @property
    def media(self) -> Path:
        return self.folder / "media"


class Matrix:
    def __init__(self, server: Server, dump: Path, workdir: Path, jobs: int = 2) -> None:
        self.server, self.workdir, self.jobs = server, workdir, jobs
        self.run = secrets.token_hex(3)
        self.dumps = workdir / "dumps"
        self.logs = workdir / "logs"
        self.logs.mkdir(parents=True, exist_ok=True)
        _copy_dump(dump, self.dumps)
        self.base = f"crashmatrix_{self.run}_old"
        self.slots = [Slot(f"crashmatrix_{self.run}_t{n}", workdir / f"t{n}") for n in range(jobs)]
        self.free: list[Slot] = list(self.slots)
        self.lock = threading.Lock()
        self.snapshot_lock = threading.Lock()
        self.old: tuple[Any, ...] = ()
        self.new: tuple[Any, ...] = ()
        self.new_files: dict[str, bytes] = {}
        self.serial = 0

    # --- set-up -------------------------------------------------------------------------------------------

    def prepare(self) -> None:
        """The old state every case starts from: a migrated database holding one team of its own."""
        with self.server.connect() as admin:
            admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(self.base)))
        done = self.manage(self.base, self.workdir / "base-media", "migrate", "--no-input", "-v0")
        if done.returncode != 0:
            raise RuntimeError(f"migrate failed: {done.stderr}")
        with self.server.connect(self.base) as conn:
            conn.execute(
                "INSERT INTO public.reality_team (name, description, settings, created_at)"
                " VALUES (%s, '', '{}', '2026-01-01T00:00:00Z')",
                (OLD_TEAM,),
            )
        self.old = self.fingerprint(self.base)

    def cleanup(self) -> None:
        for slot in self.slots:
            self.reset(slot, make=False)
        with self.server.connect() as admin:
            for name in self.databases_like(admin, f"crashmatrix\\_{self.run}\\_%"):
                self.drop(admin, name)
            for name in self.cached(admin):
                self.drop(admin, name)

    def snapshots(self, admin: psycopg.Connection) -> list[str]:
        """The snapshot cache's copies made for this matrix's dumps folder."""
        from seeddump import snapshots

        prefix = snapshots.folder_prefix(self.dumps)
        return self.databases_like(admin, prefix.replace("_", "\\_") + "%")

    def cached(self, admin: psycopg.Connection) -> list[str]:
        """Every copy the cache made for this matrix's dumps folder: snapshots, builds, ready and empty copies."""
        from seeddump import snapshots

        kinds = (snapshots.PREFIX, snapshots.READY_PREFIX, "seeddump_build_", "seeddump_empty_")
        prefixes = [snapshots.folder_prefix(self.dumps, kind) for kind in kinds]
        return [name for p in prefixes for name in self.databases_like(admin, p.replace("_", "\\_") + "%")]

    def databases_like(self, admin: psycopg.Connection, pattern: str) -> list[str]:
        rows = admin.execute("SELECT datname FROM pg_database WHERE datname LIKE %s", (pattern,)).fetchall()
        return [name for (name,) in rows]

    def drop(self, admin: psycopg.Connection, name: str) -> None:
        admin.execute(sql.SQL("ALTER DATABASE {} IS_TEMPLATE false").format(sql.Identifier(name)))
        admin.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))

    def of_target(self, admin: psycopg.Connection, target: str) -> list[str]:
        """The target and every database seeddump named after it (scratch, retired, undo, pending)."""
        from seeddump import finishing, undo

        prefixes = (finishing.scratch_prefix(target), finishing.retired_prefix(target), undo.prefix(target))
        present = self.databases_like(admin, target.replace("_", "\\_"))
        return [*present, *(name for p in prefixes for name in self.databases_like(admin, p.replace("_", "\\_") + "%"))]

    def reset(self, slot: Slot, *, make: bool = True) -> None:
        """The slot's target back to the old state, alone: its database a copy of the old one, its files."""
        with self.server.connect() as admin:
            for name in self.of_target(admin, slot.target):
                self.drop(admin, name)
            if make:
                admin.execute(
                    sql.SQL("CREATE DATABASE {} TEMPLATE {}").format(
                        sql.Identifier(slot.target), sql.Identifier(self.base)
                    )
                )
        shutil.rmtree(slot.folder, ignore_errors=True)
        if make:
            for name, data in OLD_FILES.items():
                (slot.media / name).parent.mkdir(parents=True, exist_ok=True)
                (slot.media / name).write_bytes(data)

    def ensure_snapshot(self, path: Path_) -> None:
        """The warm path's precondition: the dump's snapshot is cached (made by a plain restore when not)."""
        if not path.snapshots:
            return
        with self.snapshot_lock:
            with self.server.connect() as admin:
                if self.snapshots(admin):
                    return
            slot = Slot(f"crashmatrix_{self.run}_snap", self.workdir / "snap")
            self.reset(slot)
            done = self.restoredump(slot, path, "prep")
            self.reset(slot, make=False)
            if done.returncode != 0:
                raise RuntimeError(f"the restore that caches the snapshot failed: {done.stderr}")

    # --- running --------------------------------------------------------------------------------------------

    def manage(
        self, database: str, media: Path, *args: str, env: Mapping[str, str] | None = None, appname: str = "cm"
    ) -> subprocess.CompletedProcess[str]:
        environment = {
            **os.environ,
            "DJANGO_SETTINGS_MODULE": "crashmatrix_settings",
            "PYTHONPATH": os.pathsep.join([str(HOOK), str(REPO)]),
            "DATABASE_URL": self.server.url(database, appname),
            "SEEDDUMP_DIR": str(self.dumps),
            "SEEDDUMP_PG_BIN_DIRS": ",".join(str(p) for p in self.server.bin_dirs),
            "SEEDDUMP_BACKGROUND": "false",  # everything a restore does happens in the recorded process
            "SEEDDUMP_LOCK_TIMEOUT": "60",
            "SEEDDUMP_MEDIA": "true",
            "MEDIA_ROOT": str(media),
            "PYTHONUNBUFFERED": "1",
            **(env or {}),
        }
        for name in ("CRASHMATRIX_LOG", "CRASHMATRIX_FAULT_AT", "CRASHMATRIX_FAULT"):
            if env is None or name not in env:
                environment.pop(name, None)
        return _run_bounded([sys.executable, "manage.py", *args], env=environment)

    def restoredump(
        self, slot: Slot, path: Path_, label: str, *args: str, probe: Mapping[str, str] | None = None
    ) -> subprocess.CompletedProcess[str]:
        with self.lock:
            self.serial += 1
            appname = f"cm{self.run}n{self.serial}"
        env = {
            "CRASHMATRIX_SNAPSHOTS": "true" if path.snapshots else "false",
            "CRASHMATRIX_APPNAME": appname,
            "CRASHMATRIX_MAINTENANCE_DB": self.server.maintenance_db,
            **(probe or {}),
        }
        command = ("restoredump", "--undo") if "--undo" in args else ("restoredump", "dev", *path.args)
        extra = tuple(arg for arg in args if arg != "--undo")
        return self.manage(slot.target, slot.media, *command, "--no-input", *extra, env=env, appname=appname)

    def record(self, path: Path_) -> list[Change]:
        """The path's state changes, in order, as a plain restore of the old state makes them."""
        self.ensure_snapshot(path)
        slot = self.take()
        try:
            self.reset(slot)
            self.restoredump(slot, path, "warm-up")  # the dump's checksum is then remembered, as in every case
            self.reset(slot)
            log = self.logs / f"record-{path.name}.log"
            log.unlink(missing_ok=True)
            done = self.restoredump(slot, path, "record", probe={"CRASHMATRIX_LOG": str(log)})
            if done.returncode != 0:
                raise RuntimeError(f"the {path.name} restore failed without a fault: {done.stderr}")
            changes = _changes(log)
            self.new = self.fingerprint(slot.target)
            self.new_files = _files_of(slot.media)
            return changes
        finally:
            self.give(slot)

    def take(self) -> Slot:
        with self.lock:
            return self.free.pop()

    def give(self, slot: Slot) -> None:
        with self.lock:
            self.free.append(slot)

    def run_case(self, case: Case) -> Outcome:
        path = PATHS[case.path]
        self.ensure_snapshot(path)
        slot = self.take()
        try:
            self.reset(slot)
            return self.judge(case, slot, path)
        except Exception as exc:  # a harness failure is the case's outcome, said as such
            return Outcome(case, False, "?", f"harness error: {exc!r}")
        finally:
            self.give(slot)

    # --- judging --------------------------------------------------------------------------------------------

    def judge(self, case: Case, slot: Slot, path: Path_) -> Outcome:
        log = self.logs / f"{case.path}-{case.change.number}-{case.fault}.log"
        log.unlink(missing_ok=True)
        probe = {
            "CRASHMATRIX_LOG": str(log),
            "CRASHMATRIX_FAULT_AT": str(case.change.number),
            "CRASHMATRIX_FAULT": case.fault,
        }
        faulted = self.restoredump(slot, path, "case", probe=probe)
        said = (faulted.stderr + faulted.stdout).strip()
        last = said.splitlines()[-1] if said else "(nothing)"
        recorded = _changes(log)
        if not _fault_applied(log):
            return Outcome(case, False, "?", f"the run never reached change #{case.change.number} ({last})")
        reached = recorded[case.change.number - 1]
        if (reached.kind, reached.shape) != (case.change.kind, case.change.shape):
            return Outcome(case, False, "?", f"change #{case.change.number} was {reached}, not the recorded one")
        if "Traceback" in faulted.stderr:
            return Outcome(case, False, "?", f"a traceback: {last}")
        rows = self.fingerprint(slot.target)
        files = _files_of(slot.media)
        killed = case.fault == "kill"
        if rows == self.old and files == OLD_FILES:
            state = "old"
            if killed:
                pass
            elif faulted.returncode == 0 or "now holds" in said:
                return Outcome(
                    case, False, state, f"the old state is intact but the run said: exit {faulted.returncode}, {last}"
                )
            elif not ("not changed" in said or "interrupted" in said):
                return Outcome(case, False, state, f"the old state is intact; the line says neither: {last}")
        elif rows == self.new and files in (self.new_files, OLD_FILES):
            state = "new" if files == self.new_files else "new (media exchange to finish)"
            if killed:
                pass
            elif faulted.returncode not in (0, 3) or (faulted.returncode == 3 and "now holds" not in said):
                return Outcome(
                    case, False, state, f"the dump is in place but the run said: exit {faulted.returncode}, {last}"
                )
            elif faulted.returncode == 0 and files != self.new_files:
                return Outcome(case, False, state, "exit 0 with the old files in MEDIA_ROOT")
            undone = self.restoredump(slot, path, "undo", "--undo")
            if undone.returncode != 0:
                return Outcome(case, False, state, f"--undo failed: {_last(undone)}")
            if self.fingerprint(slot.target) != self.old or _files_of(slot.media) != OLD_FILES:
                return Outcome(case, False, state, "--undo did not bring the old database and files back")
        else:
            what = "old" if rows == self.old else "the dump's" if rows == self.new else f"other rows {rows!r:.80}"
            return Outcome(
                case, False, "mixed", f"the database holds {what}, MEDIA_ROOT {_which_files(files, self.new_files)}"
            )
        again = self.restoredump(slot, path, "again")
        if again.returncode != 0:
            return Outcome(case, False, state, f"the next restoredump failed: {_last(again)}")
        if self.fingerprint(slot.target) != self.new or _files_of(slot.media) != self.new_files:
            return Outcome(case, False, state, "the next restoredump did not leave the dump and its files")
        left = self.left_behind(slot, log)
        if left:
            return Outcome(case, False, state, f"left behind: {', '.join(left)}")
        return Outcome(case, True, state)

    def left_behind(self, slot: Slot, log: Path) -> list[str]:
        from seeddump import finishing, undo

        left: list[str] = []
        pids = [int(line.split("\t")[1]) for line in log.read_text().splitlines() if line.startswith("PID\t")]
        with self.server.connect() as admin:
            for prefix in (finishing.scratch_prefix(slot.target), finishing.retired_prefix(slot.target)):
                left += self.databases_like(admin, prefix.replace("_", "\\_") + "%")
            copies = admin.execute(
                "SELECT datname, shobj_description(oid, 'pg_database') FROM pg_database WHERE datname LIKE %s",
                (undo.prefix(slot.target).replace("_", "\\_") + "%",),
            ).fetchall()
            left += [f"{name} (pending)" for name, label in copies if undo.PENDING in (label or "")]
            roles = admin.execute(
                "SELECT rolname, shobj_description(oid, 'pg_authid') FROM pg_roles WHERE rolname LIKE"
                " 'seeddump\\_sandbox\\_%' AND rolcanlogin AND (rolvaliduntil IS NULL OR rolvaliduntil > now())"
            ).fetchall()
            left += [f"role {name}" for name, label in roles if any(f'"{pid}' in (label or "") for pid in pids)]
        beside = sorted(entry.name for entry in slot.folder.iterdir() if entry.name != "media")
        kept = [name for name in beside if name.startswith(".media.seeddump-undo.")]  # the undo copy's files
        left += [f"{name} beside MEDIA_ROOT" for name in beside if name not in kept[:1]]
        return left

    def fingerprint(self, database: str) -> tuple[Any, ...]:
        """The demo's rows as a user sees them: team names, and how many agents, nodes and emblems."""
        try:
            with self.server.connect(database) as conn:
                teams = [name for (name,) in conn.execute("SELECT name FROM public.reality_team ORDER BY name")]
                counts = [
                    conn.execute(sql.SQL("SELECT count(*) FROM public.{}").format(sql.Identifier(t))).fetchone()
                    for t in ("reality_agent", "reality_node", "emblems_emblem")
                ]
                return (tuple(teams), tuple(counts))
        except psycopg.Error as exc:
            return ("unreadable", str(exc).strip().splitlines()[0])

    # --- the whole matrix ----------------------------------------------------------------------------------

    def cases(self, path: str, changes: list[Change], faults: Iterable[str]) -> list[Case]:
        return [
            Case(path, change, fault)
            for change in changes
            for fault in faults
            if fault != "sessions" or change.kind == "sql"
        ]


def run_matrix(
    server: Server,
    dump: Path,
    *,
    paths: Iterable[str] = ("cold", "warm", "in-place"),
    faults: Iterable[str] = FAULTS,
    jobs: int = 2,
    workdir: Path | None = None,
    progress: Callable[[Outcome], None] | None = None,
) -> Report:
    """Records each path's changes, runs every case (``jobs`` at a time), and returns what held and broke."""
    started = time.monotonic()
    report = Report()
    folder = workdir or Path(tempfile.mkdtemp(prefix="crashmatrix-"))
    matrix = Matrix(server, dump, folder, jobs)
    try:
        matrix.prepare()
        faults = tuple(faults)
        for path in paths:
            changes = matrix.record(PATHS[path])
            report.changes[path] = changes
            with ThreadPoolExecutor(max_workers=jobs) as pool:
                for outcome in pool.map(matrix.run_case, matrix.cases(path, changes, faults)):
                    report.outcomes.append(outcome)
                    if progress:
                        progress(outcome)
    finally:
        matrix.cleanup()
        if workdir is None:
            shutil.rmtree(folder, ignore_errors=True)
    report.seconds = time.monotonic() - started
    return report


# --- helpers ---------------------------------------------------------------------------------------------------


def _run_bounded(argv: list[str], *, env: Mapping[str, str]) -> subprocess.CompletedProcess[str]:
    """Runs a process in a session of its own; past TIMEOUT it is killed with whatever it started."""
    process = subprocess.Popen(
        argv,
        cwd=REPO,
        env=dict(env),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        out, err = process.communicate(timeout=TIMEOUT)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, 9)
        out, err = process.communicate()
        err += f"\n(killed after {TIMEOUT}s)"
    return subprocess.CompletedProcess(argv, process.returncode, out, err)


def _changes(log: Path) -> list[Change]:
    if not log.exists():
        return []
    changes = []
    for line in log.read_text().splitlines():
        parts = line.split("\t")
        if parts[0].isdigit():
            changes.append(Change(int(parts[0]), parts[1], parts[2], parts[3]))
    return changes


def _fault_applied(log: Path) -> bool:
    return log.exists() and any(line.startswith("FAULT\t") for line in log.read_text().splitlines())


def _last(done: subprocess.CompletedProcess[str]) -> str:
    said = (done.stderr or done.stdout).strip()
    return f"exit {done.returncode}, {said.splitlines()[-1] if said else '(nothing)'}"


def _files_of(folder: Path) -> dict[str, bytes]:
    if not folder.is_dir():
        return {}
    return {
        path.relative_to(folder).as_posix(): path.read_bytes() for path in sorted(folder.rglob("*")) if path.is_file()
    }


def _which_files(files: dict[str, bytes], new: dict[str, bytes]) -> str:
    if files == OLD_FILES:
        return "the old files"
    if files == new:
        return "the dump's files"
    return f"{len(files)} other files ({', '.join(sorted(files)[:4])})"


def _copy_dump(dump: Path, directory: Path) -> None:
    """The dump, its metadata and media archive in a dumps folder of the matrix's own, as dev's latest."""
    from seeddump import dumpfiles

    directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    target = directory / dump.name
    for source, copy in (
        (dump, target),
        (dumpfiles.metadata_path(dump), dumpfiles.metadata_path(target)),
        (dumpfiles.media_path(dump), dumpfiles.media_path(target)),
    ):
        shutil.copy2(source, copy)
    dumpfiles.point_latest(target, "dev")


def _make_dump(server: Server, workdir: Path) -> Path:
    """A seeded dump with media, made on ``server`` in a database of its own (dropped afterwards)."""
    name = f"crashmatrix_seed_{secrets.token_hex(3)}"
    matrix = Matrix.__new__(Matrix)
    matrix.server = server
    matrix.dumps = workdir / "seed-dumps"
    media = workdir / "seed-media"
    with server.connect() as admin:
        admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    try:
        for args in (
            ("migrate", "--no-input", "-v0"),
            ("seed", "dev", "--scale", "1"),
            ("generatedump", "dev", "-v", "0"),
        ):
            done = matrix.manage(name, media, *args)
            if done.returncode != 0:
                raise RuntimeError(f"{args[0]} failed: {done.stderr}")
        return Path(done.stdout.strip().splitlines()[-1])
    finally:
        with server.connect() as admin:
            admin.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--database-url", default=os.environ.get("DATABASE_URL"))
    parser.add_argument("--paths", default="cold,warm,in-place")
    parser.add_argument("--faults", default=",".join(FAULTS))
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--dump", type=Path, help="a dump made with --media (default: seed and make one)")
    options = parser.parse_args()
    sys.path[:0] = [str(HOOK), str(REPO)]
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "crashmatrix_settings")
    if options.database_url:
        os.environ["DATABASE_URL"] = options.database_url
    import django
    from django.conf import settings

    django.setup()
    server = Server(settings.DATABASES["default"], tuple(Path(p) for p in settings.SEEDDUMP_PG_BIN_DIRS))
    with tempfile.TemporaryDirectory(prefix="crashmatrix-") as folder:
        dump = options.dump or _make_dump(server, Path(folder))
        report = run_matrix(
            server,
            dump,
            paths=options.paths.split(","),
            faults=options.faults.split(","),
            jobs=options.jobs,
            progress=lambda outcome: print("." if outcome.held else "F", end="", flush=True),
        )
    print()
    print(report.text())
    return 1 if report.broken() else 0


if __name__ == "__main__":
    sys.exit(main())
