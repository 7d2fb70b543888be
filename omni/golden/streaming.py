"""Golden replay of the `streaming` case (golden README §4): system prompt with the reference voice,
three TDM units, then streaming_generate; every stored tensor is compared.

The user units are not recorded as call strings: the README fixes them as ["<unit>", frame{k},
input.audio_chunk.{k}] for k = 0..prefill_calls-2, which is what we replay.
"""

from __future__ import annotations

import re

import torch
from PIL import Image

from ..session.engine import GenerateOptions, Session
from .calls import parse_calls, resolver, sampling_from
from .harness import ATOL_LOGITS, ATOL_WAV, GoldenDir, Report

SYSTEM_CALL = "sys=model.get_sys_prompt(ref_audio=ref_voice_16k, mode='omni', language='en')"


def check(g: GoldenDir, m, report: Report) -> None:
    report.case_name = "streaming"
    want, rec = g.case("streaming"), g.cases["streaming"]
    s = Session(m)
    # The system message comes from the same get_sys_prompt replay as the chat cases.
    sys_msg = _system_message(g)
    records = [s.prefill(sys_msg)]
    for k in range(rec["prefill_calls"] - 1):
        png = g.path / f"frame{k}.png"  # an audio-only unit has no frame file
        frame = Image.open(png).convert("RGB") if png.is_file() else None
        records.append(s.append_unit(want[f"input.audio_chunk.{k}"].numpy(), frame))
    for i, r in enumerate(records):
        _check_prefill(m, i, r, want, rec, report)
    report.equal("llm_cache_len_after_prefill", s.state.cache_len, rec["llm_cache_len_after_prefill"])
    for li in range(len(m.net.llm.model.layers)):
        for part, got in zip(("key", "value"), s.state.llm_cache.layer(li)):
            name = f"llm_kv_after_prefill.layer{li}.{part}"
            if name in want:  # tiny-a stores three of the four tensors
                report.compare(name, got, want[name])

    (call,) = parse_calls(rec["generate_call"], _resolver(g))
    opts = GenerateOptions(
        sampling=sampling_from(call.kwargs),
        max_new_tokens=call.kwargs["max_new_tokens"],
        generate_audio=call.kwargs.get("generate_audio", True),
    )
    trace: dict = {}
    yields = list(s.generate(opts, trace))
    report.equal("num_yields", len(yields), rec["num_yields"])
    report.equal("llm_chunk_texts", trace.get("llm_chunk_texts"), list(rec["llm_chunk_texts"]))
    report.equal("tts_call_order", trace.get("call_order"), list(rec["tts_call_order"]))
    for name in sorted(want, key=_natural):
        if name.startswith(("prefill.", "llm_kv_after_prefill.", "input.")):
            continue
        if name not in trace:
            report.fail(name, "not produced by the replay")
            continue
        got, exp = trace[name], want[name]
        if exp.dtype.is_floating_point:
            report.compare(name, got, exp, atol=ATOL_WAV if name.endswith("wav") else 1e-4)
        else:
            report.equal(name, torch.as_tensor(got), exp)
    for key, value in rec.items():
        if key.startswith("tts_generate.") or re.fullmatch(r"yield\.\d+\.text", key):
            report.equal(key, trace.get(key), value)


def _resolver(g: GoldenDir):
    """Folder inputs, plus the reference's positional `session_id, tokenizer` (bound to nothing:
    our Session owns both)."""
    base = resolver(g.path, g.case("inputs"))

    def resolve(name: str):
        return None if name in ("session_id", "tokenizer") else base(name)

    return resolve


def _system_message(g: GoldenDir) -> dict:
    """`get_sys_prompt(ref_audio=<the folder's reference clip>, mode="omni")` (README §4 step 1)."""
    env_call = SYSTEM_CALL + "; model.noop(msgs=[sys])"
    (call,) = parse_calls(env_call, resolver(g.path, g.case("inputs")))
    (msg,) = call.kwargs["msgs"]
    return msg


def _check_prefill(m, i: int, r, want: dict, rec: dict, report: Report) -> None:
    p = f"prefill.{i}."
    report.equal(p + "text", r.text, rec[p + "text"])
    report.equal(p + "input_ids", r.input_ids, want[p + "input_ids"])
    report.equal(
        p + "image_bound", torch.tensor(r.image_bounds, dtype=torch.long).reshape(-1, 2), want[p + "image_bound"]
    )
    report.equal(
        p + "audio_bounds", torch.tensor(r.audio_bounds, dtype=torch.long).reshape(-1, 2), want[p + "audio_bounds"]
    )
    tgt = r.tgt_sizes if r.tgt_sizes is not None else torch.zeros(0, 2)
    report.equal(p + "tgt_sizes", tgt, want[p + "tgt_sizes"])
    if p + "audio_features" in want:
        report.compare(p + "audio_features", torch.cat(r.mels, -1), want[p + "audio_features"])
    if p + "vision_embeds" in want:
        # The reference scatters audio into the same tensor in place, so the stored
        # "vision_embeds" already holds the audio rows: it equals inputs_embeds.
        report.compare(p + "vision_embeds", r.inputs_embeds, want[p + "vision_embeds"])
    report.compare(p + "inputs_embeds", r.inputs_embeds, want[p + "inputs_embeds"])
    with torch.inference_mode():
        logits = m.net.llm.lm_head(r.last_hidden)
    report.compare(p + "last_logits", logits, want[p + "last_logits"], atol=ATOL_LOGITS)


def _natural(name: str):
    return [int(p) if p.isdigit() else p for p in name.split(".")]
