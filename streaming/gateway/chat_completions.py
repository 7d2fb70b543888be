"""OpenAI Chat Completions on the wire: `POST /v1/chat/completions` and `GET /v1/models`.

Owns the HTTP side of a chat request: reading the body (the server's max_message_bytes, 413
beyond), parsing it (chat_request.py; large bodies on a thread so media decoding never stalls the
event loop), the answer as one `chat.completion` object or as Server-Sent Events
(`chat.completion.chunk`s, a usage chunk with `stream_options.include_usage`, `data: [DONE]`),
reply audio as `delta.audio` chunks of PCM16 with their transcript or one WAV/PCM16 file,
thinking text as `reasoning_content`, and tool calls (chat_tools.ChatCalls). Errors before the
first byte are JSON in OpenAI's shape (errors.http_error, the one place that makes them); after
it, an SSE `error` event ends the stream.
Auth and origin checks are the server's middlewares, as for the realtime routes.
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import time

import numpy as np
from aiohttp import web

from ..chat.complete import ClientGone, Completion
from ..errors import ProtocolError
from ..ids import new_id
from .chat_request import parse_request
from .chat_tools import ChatCalls
from .codecs import MODEL_OUTPUT_RATE_HZ, OutputAudioStream, float_to_pcm16, wav_bytes
from .errors import http_error

log = logging.getLogger("omni.chat")
ROUTES = ("/v1/chat/completions", "/v1/models")
THREAD_PARSE_BYTES = 64 * 1024  # bodies this large carry media: decoded off the event loop
AUDIO_EXPIRES_S = 3600  # `audio.expires_at` (nothing is kept; the field is required by clients)


def register(app: web.Application) -> None:
    app.router.add_post("/v1/chat/completions", chat_completions)
    app.router.add_get("/v1/models", list_models)
    app.router.add_get("/v1/models/{model}", get_model)


def _error(exc: BaseException) -> web.Response:
    status, body = http_error(exc)
    return web.json_response(body, status=status)


def model_object(app: web.Application) -> dict:
    family = app["family"]
    return {
        "id": app["model_name"],
        "object": "model",
        "created": app["started_at"],
        "owned_by": "omni",
        "family": family.key,  # [ext] what the loaded model is: "o-2.6" | "v-4.5"
        "family_title": family.title,
        "modalities": {"input": list(family.inputs), "output": ["audio" if h == "speech" else h for h in family.heads]},
    }


async def list_models(request: web.Request) -> web.Response:
    return web.json_response({"object": "list", "data": [model_object(request.app)]})


async def get_model(request: web.Request) -> web.Response:
    if request.match_info["model"] != request.app["model_name"]:
        name = request.match_info["model"]
        return _error(ProtocolError("model_not_found", f"The model '{name}' does not exist here.", "model"))
    return web.json_response(model_object(request.app))


async def _body(request: web.Request):
    try:
        raw = await request.read()
    except web.HTTPRequestEntityTooLarge:
        limit = request.app["settings"].max_message_bytes
        raise ProtocolError(
            "request_too_large", f"The request body is over {limit} bytes (the server's max_message_bytes)."
        ) from None
    try:
        return json.loads(raw), len(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ProtocolError("invalid_json", f"The request body is not valid JSON: {e}.") from None


async def chat_completions(request: web.Request) -> web.StreamResponse:
    app = request.app
    try:
        body, size = await _body(request)
        px = app["settings"].max_image_pixels
        req = await asyncio.to_thread(parse_request, body, px) if size > THREAD_PARSE_BYTES else parse_request(body, px)
        if req.ignored:
            log.debug("chat request: ignored %s", ", ".join(req.ignored))
        completion = Completion(app, req, gone=lambda: request.transport is None or request.transport.is_closing())
    except Exception as e:  # noqa: BLE001 - every refusal in OpenAI's shape
        return _error(e)
    reply = _Reply(app["model_name"], req)
    try:
        async with completion as c:  # admission: server_busy (503) before anything is sent
            if req.stream:
                return await _stream(request, c, reply)
            async for piece in c.pieces():
                reply.add(piece)
            return web.json_response(reply.whole(c.outcome))
    except ClientGone:
        return web.Response(status=499)  # nobody reads it
    except Exception as e:  # noqa: BLE001
        return _error(e)


async def _stream(request: web.Request, c: Completion, reply: "_Reply") -> web.StreamResponse:
    resp = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"})
    await resp.prepare(request)

    def event(obj) -> bytes:
        return b"data: " + (obj if isinstance(obj, bytes) else json.dumps(obj).encode()) + b"\n\n"

    async def send(obj) -> None:
        await resp.write(event(obj))

    try:
        await send(reply.chunk(reply.first_delta()))
        try:
            async for piece in c.pieces():
                for delta in reply.deltas(piece):
                    await send(reply.chunk(delta))
            tail = reply.audio_tail()
            if tail:
                await send(reply.chunk(tail))
        except ClientGone:
            raise
        except Exception as e:  # noqa: BLE001 - mid-stream: an SSE error event ends the stream
            await send(http_error(e)[1])
            return resp
        outcome = c.outcome
        assert outcome is not None, "pieces() ran to its end"
        end = [reply.chunk({}, outcome.finish_reason)]
        if reply.req.include_usage:
            end.append(reply.chunk(None, usage=reply.usage(outcome)))
        await resp.write_eof(b"".join(event(e) for e in [*end, b"[DONE]"]))  # one write: the stream's end
    except (ConnectionError, ClientGone):  # the client went away: `async with` frees the slot
        pass
    return resp


class _Reply:
    """One reply's wire state: ids, the text and audio so far, the audio encoder of a stream."""

    def __init__(self, model: str, req) -> None:
        self.model, self.req = model, req
        self.id, self.created = new_id("chatcmpl"), int(time.time())
        self.audio_id = new_id("audio")
        self.text: list[str] = []
        self.reasoning: list[str] = []
        self.wavs: list[np.ndarray] = []
        self.encoder = OutputAudioStream("audio/pcm") if req.speech is not None else None
        self.calls = ChatCalls()

    def add(self, piece) -> None:
        self.text.append(piece.text)
        self.reasoning.append(piece.reasoning)
        if piece.audio_24k is not None:
            self.wavs.append(piece.audio_24k)
        self.calls.deltas(piece.calls)

    def first_delta(self) -> dict:
        return {"role": "assistant"} if self.req.speech is not None else {"role": "assistant", "content": ""}

    def deltas(self, piece) -> list[dict]:
        out = []
        if piece.reasoning:
            out.append({"reasoning_content": piece.reasoning})
        if self.encoder is None:
            if piece.text:
                out.append({"content": piece.text})
            return out + self.calls.deltas(piece.calls)
        audio: dict = {"id": self.audio_id}
        if piece.text:
            audio["transcript"] = piece.text
        if piece.audio_24k is not None and (data := self.encoder.push(piece.audio_24k)):
            audio["data"] = data
        if len(audio) > 1:
            audio["expires_at"] = self.created + AUDIO_EXPIRES_S
            out.append({"audio": audio})
        return out + self.calls.deltas(piece.calls)

    def audio_tail(self) -> dict | None:
        data = self.encoder.flush() if self.encoder is not None else ""
        return {"audio": {"id": self.audio_id, "data": data}} if data else None

    def chunk(self, delta: dict | None, finish_reason: str | None = None, usage: dict | None = None) -> dict:
        choices = (
            [] if delta is None else [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}]
        )
        out = {"id": self.id, "object": "chat.completion.chunk", "created": self.created, "model": self.model}
        out["choices"] = choices
        if self.req.include_usage:
            out["usage"] = usage  # null but in the last chunk, as OpenAI
        return out

    @staticmethod
    def usage(outcome) -> dict:
        p, c = outcome.prompt_tokens, outcome.completion_tokens
        return {"prompt_tokens": p, "completion_tokens": c, "total_tokens": p + c}

    def whole(self, outcome) -> dict:
        text = "".join(self.text)
        calls = self.calls.whole()
        message: dict = {"role": "assistant", "content": text if text or not calls else None, "refusal": None}
        if reasoning := "".join(self.reasoning):
            message["reasoning_content"] = reasoning
        if calls:
            message["tool_calls"] = calls
        speech = self.req.speech
        if speech is not None and (self.wavs or text or not calls):  # a forced call alone has no audio
            wav = np.concatenate(self.wavs) if self.wavs else np.zeros(0, np.float32)
            pcm = float_to_pcm16(wav)
            data = wav_bytes(pcm, MODEL_OUTPUT_RATE_HZ) if speech.format == "wav" else pcm.astype("<i2").tobytes()
            message["content"] = None  # as OpenAI: the words are the audio's transcript
            message["audio"] = {
                "id": self.audio_id,
                "data": base64.b64encode(data).decode("ascii"),
                "expires_at": self.created + AUDIO_EXPIRES_S,
                "transcript": text,
            }
        return {
            "id": self.id,
            "object": "chat.completion",
            "created": self.created,
            "model": self.model,
            "choices": [{"index": 0, "message": message, "logprobs": None, "finish_reason": outcome.finish_reason}],
            "usage": self.usage(outcome),
        }
