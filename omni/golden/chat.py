"""Golden replay of the `chat` case: processor outputs, prefill logits, greedy ids, answer."""

from __future__ import annotations

import torch

from ..chat import chat, prepare
from .calls import parse_calls, resolver, sampling_from
from .harness import ATOL_LOGITS, GoldenDir, Report


def recorded_chat(g: GoldenDir, case: str):
    calls = parse_calls(g.cases[case]["call"], resolver(g.path, g.case("inputs")))
    (call,) = [c for c in calls if c.func == "chat"]
    return call


def compare_prepared(p, want: dict, report: Report) -> None:
    report.equal("input_ids", p.input_ids, want["input_ids"])
    for name, got in (("image_bound", p.image_bounds), ("audio_bounds", p.audio_bounds), ("spk_bounds", p.spk_bounds)):
        if name in want:
            report.equal(name, torch.tensor(got, dtype=torch.long).reshape(-1, 2), want[name])
    if "tgt_sizes" in want:
        report.equal("tgt_sizes", p.tgt_sizes, want["tgt_sizes"])
    n = sum(1 for k in want if k.startswith("pixel_values."))
    for i in range(n):
        report.compare(f"pixel_values.{i}", p.strips[i], want[f"pixel_values.{i}"])
    if "audio_features" in want:
        lens = want["audio_feature_lens"].tolist()
        report.equal("audio_feature_lens", [m.shape[-1] for m in p.mels], lens)
        for i, m in enumerate(p.mels):
            report.compare(f"audio_features.{i}", m, want["audio_features"][i, :, : lens[i]])


def check(g: GoldenDir, m, report: Report) -> None:
    report.case_name = "chat"
    want = g.case("chat")
    call = recorded_chat(g, "chat")
    msgs = call.kwargs["msgs"]
    compare_prepared(prepare(m, msgs, use_tts_template=call.kwargs.get("use_tts_template")), want, report)
    res = chat(
        m,
        msgs,
        max_new_tokens=call.kwargs["max_new_tokens"],
        sampling=sampling_from(call.kwargs),
        use_tts_template=call.kwargs.get("use_tts_template"),
        return_prompt_logits=True,
    )
    report.compare("prefill_logits", res.prompt_logits, want["prefill_logits"], atol=ATOL_LOGITS)
    report.equal("generated_ids", res.ids, want["generated_ids"])
    report.equal("answer", res.text, g.cases["chat"]["answer"])
