"""What seeddump keeps on a server, told apart by whose it is: this project's (this dumps folder's cache and the
undo copies of its database), the same copies made by another role (a restore as the superuser beside one as the
app role), and everything else under a seeddump name (other projects and teams on a shared server).

``snapshots`` lists the first and summarises the others; a restore says when another role keeps copies of the
same target, which neither role can use or drop for the other.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from seeddump import databases, driver, snapshots, undo
from seeddump.conf import conf

_CACHE_KINDS = (snapshots.PREFIX, snapshots.READY_PREFIX, snapshots.BUILD_PREFIX, snapshots.EMPTY_PREFIX)


@dataclass(frozen=True)
class Footprint:
    target: str
    mine: list[databases.Database] = field(default_factory=list)  # this project's, owned by the connecting role
    other_roles: list[databases.Database] = field(default_factory=list)  # this project's, another role's
    elsewhere: list[databases.Database] = field(default_factory=list)  # other projects' and teams'

    @property
    def mine_bytes(self) -> int:
        return sum(database.size_bytes for database in self.mine)


def of(admin: driver.Connection, target: str, directory: Path | None = None, *, elsewhere: bool = True) -> Footprint:
    """Every database under a seeddump name on the server, sorted by whose it is (without ``elsewhere``, only
    this project's: a restore's note need not size every other team's copies)."""
    own_prefixes = tuple(snapshots.folder_prefix(directory, kind) for kind in _CACHE_KINDS)
    own_prefixes += (undo.prefix(target),) if target else ()
    footprint = Footprint(target)
    for prefix in own_prefixes:
        for database in databases.with_prefix(admin, prefix):
            (footprint.mine if database.ours else footprint.other_roles).append(database)
    if elsewhere:
        footprint.elsewhere.extend(
            database
            for database in databases.with_prefix(admin, "seeddump_")
            if not database.name.startswith(own_prefixes)
        )
    return footprint


def megabytes(copies: Iterable[databases.Database]) -> str:
    return f"{sum(copy.size_bytes for copy in copies) / 1e6:.1f} MB"


def by_owner(copies: Iterable[databases.Database]) -> str:
    """``'postgres': 3, 'ci': 1``: how many of ``copies`` each role owns."""
    counts = Counter(copy.owner for copy in copies)
    return ", ".join(f"'{owner}': {count}" for owner, count in sorted(counts.items()))


def other_roles_note(footprint: Footprint) -> str | None:
    """One line when another role keeps copies of this project on the server: neither role can use (or, unless
    it is a member of the other, drop) the other's, so they cost disk twice over."""
    if not footprint.other_roles:
        return None
    return (
        f"Another role also keeps this project's copies on this server ({by_owner(footprint.other_roles)}; "
        f"{megabytes(footprint.other_roles)}): made by restores as that role, they are never used by this one. "
        "Restore as one role, or drop them with snapshots --drop-all as a role that may."
    )


def drop_other_roles(admin: driver.Connection, footprint: Footprint, directory: Path | None = None) -> list[str]:
    """Drops the other roles' copies of this project that the connecting role may drop (a member of their
    owner, a superuser): only those whose label says they are this folder's cache or this target's undo copy,
    each only while that owner still owns it (``snapshots --drop-all``, asked for by the user)."""
    folder = str((directory or conf.DIR).resolve())
    return [
        copy.name
        for copy in footprint.other_roles
        if copy.droppable
        and (copy.label.get("folder") == folder or copy.label.get("database") == footprint.target)
        and databases.drop_owned_by(admin, copy.name, copy.owner)
    ]


def cost_note(database_bytes: int, undo_bytes: int, *, copies: int) -> str | None:
    """After a cold restore: what keeping restores fast will cost on the server, against the database's size."""
    if not database_bytes:
        return None
    what = "a snapshot and a ready copy" if copies == 2 else "a snapshot"
    line = (
        f"For fast restores the server will keep {what} of this dump (about {copies * database_bytes / 1e6:.1f} MB, "
        f"{copies}x the database's {database_bytes / 1e6:.1f} MB)"
    )
    if undo_bytes:
        line += f" and the undo copy ({undo_bytes / 1e6:.1f} MB)"
    bound = conf.CACHE_MAX_SIZE
    limit = f"SEEDDUMP_CACHE_MAX_SIZE, {bound / 1e9:.1f} GB" if bound is not None else "no SEEDDUMP_CACHE_MAX_SIZE"
    return f"{line}; the cache is bounded by {limit} (snapshots lists it)."
