"""WebRTC `POST /v1/realtime/calls` with a real aiortc client peer and the real tiny model.

The client plays an espeak WAV on its microphone track, sends a small camera track, opens the
`oai-events` data channel and records the speech track it gets back (arrival time + RMS per
20 ms frame). Everything runs over 127.0.0.1 only, inside a private network namespace when the
tests run as root (ENV-NOTES §4)."""

from __future__ import annotations

import asyncio
import base64
import ctypes
import fractions
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import aiohttp
import av
import numpy as np
import pytest
import soundfile as sf

from streaming.gateway import media  # noqa: F401 - patches aioice to loopback-only host candidates
from aiortc import RTCConfiguration, RTCPeerConnection, RTCSessionDescription
from aiortc.mediastreams import AudioStreamTrack, MediaStreamError, VideoStreamTrack
from rtclient import start_server

SPEECH = Path(__file__).resolve().parent.parent / "assets" / "speech" / "hello_48k.wav"
MIC_RATE_HZ, MIC_FRAME = 48_000, 960
SPEECH_RMS = 1e-3  # received frames above this carry speech; Opus-coded silence is ~0
CLONE_NEWNET = 0x40000000


@pytest.fixture(scope="session", autouse=True)
def loopback_netns():
    """Move this pytest process into a network namespace that has only `lo` (root on Linux).
    Without it the tests still run: media.py limits ICE to 127.0.0.1 host candidates."""
    if sys.platform != "linux" or os.geteuid() != 0:
        yield False
        return
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.unshare(CLONE_NEWNET) != 0:
        print(f"unshare(CLONE_NEWNET) failed (errno {ctypes.get_errno()}): relying on loopback-only ICE")
        yield False
        return
    subprocess.run(["ip", "link", "set", "lo", "up"], check=True)
    yield True


@pytest.fixture(scope="session")
def hello_48k() -> np.ndarray:
    audio, rate = sf.read(str(SPEECH), dtype="int16")
    assert rate == MIC_RATE_HZ and audio.ndim == 1
    return audio


class MicTrack(AudioStreamTrack):
    """A microphone that says what it is given, then silence; paced in real time."""

    def __init__(self):
        super().__init__()
        self.pending = np.zeros(0, np.int16)
        self.t0, self.pts = None, 0

    def say(self, pcm: np.ndarray, lead_s: float = 0.0) -> None:
        self.pending = np.concatenate([self.pending, np.zeros(int(lead_s * MIC_RATE_HZ), np.int16), pcm])

    async def recv(self):
        if self.readyState != "live":
            raise MediaStreamError
        if self.t0 is None:
            self.t0 = time.time()
        else:
            self.pts += MIC_FRAME
            await asyncio.sleep(self.t0 + self.pts / MIC_RATE_HZ - time.time())
        chunk = np.zeros(MIC_FRAME, np.int16)
        n = min(MIC_FRAME, len(self.pending))
        chunk[:n], self.pending = self.pending[:n], self.pending[n:]
        frame = av.AudioFrame.from_ndarray(chunk.reshape(1, -1), format="s16", layout="mono")
        frame.sample_rate, frame.pts, frame.time_base = MIC_RATE_HZ, self.pts, fractions.Fraction(1, MIC_RATE_HZ)
        return frame


class Camera(VideoStreamTrack):
    """320x240 grey frames at 10 fps (VP8 on two CPUs stays cheap)."""

    async def recv(self):
        await asyncio.sleep(0.1)
        pts, time_base = await self.next_timestamp()
        frame = av.VideoFrame.from_ndarray(np.full((240, 320, 3), 128, np.uint8), format="rgb24")
        frame.pts, frame.time_base = pts, time_base
        return frame


