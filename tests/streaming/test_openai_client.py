"""A third-party client we did not write: the official `openai` Python SDK's Realtime API, pointed
at our `/v1/realtime`, holds a voice conversation (server VAD turn, streamed speech, a second
turn) and parses every event we send into its own typed models."""

from __future__ import annotations

import asyncio
import base64

import numpy as np
import pytest

from rtclient import chunks_b64, utterance_24k_pcm16

openai = pytest.importorskip("openai", reason="the openai SDK is in the test extra")


@pytest.mark.asyncio
async def test_openai_sdk_voice_conversation(server, speech_16k):
    client = openai.AsyncOpenAI(api_key="not-needed-locally", websocket_base_url=f"ws://127.0.0.1:{server.port}/v1")
    async with client.realtime.connect(model="minicpm-o-2.6") as conn:
        await conn.session.update(
            session={"type": "realtime", "instructions": "Be brief.", "audio": {"output": {"voice": "alloy"}}}
        )
        for turn in range(2):
            for c in chunks_b64(utterance_24k_pcm16(speech_16k)):
                await conn.input_audio_buffer.append(audio=c)
            seen, audio = [], bytearray()
            async with asyncio.timeout(60):
                async for event in conn:
                    seen.append(event.type)
                    if event.type == "error":
                        pytest.fail(f"server error: {event.error}")
                    if event.type == "response.output_audio.delta":
                        audio += base64.b64decode(event.delta)
                    if event.type == "response.done":
                        assert event.response.status in ("completed", "incomplete")
                        break
            assert "session.updated" in seen or turn == 1
            assert "input_audio_buffer.speech_stopped" in seen
            assert "response.output_audio_transcript.delta" in seen
            pcm = np.frombuffer(bytes(audio), np.int16)
            assert len(pcm) > 4800 and np.abs(pcm).max() > 0, f"turn {turn}: no speech"
