"""The parts of a MiniCPM-V 4.5 conversation that are still open: the user turn being written, the
camera frames not yet packed, an assistant turn whose final form waits for what follows it.

Owns: `Turn` (where the open user turn starts in the cache, how many parts it has, where its packs
are, for the sliding window inside a long camera turn), `Clip` (the turn's frames not yet
prefilled, their size and temporal ids, the turn's time origin) with the temporal-id rule, and
`Run` (what followed the last user turn: earlier replies, a client's assistant and system
messages, and where they sit). Plain data that moves with the cache (`shift`). Does not own: the cache or the programs (v45.py).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from PIL import Image

from ..processing.packs import MAX_PACK
from ..processing.video import TIME_SCALE_S
from .v45_text import Tail, moved

DEFAULT_PACK_FRAMES = 3  # the model card's packing for video (MAX_NUM_PACKING); 1-6 per frame call
TEMPORAL_IDS = 72_000  # rows of the official temporal table: 2 h on the 0.1-s grid


@dataclass
class Turn:
    """The open user turn (its `<|im_start|>user` is in the cache)."""

    start: int
    parts: int = 0  # content parts so far: the next is joined by "\n", as chat() joins a message's parts
    packs: list[list[int]] = field(default_factory=list)  # [start, end) of each pack's placeholder, oldest first

    def shift(self, a: int, b: int) -> None:
        self.start = moved(self.start, a, b)
        self.packs = [[moved(s, a, b), moved(e, a, b)] for s, e in self.packs]

    def copy(self) -> "Turn":
        return Turn(self.start, self.parts, [list(p) for p in self.packs])


@dataclass
class Clip:
    """The user turn's camera frames: the ones waiting for their pack, and the turn's time origin.

    Temporal ids count tenths of a second from the origin: the capture time of the turn's first
    frame (or the `origin_s` that frame came with). The model card numbers a clip's frames from
    its start; a live turn has no earlier start than its first frame, and numbering each turn
    afresh keeps every id within the official table however long the session runs."""

    origin_s: float | None = None
    last_s: float | None = None
    frames: list[tuple[Image.Image, int]] = field(default_factory=list)  # (frame, temporal id)

    def temporal_id(self, t_s: float, origin_s: float | None) -> int:
        """The id of a frame captured at `t_s` (checked: finite, in capture order, within the table)."""
        if not isinstance(t_s, (int, float)) or not math.isfinite(t_s):
            raise ValueError(f"a frame's capture time must be a finite number of seconds, got {t_s!r}")
        if self.last_s is not None and t_s < self.last_s:
            raise ValueError(f"frame captured at {t_s} s after one captured at {self.last_s} s: send frames in order")
        origin = self.origin_s if self.origin_s is not None else (t_s if origin_s is None else float(origin_s))
        if not math.isfinite(origin) or origin > t_s:
            raise ValueError(f"the time origin {origin_s!r} must be a finite time before the frame's {t_s} s")
        tid = math.floor((t_s - origin) / TIME_SCALE_S + 0.5)
        if tid >= TEMPORAL_IDS:
            raise ValueError(
                f"a user turn's frames span at most {TEMPORAL_IDS * TIME_SCALE_S:.0f} s (the model's temporal "
                "table): ask the model (a reply starts a new turn) or start a new conversation"
            )
        return tid

    def add(self, frame: Image.Image, t_s: float, tid: int, origin_s: float | None) -> None:
        if self.origin_s is None:
            self.origin_s = t_s if origin_s is None else float(origin_s)
        self.last_s = t_s
        self.frames.append((frame, tid))

    def take(self) -> tuple[list[Image.Image], list[int]]:
        """The frames waiting and their ids; none wait afterwards."""
        frames, self.frames = self.frames, []
        return [f for f, _ in frames], [t for _, t in frames]

    @property
    def size(self) -> tuple[int, int] | None:
        return self.frames[0][0].size if self.frames else None


def check_frame(image, pack_frames: int) -> None:
    if not isinstance(image, Image.Image):
        raise TypeError(f"a camera frame must be a PIL image, got {type(image).__name__}")
    if not isinstance(pack_frames, int) or not 1 <= pack_frames <= MAX_PACK:
        raise ValueError(f"frames per pack must be 1 to {MAX_PACK}, got {pack_frames!r}")


@dataclass
class Run:
    """What follows the last user turn: assistant turns (earlier replies, a client's messages) and
    system messages. The template renders them by what comes next (a user turn: as history; a
    reply: with think blocks), so the whole run is rendered again then, from `start` (None: from
    the context's end, after `close`, the end of a user turn not yet closed in the cache)."""

    entries: list[tuple[str, str]] = field(default_factory=list)  # (role, text)
    start: int | None = None
    tail: Tail | None = None  # the tail at `start`
    close: str = ""

    def shift(self, a: int, b: int) -> None:
        if self.start is not None:
            self.start = moved(self.start, a, b)
        if self.tail is not None:
            self.tail.shift(a, b)

    def copy(self) -> "Run":
        return Run(list(self.entries), self.start, self.tail.copy() if self.tail else None, self.close)
