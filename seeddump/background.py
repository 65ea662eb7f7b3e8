"""Finishing a restore in a background process, so that restoredump returns once the database is in place.

What is left after the swap (dropping the replaced database, caching the dump's snapshot, preparing a
ready copy for the next restore) is not needed by whoever waits for the restore, and takes as long as
the restore itself when the snapshot has to be built. ``start`` hands it to a new Python process in its
own session, with the same settings module and import path, that runs ``finishing.finish`` and exits.

The job travels on the child's stdin as JSON (database names and a path: nothing secret); the child
reads the password from the settings like any other process of the project. Its output goes to
``.seeddump-background.log`` in the dumps folder. Killing it at any point leaves nothing wrong: the next
restore drops the replaced database, and half-built snapshots are dropped under the snapshot lock.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import subprocess
import sys
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, TextIO

from seeddump import dumpfiles, finishing, postgres, processes
from seeddump.conf import conf
from seeddump.exceptions import SeeddumpError

LOG_NAME = ".seeddump-background.log"
_LOG_LIMIT = 1_000_000  # bytes; the log starts over beyond this
_LINE_RE = re.compile(r"^\S+ \S+ \[(?P<pid>\d+)\] [^:]*: (?P<message>.*)$")
# ``python -c`` puts the working directory first on sys.path: a ``django.py`` wherever the user happened to
# be would be imported instead of Django. The child drops that entry before importing anything, and runs
# in the (private) dumps folder; its import path is the parent's, through PYTHONPATH. It reads the settings
# module but does not load Django's apps (the project's models, seconds in a large project): dropping and
# copying databases needs none of them, and writing the admin's records loads them (``records``).
_CHILD = (
    "import sys; sys.path[:] = [p for p in sys.path if p not in ('', '.')]; "
    "from seeddump import background; background.main()"
)


def log_path() -> Path:
    return conf.DIR / LOG_NAME


def finish_later(followup: finishing.Followup, progress: Callable[[str], None]) -> int | None:
    """Leaves ``followup`` to a background process and returns its pid; when none can be started, finishes
    here and returns None."""
    try:
        pid = start(followup)
    except (OSError, SeeddumpError) as exc:  # the log cannot be written, or no process can start
        progress(f"Could not start the background process ({getattr(exc, 'strerror', None) or exc}); finishing here")
        pid = None
    if pid is None:  # or no settings module a new process could load
        settings_dict = {**postgres.settings_for(followup.using), "NAME": followup.database}
        # An interruption goes through as such: the caller (after the swap, ``restore.after_swap``) says what
        # the target holds and where the replaced database is, which only it knows.
        with postgres.user_errors(settings_dict):
            finishing.finish(followup, settings_dict, progress)
    return pid


def start(followup: finishing.Followup) -> int | None:
    """Starts a process that runs ``finishing.finish(followup)``; its pid, or None if none can be started.

    A process can only load the project when its settings come from a module (DJANGO_SETTINGS_MODULE),
    not from ``settings.configure()``."""
    from django.conf import settings

    module = os.environ.get("DJANGO_SETTINGS_MODULE") or getattr(settings, "SETTINGS_MODULE", None)
    if not module:
        return None
    job = {
        "using": followup.using,
        "database": followup.database,
        "dump": str(followup.dump_path),
        "retired": list(followup.retired),
        "retiredMedia": [str(folder) for folder in followup.retired_media],
        "restoredOid": followup.restored_oid,
        "buildSnapshot": followup.build_snapshot,
        "readyCopy": followup.ready_copy,
        "emptyDatabase": followup.empty_database,
        "trusted": followup.trusted,
        "restoreTimes": None
        if followup.restore_times is None
        else {name: dumpfiles.isoformat(when) for name, when in followup.restore_times.items()},
    }
    job["settings"] = _effective_settings()
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": module,
        "PYTHONPATH": os.pathsep.join(path for path in sys.path if path),
    }
    with _open_log() as log:
        log.flush()
        child = subprocess.Popen(
            [sys.executable, "-c", _CHILD],
            stdin=subprocess.PIPE,
            stdout=log,
            stderr=log,
            env=env,
            cwd=conf.DIR,
            start_new_session=True,  # not killed with the terminal's Ctrl-C, nor waited for
            text=True,
        )
        log.write(_line(child.pid, followup.database, _STARTED))  # how the next run knows it ever ran
    assert child.stdin is not None
    child.stdin.write(json.dumps(job))
    child.stdin.close()
    return child.pid


_STARTED = "started"
_DONE = "done"


def _line(pid: int, database: str, message: str) -> str:
    stamp = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M:%S")
    return f"{stamp} [{pid}] {database}: {message}\n"


def _unfinished() -> tuple[str, str] | None:
    """(pid, what happened) of the last background process, if it ended without finishing its work (it
    failed, was killed, or could not even start Python and Django); None if it finished or still runs."""
    try:
        with log_path().open("rb") as handle:
            handle.seek(max(handle.seek(0, os.SEEK_END) - 65536, 0))
            lines = handle.read().decode("utf-8", "replace").splitlines()
    except OSError:
        return None
    starts = [i for i, line in enumerate(lines) if (m := _LINE_RE.match(line)) and m["message"] == _STARTED]
    if not starts:
        return None
    pid = _LINE_RE.match(lines[starts[-1]])["pid"]  # type: ignore[index]
    after = lines[starts[-1] + 1 :]
    own = [m["message"] for line in after if (m := _LINE_RE.match(line)) and m["pid"] == pid]
    if own and own[-1].startswith(_DONE):
        return None
    if own and own[-1].startswith("failed:"):
        return pid, own[-1]
    if processes.alive(int(pid)):
        return None  # still at work
    last = next((line.strip() for line in reversed(after) if line.strip()), "no output")
    return pid, f"stopped before it finished (its last words: {last[:200]})"


def last_failure() -> str | None:
    """What went wrong with the last background process, if it did not finish its work; see ``_unfinished``."""
    unfinished = _unfinished()
    return None if unfinished is None else f"the background process {unfinished[0]} {unfinished[1]}"


def acknowledge_failure() -> None:
    """Marks the last background process's failure as dealt with: a later restore has tidied up after it."""
    unfinished = _unfinished()
    if unfinished is None:
        return
    with contextlib.suppress(OSError, SeeddumpError), _open_log() as log:
        log.write(_line(int(unfinished[0]), "-", f"{_DONE}: tidied up by a later restore"))


