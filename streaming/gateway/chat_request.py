"""A Chat Completions request body (OpenAI's JSON) -> chat.request.ChatRequest, or a clear refusal.

Owns the request's fields: which are honoured (sampling, token caps, stop, seed, streaming and
its usage chunk, audio out with a voice and format, thinking on MiniCPM-V 4.5 as
`reasoning_effort` or vLLM's `chat_template_kwargs.enable_thinking`, vLLM's `top_k` and
`repetition_penalty`, function tools: chat_tools.py), which are accepted and change nothing
(`ignored`: metadata for OpenAI's own services), and which are refused by name (n > 1, the
deprecated functions API, log probabilities, penalties and biases this model's sampler does not
have, structured output).
Unknown fields are refused, as OpenAI does, so a typo never passes silently. Messages and media:
chat_messages.py. Does not own: what each family accepts (chat/).
"""

from __future__ import annotations

from typing import Any

from ..chat.request import ChatRequest, Sampling, Speech
from .chat_messages import Budget, parse_messages
from .chat_tools import tool_spec
from .codecs import read_wav_any
from .session_config import reference_audio
from .validate import as_type, bad, get_field, in_range, no_unknown, one_of

IGNORED = (
    "user",
    "metadata",
    "store",
    "service_tier",
    "safety_identifier",
    "prompt_cache_key",
    "prompt_cache_retention",
    "prompt_cache_options",
    "verbosity",
)
REFUSED = {  # field -> why (sent only when the value asks for something; null, 0 or empty pass)
    "functions": "the deprecated functions API is not supported: send 'tools' and 'tool_choice'",
    "function_call": "the deprecated functions API is not supported: send 'tools' and 'tool_choice'",
    "logprobs": "log probabilities are not returned by this server",
    "top_logprobs": "log probabilities are not returned by this server",
    "frequency_penalty": "the model's sampler has no frequency penalty (use repetition_penalty)",
    "presence_penalty": "the model's sampler has no presence penalty (use repetition_penalty)",
    "logit_bias": "logit biases are not supported",
    "prediction": "predicted outputs are not supported",
    "web_search_options": "web search is not available",
}
HONOURED = (
    "model",
    "messages",
    "stream",
    "stream_options",
    "max_tokens",
    "max_completion_tokens",
    "temperature",
    "top_p",
    "top_k",
    "repetition_penalty",
    "seed",
    "stop",
    "n",
    "modalities",
    "audio",
    "reasoning_effort",
    "chat_template_kwargs",
    "tools",
    "tool_choice",
    "parallel_tool_calls",
    "response_format",
)
MAX_STOPS = 4  # as OpenAI
OUTPUT_AUDIO_FORMATS = ("wav", "pcm16")
EFFORTS = ("none", "minimal", "low", "medium", "high", "xhigh")
THINKING_EFFORTS = ("low", "medium", "high", "xhigh")
MAX_TOKENS = 1 << 20  # larger caps are clamped to the server's max_reply_tokens anyway


def parse_request(body: Any, max_image_pixels: int) -> ChatRequest:
    """Raises ProtocolError / MediaError naming the field (`param`) that is wrong."""
    req = as_type(body, dict, "body")
    no_unknown(req, HONOURED + IGNORED + tuple(REFUSED), "")
    for key, why in REFUSED.items():
        if _asks(req.get(key)):
            raise bad("unsupported_parameter", f"'{key}': {why}.", key)
    get_field(req, "model", str, "", required=True)
    n = get_field(req, "n", int, "")
    if n is not None and n != 1:
        raise bad("unsupported_value", f"'n' is {n}: this server returns one choice (n = 1) only.", "n")
    fmt = get_field(req, "response_format", dict, "")
    if fmt is not None and fmt.get("type") != "text":
        raise bad(
            "unsupported_value", '\'response_format\': only {"type": "text"} is supported.', "response_format.type"
        )
    stream = bool(get_field(req, "stream", bool, ""))
    options = get_field(req, "stream_options", dict, "") or {}
    no_unknown(options, ("include_usage", "include_obfuscation"), "stream_options")
    include_usage = bool(get_field(options, "include_usage", bool, "stream_options"))
    speech = _speech(req, stream)
    budget = Budget(max_image_pixels)
    return ChatRequest(
        messages=parse_messages(req.get("messages"), budget),
        sampling=_sampling(req),
        max_tokens=_max_tokens(req),
        stop=_stops(req.get("stop")),
        speech=speech,
        thinking=_thinking(req),
        tools=tool_spec(req),
        stream=stream,
        include_usage=stream and include_usage,
        ignored=tuple(k for k in IGNORED if req.get(k) is not None),
    )


