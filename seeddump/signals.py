"""seeddump's signals (its receiver after ``migrate``, warning of stale dumps, is ``staleness.warn_stale_dumps``).

``database_swapped`` is sent the moment a restore's (or an undo's) swap has committed, before anything else
happens: ``database`` now holds what was restored, and ``replaced`` names the database it replaced (kept for an
undo or to be dropped; None when there was none). Whatever happens after it (an interruption, a lost
connection) finds the restore whole: this is the point of no return."""

from __future__ import annotations

from django.dispatch import Signal

database_swapped = Signal()  # sender: the alias; database, replaced
