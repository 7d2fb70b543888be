"""MiniCPM-V 4.5 sessions alone (tiny-v45-a): golden ids through the session (a video turn fed as
two packs, a text turn streamed), the context built piece by piece equals `chat_v45.prepare` of
the same conversation (packs of several sizes, text whose edges re-tokenise, images, earlier
replies in both template forms), a reply's text streamed as `chat(stream=True)` gives it, the three
streaming tests, barge-in (cut to the text delivered, forget), the sliding window (turns, and a
long camera turn's oldest packs) and the refusals that name the family."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file

from omni import chat_v45 as C
from omni.family import UnsupportedInput
from omni.model.ops import LLMForward, VisionEncode
from omni.model.steps import Executor
from omni.sampling import GREEDY
from omni.session.v45 import ReplyOptions, V45Session

ATOL = 1e-5


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """The tiny model's ops are too small for two threads: on a busy 2-core machine one is ~5x faster."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def frames(g, n):
    return [Image.open(g / f"video_frame{i}.png").convert("RGB") for i in range(n)]


def reply(s: V45Session, tokens=12, **kw) -> str:
    return "".join(t for t, _ in s.generate(ReplyOptions(sampling=GREEDY, max_new_tokens=tokens, **kw)))


def prompt_cache(m, p):
    cache = m.net.llm.new_cache()
    with torch.inference_mode():
        m.net.llm.model(C.embed(m, p), cache=cache)
    return cache


def template_cache(m, messages):
    """A text-only conversation through the checkpoint's own template (system messages anywhere)."""
    from omni.processing import v45_prompt as V

    ids = m.tokenizer.encode(V.render(m.tokenizer, messages, False), add_special_tokens=False)
    cache = m.net.llm.new_cache()
    with torch.inference_mode():
        m.net.llm.model(m.net.llm.embed(torch.tensor([ids])), cache=cache)
    return cache


def same_cache(got, want) -> None:
    assert got.seq_len == want.seq_len
    for i in range(want.num_layers):
        for a, b in zip(got.layer(i), want.layer(i)):
            torch.testing.assert_close(a[:, :, : want.seq_len], b, atol=ATOL, rtol=1e-5)


def test_a_video_turn_and_a_text_turn_through_the_session_give_the_golden_ids(tiny_v45, golden_v45_dir):
    import json

    cases = json.loads((golden_v45_dir / "cases.json").read_text())
    spec, ids = cases["meta"]["spec"], cases["chat_video"]["temporal_ids"]
    s = V45Session(tiny_v45)
    for f, tid in zip(frames(golden_v45_dir, 9), ids[0] + ids[1]):  # the card's clip: times from its start
        s.append_frame(f, tid / 10, pack_frames=6, origin_s=0.0)
    s.prefill({"role": "user", "content": [spec["q_video"]]})
    reply(s)
    want = load_file(str(golden_v45_dir / "chat_video.safetensors"))["generated_ids"].tolist()
    assert s._reply is not None and s._reply.ids == want

    s = V45Session(tiny_v45)
    s.set_system(spec["system_prompt"])
    s.prefill({"role": "user", "content": [spec["text_turns"][0]]})
    text = reply(s)
    case = cases["chat_text_turn1_stream"]
    assert (
        s._reply.ids == load_file(str(golden_v45_dir / "chat_text_turn1_stream.safetensors"))["generated_ids"].tolist()
    )
    assert text == "".join(case["stream_deltas"]) == case["answer"]  # chunked == whole: the official stream


