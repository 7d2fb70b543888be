"""One MiniCPM-V 4.5 reply: engine steps -> text events, the thinking split off, with cancellation.

Owns the lifecycle of a text reply (created -> text deltas -> done with usage) and what barge-in
needs to know of it: the characters of the reply's text the client was given (`V45Response.chars`,
for `cut_reply`). With thinking on, the text before `</think>` goes out as [ext] reasoning events,
never in the output text (streaming.chat.v45.ThinkSplitter, as Chat Completions'
`reasoning_content`). Cancellation as respond.py: the canceller closes the response at once and
the running task drops every later step. Does not own: when replies start or are cut, the engine's
context (v45_conversation.py).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from omni.session.v45 import ReplyOptions
from omni.session.v45_reply import THINK_PREFIX

from ..chat.v45 import ThinkSplitter
from ..ids import new_id
from . import events as E
from .respond import Emit, Response
from .tasks import Spawn, plain_task


@dataclass
class V45Response(Response):
    reasoning: list[str] = field(default_factory=list)
    reasoning_done: bool = False
    chars: int = 0  # characters of the reply's text (think block included) the client was given
    in_engine: bool = False  # its generate command was sent: a cut or forget then applies to it
    usage: dict | None = None


def usage_of(counts: tuple[int, int] | None) -> dict | None:
    """OpenAI's usage object from the engine's (context tokens before the reply, tokens sampled)."""
    if counts is None:
        return None
    prompt, sampled = counts
    return {
        "total_tokens": prompt + sampled,
        "input_tokens": prompt,
        "output_tokens": sampled,
        "output_token_details": {"text_tokens": sampled, "audio_tokens": 0},
    }


class V45Responder:
    """Runs the text replies of one V-4.5 conversation; at most one live at a time."""

    def __init__(self, send: Emit, engine, clock_s: Callable[[], float] = time.monotonic, spawn: Spawn = plain_task):
        self.send, self.engine, self.clock_s, self.spawn = send, engine, clock_s, spawn
        self.current: V45Response | None = None
        self.history: list[dict] = []  # timings of every finished response (the session's log line)

    async def start(self, opts: ReplyOptions, previous_item_id: str | None, metadata=None) -> V45Response | None:
        """Start a reply; None (nothing sent) when the connection is closing. Its task waits for
        `response.created` to be sent, so every event of the reply follows it."""
        r = V45Response(
            new_id("resp"),
            new_id("item"),
            self.clock_s(),
            speak=False,
            metadata=metadata,
            previous_item_id=previous_item_id,
        )
        r.task = self.spawn(self._run(r, opts), f"response {r.id}")
        if r.task is None:
            return None
        self.current = r
        await self.send(E.ResponseStarted(r.id, r.item("in_progress"), previous_item_id, r.metadata))
        r.announced.set()
        return r

    async def _run(self, r: V45Response, opts: ReplyOptions) -> None:
        split, fresh, produced = ThinkSplitter(opts.thinking), opts.thinking, 0
        try:
            await r.announced.wait()
            if r.closed:  # cancelled before it began: the engine never hears of it
                return
            r.in_engine = True
            await self.engine.start_reply(opts)
            while not r.closed:
                item = await self.engine.reply_step(None)
                if r.closed:  # cancelled while the step ran: drop it
                    return
                if item is None:
                    break
                raw = item[0]
                produced += len(raw)
                if fresh and raw.startswith(THINK_PREFIX):  # the prompt opened the block: not reasoning
                    raw = raw[len(THINK_PREFIX) :]
                fresh = False
                # a piece of `</think>` held back is not delivered yet
                await self._emit(r, *split.push(raw), produced - len(split._held))
            if not r.closed:
                await self._emit(r, *split.flush(), produced)
                status = "completed" if self.engine.last_reply_end == "eos" else "incomplete"
                await self.finish(r, status, None if status == "completed" else "max_output_tokens")
        except asyncio.CancelledError:
            raise
        except Exception as e:  # the model failed: report it, close the response
            await self.send(E.Failed(e))
            if not r.closed:
                await self.finish(r, "failed", reason=type(e).__name__)

    async def _emit(self, r: V45Response, reasoning: str, content: str, chars_after: int) -> None:
        """Send a step's reasoning and text. `r.chars` (what a cut keeps) counts each piece before
        its send is awaited: a queued event reaches the client even when a cancel comes while the
        send waits for a slow reader; nothing is sent once the reply is closed."""
        if reasoning and not r.closed:
            r.reasoning.append(reasoning)
            r.chars = chars_after - len(content)
            await self.send(E.ReasoningText(r.id, r.item_id, reasoning))
        if content and not r.closed:
            await self._reasoning_done(r)
            if r.closed:
                return
            r.first_output.set()
            r.timings_ms.setdefault("first_text_ms", 1000.0 * (self.clock_s() - r.t_trigger_s))
            r.transcript.append(content)
            r.chars = chars_after
            await self.send(E.ResponseText(r.id, r.item_id, content, False))
        elif not r.closed:
            r.chars = chars_after

    async def _reasoning_done(self, r: V45Response) -> None:
        if r.reasoning and not r.reasoning_done:
            r.reasoning_done = True
            await self.send(E.ReasoningDone(r.id, r.item_id, "".join(r.reasoning)))

    async def finish(self, r: V45Response, status: str, reason: str | None = None) -> None:
        """Close `r`: its reasoning, its item's closing events, then `response.done`; idempotent."""
        if r.closed:
            return
        r.closed, r.status, r.reason = True, status, reason
        r.first_output.set()
        r.usage = usage_of(self.engine.reply_usage)
        await self._reasoning_done(r)
        r.timings_ms["total_ms"] = 1000.0 * (self.clock_s() - r.t_trigger_s)
        item_status = "completed" if status == "completed" else "incomplete"
        text = "".join(r.transcript)
        await self.send(
            E.ResponseEnded(
                r.id, r.item(item_status), text, False, E.Outcome(status, reason), r.metadata, usage=r.usage
            )
        )
        await self.send(E.ResponseTimings(r.id, {k: round(v, 1) for k, v in r.timings_ms.items()}))
        self.history.append(dict(r.timings_ms))
        if self.current is r:
            self.current = None

    async def cancel(self, reason: str) -> V45Response | None:
        """Stop the live reply at once (its task drops whatever it is computing)."""
        r = self.current
        if r is None or r.closed:
            return None
        await self.finish(r, "cancelled", reason)
        return r

    async def close(self) -> None:
        r = self.current
        if r is not None:
            r.closed = True
            if r.task:
                r.task.cancel()
                await asyncio.gather(r.task, return_exceptions=True)
