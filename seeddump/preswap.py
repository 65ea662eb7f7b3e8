"""Work done on the restored database before it is swapped in: the code's newer migrations and the hooks.

``restore`` calls ``prepare`` with Django's connection pointed at the scratch database, right before the
swap. Whatever fails there (a migration, a hook) fails the restore: the scratch database is dropped and the
target is exactly as it was, and the one line names the migration or the hook. The app never sees an
unmigrated or half-migrated database.

SEEDDUMP_RESTORE_HOOKS lists the hooks, run in order: a list or tuple is a management command with its
arguments (``["createsuperuser", "--noinput", "--username", "dev"]``; ``--database`` is added for the alias
being restored when the command takes it), a string the dotted path of a callable that takes ``using`` (the
alias, pointed at the restored database).

Both run logged in as the restore's throwaway member of the owner (``seeddump.sandbox``) when seeddump connects
as another role: a trigger the dump put on ``django_migrations`` runs with the owner's rights at most.
"""

from __future__ import annotations

import io
import os
import re
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from django.core.management import call_command
from django.utils.module_loading import import_string

from seeddump import postgres
from seeddump.conf import conf
from seeddump.exceptions import SeeddumpError

Progress = Callable[[str], None]
_APPLYING = re.compile(r"Applying (\S+?)\.\.\.")


@dataclass(frozen=True)
class Prepared:
    migrations: tuple[str, ...]  # app.name of each migration applied to the restored database
    hooks: tuple[str, ...]  # one line per hook that ran: what it was, what it said, how long it took


def _shown(hook: object) -> str:
    return " ".join(str(part) for part in hook) if isinstance(hook, (list, tuple)) else str(hook)


def hook_problem(hooks: Sequence[object]) -> str | None:
    """A hook that would run and leave something the user cannot use, said before the restore starts.

    ``createsuperuser --noinput`` without DJANGO_SUPERUSER_PASSWORD in the environment makes a user with an
    unusable password: the restore would succeed and the login would fail, with no word of why.
    """
    for hook in hooks:
        if not isinstance(hook, (list, tuple)) or not hook or str(hook[0]) != "createsuperuser":
            continue
        args = [str(part) for part in hook]
        quiet = "--noinput" in args or "--no-input" in args
        if quiet and not os.environ.get("DJANGO_SUPERUSER_PASSWORD"):
            return (
                f"The restore hook {_shown(hook)!r} (SEEDDUMP_RESTORE_HOOKS) would make a user with an unusable "
                "password: DJANGO_SUPERUSER_PASSWORD is not set in the environment. Set it (in the shell or the "
                "project's .env), or use a hook that sets the password (docs/how-to/pre-swap-hooks.md); nothing was "
                "changed."
            )
    return None


def _reason(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0][:200]}" if text else type(exc).__name__


def _command_args(hook: Sequence[object], using: str) -> list[str]:
    """The hook's command and arguments, with ``--database`` for the alias being restored when the command
    takes it and the hook does not say: a hook must never write to another alias's database."""
    from django.core.management import get_commands, load_command_class

    args = [str(part) for part in hook]
    if not args or "--database" in args or any(arg.startswith("--database=") for arg in args):
        return args
    try:
        command = load_command_class(get_commands()[args[0]], args[0])
    except KeyError:
        return args  # call_command says the command is unknown
    parser = command.create_parser("manage.py", args[0])
    if any("--database" in action.option_strings for action in parser._actions):
        args += ["--database", using]
    return args


def prepare(
    using: str,
    database: str,
    target: str,
    *,
    migrate: bool,
    hooks: bool,
    progress: Progress,
    login: Callable[[], Mapping[str, Any]] | None = None,
) -> Prepared:
    """Migrates (if ``migrate``) and runs the hooks (if ``hooks``) against ``database``, logged in with
    ``login()`` (the restore's ``sandbox``: the restored database's code runs there too); SeeddumpError if any
    fails."""
    hooks_to_run: Sequence[object] = conf.RESTORE_HOOKS if hooks else ()
    applied: list[str] = []
    if not migrate and not hooks_to_run:
        return Prepared((), ())
    ran: list[str] = []
    untouched = f"'{target}' was not changed"
    with postgres.django_connection_to(using, database, login() if login is not None else None):
        if migrate:
            output = io.StringIO()
            try:
                call_command("migrate", database=using, interactive=False, verbosity=1, stdout=output)
            except Exception as exc:  # a migration's own error, whatever it is
                started = _APPLYING.findall(output.getvalue())
                which = f"the migration {started[-1]}" if started else "migrate"
                raise SeeddumpError(
                    f"{which} failed on the restored database ({_reason(exc)}); {untouched}. Fix the migration, "
                    "or restore without --migrate and migrate by hand."
                ) from None
            applied = _APPLYING.findall(output.getvalue())
            for name in applied:
                progress(f"Applied {name} to the restored database")
        for hook in hooks_to_run:
            shown = _shown(hook)
            progress(f"Running the restore hook {shown}")
            began = time.monotonic()
            said = io.StringIO()
            try:
                if isinstance(hook, (list, tuple)):
                    call_command(*_command_args(hook, using), stdout=said, stderr=io.StringIO())
                else:
                    import_string(str(hook))(using=using)
            except Exception as exc:  # a hook's own error, whatever it is
                raise SeeddumpError(
                    f"The restore hook {shown!r} (SEEDDUMP_RESTORE_HOOKS) failed on the restored database "
                    f"({_reason(exc)}); {untouched}."
                ) from None
            last = [line.strip() for line in said.getvalue().splitlines() if line.strip()]
            answer = f": {last[-1][:200]}" if last else ""
            ran.append(f"Ran the restore hook {shown}{answer} ({time.monotonic() - began:.1f}s)")
    return Prepared(tuple(applied), tuple(ran))
