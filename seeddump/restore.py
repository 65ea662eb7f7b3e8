"""restoredump: plan (find and verify the dump), restore it beside the target database, then swap it in.

The target database is never written to. The dump goes into a scratch database on the same server
(from the snapshot cache when it has this dump, see ``snapshots``; else with pg_restore, see ``load``);
only when every table has the row count the metadata promises are the two renamed in one transaction,
in which the restored database also takes the target's identity (``databases.swap``). Until that
commit, a failure (or a kill) leaves the target as it was; a scratch database left behind by a killed
run is dropped by the next run. What is left after the swap is ``finishing``'s.

``in_place`` restores into the existing database in one transaction instead, for roles that may not
create databases.
"""

from __future__ import annotations

import contextlib
import contextvars
import functools
import secrets
import signal
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from seeddump import (
    databases,
    driver,
    dumpfiles,
    finishing,
    footprint,
    load,
    media,
    postgres,
    preswap,
    records,
    sandbox,
    serverdisk,
    shared,
    signals,
    signing,
    snapshots,
    staleness,
    undo,
)
from seeddump.conf import conf
from seeddump.exceptions import CannotConnect, ProgramFailed, SeeddumpError, UnfinishedAfterSwap

Progress = Callable[[str], None]


def _quiet(message: str) -> None:
    pass


@dataclass(frozen=True)
class RestorePlan:
    environment: str
    dump_path: Path
    metadata: dumpfiles.Metadata
    using: str
    status: staleness.DumpStatus
    notes: tuple[str, ...] = ()  # worth telling the user before the restore (a newer dump lies beside)
    media_archive: Path | None = None  # the dump's media archive, checked; None: the files are left alone
    # The dump's code may run as the connecting role (SET ROLE to the owner) where no throwaway member of the
    # owner can be had (``seeddump.sandbox``): signed with the team's key, or trusted by the user.
    trusted: bool = False
    # The dump, opened when it was verified: what pg_restore reads (see ``dumpfiles.OpenedDump``).
    opened: dumpfiles.OpenedDump | None = field(default=None, compare=False, repr=False)

    def archive(self) -> dumpfiles.OpenedDump:
        """The verified dump to hand to pg_restore (verified now when the plan was made without it)."""
        return self.opened or dumpfiles.open_verified(self.dump_path, self.metadata)

    @property
    def server(self) -> postgres.Server:
        return postgres.server_of(postgres.settings_for(self.using))


@dataclass(frozen=True)
class RestoreResult:
    plan: RestorePlan
    database: str
    seconds: float
    tables: int
    rows: int
    source: str = "pg_restore"  # or "snapshot", "ready copy", "in place"
    media_root: Path | None = None  # the media folder the dump's files were swapped into
    migrated: tuple[str, ...] | None = None  # migrations applied before the swap; None: not tried there
    hooks: tuple[str, ...] = ()  # a line per SEEDDUMP_RESTORE_HOOKS hook that ran (``preswap.Prepared``)
    followup: finishing.Followup | None = None  # work left for later (see ``restore``'s ``defer``)
    undo_copy: str | None = None  # the replaced database, kept for ``undo_last``
    undo_note: str | None = None  # why none was kept, when the user may wonder
    cache_note: str | None = None  # why the dump was not cached, when the user should know (no room)
    roles_note: str | None = None  # another role keeps copies of the same target (``footprint``)
    cost_note: str | None = None  # after a cold restore: what the cache and the undo copy will cost on the server
    cloned: bool = False  # the server's database copies are copy-on-write clones (``serverdisk.cloning``)
    background_pid: int | None = None
    # Settings of the replaced database this role could not copy: the statements that would.
    skipped_settings: tuple[str, ...] = ()

    @property
    def from_snapshot(self) -> bool:
        return self.source != "pg_restore"


def check_not_protected(environment: str) -> None:
    if environment.strip().lower() in conf.PROTECTED_ENVIRONMENTS:
        raise SeeddumpError(
            f"Refusing to restore over the protected environment '{environment}' "
            "(SEEDDUMP_PROTECTED_ENVIRONMENTS). Restore into a development or staging environment instead."
        )


def check_target_not_protected(settings_dict: Mapping[str, Any]) -> None:
    """Whatever the dump's label says: a database whose name or host is protected is never restored over."""
    name, host = str(settings_dict.get("NAME") or ""), str(settings_dict.get("HOST") or "")
    for value, what in ((name, "database"), (host, "host")):
        if value and value.strip().lower() in conf.PROTECTED_DATABASES:
            raise SeeddumpError(
                f"Refusing to restore over the {what} '{value}': it is in SEEDDUMP_PROTECTED_DATABASES. "
                "Point DATABASES (or --database) at a development or staging database."
            )


def plan_restore(
    environment: str,
    *,
    dump: str | Path | None = None,
    using: str = "default",
    force: bool = False,
    shared_storage: str = "auto",
    with_media: bool = True,
    trust: bool = False,
    progress: Progress = _quiet,
) -> RestorePlan:
    """Finds the dump, reads its metadata and verifies its checksum, all before touching any database.

    Without ``dump``, the environment's latest dump is restored, or, when it holds migrations the code does
    not have (made on another branch), the newest one that holds none (``staleness.choose``). A dump
    holding migrations the code does not have is refused unless ``force``: the code could not run against
    it, and ``migrate`` cannot undo migrations it does not know.

    With a shared storage configured (SEEDDUMP_STORAGE), ``shared_storage`` is "auto" (use a newer shared
    dump when the storage answers), "pull" (the storage must answer) or "offline" (never ask it).
    """
    dumpfiles.validate_environment(environment)
    check_not_protected(environment)
    with postgres.user_errors(postgres.settings_for(using)):
        if dump is None and shared.configured() and shared_storage != "offline":
            shared.sync_latest(environment, conf.DIR, required=shared_storage == "pull", progress=progress)
        plan = _plan(environment, dump, using, force)
    if trust or conf.TRUST_DUMPS or conf.SIGNING_KEYS:  # a signature was checked: it is the team's
        plan = replace(plan, trusted=True)
    info = plan.metadata.media
    if info is None:
        return plan
    if not with_media:
        return replace(plan, notes=(*plan.notes, f"The dump's media ({info.describe()}) are not restored: --no-media."))
    archive = dumpfiles.media_path(plan.dump_path)
    progress(f"Checking the media archive {archive.name}")
    media.check(archive, info)
    return replace(plan, media_archive=archive)


