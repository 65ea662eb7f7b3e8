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

import json
import os
import subprocess
import sys
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, TextIO

from seeddump import dumpfiles, finishing, postgres
from seeddump.conf import conf
from seeddump.exceptions import SeeddumpError

LOG_NAME = ".seeddump-background.log"
_LOG_LIMIT = 1_000_000  # bytes; the log starts over beyond this
_CHILD = "import django; django.setup(); from seeddump import background; background.main()"


def log_path() -> Path:
    return conf.DIR / LOG_NAME


def finish_later(followup: finishing.Followup, progress: Callable[[str], None]) -> int | None:
    """Leaves ``followup`` to a background process and returns its pid; when none can be started, finishes
    here and returns None."""
    try:
        pid = start(followup)
    except OSError as exc:  # the log cannot be written, or no process can be started: the restore stands
        progress(f"Could not start the background process ({exc.strerror or exc}); finishing here")
        pid = None
    if pid is None:  # or no settings module a new process could load
        settings_dict = {**postgres.settings_for(followup.using), "NAME": followup.database}
        try:
            with postgres.user_errors(settings_dict):
                finishing.finish(followup, settings_dict, progress)
        except KeyboardInterrupt:
            raise SeeddumpError(
                f"Interrupted after the restored database was put in place: '{followup.database}' holds the "
                "dump; the replaced database is dropped by the next restore."
            ) from None
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
        "buildSnapshot": followup.build_snapshot,
        "readyCopy": followup.ready_copy,
        "emptyDatabase": followup.empty_database,
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
        child = subprocess.Popen(
            [sys.executable, "-c", _CHILD],
            stdin=subprocess.PIPE,
            stdout=log,
            stderr=log,
            env=env,
            start_new_session=True,  # not killed with the terminal's Ctrl-C, nor waited for
            text=True,
        )
    assert child.stdin is not None
    child.stdin.write(json.dumps(job))
    child.stdin.close()
    return child.pid


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
        "SEEDDUMP_OWNER": conf.OWNER,
    }


def _open_log() -> TextIO:
    path = log_path()
    dumpfiles.ensure_directory(path.parent)
    mode = "w" if path.exists() and path.stat().st_size > _LOG_LIMIT else "a"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | (os.O_TRUNC if mode == "w" else os.O_APPEND), 0o600)
    return os.fdopen(fd, mode)


def main() -> None:
    """The background process: reads the job from stdin, finishes it, logs one line per step."""
    from django.conf import settings
    from django.db import connections

    job = json.load(sys.stdin)
    for name, value in job["settings"].items():
        setattr(settings, name, value)
    # The database the parent restored, under a test runner's name too, for the ORM (dump records) as well.
    connections[job["using"]].settings_dict["NAME"] = job["database"]
    followup = finishing.Followup(
        using=job["using"],
        database=job["database"],
        dump_path=Path(job["dump"]),
        retired=tuple(job["retired"]),
        build_snapshot=job["buildSnapshot"],
        ready_copy=job["readyCopy"],
        empty_database=job["emptyDatabase"],
        restore_times=None
        if job["restoreTimes"] is None
        else {name: dumpfiles.parse_isoformat(when) for name, when in job["restoreTimes"].items()},
    )
    os.nice(10)  # the restored database's users come first
    postgres.APPLICATION_NAME = "seeddump background"

    def log(message: str) -> None:
        stamp = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M:%S")
        print(f"{stamp} [{os.getpid()}] {followup.database}: {message}", flush=True)

    log(f"finishing the restore of {followup.dump_path.name}: {', '.join(followup.describe())}")
    settings_dict = postgres.settings_for(followup.using)
    try:
        with postgres.user_errors(settings_dict):
            finishing.finish(followup, settings_dict, progress=log)
    except SeeddumpError as exc:
        log(f"failed: {exc} The next restore tidies up.")
        sys.exit(1)
    log("done")
