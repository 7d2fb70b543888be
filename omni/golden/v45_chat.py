"""Golden replay of MiniCPM-V 4.5's LLM and `chat()` cases (golden README-v45 §4 `llm`, `chat_*`).

`llm`: the full forward over the processor case's prompt (every position's logits, the hidden
states, the KV cache after prefill, one decode step). `chat_*`: the messages are rebuilt from
the folder (its questions, system prompt, images, frames and packs, the earlier answers), the
options from the recorded call (thinking, stream, slicing, image ids, token cap, sampling
arguments); then the prompt, the processor outputs, every step's logits, the ids and the answer
(or the stream's deltas) are compared. Does not own: the processor and vision cases (v45.py).
"""

from __future__ import annotations

import re

import torch
from PIL import Image

from .. import chat_v45 as C
from ..processing import v45_prompt as V
from .harness import ATOL_LOGITS, GoldenDir, Report
from .v45 import frames, stills


def llm(g: GoldenDir, m, r: Report) -> None:
    want, rec = g.case("llm"), g.cases["llm"]
    images = stills(g, g.cases["processor"]["image_sizes"])
    prompt = g.cases["processor"]["prompt_text"]
    items = C.packs.process(m.image_processor, images)
    text = C.packs.expand(prompt, items.placeholders)
    ids = m.tokenizer.encode(text, add_special_tokens=False)
    s = m.ids
    ib = C.bounds(ids, (s.image_start, s.slice_start), (s.image_end, s.slice_end))
    p = C.Prepared(prompt, text, torch.tensor([ids]), ib, items)
    r.equal("input_ids", p.input_ids, want["input_ids"])
    model = m.net.llm.model
    with torch.inference_mode():
        emb = C.embed(m, p)
        r.compare("inputs_embeds", emb, want["inputs_embeds"])
        cache = m.net.llm.new_cache()
        # DecoderModel.forward's loop, keeping each layer's input (transformers' hidden_states).
        past, T = 0, emb.shape[1]
        position_ids = torch.arange(T)[None]
        from ..model.decoder import causal_mask, rope_cos_sin

        cos, sin = rope_cos_sin(position_ids, model.inv_freq, emb.dtype)
        mask = causal_mask(T, past, emb.device)
        h, hidden = emb, []
        for i, layer in enumerate(model.layers):
            hidden.append(h[0])
            h = layer(h, cos, sin, i, cache, mask)
        hidden.append(model.norm(h)[0])
        n = sum(1 for k in want if k.startswith("hidden_states."))
        r.equal("num_hidden_states", len(hidden), n)
        for i in range(min(n, len(hidden))):
            r.compare(f"hidden_states.{i}", hidden[i], want[f"hidden_states.{i}"])
        logits = m.net.llm.lm_head(hidden[-1])
        r.compare("logits", logits, want["logits"], atol=ATOL_LOGITS)
        for i in range(cache.num_layers):
            k, v = cache.layer(i)
            r.compare(f"kv.layer{i}.key", k[0], want[f"kv.layer{i}.key"])
            r.compare(f"kv.layer{i}.value", v[0], want[f"kv.layer{i}.value"])
        nxt = int(logits[-1].argmax())
        r.equal("next_token_id", nxt, rec["next_token_id"])
        step = model(m.net.llm.embed(torch.tensor([[nxt]])), torch.tensor([[T]]), cache)
        r.compare("decode_step_logits", m.net.llm.lm_head(step[0, -1]), want["decode_step_logits"], atol=ATOL_LOGITS)
        r.equal("cache_len_after_step", cache.seq_len, rec["cache_len_after_step"])


def _flag(call: str, name: str, default):
    hit = re.search(rf"\b{name}=(True|False|None|-?[0-9.]+)", call)
    if hit is None:
        return default
    word = hit.group(1)
    named = {"True": True, "False": False, "None": None}
    if word in named:
        return named[word]
    return float(word) if "." in word else int(word)


def messages(g: GoldenDir, case: str) -> tuple[list[dict], str]:
    """The case's messages and system prompt, rebuilt from the folder (README-v45 §4 table)."""
    spec, call = g.cases["meta"]["spec"], g.cases[case]["call"]
    system = spec["system_prompt"] if "system_prompt=" in call else ""
    if case.startswith("chat_image"):
        named = re.search(r"\bimage(\d+)\b", call)
        im = Image.open(g.path / f"image{named.group(1) if named else 0}.png").convert("RGB")
        return [{"role": "user", "content": [im, spec["q_image"]]}], system
    if case.startswith("chat_video"):
        n = sum(len(p) for p in g.cases[case]["temporal_ids"])
        return [{"role": "user", "content": [*frames(g, n), spec["q_video"]]}], system
    first = {"role": "user", "content": [spec["text_turns"][0]]}
    if case.startswith("chat_text_turn1"):
        return [first], system
    earlier = spec["think_history_answer"] if "think_history" in case else g.cases["chat_text_turn1"]["answer"]
    return [
        first,
        {"role": "assistant", "content": [earlier]},
        {"role": "user", "content": [spec["text_turns"][1]]},
    ], system


def chat(g: GoldenDir, m, r: Report, case: str) -> None:
    rec, want = g.cases[case], g.case(case)
    call, kw = rec["call"], rec["generate_kwargs"]
    msgs, system = messages(g, case)
    thinking = bool(_flag(call, "enable_thinking", False))
    temporal_ids = rec["temporal_ids"] if case.startswith("chat_video") else None
    slices_flag, id_flag = _flag(call, "max_slice_nums", None), _flag(call, "use_image_id", None)
    slices = None if slices_flag is None else int(slices_flag)
    use_id = None if id_flag is None else bool(id_flag)
    p = C.prepare(m, msgs, system, thinking, temporal_ids, slices, use_id)
    r.equal("prompt_text", p.prompt, rec["prompt_text"])
    r.equal("expanded_prompt_text", p.text, rec["expanded_prompt_text"])
    r.equal("input_ids", p.input_ids, want["input_ids"])
    r.equal("attention_mask", (p.input_ids != 0).long(), want["attention_mask"])
    if "image_bound" in want:
        r.equal("image_bound", torch.tensor(p.image_bounds).reshape(-1, 2), want["image_bound"])
    if p.items is not None:
        r.equal("tgt_sizes", p.items.tgt_sizes, want["tgt_sizes"])
        for i, strip in enumerate(p.items.strips):
            r.compare(f"pixel_values.{i}", strip, want[f"pixel_values.{i}"])
    sampling = C.preset(bool(_flag(call, "sampling", True)), thinking, **kw)
    steps = list(C.decode(m, p, kw["max_new_tokens"], sampling, None, pad_mask=rec["llm_attention_mask_passed"]))
    ids = [s.token for s in steps]
    r.compare("step_logits", torch.stack([s.logits for s in steps]), want["step_logits"], atol=ATOL_LOGITS)
    r.equal("generated_ids", ids, [int(i) for i in want["generated_ids"].tolist()])
    r.equal("generated_tokens", m.tokenizer.convert_ids_to_tokens(ids), rec["generated_tokens"])
    if kw.get("stream"):
        got = list(
            C.stream(m, msgs, kw["max_new_tokens"], sampling, None, thinking, system, temporal_ids, slices, use_id)
        )
        r.equal("stream_deltas", got, rec["stream_deltas"])
        r.equal("answer", "".join(got), rec["answer"])
    else:
        r.equal("answer", V.answer(m.tokenizer, ids, thinking), rec["answer"])
