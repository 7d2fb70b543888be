"""The cascaded voice agents' LLM slot, stock and pointed at `omni serve`'s /v1: a Pipecat pipeline
with `OpenAILLMService(base_url=...)` and LiveKit's `openai.LLM(base_url=...)` each drive a turn
with an image (a camera frame, encoded by the framework itself) and a follow-up turn that carries
the first reply back as history; both stream text and report no error."""

from __future__ import annotations

import asyncio
import numpy as np
import pytest

pytestmark = pytest.mark.asyncio
TIMEOUT_S = 60  # only so that a broken run fails instead of hanging


def camera_rgba(w=64, h=48) -> bytes:
    x = np.zeros((h, w, 4), np.uint8)
    x[..., 0], x[..., 1], x[..., 3] = np.linspace(0, 255, w, dtype=np.uint8)[None], 120, 255
    return x.tobytes()


async def test_pipecat_openai_llm_service_answers_an_image_then_a_follow_up(live_server):
    from loguru import logger
    from pipecat.frames.frames import LLMFullResponseEndFrame, LLMMessagesAppendFrame, LLMTextFrame
    from pipecat.pipeline.pipeline import Pipeline
    from pipecat.pipeline.worker import PipelineParams, PipelineWorker
    from pipecat.processors.aggregators.llm_context import LLMContext
    from pipecat.processors.aggregators.llm_response_universal import LLMContextAggregatorPair
    from pipecat.processors.frame_processor import FrameProcessor
    from pipecat.services.openai.llm import OpenAILLMService
    from pipecat.workers.runner import WorkerRunner

    errors: list[str] = []
    sink = logger.add(lambda m: errors.append(m.record["message"]), level="ERROR")
    replies: list[list[str]] = [[]]
    ended = asyncio.Queue()

    class Collect(FrameProcessor):
        async def process_frame(self, frame, direction):
            await super().process_frame(frame, direction)
            if isinstance(frame, LLMTextFrame):
                replies[-1].append(frame.text)
            elif isinstance(frame, LLMFullResponseEndFrame):
                replies.append([])
                ended.put_nowait(True)
            await self.push_frame(frame, direction)

    context = LLMContext([{"role": "system", "content": "You are a helpful assistant. Be brief."}])
    user, assistant = LLMContextAggregatorPair(context)
    llm = OpenAILLMService(
        api_key="local", base_url=f"{live_server.http}/v1", settings=OpenAILLMService.Settings(model="minicpm-o-2.6")
    )
    worker = PipelineWorker(
        Pipeline([user, llm, Collect(), assistant]), params=PipelineParams(), enable_rtvi=False, idle_timeout_secs=None
    )
    worker.add_event_handler("on_pipeline_error", lambda _w, f: errors.append(f"ErrorFrame: {f.error}"))
    runner = WorkerRunner(handle_sigint=False)
    await runner.add_workers(worker)
    run = asyncio.create_task(runner.run())
    try:
        image = await LLMContext.create_image_message(
            format="RGBA", size=(64, 48), image=camera_rgba(), text="What do you see?"
        )
        async with asyncio.timeout(TIMEOUT_S):
            await worker.queue_frame(LLMMessagesAppendFrame([image], run_llm=True))
            await ended.get()
            await worker.queue_frame(LLMMessagesAppendFrame([{"role": "user", "content": "And now?"}], run_llm=True))
            await ended.get()
        assert not errors, errors
        assert all("".join(r) for r in replies[:2]), replies
        # the first reply went back in as history before the follow-up (the second is added after its end)
        roles = [m["role"] for m in context.get_messages()]
        assert roles[:4] == ["system", "user", "assistant", "user"], roles
    finally:
        await worker.cancel()
        await run
        logger.remove(sink)


async def test_livekit_openai_llm_answers_a_camera_frame_then_a_follow_up(live_server):
    from livekit import rtc
    from livekit.agents import llm
    from livekit.plugins import openai as lk_openai

    model = lk_openai.LLM(model="minicpm-o-2.6", base_url=f"{live_server.http}/v1", api_key="local")
    frame = rtc.VideoFrame(64, 48, rtc.VideoBufferType.RGBA, camera_rgba())
    ctx = llm.ChatContext()
    ctx.add_message(role="system", content="Be brief.")
    ctx.add_message(role="user", content=["What do you see?", llm.ImageContent(image=frame)])
    try:
        for turn in range(2):
            text = []
            async with asyncio.timeout(TIMEOUT_S):
                async with model.chat(chat_ctx=ctx) as stream:
                    async for chunk in stream:
                        if chunk.delta is not None and chunk.delta.content:
                            text.append(chunk.delta.content)
            assert "".join(text), f"turn {turn}: no text"
            ctx.add_message(role="assistant", content="".join(text))
            ctx.add_message(role="user", content="And now?")
    finally:
        await model.aclose()
