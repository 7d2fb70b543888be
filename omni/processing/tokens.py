"""The Qwen2/Qwen3 tokenizer with the MiniCPM special tokens, read from the checkpoint directory.

Owns: loading the tokenizer files (tokenizer.json / vocab + merges, tokenizer_config.json) with
transformers' Qwen2 tokenizer, and `SpecialIds`, every special-token id the prompt layout needs,
looked up by string so nothing depends on a particular vocabulary. Does not own: prompt layout.
"""

from __future__ import annotations

import unicodedata
import weakref
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Collection

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

MARK_IMAGE = "(<image>./</image>)"
MARK_AUDIO = "(<audio>./</audio>)"
TERMINATORS = ("<|im_end|>", "<|endoftext|>")
# The tokens that bound a media item's embeddings: in plain text they would mark media that is not there.
MEDIA_TOKENS = ("<image>", "</image>", "<slice>", "</slice>", "<|audio_start|>", "<|audio_end|>")


@dataclass(frozen=True)
class SpecialIds:
    unk: int
    im_start: int  # <|im_start|>
    im_end: int  # <|im_end|>
    endoftext: int
    image_start: int  # <image>
    image_end: int
    slice_start: int
    slice_end: int
    audio_start: int
    audio_end: int
    spk_bos: int
    spk: int
    spk_eos: int
    tts_bos: int
    tts_eos: int
    unit: int

    @property
    def terminators(self) -> tuple[int, int]:
        return (self.im_end, self.endoftext)


_NAMES = {
    "unk": "<unk>",
    "im_start": "<|im_start|>",
    "im_end": "<|im_end|>",
    "endoftext": "<|endoftext|>",
    "image_start": "<image>",
    "image_end": "</image>",
    "slice_start": "<slice>",
    "slice_end": "</slice>",
    "audio_start": "<|audio_start|>",
    "audio_end": "<|audio_end|>",
    "spk_bos": "<|spk_bos|>",
    "spk": "<|spk|>",
    "spk_eos": "<|spk_eos|>",
    "tts_bos": "<|tts_bos|>",
    "tts_eos": "<|tts_eos|>",
    "unit": "<unit>",
}


def load_tokenizer(checkpoint_dir: str | Path) -> PreTrainedTokenizerBase:
    """Qwen2 fast tokenizer from the checkpoint's own files (no remote code, no network).

    The official tokenizer_config names `MiniCPMOTokenizerFast` with an auto_map to remote code;
    that class only adds `*_id` properties, which `SpecialIds` replaces, so the stock Qwen2 class
    loads the same vocabulary, merges and added tokens.
    """
    # transformers 5 only aliases the 4.x name at run time (to Qwen2Tokenizer), unseen by its stubs
    from transformers import Qwen2TokenizerFast  # pyright: ignore[reportAttributeAccessIssue]

    return Qwen2TokenizerFast.from_pretrained(str(checkpoint_dir))


ABSENT = -1  # the id of a token the family's vocabulary lacks: it matches no input id


def special_ids(tokenizer: PreTrainedTokenizerBase, optional: Collection[str] = ()) -> SpecialIds:
    """Every `SpecialIds` field looked up by string; fields named in `optional` (tokens a family
    does without, e.g. V-4.5's audio and TTS markers) are `ABSENT` when missing."""
    vocab = tokenizer.get_vocab()
    missing = [s for k, s in _NAMES.items() if s not in vocab and k not in optional]
    if missing:
        raise ValueError(f"tokenizer lacks MiniCPM special tokens: {missing}")
    return SpecialIds(**{k: vocab.get(s, ABSENT) for k, s in _NAMES.items()})


def load_tts_tokenizer(checkpoint_dir: str | Path) -> PreTrainedTokenizerBase:
    """ChatTTS BERT tokenizer from assets/chattts_tokenizer (spec §1.5; never downloaded)."""
    from transformers import BertTokenizerFast  # pyright: ignore[reportAttributeAccessIssue] - as Qwen2TokenizerFast

    path = Path(checkpoint_dir) / "assets" / "chattts_tokenizer"
    if not path.is_dir():
        raise FileNotFoundError(f"{path} is missing: the TTS text tokenizer ships with the checkpoint")
    return BertTokenizerFast.from_pretrained(str(path))


_LONGEST: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def fewest_tokens(text: str, tokenizer: PreTrainedTokenizerBase) -> int:
    """A lower bound on the tokens `text` encodes to, without tokenizing it: byte-level BPE
    covers the normalized text's UTF-8 bytes, each token at most as many as the longest
    vocabulary entry (which spells one byte per character). Milliseconds for megabytes, where
    tokenizing them takes seconds: a limit in tokens can refuse a huge text at once."""
    longest = _LONGEST.get(tokenizer)
    if longest is None:
        longest = _LONGEST[tokenizer] = max(len(k.encode()) for k in tokenizer.get_vocab())
    norm = getattr(getattr(tokenizer, "backend_tokenizer", None), "normalizer", None)
    if norm is None:
        normalized = text
    elif type(norm).__name__ == "NFC":  # Qwen's: the standard library's is 1000x faster on megabytes
        normalized = unicodedata.normalize("NFC", text)
    else:
        normalized = norm.normalize_str(text)
    return -(-len(normalized.encode()) // longest)
