"""One session on a batch engine as the engine thread sees it, and the commands queued for it.

Owns: `Command` (one call into the engine and its `done` callback, answered once by `answer`),
`Live` (a session's queued commands, the program that runs, the op it waits on, the reply's
outputs nobody took yet and the reply_step waiting for them) and the transitions that touch one
session alone: `Live.begin` sets a command up, `Live.stop_reply` closes the reply. Does not own:
the order commands and ops run in, batches, other threads (the engine).
"""

from __future__ import annotations

import logging
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np

from ..model.ops import Op, Program
from ..session.kinds import EngineSession, command
from ..tools.calls import merge

log = logging.getLogger("omni.batch")
Done = Callable[[Any, BaseException | None], None]


@dataclass(eq=False)
class Command:
    sid: int
    op: str
    args: tuple
    deadline_s: float
    done: Done


@dataclass(eq=False)
class Live:
    """One session on the engine, owned by the engine thread."""

    sid: int
    slot: int
    session: EngineSession  # of the class the model's family names (omni.session.kinds)
    background: bool = False  # its ops yield to every other session's (transcripts)
    commands: deque[Command] = field(default_factory=deque)
    current: Command | None = None  # the command whose program runs
    program: Program | None = None  # its program, or the reply program, or None
    replying: bool = False  # `program` is the reply program
    pending: Op | None = None  # the op `program` waits on
    outputs: list = field(default_factory=list)  # (text, wav) of the reply not yet handed out
    waiter: Command | None = None  # a reply_step waiting for output
    reply_deadline_s: float = float("inf")
    hold_s: float = float("inf")  # while replying: the last reply_step's deadline (background yields)
    reply_error: BaseException | None = None

    @property
    def deadline_s(self) -> float:
        if self.current is not None:
            return self.current.deadline_s
        return self.waiter.deadline_s if self.waiter is not None else self.reply_deadline_s

    def begin(self, cmd: Command) -> bool:
        """Set up `cmd`; True if it runs a program (done when the program ends)."""
        s = self.session
        if cmd.op == "generate":
            self.program, self.replying = s.reply_program(*cmd.args), True
            self.outputs, self.reply_error, self.reply_deadline_s = [], None, cmd.deadline_s
            return False
        if cmd.op == "rollback":
            s.interrupt_ms(*cmd.args)
            return False
        if cmd.op == "forget":
            s.forget_reply()
            return False
        if cmd.op == "cut":  # V-4.5: the reply keeps the text delivered
            command(s, "cut")(*cmd.args)
            return False
        if cmd.op == "system":
            seed, *args = cmd.args  # mode, ref, text[, tools]
            s.seed = seed  # a seed takes effect from the context start
            program = s.system_program(*args)
        elif cmd.op == "prefill":
            program = s.prefill_program(*cmd.args)
        elif cmd.op == "frame":  # V-4.5: a camera frame, prefilled with its pack
            program = command(s, "frame")(*cmd.args)
        else:
            program = s.unit_program(*cmd.args)
        self.current, self.program, self.replying = cmd, program, False
        return True

    def stop_reply(self) -> None:
        """Close the reply program (the caller answers a waiting reply_step afterwards)."""
        if self.replying:
            assert self.program is not None, "replying: the reply program is set"
            self.program.close()
            self.program, self.pending, self.replying, self.hold_s = None, None, False, float("inf")
            self.outputs = []


def merged(outputs: list) -> tuple[str, np.ndarray, tuple]:
    """A reply's outputs since the last reply_step as one piece: (text, wav, calls), the calls
    it wrote (omni.tools.calls.CallPiece, after its speech) or ()."""
    speech = [o for o in outputs if isinstance(o, tuple)]
    calls = tuple(merge([o for o in outputs if not isinstance(o, tuple)]))
    text = "".join(t for t, _ in speech)
    if not speech:
        wav = np.zeros(0, np.float32)
    else:
        wav = np.concatenate([a for _, a in speech]) if len(speech) > 1 else speech[0][1]
    return text, wav, calls


def answer(cmd: Command, result, error) -> None:
    """Call a command's `done` once; a callback that raises must not break the engine's state."""
    try:
        cmd.done(result, error)
    except Exception:  # noqa: BLE001 - the caller's bug, not the engine's
        log.exception("a batch engine callback raised (command %s of session %d)", cmd.op, cmd.sid)


def ignore(result, error) -> None:
    if error is not None:  # nobody waits (open/close without a callback): e.g. the engine stopped first
        log.debug("batch engine command failed: %s", error)
