from __future__ import annotations

import contextlib
from typing import Any

from django.core.checks import Tags
from django.core.management.base import CommandError, CommandParser
from django.db import DEFAULT_DB_ALIAS

from seeddump import background, databases, driver, finishing, footprint, postgres, sandbox, serverdisk, snapshots, undo
from seeddump.conf import conf
from seeddump.exceptions import SeeddumpError
from seeddump.management.progress import SeeddumpCommand


class Command(SeeddumpCommand):
    version_programs = True  # --version names the pg_dump and pg_restore it would choose from
    # Fast commands that check what they need themselves; `check` and `migrate` report stale dumps.
    requires_system_checks = [Tags.compatibility]  # seeddump.E001: an older Django, said in one line
    help = (
        "Lists the cached snapshots, ready copies, empty databases and databases kept for an undo of restoredump "
        "on the server, or drops them."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--database", default=DEFAULT_DB_ALIAS, help="Whose server. Default: 'default'.")
        group = parser.add_mutually_exclusive_group()
        group.add_argument("--prune", action="store_true", help="Drop stale snapshots and those over the limit.")
        group.add_argument(
            "--drop-all",
            action="store_true",
            help="Drop every snapshot and ready copy of this dumps folder, and the database kept to undo the last "
            "restore of --database.",
        )
        parser.add_argument(
            "--others",
            action="store_true",
            help="Also list, one per line, the seeddump databases of other projects and teams on the server (by "
            "default one line sums them up).",
        )
        parser.add_argument(
            "--all-folders",
            action="store_true",
            help="Every dumps folder's copies on the server: list them, or with --prune also drop everything of "
            "folders that no longer exist on this machine.",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        if failure := background.last_failure():
            self.stderr.write(
                self.style.WARNING(
                    f"Last time, {failure}: the cache below may lack what it was making. Log: {background.log_path()}"
                )
            )
        all_folders = options["all_folders"]
        if all_folders and options["drop_all"]:
            raise CommandError("--all-folders goes with --prune or a listing; --drop-all only drops this folder's.")
        try:
            settings_dict = postgres.settings_for(options["database"])
            target = str(settings_dict.get("NAME") or "")
            with postgres.user_errors(settings_dict), postgres.connect_maintenance(settings_dict) as admin:
                if options["prune"] or options["drop_all"]:
                    if all_folders:
                        dropped = snapshots.prune_all_folders(admin)
                    else:
                        with snapshots.snapshot_lock(admin):
                            dropped = snapshots.drop_all(admin) if options["drop_all"] else snapshots.prune(admin)
                    dropped += sandbox.drop_stale(admin, settings_dict)  # killed restores' throwaway roles
                    left: list[str] = []
                    if options["drop_all"]:
                        dropped += undo.drop(admin, target)
                        others = footprint.of(admin, target)
                        dropped += footprint.drop_other_roles(admin, others)
                        left = [copy.owner for copy in others.other_roles if copy.name not in dropped]
                    for name in dropped:
                        self.stdout.write(f"Dropped {name}")
                    if not dropped:
                        self.stdout.write("No snapshot to drop.")
                    if left:
                        self.stderr.write(
                            self.style.WARNING(
                                f"{len(left)} copies of this project made by other roles remain "
                                f"({', '.join(sorted(set(left)))}): only those roles (or a superuser) may drop "
                                "them; run snapshots --drop-all as one of them."
                            )
                        )
                    return
                found = snapshots.list_snapshots(admin, all_folders=all_folders)
                ready = snapshots.list_snapshots(admin, kind=snapshots.READY_PREFIX, all_folders=all_folders)
                empty = snapshots.list_snapshots(admin, kind=snapshots.EMPTY_PREFIX, all_folders=all_folders)
                migrated = snapshots.list_snapshots(admin, kind=snapshots.TEST_PREFIX, all_folders=all_folders)
                kept = undo.list_copies(admin, target) if target else []
                seen = footprint.of(admin, target)
                database_size = databases.size_of(admin, target)
                disk = _disk_line(admin)
        except SeeddumpError as exc:
            raise CommandError(str(exc)) from None
        if note := footprint.other_roles_note(seen):
            self.stderr.write(self.style.WARNING(note))
        for undo_copy in kept:
            self.stdout.write(
                f"{undo_copy.name}  {undo_copy.size_bytes / 1e6:8.1f} MB  (for an undo: {undo_copy.describe()}"
                + (", with its media folder" if undo_copy.media == "kept" else "")
                + ")"
            )
        for state in migrated:  # seeddump.testcache: the test runners' migrated databases
            self.stdout.write(
                f"{state.name}  {state.size_bytes / 1e6:8.1f} MB  (a migrated test database: manage.py testcache)"
                + (f"  [{state.folder or 'folder not recorded'}]" if all_folders else "")
            )
        if not found and not ready and not empty:
            self.stdout.write("No cached snapshots." if not kept else f"No cached snapshots; {_mb(kept)} for undo.")
            self._others(seen, options["others"])
            self.stdout.write(disk)
            return
        for snapshot in found + ready:
            created = f"{snapshot.created:%Y-%m-%d %H:%M} UTC" if snapshot.created else "unknown"
            self.stdout.write(
                f"{snapshot.name}  {snapshot.size_bytes / 1e6:8.1f} MB  {created}  "
                f"{snapshot.dump_file or '(no dump recorded)'}"
                + (f"  (ready copy for '{snapshot.database}')" if snapshot.database else "")
                + (f"  [{snapshot.folder or 'folder not recorded'}]" if all_folders else "")
            )
        for database in empty:
            self.stdout.write(
                f"{database.name}  {database.size_bytes / 1e6:8.1f} MB  "
                f"(empty, for the next pg_restore into '{database.database}')"
                + (f"  [{database.folder or 'folder not recorded'}]" if all_folders else "")
            )
        total = sum(s.size_bytes for s in found + ready + empty) / 1e6
        bound = conf.CACHE_MAX_SIZE
        self.stdout.write(
            f"{len(found)} snapshot(s), {len(ready)} ready cop{'y' if len(ready) == 1 else 'ies'}, {total:.1f} MB"
            + (f" (SEEDDUMP_CACHE_MAX_SIZE: {bound / 1e6:.1f} MB)" if bound is not None else "")
            + (f"; {len(kept)} kept for undo, {_mb(kept)}" if kept else "")
            + "."
        )
        if database_size and seen.mine:
            self.stdout.write(
                f"This project's copies on the server: {footprint.megabytes(seen.mine)}, "
                f"{seen.mine_bytes / database_size:.1f}x the database '{target}' ({database_size / 1e6:.1f} MB)."
            )
        self._others(seen, options["others"])
        self.stdout.write(disk)

    def _others(self, seen: footprint.Footprint, listed: bool) -> None:
        """Other projects' and teams' seeddump databases: theirs to keep or drop; one line unless --others."""
        elsewhere = _copies_of_others(seen)
        if not elsewhere:
            return
        if listed:
            for database in elsewhere:
                self.stdout.write(
                    f"{database.name}  {database.size_bytes / 1e6:8.1f} MB  owner '{database.owner}'"
                    + (
                        f"  ({database.label.get('seeddump')} of '{database.label.get('database')}')"
                        if database.label.get("database")
                        else ""
                    )
                )
            return
        self.stdout.write(
            f"Also on this server: {len(elsewhere)} seeddump database(s) of other projects or teams "
            f"({footprint.megabytes(elsewhere)}), theirs to keep or drop; --others lists them."
        )


def _kind_prefix(prefix_of_a_target: str) -> str:
    """``seeddump_tmp_`` of ``seeddump_tmp_<tag>_``: the start of the names of that kind, whatever the target."""
    return prefix_of_a_target.removesuffix(f"{finishing.tag('')}_")


# The names seeddump gives the databases it makes besides a target: cache copies, undo copies, a restore's
# scratch and replaced databases, the trial clone that tells whether a disk clones.
_COPY_PREFIXES = (
    snapshots.PREFIX,
    snapshots.READY_PREFIX,
    snapshots.BUILD_PREFIX,
    snapshots.EMPTY_PREFIX,
    undo.PREFIX,
    _kind_prefix(finishing.scratch_prefix("")),
    _kind_prefix(finishing.retired_prefix("")),
    serverdisk.TRIAL_PREFIX,
)


def _copies_of_others(seen: footprint.Footprint) -> list[databases.Database]:
    """Of the databases named seeddump_* that are not this project's copies, those seeddump made for another
    project or team: named as it names its copies, or labelled by it (a kept smoke-test database). A database
    merely called seeddump_* is nobody's copy: this project's own (seeddump_demo) or another's. Neither are this
    target's scratch and replaced databases (a restore running, or left by one killed)."""
    target = seen.target
    own = (finishing.scratch_prefix(target), finishing.retired_prefix(target)) if target else ()
    return [
        database
        for database in seen.elsewhere
        if database.name != target
        and not database.name.startswith(own)
        and (database.name.startswith(_COPY_PREFIXES) or "seeddump" in database.label)
    ]


def _disk_line(admin: driver.Connection) -> str:
    """How this server copies databases, and its free disk when its data directory is on this machine."""
    cloning = serverdisk.cloning(admin)
    line = f"Copies on this server: {cloning.why}"
    if cloning.enabled:
        line += " (a clone shares its blocks until either copy changes: sizes above count them in full)"
    folder = serverdisk.data_directory(admin)
    if folder is not None:
        with contextlib.suppress(OSError):
            line += f". Free on its disk: {serverdisk.megabytes(serverdisk.free_bytes(folder))}"
    return line + "."


def _mb(copies: list[undo.UndoCopy]) -> str:
    return f"{sum(copy.size_bytes for copy in copies) / 1e6:.1f} MB"
