"""Streaming TTS segment rollover (spec §5.3) on the tiny-a checkpoint, driven by a synthetic LLM
chunk stream: a long reply rolls over, audio keeps flowing, and the new segment's TTS state has the
official condition layout ([Stts][spk_emb] + 5 carried text ids, BOS + 49 carried frames)."""

from __future__ import annotations

import torch

from omni.model.ops import TTSFrame, stream
from omni.model.steps import Executor
from omni.model.tts import GreedySampler
from omni.processing import tts_text as T
from omni.session.speech import CARRY_FRAMES, CARRY_TEXT_TOKENS, LLMChunk, SpeechOptions, stream_speech

SENTENCE = "the quick brown fox jumps over the lazy dog and runs away. "


class EosWhenArmed(GreedySampler):
    """Greedy, but the TTS EOS comes only when `armed` (then on codebook 0 whenever it is allowed),
    so the test decides where segments end."""

    def __init__(self, eos: int):
        self.eos, self.armed = eos, False

    def __call__(self, logits):
        logits = logits.clone()
        logits[:, self.eos] = float("-inf") if not self.armed else logits[:, self.eos]
        ids = super().__call__(logits)
        if self.armed and torch.isfinite(logits[0, self.eos]):
            ids[0] = self.eos
        return ids


def _chunks(tiny, sampler, words_before: int, words_after: int, log: list):
    """First chunk carries hidden states; then one word per chunk. EOS is armed for the flush of
    the first segment (armed with the chunk that triggers the rollover) and at the end."""
    tok, R = tiny.tts_tokenizer, tiny.net.tts.cfg.streaming_text_reserved_len
    hidden = torch.randn(4, tiny.config.hidden_size, generator=torch.Generator().manual_seed(0))
    yield LLMChunk("", hidden, 10)
    words = (SENTENCE * 40).split(" ")
    text, n = "", 0
    for i, w in enumerate(words[: words_before + words_after]):
        piece = w + " "
        text += piece
        over = len(tok.encode(text, add_special_tokens=False)) >= T.rollover_threshold(R)
        rolls = over and T.sentence_end(piece) and not log
        if rolls:
            log.append(i)
            sampler.armed = True
        yield LLMChunk(piece, None, 11 + i)
        sampler.armed = False
        n += 1
        if log and i - log[0] >= words_after:
            break
    sampler.armed = True


def test_long_reply_rolls_over_and_keeps_audio_flowing(tiny, monkeypatch):
    tts, vocos = tiny.net.tts, tiny.vocos
    sampler = EosWhenArmed(tts.cfg.eos_code)
    seen = {}
    real = type(tts).audio_prefill

    def spy(self, state, frames):
        seen.update(frames_in=frames.clone(), state=state, mask=state.text_mask.clone())
        return real(self, state, frames)

    monkeypatch.setattr(type(tts), "audio_prefill", spy)
    execute = Executor.of(tiny).one

    def run(op):  # the first step of the carried segment sees the carried frames and cache
        if isinstance(op, TTSFrame) and op.state is seen.get("state") and "frames" not in seen:
            st = op.state
            seen.update(cache_len=st.cache.seq_len, frames=st.frames.clone(), input_len=st.input_len)
        return execute(op)

    log: list = []
    trace: dict = {}
    program = stream_speech(
        tts,
        vocos,
        tiny.tts_tokenizer,
        _chunks(tiny, sampler, 200, 40, log),
        0,
        sampler,
        tts.new_state,
        SpeechOptions(),
        trace,
    )
    pieces = list(stream(program, run))
    assert log, "the synthetic reply never reached a sentence end after 120 TTS tokens"
    C = tts.condition_length
    # New segment: BOS + 49 carried frames in the cache, the 50th is the next step's input.
    assert seen["frames_in"].shape[1] == CARRY_FRAMES
    assert seen["cache_len"] == C - 1 + CARRY_FRAMES and seen["input_len"] == seen["cache_len"] + 1
    assert torch.equal(seen["frames"], seen["frames_in"])
    assert seen["mask"].sum() == T.text_mask(CARRY_TEXT_TOKENS, 300).sum() == 2 + CARRY_TEXT_TOKENS + 1 + 1
    # Its text prefill: [Stts][spk_emb] + the last 5 text ids of the old segment at positions 0..6.
    prefills = [k for k in trace["call_order"] if k.startswith("prefill_text")]
    carry = [
        k
        for k in prefills
        if trace[f"{k}.position_ids"].shape[1] == 2 + CARRY_TEXT_TOKENS and int(trace[f"{k}.position_ids"][0, 0]) == 0
    ]
    assert len(carry) == 1
    ids = trace[f"{carry[0]}.input_ids"][0].tolist()
    stts = tiny.tts_tokenizer.convert_tokens_to_ids([T.STTS, T.SPK_EMB])
    assert ids[:2] == stts
    # The segment before: its codes end with the carried frames.
    gens = [k for k in trace["call_order"] if k.startswith("tts_generate")]
    old = next(
        trace[f"{k}.new_ids"] for k in reversed(gens) if trace[f"{k}.finished"] and gens.index(k) < len(gens) - 1
    )
    assert torch.equal(old[:, -CARRY_FRAMES:].long(), seen["frames_in"].long())
    # Audio keeps flowing: pieces with audio both before and after the rollover, text all handed out.
    wav_pieces = [p for p in pieces if p.wav.numel()]
    assert len(wav_pieces) >= 4
    text = "".join(p.text for p in pieces)
    assert text.startswith("the quick brown fox") and len(text.split()) > log[0] + 5
    # The new segment's first decode has 4 frames of left context from the carried ones.
    decodes = [k for k in trace["call_order"] if k.startswith("decode_codes")]
    assert any(trace[f"{k}.codes"].shape[1] == 4 + 25 for k in decodes)
