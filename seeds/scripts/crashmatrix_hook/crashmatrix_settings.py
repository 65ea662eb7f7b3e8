"""The demo project's settings, with the cache the crash matrix's path asks for (CRASHMATRIX_SNAPSHOTS)."""

import os

from project.settings import *  # noqa: F403

SEEDDUMP_SNAPSHOTS = os.environ.get("CRASHMATRIX_SNAPSHOTS", "false") == "true"
SEEDDUMP_READY_COPIES = False
