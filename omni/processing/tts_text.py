"""TTS text side: ChatTTS prompt layout, text normalisation and the slot arithmetic (spec §5.1, §5.3).

Owns: `prepare_tts_text` (the fixed-length `[Stts][spk_emb]{text}{pad}[Ptts]` prompt), the
streaming-mode text normalisation (digits read one by one, "*" removed, zh/en detection), the
sentence-end rule of segment rollover, which text slots [b, e) each prefill writes, the per-segment
text mask and the "visible text count" rule of the streaming attention mask. Everything here is a
pure function of its arguments (no model, no session state) so it can be table-tested.
Does not own: tokenisation itself (the caller passes the ChatTTS BERT tokenizer), any tensor math.
"""

from __future__ import annotations

import re
from typing import NamedTuple

import torch

# ChatTTS control tokens (strings of the official prompt; their ids come from the tokenizer).
STTS, SPK_EMB, ETTS, PAD, PTTS = "[Stts]", "[spk_emb]", "[Etts]", "[PAD]", "[Ptts]"
TTS_EOS = "<|tts_eos|>"
TTS_BOS = "<|tts_bos|>"
# Official `_generate_mel_spec_audio_streaming`: a segment rolls over once it holds
# reserved_len - 180 text tokens (120 for the official 300 slots) and a sentence has ended.
SEGMENT_SHIFT_TOKENS = 180
SENTENCE_END_CHARS = (".", "。", "!", "?", "！", "？")
_ZH_DIGITS = dict(zip("0123456789", "零一二三四五六七八九"))
_EN_DIGITS = dict(zip("0123456789", "zero one two three four five six seven eight nine".split()))


class TTSPrompt(NamedTuple):
    text: str  # "[Stts][spk_emb]{text}{pad}[Ptts]"
    input_ids: list[int]  # the prompt re-tokenised: condition_length - 1 + 1 ids
    tokens_len: int  # real text tokens (<= reserved_len)


def prepare_tts_text(tokenizer, text: str, reserved_len: int, num_spk_embs: int = 1) -> TTSPrompt:
    """Official `prepare_tts_text`: pad with [Etts] then [PAD] up to `reserved_len`, or truncate.

    The prompt is re-tokenised as a whole, as the official code does (on truncation it decodes the
    kept ids back to text first, so the result may differ from plain concatenation of ids).
    """
    ids = tokenizer.encode(text, add_special_tokens=False)
    if len(ids) < reserved_len:
        pad = ETTS + PAD * (reserved_len - len(ids) - 1)
    else:
        ids = ids[:reserved_len]
        text = tokenizer.decode(ids)
        pad = ""
    prompt = f"{STTS}{SPK_EMB * num_spk_embs}{text}{pad}{PTTS}"
    return TTSPrompt(prompt, tokenizer.encode(prompt, add_special_tokens=False), len(ids))


def answer_to_tts_text(answer: str) -> str:
    """Offline path (`_generate_mel_spec`): the decoded answer after the last <|tts_bos|>, cut at
    <|tts_eos|>. Other special tokens stay in the text; the BERT tokenizer splits them into pieces."""
    return answer.split(TTS_BOS)[-1].split(TTS_EOS)[0]


# ---- slot layout ---------------------------------------------------------------------------------


def text_start_len(num_spk_embs: int = 1) -> int:
    """Slots before the first text token: [Stts] and the speaker embedding(s)."""
    return 1 + num_spk_embs


def condition_length(reserved_len: int, num_spk_embs: int = 1) -> int:
    """[Stts] + spk + reserved text slots + [Ptts]; 303 for the official config."""
    return text_start_len(num_spk_embs) + reserved_len + 1


def text_chunk_bounds(chunk_idx: int, chunk_size: int, reserved_len: int, num_spk_embs: int = 1) -> tuple[int, int]:
    """Slots [b, e) that text chunk `chunk_idx` prefills. Chunk 0 also carries [Stts][spk_emb]."""
    start = text_start_len(num_spk_embs)
    if chunk_idx == 0:
        return 0, chunk_size + start
    end = min((chunk_idx + 1) * chunk_size + start, condition_length(reserved_len, num_spk_embs) - 1)
    return chunk_idx * chunk_size + start, end


