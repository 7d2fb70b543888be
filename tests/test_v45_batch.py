"""MiniCPM-V 4.5 sessions on the batch engine (tiny-v45-a): four conversations batched (camera packs
of several sizes, text, greedy and sampled replies, a reply cut to the text delivered, one
forgotten, one whose window slides) each equal the same script run alone; the engine of a
text-only family has no TTS pool and sizes a slot from the config's head_dim; the commands of
the other family are refused naming it; the engine owners (threads, model processes) run a V-4.5
conversation through `EngineHandle`."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest
import torch
from PIL import Image

from omni.batch.engine import BatchEngine, slot_bytes
from omni.family import UnsupportedInput
from omni.sampling import GREEDY, SamplingParams
from omni.session.v45 import ReplyOptions, V45Session

GREEDY_12 = ReplyOptions(sampling=GREEDY, max_new_tokens=12)
SAMPLED_12 = ReplyOptions(max_new_tokens=12)  # the official chat() preset


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """The tiny model's ops are too small for two threads: on a busy 2-core machine one is ~5x faster."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def frames(g, n):
    return [Image.open(g / f"video_frame{i}.png").convert("RGB") for i in range(n)]


class Scripts:
    """Several sessions' scripts on one engine at once: commands queue in order; a reply is read
    (reply_step after reply_step) before the script goes on; ("cut", chars) waits for that many
    characters of the reply, then cuts it."""

    def __init__(self, e: BatchEngine, scripts: dict):
        self.e, self.replies = e, {k: [] for k in scripts}
        self.sids = {k: e.open(max_cache_tokens=budget) for k, (budget, _) in scripts.items()}
        for k, (_, steps) in scripts.items():
            self._go(k, list(steps))

    def _go(self, k, steps) -> None:
        sid = self.sids[k]
        while steps:
            op, *args = steps.pop(0)
            if op == "generate":
                self.e.submit(sid, "generate", tuple(args), None, self._check)
                cut = steps.pop(0)[1] if steps and steps[0][0] == "cut" else None
                return self._read(k, steps, [], cut)
            self.e.submit(sid, op, tuple(args), None, self._check)

    def _read(self, k, steps, text, cut) -> None:
        def got(result, error):
            assert error is None, error
            if result[0] is not None:
                text.append(result[0])
            if result[0] is None or (cut is not None and len("".join(text)) >= cut):
                self.replies[k].append("".join(text)[:cut])
                if cut is not None:
                    steps.insert(0, ("cut", cut))
                return self._go(k, steps)
            self._read(k, steps, text, cut)

        self.e.submit(self.sids[k], "reply_step", (), None, got)

    @staticmethod
    def _check(result, error) -> None:
        assert error is None, error


def alone(m, budget, steps) -> tuple[list[str], V45Session]:
    s, replies = V45Session(m, max_cache_tokens=budget), []
    for op, *args in steps:
        if op == "system":
            s.seed = args[0]
            s.set_system(args[3])
        elif op == "frame":
            s.append_frame(*args)
        elif op == "prefill":
            s.prefill(*args)
        elif op == "generate":
            replies.append("".join(t for t, _ in s.generate(*args)))
        elif op == "cut":
            replies[-1] = replies[-1][: args[0]]
            s.cut_reply(args[0])
        else:
            assert op == "forget"
            s.forget_reply()
    return replies, s


def caches_close(a, b) -> None:
    assert a.seq_len == b.seq_len
    for i in range(b.num_layers):
        for x, y in zip(a.layer(i), b.layer(i)):
            torch.testing.assert_close(x, y, atol=1e-5, rtol=1e-5)


def test_batched_v45_sessions_equal_each_alone(tiny_v45, golden_v45_dir):
    f = frames(golden_v45_dir, 9)
    user = lambda text: ("prefill", {"role": "user", "content": [text]})  # noqa: E731
    cam = lambda n, pack, t0=0.0: [("frame", f[i % 9], t0 + 0.17 * i, pack) for i in range(n)]  # noqa: E731
    scripts = {
        1: (None, [("system", 1, "default", None, "Watch."), *cam(9, 3), user("What moved?"), ("generate", GREEDY_12)]),
        2: (None, [("system", 2, "default", None, None), *cam(7, 3), user("Now?"), ("generate", SAMPLED_12)]),
        3: (  # cut after 4 characters delivered, then a second turn; then a reply forgotten
            None,
            [("system", 3, "default", None, None), user("Hi?"), ("generate", SAMPLED_12), ("cut", 4)]
            + [*cam(6, 6, 40.0), user("And?"), ("generate", GREEDY_12), ("forget",), user("Again?")]
            + [("generate", GREEDY_12)],
        ),
        4: (  # a small window: the first turns slide out, then the camera turn's oldest packs
            70,
            [("system", 4, "default", None, None)]
            + [x for t in range(3) for x in (user(f"Turn {t}?"), ("generate", GREEDY_12))]
            + [*cam(8, 1), user("Seen?"), ("generate", SAMPLED_12)],
        ),
    }
    e = BatchEngine(tiny_v45, slots=4, slot_tokens=512)
    run = Scripts(e, scripts)
    e.run_until_idle()
    assert e.stats.ops["llm"] > e.stats.batches["llm"] and e.stats.ops["vision"] > e.stats.batches["vision"]
    for k, (budget, steps) in scripts.items():
        want, s = alone(tiny_v45, budget, steps)
        got = e._sessions[run.sids[k]].session
        assert run.replies[k] == want and got.last_reply_end == s.last_reply_end, k
        caches_close(got.state.llm_cache, s.state.llm_cache)
        assert got.state.turn_starts == s.state.turn_starts
    q = tiny_v45.config.query_num  # session 4 (the last): only its camera turn is left, less its oldest packs
    assert s.state.turn_starts == [0] and s.state.cache_len < 8 * (q + 3)


