"""A MiniCPM-V 4.5 session's camera: which frames reach the model, when, and how many did.

Owns: the rate gate (`video_fps` by capture time: a frame arriving sooner than its slot is
dropped), the frames held while a reply runs (any engine command but a reply step ends the
session's reply, so they wait for its end or cut), and the figures of `omni.video.stats` (frames a
second over the last 2 s, frames and packs in total). Plain state of one conversation, changed on
its owner task only; sending the frames is the conversation's (v45_conversation.py).
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

STATS_WINDOW_S = 2.0  # the rate shown is over this long
STATS_EVERY_S = 1.0  # an omni.video.stats event at most this often, while frames flow
MAX_HELD = 64  # frames held during one reply (at 6 fps: 10 s); older ones give way
# ... and at most this many pixels held (decoded RGB, 3 bytes each: 60 MB), so full-HD frames over a
# long reply do not hold hundreds of MB per session (64 of them would be 400 MB)
MAX_HELD_PIXELS = 20_000_000
# A frame up to this share of the interval early still takes its slot: camera clocks jitter, and
# 30-fps frames fall 0-33 ms either side of a 2-fps grid.
EARLY_SHARE = 0.25


def _pixels(image) -> int:
    size = getattr(image, "size", None)  # a PIL image's (width, height)
    return size[0] * size[1] if isinstance(size, tuple) else 0


@dataclass
class Held:
    image: object
    t_s: float


@dataclass
class FrameGate:
    next_due_s: float | None = None  # the capture time the next frame's slot opens
    held: deque = field(default_factory=lambda: deque(maxlen=MAX_HELD))
    sent_s: deque = field(default_factory=deque)  # server times of frames sent to the model (the window)
    frames_total: int = 0
    packs_total: int = 0
    open_pack: int = 0  # frames of the pack being filled
    last_stats_s: float | None = None
    last_admitted_s: float | None = None  # capture time of the last frame admitted
    refund_to: tuple = (None, None)  # the gate before the last admit

    def admit(self, t_s: float, fps: int) -> bool:
        """Whether a frame captured at `t_s` takes a slot of `fps` a second (else it is dropped);
        never one captured before the last admitted (the model takes frames in capture order)."""
        interval = 1.0 / fps
        if self.next_due_s is not None and t_s < self.next_due_s - EARLY_SHARE * interval:
            return False
        if self.last_admitted_s is not None and t_s <= self.last_admitted_s:
            return False
        self.refund_to = (self.next_due_s, self.last_admitted_s)
        self.last_admitted_s = t_s
        # On the grid while frames keep up; after a gap (or a new rate) the grid restarts at this frame.
        due = self.next_due_s
        self.next_due_s = due + interval if due is not None and t_s < due + interval else t_s + interval
        return True

    def refund(self) -> None:
        """The frame just admitted could not be decoded: its slot goes to the next one."""
        self.next_due_s, self.last_admitted_s = self.refund_to

    def hold(self, image, t_s: float) -> None:
        self.held.append(Held(image, t_s))
        pixels = [_pixels(h.image) for h in self.held]
        while len(self.held) > 1 and sum(pixels) > MAX_HELD_PIXELS:  # the oldest give way
            self.held.popleft()
            pixels.pop(0)

    def take_held(self) -> list[Held]:
        out = list(self.held)
        self.held.clear()
        return out

    def sent(self, now_s: float, pack_frames: int) -> None:
        """A frame reached the model's session; its pack closes at `pack_frames`."""
        self.frames_total += 1
        self.open_pack += 1
        if self.open_pack >= pack_frames:
            self.packs_total, self.open_pack = self.packs_total + 1, 0
        self.sent_s.append(now_s)

    def input_followed(self) -> None:
        """Other input (a question, a reply) closes the pack being filled (the session flushes it)."""
        if self.open_pack:
            self.packs_total, self.open_pack = self.packs_total + 1, 0

    def stats_due(self, now_s: float) -> tuple[float, int, int] | None:
        """(fps over the last 2 s, frames, packs) when a stats event is due, else None."""
        if self.last_stats_s is not None and now_s - self.last_stats_s < STATS_EVERY_S:
            return None
        self.last_stats_s = now_s
        while self.sent_s and self.sent_s[0] < now_s - STATS_WINDOW_S:
            self.sent_s.popleft()
        return round(len(self.sent_s) / STATS_WINDOW_S, 2), self.frames_total, self.packs_total
