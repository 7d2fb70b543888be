"""Which session class serves a model family's realtime conversations, and what every one offers.

Owns: `session_class` (`Family.session` -> the class: "streaming" is MiniCPM-o 2.6's official
streaming API, `omni.session.engine.Session`; "packs" is MiniCPM-V 4.5's camera packs and text,
`omni.session.v45.V45Session`) and `EngineSession`, the surface the batch engine drives (its
`COMMANDS`). A command a family's class lacks (o-2.6 has no `frame`) is refused naming the family
(`command`). Does not own: the sessions, the family registry (omni.family).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable, Protocol

from ..family import UnsupportedInput

if TYPE_CHECKING:
    from ..family import Family
    from ..loader import Omni


class EngineSession(Protocol):
    """What `omni.batch` calls on a session, whatever its family (the programs yield model ops)."""

    m: Omni
    seed: int | None
    last_reply_end: str | None

    @property
    def reply_usage(self) -> tuple[int, int] | None: ...

    def system_program(self, *args: Any) -> Any: ...

    def prefill_program(self, msg: dict, max_tokens: int | None = None) -> Any: ...

    def unit_program(self, *args: Any) -> Any: ...

    def reply_program(self, *args: Any) -> Any: ...

    def interrupt_ms(self, played_ms: float) -> int: ...

    def forget_reply(self) -> int: ...


def session_class(family: Family) -> type:
    """The class whose instances hold one conversation of `family` on an engine."""
    if family.session == "streaming":
        from .engine import Session

        return Session
    if family.session == "packs":
        from .v45 import V45Session

        return V45Session
    raise ValueError(f"{family.title}: no session class {family.session!r}")


# Commands only some families have: the command name -> the session attribute that runs it.
OPTIONAL = {"frame": "frame_program", "cut": "cut_reply"}


def command(session: EngineSession, op: str) -> Callable:
    """The session's method for an optional command, or `UnsupportedInput` naming its family."""
    fn = getattr(session, OPTIONAL[op], None)
    if fn is None:
        title = session.m.family.title
        raise UnsupportedInput(f"{title} sessions have no {op!r} command (it belongs to another model family)")
    return fn
