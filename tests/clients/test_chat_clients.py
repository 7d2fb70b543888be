"""The cascaded voice agents' LLM slot, stock and pointed at `omni serve`'s /v1: a Pipecat pipeline
with `OpenAILLMService(base_url=...)` and LiveKit's `openai.LLM(base_url=...)` each drive a turn
with an image (a camera frame, encoded by the framework itself) and a follow-up turn that carries
the first reply back as history; both stream text and report no error. Then each framework's own
tool API (Pipecat's `register_function`, LiveKit's `@function_tool`): a forced call whose
arguments match the tool's schema, run by the framework, its result sent back and answered."""

from __future__ import annotations

import asyncio
import json
from typing import Annotated, Literal

import jsonschema
import numpy as np
import pytest
from pydantic import Field

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


# ---- function calling: each framework's own tool API, a call forced, run, and answered
WEATHER_PROPERTIES = {
    "city": {"type": "string", "enum": ["Paris", "Rome", "Oslo"]},
    "days": {"type": "integer", "minimum": 1, "maximum": 7},
}


async def test_pipecat_registered_function_is_called_then_answered(live_server):
    from loguru import logger
    from pipecat.adapters.llm.schemas.function_schema import FunctionSchema
    from pipecat.adapters.llm.schemas.tools_schema import ToolsSchema
    from pipecat.frames.frames import LLMFullResponseEndFrame, LLMMessagesAppendFrame, LLMTextFrame
    from pipecat.pipeline.pipeline import Pipeline
    from pipecat.pipeline.worker import PipelineParams, PipelineWorker
    from pipecat.processors.aggregators.llm_context import LLMContext
    from pipecat.processors.aggregators.llm_response_universal import LLMContextAggregatorPair
    from pipecat.processors.frame_processor import FrameProcessor
    from pipecat.services.llm_service import FunctionCallParams
    from pipecat.services.openai.llm import OpenAILLMService
    from pipecat.workers.runner import WorkerRunner

    errors: list[str] = []
    sink = logger.add(lambda m: errors.append(m.record["message"]), level="ERROR")
    text: list[str] = []
    ended = asyncio.Queue()
    called: list[dict] = []

    class Collect(FrameProcessor):
        async def process_frame(self, frame, direction):
            await super().process_frame(frame, direction)
            if isinstance(frame, LLMTextFrame):
                text.append(frame.text)
            elif isinstance(frame, LLMFullResponseEndFrame):
                ended.put_nowait(True)
            await self.push_frame(frame, direction)

    weather = FunctionSchema(
        name="get_weather", description="The forecast.", properties=WEATHER_PROPERTIES, required=["city", "days"]
    )
    context = LLMContext(
        [{"role": "system", "content": "Be brief."}],
        tools=ToolsSchema(standard_tools=[weather]),
        tool_choice="required",
    )

    async def get_weather(params: FunctionCallParams):
        called.append(params.arguments)
        context.set_tool_choice("none")  # the answer that follows is words
        await params.result_callback({"forecast": "sunny"})

    user, assistant = LLMContextAggregatorPair(context)
    llm = OpenAILLMService(
        api_key="local", base_url=f"{live_server.http}/v1", settings=OpenAILLMService.Settings(model="minicpm-o-2.6")
    )
    llm.register_function("get_weather", get_weather)
    worker = PipelineWorker(
        Pipeline([user, llm, Collect(), assistant]), params=PipelineParams(), enable_rtvi=False, idle_timeout_secs=None
    )
    worker.add_event_handler("on_pipeline_error", lambda _w, f: errors.append(f"ErrorFrame: {f.error}"))
    runner = WorkerRunner(handle_sigint=False)
    await runner.add_workers(worker)
    run = asyncio.create_task(runner.run())
    try:
        async with asyncio.timeout(TIMEOUT_S):
            ask = {"role": "user", "content": "The weather in Paris?"}
            await worker.queue_frame(LLMMessagesAppendFrame([ask], run_llm=True))
            while not (called and "".join(text)):  # the call's response, then the answer's
                await ended.get()
        assert not errors, errors
        (args,) = called
        jsonschema.validate(args, {"type": "object", "properties": WEATHER_PROPERTIES, "required": ["city", "days"]})
        msgs = context.get_messages()
        assert [m["role"] for m in msgs][:4] == ["system", "user", "assistant", "tool"], msgs
        assert msgs[2]["tool_calls"][0]["id"] == msgs[3]["tool_call_id"]
    finally:
        await worker.cancel()
        await run
        logger.remove(sink)


async def test_livekit_function_tool_is_called_then_answered(live_server):
    from livekit.agents import llm
    from livekit.plugins import openai as lk_openai

    asked: list[tuple[str, int]] = []

    @llm.function_tool
    async def get_weather(city: Literal["Paris", "Rome", "Oslo"], days: Annotated[int, Field(ge=1, le=7)]) -> str:
        """The forecast for a city."""
        asked.append((city, days))
        return "sunny"

    schema = llm.utils.build_strict_openai_schema(get_weather)["function"]["parameters"]
    model = lk_openai.LLM(model="minicpm-o-2.6", base_url=f"{live_server.http}/v1", api_key="local")
    ctx = llm.ChatContext()
    ctx.add_message(role="system", content="Be brief.")
    ctx.add_message(role="user", content="The weather in Paris?")
    try:
        calls = []
        async with asyncio.timeout(TIMEOUT_S):
            async with model.chat(chat_ctx=ctx, tools=[get_weather], tool_choice="required") as stream:
                async for chunk in stream:
                    if chunk.delta is not None:
                        calls += chunk.delta.tool_calls or []
        assert calls and len({c.call_id for c in calls}) == len(calls)
        for call in calls:
            jsonschema.validate(json.loads(call.arguments), schema)
            result = await llm.execute_function_call(call, llm.ToolContext([get_weather]))
            assert result.raw_exception is None, result.raw_exception
            ctx.insert([result.fnc_call, result.fnc_call_out])
        assert len(asked) == len(calls)
        text = []
        async with asyncio.timeout(TIMEOUT_S):
            async with model.chat(chat_ctx=ctx, tools=[get_weather], tool_choice="none") as stream:
                async for chunk in stream:
                    if chunk.delta is not None:
                        assert not chunk.delta.tool_calls
                        text.append(chunk.delta.content or "")
        assert "".join(text)
    finally:
        await model.aclose()
