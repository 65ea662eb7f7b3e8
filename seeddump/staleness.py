"""Whether a dump still matches the code: its applied migrations against the project's migrations, and the
warning about stale dumps after ``migrate``."""

from __future__ import annotations

import contextlib
import contextvars
import sys
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from django.apps import AppConfig, apps
from django.core.management.color import color_style

from seeddump import codestate, dumpfiles
from seeddump.conf import conf
from seeddump.exceptions import SeeddumpError

Key = tuple[str, str]
_SHOWN = 5


@dataclass(frozen=True)
class CodeMigrations:
    """The migrations of the code, and which squashed migration replaces which."""

    nodes: frozenset[Key]
    replacements: dict[Key, frozenset[Key]]
    installed: frozenset[str] | None = None  # labels of the installed apps (None: every app counts)

    @classmethod
    def load(cls) -> CodeMigrations:
        """The code's migrations, from the migration files when Django's apps are loaded (and then written
        down, see ``codestate``); as written down when they are not (``python -m seeddump``, which checked
        that they still hold)."""
        if not apps.ready:
            written = codestate.read()
            if isinstance(written, str):
                raise SeeddumpError(f"Cannot tell the code's migrations without Django's apps: {written}.")
            return cls(nodes=written.nodes, replacements=written.replacements, installed=written.installed)
        # Imported here: it imports every model field, which python -m seeddump has no use for.
        from django.db.migrations.loader import MigrationLoader

        turned_off = codestate.migrations_turned_off()
        configs = list(apps.get_app_configs())
        with codestate.migration_modules_in_effect():
            loader = MigrationLoader(None, ignore_no_migrations=True)
            code = cls(
                nodes=frozenset(loader.graph.nodes),
                replacements={key: frozenset(m.replaces) for key, m in loader.replacements.items()},
                installed=frozenset(config.label for config in configs),
            )
            packages, folders = codestate.migration_folders(
                (config.label, MigrationLoader.migrations_module(config.label)[0], Path(config.path))
                for config in configs
            )
        if not turned_off:
            packages += [config.name.split(".")[0] for config in configs]
            codestate.write_down(code.nodes, code.replacements, code.installed or (), packages, folders)
        return code

    def compare(self, applied: Iterable[Key]) -> tuple[list[Key], list[Key]]:
        """(migrations of the code missing from ``applied``, migrations in ``applied`` the code lacks)."""
        applied = set(applied)
        covered = set(applied)
        for squashed, replaced in self.replacements.items():
            if replaced <= applied:
                covered.add(squashed)
            if squashed in applied:
                covered |= replaced
        known = set(self.nodes).union(*self.replacements.values()) if self.replacements else set(self.nodes)
        # An app these settings do not install (seeddump itself in a project's test settings, say) has
        # tables in the dump that nothing uses: its migrations are no sign of another branch.
        unknown = {key for key in applied - known if self.installed is None or key[0] in self.installed}
        return sorted(self.nodes - covered), sorted(unknown)


@dataclass(frozen=True)
class DumpStatus:
    environment: str
    dump_path: Path
    metadata: dumpfiles.Metadata
    missing: list[Key]
    unknown: list[Key]

    @property
    def stale(self) -> bool:
        return bool(self.missing or self.unknown)

    @property
    def label(self) -> str:
        stamp = self.metadata.timestamp.strftime("%Y-%m-%d %H:%M UTC")
        return f"the {self.environment} dump v{self.metadata.version} ({stamp})"

    def problems(self) -> str:
        parts = []
        if self.missing:
            parts.append(f"{_count(self.missing)} {_are(self.missing)} not in it ({_names(self.missing)})")
        if self.unknown:
            parts.append(
                f"it holds {_count(self.unknown)} the code does not have ({_names(self.unknown)}), "
                "so it was made on another branch or a newer checkout"
            )
        return "; ".join(parts)

    def message(self) -> str:
        return f"seeddump: {self.label} is stale: {self.problems()}. {self.fix()}"

    def fix(self) -> str:
        return f"Regenerate it: python manage.py generatedump {self.environment}"


_loaded: contextvars.ContextVar[CodeMigrations | None] = contextvars.ContextVar("seeddump_migrations", default=None)


@contextlib.contextmanager
def code_migrations_loaded_once() -> Iterator[None]:
    """Within the block, ``code_migrations_cached`` loads the code's migrations once (the admin asks for
    every row of a page); outside it, each call reads them again, so that a migration written while the
    server runs shows on the next page, not after a restart."""
    token = _loaded.set(CodeMigrations.load())
    try:
        yield
    finally:
        _loaded.reset(token)


def code_migrations_cached() -> CodeMigrations:
    return _loaded.get() or CodeMigrations.load()


def _count(keys: list[Key]) -> str:
    return f"{len(keys)} migration" + ("s" if len(keys) != 1 else "")


