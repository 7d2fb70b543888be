"""LiveKit's stock OpenAI realtime plugin, unchanged and pointed at our /v1, holds a server-VAD and a
manual conversation (barge-in, interruption, cancels, a typed message): all answered in speech, no error."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable
from typing import Annotated, Literal

import numpy as np
import pytest
from pydantic import Field

from clientaudio import frames, pcm16_24k

from livekit import rtc
from livekit.agents import llm, utils
from livekit.plugins.openai import realtime as lk_realtime

RATE = 24000
TIMEOUT_S = 30  # generous: only there so a broken server fails the test instead of hanging it


class Client:
    """A LiveKit RealtimeSession, and what it saw: its error events, the client events it sent
    (appends left out) and the server's event types, for failure messages."""

    def __init__(self, model: lk_realtime.RealtimeModel):
        self.session = model.session()
        self.errors: list[llm.RealtimeModelError] = []
        self.sent: list[dict] = []
        self.received: list[str] = []
        self.generations: asyncio.Queue[llm.GenerationCreatedEvent] = asyncio.Queue()
        self._expected: list[tuple[str, asyncio.Future]] = []
        self.session.on("error", self.errors.append)
        self.session.on("generation_created", self.generations.put_nowait)
        self.session.on(
            "openai_client_event_queued", lambda ev: ev["type"] != "input_audio_buffer.append" and self.sent.append(ev)
        )
        self.session.on("openai_server_event_received", self._on_server_event)

    def _on_server_event(self, ev: dict) -> None:
        self.received.append(ev["type"])
        for type_, fut in self._expected:
            if type_ == ev["type"] and not fut.done():
                fut.set_result(ev)
                break

    def expect(self, type_: str) -> Awaitable[dict]:
        """The next server event of that type (call it before what causes the event)."""
        fut = asyncio.get_running_loop().create_future()
        self._expected.append((type_, fut))
        return asyncio.wait_for(fut, TIMEOUT_S)

    async def talk(self, pcm: bytes, realtime: bool) -> None:
        """Push 20 ms frames as LiveKit's audio input does: at real time for the server's VAD."""
        t0 = time.monotonic()
        for i, f in enumerate(frames(pcm)):
            self.session.push_audio(rtc.AudioFrame(f, RATE, 1, len(f) // 2))
            if realtime:
                await asyncio.sleep(max(0.0, t0 + (i + 1) * 0.02 - time.monotonic()))

    async def manual_turn(self, pcm: bytes) -> llm.GenerationCreatedEvent:
        """LiveKit's manual turn (commit_user_turn): commit the buffer, then ask for a reply."""
        await self.talk(pcm, realtime=False)
        self.session.commit_audio()
        return await asyncio.wait_for(self.session.generate_reply(), TIMEOUT_S)

    def report(self) -> str:
        return (
            f"errors: {[getattr(e.error, 'body', e.error) for e in self.errors]}\n"
            f"sent: {self.sent}\nreceived: {self.received}"
        )


def ms(pcm: bytes) -> int:
    return len(pcm) * 1000 // (2 * RATE)


async def first_message(gen: llm.GenerationCreatedEvent) -> llm.MessageGeneration:
    return await asyncio.wait_for(anext(aiter(gen.message_stream)), TIMEOUT_S)


async def play(msg: llm.MessageGeneration, pcm: bytearray, until_ms: int | None = None) -> bytearray:
    """Read the message's speech into pcm, as LiveKit's playout does; until_ms stops reading there
    (the reply goes on)."""
    async with asyncio.timeout(TIMEOUT_S):
        async for frame in msg.audio_stream:
            pcm += frame.data.tobytes()
            if until_ms is not None and ms(pcm) >= until_ms:
                break
    return pcm


async def finished(gen: llm.GenerationCreatedEvent) -> None:
    """Wait for the response's end: LiveKit closes the message stream at response.done."""
    async with asyncio.timeout(TIMEOUT_S):
        async for _ in gen.message_stream:
            pass


async def spoken_reply(client: Client, gen: llm.GenerationCreatedEvent, what: str) -> None:
    pcm = await play(await first_message(gen), bytearray())
    await finished(gen)
    assert np.frombuffer(bytes(pcm), np.int16).any(), f"{what}: no speech\n{client.report()}"


@pytest.mark.asyncio
async def test_livekit_realtime_conversations(live_server, speech_16k):
    utterance = pcm16_24k(speech_16k)
    barge_in_utterance = pcm16_24k(speech_16k, lead_s=0)  # heard at once: the reply is short
    async with utils.http_context.open():  # the shared aiohttp session a LiveKit worker provides
        # everything else at LiveKit's defaults, so the server takes a stock agent's session.update
        # (semantic_vad, input transcription, voice "marin", tracing, ...)
        vad = Client(lk_realtime.RealtimeModel(base_url=live_server.ws_base, api_key="unused"))
        manual = Client(lk_realtime.RealtimeModel(base_url=live_server.ws_base, api_key="unused", turn_detection=None))
        clients = (vad, manual)
        try:
            for c in clients:
                await c.session.update_instructions("You are a helpful voice assistant. Be brief.")

            # 1. server VAD: real-time speech; the server ends the turn and starts the reply itself
            await vad.talk(utterance, realtime=True)
            gen = await asyncio.wait_for(vad.generations.get(), TIMEOUT_S)
            assert not gen.user_initiated
            msg = await first_message(gen)
            played = await play(msg, bytearray(), until_ms=200)
            playing_since = time.monotonic()  # audio comes faster than real time: playout starts now
            modalities = await msg.modalities

            # ... and a barge-in while that reply plays: on the server's speech_started LiveKit
            # cancels the response (if it is still generating) and truncates its item at the
            # playout position; the barge-in turn is answered
            def barge_in(_ev) -> None:
                vad.session.interrupt()
                heard_ms = int((time.monotonic() - playing_since) * 1000)
                vad.session.truncate(
                    message_id=msg.message_id, modalities=modalities, audio_end_ms=min(heard_ms, ms(played))
                )

            vad.session.once("input_speech_started", barge_in)
            talking = asyncio.create_task(vad.talk(barge_in_utterance, realtime=True))
            await play(msg, played)  # the rest of that reply, as far as the server sends it
            assert np.frombuffer(bytes(played), np.int16).any(), f"server-VAD turn: no speech\n{vad.report()}"
            await finished(gen)
            gen = await asyncio.wait_for(vad.generations.get(), TIMEOUT_S)
            await spoken_reply(vad, gen, "barge-in turn")
            await talking

            # 2. manual turn: commit_audio + generate_reply; response.created echoes LiveKit's
            # client_event_id, which is how generate_reply's future resolves
            gen = await manual.manual_turn(utterance)
            assert gen.user_initiated
            await spoken_reply(manual, gen, "manual turn")

            # 3. interruption mid-reply, as LiveKit's AgentActivity does it: response.cancel, then,
            # once playout stops, a truncate at the played position; the next turn is answered
            gen = await manual.manual_turn(utterance)
            msg = await first_message(gen)
            played = await play(msg, bytearray(), until_ms=200)
            manual.session.interrupt()
            await finished(gen)
            manual.session.truncate(
                message_id=msg.message_id, modalities=await msg.modalities, audio_end_ms=min(200, ms(played))
            )
            gen = await manual.manual_turn(utterance)
            await spoken_reply(manual, gen, "turn after the interruption")

            # 4. cancels: interrupted before any audio was played (LiveKit then deletes the item:
            # a truncate at 0 ms), and a generate_reply future cancelled before response.created
            # (LiveKit sends response.cancel, and again by id, discarding the response when it
            # arrives); the turn after them is answered
            gen = await manual.manual_turn(utterance)
            msg = await first_message(gen)
            manual.session.interrupt()
            await finished(gen)
            manual.session.truncate(message_id=msg.message_id, modalities=await msg.modalities, audio_end_ms=0)
            deleted_id = msg.message_id
            await manual.talk(utterance, realtime=False)
            manual.session.commit_audio()
            discarded = manual.expect("response.done")
            manual.session.generate_reply().cancel()
            assert (await discarded)["response"]["status"] == "cancelled", manual.report()
            gen = await manual.manual_turn(utterance)
            await spoken_reply(manual, gen, "turn after the cancels")
            # conversation.item.deleted took the unheard reply out of LiveKit's mirror
            assert deleted_id not in {i.id for i in manual.session.chat_ctx.items}, manual.report()

            # 5. a typed user message, as LiveKit's generate_reply(user_input=...) sends it: a
            # conversation.item.create (update_chat_ctx waits for its conversation.item.added),
            # then response.create
            ctx = manual.session.chat_ctx.copy()
            ctx.add_message(role="user", content="Hello! What can you do?")
            await manual.session.update_chat_ctx(ctx)
            assert ctx.items[-1].id in {i.id for i in manual.session.chat_ctx.items}, manual.report()
            gen = await asyncio.wait_for(manual.session.generate_reply(), TIMEOUT_S)
            await spoken_reply(manual, gen, "text turn")

            # every reply asked for surfaced once, the discarded one never; and not one error event
            assert vad.generations.empty() and manual.generations.qsize() == 6, manual.report()
            for c in clients:
                assert not c.errors, c.report()
        finally:
            for c in clients:
                await c.session.aclose()


@pytest.mark.asyncio
async def test_livekit_function_tool(live_server):
    # LiveKit's own tool loop on the realtime session: an @function_tool in update_tools,
    # generate_reply(tool_choice="required") (the random tiny model never opens a call by itself;
    # the grammar makes the forced one valid), the call from the generation's function stream run
    # with LiveKit's argument binding, its output added through update_chat_ctx (which waits for
    # conversation.item.added), then generate_reply(tool_choice="none"): a spoken answer.
    ran: list[tuple[str, int]] = []

    @llm.function_tool
    async def get_weather(city: Literal["Paris", "Rome", "Oslo"], days: Annotated[int, Field(ge=1, le=7)]) -> str:
        """The weather forecast for a city."""
        ran.append((city, days))
        return f"Sunny in {city} for the next {days} days."

    async with utils.http_context.open():
        c = Client(lk_realtime.RealtimeModel(base_url=live_server.ws_base, api_key="unused", turn_detection=None))
        try:
            await c.session.update_instructions("You are a helpful voice assistant. Be brief.")
            await c.session.update_tools([get_weather])
            ctx = c.session.chat_ctx.copy()
            ctx.add_message(role="user", content="What is the weather in Paris this week?")
            await c.session.update_chat_ctx(ctx)
            gen = await asyncio.wait_for(c.session.generate_reply(tool_choice="required"), TIMEOUT_S)
            async with asyncio.timeout(TIMEOUT_S):
                calls = [fc async for fc in gen.function_stream]
            await finished(gen)
            assert calls and all(fc.name == "get_weather" for fc in calls), c.report()
            ctx = c.session.chat_ctx.copy()
            for fc in calls:
                args, kwargs = llm.utils.prepare_function_arguments(fnc=get_weather, json_arguments=fc.arguments)
                out = await get_weather(*args, **kwargs)
                ctx.items.append(llm.FunctionCallOutput(call_id=fc.call_id, name=fc.name, output=out, is_error=False))
            await c.session.update_chat_ctx(ctx)
            assert len(ran) == len(calls) and {i.id for i in ctx.items} <= {i.id for i in c.session.chat_ctx.items}
            gen = await asyncio.wait_for(c.session.generate_reply(tool_choice="none"), TIMEOUT_S)
            await spoken_reply(c, gen, "answer after the tool's output")
            assert not c.errors, c.report()
        finally:
            await c.session.aclose()
