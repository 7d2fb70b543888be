"""What stock realtime clients rely on, against the tiny model: user transcripts by MiniCPM-o
(equal to the model's ASR run alone), deleting the latest reply (the context goes back to before
it), item retrieval, OpenAI's cancel codes, [ext] events only on opt-in, and every event valid
under the openai SDK's types."""

from __future__ import annotations

import json

import numpy as np
import pytest
import websockets

from event_types import openai_type_errors
from rtclient import chunks_b64, engine_session, recv_until, start_server, utterance_24k_pcm16
from streaming.session.state import Rollback


async def send(ws, **ev):
    await ws.send(json.dumps(ev))


def alone_transcript(omni, audio_16k: np.ndarray) -> str:
    """The official ASR message [prompt, clip] on a fresh session of its own, greedy, text only."""
    from omni.sampling import GREEDY
    from omni.session.engine import GenerateOptions, Session
    from streaming.session.transcribe import ASR_PROMPTS, max_tokens, windows

    out = []
    for w in windows(audio_16k):
        s = Session(omni, seed=0)
        s.set_system("omni", w, ASR_PROMPTS["en"])
        out += [
            t
            for t, _ in s.generate(GenerateOptions(sampling=GREEDY, max_new_tokens=max_tokens(w), generate_audio=False))
        ]
    return "".join(out).strip()


@pytest.mark.asyncio
async def test_user_turns_are_transcribed_by_the_model_off_the_reply_path(tiny_omni, speech_16k):
    srv = await start_server(tiny_omni)
    try:
        async with websockets.connect(srv.ws_url) as ws:
            await recv_until(ws, lambda e: e["type"] == "session.created")
            (conv,) = srv.app["conversations"]
            heard = []  # a spy on this session's transcriber
            submit = conv.transcriber.submit
            conv.transcriber.submit = lambda item_id, audio, lang: (heard.append(audio), submit(item_id, audio, lang))
            await send(
                ws,
                type="session.update",
                session={
                    "audio": {
                        "input": {
                            "transcription": {"model": "gpt-4o-mini-transcribe", "language": None, "prompt": None}
                        }
                    }
                },
            )
            upd = (await recv_until(ws, lambda e: e["type"] == "session.updated"))[-1]
            assert upd["session"]["audio"]["input"]["transcription"] == {"model": "gpt-4o-mini-transcribe"}
            for c in chunks_b64(utterance_24k_pcm16(speech_16k)):
                await send(ws, type="input_audio_buffer.append", audio=c)
            events = await recv_until(
                ws, lambda e: e["type"] == "conversation.item.input_audio_transcription.completed", timeout=120
            )
            done = events[-1]
            if "response.done" not in {e["type"] for e in events}:  # the transcript may come first
                events += await recv_until(ws, lambda e: e["type"] == "response.done")
            committed = next(e for e in events if e["type"] == "input_audio_buffer.committed")
            deltas = [e["delta"] for e in events if e["type"].endswith("transcription.delta")]
            assert done["item_id"] == committed["item_id"] and done["content_index"] == 0
            assert "".join(deltas).strip() == done["transcript"]
            assert done["usage"]["type"] == "duration" and done["usage"]["seconds"] >= 2.0
            # the turn's audio is what the model heard (its 1-s units), and alone gives the same transcript
            assert len(heard) == 1 and abs(len(heard[0]) / 16000 - done["usage"]["seconds"]) < 1e-3
            assert done["transcript"] == alone_transcript(tiny_omni, heard[0])
            await send(ws, type="conversation.item.retrieve", item_id=committed["item_id"])
            got = (await recv_until(ws, lambda e: e["type"] == "conversation.item.retrieved"))[-1]
            assert got["item"]["content"][0] == {"type": "input_audio", "transcript": done["transcript"]}
        types = [e["type"] for e in events]
        assert "error" not in types
        # the transcript waited for the reply's first output
        assert types.index(
            "conversation.item.input_audio_transcription.delta"
            if deltas
            else "conversation.item.input_audio_transcription.completed"
        ) > min(
            types.index(t)
            for t in ("response.output_audio.delta", "response.output_audio_transcript.delta")
            if t in types
        )
        assert openai_type_errors(events + [got]) == []
    finally:
        await srv.runner.cleanup()


