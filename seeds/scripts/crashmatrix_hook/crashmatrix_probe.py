"""Counts, in order, every state change a ``manage.py restoredump`` process makes, and applies a fault right
after one of them (seeds/scripts/crashmatrix.py).

A state change is:
- ``sql``: a statement one of seeddump's own psycopg connections (``seeddump.driver.Connection``) executes,
  but for SELECT, SHOW, SET and RESET (a session's settings are no state: ``postgres.advisory_lock`` sets and
  resets lock_timeout only when it has to wait, which would shift the numbers of the changes after it when
  cases run side by side); and the COMMIT of every transaction such a connection commits;
- ``file``: ``os.rename``, ``os.replace``, ``os.unlink``/``os.remove``, ``os.rmdir``, ``shutil.rmtree``, and
  seeddump's ``renameat2`` (the media exchange);
- ``exit``: a child process seen to exit (``subprocess.Popen.wait``/``poll``, which ``communicate`` and
  ``subprocess.run`` call);
- ``start``: a child process started (``subprocess.Popen``): no state change itself, but the sessions fault
  there ends the child's session once it has one (pg_restore's or psql's load, mid-load). The harness
  applies only the sessions fault there.

A Python process the restore starts (the background process that finishes it, ``seeddump.background``)
inherits the environment and this folder on its import path, so it is probed too: the changes of every
probed process are numbered in one sequence (a counter beside the log, taken under a lock), and the fault
lands in whichever process makes change N. Its ``where`` ends with `` [child]``.

Environment: CRASHMATRIX_LOG, the file each change is appended to (``N<TAB>kind<TAB>shape<TAB>where``);
CRASHMATRIX_FAULT_AT=N and CRASHMATRIX_FAULT=kill|term|sessions|stop: right after change N, SIGKILL or SIGTERM
this process, or end every server session whose application_name starts with CRASHMATRIX_APPNAME (this
restore's: its own, pg_restore's, psql's) over a connection of the probe's own, or stop the server at once
(CRASHMATRIX_STOP, pg_ctl's argv); after a ``start``, once the child has a session of its own (or has ended).
The line ``FAULT<TAB>N<TAB>main|child`` is written just before the fault, so the harness knows it was
applied and in which process. ``PID<TAB>n``
lines name the server processes of seeddump's sessions; ``SPAWN<TAB>pid<TAB>start time<TAB>program`` every
process started (so that the harness waits for the ones that outlive the restore before judging);
``PROC<TAB>pid<TAB>main|child`` each probed process."""

from __future__ import annotations

import contextlib
import fcntl
import importlib.abc
import importlib.machinery
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from typing import Any

_LOG = os.environ.get("CRASHMATRIX_LOG", "")
_FAULT_AT = int(os.environ.get("CRASHMATRIX_FAULT_AT") or 0)
_FAULT = os.environ.get("CRASHMATRIX_FAULT", "")
_APPNAME = os.environ.get("CRASHMATRIX_APPNAME", "")
_READ_ONLY = {"SELECT", "SHOW", "SET", "RESET"}  # a session's settings change nothing that outlives it
# The first probed process of a run is its main one; the Python processes it starts find this set.
_ROLE = "child" if os.environ.get("CRASHMATRIX_MAIN_PID") else "main"
_busy = False  # the probe's own work (its log, the fault's connection) is never counted


def _write(line: str) -> None:
    with open(_LOG, "a", encoding="utf-8") as log:
        log.write(line + "\n")


