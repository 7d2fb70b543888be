"""Cutting the latest reply: barge-in (the user talks over it), and the client's truncate, delete
and cancel. Each stops what is heard at once and records, as the state's `interrupted`
transition, how much of the reply the context keeps; the rollback itself is applied before the
next input (context.py).
"""

from __future__ import annotations

from ..errors import ProtocolError
from . import events as E
from .state import ConnectionState


class Cuts:
    def __init__(self, state: ConnectionState, responder, playout, items, send) -> None:
        self.state, self.responder, self.playout, self.items, self.send = state, responder, playout, items, send

    async def truncate(self, ev) -> None:
        st = self.state
        r = st.reply
        if r is None or ev.item_id != r.item_id:
            known = self.items.get(ev.item_id)
            if known is None or known.role != "assistant":
                raise ProtocolError(
                    "item_not_found", f"no assistant audio item {ev.item_id!r} to truncate", "item_id", ev.event_id
                )
            # An older reply: already cut where the server heard it stop, or heard whole; the
            # context cannot change any more. Acknowledged, as OpenAI does (Pipecat ends its
            # session on any error here).
            await self.send(E.ItemTruncated(ev.item_id, ev.content_index, ev.audio_end_ms))
            return
        emitted_ms = r.audio_ms
        if ev.audio_end_ms > emitted_ms + 1:
            raise ProtocolError(
                "invalid_value",
                f"audio_end_ms {ev.audio_end_ms} is beyond the {emitted_ms:.0f} ms of audio sent for this item",
                "audio_end_ms",
                ev.event_id,
            )
        if self.responder.current is r:
            await self.responder.cancel("client_cancelled")
            r.cut_live = True
        self.playout.stop(r.id)  # nothing after audio_end_ms is heard any more
        r.stopped = True
        if st.cuttable:
            st.interrupted(r, float(ev.audio_end_ms))
        # else too late: the next turn was added, and the context keeps the server's own cut
        await self.send(E.ItemTruncated(ev.item_id, ev.content_index, ev.audio_end_ms))

    async def delete(self, ev) -> None:
        """The latest reply may be deleted (LiveKit does so when an interruption left nothing
        heard): the context goes back to before it. Older items are in the model's context for good."""
        st = self.state
        r = st.reply
        if r is None or ev.item_id != r.item_id or not st.cuttable:
            raise ProtocolError(
                "unsupported_operation",
                "only the latest assistant item can be deleted, "
                "before the next turn is added; older items are in the model's context "
                "(start a new session, or truncate the reply)",
                "item_id",
                ev.event_id,
            )
        if self.responder.current is r:
            await self.responder.cancel("client_cancelled")
        self.playout.stop(r.id)
        st.reply_deleted(r)
        self.items.drop(r.item_id)
        await self.send(E.ItemDeleted(r.item_id))

    async def cancel(self, ev) -> None:
        """Cancel the reply being generated, or stop one that is still playing out (WebRTC)."""
        r = self.state.reply
        if r is not None and r.cut_live and ev.response_id in (None, r.id):
            # OpenAI keeps generating after a truncate until the client cancels, so SDKs send
            # truncate + cancel; here the truncate already cancelled it: this cancel is that one.
            r.cut_live = False
            return
        if r is None or not self.audible() or (ev.response_id and ev.response_id != r.id):
            # OpenAI's code and wording: Pipecat treats any other code as fatal
            raise ProtocolError(
                "response_cancel_not_active",
                "Cancellation failed: no active response found",
                "response_id" if ev.response_id else None,
                ev.event_id,
            )
        await self.barge_in("client_cancelled")

    def audible(self) -> bool:
        """The last reply is still being generated or its audio is still playing."""
        r = self.state.reply
        if r is None or not self.state.cuttable or r.stopped:
            return False
        return self.responder.current is r or self.playout.played_ms(r.id) < r.audio_ms - 20

    async def barge_in(self, reason: str) -> None:
        """Stop the reply the user talks over; the context will keep only what was heard (the
        server's playout position, replaced by the client's `audio_end_ms` if a truncate comes)."""
        r = self.state.reply
        if r is None:
            return
        heard_ms = self.playout.played_ms(r.id)  # read before the playout is stopped
        r.stopped = True
        self.state.interrupted(r, heard_ms)
        await self.responder.cancel(reason)
        self.playout.stop(r.id)  # a reply that finished generating may still be playing (WebRTC queue)
