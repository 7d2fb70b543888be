"""The barge-in rollback of a streaming session (mixed into engine.Session): stop the reply and
keep in the LLM cache only what the listener heard (`interrupt`, `interrupt_ms`), or take the
reply out as if it was never made (`forget_reply`).

Owns no state: it reads and crops the session's `SessionState` and its latest `ReplyRecord`.
"""

from __future__ import annotations

from ..loader import Omni
from .reply import ReplyRecord
from .state import SessionState

MS_PER_S = 1000


class BargeIn:
    m: Omni
    state: SessionState
    _reply: ReplyRecord | None

    def _close_active(self) -> None: ...  # engine.Session's: close the program running now

    @property
    def sample_rate_hz(self) -> int:
        assert self.m.vocos is not None, "the vocoder's rate: a checkpoint without the TTS has none"
        return self.m.vocos.dims.sample_rate_hz

    @property
    def reply_audio_ms(self) -> float:
        """Audio handed out so far in the current reply, in ms at 24 kHz (0 when there is none).

        A gateway can check a client's `audio_end_ms` against it before `interrupt_ms`."""
        reply = self._reply
        return 0.0 if reply is None else reply.samples * MS_PER_S / self.sample_rate_hz

    def interrupt_ms(self, played_ms: float) -> int:
        """`interrupt` with the playback position in milliseconds of reply audio actually played."""
        if played_ms < 0:
            raise ValueError(f"played_ms {played_ms} < 0")
        return self.interrupt(int(played_ms * self.sample_rate_hz // MS_PER_S))

    def interrupt(self, played_samples: int) -> int:
        """Stop the reply; keep in the LLM cache only the reply text whose audio was fully played.

        Returns the new cache length. The next user prefill opens with the interrupted-turn prefix.
        """
        self._close_active()
        st, reply = self.state, self._reply
        if reply is None:
            return st.cache_len
        keep = reply.played_cache_len(played_samples)
        if keep < st.cache_len:
            st.crop(keep)
        st.llm_generate_completed = False
        st.new_user_msg = True
        self._reply = None
        return st.cache_len

    def forget_reply(self) -> int:
        """Stop the reply and take it out of the context: the session is as it was before the
        reply began (its user turn still open), except that the user-audio encoder cache starts
        afresh. Returns the new cache length. No reply: nothing changes."""
        self._close_active()
        st, reply = self.state, self._reply
        if reply is None:
            return st.cache_len
        st.new_user_msg, st.llm_generated, st.llm_generate_completed = reply.flags_before
        st.crop(reply.prefix_end - reply.prefix_len)  # prefix_end moves with a slide
        self._reply = None
        return st.cache_len
