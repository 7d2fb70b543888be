"""Function calling in the engine on the tiny-a checkpoint: the prompt strings equal the official
template's rendering, every forced call parses and matches its random schema (>= 1,000 of them,
batched), batched sessions with tools equal each alone, the call parser's streaming properties,
the token masks, and the turns a streaming context takes."""

from __future__ import annotations

import json

import jsonschema
import numpy as np
import pytest
import torch

from omni import token_masks
from omni.batch.engine import BatchEngine
from omni.sampling import GREEDY, SamplingParams, choose_rows
from omni.session.engine import GenerateOptions, Session
from omni.tools import prompt as P
from omni.tools import turns
from omni.tools.calls import CallParser, CallPiece, merge
from omni.tools.grammar import closed, schema_error
from omni.tools.spec import Tool, ToolSpec

WEATHER = Tool(
    "get_weather",
    "The weather forecast.",
    json.dumps(
        {
            "type": "object",
            "properties": {
                "city": {"enum": ["Paris", "Rome"]},
                "days": {"type": "integer", "minimum": 1, "maximum": 7},
            },
            "required": ["city", "days"],
        }
    ),
)
CLOCK = Tool("get_time", None, None)


def template(tiny, messages, tools):
    text = tiny.tokenizer.apply_chat_template(messages, tools=tools, tokenize=False)
    assert isinstance(text, str)
    return text


def test_tool_strings_equal_the_official_template(tiny):
    tools = [t.chat_shape() for t in (WEATHER, CLOCK)]
    call = {"name": "get_weather", "arguments": {"city": "Paris", "days": 2}}
    messages = [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Weather?"},
        {"role": "assistant", "content": "Let me see.", "tool_calls": [{"type": "function", "function": call}]},
        {"role": "tool", "content": '{"temp_c": 18}'},
        {"role": "tool", "content": '{"temp_c": 20}'},
    ]
    want = template(tiny, messages, tools)
    system = "<|im_start|>system\nBe brief." + P.tools_section((WEATHER, CLOCK)) + "<|im_end|>\n"
    user = "<|im_start|>user\nWeather?"
    # the turns a streaming context appends after that user turn (the assistant's reply is an item here)
    assistant, opens = turns.render({"role": "assistant", "content": "Let me see."}, False, "")
    assert not opens
    calls, _ = turns.render(
        {"role": "assistant", "calls": [("get_weather", json.dumps(call["arguments"]))], "extend": True}, True, ""
    )
    first, opens = turns.render({"role": "tool", "content": '{"temp_c": 18}'}, True, "<|im_end|>\n<|im_start|>user\n")
    second, _ = turns.render({"role": "tool", "content": '{"temp_c": 20}'}, False, "")
    assert opens
    assert system + user + assistant + calls + first + second + "<|im_end|>\n" == want


def test_a_later_tools_turn_is_the_templates_system_message(tiny):
    want = template(
        tiny, [{"role": "user", "content": "hi"}, {"role": "system", "content": P.tools_turn_text((WEATHER,))}], None
    )
    text, _ = turns.render({"role": "system", "content": P.tools_turn_text((WEATHER,))}, False, "")
    assert want.endswith("<|im_start|>user\nhi" + text + "<|im_end|>\n")


def test_schema_checks_and_closed_objects():
    assert schema_error(json.loads(WEATHER.parameters)) is None
    assert "strin" in schema_error({"type": "object", "properties": {"x": {"type": "strin"}}})
    assert "object" in schema_error({"type": "array"})
    assert schema_error([1]) is not None
    s = closed({"type": "object", "properties": {"properties": {"type": "object", "properties": {"a": {}}}}})
    assert s["additionalProperties"] is False and s["properties"]["properties"]["additionalProperties"] is False
    assert "additionalProperties" not in s["properties"]["properties"]["properties"]["a"]


# ---- the call parser: one step's shapes, chunked == whole, earlier output never changes
def _parser(tiny):
    return CallParser(
        lambda ids: tiny.tokenizer.decode(ids), *tiny.tokenizer.convert_tokens_to_ids(["<tool_call>", "</tool_call>"])
    )


