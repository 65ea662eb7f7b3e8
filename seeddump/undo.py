"""Undo: the database (and media folder) the last restore replaced, kept so that it can be put back.

A restore of an alias's own database keeps the database it replaced as ``seeddump_undo_<tag>_<hex>``
(``<tag>``: a hash of the target's name, as for scratch and replaced databases), closed to connections so
that it stays exactly as it was, owned by the role seeddump connects as, and labelled with the target,
when it was replaced and by which dump. When the restore also replaced MEDIA_ROOT, the replaced folder is
kept beside it as ``.<media>.seeddump-undo.<tag>`` (``seeddump.media``).

A restore in place changes the target rather than replacing it, so it first copies the target under the
same prefix, labelled pending, and keeps that copy only once its transaction commits. Whether it committed
is read on the server (``committed_in_place``), by the interrupted run itself and by the next one; a copy
that never got its label, or whose restore did not commit, is dropped by the next run (``drop_abandoned``).

The label also names what the restore put in the target's place (``restoredOid``, and in place a sample of
the objects it made): a copy is put back only while the target is still that (``find``), so that a restore
by another role since (whose copy that role keeps) is never skipped over.

One generation per target: the next restore of it retires the kept copy (renamed like a replaced database,
and dropped with it), and so does an undo, so a second undo finds nothing. SEEDDUMP_UNDO = False keeps
nothing. As with every database seeddump makes, only one the connecting role owns is ever used or dropped:
a database another role names ``seeddump_undo_…`` is foreign and left alone.

Putting the copy back is ``restore.undo_last``: the same swap as a restore, under the same lock.
"""

from __future__ import annotations

import contextlib
import secrets
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from seeddump import databases, driver, dumpfiles, finishing, media
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
    restored_oid: int | None = None  # the oid of the database the restore left in the target's place
    objects_after: tuple[int, ...] = ()  # in place: objects the restore made (``databases.own_objects``)

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
    restored_oid = label.get("restoredOid")
    after = label.get("objectsAfter")
    return UndoCopy(
        name=database.name,
        database=label["database"],
        replaced_at=replaced_at,
        replaced_by=str(label.get("replacedBy") or ""),
        environment=str(label.get("environment") or ""),
        media=media_state if media_state in ("kept", "absent") else None,
        size_bytes=database.size_bytes,
        owner=label["owner"] if isinstance(label.get("owner"), str) else None,
        restored_oid=restored_oid if isinstance(restored_oid, int) else None,
        objects_after=tuple(oid for oid in after if isinstance(oid, int)) if isinstance(after, list) else (),
    )


def list_copies(admin: driver.Connection, target: str | None = None, *, sizes: bool = True) -> list[UndoCopy]:
    """The undo copies of ``target`` (or of every database) this role keeps on the server, newest first."""
    found = []
    for database in databases.ours(admin, PREFIX if target is None else prefix(target), sizes=sizes):
        copy = _from_database(database)
        if copy is not None and (target is None or copy.database == target):
            found.append(copy)
    oldest = datetime.min.replace(tzinfo=timezone.utc)
    return sorted(found, key=lambda copy: copy.replaced_at or oldest, reverse=True)


def is_current(copy: UndoCopy, target_oid: int | None, objects: Callable[[], list[int] | None]) -> bool:
    """Whether the target still holds what the restore that kept ``copy`` put there (``objects``: the target's
    own objects now, read only when needed): the same database (its oid), and after a restore in place, some
    of the objects that restore made. Else another restore replaced it since, and the copy would skip it."""
    if copy.restored_oid is not None and copy.restored_oid != target_oid:
        return False
    if copy.objects_after:
        now = objects()
        return now is None or bool(set(now) & set(copy.objects_after))
    return True


def find(
    admin: driver.Connection, target: str, objects: Callable[[], list[int] | None] = lambda: None
) -> UndoCopy | None:
    """The copy of ``target`` to put back for an undo: this role's copy of what the last restore replaced, or
    None (see ``stale_copies`` for why)."""
    target_oid = databases.oid_of(admin, target)
    copies = list_copies(admin, target, sizes=False)
    return next((copy for copy in copies if is_current(copy, target_oid, objects)), None)


