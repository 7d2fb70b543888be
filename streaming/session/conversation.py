"""A realtime conversation: commands in (decoded by gateway/inbound.py), engine steps on the
worker, typed events out (session/events.py; gateway/outbound.py makes the wire of them).

Owns one connection's protocol state: the session config, the engine `Session` (context), listening
(VAD + chunker), the live response, barge-in rollback and the item ids the client sees. Runs on the
event loop only; transports call `handle` (via Inbound), `push_audio_16k` and `push_frame`."""
from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from ..errors import ProtocolError
from ..ids import new_id
from ..turn.vad import ServerVadConfig, SpeechStarted, SpeechStopped
from . import events as E
from .config import ResponseParams, ServerVad, SessionConfig
from .items import MAX_ITEMS_KEPT, ItemLog
from .listen import Listener
from .respond import Emit, Responder, reply_options
from .tasks import Spawn, plain_task
from .transcribe import Transcriber

MIN_COMMIT_MS = 100      # OpenAI rejects commits of less than 100 ms of audio
REPLY_GRACE_S = 0.3      # after a commit, how long a transcript waits for a response.create
MAX_TRANSCRIBED_MS = 300_000   # a longer turn's transcript covers its first 5 minutes (bounded memory)


@dataclass
class Turn:
    """The user turn being received."""
    item_id: str
    audio_ms: float = 0.0
    prefill_ms: list[float] = field(default_factory=list)
    audio_16k: list[np.ndarray] = field(default_factory=list)   # what the model heard (for its transcript)