def _count_and_write(kind: str, shape: str, where: str) -> int:
    """The next number of the run's one sequence (shared by every probed process), its line written under the
    same lock so that the log is in that order."""
    fd = os.open(_LOG + ".count", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        number = int(os.read(fd, 32) or b"0") + 1
        os.lseek(fd, 0, os.SEEK_SET)
        os.write(fd, str(number).encode())
        _write(f"{number}\t{kind}\t{shape}\t{where}")
        return number
    finally:
        os.close(fd)  # and the lock with it


def _where() -> str:
    """The innermost seeddump function that made the change, and its caller."""
    frame = sys._getframe(2)
    found: list[str] = []
    while frame is not None and len(found) < 2:
        name = frame.f_code.co_filename
        if "/seeddump/" in name and (found or not name.endswith("/seeddump/postgres.py")):
            found.append(f"{os.path.basename(name)}:{frame.f_code.co_name}")
        frame = frame.f_back
    return " < ".join(found) or "?"


def _shape(text: str) -> str:
    """What the change is, without the names that differ from run to run (times, hashes, pids)."""
    text = re.sub(r"\s+", " ", text).strip()
    return re.sub(r"[0-9a-f]{6,}|\d+", "#", text)[:90]


def _others_leftovers() -> bool:
    """The change drops what other runs left (``sandbox.drop_stale``: the throwaway roles of killed runs, as many
    as cases side by side left): no step of this run's, and counted it would shift the numbers of the rest."""
    frame = sys._getframe(2)
    while frame is not None:
        if frame.f_code.co_name == "drop_stale" and frame.f_code.co_filename.endswith("/seeddump/sandbox.py"):
            return True
        frame = frame.f_back
    return False


def changed(kind: str, detail: str, started: subprocess.Popen[Any] | None = None) -> None:
    global _busy
    if _others_leftovers():
        return
    _busy = True
    try:
        where = _where() + (" [child]" if _ROLE == "child" else "")
        number = _count_and_write(kind, _shape(detail), where)
        if number != _FAULT_AT:
            return
        _write(f"FAULT\t{number}\t{_ROLE}")
        if _FAULT == "sessions":
            _end_sessions(started)
            return
        if _FAULT == "stop":  # an immediate stop of the server (the harness starts it again)
            _wait_for_session(started)
            subprocess.run(json.loads(os.environ["CRASHMATRIX_STOP"]), capture_output=True, timeout=120)
            return
    finally:
        _busy = False
    os.kill(os.getpid(), signal.SIGKILL if _FAULT == "kill" else signal.SIGTERM)


def _maintenance() -> Any:
    """A connection of the probe's own to the server."""
    import psycopg

    params = {k: v for k, v in _connection_params.items() if k != "application_name"}
    dbname = os.environ.get("CRASHMATRIX_MAINTENANCE_DB", "postgres")
    return psycopg.connect(**{**params, "dbname": dbname}, autocommit=True)


def _wait_for_session(started: subprocess.Popen[Any] | None, conn: Any = None) -> None:
    """Returns once the child ``started`` has a session of this restore's on the server (mid-load), or has ended."""
    if started is None:
        return
    with contextlib.ExitStack() as stack:
        conn = conn or stack.enter_context(_maintenance())
        deadline = time.monotonic() + 60
        while started.poll() is None and time.monotonic() < deadline:
            found = conn.execute(
                "SELECT 1 FROM pg_stat_activity WHERE application_name LIKE %s AND NOT pid = ANY(%s)"
                " AND pid <> pg_backend_pid()",
                (_APPNAME.replace("_", r"\_") + "%", _backends),
            ).fetchone()
            if found:
                return
            time.sleep(0.005)  # polls the server for the child's session, with a deadline


def _end_sessions(started: subprocess.Popen[Any] | None = None) -> None:
    """Ends this restore's sessions; with ``started``, once that child has one too (or has ended)."""
    with _maintenance() as conn:
        _wait_for_session(started, conn)
        conn.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
            " WHERE (application_name LIKE %s OR pid = ANY(%s)) AND pid <> pg_backend_pid()",
            (_APPNAME.replace("_", r"\_") + "%", _backends),
        )


_connection_params: dict[str, Any] = {}
_backends: list[int] = []  # this process's own sessions (a background process names its sessions otherwise)


def _statement(conn: Any, query: Any) -> str:
    if isinstance(query, bytes):
        return query.decode(errors="replace")
    if isinstance(query, str):
        return query
    try:
        return query.as_string(conn)
    except Exception:  # only a label
        return str(query)


def _first_word(text: str) -> str:
    text = re.sub(r"(--[^\n]*\n|/\*.*?\*/|\s|\()+", " ", text, flags=re.S).strip()
    return text.split(" ", 1)[0].upper() if text else ""


def _is_seeddumps(conn: Any) -> bool:
    """One of seeddump's own connections (``seeddump.driver.Connection``; ``seeddump.postgres`` before it)."""
    kind = type(conn)
    return kind.__module__ in ("seeddump.driver", "seeddump.postgres") and kind.__name__ == "Connection"


def _patch_psycopg() -> None:
    import psycopg

    execute, executemany = psycopg.Cursor.execute, psycopg.Cursor.executemany
    connect = psycopg.Connection.connect.__func__  # type: ignore[attr-defined]
    transaction_exit = psycopg.Transaction.__exit__
    commit = psycopg.Connection.commit

    def counted(cursor: Any, query: Any) -> None:
        if _busy or not _is_seeddumps(cursor.connection):
            return
        text = _statement(cursor.connection, query)
        if _first_word(text) not in _READ_ONLY:
            changed("sql", text)

    def execute_counted(self: Any, query: Any, *args: Any, **kwargs: Any) -> Any:
        done = execute(self, query, *args, **kwargs)
        counted(self, query)
        return done

    def executemany_counted(self: Any, query: Any, *args: Any, **kwargs: Any) -> Any:
        done = executemany(self, query, *args, **kwargs)
        counted(self, query)
        return done

    def connect_noted(cls: Any, *args: Any, **kwargs: Any) -> Any:
        conn = connect(cls, *args, **kwargs)
        if _is_seeddumps(conn):
            if not _connection_params:
                _connection_params.update(conn.info.get_parameters())
                if conn.info.password:
                    _connection_params["password"] = conn.info.password
            _backends.append(conn.info.backend_pid)
            _write(f"PID\t{conn.info.backend_pid}")
        return conn

    def transaction_exit_counted(self: Any, exc_type: Any, exc: Any, tb: Any) -> Any:
        outer = self._outer_transaction
        done = transaction_exit(self, exc_type, exc, tb)
        if outer and exc_type is None and not _busy and _is_seeddumps(self.connection):
            changed("sql", "COMMIT")
        return done

    def commit_counted(self: Any) -> None:
        commit(self)
        if not _busy and _is_seeddumps(self):
            changed("sql", "COMMIT")

    psycopg.Cursor.execute = execute_counted  # type: ignore[method-assign]
    psycopg.Cursor.executemany = executemany_counted  # type: ignore[method-assign]
    psycopg.Connection.connect = classmethod(connect_noted)  # type: ignore[method-assign,assignment]
    psycopg.Transaction.__exit__ = transaction_exit_counted  # type: ignore[method-assign]
    psycopg.Connection.commit = commit_counted  # type: ignore[method-assign]


