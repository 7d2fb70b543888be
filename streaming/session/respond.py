"""One reply: engine steps on the worker -> protocol events and playout, with cancellation.

Owns the lifecycle of a `Response` (created -> deltas -> done) and its invariant: every event of a
response is sent before its `response.done`, nothing after it. Cancellation is by number: the
canceller marks the response, sends the closing events at once, and the running task drops every
later step on sight (STYLE §9). Does not own: turn taking, the engine's state (the conversation
rolls the context back), transport.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from typing import Awaitable, Callable

import numpy as np

from omni.sampling import SamplingParams
from omni.session.engine import GenerateOptions

from ..ids import new_id
from . import events as E
from .tasks import Spawn, plain_task
from .tools import ReplyCalls

Emit = Callable[[object], Awaitable[None]]  # the connection's sink of session events (events.py)
MODEL_OUTPUT_RATE_HZ = 24_000  # the speech head's rate (Vocos)
FIRST_AUDIO_TARGET_S = 0.2  # scheduling deadline of a reply's steps until its first audio
PLAYOUT_MARGIN_S = 0.3  # serve a reply step this long before its listener would starve


def reply_options(settings, config, params, tools=None) -> GenerateOptions:
    """A reply's generation options: the session's `config` overridden by the response's
    `params` (config.ResponseParams), within the server's `settings` caps; `tools` its ToolSpec."""
    limit = settings.max_reply_tokens
    cap = config.max_output_tokens if params.max_output_tokens is None else params.max_output_tokens
    if isinstance(cap, int):
        limit = min(limit, cap)
    speak = "audio" in (params.output_modalities or config.output_modalities)
    temperature = params.temperature if params.temperature is not None else config.temperature
    sampling = SamplingParams() if temperature is None else SamplingParams(temperature=temperature)
    return GenerateOptions(
        sampling=sampling,
        max_new_tokens=limit,
        generate_audio=speak,
        max_speech_s=settings.max_speech_s,
        low_latency=True,
        tools=tools,
    )


@dataclass
class Response:
    id: str
    item_id: str
    t_trigger_s: float  # end of the user's turn (VAD decision / commit / create)
    status: str = "in_progress"
    reason: str | None = None
    closed: bool = False  # response.done sent
    transcript: list[str] = field(default_factory=list)
    audio_samples: int = 0
    timings_ms: dict[str, float] = field(default_factory=dict)
    task: asyncio.Task | None = None
    t_first_audio_s: float | None = None
    speak: bool = True  # output_modalities: audio (+ transcript) or text only
    metadata: dict | None = None  # the client's, echoed on the response object
    first_output: asyncio.Event = field(default_factory=asyncio.Event)  # its first text or audio, or its end
    announced: asyncio.Event = field(default_factory=asyncio.Event)  # response.created sent: its task may run
    stopped: bool = False  # barge-in, cancel or truncate stopped it: no longer audible
    cut_live: bool = False  # a truncate cancelled it mid-generation (see response.cancel)
    previous_item_id: str | None = None  # the conversation item it follows
    has_message: bool = True  # its message item was announced (with tools: at its first output)
    message_closed: bool = False  # ... and closed before its calls
    calls: ReplyCalls | None = None  # its function calls (a reply that may call tools)

    @property
    def last_item_id(self) -> str | None:
        """Its last output item (a call, the message), or None if it has none."""
        if self.calls is not None and self.calls.ended:
            return self.calls.ended[-1].id
        return self.item_id if self.has_message else None

    @property
    def audio_ms(self) -> float:
        """Reply audio generated so far."""
        return 1000.0 * self.audio_samples / MODEL_OUTPUT_RATE_HZ

    def part(self) -> E.Part:
        text = "".join(self.transcript)
        return E.Part("output_audio", transcript=text) if self.speak else E.Part("output_text", text=text)

    def item(self, status: str) -> E.Item:
        return E.Item(self.item_id, "assistant", (self.part(),), status)


