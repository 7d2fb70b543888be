"""The OpenAI Agents SDK's stock RealtimeRunner + RealtimeAgent (unchanged, pointed at our /v1)
holds a conversation: a server-VAD turn, manual turns, an interruption, a cancel and a text turn,
each answered with speech, without one error event from the session."""

from __future__ import annotations

import asyncio
import contextlib
from collections import defaultdict

import json
from typing import Annotated, Literal

import numpy as np
import pydantic
import pytest
from pydantic import Field

from clientaudio import frames, pcm16_24k
from tooltest import checked_calls

from agents import function_tool
from agents.realtime import RealtimeAgent, RealtimeRunner, RealtimeSession
from agents.realtime.model_inputs import RealtimeModelSendRawMessage

TIMEOUT_S = 30  # generous: only there so a broken server fails the test instead of hanging it


class Client:
    """One RealtimeSession and what it saw, in order: the server's raw events and the SDK's own
    `audio` events (logged as {"type": "audio", "response_id"}), the PCM each response delivered
    through RealtimeAudio events, and every RealtimeError (server `error` events and server events
    the SDK's pydantic types rejected both arrive as one)."""

    def __init__(self, session: RealtimeSession):
        self.session = session
        self.log: list[dict] = []
        self.audio: dict[str, bytearray] = defaultdict(bytearray)
        self.errors: list = []
        self.ended = False  # the SDK's event stream stopped (the connection closed)
        self._changed = asyncio.Condition()
        self._task = asyncio.create_task(self._consume())

    async def _consume(self) -> None:
        try:
            async for ev in self.session:
                if ev.type == "error":
                    self.errors.append(ev.error)
                elif ev.type == "audio":
                    self.audio[ev.audio.response_id].extend(ev.audio.data)
                    self.log.append({"type": "audio", "response_id": ev.audio.response_id})
                elif ev.type == "raw_model_event" and ev.data.type == "raw_server_event":
                    self.log.append(ev.data.data)
                elif ev.type in ("tool_start", "tool_end"):
                    self.log.append({"type": ev.type, "tool": ev.tool.name, "output": getattr(ev, "output", None)})
                else:
                    continue
                await self._notify()
        except Exception as e:  # the SDK re-raises transport/handler exceptions from the iterator
            self.errors.append(e)
        finally:
            self.ended = True
            await self._notify()

    async def _notify(self) -> None:
        async with self._changed:
            self._changed.notify_all()

    def mark(self) -> int:
        return len(self.log)

    def check(self) -> None:
        """Fail at the first error, naming it, rather than at a later timeout it causes."""
        if self.errors:
            pytest.fail(f"error events: {[describe(e) for e in self.errors]}\nserver events: {self._types()}")

    def _types(self) -> list[str]:
        """The server's event types, the per-chunk deltas left out."""
        return [e["type"] for e in self.log if e["type"] != "audio" and not e["type"].endswith("delta")]

    async def wait(self, type_: str, since: int) -> dict:
        """The first event of this type logged at or after `since`."""

        def found():
            return next((e for e in self.log[since:] if e["type"] == type_), None)

        async with self._changed:
            try:
                await asyncio.wait_for(self._changed.wait_for(lambda: found() or self.errors or self.ended), TIMEOUT_S)
            except TimeoutError:
                pytest.fail(f"no {type_} in {TIMEOUT_S} s; server events: {self._types()[-30:]}")
        self.check()
        event = found()
        assert event, f"the session ended before a {type_}; server events: {self._types()[-30:]}"
        return event

    async def reply(self, since: int) -> tuple[dict, np.ndarray]:
        """The next response.done and the speech its RealtimeAudio events carried."""
        response = (await self.wait("response.done", since))["response"]
        return response, np.frombuffer(bytes(self.audio[response["id"]]), "<i2")

    async def cut_mid_reply(self, text: str, cut) -> tuple[int, dict, np.ndarray]:
        """A text turn cut (`cut()`) at its reply's first audio. The random tiny model sometimes
        ends a reply by itself (EOS) before the cut reaches the server, which then only stops the
        audio still playing, without an event: that attempt is retried. A reply that ran on to
        the token cap (`incomplete`) means the cut was ignored, and fails."""
        for _ in range(4):
            since = self.mark()
            await self.session.send_message(text)
            await self.wait("audio", since)
            await cut()
            response, pcm = await self.reply(since)
            if response["status"] == "cancelled":
                return since, response, pcm
            assert response["status"] == "completed", f"the cut was ignored: {response['status_details']}"
        pytest.fail("every reply ended by itself before its cut; the server never saw one live")

    async def response_create(self) -> None:
        # What an app does for a manual turn: a raw response.create, which the SDK queues behind
        # any response still in progress.
        await self.session.model.send_event(RealtimeModelSendRawMessage({"type": "response.create"}))


@contextlib.asynccontextmanager
async def connect(live_server, agent: RealtimeAgent | None = None, **settings):
    """A stock RealtimeRunner session on our server; `settings` are its initial model settings."""
    runner = RealtimeRunner(agent or RealtimeAgent(name="omni", instructions="Answer briefly."))
    config = {
        "url": f"{live_server.ws_base}/realtime?model=minicpm-o-2.6",
        "api_key": "unused",
        "initial_model_settings": settings,
    }
    async with await runner.run(model_config=config) as session:
        c = Client(session)
        try:
            yield c
        finally:
            c._task.cancel()


def describe(error) -> str:
    if isinstance(error, pydantic.ValidationError):  # a server event the SDK's types reject
        return "; ".join(f"{'.'.join(map(str, x['loc']))}: {x['msg'][:200]}" for x in error.errors())
    return repr(error)


def assert_speech(pcm: np.ndarray, what: str) -> None:
    assert pcm.size and np.abs(pcm).max() > 0, f"{what}: no speech in the RealtimeAudio events"


