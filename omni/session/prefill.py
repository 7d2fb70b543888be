"""What a session's prefill takes and gives back: the streaming constants of a prefill, the
log-mel of one audio fragment (`fragment_mel`), the refusal of a message over the caller's
limit (`InputTooLong`) and `PrefillRecord`, what one prefill fed the LLM.

Does not own: the prompt rules and the prefill program (engine.py), the encoders (omni.model).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from ..loader import Omni
from ..processing.audio import log_mel
from ..processing.tokens import fewest_tokens

STREAM_MAX_SLICE_NUMS = 1  # official streaming_prefill processor call
PREFILL_CHUNK_TOKENS = 1024  # a prefill's LLM forward in pieces of this many positions (bounded memory)


class InputTooLong(ValueError):
    """A message longer than the caller's limit, refused before anything is prefilled."""


def refuse_by_length(tokenizer, texts: list[str], max_tokens: int | None) -> None:
    """InputTooLong when `texts`' length alone says they exceed `max_tokens`, before any
    tokenizing (megabytes of text take seconds to tokenize; this takes milliseconds)."""
    if max_tokens is None:
        return
    at_least = sum(fewest_tokens(t, tokenizer) for t in texts)
    if at_least > max_tokens:
        raise InputTooLong(
            f"the item is at least {at_least} tokens long; the limit is {max_tokens} (the server's max_item_tokens)"
        )


@dataclass
class PrefillRecord:
    """What one prefill fed the LLM (returned for tests and the golden replay)."""

    text: str
    input_ids: torch.Tensor  # [1, L]
    image_bounds: list[tuple[int, int]]
    audio_bounds: list[tuple[int, int]]
    tgt_sizes: torch.Tensor | None
    mels: list[torch.Tensor]  # [1, 80, T] per clip
    vision: torch.Tensor | None  # [n_slices, query_num, H]
    inputs_embeds: torch.Tensor  # [1, L, H]
    last_hidden: torch.Tensor  # [H] final hidden state at the last position (lm_head of it = the logits)
    cache_range: tuple[int, int] = (0, 0)


def fragment_mel(m: Omni, audio_16k: np.ndarray) -> torch.Tensor:
    """One audio fragment's log-mel [1, 80, T] on the audio encoder's device and dtype."""
    pre, w = m.pre, m.net.apm.conv1.weight
    if len(audio_16k) > pre.chunk_length * pre.sampling_rate:
        raise ValueError(f"audio fragment over {pre.chunk_length} s (the official encoder asserts batch 1)")
    return torch.from_numpy(log_mel(audio_16k, pre))[None].to(device=w.device, dtype=w.dtype)
