"""WebSocket transport: `/v1/realtime`, OpenAI Realtime JSON events in both directions.

One task group per connection: the reader (frames into the mailbox), the mailbox's owner task
(client events and the conversation's follow-ups, in order: the only one that changes its state),
the sender (one bounded queue, so events leave in the order they were made), and the reply task.
"""

from __future__ import annotations

import asyncio
import json
import logging

from aiohttp import WSMsgType, web

from ..playout import ClockPlayout
from .boundary import Supervisor
from .errors import CLOSE_GOING_AWAY, CLOSE_NORMAL, CLOSE_TRY_AGAIN_LATER, CapacityError, to_error_event
from .v45_inbound import session_classes
from .lifecycle import heartbeat, session_ended, session_started, watch_engine
from .mailbox import Mailbox
from .outbound import SendQueue, WireEvents

log = logging.getLogger("omni.gateway")
SEND_QUEUE = 512  # events; a client that stops reading stalls its own replies, nobody else's
_CLOSE = object()


async def realtime_ws(request: web.Request) -> web.StreamResponse:
    app = request.app
    settings, manager = app["settings"], app["manager"]
    protocols = [p for p in ("realtime",) if p in request.headers.get("Sec-WebSocket-Protocol", "")]
    # No permessage-deflate: it saves 26-30% of base64 PCM (what deflate wins back of base64's 4/3)
    # for about 1 ms of CPU per second of audio per session, and aiohttp sends big compressed
    # frames from a shielded task whose error nobody retrieves when the transport is closing.
    # Clients short of bandwidth have WebRTC (Opus: a sixteenth of PCM16's bytes) or G.711.
    ws = web.WebSocketResponse(
        max_msg_size=4 * settings.max_message_bytes,
        heartbeat=30,
        protocols=protocols + _key_protocols(request),
        compress=False,
    )
    await ws.prepare(request)
    try:
        lease = manager.acquire()
    except CapacityError as e:
        await ws.send_str(json.dumps(to_error_event(e)))
        await ws.close(code=CLOSE_TRY_AGAIN_LATER, message=b"server full")
        return ws
    queue: asyncio.Queue = SendQueue(SEND_QUEUE)

    async def send(event: dict) -> None:
        await queue.put(event)

    try:
        family = app["family"].key
        wire = WireEvents(send, family=family)  # the session's events -> OpenAI JSON + wire audio
        conv_class, inbound_class = session_classes(family)  # MiniCPM-o 2.6 or MiniCPM-V 4.5 sessions
        conv = conv_class(
            app["worker"],
            settings,
            wire,
            ClockPlayout(),
            app["vad"],
            metrics=app["metrics"],
            session_id=lease.session_id,
        )
        inbound = inbound_class(conv, settings.max_image_pixels, family)  # client events -> decoded session commands
    except CapacityError as e:  # every engine slot is taken (another gateway's sessions)
        manager.release(lease)
        await ws.send_str(json.dumps(to_error_event(e)))
        await ws.close(code=CLOSE_TRY_AGAIN_LATER, message=b"server full")
        return ws

    def close_for(reason: str) -> None:  # idle timeout, shutdown: after the events queued so far
        try:
            queue.put_nowait((_CLOSE, CLOSE_GOING_AWAY))
        except asyncio.QueueFull:  # a client that stopped reading: close without them
            asyncio.ensure_future(ws.close(code=CLOSE_GOING_AWAY))

    lease.close = close_for
    app["conversations"].add(conv)
    started = session_started(app, conv, "websocket")
    try:
        async with asyncio.TaskGroup() as tg:
            supervisor = Supervisor(tg, send, lambda code: queue.put((_CLOSE, code)))
            conv.spawn = supervisor.spawn  # replies, prefills, transcripts: in this group
            sender = tg.create_task(_sender(ws, queue))
            watcher = tg.create_task(watch_engine(conv, send, lambda code: queue.put((_CLOSE, code))))
            beat = tg.create_task(heartbeat(wire))
            await conv.start()
            mailbox = Mailbox(inbound, send, settings.max_message_bytes, state=conv.state)
            conv.post = mailbox.post  # the conversation's follow-ups: on its owner task
            reader = tg.create_task(_reader(ws, mailbox, lambda: manager.touch(lease)))
            code = await mailbox.run()  # the owner: every message, in order
            supervisor.closing = True  # from here on no reply or transcript starts
            reader.cancel()
            watcher.cancel()
            beat.cancel()
            await conv.close()
            supervisor.cancel_all()
            await queue.put((_CLOSE, code or CLOSE_NORMAL))  # a typed error's own close code
            await sender
    finally:
        await conv.close()
        app["conversations"].discard(conv)
        manager.release(lease)
        session_ended(app, conv, started)
        if not ws.closed:
            await ws.close()
    return ws


async def _reader(ws: web.WebSocketResponse, mailbox: Mailbox, touch) -> None:
    """Frames into the mailbox until the client closes (or sends a non-data frame)."""
    try:
        async for msg in ws:
            touch()
            if msg.type not in (WSMsgType.TEXT, WSMsgType.BINARY):  # UTF-8 JSON in binary frames too
                break
            await mailbox.message(msg.data)
    finally:
        mailbox.stop()


async def _sender(ws: web.WebSocketResponse, queue: asyncio.Queue) -> None:
    try:
        while True:
            event = await queue.get()
            if isinstance(event, tuple) or ws.closed:  # (_CLOSE, code): the last thing sent
                if not ws.closed:
                    await ws.close(code=event[1])
                return
            await ws.send_str(json.dumps(event))
    except ConnectionError:  # aiohttp's ClientConnectionResetError is one
        return  # the client vanished mid-send (an abrupt disconnect): the receive loop ends too


def _key_protocols(request: web.Request) -> list[str]:
    """Echo the browser auth subprotocol (`openai-insecure-api-key.<key>`) so the handshake completes."""
    offered = [p.strip() for p in request.headers.get("Sec-WebSocket-Protocol", "").split(",")]
    return [p for p in offered if p.startswith("openai-insecure-api-key.")][:1]