class Client:
    """One aiortc peer: mic + camera out, speech in, events on a data channel."""

    def __init__(self, label="oai-events"):
        self.pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
        self.mic = MicTrack()
        self.pc.addTrack(self.mic)
        self.pc.addTrack(Camera())
        self.channel = self.pc.createDataChannel(label)
        self.events: asyncio.Queue = asyncio.Queue()
        self.seen: list[dict] = []
        self.frames: list[tuple[float, int, float]] = []  # (arrival monotonic s, pts, rms)
        self.channel.on("message", lambda m: self.events.put_nowait((time.monotonic(), json.loads(m))))
        self.pc.on("track", lambda t: asyncio.ensure_future(self._record(t)))

    async def _record(self, track):
        while True:
            try:
                f = await track.recv()
            except MediaStreamError:
                return
            x = f.to_ndarray().astype(np.float32) / 32768
            self.frames.append((time.monotonic(), f.pts, float(np.sqrt(np.mean(x * x)))))

    async def offer(self) -> str:
        await self.pc.setLocalDescription(await self.pc.createOffer())
        return self.pc.localDescription.sdp

    async def call(self, http, base: str, headers=None) -> aiohttp.ClientResponse:
        sdp = await self.offer()
        async with http.post(
            base + "/v1/realtime/calls", data=sdp, headers={"Content-Type": "application/sdp", **(headers or {})}
        ) as r:
            body = await r.text()
            if r.status == 201:
                assert r.content_type == "application/sdp"
                assert r.headers["Location"].startswith("/v1/realtime/calls/rtc_")
                await self.pc.setRemoteDescription(RTCSessionDescription(sdp=body, type="answer"))
            return r

    async def until(self, pred, timeout=60.0) -> tuple[float, dict]:
        async with asyncio.timeout(timeout):
            while True:
                t, ev = await self.events.get()
                self.seen.append(ev)
                if pred(ev):
                    return t, ev

    def selected_pair(self) -> tuple[str, str]:
        conn = self.pc.sctp.transport.transport._connection
        pair = conn._nominated[1]
        return pair.local_candidate.host, pair.remote_candidate.host


def call_of(srv):
    (conv,) = srv.app["conversations"]
    return conv.call


async def wait_freed(srv, timeout=10.0):
    async with asyncio.timeout(timeout):
        while srv.app["manager"].in_use or srv.app["conversations"]:
            await asyncio.sleep(0.05)


@pytest.mark.asyncio
async def test_voice_turn_over_webrtc(server, hello_48k, loopback_netns):
    c = Client()
    async with aiohttp.ClientSession() as http:
        r = await c.call(http, server.http)
        assert r.status == 201
    c.mic.say(hello_48k, lead_s=0.5)
    _, created = await c.until(lambda e: True)
    assert created["type"] == "session.created"
    c.channel.send(json.dumps({"type": "session.update", "session": {"omni": {"events": True}}}))  # [ext] timings
    _, done = await c.until(lambda e: e["type"] == "response.done")
    _, timings = await c.until(lambda e: e["type"] == "response.omni.timings")
    t = [e["type"] for e in c.seen]
    assert (
        t.index("input_audio_buffer.speech_started")
        < t.index("input_audio_buffer.speech_stopped")
        < t.index("response.created")
        < t.index("response.done")
    )
    assert "response.output_audio.delta" not in t  # audio rides the track
    resp = done["response"]
    assert resp["status"] in ("completed", "incomplete")  # random tiny model: may hit max_speech_s
    assert timings["response_id"] == resp["id"] and timings["timings"]["first_audio_ms"] > 0
    await asyncio.sleep(timings["timings"]["audio_ms"] / 1000 + 0.5)  # let the speech play out
    voiced = [f for f in c.frames if f[2] > SPEECH_RMS]
    assert len(voiced) >= 10, f"{len(voiced)} voiced frames of {len(c.frames)}"
    assert c.selected_pair() == ("127.0.0.1", "127.0.0.1")
    assert call_of(server).frames_in >= 2  # camera frames reached the conversation
    await c.pc.close()
    await wait_freed(server)


LONG_REPLY_MS = 3500  # a reply the user can cut into with a second or more of it left


