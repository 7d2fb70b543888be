"""The connection state's named transitions (streaming/session/state.py): the phases a
conversation goes through, the rollback it owes the context, and what it refuses."""

from __future__ import annotations

import pytest

from streaming.session.config import SessionConfig
from streaming.session.respond import Response
from streaming.session.state import ConnectionState, Phase, Rollback, TransitionError, Turn


def reply(n: int, previous: str | None = None) -> Response:
    return Response(f"resp_{n}", f"item_{n}", 0.0, previous_item_id=previous)


def test_a_reply_that_ends_by_itself_goes_back_to_listening_and_owes_no_rollback():
    st = ConnectionState(SessionConfig())
    r = reply(1)
    st.reply_started(r)
    assert (st.phase, st.reply, st.cuttable, st.last_item_id) == (Phase.RESPONDING, r, True, "item_1")
    st.reply_over(r)
    assert st.phase is Phase.LISTENING
    assert st.context_grows() is None and not st.cuttable  # the next input: it can no longer be cut


def test_barge_in_then_the_clients_truncate_refine_the_cut_applied_once():
    st = ConnectionState(SessionConfig())
    r = reply(1)
    st.reply_started(r)
    st.interrupted(r, 480.0)  # the server's playout position
    st.reply_over(r)  # the cancelled task ends later: still interrupted
    assert st.phase is Phase.INTERRUPTED
    st.interrupted(r, 200.0)  # the client heard less
    assert st.context_grows() == Rollback("item_1", 200.0)
    assert st.phase is Phase.LISTENING and st.context_grows() is None


def test_a_deleted_reply_is_forgotten_whole_and_the_item_before_it_is_the_latest():
    st = ConnectionState(SessionConfig())
    st.last_item_id = "item_user"
    r = reply(1, previous="item_user")
    st.reply_started(r)
    st.reply_over(r)
    st.reply_deleted(r)
    assert (st.reply, st.last_item_id) == (None, "item_user")
    assert st.context_grows() == Rollback("item_1", None)


def test_a_late_end_of_an_older_reply_does_not_end_the_newer_one():
    st = ConnectionState(SessionConfig())
    r1, r2 = reply(1), reply(2)
    st.reply_started(r1)
    st.interrupted(r1, 100.0)
    st.context_grows()
    st.reply_started(r2)
    st.reply_over(r1)
    assert st.phase is Phase.RESPONDING and st.reply is r2


def test_closing_frees_media_and_refuses_every_later_transition():
    st = ConnectionState(SessionConfig())
    st.turn = Turn("item_t")
    st.pending_units.append(("unit", st.turn))
    st.closing()
    assert st.phase is Phase.CLOSING and st.turn is None and st.pending_units == []
    with pytest.raises(TransitionError, match="closing -> responding"):
        st.reply_started(reply(1))
    with pytest.raises(TransitionError, match="closing -> interrupted"):
        st.interrupted(reply(1), 0.0)


def test_an_interrupted_reply_must_be_rolled_back_before_a_new_one_starts():
    st = ConnectionState(SessionConfig())
    r = reply(1)
    st.reply_started(r)
    st.interrupted(r, 0.0)
    with pytest.raises(TransitionError, match="interrupted -> responding"):
        st.reply_started(reply(2))
