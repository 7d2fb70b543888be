"""The fuzzer's vocabulary (bench/fuzz.py): valid client events of every kind, random junk values,
and one random mutation of an event."""

from __future__ import annotations

import base64
import json
import random

B64 = base64.b64encode(bytes(range(256))).decode()
PCM = base64.b64encode(b"\x00\x10" * 2400).decode()  # 100 ms of 24 kHz PCM16


def templates() -> list[dict]:
    text_item = {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "hello"}]}
    return [
        {"type": "session.update", "session": {"instructions": "Be brief."}},
        {"type": "session.update", "session": {"audio": {"input": {"turn_detection": None}}}},
        {
            "type": "session.update",
            "session": {"audio": {"input": {"turn_detection": {"type": "semantic_vad", "eagerness": "high"}}}},
        },
        {"type": "session.update", "session": {"audio": {"input": {"transcription": {"model": "x"}}}}},
        {"type": "session.update", "session": {"output_modalities": ["text"], "omni": {"video": False, "seed": 3}}},
        {
            "type": "session.update",
            "session": {"audio": {"output": {"omni_reference_audio": {"format": "pcm16", "rate": 16000, "data": B64}}}},
        },
        {"type": "input_audio_buffer.append", "audio": PCM},
        {"type": "input_audio_buffer.append", "audio": PCM},
        {"type": "input_audio_buffer.commit"},
        {"type": "input_audio_buffer.clear"},
        {"type": "input_image_buffer.append", "image": B64},
        {"type": "conversation.item.create", "item": text_item},
        {"type": "conversation.item.create", "item": {**text_item, "role": "system"}},
        {"type": "conversation.item.truncate", "item_id": "item_x", "content_index": 0, "audio_end_ms": 100},
        {"type": "conversation.item.delete", "item_id": "item_x"},
        {"type": "conversation.item.retrieve", "item_id": "item_x"},
        {"type": "response.create", "response": {"max_output_tokens": 8}},
        {"type": "response.create"},
        {"type": "response.cancel"},
    ]


def _junk(rng: random.Random, depth: int = 0):
    kind = rng.randrange(9)
    if kind == 0:
        return None
    if kind == 1:
        return rng.choice([True, False])
    if kind == 2:
        return rng.choice([0, -1, 1, 2**63, -(2**70), 10**30, 7])
    if kind == 3:
        return rng.choice([0.5, -1e308, 1e-9, 3.0])
    if kind == 4:
        return "".join(rng.choice('aZ09 _.-\u00e9\u4e2d\U0001f600\\"') for _ in range(rng.randrange(0, 40)))
    if kind == 5:
        return rng.choice(["", "x" * rng.randrange(1, 100_000), B64, "data:image/png;base64," + B64, "inf"])
    if kind == 6 and depth < 4:
        return [_junk(rng, depth + 1) for _ in range(rng.randrange(0, 4))]
    if kind == 7 and depth < 4:
        return {
            rng.choice(["type", "audio", "item", "session", "x", "content", "role"]): _junk(rng, depth + 1)
            for _ in range(rng.randrange(0, 4))
        }
    return rng.choice(["session.update", "message", "user", "assistant", "input_text", "server_vad", "audio/pcm"])


def mutate(rng: random.Random, obj):
    """One random change somewhere inside `obj` (a copy)."""
    obj = json.loads(json.dumps(obj))
    paths, stack = [], [(obj, [])]
    while stack:
        node, path = stack.pop()
        if isinstance(node, dict):
            for k, v in node.items():
                paths.append((node, k))
                stack.append((v, path + [k]))
        elif isinstance(node, list):
            for i, v in enumerate(node):
                paths.append((node, i))
                stack.append((v, path + [i]))
    if not paths:
        return obj
    parent, key = rng.choice(paths)
    op = rng.randrange(4)
    if op == 0 and isinstance(parent, dict):
        del parent[key]
    elif op == 1 and isinstance(parent, dict):
        parent[rng.choice(["bogus", "event_id", "metadata", "type", "omni"])] = _junk(rng)
    else:
        parent[key] = _junk(rng)
    return obj
