"""A realtime conversation with MiniCPM-V 4.5: camera frames, typed turns, streamed text replies.

The family's own seam beside conversation.py (MiniCPM-o 2.6: audio units, VAD, speech): the same
surface for the transports (`handle`, `start`, `close`, `push_frame`, `state`, `spawn`, `post`,
`engine`, `summary`), chosen by the loaded family (gateway/v45_inbound.session_classes). Owns one
connection's V-4.5 conversation: its config and items, the frames that reach the model
(v45_frames.FrameGate: `video_fps` by capture time, held during a reply), the replies
(v45_respond.py) and the cut owed after a barge-in, applied before the next input as o-2.6 applies
its rollback. Any engine command but a reply step ends the session's reply, so nothing but reply
steps reaches the engine while a reply runs. Driven by the connection's one task only.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Callable

from omni.chat_v45 import preset
from omni.family import UnsupportedInput
from omni.processing.prompt import plain_text
from omni.session.v45 import ReplyOptions

from ..errors import MediaError, ProtocolError
from ..ids import new_id
from . import events as E
from .config import SessionConfig
from .conversation import Post, run_soon
from .items import ItemLog
from .state import ConnectionState, Phase
from .tasks import Spawn, plain_task
from .v45_frames import FrameGate
from .v45_respond import V45Responder, V45Response

log = logging.getLogger(__name__)

TITLE = "MiniCPM-V 4.5"


def unsupported(what: str, param: str | None, event_id: str | None) -> ProtocolError:
    """What this family has no meaning for: refused, and the session goes on."""
    return ProtocolError(
        "unsupported_for_model", f"{what}: {TITLE} reads camera frames and text and writes text", param, event_id
    )


class V45Conversation:
    def __init__(
        self,
        worker,
        settings,
        emit,
        playout=None,
        vad=None,
        clock_s: Callable[[], float] = time.monotonic,
        metrics=None,
        session_id: str | None = None,
        config: SessionConfig | None = None,
    ):
        """As conversation.Conversation (`playout` and `vad` unused: no audio either way);
        `config` the session's starting config (gateway/v45_config.initial_config)."""
        self.settings, self._emit, self.clock_s, self.metrics = settings, emit, clock_s, metrics
        self.items = ItemLog()
        start = config or SessionConfig(output_modalities=("text",), turn_detection=None)
        self.state = ConnectionState(start)
        self.engine = worker.open_session(settings.max_context_tokens)
        if metrics is not None:
            self.engine.on_step = metrics.observe_step
            metrics.replica_sessions.labels(self.engine.where).inc()
        self.transport: str | None = None
        self.spawn: Spawn = plain_task
        self.post: Post = run_soon
        self.frames = FrameGate()
        self.responder = V45Responder(self.send, self.engine, clock_s, spawn=lambda c, n: self.spawn(c, n))
        self.cut_owed: int | None = None  # characters of the latest reply the context keeps (a cut reply)
        self.latest: V45Response | None = None  # the latest reply: what a delete may take back
        self.cuttable = False  # nothing followed it: it can still be deleted
        self.heard = False  # a frame or an item reached the model: there is something to answer
        self.session_id = session_id or new_id("sess")

    @property
    def config(self) -> SessionConfig:
        return self.state.config

    # ---- lifecycle ----------------------------------------------------------------------------
    async def start(self) -> None:
        await self.send(E.SessionStarted(self.session_id, self.config))

    async def close(self) -> None:
        await self.responder.close()
        self.engine.close()
        self.frames.held.clear()  # frames go now, not when the cyclic GC finds this conversation
        if self.state.phase is not Phase.CLOSING:
            self.state.closing()

    async def send(self, ev) -> None:
        self.items.saw(ev)
        await self._emit(ev)

    def summary(self) -> dict:
        return {"turns": len(self.responder.history), "first_audio_p50_ms": None, "engine": self.engine.where}

    async def handle(self, ev) -> None:
        handler = getattr(self, "_on_" + ev.TYPE.replace(".", "_"), None)
        if handler is None:  # input_audio_buffer.*, conversation.item.truncate: audio has no meaning here
            raise unsupported(f"{ev.TYPE} (audio input)", "type", ev.event_id)
        await handler(ev)

    # ---- config -------------------------------------------------------------------------------
    async def _on_session_update(self, ev) -> None:
        old, new = self.config, ev.config  # the gateway refused what this family cannot honour
        self.state.config = new
        if (new.instructions, new.omni.seed) != (old.instructions, old.omni.seed):
            self.state.system_dirty = True
        await self.send(E.SessionChanged(self.session_id, self.config))

    # ---- camera -------------------------------------------------------------------------------
    def admit_frame(self, t_s: float) -> bool:
        """Whether a frame captured at `t_s` reaches the model (`video_fps`); asked before decoding."""
        return self.frames.admit(t_s, self.config.omni.video_fps)

    def refund_frame(self) -> None:
        """The frame admitted last was not a picture: the next frame takes its slot."""
        self.frames.refund()

    def push_frame(self, image) -> None:
        """A camera frame without its capture time (taken now), from the owner task."""
        self.post(lambda: self.add_frame(image, self.clock_s()), "camera frame")

    async def add_frame(self, image, t_s: float) -> None:
        """A WebRTC camera frame the track reader admitted (`admit_frame`), on the owner task."""
        if self.config.omni.video:
            await self._frame(image, t_s)

    async def _on_input_image_buffer_append(self, ev) -> None:
        if not self.config.omni.video or ev.image is None:
            raise ProtocolError(
                "video_disabled",
                'camera frames are off for this session (session.update {"omni": {"video": true}})',
                "image",
                ev.event_id,
            )
        await self._frame(ev.image, self.clock_s() if ev.t_s is None else ev.t_s)

    async def _frame(self, image, t_s: float) -> None:
        if self.responder.current is not None:  # a frame now would end the reply: after it
            self.frames.hold(image, t_s)
            return
        await self._before_input()
        await self._send_frame(image, t_s)

    async def _send_frame(self, image, t_s: float) -> None:
        pack = self.config.omni.video_pack_frames
        try:
            await self.engine.append_frame(image, t_s, pack)
        except UnsupportedInput:
            raise
        except (ValueError, TypeError) as e:  # out of capture order, a turn over 2 h
            raise MediaError("invalid_frame", str(e), "captured_ms") from None
        now = self.clock_s()
        self.heard = True
        self.frames.sent(now, pack)
        stats = self.frames.stats_due(now)
        if stats is not None and self.config.omni.events:
            await self.send(E.VideoStats(*stats))

    # ---- items --------------------------------------------------------------------------------
    async def _on_conversation_item_create(self, ev) -> None:
        item = ev.item
        if item.type != "message":
            raise unsupported("function calling is not available", "item.type", ev.event_id)
        if any(p.type == "input_audio" for p in item.content):
            raise unsupported("audio content", "item.content", ev.event_id)
        if self.responder.current is not None and item.role == "user":  # barge-in by a typed turn
            await self._cut("client_cancelled")
        if item.role == "system":
            text = "\n".join(p.text or "" for p in item.content)
            self.state.config = dataclasses.replace(self.config, instructions=text)
            self.state.system_dirty = True
        elif item.role == "user":
            await self._before_input()
            await self.engine.prefill({"role": "user", "content": list(ev.content)}, self.settings.max_item_tokens)
            self.heard = True
            self.frames.input_followed()  # the session flushed the open pack before the item
        else:  # an assistant's text: history the client adds
            if self.responder.current is not None:
                raise ProtocolError(
                    "conversation_already_has_active_response",
                    "a response is in progress; cancel it first",
                    None,
                    ev.event_id,
                )
            await self._before_input()
            text = plain_text("\n".join(p.text or "" for p in item.content))  # no stray media tokens
            await self.engine.prefill({"role": "assistant", "content": [text]}, self.settings.max_item_tokens)
            self.heard = True
            self.frames.input_followed()
        added = E.Item(item.id or new_id("item"), item.role, tuple(E.Part(p.type, text=p.text) for p in item.content))
        await self.send(E.ItemAdded(added, self.state.last_item_id))
        await self.send(E.ItemDone(added, self.state.last_item_id))
        self.state.last_item_id = added.id

    async def _on_conversation_item_delete(self, ev) -> None:
        r = self.latest
        if r is None or ev.item_id != r.item_id or not self.cuttable:
            raise ProtocolError(
                "unsupported_operation",
                "only the latest assistant item can be deleted, before the next input is added; older items "
                "are in the model's context",
                "item_id",
                ev.event_id,
            )
        if self.responder.current is r:
            await self.responder.cancel("client_cancelled")
        if r.in_engine:  # else it never began: nothing to forget
            await self.engine.forget_reply()
        self.cut_owed, self.cuttable, self.latest = None, False, None
        self.state.last_item_id = r.previous_item_id
        self.items.drop(r.item_id)
        await self.send(E.ItemDeleted(r.item_id))

    async def _on_conversation_item_retrieve(self, ev) -> None:
        await self.send(E.ItemRetrieved(self.items.retrieve(ev.item_id, ev.event_id)))

    # ---- replies ------------------------------------------------------------------------------
    async def _on_response_create(self, ev) -> None:
        p = ev.response
        if self.responder.current is not None:
            raise ProtocolError(
                "conversation_already_has_active_response",
                "a response is in progress; cancel it first",
                None,
                ev.event_id,
            )
        if p.output_modalities is not None and "audio" in p.output_modalities:
            raise unsupported("audio output is not available", "response.output_modalities", ev.event_id)
        if p.tools:
            raise unsupported("function calling is not available", "response.tools", ev.event_id)
        await self._before_input()  # new instructions start the context afresh: asked after them
        if not self.heard:
            raise ProtocolError(
                "input_missing",
                "nothing to answer yet: send camera frames (input_image_buffer.append) or a user item first",
                None,
                ev.event_id,
            )
        self.frames.input_followed()  # the reply flushes the open pack
        r = await self.responder.start(self._options(p), self.state.last_item_id, p.metadata)
        if r is None:  # the connection is closing
            return
        self.latest, self.cuttable, self.state.last_item_id = r, True, r.item_id
        assert r.task is not None
        r.task.add_done_callback(lambda _t: self.engine.closed or self.post(self._reply_over, f"after {r.id}"))

    def _options(self, p) -> ReplyOptions:
        c, thinking = self.config, self.config.omni.thinking
        limit = self.settings.max_reply_tokens
        cap = c.max_output_tokens if p.max_output_tokens is None else p.max_output_tokens
        if isinstance(cap, int):
            limit = min(limit, cap)
        t = p.temperature if p.temperature is not None else c.temperature
        sampling = None if t is None else dataclasses.replace(preset(True, thinking), temperature=t)
        return ReplyOptions(thinking, sampling, limit)

    async def _on_response_cancel(self, ev) -> None:
        r = self.responder.current
        if r is None or (ev.response_id and ev.response_id != r.id):
            raise ProtocolError(
                "response_cancel_not_active",
                "Cancellation failed: no active response found",
                "response_id" if ev.response_id else None,
                ev.event_id,
            )
        await self._cut("client_cancelled")

    async def _cut(self, reason: str) -> None:
        """Barge-in: the live reply ends now; the context keeps the text the client was given."""
        r = await self.responder.cancel(reason)
        if r is not None and r.in_engine:  # one cancelled before it began left no trace to cut
            self.cut_owed = r.chars

    async def _reply_over(self) -> None:
        """A reply's task ended: the frames held during it go to the model, in capture order."""
        if self.responder.current is None and self.frames.held and not self.engine.closed:
            await self._before_input()

    async def _before_input(self) -> None:
        """Before anything joins the context: the system prompt if it changed, the cut owed, and
        the frames held during the reply (captured before this input)."""
        st = self.state
        self.cuttable = False
        if st.system_dirty:
            st.system_dirty = False
            c = self.config
            text = plain_text(c.instructions or "") or None  # media tokens would mark absent media
            await self.engine.set_system(c.omni.seed, "default", None, text, "")
            self.cut_owed, self.heard = None, False  # a new conversation: nothing to cut, nothing heard
            self.frames.open_pack = 0
        if self.cut_owed is not None:
            chars, self.cut_owed = self.cut_owed, None
            await self.engine.cut_reply(chars)
        for h in self.frames.take_held():
            try:
                await self._send_frame(h.image, h.t_s)
            except MediaError as e:  # one bad frame: the others still go; the input goes on
                log.warning("held frame at %.3f s dropped: %s", h.t_s, e)