def _are(keys: list[Key]) -> str:
    return "is" if len(keys) == 1 else "are"


def _names(keys: list[Key]) -> str:
    shown = ", ".join(f"{app}.{name}" for app, name in keys[:_SHOWN])
    return shown + (f" and {len(keys) - _SHOWN} more" if len(keys) > _SHOWN else "")


def status_of(dump_path: Path, metadata: dumpfiles.Metadata, code: CodeMigrations | None = None) -> DumpStatus:
    code = code or CodeMigrations.load()
    missing, unknown = code.compare(metadata.migrations)
    return DumpStatus(metadata.environment, dump_path, metadata, missing, unknown)


@dataclass(frozen=True)
class Choice:
    """The dump of an environment to restore for the checked-out code (see ``choose``)."""

    status: DumpStatus  # the chosen dump; when nothing fits, the latest
    passed_over: tuple[DumpStatus, ...]  # newer dumps (the latest first) holding migrations the code lacks
    fits: bool  # the chosen dump holds no migration the code lacks

    @property
    def dump_path(self) -> Path:
        return self.status.dump_path

    def note(self) -> str | None:
        """Why the chosen dump is not the latest, when it is not."""
        if not self.fits or not self.passed_over:
            return None
        latest = self.passed_over[0]
        others = len(self.passed_over) - 1
        return (
            f"Restoring {self.dump_path.name}, the newest {self.status.environment} dump this code can run: "
            f"the latest, {latest.dump_path.name}, holds {_count(latest.unknown)} it does not have "
            f"({_names(latest.unknown)})"
            + (f", and so do {others} newer dump(s)" if others else "")
            + "; it was made on another branch or a newer checkout."
        )

    def refusal(self) -> str:
        latest = self.status
        older = len(self.passed_over) - 1
        return (
            f"No {latest.environment} dump fits this code: the latest, {latest.dump_path.name}, holds "
            f"{_count(latest.unknown)} this code does not have ({_names(latest.unknown)})"
            + (f", and so do the {older} other dump(s) of {latest.environment}" if older else "")
            + ". They were made on another branch or a newer checkout. Check out matching code, or make a dump "
            f"for this code with: python manage.py generatedump {latest.environment} (--force restores the latest "
            "anyway)."
        )


def choose(directory: Path, environment: str, code: CodeMigrations | None = None) -> Choice:
    """The dump of ``environment`` to restore for the checked-out code: the latest, unless it holds
    migrations the code does not have (made on another branch); then the newest dump in the folder that
    holds none (the code's newer migrations can be applied to it). Dumps whose metadata cannot be read
    are passed over; the chosen one is verified by the restore like any other."""
    code = code or CodeMigrations.load()
    latest_path = dumpfiles.resolve_latest(directory, environment)
    latest = status_of(latest_path, dumpfiles.read_metadata(latest_path), code)
    if not latest.unknown:
        return Choice(latest, (), fits=True)
    passed_over = [latest]
    for path in reversed(dumpfiles.list_dumps(directory, environment)):
        if path.name == latest_path.name:
            continue
        try:
            status = status_of(path, dumpfiles.read_metadata(path), code)
        except SeeddumpError:
            continue
        if not status.unknown:
            return Choice(status, tuple(passed_over), fits=True)
        passed_over.append(status)
    return Choice(latest, tuple(passed_over), fits=False)


def latest_statuses(directory: Path, code: CodeMigrations | None = None) -> tuple[list[DumpStatus], list[str]]:
    """The status of the latest dump of every environment in ``directory``, and the problems reading them."""
    statuses, errors = [], []
    try:
        found = dumpfiles.environments(directory)
    except OSError as exc:
        return [], [f"Cannot read the dumps folder {directory}: {exc.strerror}."]
    for environment in found:
        try:
            dump_path = dumpfiles.resolve_latest(directory, environment)
            metadata = dumpfiles.read_metadata(dump_path)
        except SeeddumpError as exc:
            errors.append(str(exc))
            continue
        code = code or CodeMigrations.load()
        statuses.append(status_of(dump_path, metadata, code))
    return statuses, errors


def warn_stale_dumps(
    *,
    app_config: AppConfig,
    verbosity: int,
    using: str,
    plan: list[Any] | None = None,
    stdout: Any = None,
    **kwargs: Any,
) -> None:
    """After ``migrate``: writes down the code's migrations (for ``python -m seeddump``) and warns about
    every environment whose latest dump no longer matches them."""
    if plan is None:  # flush and test teardown send no plan
        return
    code = CodeMigrations.load()
    if verbosity < 1:
        return
    stdout = stdout or sys.stdout
    style = color_style()
    statuses, errors = latest_statuses(conf.DIR, code)
    for status in statuses:
        if status.stale:
            stdout.write(style.WARNING(status.message()) + "\n")
    for error in errors:
        stdout.write(style.WARNING(f"seeddump: {error}") + "\n")
