"""What slides out of a MiniCPM-V 4.5 session's bounded context, and making room for what comes.

Owns `BoundedContext`, the part of `V45Session` (omni.session.v45) that keeps its context within
`max_cache_tokens` and within a pool slot: the oldest complete turns slide out before a new user
turn, or whenever a slot would overflow (then even mid-turn, as o-2.6's session does); a long
camera turn also drops its own oldest packs once no complete turn is left to drop; a reply's
token cap shrinks to the room left; what still does not fit is `ContextFull`. Every cache
position the session keeps moves with a drop (`_shift`). Does not own: the session's programs.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..model.pool import ContextFull, SlotCache

if TYPE_CHECKING:
    from ..loader import Omni
    from .state import SessionState
    from .v45_reply import V45Reply
    from .v45_text import Tail
    from .v45_turns import Run, Turn


class BoundedContext:
    m: Omni
    state: SessionState
    max_cache_tokens: int | None
    reply_reserve_tokens: int
    tail: Tail
    turn: Turn | None
    run: Run | None
    _reply: V45Reply | None

    def _make_room(self, n: int, slide_packs: bool, reserve: bool) -> None:
        """Room for `n` more positions: a slot keeps a reply's reserve free (oldest turns slide out
        even mid-turn); a pack also keeps the context within `max_cache_tokens`, sliding out the
        camera turn's own oldest packs after every complete turn. Else `ContextFull`."""
        st, cache = self.state, self.state.llm_cache
        slot = cache if isinstance(cache, SlotCache) else None
        cap = slot.capacity - (self.reply_reserve_tokens if reserve else 0) if slot is not None else None
        limits = [x for x in (cap, self.max_cache_tokens if slide_packs else None) if x is not None]
        if not limits or st.cache_len + n <= min(limits):
            return
        limit = min(limits)
        self._drop_turns(max(limit - n, 0))
        while slide_packs and self.turn is not None and self.turn.packs and st.cache_len + n > limit:
            a, b = self.turn.packs.pop(0)
            st.drop(a, b, self.m.net.llm.model.inv_freq)
            self._shift(a, b)
        if slot is not None and cap is not None and st.cache_len + n > cap:
            raise ContextFull(
                f"the conversation context is full: {n} more positions (plus {self.reply_reserve_tokens} kept for "
                f"the reply) do not fit in the {slot.capacity}-position context of this session, which holds "
                f"{st.cache_len}; ask sooner or start a new conversation"
            )

    def _reply_room(self, prefix: int, max_new_tokens: int) -> int:
        """max_new_tokens, cut to what fits in a bounded cache (the last token is never fed)."""
        cache = self.state.llm_cache
        if not isinstance(cache, SlotCache):
            return max_new_tokens
        if prefix + max_new_tokens > cache.free:
            self._drop_turns(max(cache.capacity - prefix - max_new_tokens, 0))
        fits = cache.free - prefix + 1
        if fits < 1:
            raise ContextFull(
                f"the conversation context is full ({cache.seq_len} of {cache.capacity} positions): no room "
                "for a reply; start a new conversation"
            )
        return min(max_new_tokens, fits)

    def _slide_window(self, n: int) -> None:
        """Before a new user turn (`n` positions of the run before it still to come): drop the
        oldest complete turns while over budget."""
        if self.max_cache_tokens is not None and self.state.cache_len + n > self.max_cache_tokens:
            self._drop_turns(self.max_cache_tokens - n)

    def _drop_turns(self, budget: int) -> None:
        st = self.state
        if len(st.turn_starts) < 2:
            return
        a = st.turn_starts[0]
        dropped = st.drop_oldest_turns(budget, self.m.net.llm.model.inv_freq)
        if dropped:
            self._shift(a, a + dropped)

    def _shift(self, a: int, b: int) -> None:
        """Cache positions [a, b) were dropped: every position this session keeps moves with them."""
        for holder in (self.tail, self.turn, self.run, self._reply):
            if holder is not None:
                holder.shift(a, b)