def _effective_settings() -> dict[str, Any]:
    """The seeddump settings this process runs with, which the settings module alone may not give
    (``override_settings``, a test runner's changes)."""
    return {
        "SEEDDUMP_DIR": str(conf.DIR),
        "SEEDDUMP_PG_BIN_DIRS": [str(path) for path in conf.PG_BIN_DIRS],
        "SEEDDUMP_RESTORE_JOBS": conf.RESTORE_JOBS,
        "SEEDDUMP_MAINTENANCE_DB": conf.MAINTENANCE_DB,
        "SEEDDUMP_CONNECT_TIMEOUT": conf.CONNECT_TIMEOUT,
        "SEEDDUMP_LOCK_TIMEOUT": conf.LOCK_TIMEOUT,
        "SEEDDUMP_SNAPSHOTS_KEEP": conf.SNAPSHOTS_KEEP,
        "SEEDDUMP_READY_COPIES": conf.READY_COPIES,
        "SEEDDUMP_CLONES": conf.CLONES,
        "SEEDDUMP_CACHE_MAX_SIZE": conf.CACHE_MAX_SIZE,
        "SEEDDUMP_MIN_FREE_DISK": conf.MIN_FREE_DISK,
        "SEEDDUMP_OWNER": conf.OWNER,
        "SEEDDUMP_TRUST_DUMPS": conf.TRUST_DUMPS,
    }


def _open_log() -> TextIO:
    """The log, opened to append (see ``dumpfiles.open_own``); past its limit it is moved aside (to ``.1``,
    replacing the older one) and started anew: never truncated."""
    path = log_path()
    dumpfiles.ensure_directory(path.parent)
    log = dumpfiles.open_own(path, append=True)
    if os.fstat(log.fileno()).st_size <= _LOG_LIMIT:
        return log
    log.close()
    os.replace(path, path.with_name(path.name + ".1"))  # renames the entry itself, never a link's target
    return dumpfiles.open_own(path, append=True)


def main() -> None:
    """The background process: reads the job from stdin, finishes it, logs one line per step."""
    from django.conf import settings
    from django.db import connections

    job = json.load(sys.stdin)
    for name, value in job["settings"].items():
        setattr(settings, name, value)
    # The database the parent restored, under a test runner's name too, for the ORM (dump records) as well.
    connections.settings[job["using"]]["NAME"] = job["database"]
    followup = finishing.Followup(
        using=job["using"],
        database=job["database"],
        dump_path=Path(job["dump"]),
        retired=tuple(job["retired"]),
        retired_media=tuple(Path(folder) for folder in job.get("retiredMedia", ())),
        restored_oid=job.get("restoredOid"),
        build_snapshot=job["buildSnapshot"],
        ready_copy=job["readyCopy"],
        empty_database=job["emptyDatabase"],
        trusted=bool(job.get("trusted")),
        restore_times=None
        if job["restoreTimes"] is None
        else {name: dumpfiles.parse_isoformat(when) for name, when in job["restoreTimes"].items()},
    )
    os.nice(10)  # the restored database's users come first
    postgres.APPLICATION_NAME = "seeddump background"

    def log(message: str) -> None:
        print(_line(os.getpid(), followup.database, message), end="", flush=True)

    log(f"finishing the restore of {followup.dump_path.name}: {', '.join(followup.describe())}")
    settings_dict = postgres.settings_for(followup.using)
    try:
        with postgres.user_errors(settings_dict):
            finishing.finish(followup, settings_dict, progress=log)
    except SeeddumpError as exc:
        log(f"failed: {exc} The next restore tidies up.")
        sys.exit(1)
    from django.apps import apps

    log(
        f"{_DONE} (peak memory {_peak_memory_mb():.0f} MB, CPU {_cpu_seconds():.2f} s, "
        f"Django's apps {'loaded' if apps.ready else 'not loaded'})"
    )


def _cpu_seconds() -> float:
    """CPU time of this process and of the programs it ran (pg_restore, pg_dump)."""
    import resource

    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def _peak_memory_mb() -> float:
    """This process's peak resident memory, or its largest child's (pg_restore) if larger (Linux: kB)."""
    import resource

    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return max(own.ru_maxrss, children.ru_maxrss) / 1024
