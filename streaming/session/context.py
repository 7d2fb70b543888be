"""What the model has heard: the conversation's edits of its engine context, each preceded by the
pending system prompt and rollback, so every prefill lands on the context the user expects.

Owns no state of its own: reads and advances the connection's state (state.py) on the owner task.
"""

from __future__ import annotations

import time

from omni.processing.prompt import plain_text
from omni.tools.prompt import tools_section, tools_turn_text

from .state import ConnectionState, Turn


class Context:
    def __init__(self, engine, state: ConnectionState, max_item_tokens: int, metrics=None) -> None:
        self.engine, self.state, self.max_item_tokens, self.metrics = engine, state, max_item_tokens, metrics

    async def before_input(self) -> None:
        """The system prompt if it changed, then the cut of an interrupted reply."""
        await self._ensure_system()
        self.state.assistant_last = False
        rollback = self.state.context_grows()
        if rollback is None:
            return
        if rollback.heard_ms is None:  # deleted: as if it was never said
            await self.engine.forget_reply()
        else:  # only the reply audio actually heard stays
            await self.engine.interrupt_ms(rollback.heard_ms)

    async def add_item(self, content: list) -> None:
        """A user message (text, 16 kHz audio, images, in order)."""
        await self.before_input()
        await self.engine.prefill({"role": "user", "content": content}, self.max_item_tokens)

    async def add_turn(self, msg: dict) -> None:
        """A whole turn (omni.tools.turns: an assistant item, a tool result, the tools in force);
        a call item joins the assistant turn the context ends in."""
        extend = msg["role"] == "assistant" and not msg.get("content") and self.state.assistant_last
        await self.before_input()
        limit = None if msg["role"] == "system" else self.max_item_tokens  # the tools: as the system turn
        await self.engine.prefill({**msg, "extend": extend}, limit)
        self.state.assistant_last = msg["role"] == "assistant"

    async def show_tools(self, spec) -> None:
        """Before a reply: the context lists the reply's tools (omni.tools.spec.ToolSpec) — a later
        system turn when they differ from those the model was last shown."""
        await self.before_input()  # the system turn first: it may list them already
        st = self.state
        if spec is None or not spec.callable() or spec.tools == st.tools_shown:
            return
        await self.add_turn({"turn": True, "role": "system", "content": tools_turn_text(spec.tools)})
        st.tools_shown = spec.tools

    async def add_unit(self, unit, turn: Turn) -> None:
        """One 1-s unit of `turn` (which counted it already); its prefill cost is the turn's."""
        await self.before_input()
        t = time.perf_counter()
        await self.engine.append_unit(unit.audio_16k, unit.frame)
        seconds = time.perf_counter() - t
        turn.prefill_ms.append(1000 * seconds)
        if self.metrics is not None:
            self.metrics.unit_cost.observe(seconds)

    async def _ensure_system(self) -> None:
        st = self.state
        if not st.system_dirty:
            return
        st.system_dirty = False
        c = st.config
        ref = st.ref_16k if c.reference_audio is not None else None
        mode = "audio_assistant"  # default voice without a clip, cloned voice with one
        tools = tools_section(c.tools) if c.tools else ""  # the template's # Tools, in the system turn
        text = plain_text(c.instructions or "") or None  # media tokens would mark absent media
        await self.engine.set_system(c.omni.seed, mode, ref, text, tools)  # a seed: from a start
        st.tools_shown = c.tools