@pytest.mark.asyncio
async def test_deleting_the_latest_reply_rolls_the_context_back(tiny_omni):
    srv = await start_server(tiny_omni)
    try:
        async with websockets.connect(srv.ws_url) as ws:
            await recv_until(ws, lambda e: e["type"] == "session.created")
            await send(ws, type="session.update", session={"audio": {"input": {"turn_detection": None}}})
            await send(
                ws,
                type="conversation.item.create",
                item={"type": "message", "role": "user", "content": [{"type": "input_text", "text": "Hello?"}]},
            )
            user = (await recv_until(ws, lambda e: e["type"] == "conversation.item.done"))[-1]["item"]
            (conv,) = srv.app["conversations"]
            session = await engine_session(conv)
            before = session.state.cache_len
            await send(ws, type="response.create")
            reply = await recv_until(ws, lambda e: e["type"] == "response.done")
            item_id = reply[-1]["response"]["output"][0]["id"]
            assert session.state.cache_len > before
            await send(ws, type="conversation.item.delete", item_id=user["id"])  # older: in the context for good
            err = (await recv_until(ws, lambda e: e["type"] == "error"))[-1]["error"]
            assert (err["code"], err["param"]) == ("unsupported_operation", "item_id")
            await send(ws, type="conversation.item.delete", item_id=item_id)
            deleted = (await recv_until(ws, lambda e: e["type"] == "conversation.item.deleted"))[-1]
            assert deleted["item_id"] == item_id
            await send(ws, type="conversation.item.retrieve", item_id=item_id)  # gone
            err = (await recv_until(ws, lambda e: e["type"] == "error"))[-1]["error"]
            assert err["code"] == "item_retrieve_invalid_item_id"
            await send(ws, type="response.cancel")  # nothing is live any more
            err = (await recv_until(ws, lambda e: e["type"] == "error"))[-1]["error"]
            assert err["code"] == "response_cancel_not_active"
            await send(ws, type="conversation.item.truncate", item_id=item_id, content_index=0, audio_end_ms=0)
            err = (await recv_until(ws, lambda e: e["type"] == "error"))[-1]["error"]
            assert err["code"] == "item_not_found"
            assert conv.state.rollback == Rollback(item_id, None)  # still: forget it
            # the rollback lands before the next input: the context is as it was before the reply
            await send(
                ws,
                type="conversation.item.create",
                item={"type": "message", "role": "user", "content": [{"type": "input_text", "text": "Again."}]},
            )
            again = (await recv_until(ws, lambda e: e["type"] == "conversation.item.done"))[-1]
            assert again["previous_item_id"] == user["id"]
            assert session.state.llm_generated is False and session.state.new_user_msg is False
            spans = [s.kind for s in session.state.spans]
            assert "reply" not in spans, spans
            await send(ws, type="response.create")
            after = await recv_until(ws, lambda e: e["type"] == "response.done")
            assert after[-1]["response"]["status"] in ("completed", "incomplete")
    finally:
        await srv.runner.cleanup()


@pytest.mark.asyncio
async def test_cancel_codes_reasons_and_extension_events(server):
    seen = []

    async def until(ws, pred):
        seen.extend(await recv_until(ws, pred))
        return seen[-1]

    async with websockets.connect(server.ws_url) as ws:
        await until(ws, lambda e: e["type"] == "session.created")
        await send(ws, type="response.cancel", event_id="c1")
        err = (await until(ws, lambda e: e["type"] == "error"))["error"]
        assert err["code"] == "response_cancel_not_active" and err["message"].startswith("Cancellation failed")
        assert err["event_id"] == "c1"
        await send(ws, type="session.update", session={"audio": {"input": {"turn_detection": None}}})
        await send(
            ws,
            type="conversation.item.create",
            item={"type": "message", "role": "user", "content": [{"type": "input_text", "text": "Talk a while."}]},
        )
        # LiveKit's shape: null instructions, and a client id in the metadata it waits to see echoed
        await send(ws, type="response.create", response={"instructions": None, "metadata": {"client_event_id": "x"}})
        created = await until(ws, lambda e: e["type"] == "response.created")
        assert created["response"]["metadata"] == {"client_event_id": "x"}
        delta = await until(ws, lambda e: e["type"] == "response.output_audio.delta")
        await send(ws, type="conversation.item.truncate", item_id=delta["item_id"], content_index=0, audio_end_ms=0)
        response = (await until(ws, lambda e: e["type"] == "response.done"))["response"]
        if response["status"] == "cancelled":  # unless the tiny model had finished already
            assert response["status_details"]["reason"] == "client_cancelled"
        await send(ws, type="response.create")
        await until(ws, lambda e: e["type"] == "response.done")
        await send(ws, type="input_audio_buffer.commit")  # nothing buffered: a typed error
        assert (await until(ws, lambda e: e["type"] == "error"))["error"]["code"] == "input_audio_buffer_commit_empty"
    types = {e["type"] for e in seen}
    assert not {t for t in types if t.startswith("response.omni")}, "an [ext] event reached a stock client"
    assert {"response.content_part.added", "response.content_part.done"} <= types
    assert openai_type_errors(seen) == []


