"""WebRTC transport: `POST /v1/realtime/calls` (SDP offer in, SDP answer out), then media on tracks
and the Realtime JSON events on a data channel.

One call = one peer connection, one session lease, one `Conversation` (`WireEvents(wire_audio=False)`: speech
leaves on the audio track, so there are no `response.output_audio.delta` events). One task group
per call: the event sender (bounded queue -> data channel), the owner (mailbox.py: data-channel
messages, microphone audio and camera frames reach the conversation there, one at a time), the
microphone listener and the camera sampler (track readers that feed the mailbox). The call
ends, and frees everything, when the peer connection fails or closes, the data channel closes,
the lease idles out, or the server shuts down. Does not own: auth (server middleware), ICE
candidate policy and frame conversion (media.py).
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from functools import partial

from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError
from aiortc import RTCConfiguration, RTCPeerConnection, RTCSessionDescription
from aiortc.mediastreams import MediaStreamError

from ..playout import QueuePlayout
from ..session.conversation import Conversation
from .boundary import Supervisor
from .codecs import MODEL_INPUT_RATE_HZ, StreamResampler
from .errors import CapacityError, OmniError
from .fragments import Reassembler
from .outbound import SendQueue, WireEvents
from .v45_inbound import session_classes
from .v45_media import V45CallConversation, v45_reader
from .lifecycle import heartbeat, session_ended, session_started, watch_engine
from .mailbox import Mailbox
from .media import PlayoutTrack, frame_to_mono, loopback_ice, loopback_only
from .protocol import new_id, parse_client_event

log = logging.getLogger("omni.gateway")
SEND_QUEUE = 512  # events, as on the WebSocket
EVENTS_LABEL = "oai-events"  # OpenAI's label; any client label is accepted
CONNECT_TIMEOUT_S = 20.0  # answered but never connected: free the slot
CHANNEL_WAIT_S = 2.0  # then open the events channel ourselves
MIC_SILENCE_S = 2.0  # no microphone packet this long after the first: the peer hung up
MIC_FIRST_S = 5.0  # connected, yet no first microphone packet in this long: gone too
FRAME_INTERVAL_S = 0.5  # camera: ~2 frames/s reach the model (it joins ~1 per 1-s unit)
CALLS_PATH = "/v1/realtime/calls"
_HANG_UP = object()


class BadOffer(Exception):
    """The signalling request is unusable: HTTP 400 with an OpenAI-shaped error body."""

    def __init__(self, code: str, message: str):
        super().__init__(message)
        self.code, self.message = code, message


def _error_response(status: int, err_type: str, code: str, message: str) -> web.Response:
    return web.json_response({"error": {"type": err_type, "code": code, "message": message}}, status=status)


async def post_call(request: web.Request) -> web.Response:
    app = request.app
    try:
        offer, session = await _read_offer(request)
    except BadOffer as e:
        return _error_response(400, "invalid_request_error", e.code, e.message)
    try:
        lease = app["manager"].acquire()
    except CapacityError as e:
        return _error_response(503, e.error_type, e.code, e.message)
    try:
        call = Call(app, lease)
    except CapacityError as e:  # every engine slot is taken (another gateway's sessions)
        app["manager"].release(lease)
        return _error_response(503, e.error_type, e.code, e.message)
    try:
        answer = await call.negotiate(offer, session)
    except (BadOffer, OmniError) as e:
        await call.abort()
        err_type = getattr(e, "error_type", "invalid_request_error")
        return _error_response(400, err_type, e.code, e.message)
    except BaseException:
        await call.abort()
        raise
    call.start()
    return web.Response(
        status=201, text=answer, content_type="application/sdp", headers={"Location": f"{CALLS_PATH}/{call.id}"}
    )


async def _read_offer(request: web.Request) -> tuple[str, dict | None]:
    """The SDP offer and an optional session object, from `application/sdp`, JSON
    (`{"sdp", "type": "offer", "session"?}`) or multipart (`sdp`, `session` fields, as OpenAI)."""
    ctype = request.content_type
    session = None
    if ctype == "application/sdp":
        sdp = _utf8(await _body(request), "the SDP offer")  # whatever charset it declares: SDP is UTF-8
    elif ctype == "application/json":
        body = _json(_utf8(await _body(request), "the JSON body"), "the body")
        if not isinstance(body, dict):
            raise BadOffer("invalid_json", 'the JSON body must be an object {"type": "offer", "sdp": ...}')
        if body.get("type", "offer") != "offer":
            raise BadOffer("invalid_value", f"'type' must be \"offer\", got {body.get('type')!r}")
        sdp, session = body.get("sdp"), body.get("session")
    elif ctype == "multipart/form-data":
        try:
            form = await request.post()
            sdp, session = _form_text(form.get("sdp")), _form_text(form.get("session"))
        except (ValueError, LookupError, AssertionError, HttpProcessingError, web.HTTPException) as e:
            # aiohttp's multipart reader raises these for broken boundaries, parts and charsets
            raise BadOffer("invalid_multipart", f"the multipart body cannot be read: {e or type(e).__name__}") from None
        if session is not None:
            session = _json(session, "the 'session' field")
    else:
        raise BadOffer(
            "unsupported_content_type",
            f"send the SDP offer as application/sdp (or JSON / "
            f"multipart with an 'sdp' field), not {ctype or 'no content type'!r}",
        )
    if not isinstance(sdp, str) or not sdp.strip():
        raise BadOffer("missing_sdp", "the request carries no SDP offer")
    if not sdp.lstrip().startswith("v=0") or "\nm=" not in sdp:
        raise BadOffer("invalid_sdp", "the body is not an SDP offer (it must start with 'v=0' and have m= lines)")
    if session is not None and not isinstance(session, dict):
        raise BadOffer("invalid_type", "'session' must be an object")
    return sdp, session


def _form_text(v) -> str | None:
    if v is None or isinstance(v, str):
        return v
    return _utf8(v.file.read(), "a file part")


async def _body(request: web.Request) -> bytes:
    try:
        return await request.read()  # at most client_max_size (max_message_bytes)
    except web.HTTPRequestEntityTooLarge:
        raise
    except (ValueError, ConnectionError) as e:
        raise BadOffer("invalid_body", f"the body cannot be read: {e}") from None


def _utf8(data: bytes, what: str) -> str:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        raise BadOffer("invalid_encoding", f"{what} is not UTF-8") from None


def _json(text: str, what: str):
    try:
        return json.loads(text)
    except ValueError as e:
        raise BadOffer("invalid_json", f"{what} is not valid JSON: {e}") from None
    except RecursionError:
        raise BadOffer("invalid_json", f"{what} is nested too deeply") from None


class CallConversation(Conversation):
    """A conversation whose `close()` (e.g. at server shutdown) also hangs up its call."""

    call: "Call"

    async def close(self) -> None:
        await super().close()
        await self.call.hangup()


class Call:
    def __init__(self, app: web.Application, lease, clock_s=time.monotonic):
        self.app, self.lease, self.clock_s = app, lease, clock_s
        self.settings, self.manager = app["settings"], app["manager"]
        self.id = new_id("rtc")
        self.queue: asyncio.Queue = SendQueue(SEND_QUEUE)
        self.fragments = Reassembler(self.settings.max_message_bytes)  # pieces of messages over 64 KiB
        self.playout = QueuePlayout()
        self.speaker = PlayoutTrack(self.playout)
        family = app["family"].key
        self.wire = WireEvents(self.send, wire_audio=False, family=family)  # speech goes on the track
        self.v45 = family == "v-4.5"  # MiniCPM-V 4.5: camera and text (v45_media.py)
        self.conv = (V45CallConversation if self.v45 else CallConversation)(
            app["worker"],
            self.settings,
            self.wire,
            self.playout,
            app["vad"],
            metrics=app["metrics"],
            session_id=lease.session_id,
        )  # first: CapacityError
        self.conv.call = self
        self.inbound = session_classes(family)[1](self.conv, self.settings.max_image_pixels, family)
        # the one task that changes the conversation: data-channel messages, mic and camera, in order
        self.mailbox = Mailbox(
            self.inbound, self.send, self.settings.max_message_bytes, self.fragments, self.conv.state
        )
        self.conv.post = self.mailbox.post
        self.started_s: float | None = None
        self.pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))  # default = a STUN server
        self.channel = None
        self.channel_ready, self.connected, self.ended = asyncio.Event(), asyncio.Event(), asyncio.Event()
        self.tracks_in: list = []
        self.frames_in = 0  # camera frames passed to the conversation
        self.offers_data = False
        self.task: asyncio.Task | None = None
        lease.close = lambda reason: self.ended.set()
        app["conversations"].add(self.conv)
        self.pc.on("datachannel", self._use_channel)
        self.pc.on("track", self.tracks_in.append)
        self.pc.on("connectionstatechange", self._on_state)

    async def send(self, event: dict) -> None:
        await self.queue.put(event)

    # ---- signalling ---------------------------------------------------------------------------
    async def negotiate(self, offer: str, session: dict | None) -> str:
        offer, n_candidates = loopback_only(offer) if loopback_ice() else (offer, -1)
        if n_candidates == 0:
            raise BadOffer(
                "invalid_sdp",
                "the offer has no 127.0.0.1 ICE candidate: gather all candidates "
                "before POSTing (no trickle ICE) and allow loopback",
            )
        if "\nm=audio" not in offer and not self.v45:  # MiniCPM-V 4.5: camera and events only will do
            raise BadOffer("invalid_sdp", "the offer needs an audio m-line (microphone in, speech out)")
        self.offers_data = "\nm=application" in offer
        try:
            await self.pc.setRemoteDescription(RTCSessionDescription(sdp=offer, type="offer"))
        except Exception as e:  # noqa: BLE001 - aiortc raises many kinds on a bad offer
            raise BadOffer("invalid_sdp", f"the SDP offer was rejected: {type(e).__name__}: {e}") from None
        speaker_attached = False
        for t in self.pc.getTransceivers():  # answer on the offered m-lines
            if t.kind == "audio" and not speaker_attached:
                t.sender.replaceTrack(self.speaker)
                t.direction, speaker_attached = "sendrecv", True
            else:
                t.direction = "recvonly"
        await self.conv.start()
        if session is not None:
            await self.inbound.handle(parse_client_event(json.dumps({"type": "session.update", "session": session})))
        await self.pc.setLocalDescription(await self.pc.createAnswer())  # gathers ICE fully
        return self.pc.localDescription.sdp

    def start(self) -> None:
        self.started_s = session_started(self.app, self.conv, "webrtc")
        self.task = asyncio.create_task(self._run(), name=f"webrtc call {self.id}")

    async def hangup(self) -> None:
        self.ended.set()
        if self.task is not None and self.task is not asyncio.current_task():
            await asyncio.gather(self.task, return_exceptions=True)

    async def abort(self) -> None:
        """Free a call that never started (bad offer)."""
        await self._free()

    # ---- the call -----------------------------------------------------------------------------
    async def _run(self) -> None:
        try:
            async with asyncio.TaskGroup() as tg:
                supervisor = Supervisor(tg, self.send, lambda code: self.queue.put(_HANG_UP))
                self.conv.spawn = supervisor.spawn  # replies, prefills, transcripts: in this group
                tasks = [
                    tg.create_task(self._sender()),
                    tg.create_task(self._owner()),
                    tg.create_task(watch_engine(self.conv, self.send, lambda code: self.queue.put(_HANG_UP))),
                    tg.create_task(heartbeat(self.wire)),
                ]
                for track in self.tracks_in:
                    reader = self._listen if track.kind == "audio" else self._watch
                    tasks.append(tg.create_task(v45_reader(self, track) if self.v45 else reader(track)))
                await self._await_connection()
                await self.ended.wait()
                supervisor.closing = True  # from here on no reply or transcript starts
                for t in tasks:
                    t.cancel()
                await self.conv.close()  # its replies and transcripts end before the group
                supervisor.cancel_all()
        except Exception:  # noqa: BLE001 - a broken call must not outlive its resources
            log.exception("session %s (webrtc call %s) failed", self.conv.session_id, self.id)
        finally:
            await self._free()

    async def _await_connection(self) -> None:
        try:
            async with asyncio.timeout(CONNECT_TIMEOUT_S):
                await self.connected.wait()
        except TimeoutError:
            log.info("session %s (webrtc call %s) never connected", self.conv.session_id, self.id)
            self.ended.set()
            return
        if not self.offers_data:
            self.channel_ready.set()  # no data channel: events have nowhere to go
        elif self.channel is None:
            try:
                async with asyncio.timeout(CHANNEL_WAIT_S):
                    await self.channel_ready.wait()
            except TimeoutError:  # the client offered SCTP but opened no channel
                self._use_channel(self.pc.createDataChannel(EVENTS_LABEL))

    async def _free(self) -> None:
        self.ended.set()
        self.speaker.stop()
        for track in self.tracks_in:
            track.stop()
        await self.pc.close()
        await self.conv.close()
        self.app["conversations"].discard(self.conv)
        if self.started_s is not None:
            session_ended(self.app, self.conv, self.started_s)
            self.started_s = None
        self.manager.release(self.lease)  # last: a free slot means a fully freed call

    def _on_state(self) -> None:
        state = self.pc.connectionState
        if state == "connected":
            self.connected.set()
        elif state in ("failed", "closed"):
            self.ended.set()

    def _use_channel(self, channel) -> None:
        if self.channel is not None:  # one events channel; later ones are ignored
            return
        self.channel = channel
        channel.on("message", self._on_message)
        channel.on("close", self.ended.set)
        if channel.readyState == "open":
            self.channel_ready.set()
        else:
            channel.on("open", self.channel_ready.set)

    async def _sender(self) -> None:
        await self.channel_ready.wait()
        while True:
            event = await self.queue.get()
            if event is _HANG_UP:
                self.ended.set()
                return
            if self.channel is None:
                continue
            if self.channel.readyState != "open":
                self.ended.set()
                return
            self.channel.send(json.dumps(event))

    async def _owner(self) -> None:
        if await self.mailbox.run() is not None:  # auth / capacity / model error: end the call
            await self.queue.put(_HANG_UP)  # after the error event

    def _on_message(self, raw) -> None:
        self.manager.touch(self.lease)
        self.mailbox.message_nowait(raw)

    async def _listen(self, track) -> None:
        """Microphone: decoded frames (48 kHz stereo from Opus) -> mono -> 16 kHz -> the conversation."""
        resampler = None
        await self.connected.wait()  # ICE may take a while; silence counts from here
        wait_s = MIC_FIRST_S
        while True:
            try:
                frame = await asyncio.wait_for(track.recv(), wait_s)
            except MediaStreamError:
                return
            except TimeoutError:
                # A browser that closes its tab sends nothing more, not even a DTLS or SCTP goodbye,
                # and ICE consent would take 30 s to notice. A live microphone, muted or not, sends
                # a packet every 20 ms: this long without one is a hang-up.
                log.info("session %s: no microphone audio for %.0f s: the peer is gone", self.conv.session_id, wait_s)
                self.ended.set()
                return
            wait_s = MIC_SILENCE_S
            self.manager.touch(self.lease)
            if resampler is None or resampler.in_rate_hz != frame.sample_rate:
                resampler = StreamResampler(frame.sample_rate, MODEL_INPUT_RATE_HZ)
            samples = resampler.push(frame_to_mono(frame))
            await self.mailbox.media(partial(self.conv.push_audio_16k, samples))  # pyright: ignore[reportAttributeAccessIssue] - o-2.6 only

    async def _watch(self, track) -> None:
        """Camera: the newest frame at most every FRAME_INTERVAL_S, converted off the loop."""
        loop = asyncio.get_running_loop()
        last_s = float("-inf")
        while True:
            try:
                frame = await track.recv()
            except MediaStreamError:
                return
            now = self.clock_s()
            if now - last_s < FRAME_INTERVAL_S or not self.conv.config.omni.video:  # nothing to convert
                continue
            last_s = now
            image = await loop.run_in_executor(None, frame.to_image)
            await self.mailbox.media(partial(self._frame, image))
            self.frames_in += 1

    async def _frame(self, image) -> None:
        self.conv.push_frame(image)
