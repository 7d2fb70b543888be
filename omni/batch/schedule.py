"""Which pending ops run next: earliest deadline first, batched by kind.

Owns `pick`, a pure function: the most urgent pending op decides the kind of the next batch, and
the batch takes every pending op of that kind, most urgent first, up to `max_batch`. So when a
batch is full the sessions whose listeners starve first are in it, and a less urgent op of the
same kind rides along for free when there is room (the forward costs about the same). EDF over
absolute deadlines cannot starve anyone with a finite deadline: a waiting op only gets more urgent.

Background ops (a session opened as background: user transcripts) come after every other op:
they run only when no foreground op is due within `BACKGROUND_SLACK_S`, and never ride along in
a foreground batch, so they cannot delay a reply's first audio. Under a load that always has a
foreground op due, they wait.
"""

from __future__ import annotations

from typing import NamedTuple


BACKGROUND_SLACK_S = 0.25  # a background batch (one transcript window) costs less than this


class Pending(NamedTuple):
    deadline_s: float
    order: int  # arrival order: ties go first-come first-served
    kind: str
    background: bool = False


def pick(
    pending: list[Pending], max_batch: int, now_s: float = float("inf"), hold_s: float = float("inf")
) -> list[int]:
    """Indices into `pending` of the next batch (most urgent first); empty if nothing pends.
    `now_s`: the clock, for background ops (the default, infinity, keeps them last); `hold_s`:
    a foreground deadline with no op pending yet (a reply step on its way), which they yield to too."""
    if not pending:
        return []
    assert max_batch >= 1, f"max_batch {max_batch}"
    fg = [i for i, p in enumerate(pending) if not p.background]
    bg = [i for i, p in enumerate(pending) if p.background]
    fg_due = min([pending[i].deadline_s for i in fg] + [hold_s]) < now_s + BACKGROUND_SLACK_S
    if not fg and fg_due:
        return []  # background waits for the foreground step on its way
    pool = fg if fg_due or not bg else bg
    ranked = sorted(pool, key=lambda i: (pending[i].deadline_s, pending[i].order))
    kind = pending[ranked[0]].kind
    return [i for i in ranked if pending[i].kind == kind][:max_batch]
