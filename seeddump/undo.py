"""Undo: the database (and media folder) the last restore replaced, kept so that it can be put back.

A restore of an alias's own database keeps the database it replaced as ``seeddump_undo_<tag>_<hex>``
(``<tag>``: a hash of the target's name, as for scratch and replaced databases), closed to connections so
that it stays exactly as it was, owned by the role seeddump connects as, and labelled with the target,
when it was replaced and by which dump. When the restore also replaced MEDIA_ROOT, the replaced folder is
kept beside it as ``.<media>.seeddump-undo.<tag>`` (``seeddump.media``).

A restore in place changes the target rather than replacing it, so it first copies the target under the
same prefix, labelled pending, and keeps that copy only once its transaction commits.

One generation per target: the next restore of it retires the kept copy (renamed like a replaced database,
and dropped with it), and so does an undo, so a second undo finds nothing. SEEDDUMP_UNDO = False keeps
nothing. As with every database seeddump makes, only one the connecting role owns is ever used or dropped:
a database another role names ``seeddump_undo_…`` is foreign and left alone.

Putting the copy back is ``restore.undo_last``: the same swap as a restore, under the same lock.
"""

from __future__ import annotations

import contextlib
import secrets
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import psycopg

from seeddump import databases, dumpfiles, finishing, media
from seeddump.conf import conf
from seeddump.exceptions import SeeddumpError

PREFIX = "seeddump_undo_"
KIND = "undo"
PENDING = "undo-pending"  # an in-place restore's copy of the target, until the restore commits


def prefix(target: str) -> str:
    return f"{PREFIX}{finishing.tag(target)}_"


@dataclass(frozen=True)
class UndoCopy:
    """A database kept for an undo, as its label describes it."""

    name: str
    database: str  # the database it was replaced in
    replaced_at: datetime | None
    replaced_by: str  # the dump file whose restore replaced it
    environment: str
    media: str | None  # "kept": its media folder is kept too; "absent": there was no MEDIA_ROOT; None: untouched
    size_bytes: int

    def describe(self) -> str:
        when = f"{self.replaced_at:%Y-%m-%d %H:%M:%S} UTC" if self.replaced_at else "an unknown time"
        return f"'{self.database}' as it was before {self.replaced_by or 'a restore'} replaced it at {when}"


def _from_database(database: databases.Database) -> UndoCopy | None:
    label = database.label
    if label.get("seeddump") != KIND or not isinstance(label.get("database"), str):
        return None
    try:
        replaced_at: datetime | None = dumpfiles.parse_isoformat(str(label.get("replacedAt")))
    except ValueError:
        replaced_at = None
    media_state = label.get("media")
    return UndoCopy(
        name=database.name,
        database=label["database"],
        replaced_at=replaced_at,
        replaced_by=str(label.get("replacedBy") or ""),
        environment=str(label.get("environment") or ""),
        media=media_state if media_state in ("kept", "absent") else None,
        size_bytes=database.size_bytes,
    )


def list_copies(admin: psycopg.Connection, target: str | None = None, *, sizes: bool = True) -> list[UndoCopy]:
    """The undo copies of ``target`` (or of every database) this role keeps on the server, newest first."""
    found = []
    for database in databases.ours(admin, PREFIX if target is None else prefix(target), sizes=sizes):
        copy = _from_database(database)
        if copy is not None and (target is None or copy.database == target):
            found.append(copy)
    oldest = datetime.min.replace(tzinfo=timezone.utc)
    return sorted(found, key=lambda copy: copy.replaced_at or oldest, reverse=True)


def find(admin: psycopg.Connection, target: str) -> UndoCopy | None:
    copies = list_copies(admin, target, sizes=False)
    return copies[0] if copies else None


def foreign(admin: psycopg.Connection) -> list[databases.Database]:
    return [database for database in databases.with_prefix(admin, PREFIX, sizes=False) if not database.ours]


