"""One connection's conversation state, as one typed object with named transitions.

Owned by the connection's one task (gateway/mailbox.py): every client message, media chunk and
the session's own follow-up work changes it there, in order, so no two tasks ever interleave on
it. The reply task (respond.py) and the transcriber only read it.

Phases:
    listening    -> responding     a reply starts (server VAD, commit or response.create)
    responding   -> listening      the reply ended by itself; the units heard meanwhile go in
    listening /
    responding   -> interrupted    barge-in, cancel, truncate or delete cut the latest reply
    interrupted  -> interrupted    a truncate or delete refines the cut (the client's heard ms)
    interrupted  -> listening      the rollback was applied, before anything new is prefilled
    any          -> closing        the connection ends; nothing is accepted after this
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from enum import Enum
from typing import TYPE_CHECKING

import numpy as np

from .config import SessionConfig

if TYPE_CHECKING:
    from .respond import Response


class Phase(Enum):
    LISTENING = "listening"
    RESPONDING = "responding"
    INTERRUPTED = "interrupted"
    CLOSING = "closing"


_NEXT = {
    Phase.LISTENING: {Phase.RESPONDING, Phase.INTERRUPTED, Phase.CLOSING},
    Phase.RESPONDING: {Phase.LISTENING, Phase.RESPONDING, Phase.INTERRUPTED, Phase.CLOSING},
    Phase.INTERRUPTED: {Phase.LISTENING, Phase.INTERRUPTED, Phase.CLOSING},
    Phase.CLOSING: {Phase.CLOSING},
}


class TransitionError(RuntimeError):
    """A transition the state machine does not allow: a bug, reported as internal_error."""


@dataclass
class Turn:
    """The user turn being received."""

    item_id: str
    audio_ms: float = 0.0
    prefill_ms: list[float] = field(default_factory=list)
    audio_16k: list[np.ndarray] = field(default_factory=list)  # what the model heard (for its transcript)


@dataclass(frozen=True)
class Rollback:
    """How the context is cut before the next prefill: to `heard_ms` of the reply's audio, or
    the whole reply forgotten (None: it was deleted)."""

    item_id: str
    heard_ms: float | None


@dataclass
class ConnectionState:
    config: SessionConfig
    phase: Phase = Phase.LISTENING
    reply: Response | None = None  # the latest reply: what cancel, truncate, delete cut
    cuttable: bool = False  # nothing was prefilled after `reply`: it can still be cut
    rollback: Rollback | None = None  # set while interrupted
    turn: Turn | None = None  # the user turn being received
    last_turn: Turn | None = None  # the turn the next reply answers (its prefill costs)
    last_item_id: str | None = None  # the newest item: what the next one follows
    turn_end_s: float | None = None  # when VAD decided the user stopped
    system_dirty: bool = True  # the system prompt changed: set it before the next prefill
    tools_shown: tuple = ()  # the tools the model's context lists (omni.tools.spec.Tool)
    assistant_last: bool = False  # the context ends in an assistant turn (a call item may join it)
    ref_16k: np.ndarray | None = field(default=None, repr=False)  # the voice clip, decoded
    # (unit, its turn) heard while a reply was generated, without barge-in: heard after it
    pending_units: list = field(default_factory=list, repr=False)
    # The connection's owner task (set by gateway/mailbox.py): any other task changing the phase
    # is a bug. Closing is exempt: it runs after the owner has stopped.
    owner: asyncio.Task | None = field(default=None, repr=False, compare=False)

    def _go(self, to: Phase) -> None:
        if to not in _NEXT[self.phase]:
            raise TransitionError(f"{self.phase.value} -> {to.value}")
        if self.owner is not None and to is not Phase.CLOSING and _current_task() is not self.owner:
            raise TransitionError(f"{self.phase.value} -> {to.value} off the connection's owner task")
        self.phase = to

    # ---- named transitions --------------------------------------------------------------------
    def reply_started(self, r: Response) -> None:
        self._go(Phase.RESPONDING)
        self.reply, self.cuttable, self.last_item_id = r, True, r.item_id

    def reply_over(self, r: Response) -> None:
        """`r`'s task ended; if it is still the latest reply and was not cut, back to listening."""
        if self.phase is Phase.RESPONDING and self.reply is r:
            self._go(Phase.LISTENING)

    def interrupted(self, r: Response, heard_ms: float | None) -> None:
        """`r` was cut at `heard_ms` of its audio (None: forgotten whole)."""
        self._go(Phase.INTERRUPTED)
        self.rollback = Rollback(r.item_id, heard_ms)

    def reply_deleted(self, r: Response) -> None:
        self.interrupted(r, None)
        self.reply = None  # gone: no cancel, truncate or barge-in touches it
        self.last_item_id = r.previous_item_id  # the item before it is the latest again

    def context_grows(self) -> Rollback | None:
        """Something is about to be prefilled: the latest reply can no longer be cut; returns the
        rollback to apply first, if the reply was interrupted."""
        self.cuttable = False
        if self.phase is not Phase.INTERRUPTED:
            return None
        rollback, self.rollback = self.rollback, None
        self._go(Phase.LISTENING)
        return rollback

    def closing(self) -> None:
        self._go(Phase.CLOSING)
        self.pending_units.clear()  # media goes now: held frames are 6 MB at 1080p
        self.turn = self.last_turn = None


def _current_task() -> asyncio.Task | None:
    try:
        return asyncio.current_task()
    except RuntimeError:  # no running loop (a unit test stepping the state by hand)
        return None
