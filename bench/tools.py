"""Function-calling figures (one JSON line): the grammar's cost on the real 151k vocabulary, and
end of speech -> a call's arguments done vs -> first audio on a live server.

* `mask_us_per_token` per schema style and per level N (1, 16, 32 sessions): the per-row token
  masks of one batched step, as the engine makes them (`omni.token_masks.gather`, each row's
  `CallMatcher.fill`), per drawn token per session (mean and p95 of steps / N); tokens the grammar
  forces are fed without a mask, as in the engine (`forced_share`). `apply_us_per_row`: unpacking
  the bits and masking a [N, 151700] row of logits. The calls are random walks: noise logits, with
  a pull towards tokens that close strings (so strings end after a few tokens, as a model's do).
* `compile_ms`: a reply's grammar compiled (`LLMatcher(tokenizer, lark(spec))`), median, for
  LiveKit-style schemas (pydantic: $defs, $ref, anyOf, title, defaults) and Agents-SDK-style
  strict ones (all required, additionalProperties false), one tool and five.
* `latency` per level (default 1 and 16 sessions, manual turns all committed at once, the tiny
  model on `omni serve`): end of speech -> first audio without tools (`off`), with a tool defined
  but unused (`auto`), and -> `response.function_call_arguments.done` with a forced call
  (`required`), p50/p95.

    python bench/tools.py [--levels 1,16,32] [--latency-levels 1,16] [--skip-latency] [--tokenizer CKPT_DIR]

`--tokenizer`: a checkpoint directory (its tokenizer files) instead of the bundled Qwen vocabulary
(bench/assets/qwen) with MiniCPM-o's special tokens.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import lzma
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))

from omni import token_masks  # noqa: E402
from omni.tools.grammar import Grammars, lark  # noqa: E402
from omni.tools.spec import Tool, ToolSpec  # noqa: E402

QWEN = REPO / "bench" / "assets" / "qwen"
TINY = REPO / "omni" / "assets" / "tiny"
VOCAB = 151_700  # MiniCPM-o 2.6's LM head

LIVEKIT = {  # pydantic's model_json_schema of a LiveKit @function_tool's arguments
    "$defs": {"Unit": {"enum": ["celsius", "fahrenheit"], "title": "Unit", "type": "string"}},
    "properties": {
        "location": {"description": "The city and country", "title": "Location", "type": "string"},
        "unit": {"$ref": "#/$defs/Unit", "default": "celsius"},
        "days": {"anyOf": [{"type": "integer"}, {"type": "null"}], "default": None, "title": "Days"},
    },
    "required": ["location"],
    "title": "GetWeatherArgs",
    "type": "object",
}
AGENTS = {  # the Agents SDK's strict schema of an @function_tool
    "properties": {
        "name": {"title": "Name", "type": "string"},
        "date": {"description": "YYYY-MM-DD", "title": "Date", "type": "string"},
        "party": {"title": "Party", "type": "integer"},
        "seating": {"enum": ["inside", "outside"], "title": "Seating", "type": "string"},
        "notes": {"items": {"type": "string"}, "title": "Notes", "type": "array"},
    },
    "required": ["name", "date", "party", "seating", "notes"],
    "title": "book_table_args",
    "type": "object",
    "additionalProperties": False,
}
STYLES = {"livekit": LIVEKIT, "agents_sdk": AGENTS}


def qwen_tokenizer(ckpt: str | None):
    """MiniCPM-o's tokenizer: a checkpoint's, or the bundled Qwen vocabulary + its special tokens."""
    if ckpt:
        from omni.processing.tokens import load_tokenizer

        return load_tokenizer(ckpt)
    from tokenizers import Tokenizer
    from transformers import PreTrainedTokenizerFast

    spec = json.loads((TINY / "tokenizer.json").read_text())  # Qwen2's pre-tokenizer and decoder
    spec["model"]["vocab"] = json.loads(lzma.decompress((QWEN / "vocab.json.xz").read_bytes()))
    merges = lzma.decompress((QWEN / "merges.txt.xz").read_bytes()).decode().split("\n")[1:]
    spec["model"]["merges"] = [m for m in merges if m]
    names = sorted(json.loads((TINY / "added_tokens.json").read_text()).items(), key=lambda kv: kv[1])
    base = len(spec["model"]["vocab"])
    spec["added_tokens"] = [
        {"id": base + i, "content": n, "single_word": False, "lstrip": False, "rstrip": False, "normalized": False}
        | {"special": n not in ("<tool_call>", "</tool_call>")}
        for i, (n, _) in enumerate(x for x in names if x[0] != "<unk>")
    ]
    return PreTrainedTokenizerFast(tokenizer_object=Tokenizer.from_str(json.dumps(spec)), eos_token="<|im_end|>")


def closers(tok) -> np.ndarray:
    """Ids of tokens that can close a JSON string, array or object (the walk's pull)."""
    ids = [i for t, i in tok.get_vocab().items() if i < VOCAB and any(c in t for c in '"}]')]
    return np.array(ids)


def walk(g: Grammars, spec: ToolSpec, n: int, pull: np.ndarray, rng: np.random.Generator, replies: int) -> dict:
    """`replies` rounds of n sessions each writing one call; the masks of each batched step timed."""
    open_id = g.tok.tokenize_str("<tool_call>", parse_special=True)[0]
    eos = g.tok.eos_token
    per_token, apply_us, drawn, forced = [], [], 0, 0
    for _ in range(replies):
        ms = [g.matcher(spec) for _ in range(n)]
        live = list(range(n))
        for m in ms:
            m.consume(open_id)
        while live:
            for b in live:  # forced tokens: fed without a mask
                ff = ms[b].forced()
                for t in ff:
                    ms[b].consume(t)
                forced += len(ff)
            live = [b for b in live if not ms[b].stopped]
            if not live:
                break
            t0 = time.perf_counter()
            bits = token_masks.gather([ms[b] for b in live], VOCAB, torch.device("cpu"))
            t1 = time.perf_counter()
            assert bits is not None
            logits = torch.from_numpy(rng.standard_normal((len(live), VOCAB)).astype(np.float32))
            logits[:, pull] += 4.0
            t2 = time.perf_counter()
            masked = token_masks.apply_(logits, bits)
            t3 = time.perf_counter()
            per_token.append(1e6 * (t1 - t0) / len(live))
            apply_us.append(1e6 * (t3 - t2) / len(live))
            for b, t in zip(list(live), masked.argmax(-1).tolist()):
                drawn += 1
                if t == eos:
                    live.remove(b)
                else:
                    ms[b].consume(t)
    per_token.sort()
    return {
        "median": round(statistics.median(per_token), 1),
        "mean": round(statistics.fmean(per_token), 1),
        "p95": round(per_token[int(0.95 * (len(per_token) - 1))], 1),
        "apply_us_per_row": round(statistics.median(apply_us), 1),
        "forced_share": round(forced / max(forced + drawn, 1), 2),
        "drawn_tokens": drawn,
    }


def compile_ms(g: Grammars, tools: tuple[Tool, ...], runs: int = 15) -> float:
    import llguidance as llg

    text = lark(ToolSpec(tools, "auto"))
    times = []
    for _ in range(runs):
        t = time.perf_counter()
        llg.LLMatcher(g.tok, text, log_level=0)
        times.append(1000 * (time.perf_counter() - t))
    return round(statistics.median(times), 2)


async def latency(levels: list[int], port: int) -> list[dict]:
    import gateway as G

    server = G.start_server(port, max(levels), str(REPO / "bench" / "gateway-server.toml"))
    try:
        url = f"ws://127.0.0.1:{port}/v1/realtime"
        messages = G.appends(G.utterance_pcm16_24k())
        out = []
        for n in levels:
            point = {"sessions": n}
            for name, choice in (("off", None), ("auto", "auto"), ("required", "required")):
                p = await G.level(url, messages, n, "manual", transcribe=False, tool_choice=choice)
                if choice == "required":
                    point[name] = {k: p[k] for k in ("eos_to_args_done_ms_p50", "eos_to_args_done_ms_p95")}
                else:
                    point[name] = {"eos_to_first_audio_ms_p95": p["eos_to_first_audio_ms_p95"], "held": p["held"]}
            out.append(point)
        return out
    finally:
        server.terminate()
        server.wait(60)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--levels", default="1,16,32")
    ap.add_argument("--replies", type=int, default=4, help="calls per session per level and style")
    ap.add_argument("--latency-levels", default="1,16")
    ap.add_argument("--skip-latency", action="store_true")
    ap.add_argument("--tokenizer", default=None, help="a checkpoint dir whose tokenizer to use")
    ap.add_argument("--port", type=int, default=8791)
    a = ap.parse_args()
    torch.set_num_threads(1)  # the masks are computed on the engine thread
    t = time.perf_counter()
    tok = qwen_tokenizer(a.tokenizer)
    im_end = tok.convert_tokens_to_ids("<|im_end|>")
    assert isinstance(im_end, int)
    g = Grammars(tok, VOCAB, [im_end])
    result: dict = {"bench": "tools", "vocab": VOCAB, "tokenizer_build_s": round(time.perf_counter() - t, 2)}
    rng, pull = np.random.default_rng(0), closers(tok)
    masks: dict = {}
    for style, schema in STYLES.items():
        spec = ToolSpec((Tool("f", None, json.dumps(schema)),), "required", parallel=False)
        masks[style] = {
            str(n): walk(g, spec, n, pull, rng, max(a.replies, -(-64 // n)))  # >= 64 calls a level
            for n in map(int, a.levels.split(","))
        }
    result["mask_us_per_token"] = masks
    result["compile_ms"] = {
        f"{style}_{k}": compile_ms(g, tuple(Tool(f"f{i}", None, json.dumps(schema)) for i in range(k)))
        for style, schema in STYLES.items()
        for k in (1, 5)
    }
    if not a.skip_latency:
        result["latency"] = asyncio.run(latency([int(x) for x in a.latency_levels.split(",")], a.port))
    print(json.dumps(result))


if __name__ == "__main__":
    main()