def last_restored_by(admin: driver.Connection, target: str) -> str | None:
    """The role whose copy claims to undo the change the target holds now, when it is not this one's (labels
    are readable by all and forgeable: only for telling the user whom to ask, never acted on)."""
    target_oid = databases.oid_of(admin, target)
    for database in databases.with_prefix(admin, prefix(target), sizes=False):
        copy = _from_database(database)
        if not database.ours and copy is not None and copy.database == target and copy.restored_oid == target_oid:
            return database.owner
    return None


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
    admin: driver.Connection,
    target: str,
    *,
    keep: bool,
    dump_path: Path,
    environment: str,
    media_exchange: media.Exchange | None,
    media_swapped: bool,
    restored_oid: int | None = None,
) -> databases.Replaced:
    """What the swap of a restore makes of the database it replaces, in its own transaction: with ``keep``
    (the alias's own database), the target's undo copy, closed and labelled, the earlier copy set aside under
    a replaced name; else a replaced database for ``finishing`` to drop. ``media_exchange`` is recorded in the
    label until ``settle_media`` has done it; ``media_swapped`` says the restore swaps MEDIA_ROOT at all;
    ``restored_oid`` is the oid of the database put in the target's place (see ``find``)."""
    aside = tuple((copy.name, _retired_name(target)) for copy in list_copies(admin, target, sizes=False))
    exchange: dict[str, object] = {} if media_exchange is None else {"mediaExchange": media_exchange.as_label()}
    if not keep or not conf.UNDO:
        label: dict[str, object] = {"seeddump": "retired", "database": target, **exchange}
        return databases.Replaced(_retired_name(target), label, aside=aside if keep else ())
    state = None if not media_swapped else ("kept" if media_exchange and media_exchange.root_inode else "absent")
    label = {**_label(target, dump_path, environment, state), **exchange}
    if restored_oid is not None:
        label["restoredOid"] = restored_oid
    return databases.Replaced(prefix(target) + secrets.token_hex(4), label, closed=True, aside=aside)


def _retired_name(target: str) -> str:
    return finishing.retired_prefix(target) + secrets.token_hex(4)


def settle_media(admin: driver.Connection, name: str, exchange: media.Exchange) -> list[Path]:
    """Completes the media exchange the swap recorded in ``name``'s label, then takes it off the label.
    Returns the folders it set aside, to drop."""
    aside = exchange.complete()
    found = [database for database in databases.ours(admin, name, sizes=False) if database.name == name]
    if found and "mediaExchange" in found[0].label:
        databases.label(admin, name, {k: v for k, v in found[0].label.items() if k != "mediaExchange"})
    return aside


def settle(admin: driver.Connection, target: str, objects: Callable[[], list[int] | None]) -> list[str]:
    """Finishes what an interrupted restore or undo of ``target`` left after its point of no return: keeping
    an in-place restore's copy that committed (``objects``: the target's own objects now, see
    ``committed_in_place``), and the media exchange a swap recorded. Call it holding the target's lock, before
    anything drops pending copies or media leftovers. Returns what it did, to tell the user."""
    done = []
    for database in databases.ours(admin, prefix(target), sizes=False):
        if database.label.get("seeddump") != PENDING or database.label.get("database") != target:
            continue
        now = objects()
        if committed_in_place(database.label, now):
            for name in keep_in_place(admin, target, database.name, after=now):
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


def keep_in_place(
    admin: driver.Connection, target: str, pending: str, *, after: list[int] | None = None
) -> tuple[str, ...]:
    """After an in-place restore committed: its pending copy becomes the undo copy, with the label it was
    given beforehand and ``after`` (the target's own objects now, which the restore made), and the earlier
    copies are set aside under replaced names, in one transaction. Returns the databases set aside, to drop."""
    label = _label_of(admin, pending)
    aside = [(copy.name, _retired_name(target)) for copy in list_copies(admin, target, sizes=False)]
    with admin.transaction():
        for old, new in aside:
            if old != pending and databases.is_ours(admin, old):
                databases.rename(admin, old, new)
        kept = {key: value for key, value in label.items() if key not in ("schemasBefore", "objectsBefore")}
        if after:
            kept["objectsAfter"] = after
        databases.label(admin, pending, {**kept, "seeddump": KIND})
    return tuple(new for old, new in aside if old != pending)


