"""Where a session's caches come from: `Caches`, what a `Session` asks for (a fresh LLM cache per
conversation, a fresh TTS state per speech segment), and `SoloCaches`, the answer for a session
run alone (new, growing caches).

A batch engine answers with pool slots instead (omni.batch.slots.SlotCaches). Does not own: the
caches once handed out (the session's state holds them).
"""

from __future__ import annotations

from typing import Protocol

import torch

from ..loader import Omni
from ..model.decoder import KVCache
from ..model.tts_state import TTSState


class Caches(Protocol):
    def llm(self) -> KVCache: ...

    def tts_state(self, text_mask: torch.Tensor | None = None) -> TTSState: ...


class SoloCaches:
    """The caches of a session run alone: new, growing ones whenever asked (a batch engine gives
    its sessions pool slots instead, omni.batch.slots.SlotCaches)."""

    def __init__(self, m: Omni):
        self.m = m

    def llm(self) -> KVCache:
        return self.m.net.llm.new_cache()

    def tts_state(self, text_mask: torch.Tensor | None = None) -> TTSState:
        return self.m.net.tts.new_state(text_mask)