@pytest.mark.asyncio
async def test_a_turn_heard_while_a_reply_plays_is_transcribed_once(tiny_omni, speech_16k):
    """No barge-in: units that arrive during a reply reach the model after it, and the second
    turn's transcript covers that turn's audio once (not twice, not the first turn's)."""
    srv = await start_server(tiny_omni, max_speech_s=6.0, max_reply_tokens=40)
    try:
        async with websockets.connect(srv.ws_url) as ws:
            await recv_until(ws, lambda e: e["type"] == "session.created")
            (conv,) = srv.app["conversations"]
            heard = []
            submit = conv.transcriber.submit
            conv.transcriber.submit = lambda item_id, audio, lang: (heard.append(audio), submit(item_id, audio, lang))
            await send(
                ws,
                type="session.update",
                session={
                    "audio": {
                        "input": {
                            "transcription": {"model": "m"},
                            "turn_detection": {"type": "server_vad", "interrupt_response": False},
                        }
                    }
                },
            )
            chunks = chunks_b64(utterance_24k_pcm16(speech_16k))
            for c in chunks:
                await send(ws, type="input_audio_buffer.append", audio=c)
            await recv_until(ws, lambda e: e["type"] == "response.output_audio.delta")
            for c in chunks:  # the user speaks again, over the reply
                await send(ws, type="input_audio_buffer.append", audio=c)
            done = []
            while len(done) < 2:
                ev = (await recv_until(ws, lambda e: e["type"].endswith("transcription.completed"), timeout=120))[-1]
                done.append(ev)
    finally:
        await srv.runner.cleanup()
    assert done[0]["item_id"] != done[1]["item_id"] and len(heard) == 2
    first_s, second_s = (len(a) / 16000 for a in heard)
    assert abs(second_s - first_s) <= 1.0, (first_s, second_s)  # the same utterance, heard once each
    assert [d["usage"]["seconds"] for d in done] == pytest.approx([first_s, second_s], abs=1e-3)


@pytest.mark.asyncio
async def test_transcripts_that_cannot_run_end_in_failed_events(tiny_omni):
    """Forced fault: the engine's background slot is taken. A turn's transcript waits for one
    (OPEN_WAIT_S on an injected clock), then fails with server_busy; turns queued beyond
    MAX_QUEUED fail at once (transcription_backlog). Each failure is one `failed` event."""
    import asyncio

    from streaming.gateway.outbound import WireEvents
    from streaming.session.transcribe import MAX_QUEUED, OPEN_WAIT_S, Transcriber
    from streaming.settings import ServerSettings
    from streaming.engines.worker import EngineSpec, EngineWorker

    w = EngineWorker(tiny_omni, EngineSpec.from_settings(ServerSettings(max_sessions=1, model_lanes=1)))
    taken = w.open_session(None, background=True)  # the one background slot
    now = [0.0]
    sent: list[dict] = []

    async def send(ev):
        sent.append(ev)

    def clock():  # each look at the clock: past the wait
        now[0] += OPEN_WAIT_S / 2 + 1
        return now[0]

    t = Transcriber(w, WireEvents(send), clock_s=clock)  # its events as a client gets them
    try:
        for k in range(MAX_QUEUED + 2):
            t.submit(f"item_{k}", np.zeros(16000, np.float32), None)
        async with asyncio.timeout(30):
            while len([e for e in sent if e["type"].endswith("transcription.failed")]) < MAX_QUEUED + 2:
                await asyncio.sleep(0.05)
    finally:
        await t.close()
        taken.close()
        w.close()
    failed = {e["item_id"]: e["error"]["code"] for e in sent if e["type"].endswith("transcription.failed")}
    # submitted before the transcriber's task first runs: MAX_QUEUED wait, the 2 beyond are refused
    assert list(failed.values()).count("transcription_backlog") == 2, failed
    assert list(failed.values()).count("server_busy") == MAX_QUEUED, failed
    assert openai_type_errors(sent) == [] and not [e for e in sent if "completed" in e["type"]]
