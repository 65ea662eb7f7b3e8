class SeeddumpError(Exception):
    """A failure the user can act on.

    The message is one line that says what happened and what to do; commands turn it into a
    ``CommandError`` so the user sees that line and a non-zero exit, never a traceback.
    """


class ProgramFailed(SeeddumpError):
    """A PostgreSQL program (pg_restore, psql, pg_dump) exited with an error: its most useful line."""


class CannotConnect(SeeddumpError):
    """A new connection to the server failed (stopped, restarting, unreachable, or refused): its reason."""


class UnfinishedAfterSwap(SeeddumpError):
    """The target holds what was swapped in, but a step after the swap did not finish.

    Commands exit with ``exit_status`` (3), not 1, so a script can tell "the database was not changed" from
    "the database was replaced, and the message says what is left"."""

    exit_status = 3


class NoDump(SeeddumpError):
    """There is no dump of the environment in the dumps folder (not a broken one: none at all)."""