def test_a_text_only_engine_has_no_tts_pool_and_sizes_slots_by_head_dim(golden_v45_dir, tmp_path):
    """head_dim 16 (not hidden / heads = 32): the pool and a slot's bytes follow the config."""
    import json
    import shutil

    from omni.embedded import build_weights
    from omni.loader import load

    ckpt = tmp_path / "v45"
    shutil.copytree(golden_v45_dir, ckpt, ignore=shutil.ignore_patterns("*.safetensors", "*.png", "*.xz"))
    raw = {**json.loads((ckpt / "config.json").read_text()), "head_dim": 16}
    (ckpt / "config.json").write_text(json.dumps(raw))
    build_weights(ckpt, raw, seed=0)
    m = load(ckpt, progress=False)
    e = BatchEngine(m, slots=2, slot_tokens=64)
    c = m.config
    assert e.tts_pool is None and e.llm_pool.head_dim == 16 and not e.executor.graphs
    assert slot_bytes(m, 64) == 2 * c.num_hidden_layers * c.num_key_value_heads * 16 * 64 * 4  # float32, no TTS
    sid, box = e.open(), []
    e.submit(sid, "prefill", ({"role": "user", "content": ["Hi"]},), None, lambda r, err: None)
    e.submit(sid, "generate", (GREEDY_12,), None, lambda r, err: None)
    e.submit(sid, "reply_step", (), None, lambda r, err: box.append((r, err)))
    e.run_until_idle()
    assert box and box[0][1] is None and isinstance(box[0][0][0], str)


def test_each_familys_commands_are_refused_by_the_other(tiny_v45, tiny, golden_v45_dir):
    from omni.session.engine import GenerateOptions

    v = BatchEngine(tiny_v45, slots=1, slot_tokens=256)
    o = BatchEngine(tiny, slots=1, slot_tokens=256)
    sv, so, errors = v.open(), o.open(), []
    keep = lambda r, err: errors.append(err)  # noqa: E731
    v.submit(sv, "unit", (np.zeros(16000, np.float32), None), None, keep)
    v.submit(sv, "rollback", (120.0,), None, keep)
    v.submit(sv, "generate", (GenerateOptions(),), None, keep)  # speech: refused when it starts
    o.submit(so, "frame", (frames(golden_v45_dir, 1)[0], 0.0, 3), None, keep)
    o.submit(so, "cut", (3,), None, keep)
    v.run_until_idle()
    o.run_until_idle()
    assert [type(x) for x in errors] == [UnsupportedInput] * 5
    assert all("MiniCPM-V 4.5" in str(x) for x in errors[:3]) and all("MiniCPM-o 2.6" in str(x) for x in errors[3:])


async def _converse(h, image) -> str:
    await h.set_system(5, "default", None, "Watch the camera.")
    for i in range(4):
        await h.append_frame(image, 0.25 * i, 2)
    await h.prefill({"role": "user", "content": ["What do you see?"]})
    await h.start_reply(ReplyOptions(sampling=SamplingParams(), max_new_tokens=8))
    text = ""
    while (item := await h.reply_step()) is not None:
        text += item[0]
    prompt, sampled = h.reply_usage or (0, 0)  # usage crosses too: the prompt and the ids drawn
    assert prompt > 2 * 16 and 1 <= sampled <= 8  # two packs of 16 tokens, at least
    await h.cut_reply(2)
    with pytest.raises(UnsupportedInput, match="MiniCPM-V 4.5 has no audio input"):
        await h.append_unit(np.zeros(16000, np.float32))
    return text


@pytest.mark.asyncio
async def test_engine_owners_hold_v45_conversations(tiny_v45, golden_v45_dir):
    """Threads and model processes: the same seeded conversation gives the same reply."""
    from omni.golden.harness import GoldenDir
    from streaming.engines.procs import ProcessWorker
    from streaming.settings import ServerSettings
    from streaming.engines.worker import EngineSpec, EngineWorker

    spec = EngineSpec.from_settings(ServerSettings(model_lanes=1, max_sessions=2))
    image = frames(golden_v45_dir, 1)[0]
    local = EngineWorker(tiny_v45, spec)
    try:
        want = await _converse(local.open_session(), image)
    finally:
        local.close()
    procs = ProcessWorker(str(GoldenDir(golden_v45_dir).checkpoint_dir()), spec)
    try:
        got = await asyncio.gather(*[_converse(procs.open_session(), image) for _ in range(2)])
    finally:
        procs.close()
    assert got == [want, want]
