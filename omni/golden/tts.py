"""Golden replay of the TTS cases: `tts_decode` (pieces in isolation) and the TTS half of `voice_clone`.

Owns: driving ConditionalChatTTS / Vocos / the TTS text prep exactly as the reference calls were
made (golden README §4) and recording one Report row per compared tensor; `load_speech`, which
builds just the speech stack from a checkpoint folder. Does not own: the LLM half of voice_clone
(omni.golden.voice_clone), model math. The reference replaced torch.multinomial by arg-max, so
every replay here uses `GreedySampler`.
"""

from __future__ import annotations

from pathlib import Path

import torch
from safetensors import safe_open

from ..config import OmniConfig
from ..model.tts import ConditionalChatTTS, GreedySampler
from ..model.tts_loop import SpeechParams, synthesize
from ..model.vocos import Vocos
from ..processing import tts_text as T
from .harness import ATOL_WAV, GoldenDir, Report

TTS_PREFIX = "tts."
# Golden README §4: the tts_decode generate call.
DECODE_MAX_NEW = 30


def load_speech(ckpt_dir: str | Path):
    """(ConditionalChatTTS fp32, Vocos fp32, ChatTTS tokenizer) from a checkpoint folder, loaded strictly."""
    from transformers import BertTokenizerFast  # pyright: ignore[reportAttributeAccessIssue] - a run-time alias in 5.x

    ckpt = Path(ckpt_dir)
    cfg = OmniConfig.from_file(ckpt / "config.json").tts
    tts = ConditionalChatTTS(cfg)
    with safe_open(str(ckpt / "model.safetensors"), "pt") as f:
        state = {k[len(TTS_PREFIX) :]: f.get_tensor(k).float() for k in f.keys() if k.startswith(TTS_PREFIX)}
    tts.load_state_dict(state, strict=True)
    vocos = Vocos()
    vstate = torch.load(str(ckpt / "assets" / "Vocos.pt"), map_location="cpu", weights_only=True)
    vocos.check_state_dict(vstate)
    vocos.load_state_dict(vstate, strict=True)
    tok = BertTokenizerFast.from_pretrained(str(ckpt / "assets" / "chattts_tokenizer"))
    return tts.float().eval(), vocos.float().eval(), tok


def _prompt_text(tts_text: str) -> str:
    """The raw text inside a recorded "[Stts][spk_emb]{text}[Etts][PAD]...[Ptts]" prompt."""
    return tts_text.split(T.SPK_EMB)[-1].split(T.ETTS)[0].removesuffix(T.PTTS)


def check_decode(g: GoldenDir, tts: ConditionalChatTTS, vocos: Vocos, tts_tokenizer, report: Report) -> None:
    report.case_name = "tts_decode"
    want, rec, c = g.case("tts_decode"), g.cases["tts_decode"], tts.cfg
    mel = tts.decode_to_mel(want["codes"].long())
    report.compare("mel", mel, want["mel"])
    report.compare("wav", vocos.decode(mel)[0], want["wav"], atol=ATOL_WAV)

    prompt = T.prepare_tts_text(
        tts_tokenizer, _prompt_text(rec["tts_text"]), c.streaming_text_reserved_len, c.num_spk_embs
    )
    report.equal("tts_text", prompt.text, rec["tts_text"])
    report.equal("tts.input_ids", torch.tensor([prompt.input_ids]), want["tts.input_ids"])
    mask = T.text_mask(prompt.tokens_len, c.streaming_text_reserved_len, c.num_spk_embs)
    report.equal("tts.text_mask", mask, want["tts.text_mask"])

    # prefill_text(ids[:, :n+3], positions 0..n+2, spk) into an all-zero cache.
    n_prefill = prompt.tokens_len + T.text_start_len(c.num_spk_embs) + 1
    state = tts.new_state(mask)
    ids = torch.tensor([prompt.input_ids[:n_prefill]])
    tts.prefill_text(state, ids, 0, n_prefill, want["tts.spk_hidden"])
    k0, _ = state.cache.layer(0)
    report.compare("tts.kv_after_prefill.layer0.k", k0[:, :, :n_prefill], want["tts.kv_after_prefill.layer0.k"])

    p = SpeechParams()
    new_ids, finished = tts.generate(
        state, DECODE_MAX_NEW, p.temperatures, GreedySampler(), min_new_frames=p.min_new_frames
    )
    report.equal("tts.new_ids", new_ids, want["tts.new_ids"])
    report.equal("tts.finished", int(finished), int(rec["tts.finished"]))


def check_voice_clone_tts(g: GoldenDir, tts: ConditionalChatTTS, vocos: Vocos, tts_tokenizer, report: Report) -> None:
    """Replays `_generate_mel_spec` from the recorded speaker state and the decoded answer.

    The TTS input is the answer *raw*: special tokens such as `</point>` stay in the text and the
    BERT tokenizer splits them into pieces (the recorded prefill ids prove it).
    """
    report.case_name = "voice_clone"
    want, rec = g.case("voice_clone"), g.cases["voice_clone"]
    _, trace = synthesize(tts, vocos, tts_tokenizer, want["prefill_text.0.spk"], rec["answer"], sampler=GreedySampler())
    assert trace is not None  # synthesize traces by default
    report.equal("tts_call_order", trace["call_order"], list(rec["tts_call_order"]))
    for name in sorted(want, key=_natural):
        if not name.startswith(("prefill_text.", "tts_generate.", "decode_codes.", "vocos.")) and name != "wav":
            continue
        if name not in trace:
            report.fail(name, "not produced by the replay")
        elif want[name].dtype.is_floating_point:
            report.compare(name, trace[name], want[name], atol=ATOL_WAV if name.endswith("wav") else 1e-4)
        else:
            report.equal(name, trace[name], want[name])
    for key, value in rec.items():
        if key.startswith("tts_generate."):
            got = trace.get(key)
            report.equal(key, int(got) if got is not None else None, int(value))


def _natural(name: str):
    return [int(p) if p.isdigit() else p for p in name.split(".")]
