"""A TTS segment's state: the fixed-slot KV cache of ConditionalChatTTS (spec §5.1) and `TTSState`.

Owns: `TTSCache` (zero-initialised text slots, written in place by every text prefill, audio
frames appended after them), the writer a text prefill goes through (`TTSCache.at_slot`) and
`TTSState` (one segment: its cache, the frames drawn so far, the streaming text mask). Does not
own: the model (tts.py creates states, `new_state`), who holds them (the session).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


class TTSCache:
    """Per layer k/v [1, H, slots, Dh]: `text_slots` fixed zero-initialised text slots, audio appended.

    Owned by the session. `update` appends (audio steps); `at_slot(b)` gives the object the
    decoder writes a text prefill through: it attends over the truncated prefix [:b] only and
    stores the new k/v in place at [b, b+n), even after audio has been appended.
    """

    def __init__(
        self,
        num_layers: int,
        kv_heads: int,
        head_dim: int,
        text_slots: int,
        dtype=torch.float32,
        device=None,
        capacity_frames: int = 256,
    ):
        self.text_slots = text_slots
        shape = (1, kv_heads, text_slots + capacity_frames, head_dim)
        self._k = [torch.zeros(shape, dtype=dtype, device=device) for _ in range(num_layers)]
        self._v = [torch.zeros(shape, dtype=dtype, device=device) for _ in range(num_layers)]
        self._len = [text_slots] * num_layers

    @property
    def seq_len(self) -> int:
        return self._len[0]

    def update(self, layer: int, k: torch.Tensor, v: torch.Tensor):
        """Append k, v [1, H, T, Dh]; return all keys and values of `layer`."""
        n, T = self._len[layer], k.shape[2]
        cap = self._k[layer].shape[2]
        if n + T > cap:  # amortised doubling; text slots keep their place
            extra = max(n + T, 2 * cap) - cap
            grow = lambda buf: torch.cat([buf, buf.new_zeros(*buf.shape[:2], extra, buf.shape[3])], 2)
            self._k[layer], self._v[layer] = grow(self._k[layer]), grow(self._v[layer])
        self._k[layer][:, :, n : n + T] = k
        self._v[layer][:, :, n : n + T] = v
        self._len[layer] = n + T
        return self._k[layer][:, :, : n + T], self._v[layer][:, :, : n + T]

    def at_slot(self, begin: int) -> "_SlotWriter":
        return _SlotWriter(self, begin)

    def layer(self, i: int):
        n = self._len[i]
        return self._k[i][:, :, :n], self._v[i][:, :, :n]


class _SlotWriter:
    def __init__(self, cache: TTSCache, begin: int):
        self.cache, self.seq_len = cache, begin

    def update(self, layer: int, k: torch.Tensor, v: torch.Tensor):
        b, e = self.seq_len, self.seq_len + k.shape[2]
        assert e <= self.cache.text_slots, f"text slots [{b}, {e}) exceed {self.cache.text_slots}"
        self.cache._k[layer][:, :, b:e] = k
        self.cache._v[layer][:, :, b:e] = v
        return self.cache._k[layer][:, :, :e], self.cache._v[layer][:, :, :e]


@dataclass
class TTSState:
    """One TTS segment of one session: cache, codes so far, text mask. Created by `new_state`."""

    cache: TTSCache
    frames: torch.Tensor  # [1, n, num_vq] long: every frame drawn (incl. a final EOS frame)
    condition_length: int
    text_mask: torch.Tensor | None  # int8 [condition_length] (tts_text.text_mask), None = no text mask
    finished: bool = False

    @property
    def codes(self) -> torch.Tensor:
        """[1, n', num_vq] the official `new_ids`: the last frame dropped once finished (the EOS frame)."""
        return self.frames[:, :-1] if self.finished else self.frames

    @property
    def input_len(self) -> int:
        """Length of the official `audio_input_ids` (condition rows + frames)."""
        return self.condition_length + self.frames.shape[1]