async def manual_audio_turn(c: Client, pcm: bytes) -> int:
    """Speech as a manual turn, the SDK's way: appends, the last one with commit, response.create."""
    since = c.mark()
    chunks = frames(pcm, 100)
    for chunk in chunks[:-1]:
        await c.session.send_audio(chunk)
    await c.session.send_audio(chunks[-1], commit=True)
    await c.response_create()
    return since


@pytest.mark.asyncio
async def test_server_vad_turn(live_server, speech_16k):
    # The SDK's default settings: its default turn detection (semantic_vad, interrupt_response) is
    # the server's VAD here; speech streamed in real time is detected, committed and answered.
    async with connect(live_server) as c:
        since = c.mark()
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        for i, chunk in enumerate(frames(pcm16_24k(speech_16k), 40)):
            await c.session.send_audio(chunk)
            await asyncio.sleep(max(0.0, t0 + (i + 1) * 0.04 - loop.time()))  # paced, no drift
        await c.wait("input_audio_buffer.speech_started", since)
        await c.wait("input_audio_buffer.committed", since)
        response, pcm = await c.reply(since)
        assert response["status"] in ("completed", "incomplete"), response["status_details"]
        assert_speech(pcm, "server-VAD reply")
        c.check()


@pytest.mark.asyncio
async def test_manual_turns_interrupt_cancel_text(live_server, speech_16k):
    speech = pcm16_24k(speech_16k, lead_s=0.2, tail_s=0.3)
    async with connect(live_server, turn_detection=None) as c:
        # 1. A manual turn: committed audio, then response.create.
        since = await manual_audio_turn(c, speech)
        await c.wait("input_audio_buffer.committed", since)
        response, pcm = await c.reply(since)
        assert response["status"] in ("completed", "incomplete"), response["status_details"]
        assert_speech(pcm, "manual reply")

        # 2. An interruption mid-reply: at the reply's first audio, session.interrupt(). With turn
        # detection off the SDK sends a truncate (what was played) and a cancel, and asks for the
        # truncated item back (conversation.item.retrieve) once the server confirms the truncate.
        since, response, pcm = await c.cut_mid_reply("Tell me a long story about the sea.", c.session.interrupt)
        assert response["status"] == "cancelled", response["status_details"]
        assert response["status_details"]["reason"] in ("client_cancelled", "turn_detected")
        assert_speech(pcm, "interrupted reply (before the interrupt)")
        await c.wait("conversation.item.truncated", since)
        await c.wait("conversation.item.retrieved", since)

        # ... and the next turn is still answered: the SDK only sends its response.create once it
        # has accepted the interrupted response's response.done.
        since = await manual_audio_turn(c, speech)
        response, pcm = await c.reply(since)
        assert response["status"] in ("completed", "incomplete"), response["status_details"]
        assert_speech(pcm, "reply after the interruption")

        # 3. A cancel mid-reply (a raw response.cancel, as an app sends one), then a new turn.
        since, response, pcm = await c.cut_mid_reply(
            "What is the weather like?",
            lambda: c.session.model.send_event(RealtimeModelSendRawMessage({"type": "response.cancel"})),
        )
        assert response["status"] == "cancelled", response["status_details"]
        assert response["status_details"]["reason"] == "client_cancelled"
        assert_speech(pcm, "cancelled reply (before the cancel)")

        # 4. A text item (send_message: conversation.item.create + response.create), answered
        # with speech.
        since = c.mark()
        await c.session.send_message("Hello, how are you?")
        response, pcm = await c.reply(since)
        assert response["status"] in ("completed", "incomplete"), response["status_details"]
        assert_speech(pcm, "reply to a text item")
        c.check()


@pytest.mark.asyncio
async def test_function_tool_round_trip(live_server):
    # The SDK's own tool loop: an @function_tool on the agent, tool_choice "required" (the random
    # tiny model never opens a call by itself; the grammar makes the forced one valid). The SDK
    # runs the tool from the completed call item, sends its output and a response.create; the
    # tool switches the session to "auto" first, so that answer is spoken, not another call.
    ran: list[tuple[str, int]] = []
    box: list[RealtimeSession] = []

    @function_tool
    async def get_weather(city: Literal["Paris", "Rome", "Oslo"], days: Annotated[int, Field(ge=1, le=7)]) -> str:
        """The weather forecast for a city."""
        ran.append((city, days))
        update = {"type": "session.update", "other_data": {"session": {"type": "realtime", "tool_choice": "auto"}}}
        await box[0].model.send_event(RealtimeModelSendRawMessage(update))
        return f"Sunny in {city} for the next {days} days."

    agent = RealtimeAgent(name="omni", instructions="Answer briefly.", tools=[get_weather])
    async with connect(live_server, agent, turn_detection=None, tool_choice="required") as c:
        box.append(c.session)
        since = c.mark()
        await c.session.send_message("What is the weather in Paris this week?")
        call_done = await c.wait("response.done", since)
        (call,) = checked_calls(c.log, call_done["response"]["id"])
        end = await c.wait("tool_end", since)
        assert end["tool"] == "get_weather" and ran == [
            (json.loads(call["arguments"])["city"], json.loads(call["arguments"])["days"])
        ]
        answer = c.mark()
        response, pcm = await c.reply(answer)
        assert response["status"] in ("completed", "incomplete"), response["status_details"]
        assert response["output"][0]["type"] == "message"
        assert_speech(pcm, "the answer after the tool's output")
        outputs = [
            e
            for e in c.log[since:]
            if e["type"] == "conversation.item.added" and e["item"]["type"] == "function_call_output"
        ]
        assert [o["item"]["call_id"] for o in outputs] == [call["call_id"]]
        c.check()