def test_the_context_fed_piece_by_piece_equals_prepare_of_the_whole_conversation(tiny_v45, golden_v45_dir):
    m, f = tiny_v45, frames(golden_v45_dir, 9)
    other = f[8].resize((70, 84))  # another camera size: its pack starts afresh
    s = V45Session(m)
    s.append_frame(f[0], 10.0, 2)
    s.append_frame(f[1], 10.26, 2)  # a full pack: prefilled
    s.append_frame(f[2], 10.61, 2)
    s.prefill({"role": "user", "content": ["What?"]})  # flushes the pack of one; "?" + "\n" is one token later
    s.append_frame(f[3], 11.0, 3)
    s.append_frame(other, 11.1, 3)
    s.prefill({"role": "user", "content": ["  spaced ", "twice?"]})
    first = reply(s, 5)
    s.prefill({"role": "user", "content": ["Next?\n"]})
    s.append_frame(f[4], 3.0, 6)
    s.append_frame(f[5], 3.42, 6)
    s.prefill({"role": "user", "content": ["ok"]})
    reply(s, 1)  # the prompt only: the drawn token is never fed
    msgs = [
        {"role": "user", "content": [f[0], f[1], f[2], "What?", f[3], other, "  spaced ", "twice?"]},
        {"role": "assistant", "content": [first]},
        {"role": "user", "content": ["Next?\n", f[4], f[5], "ok"]},
    ]
    p = C.prepare(m, msgs, "", False, [[0, 3], [6], [0], [1], [0, 4]], 1, False)
    same_cache(s.state.llm_cache, prompt_cache(m, p))

    # images (sliced, numbered over the session's images), a system prompt, thinking, and a reply
    # right after a reply: the template renders the first as the last message, think block and all
    im = Image.open(golden_v45_dir / "image0.png").convert("RGB")
    s = V45Session(m)
    s.set_system("Be brief.")
    s.prefill({"role": "user", "content": [im, "What is in the picture?"]})
    a = reply(s, 6, thinking=True)
    assert a.startswith("<think>\n")  # the official stream opens the thinking block
    b = reply(s, 1)
    msgs = [{"role": "user", "content": [im, "What is in the picture?"]}, {"role": "assistant", "content": [a]}]
    same_cache(s.state.llm_cache, prompt_cache(m, C.prepare(m, msgs, "Be brief.")))
    s.prefill({"role": "user", "content": [im]})  # a user turn: both earlier replies are history now
    reply(s, 1)
    msgs += [{"role": "assistant", "content": [b]}, {"role": "user", "content": [im]}]
    same_cache(s.state.llm_cache, prompt_cache(m, C.prepare(m, msgs, "Be brief.")))


def test_messages_after_the_last_user_turn_take_the_templates_forms(tiny_v45):
    """A client's assistant messages (one with reasoning) and a system message after a reply:
    before the next reply the template keeps think blocks (the last message, and any with
    reasoning); after the next user turn, none."""
    m = tiny_v45
    s = V45Session(m)
    s.prefill({"role": "user", "content": ["Hi?"]})
    first = reply(s, 4)
    s.prefill({"role": "system", "content": ["Mind the time."]})
    s.prefill({"role": "assistant", "content": ["<think>\nplan\n</think>\n\nDone."]})
    s.prefill({"role": "assistant", "content": ["Also."]})
    last = reply(s, 1)
    msgs = [
        {"role": "user", "content": "Hi?"},
        {"role": "assistant", "content": first},
        {"role": "system", "content": "Mind the time."},
        {"role": "assistant", "content": "<think>\nplan\n</think>\n\nDone."},
        {"role": "assistant", "content": "Also."},
    ]
    same_cache(s.state.llm_cache, template_cache(m, msgs))
    s.prefill({"role": "user", "content": ["Ok"]})
    reply(s, 1)
    same_cache(
        s.state.llm_cache,
        template_cache(m, msgs + [{"role": "assistant", "content": last}, {"role": "user", "content": "Ok"}]),
    )


def test_streaming_chunked_equals_whole_and_the_official_stream(tiny_v45, golden_v45_dir):
    f = frames(golden_v45_dir, 4)
    msgs = [{"role": "user", "content": [*f, "Describe."]}]
    want = "".join(C.stream(tiny_v45, msgs, 20, GREEDY, None, False, "", [[0, 2], [5, 7]], 1, False))
    s = V45Session(tiny_v45)
    for tid, im in zip([0, 2, 5, 7], f):
        s.append_frame(im, tid / 10, 2)
    s.prefill({"role": "user", "content": ["Describe."]})
    s.generate(ReplyOptions(sampling=GREEDY, max_new_tokens=20))
    pieces = []
    while (item := s.reply_step()) is not None:  # one piece per step
        pieces.append(item[0])
    assert "".join(pieces) == want and len(pieces) > 1


