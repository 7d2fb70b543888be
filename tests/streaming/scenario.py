"""Scenario tests of one conversation on virtual time (virtual_time.py): a scripted microphone and
client, a fake engine whose steps cost scripted time, and a record of what each side saw.

    engine = FakeEngine([speech(10.0, cost_s=0.4)])   # a 10 s reply, 0.5 s of audio per 0.4 s step
    sc = Scenario(engine)
    sc.speak(0.0, 2.0)                 # the user speaks 0-2 s...
    sc.speak(3.5, 4.5)                 # ...and again at 3.5 s, while the reply plays
    sc.run(until_s=8.0)
    sc.names(), sc.of(E.ResponseEnded), engine.calls      # what the client got, what the model was asked

The conversation is wired as a connection wires it (gateway/ws.py, webrtc.py): client events go
through the real parser, inbound adapter and mailbox (its one owner task), background work runs
under a Supervisor, microphone audio arrives as WebRTC hands it over (16 kHz, through the
mailbox). `LoudnessVad` stands in for Silero under the real turn detector, so every turn time is
exact. Tests read only `sc.events` / `sc.frames` and `engine.calls`, never the conversation.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from functools import partial

import numpy as np

import virtual_time
from streaming.gateway.boundary import Supervisor
from streaming.gateway.inbound import Inbound
from streaming.gateway.mailbox import Mailbox
from streaming.engines.handle import EngineHandle
from streaming.playout import ClockPlayout, QueuePlayout
from streaming.session.conversation import Conversation
from streaming.settings import ServerSettings
from streaming.turn.vad import FRAME_MS, FRAME_SAMPLES, VadState

MIC_RATE_HZ, MIC_CHUNK_S = 16_000, 0.1  # the microphone hands over 100 ms once it was recorded
SPEECH_LEVEL = 0.3  # the scripted microphone while the user speaks
REPLY_LEVEL = 0.1  # every sample of the fake engine's reply speech
# virtual seconds each engine command takes, unless a scenario says otherwise
COSTS = {"system": 0.01, "prefill": 0.05, "unit": 0.05, "rollback": 0.01, "forget": 0.01, "generate": 0.0}
METHOD = {
    "system": "set_system",
    "prefill": "prefill",
    "unit": "append_unit",
    "rollback": "interrupt_ms",
    "forget": "forget_reply",
    "generate": "start_reply",
    "reply_step": "reply_step",
}


# ---- the engine --------------------------------------------------------------------------
@dataclass(frozen=True)
class Step:
    """One reply step: what it yields, and the virtual seconds the model takes to make it."""

    text: str = ""
    audio_ms: float = 0.0
    cost_s: float = 0.1
    calls: tuple = ()  # omni.tools.calls.CallPiece: the reply's calls (after its speech)


@dataclass(frozen=True)
class Reply:
    steps: tuple[Step, ...]
    end: str = "eos"  # how the model ends it (EngineHandle.last_reply_end): eos, max_tokens


def speech(seconds: float, step_ms: float = 500.0, cost_s: float = 0.1, end: str = "eos") -> Reply:
    """A spoken reply of `seconds`, `step_ms` of audio (and a word) per step of `cost_s`."""
    return Reply(tuple(Step(f"w{i} ", step_ms, cost_s) for i in range(round(seconds * 1000 / step_ms))), end)


@dataclass(frozen=True)
class Call:
    t: float  # virtual time the engine started it
    op: str  # the EngineHandle method: interrupt_ms, append_unit, reply_step...
    arg: object = None  # what matters of its arguments (see FakeEngine._arg)


class FakeEngine:
    """The worker and its engine: real EngineHandles (their one-command-at-a-time lock, how a
    reply ends) over a scripted engine that plays `replies` in order. `calls`: every command in
    the order the engine ran it."""

    def __init__(self, replies: list[Reply] = (), costs: dict[str, float] | None = None) -> None:
        self.replies = list(replies)
        self.costs = {**COSTS, **(costs or {})}
        self.calls: list[Call] = []
        self._steps: Iterator[Step] = iter(())
        self._end = "eos"

    def open_session(self, max_cache_tokens: int | None = None, background: bool = False) -> EngineHandle:
        return EngineHandle(self._call, close=lambda: self._record("close"), where="fake")

    def ops(self, *names: str) -> list[Call]:
        return [c for c in self.calls if c.op in names]

    def _record(self, op: str, arg: object = None) -> None:
        self.calls.append(Call(asyncio.get_running_loop().time(), op, arg))

    async def _call(self, op: str, *args, deadline_s: float | None = None):
        if op == "reply_step":
            self._record("reply_step", deadline_s)
            step = next(self._steps, None)
            if step is None:
                return None, self._end
            await asyncio.sleep(step.cost_s)
            wav = np.full(round(step.audio_ms * 24), REPLY_LEVEL, np.float32)
            return (step.text, wav, step.calls) if step.calls else (step.text, wav)
        self._record(METHOD[op], _arg(op, args))
        if op == "generate":
            assert self.replies, "the scenario scripted no more replies"
            reply = self.replies.pop(0)
            self._steps, self._end = iter(reply.steps), reply.end
        await asyncio.sleep(self.costs[op])


def _arg(op: str, args: tuple) -> object:
    if op == "unit":
        return 1000 * len(args[0]) / MIC_RATE_HZ  # the unit's ms of audio
    if op == "system":
        return args[3]  # the instructions
    if op in ("prefill", "generate", "rollback"):
        return args[0]  # the message, GenerateOptions, heard ms
    return None


class LoudnessVad:
    """SileroVAD's interface, scripted: a 32-ms frame is speech (probability 1) when the
    microphone is not silent in it; the real TurnDetector decides turns from that."""

    def new_state(self, origin_ms: int = 0) -> VadState:
        return VadState(origin_ms=origin_ms)

    def push(self, state: VadState, samples_16k: np.ndarray) -> list[tuple[int, float]]:
        buf = np.concatenate([state.pending_16k, np.asarray(samples_16k, np.float32)])
        n = len(buf) // FRAME_SAMPLES
        state.pending_16k = buf[n * FRAME_SAMPLES :]
        frames = buf[: n * FRAME_SAMPLES].reshape(n, FRAME_SAMPLES)
        out = [(state.next_frame_ms + k * FRAME_MS, float(np.abs(f).max() > 1e-3)) for k, f in enumerate(frames)]
        state.frames_done += n
        return out


# ---- the scenario ------------------------------------------------------------------------
ClientEvent = dict | Callable[["Scenario"], dict]


class Scenario:
    """One connection over `transport` ("websocket": a ClockPlayout; "webrtc": a QueuePlayout
    drained by the real outgoing track, its frames recorded). Script it, `run` it, read it."""

    def __init__(self, engine: FakeEngine, transport: str = "websocket", settings: ServerSettings | None = None):
        assert transport in ("websocket", "webrtc")
        self.engine, self.transport = engine, transport
        self.settings = settings or ServerSettings()
        self._speech: list[tuple[float, float]] = []
        self._script: list[tuple[float, ClientEvent]] = []
        self.events: list[tuple[float, object]] = []  # (virtual s, session event or error event dict)
        self.frames: list[tuple[float, float]] = []  # webrtc: (virtual s, rms) of each 20 ms frame sent
        self.close_codes: list[int] = []  # a background error that ended the session

    # ---- script
    def speak(self, start_s: float, end_s: float) -> Scenario:
        """The user speaks from `start_s` to `end_s` (the microphone is silent otherwise)."""
        self._speech.append((start_s, end_s))
        return self

    def at(self, t_s: float, event: ClientEvent) -> Scenario:
        """The client sends `event` (a dict, or a function of what was seen so far that makes it)
        at `t_s`; a time off the microphone's 100 ms grid never ties with its audio."""
        self._script.append((t_s, event))
        return self

    def run(self, until_s: float) -> Scenario:
        virtual_time.run(self._main(until_s))
        return self

    # ---- read
    def of(self, *kinds: type) -> list:
        """The session events of these types, in order."""
        return [ev for _, ev in self.events if isinstance(ev, kinds)]

    def when(self, ev: object) -> float:
        """The virtual time the session emitted `ev`."""
        return self.events[self.index(ev)][0]

    def index(self, ev: object) -> int:
        """Where `ev` is in `events` (and `names()`)."""
        return next(i for i, (_, e) in enumerate(self.events) if e is ev)

    def names(self) -> list[str]:
        """Every event's type name in order ("error:<code>" for an error event)."""
        return [
            f"error:{ev['error'].get('code')}" if isinstance(ev, dict) else type(ev).__name__ for _, ev in self.events
        ]

    def errors(self) -> list[dict]:
        return [ev["error"] for _, ev in self.events if isinstance(ev, dict)]

    # ---- the connection
    async def _main(self, until_s: float) -> None:
        loop = asyncio.get_running_loop()
        playout = ClockPlayout(loop.time) if self.transport == "websocket" else QueuePlayout()
        conv = Conversation(self.engine, self.settings, self._emit, playout, LoudnessVad(), clock_s=loop.time)
        async with asyncio.TaskGroup() as tg:
            supervisor = Supervisor(tg, self._emit, self._close)
            conv.spawn = supervisor.spawn
            await conv.start()
            mailbox = Mailbox(
                Inbound(conv, self.settings.max_image_pixels),
                self._emit,
                self.settings.max_message_bytes,
                state=conv.state,
            )
            conv.post = mailbox.post
            owner = tg.create_task(mailbox.run())
            feeds = [tg.create_task(self._microphone(mailbox, conv)), tg.create_task(self._client(mailbox))]
            if self.transport == "webrtc":
                feeds.append(tg.create_task(self._track(playout)))
            await asyncio.sleep(until_s)
            for task in feeds:
                task.cancel()
            mailbox.stop()
            await owner
            await conv.close()
            supervisor.cancel_all()

    async def _emit(self, ev) -> None:
        self.events.append((asyncio.get_running_loop().time(), ev))

    async def _close(self, code: int) -> None:
        self.close_codes.append(code)

    def _mic_audio(self, k: int) -> np.ndarray:
        """The k-th 100 ms of the microphone."""
        n = round(MIC_CHUNK_S * MIC_RATE_HZ)
        x = np.zeros(n, np.float32)
        for start_s, end_s in self._speech:
            a, b = round(start_s * MIC_RATE_HZ) - k * n, round(end_s * MIC_RATE_HZ) - k * n
            x[max(a, 0) : max(min(b, n), 0)] = SPEECH_LEVEL
        return x

    async def _microphone(self, mailbox: Mailbox, conv: Conversation) -> None:
        loop, k = asyncio.get_running_loop(), 0
        while True:
            await asyncio.sleep(max(0.0, (k + 1) * MIC_CHUNK_S - loop.time()))
            await mailbox.media(partial(conv.push_audio_16k, self._mic_audio(k)))
            k += 1

    async def _client(self, mailbox: Mailbox) -> None:
        loop = asyncio.get_running_loop()
        for t_s, event in sorted(self._script, key=lambda s: s[0]):
            await asyncio.sleep(max(0.0, t_s - loop.time()))
            mailbox.message_nowait(json.dumps(event(self) if callable(event) else event))

    async def _track(self, playout: QueuePlayout) -> None:
        from streaming.gateway.media import PlayoutTrack  # aiortc: only the WebRTC scenarios

        loop = asyncio.get_running_loop()
        track = PlayoutTrack(playout, clock_s=loop.time)
        while True:
            frame = await track.recv()
            x = frame.to_ndarray().astype(np.float32) / 32768
            self.frames.append((loop.time(), float(np.sqrt(np.mean(x * x)))))
