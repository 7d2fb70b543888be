"""One chat completion on the batch engines: admission, the engine session, the reply's pieces.

Owns one request's run: the plan for the loaded model's family (checked before anything is
taken), a session lease from the same `SessionManager` that admits realtime sessions and an
engine session opened by the same worker (`EngineHandle`), so requests and realtime sessions
share the slots and the same `server_busy` refusal; the commands in order; the reply's pieces
with stop strings held back (`StopScanner`) and its tool calls; why it ended (`tool_calls` once
every call it began is whole) and its token counts. The lease and the engine slot are freed
however the run ends: the reply over, a stop string, the client gone (`gone()` is checked
between steps; a cancelled task ends it at once), an engine error.
A MiniCPM-V 4.5 plan runs through run_v45.py (its commands, its reply's thinking split off).
Does not own: the wire (gateway/chat_completions.py), prompts (o26.py, v45.py).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass

import numpy as np

from omni.tools.calls import CallPiece

from ..errors import ModelError
from . import o26, run_v45, v45
from .request import ChatRequest
from .stops import StopScanner

log = logging.getLogger("omni.chat")
# Deadlines for the engines' earliest-deadline-first order: a request is due this long after it
# starts (its system prompt, prefills, first piece), so a realtime session's work due sooner (a unit,
# a reply step before its listener runs dry) goes first; later pieces are for a reader, not a
# loudspeaker. An op only gets more urgent as it waits: nothing starves.
FIRST_STEP_SLACK_S = 0.5
STEP_SLACK_S = 1.0


@dataclass(frozen=True)
class Piece:
    text: str = ""
    audio_24k: np.ndarray | None = None  # float32, with `speech`
    reasoning: str = ""  # thinking text (MiniCPM-V 4.5), never in `text`
    calls: tuple[CallPiece, ...] = ()  # the reply's tool calls (omni.tools.calls), after its text


@dataclass(frozen=True)
class Outcome:
    finish_reason: str  # "stop" | "length" | "tool_calls"
    prompt_tokens: int
    completion_tokens: int


class ClientGone(Exception):
    """The client went away mid-request: its slot is freed and nothing more is computed."""


def plan_for(family: str, req: ChatRequest, settings) -> o26.EnginePlan | v45.V45Plan:
    """The engine plan of `req` for the loaded family ("o-2.6", "v-4.5"); raises the family's refusal."""
    if family == "o-2.6":
        return o26.plan(req, settings.max_reply_tokens, settings.max_speech_s)
    if family == "v-4.5":
        return v45.plan(req, settings.max_reply_tokens)
    raise ModelError("unsupported_model", f"no chat completions for the model family {family!r}")


class Completion:
    """`async with Completion(...) as c: async for piece in c.pieces(): ...; c.outcome`."""

    def __init__(self, app_state, req: ChatRequest, gone: Callable[[], bool] = lambda: False, clock_s=time.monotonic):
        """`app_state`: the server's objects (settings, worker, manager, family; metrics optional)."""
        self.settings, self.worker, self.manager = app_state["settings"], app_state["worker"], app_state["manager"]
        self.metrics = app_state.get("metrics")
        self.req, self.gone, self.clock_s = req, gone, clock_s
        self.plan = plan_for(app_state["family"].key, req, self.settings)  # refusals before a slot is taken
        self.outcome: Outcome | None = None
        self.lease = self.handle = None

    async def __aenter__(self) -> "Completion":
        self.lease = self.manager.acquire()  # CapacityError server_busy, as for a realtime session
        task = asyncio.current_task()
        # idle timeout and server shutdown end the request as they end a session
        self.lease.close = lambda reason: task.cancel() if task is not None else None
        try:
            self.handle = self.worker.open_session(self.settings.max_context_tokens)
        except BaseException:
            self.manager.release(self.lease)
            raise
        if self.metrics is not None:
            self.metrics.session_started("chat")
            self.handle.on_step = self.metrics.observe_step
        return self

    async def __aexit__(self, *exc) -> None:
        if self.handle is not None:
            self.handle.close()
        if self.lease is not None:
            self.manager.release(self.lease)
        if self.metrics is not None and self.handle is not None:
            self.metrics.session_ended()

    async def pieces(self) -> AsyncIterator[Piece]:
        h, p = self.handle, self.plan
        assert h is not None, "pieces() inside `async with`"
        deadline_s = self.clock_s() + FIRST_STEP_SLACK_S
        if isinstance(p, v45.V45Plan):
            async for piece in self._v45(p, deadline_s):
                yield piece
            return
        await h.set_system(p.seed, p.mode, p.reference_16k, p.instructions, p.tools, deadline_s=deadline_s)
        for msg in p.prefills:
            self._check()
            await h.prefill(msg, self.settings.max_item_tokens, deadline_s=deadline_s)
        await h.start_reply(p.options, deadline_s=deadline_s)
        stops = StopScanner(self.req.stop)
        started, done = set(), set()  # indices of the calls begun and written whole
        while True:
            self._check()
            item = await h.reply_step(max(deadline_s, self.clock_s()))
            deadline_s = self.clock_s() + STEP_SLACK_S
            if item is None:
                break
            text, wav, *more = item
            out = stops.push(text)
            calls = more[0] if more and not stops.stopped else ()
            if calls:  # the text ended at the call: what it held back is no stop string
                out += stops.flush()
                started.update(c.index for c in calls)
                done.update(c.index for c in calls if c.done)
            if out or calls or (len(wav) and not stops.stopped):
                yield Piece(out, wav if len(wav) and not stops.stopped else None, calls=calls)
            if stops.stopped:
                break
        if rest := stops.flush():
            yield Piece(rest)
        end = "stop" if stops.stopped or h.last_reply_end == "eos" else "length"
        if started and not stops.stopped:  # calls: all whole, or one cut by the token cap
            end = "tool_calls" if started == done and h.last_reply_end == "eos" else "length"
        prompt, completion = h.reply_usage or (0, 0)
        self.outcome = Outcome(end, prompt, completion)

    async def _v45(self, p: v45.V45Plan, deadline_s: float) -> AsyncIterator[Piece]:
        """MiniCPM-V 4.5: text only, the thinking split off (run_v45.py)."""
        h = self.handle
        assert h is not None, "inside `async with`"
        await run_v45.prefill(h, p, self.req.sampling.seed, self.settings.max_item_tokens, deadline_s, self._check)
        split = run_v45.ReplySplit(p.thinking, self.req.stop)
        async for reasoning, text in run_v45.pieces(h, split, self._check, deadline_s, self.clock_s, STEP_SLACK_S):
            yield Piece(text, reasoning=reasoning)
        end = "stop" if split.stopped or h.last_reply_end == "eos" else "length"
        prompt, completion = h.reply_usage or (0, 0)
        self.outcome = Outcome(end, prompt, completion)

    def _check(self) -> None:
        if self.lease is not None:
            self.manager.touch(self.lease)
        if self.gone():
            raise ClientGone("the client went away")