def test_one_steps_shapes_and_earlier_output_never_changes(tiny_v45, golden_v45_dir):
    m, f = tiny_v45, frames(golden_v45_dir, 3)
    run, seen = Executor.of(m).one, []

    def record(op):
        out = run(op)
        seen.append((op, out))
        return out

    s = V45Session(m)
    s._run = record
    s.prefill({"role": "user", "content": ["Look?"]})
    before = [t.clone() for t in s.state.llm_cache.layer(0)]
    tail_start = s.tail.start
    s.append_frame(f[0], 0.0, 3)
    assert not seen[1:]  # a frame waits for its pack: no op
    s.append_frame(f[1], 0.2, 3)
    s.append_frame(f[2], 0.4, 3)
    (vis, feats), (llm, out) = seen[1:]
    Q, H = m.config.query_num, m.config.hidden_size
    assert isinstance(vis, VisionEncode) and len(vis.strips) == 3 and vis.temporal_ids == [[0, 2, 4]]
    assert feats.shape == (1, Q, H)  # one pack, one set of query_num tokens
    assert isinstance(llm, LLMForward) and llm.embeds is not None and llm.embeds.shape[1] == H
    assert llm.embeds.shape[0] == Q + 3  # ("?\n" instead of "?"), <image>, Q x <unk>, </image>
    for old, new in zip(before, s.state.llm_cache.layer(0)):  # earlier entries never change:
        assert torch.equal(old[:, :, :tail_start], new[:, :, :tail_start])  # all before the text tail
    seen.clear()
    s.generate(ReplyOptions(sampling=GREEDY, max_new_tokens=6))
    step = s.reply_step()
    assert step is not None and isinstance(step[0], str) and step[1].dtype == np.float32 and step[1].shape == (0,)
    decode = [op for op, _ in seen if isinstance(op, LLMForward) and op.ids is not None and len(op.ids) == 1]
    assert all(out.hidden.shape == (H,) and isinstance(out.token, int) for op, out in seen if op in decode)
    short = "".join([step[0]] + [t for t, _ in iter(s.reply_step, None)])
    s.forget_reply()
    longer = reply(s, 12)
    assert longer.startswith(short) and len(longer) > len(short)  # more tokens never change earlier text


def test_cut_keeps_the_text_delivered_and_forget_takes_the_reply_out(tiny_v45):
    m = tiny_v45
    s = V45Session(m)
    s.prefill({"role": "user", "content": ["Hello?"]})
    full = reply(s, 12)
    s.cut_reply(5)  # the client was given 5 characters
    s.prefill({"role": "user", "content": ["More."]})
    reply(s, 1)
    msgs = [
        {"role": "user", "content": ["Hello?"]},
        {"role": "assistant", "content": [full[:5]]},
        {"role": "user", "content": ["More."]},
    ]
    same_cache(s.state.llm_cache, prompt_cache(m, C.prepare(m, msgs)))
    s.forget_reply()  # the reply is out: as before it, the user turn still open
    s.prefill({"role": "user", "content": ["Again."]})
    reply(s, 1)
    msgs[-1] = {"role": "user", "content": ["More.", "Again."]}
    same_cache(s.state.llm_cache, prompt_cache(m, C.prepare(m, msgs)))
    with pytest.raises(ValueError, match="whole number"):
        s.cut_reply(-1)


def test_the_window_drops_old_turns_and_a_long_camera_turns_oldest_packs(tiny_v45, golden_v45_dir):
    f = frames(golden_v45_dir, 2)
    s = V45Session(tiny_v45, max_cache_tokens=60)
    s.set_system("Sys.")
    for turn in range(3):
        s.prefill({"role": "user", "content": [f"Question {turn}?"]})
        reply(s, 8)
    assert len(s.state.turn_starts) == 2  # the first turn went when the third opened
    for k in range(12):  # a camera turn of 12 packs of 19 positions: the oldest go, the rest fit
        s.append_frame(f[k % 2], k * 0.5, 1)
        assert s.state.cache_len <= 60
    assert len(s.turn.packs) < 12
    before = s.state.cache_len
    s.prefill({"role": "user", "content": ["And now?"]})
    assert reply(s, 4) is not None and s.state.cache_len > before


def test_audio_speech_and_tools_are_refused_naming_the_family(tiny_v45, golden_v45_dir):
    from omni.session.engine import GenerateOptions

    s = V45Session(tiny_v45)
    for call in (
        lambda: s.unit_program(np.zeros(16000, np.float32)),
        lambda: s.interrupt_ms(100.0),
        lambda: s.system_program("default", np.zeros(16000, np.float32), None),
        lambda: s.prefill({"role": "user", "content": ["hi", np.zeros(16000, np.float32)]}),
        lambda: s.reply_program(GenerateOptions()),
        lambda: s.system_program("default", None, "x", "# Tools ..."),
    ):
        with pytest.raises(UnsupportedInput, match="MiniCPM-V 4.5"):
            call()
    with pytest.raises(ValueError, match="in order"):
        s.append_frame(frames(golden_v45_dir, 1)[0], 2.0)
        s.append_frame(frames(golden_v45_dir, 1)[0], 1.0)
    with pytest.raises(ValueError, match="1 to 6"):
        s.append_frame(frames(golden_v45_dir, 1)[0], 3.0, 7)
    s.prefill({"role": "user", "content": ["Still here?"]})  # the session goes on
    assert reply(s, 2) is not None