class Responder:
    """Runs replies of one conversation; at most one live at a time."""

    def __init__(
        self,
        send: Emit,
        engine,
        playout,
        clock_s: Callable[[], float] = time.monotonic,
        metrics=None,
        spawn: Spawn = plain_task,
    ):
        self.send, self.engine, self.playout, self.spawn = send, engine, playout, spawn
        self.clock_s = clock_s
        self.metrics = metrics
        self.current: Response | None = None
        self.history: list[dict] = []  # timings of every finished response (for the session log)
        self.on_call: Callable[[E.FunctionCall], None] | None = None  # each call as it is announced

    async def start(
        self,
        opts,
        t_trigger_s: float,
        previous_item_id: str | None,
        extra_timings: dict | None = None,
        speak: bool = True,
        metadata=None,
    ) -> Response | None:
        """Start a reply with `GenerateOptions` `opts` on the conversation's engine; None (and
        nothing sent) when the connection is closing. Its task exists before `response.created`
        is sent and waits for it, so no response is ever current without a task. A reply that
        may call tools announces its message item with its first text or audio (none if it only
        calls, as OpenAI does)."""
        r = Response(
            new_id("resp"),
            new_id("item"),
            t_trigger_s,
            speak=speak,
            metadata=metadata,
            previous_item_id=previous_item_id,
        )
        r.task = self.spawn(self._run(r, opts), f"response {r.id}")
        if r.task is None:
            return None
        tools = getattr(opts, "tools", None)
        if tools is not None and tools.callable():
            r.has_message, r.calls = False, ReplyCalls(self.send, r.id, self.on_call)
        self.current = r
        r.timings_ms.update(extra_timings or {})
        self.playout.start(r.id)
        item = r.item("in_progress") if r.has_message else None
        await self.send(E.ResponseStarted(r.id, item, previous_item_id, r.metadata))
        r.announced.set()
        return r

    async def _run(self, r: Response, opts) -> None:
        try:
            await r.announced.wait()  # every event of the response after its response.created
            await self.engine.start_reply(opts)
            while not r.closed:
                item = await self.engine.reply_step(self._deadline(r))
                if r.closed:  # cancelled while the step ran: drop it
                    return
                if item is None:
                    break
                await self._emit(r, *item)
            if not r.closed:  # the model ended the reply itself (completed) or a cap stopped it
                if self.engine.last_reply_end == "eos":
                    await self.finish(r, "completed")
                else:
                    await self.finish(r, "incomplete", reason="max_output_tokens")
        except asyncio.CancelledError:
            raise
        except Exception as e:  # the model failed: report it, close the response
            await self.send(E.Failed(e))
            if not r.closed:
                await self.finish(r, "failed", reason=type(e).__name__)

    def _deadline(self, r: Response) -> float:
        """When this reply's listener would run out of audio (first audio: soon after the turn)."""
        if r.t_first_audio_s is None:
            return r.t_trigger_s + FIRST_AUDIO_TARGET_S
        return r.t_first_audio_s + r.audio_ms / 1000.0 - PLAYOUT_MARGIN_S

    async def _emit(self, r: Response, text: str, wav: np.ndarray, calls: tuple = ()) -> None:
        now_ms = lambda: 1000.0 * (self.clock_s() - r.t_trigger_s)
        r.first_output.set()
        if (text or len(wav)) and not r.has_message:
            r.has_message = True
            await self.send(E.MessageStarted(r.id, r.item("in_progress"), r.previous_item_id))
        if text:
            r.timings_ms.setdefault("first_text_ms", now_ms())
            r.transcript.append(text)
            await self.send(E.ResponseText(r.id, r.item_id, text, r.speak))
        if len(wav):
            r.timings_ms.setdefault("first_audio_ms", now_ms())
            if r.t_first_audio_s is None:
                r.t_first_audio_s = self.clock_s()
                if self.metrics is not None:
                    self.metrics.first_audio.observe(r.t_first_audio_s - r.t_trigger_s)
            elif self.metrics is not None and self.clock_s() > r.t_first_audio_s + r.audio_ms / 1000.0:
                self.metrics.underruns.inc()  # what was sent before this had played out already
            r.audio_samples += len(wav)
            self.playout.write(r.id, wav)
            await self.send(E.ResponseAudio(r.id, r.item_id, wav))
        if calls and r.calls is not None:
            r.timings_ms.setdefault("first_call_ms", now_ms())
            if r.has_message and not r.message_closed:  # the speech stopped at the call: its item closes first
                r.message_closed = True
                await self.send(E.MessageEnded(r.id, r.item("completed"), "".join(r.transcript), r.speak))
            await r.calls.feed(calls, 1 if r.has_message else 0, r.item_id if r.has_message else r.previous_item_id)
            if not r.calls.open:
                r.timings_ms["calls_done_ms"] = now_ms()

    async def finish(self, r: Response, status: str, reason: str | None = None) -> None:
        """Close `r`: the done events, then `response.done`; idempotent."""
        if r.closed:
            return
        r.closed, r.status, r.reason = True, status, reason
        r.first_output.set()
        if status == "cancelled":  # capped (incomplete) replies still play to the end
            self.playout.stop(r.id)
        r.timings_ms["total_ms"] = 1000.0 * (self.clock_s() - r.t_trigger_s)
        r.timings_ms["audio_ms"] = r.audio_ms
        item_status = "completed" if status == "completed" or r.message_closed else "incomplete"
        calls: tuple = ()
        if r.calls is not None:  # calls still streaming end incomplete: no client runs them
            await r.calls.cut(r.item_id if r.has_message else r.previous_item_id)
            calls = tuple(r.calls.ended)
        await self.send(
            E.ResponseEnded(
                r.id,
                r.item(item_status) if r.has_message else None,
                "".join(r.transcript),
                r.speak,
                E.Outcome(status, reason),
                r.metadata,
                keep_audio_tail=status != "cancelled",
                calls=calls,
                closed=r.message_closed,
            )
        )
        await self.send(E.ResponseTimings(r.id, {k: round(v, 1) for k, v in r.timings_ms.items()}))
        self.history.append(dict(r.timings_ms))
        if self.current is r:
            self.current = None

    async def cancel(self, reason: str) -> Response | None:
        """Stop the live response at once (its task drops whatever it is computing)."""
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