def _plan(environment: str, dump: str | Path | None, using: str, force: bool) -> RestorePlan:
    directory = conf.DIR
    if directory.is_dir():
        dumpfiles.check_directory(directory)
        dumpfiles.remove_abandoned_partials(directory)  # a killed download's, or a killed generatedump's
    if dump is not None:
        dump_path = dumpfiles.check_dump_path(Path(dump), directory)
        metadata = dumpfiles.read_metadata(dump_path)
        status = staleness.status_of(dump_path, metadata)
        notes: tuple[str, ...] = ()
    else:
        choice = staleness.choose(directory, environment)
        if not choice.fits and not force:
            raise SeeddumpError(choice.refusal())
        dump_path, metadata, status = choice.dump_path, choice.status.metadata, choice.status
        note = choice.note() or dumpfiles.newer_note(directory, dump_path)
        notes = (note,) if note else ()
    signing.check(metadata, dump_path.name)
    check_not_protected(metadata.environment)
    if metadata.environment != environment:
        raise SeeddumpError(
            f"{dump_path.name} is a '{metadata.environment}' dump, not '{environment}'. "
            f"Run: python manage.py restoredump {metadata.environment} --dump {dump_path}"
        )
    if status.unknown and not force:
        raise SeeddumpError(
            f"{dump_path.name} holds {len(status.unknown)} migration(s) this code does not have "
            f"({', '.join(f'{app}.{name}' for app, name in status.unknown[:5])}): it was made on another branch "
            "or a newer checkout. Check out matching code or regenerate the dump; --force restores it anyway."
        )
    opened = dumpfiles.open_verified(dump_path, metadata)
    return RestorePlan(
        environment=environment,
        dump_path=dump_path,
        metadata=metadata,
        using=using,
        status=status,
        notes=notes,
        opened=opened,
    )


