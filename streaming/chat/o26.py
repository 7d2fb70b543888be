"""A chat request on MiniCPM-o 2.6: the engine commands that answer it, decided before any runs.

Owns the mapping of a request onto an engine session, the same session a realtime conversation
holds: the system prompt (every system message's text as the instructions, the voice clip, the
realtime session's `audio_assistant` mode and seed), then one prefill per piece of the history in
order, then the reply's `GenerateOptions`. User messages open a user turn (a following one
continues it after a newline); their audio goes in 1-s pieces, as the realtime listener feeds
units (the streaming encoder then sees what the offline chunk mask shows it); video frames are
images. An earlier assistant message is prefilled as the TTS template renders a finished reply
(`prompt.history_reply`), one with calls and the tools' results as the official template writes
them (omni.tools.turns); the tools are listed at the system turn's end and the reply may call
them (`GenerateOptions.tools`). Pure: checks and refusals happen here, before a slot is taken.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np

from omni.processing.prompt import history_reply, plain_text
from omni.sampling import SamplingParams
from omni.session.engine import GenerateOptions
from omni.tools.prompt import tools_section

from ..errors import ProtocolError
from .request import Audio, ChatRequest, Frames, Image, Message, Sampling, Text

UNIT_16K = 16_000  # audio is prefilled one second at a time, as the realtime listener does
MIN_PIECE_16K = 1_600  # 100 ms: the shortest audio the request parser lets through
TITLE = "MiniCPM-o 2.6"


@dataclass(frozen=True)
class EnginePlan:
    seed: int | None
    mode: str  # omni.processing.prompt.SYS_MODES
    reference_16k: np.ndarray | None
    instructions: str | None  # None: the mode's own system prompt
    prefills: tuple[dict, ...]  # EngineHandle.prefill messages, in order
    options: GenerateOptions
    tools: str = ""  # the template's `# Tools` section at the system turn's end ("" without tools)


def plan(req: ChatRequest, max_reply_tokens: int, max_speech_s: float) -> EnginePlan:
    """Raises ProtocolError for what o-2.6 cannot answer (naming the family)."""
    if req.thinking:
        raise ProtocolError(
            "unsupported_parameter",
            f"{TITLE} has no thinking mode: leave out reasoning_effort (or send 'none') and enable_thinking",
            "reasoning_effort",
        )
    system = [m for m in req.messages if m.role == "system"]
    turns = [m for m in req.messages if m.role != "system"]
    if not turns or turns[-1].role not in ("user", "tool"):
        raise ProtocolError(
            "invalid_value",
            f"the last message must be the user's or a tool's result: {TITLE} answers a user turn",
            f"messages[{len(req.messages) - 1}].role" if req.messages else "messages",
        )
    instructions = plain_text("\n".join(m.text for m in system)) or None
    prefills: list[dict] = []
    user_open = False
    for m in turns:
        if m.role == "assistant" and m.calls:  # a turn with calls, as the template writes it (omni.tools.turns)
            calls = [(c.name, c.arguments) for c in m.calls]
            prefills.append({"turn": True, "role": "assistant", "content": m.text, "calls": calls})
            user_open = False
        elif m.role == "assistant":
            prefills.append({"role": "assistant", "content": [history_reply(plain_text(m.text), user_open)]})
            user_open = False
        elif m.role == "tool":  # a result: `<tool_response>` in a user turn (several in one)
            prefills.append({"turn": True, "role": "tool", "content": m.text})
            user_open = True
        else:
            prefills += _user(m, continues=user_open)
            user_open = True
    speech = req.speech
    limit = max_reply_tokens if req.max_tokens is None else min(req.max_tokens, max_reply_tokens)
    options = GenerateOptions(
        sampling=sampling(req.sampling),
        max_new_tokens=limit,
        generate_audio=speech is not None,
        max_speech_s=max_speech_s,
        low_latency=True,
        tools=req.tools,
    )
    ref = speech.reference_16k if speech is not None else None
    tools = tools_section(req.tools.tools) if req.tools is not None else ""
    return EnginePlan(req.sampling.seed, "audio_assistant", ref, instructions, tuple(prefills), options, tools)


def _user(m: Message, continues: bool) -> list[dict]:
    """One user message -> prefills: text and images together, each audio part in 1-s pieces."""
    out: list[dict] = []
    content: list = ["\n"] if continues else []
    for p in m.parts:
        if isinstance(p, Text):
            content.append(plain_text(p.text))
        elif isinstance(p, Image):
            content.append(p.image)
        elif isinstance(p, Frames):
            content += list(p.frames)
        elif isinstance(p, Audio):
            if content:
                out.append({"role": "user", "content": content})
                content = []
            a = p.audio_16k
            cuts = list(range(0, len(a), UNIT_16K))[1:]
            if cuts and len(a) - cuts[-1] < MIN_PIECE_16K:
                cuts.pop()  # a short tail rides with the second before it (the encoder needs ~20 ms)
            out += [{"role": "user", "content": [piece]} for piece in np.split(a, cuts)]
    if content or not out:
        out.append({"role": "user", "content": content or [""]})
    return out


def sampling(s: Sampling) -> SamplingParams:
    """The official streaming preset (spec §4.4) with the request's knobs over it; temperature 0
    is greedy."""
    base = SamplingParams()
    if s.temperature == 0:
        base = dataclasses.replace(base, do_sample=False)
    elif s.temperature is not None:
        base = dataclasses.replace(base, temperature=s.temperature)
    given = {"top_p": s.top_p, "top_k": s.top_k, "repetition_penalty": s.repetition_penalty}
    return dataclasses.replace(base, **{k: v for k, v in given.items() if v is not None})