def _label_of(admin: driver.Connection, name: str) -> dict[str, object]:
    return next((dict(d.label) for d in databases.ours(admin, name, sizes=False) if d.name == name), {})


def make_pending(
    admin: driver.Connection, target: str, *, label: Mapping[str, object], objects: list[int] | None
) -> str:
    """For a restore in place: copies ``target`` (closed) before it is changed, labelled pending with the label
    it gets as the undo copy (``replaced_fate``'s, with the media exchange to do) and ``objects``, the target's
    own objects as they are now (``databases.own_objects``, read after its sessions ended). The next run that
    finds the copy still pending keeps it if the restore committed (``settle``), else drops it
    (``drop_abandoned``), and so does one that finds it without a label (killed between the copy and the
    label). Ends the target's sessions first: a database in use cannot be copied. Needs CREATEDB."""
    name = prefix(target) + secrets.token_hex(4)
    identity = databases.identity_of(admin, target)
    databases.end_sessions(admin, target)
    databases.clone(admin, target, name, closed=True)
    owner = {"owner": identity.owner} if identity is not None else {}
    restored = {"restoredOid": oid} if (oid := databases.oid_of(admin, target)) is not None else {}
    before = {"objectsBefore": objects} if objects is not None else {}
    try:
        databases.label(admin, name, {**label, **owner, **restored, "seeddump": PENDING, **before})
    except BaseException:  # a copy without its label is nobody's: it goes now (else the next run drops it)
        with contextlib.suppress(driver.Error):
            databases.drop(admin, name)
        raise
    return name


def committed_in_place(label: Mapping[str, object], now: list[int] | None) -> bool:
    """Whether the in-place restore that labelled its copy ``label`` committed, read from the target's own
    objects ``now``: an in-place restore drops every one of those listed before it (``objectsBefore``; an
    earlier version listed its schemas, ``schemasBefore``), and no new object gets an old one's oid. A target
    that had none committed once it has some. None (``now`` unreadable) counts as not committed."""
    if now is None:
        return False
    before = label.get("objectsBefore")
    if isinstance(before, list):
        return not set(now) & set(before) if before else bool(now)
    schemas = label.get("schemasBefore")
    return isinstance(schemas, list) and bool(schemas) and not set(now) & set(schemas)


def drop_pending(admin: driver.Connection, target: str, *, but: str | None = None) -> list[str]:
    """Drops the pending copies of ``target`` (ours) that killed in-place restores left, all but ``but``.
    Call it holding the target's lock: a running in-place restore's copy looks the same."""
    dropped = []
    for database in databases.ours(admin, prefix(target), sizes=False):
        if database.label.get("seeddump") == PENDING and database.name != but and databases.drop(admin, database.name):
            dropped.append(database.name)
    return dropped


def drop_abandoned(admin: driver.Connection, target: str) -> list[str]:
    """Drops what killed in-place restores of ``target`` left under its undo names: copies still pending (call
    ``settle`` first: it keeps those whose restore committed) and copies without a label (killed between the
    copy and its label: a full copy of the target that nothing else would ever drop or list). Ours only; call
    it holding the target's lock."""
    dropped = []
    for database in databases.ours(admin, prefix(target), sizes=False):
        abandoned = database.label.get("seeddump") == PENDING and database.label.get("database") == target
        if (abandoned or "seeddump" not in database.label) and databases.drop(admin, database.name):
            dropped.append(database.name)
    return dropped


def drop(admin: driver.Connection, target: str) -> list[str]:
    """Drops the undo copy of ``target`` now (``snapshots --drop-all``); its media folder is left to the next
    restore, which retires it."""
    return [copy.name for copy in list_copies(admin, target, sizes=False) if databases.drop(admin, copy.name)]