def _call_ids(tiny, name: str, args: str) -> list[int]:
    text = f'<tool_call>\n{{"name": "{name}", "arguments": {args}}}\n</tool_call>'
    return tiny.tokenizer.encode(text, add_special_tokens=False)


def test_call_parser_streams_the_name_then_the_arguments(tiny):
    args = '{"city": "Ü \\"x\\"", "n": [1, {"a": 2}]}'
    ids = _call_ids(tiny, "get_weather", args)
    p = _parser(tiny)
    steps = [p.feed(t) for t in ids]
    pieces = [x for s in steps for x in s]
    assert all(len(s) <= 1 for s in steps) and all(isinstance(x, CallPiece) for x in pieces)  # one step's shape
    assert pieces[0].name == "get_weather" and all(x.name == "get_weather" for x in pieces)
    assert "".join(x.delta for x in pieces) == args and pieces[-1].done and not any(x.done for x in pieces[:-1])
    whole = _parser(tiny)
    merged = merge([x for t in ids for x in whole.feed(t)])  # chunked == whole
    assert [(m.delta, m.done) for m in merged] == [(args, True)]
    seen = ""  # earlier output never changes: each delta only appends to what was handed out
    for x in pieces:
        seen += x.delta
        assert args.startswith(seen)


# ---- token masks and the sampler
def test_masks_apply_row_wise_and_never_draw_a_masked_token():
    V = 100
    allowed = [{3, 64, 99}, None]

    class M:
        def __init__(self, ok):
            self.ok = ok

        def fill(self, out):
            out[:] = 0
            for t in self.ok:
                out.view(np.uint32)[t // 32] |= np.uint32(1 << (t % 32))

    bits = token_masks.gather([M(allowed[0]), None], V, torch.device("cpu"))
    assert bits is not None and bits.rows == [0] and bits.bits.shape == (1, 4)
    assert token_masks.gather([None, None], V, torch.device("cpu")) is None
    logits = torch.randn(2, V)
    masked = token_masks.apply_(logits.clone(), bits)
    assert set(torch.isfinite(masked[0]).nonzero()[:, 0].tolist()) == allowed[0]
    assert torch.equal(masked[1], logits[1])
    words = torch.randint(-(2**31), 2**31 - 1, (3, 5), dtype=torch.int32)  # the GPU's unpacking, on the CPU
    assert torch.equal(token_masks.blocked(words, 150), token_masks.blocked_on_device(words, 150))
    both = token_masks.gather([M(allowed[0]), M({7})], V, torch.device("cpu"))
    assert both is not None and torch.isfinite(token_masks.apply_(logits.clone(), both)).sum(-1).tolist() == [3, 1]
    for seed in range(20):
        g = [torch.Generator().manual_seed(seed), torch.Generator().manual_seed(seed)]
        drawn = choose_rows(logits.clone(), [[], []], [SamplingParams(), GREEDY], g, bits)
        assert drawn[0] in allowed[0]
        alone = choose_rows(logits[1:], [[]], [GREEDY], g[1:])
        assert drawn[1] == alone[0]


def test_random_logits_under_the_grammar_make_valid_parallel_calls(tiny):
    """Without the model: argmax of noise under each mask, 100 replies of two tools in `required`
    with parallel calls; every call parses and validates, and some replies hold several."""
    from omni.tools.grammar import grammars

    g = grammars(tiny.tokenizer, 570, [tiny.ids.im_end])
    spec = ToolSpec((WEATHER, CLOCK), "required")
    parser_ids = tiny.tokenizer.convert_tokens_to_ids(["<tool_call>", "</tool_call>"])
    r, counts = np.random.default_rng(3), []
    for _ in range(100):
        m, p, pieces = g.matcher(spec), CallParser(lambda ids: tiny.tokenizer.decode(ids), *parser_ids), []
        bits = np.zeros(token_masks.words(570), np.int32)
        while not m.stopped:
            m.fill(bits)
            ok = np.unpackbits(bits.view(np.uint8), bitorder="little")[:570].astype(bool)
            t = int(np.where(ok, r.standard_normal(570), -np.inf).argmax())
            if t == tiny.ids.im_end:
                break
            m.consume(t)
            pieces += p.feed(t)
        calls = calls_of(pieces)
        for name, args, done in calls:
            assert done
            jsonschema.validate(json.loads(args), {"get_weather": json.loads(WEATHER.parameters), "get_time": {}}[name])
        counts.append(len(calls))
    assert min(counts) >= 1 and max(counts) > 1


# ---- forced calls from the model
SCHEMA_PARTS = [
    lambda r: {"type": "string", "enum": [f"v{k}" for k in range(r.integers(1, 4))]},
    lambda r: {"type": "integer", "minimum": int(r.integers(-5, 5)), "maximum": int(r.integers(5, 500))},
    lambda r: {"type": "boolean"},
    lambda r: {"type": "string", "maxLength": int(r.integers(1, 6))},
    lambda r: {"type": "array", "items": {"enum": [1, 2, 3]}, "maxItems": int(r.integers(1, 4))},
    lambda r: {"anyOf": [{"type": "integer", "minimum": 0, "maximum": 9}, {"type": "null"}]},
    lambda r: {
        "type": "object",
        "properties": {"x": {"type": "boolean"}, "y": {"enum": ["a", "b"]}},
        "required": ["y"],
    },
]


def random_tool(r: np.random.Generator, name: str) -> Tool:
    n = int(r.integers(0, 4))
    props = {f"p{k}": SCHEMA_PARTS[int(r.integers(0, len(SCHEMA_PARTS)))](r) for k in range(n)}
    required = [k for k in props if r.random() < 0.6]
    return Tool(name, None, json.dumps({"type": "object", "properties": props, "required": required}))


def calls_of(pieces: list[CallPiece]) -> list[tuple[str, str, bool]]:
    out: dict[int, list] = {}
    for p in pieces:
        c = out.setdefault(p.index, [p.name, "", False])
        c[1] += p.delta
        c[2] = c[2] or p.done
    return [tuple(out[k]) for k in sorted(out)]


def run_engine(tiny, sessions: dict[int, list], slot_tokens: int = 2048, max_batch: int = 32) -> dict[int, list]:
    """Each session's script (("system", ...), ("prefill", msg), ("generate", opts)) on one batch
    engine; -> per session, per reply: (text, wav, calls, end)."""
    e = BatchEngine(tiny, slots=len(sessions), slot_tokens=slot_tokens, max_batch=max_batch)
    sids = {k: e.open() for k in sessions}
    out: dict[int, list] = {k: [] for k in sessions}
    pending = {k: list(v) for k, v in sessions.items()}
    boxes: dict[int, list] = {}
    while pending:
        for k in list(pending):
            if k in boxes and not boxes[k]:
                continue
            if k in boxes:
                ((result, error),) = boxes.pop(k)
                assert error is None, error
                if result is not None and result[0] is not None:
                    out[k][-1][0].append(result)
                    box: list = []
                    e.submit(sids[k], "reply_step", (), None, lambda r, err, b=box: b.append((r, err)))
                    boxes[k] = box
                    continue
                if result is not None:
                    out[k][-1][1] = result[1]
            if not pending[k]:
                del pending[k]
                continue
            op, *args = pending[k].pop(0)
            if op == "generate":
                out[k].append([[], None])
                e.submit(sids[k], op, tuple(args), None, lambda r, err: None)
                box = []
                e.submit(sids[k], "reply_step", (), None, lambda r, err, b=box: b.append((r, err)))
                boxes[k] = box
            else:
                e.submit(sids[k], op, tuple(args), None, lambda r, err: None)
        e.tick()
    return {k: [_reply(pieces, end) for pieces, end in v] for k, v in out.items()}


def _reply(pieces, end):
    text = "".join(p[0] for p in pieces)
    wav = np.concatenate([p[1] for p in pieces]) if pieces else np.zeros(0, np.float32)
    calls = calls_of([c for p in pieces if len(p) >= 3 for c in p[2]])
    return text, wav, calls, end


def alone(tiny, seed, script):
    s = Session(tiny, seed=seed)
    replies = []
    for op, *args in script:
        if op == "system":
            s.seed = args[0]
            s.set_system(*args[1:])
        elif op == "prefill":
            s.prefill(*args)
        else:
            out = list(s.generate(*args))
            speech = [o for o in out if isinstance(o, tuple)]
            text = "".join(t for t, _ in speech)
            wav = np.concatenate([w for _, w in speech]) if speech else np.zeros(0, np.float32)
            replies.append((text, wav, calls_of([o for o in out if isinstance(o, CallPiece)]), s.last_reply_end))
    return replies


def script(
    seed: int,
    tools: tuple[Tool, ...],
    specs: list[ToolSpec | None],
    sampling=None,
    speech_s=1.0,
    tokens=24,
    listed=True,
    every_reply=True,
):
    """A session's script: the system turn (listing the tools, or not: the grammar alone makes
    forced calls valid), a user message, and per spec a reply (after its own user message, or
    one after the other)."""
    steps: list = [("system", seed, "audio_assistant", None, "Be brief.", P.tools_section(tools) if listed else "")]
    for j, spec in enumerate(specs):
        if every_reply or j == 0:
            steps.append(("prefill", {"role": "user", "content": ["What is the weather?"]}))
        opts = GenerateOptions(
            sampling=sampling or SamplingParams(),
            max_new_tokens=tokens,
            max_speech_s=speech_s,
            low_latency=True,
            tools=spec,
        )
        steps.append(("generate", opts))
    return steps


@pytest.fixture
def one_thread():
    """The tiny model's ops are too small for two threads: on a busy 2-core machine one is ~5x faster."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def test_batched_sessions_with_tools_equal_each_alone(tiny, one_thread):
    tools = (WEATHER, CLOCK)
    scripts = {  # forced calls next to spoken replies with no mask (auto, no tools) and with one (none)
        1: script(1, tools, [ToolSpec(tools, "function", "get_weather"), ToolSpec(tools, "none")], speech_s=0.5),
        2: script(2, tools, [ToolSpec(tools, "auto"), ToolSpec(tools, "required")], sampling=GREEDY, speech_s=0.5),
        3: script(3, tools, [ToolSpec(tools, "required"), None], speech_s=0.5, tokens=12),
    }
    got = run_engine(tiny, scripts)
    for k, steps in scripts.items():
        want = alone(tiny, k, steps)
        assert len(got[k]) == len(want)
        for (t1, w1, c1, e1), (t2, w2, c2, e2) in zip(got[k], want):
            assert (t1, c1, e1) == (t2, c2, e2)
            np.testing.assert_allclose(w1, w2, atol=1e-5, rtol=0)
    forced = [c for k in (1, 3) for c in got[k][0][2]] + got[2][1][2]
    assert forced and all(done for _, _, done in forced)
    assert got[1][1][2] == [] and got[1][1][1].size  # none: no call, speech


SESSIONS, REPLIES = 128, 8  # 1,024 replies of at least one call each, in batches of 128


def test_thousand_forced_calls_all_parse_and_match_their_schemas(tiny, one_thread):
    """>= 1,000 calls of random schemas from the tiny model (random weights: only the grammar
    makes them valid), 128 sessions batched, required and named choices, parallel calls allowed."""
    r = np.random.default_rng(7)
    sessions, schemas = {}, {}
    for k in range(SESSIONS):
        tools = tuple(random_tool(r, f"t{k}_{j}") for j in range(int(r.integers(1, 4))))
        schemas[k] = {t.name: json.loads(t.parameters) for t in tools}
        specs = [
            ToolSpec(tools, "function", tools[int(r.integers(0, len(tools)))].name)
            if r.random() < 0.3
            else ToolSpec(tools, "required")
            for _ in range(REPLIES)
        ]
        sessions[k] = script(100 + k, tools, specs, tokens=100, listed=False, every_reply=False)
    got = run_engine(tiny, sessions, slot_tokens=1024, max_batch=SESSIONS)
    n = 0
    for k, replies in got.items():
        for _, wav, calls, end in replies:
            assert calls and wav.size == 0 and end == "eos", (calls, end)
            for name, args, done in calls:
                assert done
                jsonschema.validate(json.loads(args), schemas[k][name])
                n += 1
    assert n >= 1000, n