@contextlib.contextmanager
def interrupt_on_sigterm() -> Iterator[None]:
    """Lets SIGTERM unwind like Ctrl-C, so the scratch database is dropped on the way out."""

    def raise_interrupt(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    try:
        previous = signal.signal(signal.SIGTERM, raise_interrupt)
    except ValueError:  # not the main thread: leave signals alone
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def target_lock(admin: driver.Connection, database: str, progress: Progress) -> contextlib.AbstractContextManager:
    """One restore per target database at a time, server-wide; released if the process dies."""
    return postgres.advisory_lock(
        admin,
        finishing.target_lock_key(database),
        waiting=lambda holder: progress(f"Waiting for another restore of '{database}' to finish ({holder})"),
        busy=lambda holder: (
            f"Another restoredump of '{database}' ({holder}) is still running after {conf.LOCK_TIMEOUT}s. "
            "Try again when it has finished."
        ),
    )


def configured_owner(settings_dict: Mapping[str, Any]) -> str | None:
    """SEEDDUMP_OWNER, else the role Django assumes for its queries (``OPTIONS["assume_role"]``)."""
    return conf.OWNER or (settings_dict.get("OPTIONS") or {}).get("assume_role") or None


@dataclass(frozen=True)
class RestoreOptions:
    """How to restore: decided once by the caller (the command, the pytest plugin, the smoketest) and passed
    down as one value. See ``restore``."""

    jobs: int | None = None  # parallel pg_restore jobs; None: SEEDDUMP_RESTORE_JOBS
    use_snapshots: bool | None = None  # None: SEEDDUMP_SNAPSHOTS
    database: str | None = None  # another database on the alias's server, such as its test database
    defer: bool = False
    in_place: bool = False
    media_root: Path | None = None
    migrate: bool = False

    @property
    def snapshots(self) -> bool:
        return conf.SNAPSHOTS if self.use_snapshots is None else self.use_snapshots

    @property
    def record(self) -> bool:
        """The alias's own database is restored: its admin records, undo copy and hooks are kept."""
        return self.database is None


def restore(plan: RestorePlan, options: RestoreOptions | None = None, *, progress: Progress = _quiet) -> RestoreResult:
    """Restores a planned dump in place of the alias's database; see the module docstring and ``RestoreOptions``.

    With ``use_snapshots`` (default: the SEEDDUMP_SNAPSHOTS setting) a ready copy or a cached snapshot of
    the same dump is used instead of running pg_restore, and a cold restore leaves a snapshot behind.
    ``database`` restores into another database on the alias's server; the admin records of the alias's
    own database are then left alone.

    With ``defer``, the function returns as soon as the restored database is in place; what is left
    (dropping the replaced database, caching the snapshot, preparing a ready copy for the next restore)
    is ``RestoreResult.followup``, for ``finishing.finish`` or a background process
    (``seeddump.background``). Otherwise that work is done before returning, without a ready copy.

    ``in_place`` restores into the existing database in one transaction instead (for roles that may not
    create databases): slower, never cached, and just as safe: a failure rolls everything back.

    When the plan has the dump's media, they are unpacked beside the media folder while the database is
    restored, and swapped in right after the database (see ``seeddump.media``): into MEDIA_ROOT when the
    alias's own database is restored, into ``media_root`` when given, and nowhere for another ``database``.

    With ``migrate``, the code's newer migrations are applied to the restored database before it is swapped
    in, and for the alias's own database the SEEDDUMP_RESTORE_HOOKS run there too (``seeddump.preswap``): a
    failure leaves the target as it was. (In place, there is no before: the command migrates after.)
    """
    options = options or RestoreOptions()
    problem = preswap.hook_problem(conf.RESTORE_HOOKS) if options.record and not options.in_place else None
    if problem:
        raise SeeddumpError(problem)
    settings_dict = postgres.settings_for(plan.using)
    if options.database is not None:
        settings_dict = {**settings_dict, "NAME": options.database}
    media_root = options.media_root
    if plan.media_archive is not None and media_root is None and options.record:
        media_root = media.media_root()
    journal = _journal(_Journal(_target_of(plan.using, settings_dict), plan.dump_path.name, settings_dict))
    with journal.guard(), postgres.user_errors(settings_dict), _MediaSwap(plan, media_root, progress) as media_swap:
        if options.in_place:
            return _restore_in_place(plan, settings_dict, options, media_swap, journal, progress)
        result = _restore(plan, settings_dict, options, media_swap, journal, progress)
        if result.followup is not None and not options.defer:
            with after_swap(result.database, plan.dump_path.name, result.undo_copy, settings_dict):
                finishing.finish(result.followup, settings_dict, progress)
            result = replace(result, followup=None)
    return result


@dataclass
class _Journal:
    """What a restore (or undo) did that the server records, so that whatever stops it (Ctrl-C, SIGTERM, a
    failure) is judged by what the server holds, not by where Python was: the point of no return is the swap's
    commit (the target is then the database whose oid was the scratch's), or in place the transaction's (none
    of the target's objects listed before it is left, see ``undo.committed_in_place``). Past it, the one line
    says what the target holds and where the replaced database is (``UnfinishedAfterSwap``, exit status 3),
    and nothing that the next run needs to finish the job (the undo copy, the unpacked media) is undone."""

    target: str
    holds: str  # what the target holds once the point of no return is passed
    settings_dict: Mapping[str, Any]
    restored_oid: int | None = None  # the database swapped in: set just before the swap
    in_place: bool = False
    before: list[int] | None = None  # in place: the target's own objects before the load
    pending: str | None = None  # in place: the copy made for the undo
    loading: bool = False  # in place: psql may still be at work on the target
    undoing: bool = False  # an undo: the database it replaces is the undone restore's, dropped
    # What Python saw (the point of no return passed; the copy kept): said when the server cannot answer.
    seen: bool = False
    kept_as: str | None = None
    verdict: bool | None = None

    @contextlib.contextmanager
    def guard(self) -> Iterator[None]:
        """Around everything a run does: past the point of no return, what stops it is said as such."""
        try:
            yield
        except UnfinishedAfterSwap:
            raise
        except (KeyboardInterrupt, Exception) as exc:
            self.judge(exc)
            # A session of the restore ended (seeddump's, or pg_restore's mid-load), or the server went away (a
            # new connection failed): the server says the target is as it was, and the line says so too, or that
            # it could not say (other failures say what they left).
            said_by_server = type(exc) is SeeddumpError and str(exc).startswith("PostgreSQL said:")
            if said_by_server or type(exc) in (ProgramFailed, CannotConnect):
                said = str(exc).rstrip(".")
                if self.verdict is False:
                    raise SeeddumpError(f"{said}; '{self.target}' was not changed.") from None
                if self.verdict is None:  # it went away (a server stop) before it could say
                    raise SeeddumpError(
                        f"{said}; the restore was interrupted before the server could say whether '{self.target}' "
                        "changed. Run restoredump again once the server is back."
                    ) from None
            raise

    def judge(self, exc: BaseException) -> None:
        """Raises ``UnfinishedAfterSwap`` for ``exc`` when the server says the point of no return is passed;
        returns when it is not (the caller then undoes what the run did, and raises ``exc``)."""
        near = self.seen or (self.loading if self.in_place else self.restored_oid is not None)
        if self.verdict is None and not near:
            self.verdict = False  # it never reached the swap or the load: nothing on the server to read
        if self.verdict is False:
            return
        try:
            with postgres.connect_maintenance(self.settings_dict) as admin:
                if self.verdict is None:
                    self.verdict = self._passed(admin)
                if not self.verdict:
                    return
                where = self._where(admin)
        except (driver.Error, SeeddumpError, KeyboardInterrupt):  # the server cannot tell: what Python saw
            if not self.seen:
                return
            where = f"kept for an undo as {self.kept_as}" if self.kept_as else "as the run left it"
        raise _unfinished(self.target, self.holds, where, _what_stopped(exc, self.settings_dict)) from None

    def passed(self) -> bool:
        """Whether the server says the point of no return is passed (asked once; driver.Error or SeeddumpError
        when it cannot be asked). For what undoes its own work when the run stops: in place, an interruption
        can come after the transaction committed."""
        if self.verdict is None:
            with postgres.connect_maintenance(self.settings_dict) as admin:
                self.verdict = self._passed(admin)
        return self.verdict

    def _passed(self, admin: driver.Connection) -> bool:
        if not self.in_place:
            return self.restored_oid is not None and databases.oid_of(admin, self.target) == self.restored_oid
        if self.before is None:
            return self.seen
        if self.loading:  # psql commits or rolls back for good once its session is gone
            databases.end_sessions_and_wait(admin, self.target)
        now = databases.own_objects(self.settings_dict, self.target)
        return undo.committed_in_place({"objectsBefore": self.before}, now)

    def _where(self, admin: driver.Connection) -> str:
        """Where the replaced database is, as the server has it; in place, the copy made beforehand is kept now."""
        if self.undoing:
            return "dropped by the next restore"
        objects = functools.partial(databases.own_objects, self.settings_dict, self.target)
        kept = {copy.name for copy in undo.list_copies(admin, self.target, sizes=False)}
        if self.pending is not None and self.pending not in kept and databases.is_ours(admin, self.pending):
            for name in undo.keep_in_place(admin, self.target, self.pending, after=objects()):
                databases.drop(admin, name)
        copy = undo.find(admin, self.target, objects)
        if copy is not None:
            return f"kept for an undo as {copy.name}"
        return "not kept for an undo" if self.in_place else "dropped by the next restore"


_JOURNALS: contextvars.ContextVar[list[_Journal] | None] = contextvars.ContextVar("seeddump_journals", default=None)


def _journal(journal: _Journal) -> _Journal:
    """``journal``, also known to the ``interruptions_judged`` around this call, if any."""
    known = _JOURNALS.get()
    if known is not None:
        known.append(journal)
    return journal


@contextlib.contextmanager
def interruptions_judged() -> Iterator[None]:
    """Around a command's call of ``restore`` or ``undo_last`` and what it does with the result: an interruption
    that comes once they have returned (before the command has said so, or while it hands work to the
    background) is judged by what the server holds, as one during them is (``UnfinishedAfterSwap``)."""
    token = _JOURNALS.set([])
    try:
        yield
    except KeyboardInterrupt as exc:
        for journal in _JOURNALS.get() or []:
            journal.judge(exc)
        raise
    finally:
        _JOURNALS.reset(token)


@contextlib.contextmanager
def after_swap(target: str, holds: str, kept: str | None, settings_dict: Mapping[str, Any]) -> Iterator[None]:
    """Everything after a swap's commit: whatever stops it (an interruption, a lost connection, a media folder
    that cannot move), the target holds ``holds`` now, and the one line says so, where the replaced database
    is, and how the rest gets done (``UnfinishedAfterSwap``, exit status 3)."""
    try:
        yield
    except UnfinishedAfterSwap:
        raise
    except (KeyboardInterrupt, Exception) as exc:
        what = _what_stopped(exc, settings_dict)
        where = f"kept for an undo as {kept}" if kept else "dropped by the next restore"
        raise _unfinished(target, holds, where, what) from None


def _what_stopped(exc: BaseException, settings_dict: Mapping[str, Any]) -> str:
    if isinstance(exc, KeyboardInterrupt):
        return "interrupted"
    text = str(exc).strip().splitlines()[0].rstrip(".") if str(exc).strip() else type(exc).__name__
    return postgres.scrub(text, settings_dict)


def _unfinished(target: str, holds: str, where: str, what: str) -> UnfinishedAfterSwap:
    return UnfinishedAfterSwap(
        f"'{target}' now holds {holds}; the database it replaced is {where}. What comes after the swap did not "
        f"finish ({what}); the next restoredump (or restoredump --undo) finishes it."
    )


def _target_of(using: str, settings_dict: Mapping[str, Any]) -> str:
    check_target_not_protected(settings_dict)
    target = str(settings_dict.get("NAME") or "")
    if not target:
        raise SeeddumpError(f"DATABASES['{using}'] has no NAME to restore into.")
    return target


def find_undo(using: str = "default") -> undo.UndoCopy | None:
    """What ``undo_last`` would put back for the alias's database, if anything (to show before asking)."""
    settings_dict = postgres.settings_for(using)
    with postgres.user_errors(settings_dict):
        target = _target_of(using, settings_dict)
        with postgres.connect_maintenance(settings_dict) as admin:
            return undo.find(admin, target)


@dataclass(frozen=True)
class UndoResult:
    database: str
    copy: undo.UndoCopy  # what was put back
    seconds: float
    media_root: Path | None = None  # the media folder that was put back too
    skipped_settings: tuple[str, ...] = ()


def undo_last(
    using: str = "default", *, environment: str | None = None, with_media: bool = True, progress: Progress = _quiet
) -> UndoResult:
    """Puts back the database (and media folder) the last restore of the alias's database replaced; see
    ``seeddump.undo``. The same swap as a restore, under the same lock: the undone restore's database is
    dropped, and there is nothing left to undo after.

    ``environment``, when given, must be the one whose restore is undone."""
    started = time.monotonic()
    settings_dict = postgres.settings_for(using)
    target = _target_of(using, settings_dict)
    journal = _journal(_Journal(target, "what it held before the last restore", settings_dict, undoing=True))
    with (
        journal.guard(),
        postgres.user_errors(settings_dict),
        postgres.connect_maintenance(settings_dict) as admin,
        target_lock(admin, target, progress),
    ):
        _finish_interrupted(admin, target, settings_dict, progress)
        copy = undo.find(admin, target, functools.partial(databases.own_objects, settings_dict, target))
        if copy is None:
            raise SeeddumpError(_nothing_to_undo(admin, target, with_media))
        if environment is not None and copy.environment != environment:
            raise SeeddumpError(
                f"The last restore of '{target}' was of a '{copy.environment}' dump, not '{environment}': "
                f"undoing it would bring back {copy.describe()}. Run: python manage.py restoredump --undo"
            )
        databases.check_may_create(admin, target)
        # The database comes back as it was, with the owner it had (not the undone restore's).
        owner = databases.restore_owner(admin, target, copy.owner or configured_owner(settings_dict))
        tag = finishing.tag(target)
        root = media.media_root() if copy.media is not None and with_media else None
        kept_media = media.kept_for_undo(root, tag) if root is not None and copy.media == "kept" else None
        if root is not None and copy.media == "kept" and kept_media is None:
            raise SeeddumpError(
                f"The media folder kept for this undo ({media.undo_folder(root, tag)}) is gone; nothing was "
                "changed. Undo the database alone with: python manage.py restoredump --undo --no-media"
            )
        postgres.close_django_connection(using)
        exchange = None
        if root is not None and kept_media is not None:
            exchange = media.Exchange.plan(root, kept_media, media.leftover(root))
        label = {"seeddump": "retired", "database": target}
        if exchange is not None:
            label["mediaExchange"] = exchange.as_label()  # type: ignore[assignment]
        fate = databases.Replaced(finishing.retired_prefix(target) + secrets.token_hex(4), label)
        progress(f"Swapping {copy.name} back in for '{target}'")
        journal.holds = f"what it held before {copy.replaced_by or 'the last restore'}"
        journal.restored_oid = databases.oid_of(admin, copy.name)
        swapped = databases.swap(admin, target, copy.name, fate, owner)
        journal.seen = True
        with after_swap(target, f"what it held before {copy.replaced_by or 'the last restore'}", None, settings_dict):
            signals.database_swapped.send(sender=using, database=target, replaced=fate.name)
            replaced_media: list[Path] = []
            if exchange is not None:
                replaced_media += undo.settle_media(admin, fate.name, exchange)
                replaced_media.append(exchange.outgoing)
            elif root is not None and copy.media == "absent":
                put_aside = media.set_aside(root)
                replaced_media += [put_aside] if put_aside is not None else []
            elif copy.media == "kept":  # --no-media: the kept folder no longer undoes anything
                with contextlib.suppress(SeeddumpError):
                    left = media.retire_undo(media.media_root(), tag)
                    replaced_media += [left] if left is not None else []
            progress(f"Dropping the undone restore's database {fate.name}")
            databases.drop(admin, fate.name)
            for folder in replaced_media:
                media.drop(folder)
    return UndoResult(
        database=target,
        copy=copy,
        seconds=time.monotonic() - started,
        media_root=root,
        skipped_settings=tuple(swapped.skipped_settings),
    )


def _nothing_to_undo(admin: driver.Connection, target: str, with_media: bool) -> str:
    """Why there is nothing to undo, as the server (and the media folder) has it."""
    line = f"Nothing to undo for '{target}': "
    stale = undo.list_copies(admin, target, sizes=False)
    if stale:
        other = undo.last_restored_by(admin, target)
        by = (
            f"a restore by role '{other}', which keeps its own copy: run restoredump --undo as '{other}'"
            if other
            else ("a restore that kept no copy, or a database made again by hand")
        )
        line += (
            f"the copy this role keeps ({stale[0].name}) undoes an earlier restore, and '{target}' was replaced "
            f"since by {by}. Putting it back would skip that change; nothing was changed."
        )
    else:
        line += (
            "no database replaced by a restore is kept (the last restore was already undone, kept nothing because "
            "SEEDDUMP_UNDO is off or it restored in place without CREATEDB, or there was no database before it)."
        )
    with contextlib.suppress(SeeddumpError):
        kept_aside = media.kept_aside_folders(media.media_root()) if with_media else []
        if kept_aside:
            line += f" The files MEDIA_ROOT held when there was no database yet are in {kept_aside[-1]}."
    return line


def _restore(
    plan: RestorePlan,
    settings_dict: Mapping[str, Any],
    options: RestoreOptions,
    media_swap: _MediaSwap,
    journal: _Journal,
    progress: Progress,
) -> RestoreResult:
    started = time.monotonic()
    use_snapshots, defer, record, migrate = options.snapshots, options.defer, options.record, options.migrate
    target = _target_of(plan.using, settings_dict)
    metadata = plan.metadata

    with (
        postgres.connect_maintenance(settings_dict) as admin,
        target_lock(admin, target, progress),
        snapshots.restoring(admin),
        sandbox.Sandbox(admin, settings_dict, "", trusted=plan.trusted) as dump_code,
    ):
        databases.check_may_create(admin, target)
        owner = databases.restore_owner(admin, target, configured_owner(settings_dict))
        dump_code.owner = owner
        _finish_interrupted(admin, target, settings_dict, progress)
        # Killed runs' scratch databases; replaced ones are left to this restore's finishing (see ``finish``).
        for name in finishing.drop_leftovers(admin, target, retired=False):
            progress(f"Dropped {name}, left over by an interrupted restore")
        # Unpacked while the database is restored. A dump with extensions (or one made before they were
        # recorded) waits until they are made: one that cannot be made is refused first, in a second.
        if metadata.extensions == ():
            media_swap.start()
        current = databases.identity_of(admin, target)
        exists = current is not None
        shape = current.shape if current is not None else databases.new_identity(admin, owner).shape
        key = databases.Identity(owner=owner, shape=shape).cache_key(databases.current_user(admin))
        scratch = finishing.scratch_prefix(target) + secrets.token_hex(4)
        source, claimed, changed, cache_note = "pg_restore", None, False, None
        for build in snapshots.stop_builds(admin):  # an earlier restore's background pg_restore
            progress(f"Stopped building the snapshot {build} in the background: this restore comes first")
        cloning = serverdisk.cloning(admin) if use_snapshots else serverdisk.Cloning(False, "--no-snapshot")
        # A snapshot is kept for a dump of the dumps folder only: pruning drops one whose dump is not there.
        caching = use_snapshots and plan.dump_path.parent.resolve() == conf.DIR.resolve()
        progress(f"Database copies on this server: {cloning.why}")
        try:
            if use_snapshots:
                claimed = snapshots.copy_for(admin, metadata, target, key, scratch, progress)
                if claimed is not None:
                    source = "ready copy"
                elif databases.exists(admin, scratch):
                    source = "snapshot"
            if source == "pg_restore":
                if snapshots.claim_empty(admin, scratch, target, key):
                    progress("Using the empty database the last restore prepared")
                else:
                    databases.create(admin, scratch, shape)
                load.into_new(
                    admin,
                    plan.archive(),
                    metadata,
                    settings_dict,
                    scratch,
                    dump_code,
                    options.jobs,
                    progress,
                    extensions_made=media_swap.start,
                )
                # With clones, the snapshot is a clone of this verified copy, made in milliseconds: no
                # second pg_restore in the background, no ready copy.
                if caching and (cloning.enabled or not defer):
                    cache_note = snapshots.keep(admin, scratch, metadata, key, progress, cloned=cloning.enabled)
            media_swap.start()  # a copy was taken (or nothing started it)
            # Verified now, or when the snapshot was made (a snapshot accepts no connections since).
            carried = records.restore_times(settings_dict, target) if exists and record else {}
            to_migrate = migrate and bool(plan.status.missing)
            changed = to_migrate or (record and bool(conf.RESTORE_HOOKS))  # no longer the dump as it is
            if changed:  # a copy of the snapshot or a ready copy is closed to connections
                databases.close(admin, scratch, closed=False)
            with databases.owner_may_create(settings_dict, scratch, owner, allowed=changed and dump_code.needed):
                prepared = preswap.prepare(
                    plan.using,
                    scratch,
                    target,
                    migrate=to_migrate,
                    hooks=record,
                    progress=progress,
                    login=dump_code.login,
                )
            media_swap.wait()  # unpacked beside the media folder while the database was restored
            postgres.close_django_connection(plan.using)
            exchange = media_swap.exchange(target, keep=record and conf.UNDO, replaces=exists)
            journal.restored_oid = databases.oid_of(admin, scratch)
            fate = _fate_of_replaced(admin, plan, target, record, exchange, media_swap, journal.restored_oid)
            progress(f"Swapping the restored database in for '{target}'")
            settings_before = current.settings if current is not None else None
            # A database restored for seeddump's own use (a seeded test database) is the connecting role's from
            # the swap's commit: once the owner's, a run stopped before taking it back left one no run would use.
            owned_by = owner if record else databases.current_user(admin)
            swapped = databases.swap(admin, target, scratch, fate, owned_by, settings_before)
            journal.seen, journal.kept_as = True, fate.name if exists and fate.closed else None
        except BaseException as exc:
            journal.judge(exc)  # past the swap's commit, nothing below is undone
            media_swap.abandon()
            if claimed is not None and not changed and snapshots.unclaim_ready(admin, claimed, scratch):
                progress(f"Kept the ready copy {claimed.name} for the next restore")
            else:
                with contextlib.suppress(driver.Error):
                    databases.drop(admin, scratch)
            raise
        kept = fate.name if swapped.replaced and fate.closed else None
        with after_swap(target, plan.dump_path.name, kept, settings_dict):
            signals.database_swapped.send(
                sender=plan.using, database=target, replaced=fate.name if swapped.replaced else None
            )
            retired_media = media_swap.complete(admin, fate.name if swapped.replaced else None, exchange)
            if record and media_swap.root is None:  # a folder kept for an undo before undoes nothing now
                retired_media += media_swap.retire_undo_folder(target)
            if kept:
                progress(f"Kept the replaced database as {kept} for an undo")
            restored_oid = databases.oid_of(admin, target)
            roles_note = footprint.other_roles_note(footprint.of(admin, target, elsewhere=False)) if record else None
            cost_note = None
            if record and source == "pg_restore" and caching:
                cost_note = footprint.cost_note(
                    databases.size_of(admin, target),
                    databases.size_of(admin, kept) if kept else 0,
                    copies=1 + int(conf.READY_COPIES and not cloning.enabled),
                )
    retired = tuple(new for _, new in fate.aside) + ((fate.name,) if swapped.replaced and not kept else ())
    undo_note = "SEEDDUMP_UNDO is off" if record and swapped.replaced and not conf.UNDO else None
    if media_swap.kept_aside is not None:
        undo_note = (
            f"there was no database '{target}' before it; the files MEDIA_ROOT held are kept in {media_swap.kept_aside}"
        )
    counts = metadata.record_counts
    # The admin's records go where the restored database has their table (from the dump, or made by a
    # migration before the swap): elsewhere, finishing needs none of Django's apps (``seeddump.cli``).
    keeps_records = record and records.installed() and (records.TABLE in counts or bool(prepared.migrations))
    if keeps_records:
        carried[plan.dump_path.name] = datetime.now(timezone.utc)
    followup = finishing.Followup(
        using=plan.using,
        database=target,
        dump_path=plan.dump_path,
        retired=retired,
        build_snapshot=caching and source == "pg_restore" and defer and not cloning.enabled,
        ready_copy=caching and conf.READY_COPIES and defer and not cloning.enabled,
        empty_database=defer,
        restore_times=carried if keeps_records else None,
        trusted=plan.trusted,
        retired_media=retired_media,
        restored_oid=restored_oid,
    )
    return RestoreResult(
        plan=plan,
        database=target,
        seconds=time.monotonic() - started,
        tables=len(counts),
        rows=sum(counts.values()),
        source=source,
        followup=followup,
        skipped_settings=tuple(swapped.skipped_settings),
        media_root=media_swap.root,
        migrated=prepared.migrations if migrate else None,
        hooks=prepared.hooks,
        undo_copy=kept,
        undo_note=undo_note,
        cache_note=cache_note,
        roles_note=roles_note,
        cost_note=cost_note,
        cloned=cloning.enabled,
    )


def _fate_of_replaced(
    admin: driver.Connection,
    plan: RestorePlan,
    target: str,
    keep: bool,
    exchange: media.Exchange | None,
    media_swap: _MediaSwap,
    restored_oid: int | None = None,
) -> databases.Replaced:
    return undo.replaced_fate(
        admin,
        target,
        keep=keep,
        dump_path=plan.dump_path,
        environment=plan.environment,
        media_exchange=exchange,
        media_swapped=media_swap.root is not None,
        restored_oid=restored_oid,
    )


def _finish_interrupted(
    admin: driver.Connection, target: str, settings_dict: Mapping[str, Any], progress: Progress
) -> None:
    """What an interrupted restore or undo of ``target`` left after its point of no return (keeping an in-place
    restore's copy, the media), done now, and what one left before it (an in-place restore's copy that never
    got its label or whose transaction did not commit) dropped; call it holding the target's lock, before
    anything else. Every path (cold, in place, undo) starts here."""
    try:
        done = undo.settle(admin, target, functools.partial(databases.own_objects, settings_dict, target))
    except SeeddumpError as exc:
        raise SeeddumpError(
            f"The last restore (or undo) of '{target}' stopped after its swap, and its media still cannot be put in "
            f"place ({exc}); nothing was changed now. Fix that, then run the command again."
        ) from None
    for line in done:
        progress(line)
    for name in undo.drop_abandoned(admin, target):
        progress(f"Dropped {name}, left over by an interrupted restore")


def _restore_in_place(
    plan: RestorePlan,
    settings_dict: Mapping[str, Any],
    options: RestoreOptions,
    media_swap: _MediaSwap,
    journal: _Journal,
    progress: Progress,
) -> RestoreResult:
    started = time.monotonic()
    record = options.record
    target = _target_of(plan.using, settings_dict)
    with (
        postgres.connect_maintenance(settings_dict) as admin,
        target_lock(admin, target, progress),
        sandbox.Sandbox(admin, settings_dict, "", trusted=plan.trusted) as dump_code,
    ):
        if not databases.exists(admin, target):
            raise SeeddumpError(
                f"Database '{target}' does not exist, and --in-place restores into an existing database. "
                "Create it first (or have it created), then run restoredump again."
            )
        dump_code.owner = databases.restore_owner(admin, target, configured_owner(settings_dict))
        _finish_interrupted(admin, target, settings_dict, progress)
        carried = records.restore_times(settings_dict, target) if record else {}
        for name in finishing.drop_leftovers(admin, target, scratch=False):
            progress(f"Dropped {name}, left over by an interrupted restore")
        media_swap.start()
        media_swap.wait()  # before the transaction: a failure to unpack leaves the database as it was
        postgres.close_django_connection(plan.using)
        pending, why_not, exchange = None, None, None
        journal.in_place = True
        journal.before = databases.own_objects(settings_dict, target)  # what the transaction drops
        if record:
            # Everything the undo copy needs is decided before the transaction and written on the copy, so
            # that a run stopped right after the commit is finished by the next (``undo.settle``).
            undo_possible = conf.UNDO and databases.may_create(admin)
            exchange = media_swap.exchange(target, keep=undo_possible)
            fate = _fate_of_replaced(admin, plan, target, True, exchange, media_swap)
            pending, why_not = _copy_for_undo(admin, target, fate.label, journal.before, progress)
            journal.pending = pending
        elif media_swap.root is not None:
            exchange = media_swap.exchange(target, keep=False)
        if record and pending is None:  # an earlier restore's copy would undo the wrong change after this one
            for name in undo.drop(admin, target):
                progress(f"Dropped {name}: it undoes an earlier restore, and this one keeps no copy")
        before = databases.identity_of(admin, target)
        try:
            journal.loading = True
            load.in_place(
                admin, plan.archive(), plan.metadata, settings_dict, target, dump_code, progress, journal.passed
            )
            journal.loading, journal.seen, journal.kept_as = False, True, pending
        except BaseException as exc:
            if isinstance(exc, load.RolledBack):  # psql said so and ended: no session of the target to end
                journal.loading, journal.verdict = False, False
            journal.judge(exc)  # committed: the copy is kept for the undo, and said
            media_swap.abandon()
            if pending is not None:
                with contextlib.suppress(driver.Error):
                    databases.drop(admin, pending)
            raise
        if before is not None:  # the dump's code ran as the owner, who may change the database's settings
            try:
                databases.give_settings(admin, target, before.settings)
            except driver.Error as exc:
                progress(f"Could not put back the database's settings as they were: {postgres.first_line(str(exc))}")
        with after_swap(target, plan.dump_path.name, pending, settings_dict):
            aside: tuple[str, ...] = ()
            if pending is not None:
                made = databases.own_objects(settings_dict, target)
                aside = undo.keep_in_place(admin, target, pending, after=made)
                progress(f"Kept the replaced database as {pending} for an undo")
            signals.database_swapped.send(sender=plan.using, database=target, replaced=pending)
            retired_media = media_swap.complete(admin, pending, exchange)
            if record and media_swap.root is None:
                retired_media += media_swap.retire_undo_folder(target)
            for name in aside:  # in place, nothing waits: what is not kept goes now
                databases.drop(admin, name)
            for folder in retired_media:
                media.drop(folder)
        if record:
            carried[plan.dump_path.name] = datetime.now(timezone.utc)
            with after_swap(target, plan.dump_path.name, pending, settings_dict):
                try:
                    records.sync_from_disk(dump_code.login(), target, conf.DIR, carried)
                except (driver.Error, SeeddumpError) as exc:  # read-only by default, closed: the restore is done
                    progress(f"Did not record the restore for the admin: {str(exc).strip().splitlines()[0]}")
    counts = plan.metadata.record_counts
    return RestoreResult(
        plan=plan,
        database=target,
        seconds=time.monotonic() - started,
        tables=len(counts),
        rows=sum(counts.values()),
        source="in place",
        media_root=media_swap.root,
        undo_copy=pending,
        undo_note=why_not,
    )


def _copy_for_undo(
    admin: driver.Connection,
    target: str,
    label: Mapping[str, object],
    objects: list[int] | None,
    progress: Progress,
) -> tuple[str | None, str | None]:
    """In place, the database is changed rather than replaced: a copy of it (labelled pending with ``label``,
    see ``undo.make_pending``) is what an undo can put back. The copy's name, or None and why there is none."""
    if not conf.UNDO:
        return None, "SEEDDUMP_UNDO is off"
    if not databases.may_create(admin):
        return None, "this role may not create databases, so an in-place restore cannot copy it first"
    for _attempt in range(3):
        try:
            pending = undo.make_pending(admin, target, label=label, objects=objects)
        except driver.errors.ObjectInUse:  # a new session came between ending them and the copy
            continue
        progress(f"Copied '{target}' to {pending} for an undo")
        return pending, None
    return None, "it kept getting new connections while it was being copied"


class _MediaSwap:
    """The dump's media on their way into the media folder: unpacked beside it in a thread while the database
    is restored (``start``, ``wait``), swapped in right after the database (``swap``); on any failure before
    that, the unpacked folder is removed and the media folder was never touched."""

    def __init__(self, plan: RestorePlan, root: Path | None, progress: Progress) -> None:
        self.archive, self.info = plan.media_archive, plan.metadata.media
        self.root = root if self.archive is not None and self.info is not None else None
        self.progress = progress
        self.unpacked: Path | None = None
        self.failure: BaseException | None = None
        self.thread: threading.Thread | None = None
        self.cancelled = threading.Event()
        self.planned: media.Exchange | None = None
        self.kept_aside: Path | None = None  # where the files MEDIA_ROOT held went, kept with no database

    def __enter__(self) -> _MediaSwap:
        if self.root is not None and self.info is not None:
            media.check_space(self.root, self.info)  # before anything is touched
        return self

    def start(self) -> None:
        """Starts unpacking (call it holding the target's lock: it first drops what killed runs left); once."""
        if self.root is None or self.thread is not None:
            return
        for folder in media.drop_leftovers(self.root):
            self.progress(f"Removed {folder}, left over by an interrupted restore")

        def run() -> None:
            try:
                assert self.archive is not None and self.info is not None and self.root is not None
                self.unpacked = media.unpack(self.archive, self.info, self.root, self.progress, self.cancelled)
            except BaseException as exc:  # handed to the restoring thread by ``wait``
                self.failure = exc

        self.thread = threading.Thread(target=run, name="seeddump-media", daemon=True)
        self.thread.start()

    def wait(self) -> None:
        if self.thread is not None:
            self.thread.join()
        if self.failure is not None:
            raise self.failure

    def exchange(self, target: str, *, keep: bool, replaces: bool = True) -> media.Exchange | None:
        """The exchange that puts the unpacked media in place, planned (not done) for the swap to record: what
        MEDIA_ROOT holds goes to the folder kept for an undo (``keep``), else to one to drop. Without a
        database to replace (``replaces``), no undo can put the files back and nothing records them: they go
        to a folder no restore removes (``media.kept_aside``, said in ``kept_aside``)."""
        if self.root is None or self.unpacked is None:
            return None
        unrecorded = not replaces and media.holds_files(self.root)
        if unrecorded:
            self.kept_aside = outgoing = media.kept_aside(self.root)
        elif keep:
            outgoing = media.undo_folder(self.root, finishing.tag(target))
        else:
            outgoing = media.leftover(self.root)
        self.planned = media.Exchange.plan(self.root, self.unpacked, outgoing, unrecorded=unrecorded)
        return self.planned

    def abandon(self) -> None:
        """The swap did not happen: the unpacked folder goes (``__exit__``)."""
        self.planned = None

    def complete(
        self, admin: driver.Connection, replaced: str | None, exchange: media.Exchange | None
    ) -> tuple[Path, ...]:
        """After the database swap: does the exchange (and takes it off ``replaced``'s label). Returns the
        folders to drop with the replaced database."""
        if exchange is None:
            return ()
        self.unpacked = None  # from now on, the exchange's (finished by the next run if this one stops)
        aside = undo.settle_media(admin, replaced, exchange) if replaced else exchange.complete()
        self.progress(f"Swapped the restored media into {self.root}")
        if self.kept_aside is not None:
            self.progress(
                f"Kept the files {self.root} held in {self.kept_aside}: there was no database to keep them with"
            )
        outgoing = [exchange.outgoing] if "seeddump-old" in exchange.outgoing.name else []
        return (*aside, *outgoing)

    def retire_undo_folder(self, target: str) -> tuple[Path, ...]:
        """A restore that leaves the files alone: the folder an earlier restore kept for an undo undoes
        nothing now, and goes."""
        with contextlib.suppress(SeeddumpError, OSError):
            folder = media.retire_undo(media.media_root(), finishing.tag(target))
            return (folder,) if folder is not None else ()
        return ()

    def __exit__(self, *exc_info: object) -> None:
        if self.thread is not None and self.thread.is_alive():
            self.cancelled.set()
            self.thread.join()
        # Once the swap may have recorded the exchange, the folder is the exchange's: the next run decides.
        if self.unpacked is not None and self.planned is None:
            media.drop(self.unpacked)
            self.unpacked = None
