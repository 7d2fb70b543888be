"""A realtime conversation: commands in (decoded by gateway/inbound.py), engine steps on the
worker, typed events out (session/events.py; gateway/outbound.py makes the wire of them).

Owns one connection's conversation: its state (state.py: the config, the phase, the latest reply,
the rollback, the item ids the client sees), the engine session (context) and listening (VAD +
chunker). Driven by the connection's one task (gateway/mailbox.py) only: `handle` (via Inbound),
`push_audio_16k`, `push_frame`, and the follow-up work it posts itself through `post`."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Coroutine
from typing import Any

import numpy as np

from ..errors import ProtocolError
from ..ids import new_id
from ..turn.vad import ServerVadConfig, SpeechStarted, SpeechStopped
from . import events as E
from .context import Context
from .cuts import Cuts
from .config import ResponseParams, ServerVad, SessionConfig
from .items import ItemLog
from .listen import Listener
from .respond import Emit, Responder, reply_options
from .state import ConnectionState, Phase, Turn
from .tasks import Spawn, plain_task
from .tools import ToolItems, reply_tools
from .transcribe import Transcriber

# Work the conversation asks its owner task to run after what is queued (gateway/mailbox.py)
Post = Callable[[Callable[[], Coroutine[Any, Any, None]], str], None]

MIN_COMMIT_MS = 100  # OpenAI rejects commits of less than 100 ms of audio
REPLY_GRACE_S = 0.3  # after a commit, how long a transcript waits for a response.create
MAX_TRANSCRIBED_MS = 300_000  # a longer turn's transcript covers its first 5 minutes (bounded memory)


def run_soon(work: Callable[[], Coroutine[Any, Any, None]], name: str) -> None:
    """The default `post`, for a conversation driven directly (benches, unit tests)."""
    plain_task(work(), name)


class Conversation:
    def __init__(
        self,
        worker,
        settings,
        emit: Emit,
        playout,
        vad,
        clock_s: Callable[[], float] = time.monotonic,
        metrics=None,
        session_id: str | None = None,
    ):
        """`emit`: where this session's events go (events.py; the gateway's outbound adapter).
        `metrics`: streaming.metrics.Metrics to report to (None: nothing reported). `session_id`:
        its admission lease's, so events and every log line name it the same way."""
        self.settings, self._emit = settings, emit
        self.items = ItemLog()  # the items as last sent (retrieve, truncate)
        self.clock_s = clock_s
        vad_default = ServerVad(
            settings.vad_threshold, settings.vad_prefix_padding_ms, settings.vad_silence_duration_ms
        )
        self.state = ConnectionState(SessionConfig(turn_detection=vad_default))
        self.engine = worker.open_session(settings.max_context_tokens)  # steps in order, others in parallel
        self.metrics = metrics
        self.context = Context(self.engine, self.state, settings.max_item_tokens, metrics)  # what the model heard
        self.transport: str | None = None  # "websocket" | "webrtc", set by the transport
        if metrics is not None:
            self.engine.on_step = metrics.observe_step
            metrics.replica_sessions.labels(self.engine.where).inc()
        self.listener = Listener(vad, self._vad_cfg(), self.config.omni.video, clock_s)
        # Background work goes through `spawn` (its supervisor's), follow-ups on this session's
        # state through `post` (its owner task's): the connection sets both.
        self.spawn: Spawn = plain_task
        self.post: Post = run_soon
        self.transcriber = Transcriber(
            worker, self.send, clock_s, after=self._reply_underway, spawn=lambda coro, name: self.spawn(coro, name)
        )
        self.responder = Responder(
            self.send, self.engine, playout, clock_s, metrics, spawn=lambda coro, name: self.spawn(coro, name)
        )
        self.playout = playout
        self.cuts = Cuts(self.state, self.responder, playout, self.items, self.send)
        self.tools = ToolItems()
        self.responder.on_call = self.tools.known  # a result may answer a call once it is announced
        self.session_id = session_id or new_id("sess")

    @property
    def config(self) -> SessionConfig:
        return self.state.config

    # ---- lifecycle ----------------------------------------------------------------------------
    async def start(self) -> None:
        await self.send(E.SessionStarted(self.session_id, self.config))

    async def close(self) -> None:
        await self.responder.close()
        await self.transcriber.close()
        self.engine.close()
        # Media goes now, not when the cyclic GC next finds this conversation (it refers to itself
        # through its parts): held frames are 6 MB each at 1080p.
        self.listener.chunker.video = False
        if self.state.phase is not Phase.CLOSING:
            self.state.closing()

    async def send(self, ev) -> None:
        """Every event of this session passes here: its items are kept for retrieval."""
        self.items.saw(ev)
        await self._emit(ev)

    def summary(self) -> dict:
        """For the session's end-of-life log line: replies and their first-audio median."""
        first = sorted(h["first_audio_ms"] for h in self.responder.history if "first_audio_ms" in h)
        return {
            "turns": len(self.responder.history),
            "first_audio_p50_ms": round(first[len(first) // 2]) if first else None,
            "engine": self.engine.where,
        }

    def _vad_cfg(self) -> ServerVadConfig | None:
        td = self.config.turn_detection
        if td is None:
            return None
        return ServerVadConfig(td.threshold, td.prefix_padding_ms, td.silence_duration_ms)

    # ---- dispatch -----------------------------------------------------------------------------
    async def handle(self, ev) -> None:
        handler = getattr(self, "_on_" + ev.TYPE.replace(".", "_"))
        await handler(ev)

    async def _on_session_update(self, ev) -> None:
        """`ev`: commands.UpdateSession (the gateway applied and decoded the update)."""
        st, old, new = self.state, self.config, ev.config
        if ev.ref_16k is not None:
            st.ref_16k = ev.ref_16k
        st.config = new
        if (new.instructions, new.voice, new.reference_audio) != (old.instructions, old.voice, old.reference_audio):
            st.system_dirty = True
        self.listener.configure(self._vad_cfg(), new.omni.video)  # no-op unless the VAD itself changed
        await self.send(E.SessionChanged(self.session_id, self.config))

    async def _on_input_audio_buffer_append(self, ev) -> None:
        await self.push_audio_16k(ev.samples_16k)

    async def _on_input_image_buffer_append(self, ev) -> None:
        if not self.config.omni.video or ev.image is None:
            raise ProtocolError(
                "video_disabled",
                'camera frames are off for this session (session.update {"omni": {"video": true}})',
                "image",
                ev.event_id,
            )
        self.push_frame(ev.image)

    async def _on_input_audio_buffer_commit(self, ev) -> None:
        unit, turn = self.listener.commit(), self.state.turn
        total_ms = (turn.audio_ms if turn else 0.0) + (unit.duration_ms if unit else 0.0)
        if total_ms < MIN_COMMIT_MS:
            raise ProtocolError(
                "input_audio_buffer_commit_empty",
                f"buffer too small: a commit needs at least {MIN_COMMIT_MS} ms of audio, {total_ms:.0f} ms buffered",
                None,
                ev.event_id,
            )
        if unit is not None:
            await self._prefill_unit(unit)
        await self._end_turn(create_response=False)

    async def _on_input_audio_buffer_clear(self, ev) -> None:
        self.listener.clear()
        await self.send(E.InputCleared())

    async def _on_conversation_item_create(self, ev) -> None:
        item = ev.item
        if item.type != "message" or item.role == "assistant":  # tools.py: results, calls, assistant text
            added, turn = self.tools.create(ev)
            if self.responder.current is not None or self.state.pending_units:
                self.state.pending_units.append(turn)  # after the reply (it may be making the call)
            else:
                await self.context.add_turn(turn)
        else:
            if item.role == "system":
                text = "\n".join(p.text or "" for p in item.content)
                self.state.config = SessionConfig(**{**self.config.__dict__, "instructions": text})
                self.state.system_dirty = True
            else:  # ev.content: decoded by the gateway
                await self.context.add_item(list(ev.content))
            added = E.Item(
                item.id or new_id("item"), item.role, tuple(E.Part(p.type, text=p.text) for p in item.content)
            )
        await self.send(E.ItemAdded(added, self.state.last_item_id))
        await self.send(E.ItemDone(added, self.state.last_item_id))
        self.state.last_item_id = added.id

    async def _on_conversation_item_truncate(self, ev) -> None:
        await self.cuts.truncate(ev)

    async def _on_conversation_item_delete(self, ev) -> None:
        if isinstance(self.items.get(ev.item_id), (E.FunctionCall, E.FunctionOutput)):
            # Out of the item list (a result can no longer answer the call); the model's context
            # keeps what it heard, as it does for any older item.
            self.tools.forget(ev.item_id)
            self.items.drop(ev.item_id)
            await self.send(E.ItemDeleted(ev.item_id))
            return
        await self.cuts.delete(ev)

    async def _on_conversation_item_retrieve(self, ev) -> None:
        await self.send(E.ItemRetrieved(self.items.retrieve(ev.item_id, ev.event_id)))

    async def _on_response_create(self, ev) -> None:
        if self.responder.current is not None:
            raise ProtocolError(
                "conversation_already_has_active_response",
                "a response is in progress; cancel it first",
                None,
                ev.event_id,
            )
        if self.state.turn is not None:
            unit = self.listener.commit()
            if unit is not None:
                await self._prefill_unit(unit)
            await self._end_turn(create_response=False)
        try:
            await self._respond(ev.response)
        except ProtocolError as e:  # a tool_choice the tools cannot meet
            e.event_id = ev.event_id
            raise

    async def _on_response_cancel(self, ev) -> None:
        await self.cuts.cancel(ev)

    # ---- listening ----------------------------------------------------------------------------
    def push_frame(self, image) -> None:
        if self.config.omni.video:
            self.listener.push_frame(image)

    async def push_audio_16k(self, samples: np.ndarray) -> None:
        if not len(samples):
            return
        # Inline, not on a thread: one onnxruntime call per push (~0.3 ms for 100 ms of audio) costs
        # less than the executor round trip it would need (measured by bench/gateway.py).
        events = self.listener.push_audio(samples)
        stopped = False  # the turn ends once its last units are in
        for ev in events:
            if isinstance(ev, SpeechStarted):
                if stopped:
                    td = self.config.turn_detection
                    await self._end_turn(td is not None and td.create_response)
                    stopped = False
                await self._speech_started(ev)
            elif isinstance(ev, SpeechStopped):
                self.state.turn_end_s = self.clock_s()
                await self.send(E.SpeechEnded(self._turn().item_id, int(ev.audio_end_ms)))
                stopped = True
            else:
                await self._prefill_unit(ev.unit)
        if stopped and self.config.turn_detection is not None:
            await self._end_turn(self.config.turn_detection.create_response)

    async def _speech_started(self, ev: SpeechStarted) -> None:
        td = self.config.turn_detection
        if td is not None and td.interrupt_response and self.cuts.audible():
            await self.cuts.barge_in("turn_detected")
        await self.send(E.SpeechBegan(self._turn().item_id, int(ev.audio_start_ms)))

    def _turn(self) -> Turn:
        st = self.state
        if st.turn is None:
            st.turn = Turn(new_id("item"))
        return st.turn

    async def _prefill_unit(self, unit) -> None:
        turn = self._turn()
        turn.audio_ms += unit.duration_ms
        if self.config.transcription is not None and turn.audio_ms <= MAX_TRANSCRIBED_MS:
            turn.audio_16k.append(unit.audio_16k)
        pending = self.state.pending_units
        if self.responder.current is not None or pending:  # no barge-in: heard after the reply, in order
            pending.append((unit, turn))
            return
        await self.context.add_unit(unit, turn)

    async def _end_turn(self, create_response: bool) -> None:
        st = self.state
        turn = st.turn
        if turn is None:
            return
        st.turn = None
        await self.send(E.InputCommitted(turn.item_id, st.last_item_id))
        item = E.Item(turn.item_id, "user", (E.Part("input_audio"),))
        await self.send(E.ItemAdded(item, st.last_item_id))
        await self.send(E.ItemDone(item, st.last_item_id))
        st.last_item_id = turn.item_id
        st.last_turn = turn
        tr = self.config.transcription
        if tr is not None and turn.audio_16k:
            self.transcriber.submit(turn.item_id, np.concatenate(turn.audio_16k), tr.language)
            turn.audio_16k = []
        if create_response and self.responder.current is None:
            await self._respond(ResponseParams())

    # ---- replies and barge-in -----------------------------------------------------------------
    async def _respond(self, params) -> None:
        """A reply with the session's settings, overridden by `params` (a config.ResponseParams)."""
        spec = reply_tools(self.config, params)
        await self.context.show_tools(spec)  # the system turn, a rollback, the reply's tools if they changed
        st = self.state
        opts = reply_options(self.settings, self.config, params, spec)
        turn, st.last_turn = st.last_turn, None
        timings = {}
        if turn is not None and turn.prefill_ms:
            timings["unit_prefill_max_ms"] = max(turn.prefill_ms)
            timings["unit_prefill_mean_ms"] = sum(turn.prefill_ms) / len(turn.prefill_ms)
        t0 = st.turn_end_s or self.clock_s()
        st.turn_end_s = None
        r = await self.responder.start(
            opts, t0, st.last_item_id, timings, speak=opts.generate_audio, metadata=params.metadata
        )
        if r is None:  # the connection is closing: no reply starts
            return
        st.reply_started(r)
        assert r.task is not None  # start() set it
        # the reply's task only reports; its end changes the state on the owner task
        r.task.add_done_callback(
            lambda _t: self.engine.closed or self.post(lambda: self._reply_over(r), f"after {r.id}")
        )

    async def _reply_over(self, r) -> None:
        st = self.state
        st.reply_over(r)
        if st.last_item_id == r.item_id:  # a reply with calls, or none at all: what the next item follows
            st.last_item_id = r.last_item_id or r.previous_item_id
            st.assistant_last = r.status == "completed"
        await self._hear_pending()

    async def _hear_pending(self) -> None:
        """The units heard (and tool items added) while the reply was made, one per posted step,
        in order, so the microphone's audio (and a barge-in) is handled between them."""
        pending = self.state.pending_units
        if not pending or self.engine.closed or self.responder.current is not None:
            return  # none, gone, or a new reply: heard after that one
        entry = pending.pop(0)
        if isinstance(entry, dict):  # a client's tool item (tools.py)
            await self.context.add_turn(entry)
        else:
            unit, turn = entry
            await self.context.add_unit(unit, turn)
        if pending:
            self.post(self._hear_pending, "heard during the reply")

    async def _reply_underway(self) -> None:
        """A turn's transcript waits for its reply's first output (or REPLY_GRACE_S with no reply
        asked for: a client's response.create follows its commit), so it never takes the engine first."""
        if self.responder.current is None:
            await asyncio.sleep(REPLY_GRACE_S)
        r = self.responder.current
        if r is not None:
            await r.first_output.wait()