@pytest.mark.asyncio
async def test_talking_over_a_playing_reply_silences_the_track(tiny_omni, hello_48k):
    """Real peers and model: the user talks over a reply that still plays, and the client hears
    no more of it than the packets already in flight; the track runs on. The random tiny model's
    replies are 1-7 s long, so the user talks until one is long enough to cut into. (The cut to
    the frame, while generating or playing, in virtual time: test_scenarios.py.)"""
    srv = await start_server(tiny_omni, max_reply_tokens=300, max_speech_s=60.0)
    c = Client()
    try:
        async with aiohttp.ClientSession() as http:
            assert (await c.call(http, srv.http)).status == 201
        await c.until(lambda e: e["type"] == "session.created")
        c.channel.send(json.dumps({"type": "session.update", "session": {"omni": {"events": True}}}))
        for _ in range(8):
            n0 = len(c.frames)  # this turn's reply starts after
            c.mic.say(hello_48k, lead_s=0.3)
            _, ev = await c.until(lambda e: e["type"] == "response.omni.timings")
            audio_ms = ev["timings"]["audio_ms"]
            if audio_ms >= LONG_REPLY_MS:
                break
            await asyncio.sleep(audio_ms / 1000 + 0.5)  # heard whole: no barge-in
        else:
            pytest.fail(f"no reply of {LONG_REPLY_MS} ms in 8 turns")
        async with asyncio.timeout(30):
            while sum(f[2] > SPEECH_RMS for f in c.frames[n0:]) < 5:  # the reply is audible
                await asyncio.sleep(0.02)
        c.mic.say(hello_48k)  # the user talks over it
        t_cut, _ = await c.until(lambda e: e["type"] == "input_audio_buffer.speech_started")
        t_next, _ = await c.until(lambda e: e["type"] == "response.created")  # the new turn's reply
        reply = [f for f in c.frames[n0:] if f[0] < t_next]
        voiced = [i for i, f in enumerate(reply) if f[2] > SPEECH_RMS]
        after = [f[2] > SPEECH_RMS for f in reply if f[0] > t_cut]
        assert len(after) >= 25, len(after)  # the track kept running
        # What arrives after the event is what was in flight: aiortc's receive jitter buffer
        # prefetches 4 packets and Opus framing adds one more; nothing later is speech.
        assert not any(after[12:]), after
        heard_ms = 20 * (voiced[-1] - voiced[0] + 1)
        assert heard_ms < audio_ms - 500, (heard_ms, audio_ms)  # the reply was cut short
        await c.pc.close()
        await wait_freed(srv)
    finally:
        await c.pc.close()
        await srv.runner.cleanup()


BAD = [
    ("application/sdp", "hello", 400, "invalid_sdp"),
    ("application/sdp", "", 400, "missing_sdp"),
    ("text/plain", "v=0\r\n", 400, "unsupported_content_type"),
    ("application/json", "{nope", 400, "invalid_json"),
    ("application/json", json.dumps({"type": "answer", "sdp": "v=0"}), 400, "invalid_value"),
    (
        "application/sdp",
        "v=0\r\no=- 1 1 IN IP4 0.0.0.0\r\ns=-\r\nt=0 0\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111\r\n",
        400,
        "invalid_sdp",
    ),
    # malformed bodies: never a 500 (a traceback), always a 4xx that names the problem
    ("application/sdp", b"v=0\r\n\xff\xfe\r\nm=audio", 400, "invalid_encoding"),
    ("application/sdp; charset=no-such-charset", "v=0\r\ns=-\r\n", 400, "invalid_sdp"),
    ("application/json", "[" * 100_000 + "]" * 100_000, 400, "invalid_json"),
    ("application/json", b'{"sdp": "\xff"}', 400, "invalid_encoding"),
    ("multipart/form-data; boundary=xyz", "--xyz\r\nno headers, no end", 400, "invalid_multipart"),
    ("multipart/form-data", "--a\r\n", 400, "invalid_multipart"),
]


@pytest.mark.asyncio
async def test_bad_offers_are_400_and_leak_nothing(server):
    async with aiohttp.ClientSession() as http:
        for ctype, body, status, code in BAD:
            async with http.post(server.http + "/v1/realtime/calls", data=body, headers={"Content-Type": ctype}) as r:
                assert r.status == status, (body[:40], await r.text())
                err = (await r.json())["error"]
                assert err["code"] == code and err["type"] == "invalid_request_error" and err["message"]
    assert server.app["manager"].in_use == 0 and not server.app["conversations"]


