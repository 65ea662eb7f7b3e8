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

import secrets
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import psycopg

from seeddump import databases, dumpfiles, finishing, media
from seeddump.conf import conf

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
    owner: str | None = None  # the role that owned it before it was replaced

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
        owner=label["owner"] if isinstance(label.get("owner"), str) else None,
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


def _label(target: str, dump_path: Path, environment: str, media_state: str | None) -> dict[str, object]:
    return {
        "seeddump": KIND,
        "database": target,
        "replacedAt": dumpfiles.isoformat(datetime.now(timezone.utc)),
        "replacedBy": dump_path.name,
        "environment": environment,
        "media": media_state,
    }


def replaced_fate(
    admin: psycopg.Connection,
    target: str,
    *,
    keep: bool,
    dump_path: Path,
    environment: str,
    media_exchange: media.Exchange | None,
    media_swapped: bool,
) -> databases.Replaced:
    """What the swap of a restore makes of the database it replaces, in its own transaction: with ``keep``
    (the alias's own database), the target's undo copy, closed and labelled, the earlier copy set aside under
    a replaced name; else a replaced database for ``finishing`` to drop. ``media_exchange`` is recorded in the
    label until ``settle_media`` has done it; ``media_swapped`` says the restore swaps MEDIA_ROOT at all."""
    aside = tuple((copy.name, _retired_name(target)) for copy in list_copies(admin, target, sizes=False))
    exchange: dict[str, object] = {} if media_exchange is None else {"mediaExchange": media_exchange.as_label()}
    if not keep or not conf.UNDO:
        label: dict[str, object] = {"seeddump": "retired", "database": target, **exchange}
        return databases.Replaced(_retired_name(target), label, aside=aside if keep else ())
    state = None if not media_swapped else ("kept" if media_exchange and media_exchange.root_inode else "absent")
    label = {**_label(target, dump_path, environment, state), **exchange}
    return databases.Replaced(prefix(target) + secrets.token_hex(4), label, closed=True, aside=aside)


def _retired_name(target: str) -> str:
    return finishing.retired_prefix(target) + secrets.token_hex(4)


def settle_media(admin: psycopg.Connection, name: str, exchange: media.Exchange) -> list[Path]:
    """Completes the media exchange the swap recorded in ``name``'s label, then takes it off the label.
    Returns the folders it set aside, to drop."""
    aside = exchange.complete()
    found = [database for database in databases.ours(admin, name, sizes=False) if database.name == name]
    if found and "mediaExchange" in found[0].label:
        databases.label(admin, name, {k: v for k, v in found[0].label.items() if k != "mediaExchange"})
    return aside


def settle(admin: psycopg.Connection, target: str, schemas: Callable[[], list[int]]) -> list[str]:
    """Finishes what an interrupted restore or undo of ``target`` left after its point of no return: keeping
    an in-place restore's copy that committed (``schemas``: the target's schemas now, see ``make_pending``),
    and the media exchange a swap recorded. Call it holding the target's lock, before anything drops pending
    copies or media leftovers. Returns what it did, to tell the user."""
    done = []
    for database in databases.ours(admin, prefix(target), sizes=False):
        before = database.label.get("schemasBefore")
        if database.label.get("seeddump") != PENDING or database.label.get("database") != target:
            continue
        if isinstance(before, list) and before != schemas():
            for name in keep_in_place(admin, target, database.name):
                databases.drop(admin, name)
            done.append(f"Kept {database.name} for an undo: the in-place restore that made it had committed")
    for start in (prefix(target), finishing.retired_prefix(target)):
        for database in databases.ours(admin, start, sizes=False):
            exchange = media.Exchange.from_label(database.label.get("mediaExchange"))
            if database.label.get("database") != target or exchange is None:
                continue
            for folder in settle_media(admin, database.name, exchange):
                media.drop(folder)
            if database.label.get("seeddump") != KIND:  # a replaced database's outgoing folder goes with it
                media.drop(exchange.outgoing)
            done.append(f"Finished swapping the media of an interrupted restore into {exchange.root}")
    return done


def keep_in_place(admin: psycopg.Connection, target: str, pending: str) -> tuple[str, ...]:
    """After an in-place restore committed: its pending copy becomes the undo copy, with the label it was
    given beforehand, and the earlier copies are set aside under replaced names, in one transaction. Returns
    the databases set aside, to drop."""
    label = _label_of(admin, pending)
    aside = [(copy.name, _retired_name(target)) for copy in list_copies(admin, target, sizes=False)]
    with admin.transaction():
        for old, new in aside:
            if old != pending and databases.is_ours(admin, old):
                databases.rename(admin, old, new)
        kept = {key: value for key, value in label.items() if key != "schemasBefore"}
        databases.label(admin, pending, {**kept, "seeddump": KIND})
    return tuple(new for old, new in aside if old != pending)


def _label_of(admin: psycopg.Connection, name: str) -> dict[str, object]:
    return next((dict(d.label) for d in databases.ours(admin, name, sizes=False) if d.name == name), {})


def make_pending(admin: psycopg.Connection, target: str, *, label: Mapping[str, object], schemas: list[int]) -> str:
    """For a restore in place: copies ``target`` (closed) before it is changed, labelled pending with the label
    it gets as the undo copy (``replaced_fate``'s, with the media exchange to do) and the target's schemas as
    they are now. An in-place restore drops and makes again every schema, so once the target's schemas are
    others, its transaction committed: the next run that finds the copy still pending finishes keeping it
    (``settle``); else it is dropped (``drop_pending``). Ends the target's sessions first: a database in use
    cannot be copied. Needs CREATEDB."""
    name = prefix(target) + secrets.token_hex(4)
    identity = databases.identity_of(admin, target)
    databases.end_sessions(admin, target)
    databases.clone(admin, target, name, closed=True)
    owner = {"owner": identity.owner} if identity is not None else {}
    databases.label(admin, name, {**label, **owner, "seeddump": PENDING, "schemasBefore": schemas})
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
