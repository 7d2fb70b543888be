"""Golden replay of the `voice_clone` case: system prompt with a reference clip, greedy answer,
speaker embedding (last LLM layer at `<|spk|>`), then the whole TTS trace from that embedding."""

from __future__ import annotations

from ..chat import chat, prepare
from .calls import sampling_from
from .chat import compare_prepared, recorded_chat
from .harness import GoldenDir, Report


def check(g: GoldenDir, m, report: Report) -> None:
    report.case_name = "voice_clone"
    want = g.case("voice_clone")
    call = recorded_chat(g, "voice_clone")
    msgs = call.kwargs["msgs"]
    use_tts = call.kwargs.get("use_tts_template")
    compare_prepared(prepare(m, msgs, use_tts_template=use_tts), want, report)
    res = chat(
        m,
        msgs,
        max_new_tokens=call.kwargs["max_new_tokens"],
        sampling=sampling_from(call.kwargs),
        use_tts_template=use_tts,
    )
    report.equal("generated_ids", res.ids, want["generated_ids"])
    report.equal("answer", res.text, g.cases["voice_clone"]["answer"])
    report.compare("spk_embeds", res.spk_hidden, want["spk_embeds"])
    from . import tts

    tts.check_voice_clone_tts(g, m.net.tts, m.vocos, m.tts_tokenizer, report)