def _asks(v: Any) -> bool:
    """A refused field that asks for nothing: absent, null, false, 0 or empty."""
    return v not in (None, False, 0, 0.0, [], {})


def _sampling(req: dict) -> Sampling:
    t = get_field(req, "temperature", float, "")
    if t is not None:
        in_range(t, 0.0, 2.0, "temperature")
    top_p = get_field(req, "top_p", float, "")
    if top_p is not None:
        in_range(top_p, 0.0, 1.0, "top_p")
    top_k = get_field(req, "top_k", int, "")
    if top_k is not None:
        in_range(top_k, -1, 1 << 20, "top_k")  # -1 or 0: off, as vLLM's -1
    penalty = get_field(req, "repetition_penalty", float, "")
    if penalty is not None:
        in_range(penalty, 0.01, 10.0, "repetition_penalty")
    seed = get_field(req, "seed", int, "")
    if seed is not None:
        in_range(seed, -(1 << 63), (1 << 64) - 1, "seed")  # what torch.Generator.manual_seed takes
    return Sampling(t, top_p, max(top_k, 0) if top_k is not None else None, penalty, seed)


def _max_tokens(req: dict) -> int | None:
    caps = [(k, get_field(req, k, int, "")) for k in ("max_completion_tokens", "max_tokens")]
    given = [(k, v) for k, v in caps if v is not None]
    for k, v in given:
        in_range(v, 1, MAX_TOKENS, k)
    return min(v for _, v in given) if given else None


def _stops(v: Any) -> tuple[str, ...]:
    if v is None:
        return ()
    stops = [v] if isinstance(v, str) else as_type(v, list, "stop")
    if len(stops) > MAX_STOPS:
        raise bad("invalid_value", f"'stop' holds {len(stops)} strings; the limit is {MAX_STOPS}.", "stop")
    out = tuple(as_type(s, str, f"stop[{i}]") for i, s in enumerate(stops))
    if any(not s or len(s) > 256 for s in out):
        raise bad("invalid_value", "Each 'stop' string must be 1 to 256 characters.", "stop")
    return out


def _speech(req: dict, stream: bool) -> Speech | None:
    mods = get_field(req, "modalities", list, "") or ["text"]
    for i, m in enumerate(mods):
        one_of(as_type(m, str, f"modalities[{i}]"), ("text", "audio"), f"modalities[{i}]")
    audio = get_field(req, "audio", dict, "")
    if "audio" not in mods:
        if audio is not None:
            raise bad("invalid_value", "'audio' is set but 'modalities' has no 'audio'.", "audio")
        return None
    if audio is None:
        raise bad("missing_required_parameter", "Missing required parameter: 'audio' (voice and format).", "audio")
    no_unknown(audio, ("voice", "format", "omni_reference_audio"), "audio")
    voice = audio.get("voice")
    if isinstance(voice, dict):
        raise bad(
            "unsupported_value",
            "'audio.voice': custom voice ids are not known here; clone a voice with audio.omni_reference_audio.",
            "audio.voice",
        )
    voice = get_field(audio, "voice", str, "audio", required=True)
    if not 0 < len(voice) <= 64:
        raise bad("invalid_value", "'audio.voice' must be 1 to 64 characters.", "audio.voice")
    fmt = one_of(get_field(audio, "format", str, "audio", required=True), OUTPUT_AUDIO_FORMATS, "audio.format")
    if stream and fmt != "pcm16":
        raise bad(
            "unsupported_value", "'audio.format': a streamed reply's audio is pcm16 (as OpenAI's).", "audio.format"
        )
    return Speech(voice, fmt, _reference(audio.get("omni_reference_audio")))


def _reference(v: Any):
    """[ext] `audio.omni_reference_audio`: the realtime session's voice-clone clip, same shape."""
    ref = reference_audio(v, "audio.omni_reference_audio")
    return None if ref is None else read_wav_any(ref.data, ref.rate_hz if ref.format == "pcm16" else None)


def _thinking(req: dict) -> bool:
    effort = get_field(req, "reasoning_effort", str, "")
    thinking = effort is not None and one_of(effort, EFFORTS, "reasoning_effort") in THINKING_EFFORTS
    kwargs = get_field(req, "chat_template_kwargs", dict, "")
    if kwargs is not None:
        no_unknown(kwargs, ("enable_thinking",), "chat_template_kwargs")
        enable = get_field(kwargs, "enable_thinking", bool, "chat_template_kwargs")
        if enable is not None:
            thinking = enable  # the template's own switch wins over the effort
    return thinking