# tempfile's random names (``tempfile.TemporaryFile`` unlinks its file at once where O_TMPFILE is not used).
_TEMPORARY = re.compile(r"(tmp)?[a-z0-9_]{8}")


def _file_name(path: Any) -> str:
    name = os.path.basename(str(path))
    return "(a temporary file)" if _TEMPORARY.fullmatch(name) else name


def _patch_files() -> None:
    def counting(name: str, function: Any) -> Any:
        def wrapped(*args: Any, **kwargs: Any) -> Any:
            done = function(*args, **kwargs)
            if not _busy:
                changed("file", f"{name} {_file_name(args[0])}" if args else name)
            return done

        return wrapped

    for name in ("rename", "replace", "unlink", "remove", "rmdir"):
        setattr(os, name, counting(f"os.{name}", getattr(os, name)))
    shutil.rmtree = counting("shutil.rmtree", shutil.rmtree)  # type: ignore[assignment]
    _after_import("seeddump.media", _patch_media)


def _patch_media(module: Any) -> None:
    renameat2 = module._renameat2

    def counted(source: Any, destination: Any, flags: int) -> bool:
        done = renameat2(source, destination, flags)
        if done:
            changed("file", f"renameat2 {flags} {os.path.basename(str(source))}")
        return done

    module._renameat2 = counted


def _start_time(pid: int) -> str:
    """The process's start time (/proc/<pid>/stat, field 22): with the pid, names it even if the pid is reused."""
    try:
        with open(f"/proc/{pid}/stat", encoding="utf-8") as stat:
            return stat.read().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return "?"


def _patch_processes() -> None:
    wait, poll, init = subprocess.Popen.wait, subprocess.Popen.poll, subprocess.Popen.__init__

    def init_noted(self: Any, *args: Any, **kwargs: Any) -> None:
        init(self, *args, **kwargs)
        argv = self.args if isinstance(self.args, (list, tuple)) else [self.args]
        _write(f"SPAWN\t{self.pid}\t{_start_time(self.pid)}\t{os.path.basename(str(argv[0]))}")
        if not _busy:
            changed("start", os.path.basename(str(argv[0])), started=self)

    def noted(process: Any, before: Any) -> None:
        if before is None and process.returncode is not None and not _busy:
            argv = process.args if isinstance(process.args, (list, tuple)) else [process.args]
            changed("exit", f"{os.path.basename(str(argv[0]))} {process.returncode}")

    def wait_counted(self: Any, *args: Any, **kwargs: Any) -> Any:
        before = self.returncode
        done = wait(self, *args, **kwargs)
        noted(self, before)
        return done

    def poll_counted(self: Any) -> Any:
        before = self.returncode
        done = poll(self)
        noted(self, before)
        return done

    subprocess.Popen.__init__ = init_noted  # type: ignore[method-assign]
    subprocess.Popen.wait = wait_counted  # type: ignore[method-assign]
    subprocess.Popen.poll = poll_counted  # type: ignore[method-assign]


class _AfterImport(importlib.abc.MetaPathFinder):
    """Calls ``patch(module)`` once ``name`` is imported."""

    def __init__(self, name: str, patch: Any) -> None:
        self.name, self.patch = name, patch

    def find_spec(self, fullname: str, path: Any, target: Any = None) -> Any:
        if fullname != self.name:
            return None
        sys.meta_path.remove(self)
        spec = importlib.machinery.PathFinder.find_spec(fullname, path)
        if spec is None or spec.loader is None:
            return spec
        exec_module, patch = spec.loader.exec_module, self.patch

        def exec_and_patch(module: Any) -> None:
            exec_module(module)
            patch(module)

        spec.loader.exec_module = exec_and_patch  # type: ignore[method-assign]
        return spec


def _after_import(name: str, patch: Any) -> None:
    sys.meta_path.insert(0, _AfterImport(name, patch))


def install() -> None:
    # Python's tempfile tries a randomly named file in the temporary folder the first time it is used: no state
    # change of a restore, and a different name each run. Done before the file functions are watched.
    tempfile.gettempdir()
    os.environ.setdefault("CRASHMATRIX_MAIN_PID", str(os.getpid()))  # for the processes it starts
    _write(f"PROC\t{os.getpid()}\t{_ROLE}")
    _patch_psycopg()
    _patch_files()
    _patch_processes()
