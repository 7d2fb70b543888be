"""Pipecat's stock OpenAIRealtimeLLMService, in a real Pipecat pipeline against `omni serve`: server-VAD
and locally driven turns, barge-ins, cancels and a text message, all answered in speech, no error."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

import numpy as np
import pytest

from loguru import logger
from pipecat.audio.vad.silero import SileroVADAnalyzer
from pipecat.adapters.llm.schemas.function_schema import FunctionSchema
from pipecat.adapters.llm.schemas.tools_schema import ToolsSchema
from pipecat.frames.frames import (
    BotStartedSpeakingFrame,
    LLMUpdateSettingsFrame,
    BotStoppedSpeakingFrame,
    InputAudioRawFrame,
    InterruptionFrame,
    LLMFullResponseEndFrame,
    LLMMessagesAppendFrame,
    TTSAudioRawFrame,
    UserStoppedSpeakingFrame,
)
from pipecat.pipeline.pipeline import Pipeline
from pipecat.pipeline.worker import PipelineParams, PipelineWorker
from pipecat.processors.aggregators.llm_context import LLMContext
from pipecat.processors.aggregators.llm_response_universal import (
    LLMContextAggregatorPair,
    LLMUserAggregatorParams,
)
from pipecat.processors.frame_processor import FrameDirection, FrameProcessor
from pipecat.services.openai.realtime.events import (
    AudioConfiguration,
    AudioInput,
    SessionProperties,
)
from pipecat.services.llm_service import FunctionCallParams
from pipecat.services.openai.realtime.llm import OpenAIRealtimeLLMService
from pipecat.turns.user_start import VADUserTurnStartStrategy
from pipecat.turns.user_stop import SpeechTimeoutUserTurnStopStrategy
from pipecat.turns.user_turn_strategies import UserTurnStrategies
from pipecat.workers.runner import WorkerRunner

from streaming.gateway.codecs import float_to_pcm16
from clientaudio import pcm16_24k

pytestmark = pytest.mark.asyncio

TIMEOUT_S = 60  # per session, only so that a broken run fails instead of hanging


@dataclass
class Reply:
    audio: bytearray = field(default_factory=bytearray)
    first_audio: asyncio.Event = field(default_factory=asyncio.Event)
    done: asyncio.Event = field(default_factory=asyncio.Event)  # its LLMFullResponseEndFrame came
    interrupted: bool = False  # an interruption cut its playout short

    def spoke(self) -> bool:
        return np.abs(np.frombuffer(bytes(self.audio), np.int16)).max(initial=0) > 0


class Speaker(FrameProcessor):
    """Where the output transport would be: plays reply audio at real time and says so upstream
    (Bot{Started,Stopped}SpeakingFrame: the service learns from them what the user has heard),
    stops at an interruption, and files the audio of each reply (what follows a user turn)."""

    def __init__(self):
        super().__init__()
        self.replies: list[Reply] = []
        self.ends = 0  # responses over (LLMFullResponseEndFrame), with or without speech
        self._playout: asyncio.Task | None = None
        self._until = 0.0  # loop time at which the audio received so far has been played

    def open_reply(self) -> Reply:
        self.replies.append(Reply())
        return self.replies[-1]

    async def _play_out(self):
        loop = asyncio.get_running_loop()
        while (left := self._until - loop.time()) > 0:
            await asyncio.sleep(left)
        self._playout = None
        await self.push_frame(BotStoppedSpeakingFrame(), FrameDirection.UPSTREAM)

    async def _stop(self):
        if self._playout is not None:
            await self.cancel_task(self._playout)
            self._playout = None
            await self.push_frame(BotStoppedSpeakingFrame(), FrameDirection.UPSTREAM)

    async def process_frame(self, frame, direction):
        await super().process_frame(frame, direction)
        if isinstance(frame, UserStoppedSpeakingFrame):
            self.open_reply()
        elif isinstance(frame, TTSAudioRawFrame):
            reply = self.replies[-1] if self.replies else self.open_reply()
            reply.audio += frame.audio
            reply.first_audio.set()
            now = asyncio.get_running_loop().time()
            self._until = max(self._until, now) + len(frame.audio) / (2 * frame.sample_rate)
            if self._playout is None:
                await self.push_frame(BotStartedSpeakingFrame(), FrameDirection.UPSTREAM)
                self._playout = self.create_task(self._play_out(), "playout")
        elif isinstance(frame, InterruptionFrame) and self._playout is not None:
            self.replies[-1].interrupted = True
            await self._stop()
        elif isinstance(frame, LLMFullResponseEndFrame):
            self.ends += 1
            if self.replies:
                self.replies[-1].done.set()
        await self.push_frame(frame, direction)

    async def cleanup(self):
        await super().cleanup()
        if self._playout is not None:
            await self.cancel_task(self._playout)


class Mic:
    """The microphone: 20 ms InputAudioRawFrames at real time, silence unless given speech."""

    def __init__(self, worker: PipelineWorker, rate: int):
        self.worker, self.rate, self._speech = worker, rate, bytearray()
        self._task = asyncio.create_task(self._run())

    def say(self, pcm: bytes):
        self._speech += pcm

    async def _run(self):
        loop, step = asyncio.get_running_loop(), 2 * self.rate // 50
        t = loop.time()
        while True:
            chunk = bytes(self._speech[:step]).ljust(step, b"\0")
            del self._speech[:step]
            await self.worker.queue_frame(InputAudioRawFrame(audio=chunk, sample_rate=self.rate, num_channels=1))
            t += 0.02
            await asyncio.sleep(max(0.0, t - loop.time()))

    def close(self):
        self._task.cancel()


async def nth_reply(speaker: Speaker, n: int) -> Reply:
    while len(speaker.replies) <= n:
        await asyncio.sleep(0.02)
    return speaker.replies[n]


async def barge_in(mic: Mic, speaker: Speaker, speech: bytes) -> Reply:
    """Talks over the latest reply as soon as it is heard; returns the reply to what was said.
    A reply may be over before the user is heard (the random model can stop early): then it
    talks over that answer, and so on."""
    for n in range(len(speaker.replies) - 1, len(speaker.replies) + 2):
        await speaker.replies[n].first_audio.wait()
        mic.say(speech)
        answer = await nth_reply(speaker, n + 1)  # opened when the user's turn has ended
        if speaker.replies[n].interrupted:
            await answer.done.wait()
            return answer
    pytest.fail("three replies in a row ended before the user was heard over them")


async def run_session(
    live_server,
    session_properties: SessionProperties,
    scenario,
    context: LLMContext | None = None,
    setup=None,
    **user_params,
) -> Speaker:
    """Runs `scenario(worker, speaker)` with the service between the usual context aggregators in
    a PipelineWorker, and fails at the first error: an ErrorFrame (how the service reports a
    server `error` other than the two it shrugs off; it also ends its receive loop then) or an
    error log (how Pipecat reports a crashed task, e.g. its receive loop failing to parse a
    server event)."""
    errors: list[str] = []
    failed = asyncio.Event()

    def error(msg: str):
        errors.append(msg)
        failed.set()

    sink = logger.add(lambda m: error(m.record["message"]), level="ERROR")
    llm = OpenAIRealtimeLLMService(
        api_key="unused",
        base_url=f"{live_server.ws_base}/realtime",
        settings=OpenAIRealtimeLLMService.Settings(session_properties=session_properties),
    )
    if setup is not None:
        setup(llm)
    user, assistant = LLMContextAggregatorPair(
        context or LLMContext(), user_params=LLMUserAggregatorParams(**user_params)
    )
    speaker = Speaker()
    worker = PipelineWorker(
        Pipeline([user, llm, speaker, assistant]),
        params=PipelineParams(audio_in_sample_rate=16000),
        enable_rtvi=False,
        idle_timeout_secs=None,
    )
    started = asyncio.Event()
    worker.add_event_handler("on_pipeline_started", lambda *_: started.set())
    worker.add_event_handler("on_pipeline_error", lambda _w, f: error(f"ErrorFrame: {f.error}"))
    runner = WorkerRunner(handle_sigint=False)
    await runner.add_workers(worker)
    run = asyncio.create_task(runner.run())

    async def drive():
        await started.wait()
        await scenario(worker, speaker)

    drove, fail = asyncio.create_task(drive()), asyncio.create_task(failed.wait())
    try:
        done, _ = await asyncio.wait({drove, fail}, timeout=TIMEOUT_S, return_when=asyncio.FIRST_COMPLETED)
        assert not errors, errors
        assert drove in done, "timed out"
        drove.result()
    finally:
        drove.cancel()
        fail.cancel()
        await worker.cancel()
        await run
        logger.remove(sink)
    assert not errors, errors  # none while shutting down either
    return speaker


async def test_server_vad_turn_and_barge_in(live_server, speech_16k):
    """Server VAD drives the turns (its speech_started also makes the service truncate the reply
    and the aggregator interrupt the pipeline); the user talks over a reply, and is answered."""
    speech = pcm16_24k(speech_16k, lead_s=0.0, tail_s=0.0)

    async def scenario(worker, speaker):
        mic = Mic(worker, 24000)
        try:
            mic.say(speech)
            await nth_reply(speaker, 0)
            await barge_in(mic, speaker, speech)
        finally:
            mic.close()

    speaker = await run_session(live_server, SessionProperties(), scenario)
    assert all(r.spoke() for r in speaker.replies), [len(r.audio) for r in speaker.replies]


async def test_local_turns_cancel_and_text(live_server, speech_16k):
    """Turn detection off, turns driven by Pipecat's local VAD (input_audio_buffer.commit +
    response.create), each opened by a response.cancel: the first with nothing to cancel, the
    next over a reply; then a user text message. Each is answered."""
    speech = float_to_pcm16(speech_16k).tobytes()  # at 16 kHz: what Silero VAD takes

    async def scenario(worker, speaker):
        mic = Mic(worker, 16000)
        try:
            # Nothing has been said yet: the cancel this turn opens with has nothing to cancel,
            # and the server must answer with the one code Pipecat shrugs off.
            mic.say(speech)
            await nth_reply(speaker, 0)
            # Talking over a reply: the InterruptionFrame of the new turn makes the service clear
            # the input buffer, send response.cancel and truncate what was heard.
            await barge_in(mic, speaker, speech)
        finally:
            mic.close()
        text = speaker.open_reply()
        await worker.queue_frame(
            LLMMessagesAppendFrame([{"role": "user", "content": "Hello! What can you do?"}], run_llm=True)
        )
        await text.done.wait()

    manual = SessionProperties(audio=AudioConfiguration(input=AudioInput(turn_detection=False)))
    # A turn ends after half a second of silence, as with the server's VAD (the clip has shorter
    # pauses), not when the smart-turn model guesses so.
    turns = UserTurnStrategies(
        start=[VADUserTurnStartStrategy()],
        stop=[SpeechTimeoutUserTurnStopStrategy(user_speech_timeout=0.5, wait_for_transcript=False)],
    )
    speaker = await run_session(
        live_server, manual, scenario, vad_analyzer=SileroVADAnalyzer(), user_turn_strategies=turns
    )
    assert all(r.spoke() for r in speaker.replies), [len(r.audio) for r in speaker.replies]


async def test_register_function_round_trip(live_server):
    """Pipecat's own tool loop: a FunctionSchema in the context, a handler registered with
    register_function, tool_choice "required" (the random tiny model never opens a call by
    itself; the grammar makes the forced one valid). Pipecat learns of the call from
    conversation.item.added, runs it on arguments.done and sends its output and a response.create;
    the handler first sets the session to "auto" (an LLMUpdateSettingsFrame queued to the
    service, so its session.update goes first), so the answer is spoken, not another call."""
    ran: list[dict] = []
    audio = AudioConfiguration(input=AudioInput(turn_detection=False))

    async def get_weather(params: FunctionCallParams):
        ran.append(dict(params.arguments))
        auto = SessionProperties(audio=audio, tool_choice="auto")
        await params.llm.queue_frame(
            LLMUpdateSettingsFrame(delta=OpenAIRealtimeLLMService.Settings(session_properties=auto))
        )
        await params.result_callback({"forecast": "sunny"})

    weather = FunctionSchema(
        name="get_weather",
        description="The weather forecast for a city.",
        properties={
            "city": {"type": "string", "enum": ["Paris", "Rome", "Oslo"]},
            "days": {"type": "integer", "minimum": 1, "maximum": 7},
        },
        required=["city", "days"],
    )

    async def scenario(worker, speaker):
        await worker.queue_frame(
            LLMMessagesAppendFrame([{"role": "user", "content": "What is the weather in Paris?"}], run_llm=True)
        )
        answer = await nth_reply(speaker, 0)  # opened by its first audio: the call's response has none
        await answer.done.wait()

    speaker = await run_session(
        live_server,
        SessionProperties(audio=audio, tool_choice="required"),
        scenario,
        context=LLMContext(tools=ToolsSchema(standard_tools=[weather])),
        setup=lambda llm: llm.register_function("get_weather", get_weather),
    )
    assert len(ran) == 1 and ran[0]["city"] in ("Paris", "Rome", "Oslo") and 1 <= ran[0]["days"] <= 7, ran
    assert speaker.ends == 2 and speaker.replies[0].spoke(), "one call, then an answer in speech"
