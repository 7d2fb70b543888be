"""The official 3-token LLM chunk generator of `streaming_generate` (spec §4.5) on a session's state.

Owns, as programs (omni.model.ops): one `llm.generate(max_new_tokens=3)` call (`llm_call`: one
forward over the input ids, then one per sampled token, so a call is a bounded amount of work) and
the chunk loop around it (`llm_chunks`: incomplete UTF-8 held back, the last sampled token fed
only as the next call's input). Does not own: the turn flags beyond `llm_generate_completed`, the
TTS, prompt strings.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch

from ..chat import decode_text
from ..loader import Omni
from ..model.ops import LLMForward, LLMSample
from ..sampling import SamplingParams
from .speech import LLMChunk
from .state import SessionState

if TYPE_CHECKING:
    from ..tools.reply import Gate

LLM_TOKENS_PER_CALL = 3  # official llm_generate_chunk: llm.generate(max_new_tokens=3) per call
REPLACEMENT_CHAR = "\ufffd"  # decode of an incomplete UTF-8 sequence: held back for the next call


def llm_chunks(
    m: Omni,
    st: SessionState,
    input_ids: list[int],
    max_new_tokens: int,
    params: SamplingParams,
    trace: dict | None,
    gate: Gate | None = None,
):
    """Program: official llm_generate_chunk (spec §4.5): 3-token calls, incomplete UTF-8 held back,
    the last sampled token fed only as the next call's input (never at the end). Outputs one
    `LLMChunk` per call. `gate` (tools): a mask on every draw, and tokens that end the text (a
    `<tool_call>`: noted in `gate.opened`, left out of the text, not fed)."""
    term = m.ids.terminators
    held: list[int] = []
    generated, j = 0, 0
    while True:
        new, hidden = yield from llm_call(m, st, input_ids, j == 0, params, gate)
        if trace is not None:
            trace[f"llm_chunk.{j}.input_ids"] = torch.tensor([input_ids])
            trace[f"llm_chunk.{j}.new_ids"] = torch.tensor([new])
            trace.setdefault("llm_generated_ids", []).extend(new)
            if hidden is not None:
                trace["first_chunk_last_layer_hidden"] = hidden.detach().cpu()
        opened = gate is not None and new[-1] in gate.stops
        pending = held + (new[:-1] if opened else new)
        cut = len(pending)
        while cut and decode_text(m, pending[:cut]).endswith(REPLACEMENT_CHAR):
            cut -= 1
        held = pending[cut:]
        text = decode_text(m, pending[:cut])
        if trace is not None:
            trace.setdefault("llm_chunk_texts", []).append(text)
        input_ids, generated, j = [new[-1]], generated + len(new), j + 1
        eos = new[-1] in term
        if eos:
            st.llm_generate_completed = True
        yield LLMChunk(text, hidden, st.cache_len)
        if opened:
            assert gate is not None
            gate.opened = new[-1]
            return
        if eos or generated >= max_new_tokens:
            return


def llm_call(
    m: Omni, st: SessionState, input_ids: list[int], want_hidden: bool, params: SamplingParams, gate: Gate | None = None
):
    """Program: one `llm.generate(max_new_tokens=3)`, one `LLMForward` op per fed input; returns
    (new ids, last-layer hidden of the input ids or None). The repetition penalty sees this call's
    ids only. Each forward is recorded as it lands, so a reply closed between two ops leaves the
    span record matching the cache."""
    seen = list(input_ids)
    feed, new, hidden = list(input_ids), [], None
    while True:
        start = st.cache_len
        out = yield LLMForward(
            st.llm_cache,
            ids=feed,
            all_hidden=want_hidden and not new,
            sample=LLMSample(params, tuple(seen), st.generator, gate.mask if gate is not None else None),
        )
        st.record("reply", start)
        if not new and want_hidden:
            hidden = out.hidden
        new.append(out.token)
        seen.append(out.token)
        stop = out.token in m.ids.terminators or (gate is not None and out.token in gate.stops)
        if stop or len(new) == LLM_TOKENS_PER_CALL:
            return new, hidden
        feed = [out.token]