def final_flush_bounds(
    chunk_idx: int, chunk_size: int, tokens_len: int, num_spk_embs: int = 1, reserved_len: int | None = None
) -> tuple[int, int]:
    """Streaming end of text: the remaining slots including [Etts] (e = tokens_len + 3); empty when e <= b.

    With `reserved_len`, e is clamped to the text slots: a text of reserved_len tokens was truncated
    and has no [Etts], so tokens_len + 3 would name the [Ptts] slot (the official slice assignment
    clamps the same way)."""
    start = text_start_len(num_spk_embs)
    begin = 0 if chunk_idx == 0 else chunk_idx * chunk_size + start
    end = tokens_len + start + 1
    if reserved_len is not None:
        end = min(end, condition_length(reserved_len, num_spk_embs) - 1)
    return begin, end


def offline_chunk_count(reserved_len: int, chunk_size: int, num_spk_embs: int = 1) -> int:
    """Prefill/generate rounds of the offline loop: ceil(condition_length / chunk_size) (31)."""
    return -(-condition_length(reserved_len, num_spk_embs) // chunk_size)


def text_mask(tokens_len: int, reserved_len: int, num_spk_embs: int = 1) -> torch.Tensor:
    """int8 [condition_length]: 1 on [Stts], spk, the real text and [Etts], and on the [Ptts] slot."""
    mask = torch.zeros(condition_length(reserved_len, num_spk_embs), dtype=torch.int8)
    mask[: text_start_len(num_spk_embs) + tokens_len + 1] = 1
    mask[-1] = 1
    return mask


def visible_text_count(past: int, reserved_len: int, audio_chunk_frames: int, text_chunk_size: int) -> int:
    """Text tokens the audio step at cache length `past` may see: min(ceil((past - R)/A)·C, R).

    With the official 300/50/10: 10 for past <= 350, 20 for 351..400, ... The generation loop
    prefills 10 tokens per 25 frames, so visibility deliberately lags what is prefilled.
    """
    return min(-(-(past - reserved_len) // audio_chunk_frames) * text_chunk_size, reserved_len)


def rollover_threshold(reserved_len: int) -> int:
    return reserved_len - SEGMENT_SHIFT_TOKENS


# ---- streaming text normalisation ------------------------------------------------------------------


def detect_language(text: str) -> str:
    """ "chinese" when CJK ideographs are at least as many as Latin letters, else "english"."""
    zh = len(re.findall(r"[\u4e00-\u9fff]", text))
    en = len(re.findall(r"[a-zA-Z]", text))
    return "chinese" if zh >= en else "english"


def spell_digits(text: str, language: str) -> str:
    """Each run of digits read digit by digit ("23" -> "two three" / "二三").

    Mirrors the official first-occurrence `str.replace(num, words, 1)` per run, in order.
    """
    for num in re.findall(r"\d+", text):
        if language == "chinese":
            words = "".join(_ZH_DIGITS[c] for c in num)
        else:
            words = " ".join(_EN_DIGITS[c] for c in num)
        text = text.replace(num, words, 1)
    return text


def normalize_tts_text(text: str, language: str) -> str:
    """Streaming-mode normalisation of one LLM text piece: digits spelled out, markdown "*" removed."""
    return spell_digits(text, language).replace("*", "")


def sentence_end(text: str) -> str:
    """The first sentence-end character kind found in `text`, or "".

    Official quirk kept: the characters are tried in a fixed order; a "." whose first occurrence
    follows a digit ("1.") disqualifies "." entirely, even if a later "." would count.
    """
    for c in SENTENCE_END_CHARS:
        if c not in text:
            continue
        idx = text.find(c)
        if c == "." and idx > 0 and text[idx - 1].isdigit():
            continue
        return c
    return ""


def split_at_sentence_end(gen_text: str, end_char: str) -> tuple[str, str]:
    """(segment text up to and including the last `end_char`, the rest carried to the next segment)."""
    idx = gen_text.rfind(end_char)
    assert idx != -1, f"{end_char!r} not in the segment text"
    return gen_text[: idx + 1], gen_text[idx + 1 :]
