"""A chat request's run on a MiniCPM-V 4.5 engine session: the plan's commands, then its reply split.

Owns the mapping of a `V45Plan` onto `EngineHandle` commands (docs/v45-sessions.md, "Chat
Completions on V-4.5"): the system message; each user message's parts in order, text and images
together in one `prefill` and a video's frames one `append_frame` each, with its pack's time id
(`t_s = id / 10`, origin 0) and the pack's size, so the session builds the packs `chat()` would;
earlier assistant messages as `prefill`s (the session renders them as the template does); then
`start_reply` with the plan's thinking, sampling and token cap. And the reply's text as
(reasoning, content): the open `<think>\\n` a thinking reply starts with dropped, `ThinkSplitter`
at `</think>`, stop strings over the content only (they end the answer, not the thinking).
Does not own: admission and the slot (complete.py), the prompt's meaning (v45.py), the wire.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable

from omni.processing import video as VID
from omni.session.v45 import ReplyOptions
from omni.session.v45_reply import THINK_PREFIX

from .stops import StopScanner
from .v45 import ThinkSplitter, V45Plan


async def prefill(h, plan: V45Plan, seed: int | None, max_item_tokens: int, deadline_s: float, check) -> None:
    """Every command before the reply; `check()` runs between them (the client may be gone)."""
    await h.set_system(seed, "default", None, plan.system_prompt or None, "", deadline_s=deadline_s)
    video = _video(plan)
    for i, msg in enumerate(plan.msgs):
        check()
        if msg["role"] != "user":
            await h.prefill({"role": msg["role"], "content": list(msg["content"])}, max_item_tokens, deadline_s)
            continue
        held: list = []  # text and still images: one prefill, as chat() joins a turn's parts with "\n"
        for j, part in enumerate(msg["content"]):
            if (i, j) not in video:
                held.append(part)
                continue
            if held:
                await h.prefill({"role": "user", "content": held}, max_item_tokens, deadline_s)
                held = []
            check()
            t_s, pack_frames = video[i, j]
            await h.append_frame(part, t_s, pack_frames, 0.0)
        if held:
            await h.prefill({"role": "user", "content": held}, max_item_tokens, deadline_s)
    await h.start_reply(ReplyOptions(plan.thinking, plan.sampling, plan.max_new_tokens), deadline_s=deadline_s)


def _video(plan: V45Plan) -> dict[tuple[int, int], tuple[float, int]]:
    """(message, part) of each video frame -> (its time: its pack's time id / 10 s, its pack's size):
    the session then numbers it with that id and prefills each pack once it is whole."""
    if plan.video_at is None or plan.temporal_ids is None:
        return {}
    i, j = plan.video_at
    times = [(tid * VID.TIME_SCALE_S, len(pack)) for pack in plan.temporal_ids for tid in pack]
    return {(i, j + k): t for k, t in enumerate(times)}


class ReplySplit:
    """The session's reply text -> (reasoning, content) pieces; `stopped` once a stop string came."""

    def __init__(self, thinking: bool, stops: tuple[str, ...]) -> None:
        self.think = ThinkSplitter(thinking)
        self.stops = StopScanner(stops)
        self._opening = THINK_PREFIX if thinking else ""  # what the stream starts with, not the model's

    @property
    def stopped(self) -> bool:
        return self.stops.stopped

    def push(self, text: str) -> tuple[str, str]:
        if self._opening:
            n = min(len(self._opening), len(text))
            assert text[:n] == self._opening[:n], "a thinking reply starts with the prompt's open think block"
            text, self._opening = text[n:], self._opening[n:]
        reasoning, content = self.think.push(text)
        return ("" if self.stopped else reasoning), self.stops.push(content)

    def flush(self) -> tuple[str, str]:
        reasoning, content = self.think.flush()
        return ("" if self.stopped else reasoning), self.stops.push(content) + self.stops.flush()


async def pieces(
    h, split: ReplySplit, check: Callable[[], None], first_due_s: float, clock_s, step_slack_s: float
) -> AsyncIterator[tuple[str, str]]:
    """The reply's (reasoning, content) pieces until it ends or a stop string comes."""
    due_s = first_due_s
    while True:
        check()
        item = await h.reply_step(max(due_s, clock_s()))
        due_s = clock_s() + step_slack_s
        if item is None:
            break
        reasoning, content = split.push(item[0])
        if reasoning or content:
            yield reasoning, content
        if split.stopped:
            return
    reasoning, content = split.flush()
    if reasoning or content:
        yield reasoning, content
