"""Whether a dump still matches the code: its applied migrations against the project's migrations."""

from __future__ import annotations

import contextlib
import contextvars
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from django.apps import apps
from django.db.migrations.loader import MigrationLoader

from seeddump import dumpfiles
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
        loader = MigrationLoader(None, ignore_no_migrations=True)
        return cls(
            nodes=frozenset(loader.graph.nodes),
            replacements={key: frozenset(m.replaces) for key, m in loader.replacements.items()},
            installed=frozenset(config.label for config in apps.get_app_configs()),
        )

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


def latest_statuses(directory: Path) -> tuple[list[DumpStatus], list[str]]:
    """The status of the latest dump of every environment in ``directory``, and the problems reading them."""
    statuses, errors = [], []
    code: CodeMigrations | None = None
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