@dataclass(frozen=True)
class Kept:
    """What a restore kept for an undo, and what it retired (to drop with the replaced database)."""

    copy: str | None  # the undo copy; None: nothing kept (see ``note``)
    retired: tuple[str, ...]  # databases to drop: the replaced one when not kept, earlier undo copies
    retired_media: tuple[Path, ...]  # media folders to drop, likewise
    note: str | None = None  # why nothing is kept, when the user may wonder


def retire(admin: psycopg.Connection, target: str, media_root: Path | None) -> tuple[list[str], list[Path]]:
    """Renames the undo copy of ``target`` (and its media folder) to replaced names, to be dropped: it no
    longer undoes the last change. Needs CREATEDB (a rename); without it the copy is dropped now."""
    retired = []
    for copy in list_copies(admin, target, sizes=False):
        name = finishing.retired_prefix(target) + secrets.token_hex(4)
        try:
            databases.rename(admin, copy.name, name)
            retired.append(name)
        except psycopg.errors.InsufficientPrivilege:
            databases.drop(admin, copy.name)
    folders = []
    if media_root is None:  # a restore that leaves the files alone: a folder kept before undoes nothing now
        with contextlib.suppress(SeeddumpError):
            media_root = media.media_root()
    if media_root is not None and (folder := media.retire_undo(media_root, finishing.tag(target))) is not None:
        folders.append(folder)
    return retired, folders


def keep(
    admin: psycopg.Connection,
    target: str,
    replaced: str | None,
    *,
    dump_path: Path,
    environment: str,
    media_root: Path | None,
    replaced_media: tuple[Path, ...],
) -> Kept:
    """After a restore swapped ``replaced`` out of ``target``'s place (under the target's lock): keeps it
    as the target's undo copy, retiring the earlier one. ``media_root`` is the media folder the restore
    swapped (None: it left the files alone), ``replaced_media`` the folder it replaced there, if any."""
    retired, retired_media = retire(admin, target, media_root)
    drop_pending(admin, target, but=replaced)
    if replaced is None or not conf.UNDO:
        note = None if replaced is None else "SEEDDUMP_UNDO is off"
        return Kept(None, (*retired, *([replaced] if replaced else [])), (*retired_media, *replaced_media), note)
    media_state = None
    if media_root is not None:
        media_state = "absent"
        for folder in replaced_media:
            media.keep_for_undo(media_root, folder, finishing.tag(target))
            media_state = "kept"
    name = prefix(target) + secrets.token_hex(4)
    with admin.transaction():
        databases.rename(admin, replaced, name)
        databases.close(admin, name)
        databases.label(
            admin,
            name,
            {
                "seeddump": KIND,
                "database": target,
                "replacedAt": dumpfiles.isoformat(datetime.now(timezone.utc)),
                "replacedBy": dump_path.name,
                "environment": environment,
                "media": media_state,
            },
        )
    return Kept(name, tuple(retired), tuple(retired_media))


def make_pending(admin: psycopg.Connection, target: str) -> str:
    """For a restore in place: copies ``target`` (closed, labelled pending) before it is changed, to be kept by
    ``keep`` once the restore commits; one a killed restore left is dropped by the next (``drop_pending``).
    Ends the target's sessions first: a database in use cannot be copied. Needs CREATEDB."""
    name = prefix(target) + secrets.token_hex(4)
    databases.end_sessions(admin, target)
    databases.clone(admin, target, name, closed=True)
    databases.label(admin, name, {"seeddump": PENDING, "database": target})
    return name


def drop_pending(admin: psycopg.Connection, target: str, *, but: str | None = None) -> list[str]:
    """Drops the pending copies of ``target`` (ours) that killed in-place restores left, all but ``but``.
    Call it holding the target's lock: a running in-place restore's copy looks the same."""
    dropped = []
    for database in databases.ours(admin, prefix(target), sizes=False):
        if database.label.get("seeddump") == PENDING and database.name != but and databases.drop(admin, database.name):
            dropped.append(database.name)
    return dropped


def drop(admin: psycopg.Connection, target: str) -> list[str]:
    """Drops the undo copy of ``target`` now (``snapshots --drop-all``); its media folder is left to the next
    restore, which retires it."""
    return [copy.name for copy in list_copies(admin, target, sizes=False) if databases.drop(admin, copy.name)]
