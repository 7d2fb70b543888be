"""A batch engine's memory: the size of one session's pool slots and the caches a session gets there.

Owns: `EngineFull` (no slot left), `tts_slot_tokens` / `slot_bytes` (what one session's LLM and
TTS slots hold and cost, so a caller can size the engine to its memory) and `SlotCaches` (a
session's view of its slot: a fresh LLM cache and TTS state on request). Does not own: which
session holds which slot (the engine), the pools' layout (omni.model.pool).
"""

from __future__ import annotations

import torch

from ..loader import Omni
from ..model.pool import KVPool, SlotCache, TTSSlotCache
from ..model.tts import ConditionalChatTTS, TTSState
from ..model.tts_loop import SpeechParams
from ..session.speech import CARRY_FRAMES


class EngineFull(RuntimeError):
    """Every slot of the engine's pools is taken."""


def tts_slot_tokens(tts: ConditionalChatTTS) -> int:
    """A TTS segment's most positions: text slots + the official frame cap (checked after a call,
    so one call more) + the frames a rollover carries in."""
    p = SpeechParams()
    return tts.condition_length - 1 + p.max_frames + 2 * p.frames_per_step + CARRY_FRAMES


def slot_bytes(omni: Omni, slot_tokens: int) -> int:
    """Memory of one session's slots (LLM pool, and the TTS pool when the family speaks)."""
    c, tts = omni.config, getattr(omni.net, "tts", None)
    llm = KVPool.slot_bytes(c.num_hidden_layers, c.num_key_value_heads, c.head_dim, slot_tokens, omni.dtype)
    if tts is None:  # a text-only family (MiniCPM-V 4.5): no TTS slot
        return llm
    t = tts.cfg
    return llm + KVPool.slot_bytes(
        t.num_hidden_layers,
        t.num_attention_heads,
        t.hidden_size // t.num_attention_heads,
        tts_slot_tokens(tts),
        torch.float32,
    )


class SlotCaches:
    """A session's caches in the engine's pools: its slot, reset whenever asked for a fresh one.
    Without a TTS (`tts` None, no TTS pool) asking for a TTS state is refused."""

    def __init__(self, tts: ConditionalChatTTS | None, llm_pool: KVPool, tts_pool: KVPool | None, slot: int):
        self.tts = tts
        self._llm = SlotCache(llm_pool, slot)
        self._tts = None
        if tts is not None and tts_pool is not None:
            self._tts = TTSSlotCache(tts_pool, slot, tts.condition_length - 1)

    def llm(self) -> SlotCache:
        """The LLM slot, empty; it was zeroed when the session opened (stale keys after are finite)."""
        self._llm._len = [0] * self._llm.num_layers
        return self._llm

    def tts_state(self, text_mask: torch.Tensor | None = None) -> TTSState:
        if self.tts is None or self._tts is None:
            raise RuntimeError("this engine's model has no TTS: no speech state")
        return self.tts.new_state(text_mask, cache=self._tts.reset())
