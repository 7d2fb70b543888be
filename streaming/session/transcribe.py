"""User transcripts by MiniCPM-o itself: each committed user turn's audio through the model's
official ASR prompt, on a background engine session of its own.

Owns: the queue of turns to transcribe (one at a time, in commit order, on one task), the
short-lived engine session each turn uses (opened as `background`: its ops run only when no
reply or unit op is due soon, omni.batch.schedule, so transcripts never delay first audio), and
the transcription events. Does not own: the conversation's context (the transcript never enters
it) or when a turn ends.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import numpy as np

from omni.sampling import GREEDY
from omni.session.engine import GenerateOptions

from ..errors import CapacityError
from . import events as E
from .tasks import Spawn, plain_task

log = logging.getLogger("omni.transcribe")
# The MiniCPM-o 2.6 model card's ASR prompts (English, and Chinese for `language: "zh"`).
ASR_PROMPTS = {
    "en": "Please listen to the audio snippet carefully and transcribe the content.",
    "zh": "请仔细听这段音频片段，并对其内容进行逐字记录。",
}
RATE_HZ = 16_000
WINDOW_S = 30  # the audio encoder's longest clip: longer turns go window by window
MIN_CLIP_S = 1.0  # a shorter clip is padded with silence (the prompt's clip must be 1-30 s)
# Tokens a window may take: twice fast speech (~4 tokens/s), so a model that never stops (the
# embedded random one) ends there too.
BASE_TOKENS, TOKENS_PER_S = 16, 8
OPEN_RETRY_S = 0.5  # every slot taken: try again this often...
OPEN_WAIT_S = 20.0  # ...for this long, then the turn's transcript fails (server_busy)
MAX_QUEUED = 8  # turns waiting; more are failed at once (a client outpacing the model)


@dataclass(frozen=True)
class Job:
    item_id: str
    audio_16k: np.ndarray
    language: str | None


class Transcriber:
    def __init__(
        self,
        worker,
        send: Callable,
        clock_s: Callable[[], float] = time.monotonic,
        after: Callable[[], Awaitable] | None = None,
        spawn: Spawn = plain_task,
    ):
        """`after()`: awaited before each turn's transcript, so the turn's reply goes first."""
        self.worker, self.send, self.clock_s, self.after, self.spawn = worker, send, clock_s, after, spawn
        self.queue: asyncio.Queue[Job] = asyncio.Queue()
        self.task: asyncio.Task | None = None
        self.closed = False

    def submit(self, item_id: str, audio_16k: np.ndarray, language: str | None) -> None:
        """Transcribe a committed user turn; its events follow whenever the model has time."""
        if self.closed:
            return
        if self.queue.qsize() >= MAX_QUEUED:
            err = CapacityError(
                "transcription_backlog", f"{MAX_QUEUED} turns already wait for their transcripts; this one is skipped"
            )
            self.spawn(self.send(E.TranscriptFailed(item_id, err)), "transcript refused")
            return
        self.queue.put_nowait(Job(item_id, audio_16k, language))
        if self.task is None or self.task.done():
            self.task = self.spawn(self._run(), "transcriber")

    async def close(self) -> None:
        self.closed = True
        if self.task is not None:
            self.task.cancel()
            await asyncio.gather(self.task, return_exceptions=True)

    async def _run(self) -> None:
        while True:
            job = await self.queue.get()
            try:
                if self.after is not None:
                    await self.after()
                await self._retrying(job)
            except asyncio.CancelledError:
                raise
            except Exception as e:  # noqa: BLE001 - a failed transcript is an event, the session goes on
                await self.send(E.TranscriptFailed(job.item_id, e))

    async def _retrying(self, job: Job) -> None:
        """While every background slot is taken (at the open, or at the first command where the
        open is lazy: Ray), wait a little for one."""
        give_up = self.clock_s() + OPEN_WAIT_S
        while True:
            try:
                return await self._transcribe(job)
            except CapacityError:
                if self.clock_s() >= give_up:
                    raise
                await asyncio.sleep(OPEN_RETRY_S)

    async def _transcribe(self, job: Job) -> None:
        engine = self.worker.open_session(None, background=True)
        try:
            prompt = ASR_PROMPTS["zh" if (job.language or "").startswith("zh") else "en"]
            parts: list[str] = []
            for window in windows(job.audio_16k):
                # The official ASR message, one user turn [prompt, clip], as a fresh context.
                await engine.set_system(0, "omni", window, prompt)
                await engine.start_reply(
                    GenerateOptions(sampling=GREEDY, max_new_tokens=max_tokens(window), generate_audio=False)
                )
                while (item := await engine.reply_step()) is not None:
                    if item[0]:
                        parts.append(item[0])
                        await self.send(E.TranscriptText(job.item_id, item[0]))
            await self.send(E.TranscriptDone(job.item_id, "".join(parts).strip(), len(job.audio_16k) / RATE_HZ))
        finally:
            engine.close()


def windows(audio_16k: np.ndarray) -> list[np.ndarray]:
    """The clip in pieces of at most WINDOW_S, each at least MIN_CLIP_S (padded with silence)."""
    step = WINDOW_S * RATE_HZ
    pieces = [audio_16k[i : i + step] for i in range(0, max(len(audio_16k), 1), step)]
    least = int(MIN_CLIP_S * RATE_HZ)
    return [np.pad(p, (0, max(0, least - len(p)))).astype(np.float32) for p in pieces]


def max_tokens(window_16k: np.ndarray) -> int:
    return BASE_TOKENS + int(TOKENS_PER_S * len(window_16k) / RATE_HZ)
