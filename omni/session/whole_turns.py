"""A whole turn (omni/tools/turns.py renders it: an assistant item, tool results, a later tools
list) prefilled into a session's context as one program, checked for room first.

Owns only that program; the text layout is the tools' (omni/tools/turns.py), the session's
state and room rules are the session's (engine.py, state.py).
"""

from __future__ import annotations

from typing import Protocol

import torch

from ..model.ops import LLMForward
from .prefill import PrefillRecord
from .state import SessionState


class Host(Protocol):
    """What the program needs of its session (engine.Session), named here so this module does
    not import the engine that imports it."""

    state: SessionState
    prefill_chunk_tokens: int

    def _make_room(self, n: int) -> None: ...


def prefill_turn(s: Host, text: str, ids: list[int], opens_user: bool, role: str):
    """Program: `ids` (the rendered turn) into the session's context, checked for room first."""
    st = s.state
    s._make_room(len(ids))  # before any state changes: a refusal leaves the session as it was
    if opens_user:
        st.new_user_msg = False
    else:  # closed by what comes next, as a completed reply is
        st.new_user_msg, st.llm_generated, st.llm_generate_completed = True, True, True
        st.audio_cache.clear()
    start = st.cache_len
    try:
        for i in range(0, len(ids), s.prefill_chunk_tokens):
            out = yield LLMForward(st.llm_cache, ids=ids[i : i + s.prefill_chunk_tokens])
    except BaseException:
        st.crop(start)
        raise
    st.record("user" if role == "tool" else role, start)
    input_ids = torch.tensor([ids])
    return PrefillRecord(text, input_ids, [], [], None, [], None, torch.empty(0), out.hidden, (start, st.cache_len))