@pytest.mark.asyncio
async def test_server_full_auth_and_freed_after_close(tiny_omni):
    srv = await start_server(tiny_omni, max_sessions=1, api_key="s3cret")
    auth = {"Authorization": "Bearer s3cret"}
    first, second, third = Client(), Client(), Client(label="my-events")
    try:
        async with aiohttp.ClientSession() as http:
            assert (await second.call(http, srv.http)).status == 401
            assert (await first.call(http, srv.http, auth)).status == 201
            await first.until(lambda e: e["type"] == "session.created")
            busy = await second.call(http, srv.http, auth)
            assert busy.status == 503
            assert (await busy.json())["error"]["code"] == "server_busy"
            call = call_of(srv)
            await first.pc.close()  # the client hangs up
            await wait_freed(srv)
            assert call.task.done() and call.pc.connectionState == "closed"
            assert call.speaker.readyState == "ended"
            # The slot is free again; a JSON body and any channel label work too.
            sdp = await third.offer()
            async with http.post(
                srv.http + "/v1/realtime/calls", json={"type": "offer", "sdp": sdp}, headers=auth
            ) as r:
                assert r.status == 201, await r.text()
                await third.pc.setRemoteDescription(RTCSessionDescription(sdp=await r.text(), type="answer"))
            _, ev = await third.until(lambda e: True)
            assert ev["type"] == "session.created"
            third.channel.send(json.dumps({"type": "response.cancel"}))
            _, err = await third.until(lambda e: e["type"] == "error")
            assert err["error"]["code"] == "response_cancel_not_active"
            third.channel.close()  # closing the channel ends the call
            await wait_freed(srv)
    finally:
        for c in (first, second, third):
            await c.pc.close()
        await srv.runner.cleanup()


def fragments(text: str, max_bytes: int = 65536, mid: str = "m1") -> list[str]:
    """The page's `fragment` (web_client/transport_webrtc.js): UTF-8 bytes in base64 pieces."""
    raw = text.encode()
    piece = (max_bytes - 256) // 4 * 3
    count = -(-len(raw) // piece)
    return [
        json.dumps(
            {
                "type": "omni.fragment",
                "id": mid,
                "index": i,
                "count": count,
                "data": base64.b64encode(raw[i * piece : (i + 1) * piece]).decode(),
            }
        )
        for i in range(count)
    ]


@pytest.mark.asyncio
async def test_voice_clone_over_the_data_channel_in_fragments(server, loopback_netns):
    """A 400 KB clip is 530 KB of JSON, over aiortc's 64 KiB message limit: it goes in pieces, an
    event between two pieces is handled, and a piece out of order is a clear error, not a hang-up."""
    clip = (Path(__file__).resolve().parent.parent / "assets" / "speech" / "voice_ref.wav").read_bytes()
    update = json.dumps(
        {
            "type": "session.update",
            "session": {
                "audio": {
                    "output": {"omni_reference_audio": {"format": "wav", "data": base64.b64encode(clip).decode()}}
                },
                "instructions": "Réponds brièvement ✓",
            },
        }
    )  # non-ASCII: a piece may cut a character
    pieces = fragments(update)
    assert len(pieces) >= 9 and all(len(p) <= 65536 for p in pieces)
    c = Client()
    try:
        async with aiohttp.ClientSession() as http:
            assert (await c.call(http, server.http)).status == 201
        await c.until(lambda e: e["type"] == "session.created")
        c.channel.send(pieces[0])
        c.channel.send(pieces[2])  # out of order: the message is dropped
        _, err = await c.until(lambda e: e["type"] == "error")
        assert err["error"]["code"] == "fragment_out_of_order" and "expected piece 1" in err["error"]["message"]
        for i, p in enumerate(pieces):
            c.channel.send(p)
            if i == 1:  # a whole event between pieces
                c.channel.send(json.dumps({"type": "response.cancel"}))
        _, err = await c.until(lambda e: e["type"] in ("error", "session.updated"))
        assert err["error"]["code"] == "response_cancel_not_active", err
        _, ev = await c.until(lambda e: e["type"] in ("error", "session.updated"))
        assert ev["type"] == "session.updated", ev
        assert ev["session"]["audio"]["output"]["omni_reference_audio"]["size_bytes"] == len(clip)
        assert ev["session"]["instructions"] == "Réponds brièvement ✓"
        (conv,) = server.app["conversations"]
        ref = conv.state.ref_16k
        assert ref is not None and 7.5 * 16000 < len(ref) < 9.0 * 16000
    finally:
        await c.pc.close()
    await wait_freed(server)
