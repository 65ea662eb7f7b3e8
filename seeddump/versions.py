"""A dump's version: what code made the schema it holds.

SEEDDUMP_VERSION when set; else the project's short git commit; else (no git) a fingerprint of the
applied migrations. A commit alone does not name a schema when some of the dumped database's migrations
are files git does not hold as committed (new, changed or ignored in the checkout): such a dump's version
is ``<commit>-dirty-<8 hex>``, the hex a digest of the applied migrations and of those files' contents, so
that two different schemas never share a version.
"""

from __future__ import annotations

import hashlib
import re
import subprocess
import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from django.db.migrations.loader import MigrationLoader

from seeddump import codestate, dumpfiles
from seeddump.conf import conf
from seeddump.exceptions import SeeddumpError

Key = tuple[str, str]


@dataclass(frozen=True)
class Version:
    text: str
    uncommitted: tuple[str, ...] = ()  # applied migrations (app.name) whose files are not committed


def project_version(migrations: Sequence[Key]) -> Version:
    """The version of a dump of a database with these applied migrations; see the module docstring."""
    if conf.VERSION:
        version = str(conf.VERSION)
        if not re.fullmatch(r"[0-9A-Za-z]{1,40}", version):
            raise SeeddumpError(f"SEEDDUMP_VERSION {version!r} must be 1 to 40 letters or digits.")
        return Version(version)
    commit = (_git(conf.PROJECT_DIR, "rev-parse", "--short=7", "HEAD") or "").strip()
    top = (_git(conf.PROJECT_DIR, "rev-parse", "--show-toplevel") or "").strip()
    if not commit.isalnum() or not top:
        return Version(dumpfiles.migrations_fingerprint(migrations)[:7])
    uncommitted = _uncommitted(Path(top), migrations)
    if not uncommitted:
        return Version(commit)
    digest = hashlib.sha256(dumpfiles.migrations_fingerprint(migrations).encode())
    for key, path in sorted(uncommitted.items()):
        digest.update(f"\0{key[0]}.{key[1]}\0".encode())
        try:
            digest.update(path.read_bytes())
        except OSError:
            digest.update(b"(unreadable)")
    return Version(f"{commit}-dirty-{digest.hexdigest()[:8]}", tuple(f"{app}.{name}" for app, name in uncommitted))


def _git(folder: Path, *args: str) -> str | None:
    try:
        result = subprocess.run(["git", "-C", str(folder), *args], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.SubprocessError):
        return None
    return result.stdout if result.returncode == 0 else None


def _migration_files(migrations: Iterable[Key], top: Path) -> dict[Path, Key]:
    """The files of the applied migrations that lie in the git checkout at ``top``."""
    with codestate.migration_modules_in_effect():
        loader = MigrationLoader(None, ignore_no_migrations=True)
    files = {}
    for key in migrations:
        migration = loader.disk_migrations.get(key)
        module = sys.modules.get(type(migration).__module__) if migration is not None else None
        file = getattr(module, "__file__", None)
        if file:
            path = Path(file).resolve()
            if path.is_relative_to(top):
                files[path] = key
    return files


def _uncommitted(top: Path, migrations: Iterable[Key]) -> dict[Key, Path]:
    """The applied migrations whose files git lists as changed, new or ignored (``git status``)."""
    top = top.resolve()
    files = _migration_files(migrations, top)
    if not files:
        return {}
    args = ["status", "--porcelain=v1", "-z", "--untracked-files=all", "--ignored=matching", "--"]
    listing = _git(top, *args, *(str(path) for path in sorted(files)))
    if not listing:
        return {}
    found: dict[Key, Path] = {}
    entries = iter(listing.split("\0"))
    for entry in entries:
        if len(entry) < 4:
            continue
        if entry[0] in "RC":  # a rename or copy: the next entry is the original name
            next(entries, None)
        path = (top / entry[3:]).resolve()
        if path in files:
            found[files[path]] = path
    return found
