"""Which pending ops run next: earliest deadline first, batched by kind.

Owns `pick`, a pure function: the most urgent pending op decides the kind of the next batch, and
the batch takes every pending op of that kind, most urgent first, up to `max_batch`. So when a
batch is full the sessions whose listeners starve first are in it, and a less urgent op of the
same kind rides along for free when there is room (the forward costs about the same). EDF over
absolute deadlines cannot starve anyone with a finite deadline: a waiting op only gets more urgent.
"""
from __future__ import annotations

from typing import NamedTuple


class Pending(NamedTuple):
    deadline_s: float
    order: int          # arrival order: ties go first-come first-served
    kind: str


def pick(pending: list[Pending], max_batch: int) -> list[int]:
    """Indices into `pending` of the next batch (most urgent first); empty if nothing pends."""
    if not pending:
        return []
    assert max_batch >= 1, f"max_batch {max_batch}"
    ranked = sorted(range(len(pending)), key=lambda i: (pending[i].deadline_s, pending[i].order))
    kind = pending[ranked[0]].kind
    return [i for i in ranked if pending[i].kind == kind][:max_batch]