class Conversation:
    def __init__(self, worker, settings, emit: Emit, playout, vad,
                 clock_s: Callable[[], float] = time.monotonic, metrics=None):
        """`emit`: where this session's events go (events.py; the gateway's outbound adapter).
        `metrics`: streaming.metrics.Metrics to report to (None: nothing reported)."""
        self.settings, self._emit = settings, emit
        self.items = ItemLog()                    # the items as last sent (retrieve, truncate)
        self.clock_s = clock_s
        vad_default = ServerVad(settings.vad_threshold, settings.vad_prefix_padding_ms,
                                  settings.vad_silence_duration_ms)
        self.config = SessionConfig(turn_detection=vad_default)
        self.engine = worker.open_session(settings.max_context_tokens)   # steps in order, others in parallel
        self.metrics = metrics
        self.transport: str | None = None         # "websocket" | "webrtc", set by the transport
        if metrics is not None:
            self.engine.on_step = metrics.observe_step
            metrics.replica_sessions.labels(self.engine.where).inc()
        self.listener = Listener(vad, self._vad_cfg(), self.config.omni.video, clock_s)
        # Background work goes through `spawn`; the connection sets it to its supervisor's.
        self.spawn: Spawn = plain_task
        self.transcriber = Transcriber(worker, self.send, clock_s, after=self._reply_underway,
                                       spawn=lambda coro, name: self.spawn(coro, name))
        self.responder = Responder(self.send, self.engine, playout, clock_s, metrics,
                                   spawn=lambda coro, name: self.spawn(coro, name))
        self.playout = playout
        self.turn: Turn | None = None
        self.last_item_id: str | None = None
        self.system_dirty = True
        self.pending_units: list = []             # (unit, its turn) heard while a reply plays without barge-in
        self.pending_rollback: tuple[str, float | None] | None = None   # (reply item id, heard ms or None: all)
        self.rollback_open = False                # the last reply can still be cut (nothing prefilled since)
        self.last_reply = None                    # respond.Response of the latest reply
        self.last_turn: Turn | None = None
        self.t_turn_end_s: float | None = None    # when VAD decided the user stopped
        self.ref_16k: np.ndarray | None = None
        self.session_id = new_id("sess")

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
        self.pending_units.clear()
        self.turn = None

    async def send(self, ev) -> None:
        """Every event of this session passes here: its items are kept for retrieval."""
        self.items.saw(ev)
        await self._emit(ev)

    def summary(self) -> dict:
        """For the session's end-of-life log line: replies and their first-audio median."""
        first = sorted(h["first_audio_ms"] for h in self.responder.history if "first_audio_ms" in h)
        return {"turns": len(self.responder.history),
                "first_audio_p50_ms": round(first[len(first) // 2]) if first else None,
                "engine": self.engine.where}

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
        old, new = self.config, ev.config
        if ev.ref_16k is not None:
            self.ref_16k = ev.ref_16k
        self.config = new
        if (new.instructions, new.voice, new.reference_audio) != (old.instructions, old.voice, old.reference_audio):
            self.system_dirty = True
        self.listener.configure(self._vad_cfg(), new.omni.video)   # no-op unless the VAD itself changed
        await self.send(E.SessionChanged(self.session_id, self.config))

    async def _on_input_audio_buffer_append(self, ev) -> None:
        await self.push_audio_16k(ev.samples_16k)

    async def _on_input_image_buffer_append(self, ev) -> None:
        if not self.config.omni.video or ev.image is None:
            raise ProtocolError("video_disabled", "camera frames are off for this session "
                                "(session.update {\"omni\": {\"video\": true}})", "image", ev.event_id)
        self.push_frame(ev.image)

    async def _on_input_audio_buffer_commit(self, ev) -> None:
        unit = self.listener.commit()
        total_ms = (self.turn.audio_ms if self.turn else 0.0) + (unit.duration_ms if unit else 0.0)
        if total_ms < MIN_COMMIT_MS:
            raise ProtocolError("input_audio_buffer_commit_empty",
                                f"buffer too small: a commit needs at least {MIN_COMMIT_MS} ms of audio, "
                                f"{total_ms:.0f} ms buffered", None, ev.event_id)
        if unit is not None:
            await self._prefill_unit(unit)
        await self._end_turn(create_response=False)

    async def _on_input_audio_buffer_clear(self, ev) -> None:
        self.listener.clear()
        await self.send(E.InputCleared())

    async def _on_conversation_item_create(self, ev) -> None:
        item = ev.item
        if item.role == "assistant":
            raise ProtocolError("unsupported_item", "assistant items cannot be added to a MiniCPM-o "
                                "context; send user or system items", "item.role", ev.event_id)
        if item.role == "system":
            text = "\n".join(p.text or "" for p in item.content)
            self.config = SessionConfig(**{**self.config.__dict__, "instructions": text})
            self.system_dirty = True
        else:                                     # ev.content: decoded by the gateway
            await self._ensure_system()
            await self._apply_rollback()
            await self.engine.prefill({"role": "user", "content": list(ev.content)}, self.settings.max_item_tokens)
        item_id = item.id or new_id("item")
        added = E.Item(item_id, item.role, tuple(E.Part(p.type, text=p.text) for p in item.content))
        await self.send(E.ItemAdded(added, self.last_item_id))
        await self.send(E.ItemDone(added, self.last_item_id))
        self.last_item_id = item_id

    async def _on_conversation_item_truncate(self, ev) -> None:
        r = self.last_reply
        if r is None or ev.item_id != r.item_id:
            known = self.items.get(ev.item_id)
            if known is None or known.role != "assistant":
                raise ProtocolError("item_not_found", f"no assistant audio item {ev.item_id!r} to truncate",
                                    "item_id", ev.event_id)
            # An older reply: already cut where the server heard it stop, or heard whole; the
            # context cannot change any more. Acknowledged, as OpenAI does (Pipecat ends its
            # session on any error here).
            await self.send(E.ItemTruncated(ev.item_id, ev.content_index, ev.audio_end_ms))
            return
        emitted_ms = r.audio_ms
        if ev.audio_end_ms > emitted_ms + 1:
            raise ProtocolError("invalid_value", f"audio_end_ms {ev.audio_end_ms} is beyond the "
                                f"{emitted_ms:.0f} ms of audio sent for this item", "audio_end_ms", ev.event_id)
        if self.responder.current is r:
            await self.responder.cancel("client_cancelled")
            r.cut_live = True
        self.playout.stop(r.id)                       # nothing after audio_end_ms is heard any more
        r.stopped = True
        if self.responder.current is not None or self.rollback_open:
            self.pending_rollback = (r.item_id, float(ev.audio_end_ms))
        # else too late: the next turn was added, and the context keeps the server's own cut
        await self.send(E.ItemTruncated(ev.item_id, ev.content_index, ev.audio_end_ms))

    async def _on_conversation_item_delete(self, ev) -> None:
        """The latest reply may be deleted (LiveKit does so when an interruption left nothing
        heard): the context goes back to before it. Older items are in the model's context for good."""
        r = self.last_reply
        if r is None or ev.item_id != r.item_id or not self.rollback_open:
            raise ProtocolError("unsupported_operation", "only the latest assistant item can be deleted, "
                                "before the next turn is added; older items are in the model's context "
                                "(start a new session, or truncate the reply)", "item_id", ev.event_id)
        if self.responder.current is r:
            await self.responder.cancel("client_cancelled")
        self.playout.stop(r.id)
        self.pending_rollback = (r.item_id, None)    # None: forget the whole reply
        self.items.drop(r.item_id)
        self.last_reply = None                       # gone: no cancel, truncate or barge-in touches it
        self.last_item_id = r.previous_item_id       # the item before it is the latest again
        await self.send(E.ItemDeleted(r.item_id))

    async def _on_conversation_item_retrieve(self, ev) -> None:
        item = self.items.get(ev.item_id)
        if item is None:
            # OpenAI's code: Pipecat ends its session on any other
            raise ProtocolError("item_retrieve_invalid_item_id", f"no item {ev.item_id!r} in this conversation "
                                f"(the last {MAX_ITEMS_KEPT} are kept)", "item_id", ev.event_id)
        await self.send(E.ItemRetrieved(item))

    async def _on_response_create(self, ev) -> None:
        if self.responder.current is not None:
            raise ProtocolError("conversation_already_has_active_response",
                                "a response is in progress; cancel it first", None, ev.event_id)
        if self.turn is not None:
            unit = self.listener.commit()
            if unit is not None:
                await self._prefill_unit(unit)
            await self._end_turn(create_response=False)
        await self._respond(ev.response)

    async def _on_response_cancel(self, ev) -> None:
        """Cancel the reply being generated, or stop one that is still playing out (WebRTC)."""
        r = self.last_reply
        if r is not None and r.cut_live and ev.response_id in (None, r.id):
            # OpenAI keeps generating after a truncate until the client cancels, so SDKs send
            # truncate + cancel; here the truncate already cancelled it: this cancel is that one.
            r.cut_live = False
            return
        if r is None or not self._reply_audible() or (ev.response_id and ev.response_id != r.id):
            # OpenAI's code and wording: Pipecat treats any other code as fatal
            raise ProtocolError("response_cancel_not_active", "Cancellation failed: no active response found",
                                "response_id" if ev.response_id else None, ev.event_id)
        await self._barge_in("client_cancelled")

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
        stopped = False                           # the turn ends once its last units are in
        for ev in events:
            if isinstance(ev, SpeechStarted):
                if stopped:
                    td = self.config.turn_detection
                    await self._end_turn(td is not None and td.create_response)
                    stopped = False
                await self._speech_started(ev)
            elif isinstance(ev, SpeechStopped):
                self.t_turn_end_s = self.clock_s()
                await self.send(E.SpeechEnded(self._turn().item_id, int(ev.audio_end_ms)))
                stopped = True
            else:
                await self._prefill_unit(ev.unit)
        if stopped and self.config.turn_detection is not None:
            await self._end_turn(self.config.turn_detection.create_response)

    async def _speech_started(self, ev: SpeechStarted) -> None:
        td = self.config.turn_detection
        if td is not None and td.interrupt_response and self._reply_audible():
            await self._barge_in("turn_detected")
        await self.send(E.SpeechBegan(self._turn().item_id, int(ev.audio_start_ms)))

    def _turn(self) -> Turn:
        if self.turn is None:
            self.turn = Turn(new_id("item"))
        return self.turn

    async def _prefill_unit(self, unit) -> None:
        turn = self._turn()
        turn.audio_ms += unit.duration_ms
        if self.config.transcription is not None and turn.audio_ms <= MAX_TRANSCRIBED_MS:
            turn.audio_16k.append(unit.audio_16k)
        if self.responder.current is not None:   # no barge-in: hear it after the reply
            self.pending_units.append((unit, turn))
            return
        await self._feed_unit(unit, turn)

    async def _feed_unit(self, unit, turn: Turn) -> None:
        """The unit into the model (its turn has counted it already)."""
        await self._ensure_system()
        await self._apply_rollback()
        t = time.perf_counter()
        await self.engine.append_unit(unit.audio_16k, unit.frame)
        seconds = time.perf_counter() - t
        turn.prefill_ms.append(1000 * seconds)
        if self.metrics is not None:
            self.metrics.unit_cost.observe(seconds)

    async def _end_turn(self, create_response: bool) -> None:
        turn = self.turn
        if turn is None:
            return
        self.turn = None
        await self.send(E.InputCommitted(turn.item_id, self.last_item_id))
        item = E.Item(turn.item_id, "user", (E.Part("input_audio"),))
        await self.send(E.ItemAdded(item, self.last_item_id))
        await self.send(E.ItemDone(item, self.last_item_id))
        self.last_item_id = turn.item_id
        self.last_turn = turn
        tr = self.config.transcription
        if tr is not None and turn.audio_16k:
            self.transcriber.submit(turn.item_id, np.concatenate(turn.audio_16k), tr.language)
            turn.audio_16k = []
        if create_response and self.responder.current is None:
            await self._respond(ResponseParams())

    # ---- replies and barge-in -----------------------------------------------------------------
    async def _respond(self, params) -> None:
        """A reply with the session's settings, overridden by `params` (a config.ResponseParams)."""
        await self._ensure_system()
        await self._apply_rollback()
        opts = reply_options(self.settings, self.config, params)
        turn, self.last_turn = self.last_turn, None
        timings = {}
        if turn is not None and turn.prefill_ms:
            timings["unit_prefill_max_ms"] = max(turn.prefill_ms)
            timings["unit_prefill_mean_ms"] = sum(turn.prefill_ms) / len(turn.prefill_ms)
        t0 = self.t_turn_end_s or self.clock_s()
        self.t_turn_end_s = None
        r = await self.responder.start(opts, t0, self.last_item_id, timings, speak=opts.generate_audio,
                                       metadata=params.metadata)
        self.last_reply, self.rollback_open = r, True
        self.last_item_id = r.item_id
        assert r.task is not None                # start() set it
        r.task.add_done_callback(lambda _t: self.engine.closed or self.spawn(self._after_response(),
                                                                              f"prefill after {r.id}"))

    async def _after_response(self) -> None:
        """Hear the units that arrived while the reply played (its errors reach the supervisor)."""
        units, self.pending_units = self.pending_units, []
        for unit, turn in units:
            if self.engine.closed:               # the connection went away with the reply
                return
            await self._feed_unit(unit, turn)

    async def _reply_underway(self) -> None:
        """A turn's transcript waits for its reply's first output (or REPLY_GRACE_S with no reply
        asked for: a client's response.create follows its commit), so it never takes the engine first."""
        if self.responder.current is None:
            await asyncio.sleep(REPLY_GRACE_S)
        r = self.responder.current
        if r is not None:
            await r.first_output.wait()

    def _reply_audible(self) -> bool:
        """The last reply is still being generated or its audio is still playing."""
        r = self.last_reply
        if r is None or not self.rollback_open or r.stopped:
            return False
        return self.responder.current is r or self.playout.played_ms(r.id) < r.audio_ms - 20

    async def _barge_in(self, reason: str) -> None:
        """Stop the reply the user talks over; the context will keep only what was heard (the
        server's playout position, replaced by the client's `audio_end_ms` if a truncate comes)."""
        r = self.last_reply
        if r is None:
            return
        heard_ms = self.playout.played_ms(r.id)       # read before the playout is stopped
        r.stopped = True
        await self.responder.cancel(reason)
        self.playout.stop(r.id)     # a reply that finished generating may still be playing (WebRTC queue)
        self.pending_rollback = (r.item_id, heard_ms)

    async def _apply_rollback(self) -> None:
        """Cut the context to the reply audio actually heard, before anything new is prefilled."""
        self.rollback_open = False
        if self.pending_rollback is None:
            return
        _, heard_ms = self.pending_rollback
        self.pending_rollback = None
        if heard_ms is None:
            await self.engine.forget_reply()
        else:
            await self.engine.interrupt_ms(heard_ms)

    async def _ensure_system(self) -> None:
        if not self.system_dirty:
            return
        self.system_dirty = False
        c = self.config
        ref = self.ref_16k if c.reference_audio is not None else None
        text = c.instructions or None
        mode = "audio_assistant"                 # default voice without a clip, cloned voice with one
        await self.engine.set_system(c.omni.seed, mode, ref, text)   # a seed applies from a context start
