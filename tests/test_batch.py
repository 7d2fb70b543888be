"""The batch engine on the tiny-a checkpoint: N sessions batched give what each gives alone (text,
audio within 1e-5, caches), also with barge-in rollback, the sliding window and sessions joining
and leaving mid-reply; the pool forward's step shapes, chunked == whole, earlier cache entries
never change; earliest-deadline-first batches; one failing op fails only its session."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from omni.batch.engine import BatchEngine, EngineFull
from omni.batch.schedule import Pending, pick
from omni.model.ops import LLMForward
from omni.sampling import GREEDY, SamplingParams
from omni.session.engine import GenerateOptions, Session

WAV_ATOL = 1e-5  # batched GEMMs round differently; the ids and codes are identical
FRAME = Image.fromarray(np.random.default_rng(5).integers(0, 255, (120, 160, 3), dtype=np.uint8))


def audio(k: int) -> np.ndarray:
    return (0.1 * np.random.default_rng(k).standard_normal(16000)).astype(np.float32)


def reply_opts(sample: bool, speech_s: float = 2.0, tokens: int = 30) -> GenerateOptions:
    return GenerateOptions(
        sampling=SamplingParams() if sample else GREEDY, max_new_tokens=tokens, max_speech_s=speech_s, low_latency=True
    )


class Driver:
    """Runs an engine on the test thread; every command's (result, error) lands in a box."""

    def __init__(self, engine: BatchEngine):
        self.e = engine

    def cmd(self, sid, op, *args, deadline_s=None) -> list:
        box: list = []
        self.e.submit(sid, op, args, deadline_s, lambda r, err: box.append((r, err)))
        return box

    def script(self, sid, steps) -> None:
        for op, *args in steps:
            self.cmd(sid, op, *args)

    def reply(self, sid) -> tuple[str, np.ndarray, str | None]:
        """Take the current reply's pieces until it ends: (text, audio, end reason)."""
        text, wavs = "", []
        while True:
            box = self.cmd(sid, "reply_step")
            while not box:
                self.e.tick()
            ((result, error),) = box
            assert error is None, error
            if result[0] is None:
                return text, np.concatenate(wavs) if wavs else np.zeros(0, np.float32), result[1]
            text += result[0]
            wavs.append(result[1])


def alone(tiny, seed, steps, budget=None) -> tuple[list[tuple[str, np.ndarray, str | None]], Session]:
    """The same script on a Session run alone (sliding window `budget`): the reference."""
    s = Session(tiny, seed=seed, max_cache_tokens=budget)
    replies = []
    for op, *args in steps:
        if op == "system":
            s.seed = args[0]
            s.set_system(*args[1:])
        elif op == "unit":
            s.append_unit(*args)
        elif op == "rollback":
            s.interrupt_ms(*args)
        elif op == "generate":
            out = list(s.generate(*args))
            replies.append(
                (
                    "".join(t for t, _ in out),
                    np.concatenate([w for _, w in out]) if out else np.zeros(0, np.float32),
                    s.last_reply_end,
                )
            )
    return replies, s


def same(got, want) -> None:
    (t1, w1, e1), (t2, w2, e2) = got, want
    assert t1 == t2 and e1 == e2 and w1.shape == w2.shape, (t1, t2, e1, e2, w1.shape, w2.shape)
    np.testing.assert_allclose(w1, w2, atol=WAV_ATOL, rtol=0)


def caches_close(slot_cache, cache) -> None:
    assert slot_cache.seq_len == cache.seq_len
    for i in range(cache.num_layers):
        for x, y in zip(slot_cache.layer(i), cache.layer(i)):
            torch.testing.assert_close(x, y, atol=1e-5, rtol=1e-5)


@pytest.fixture(scope="module")
def ref(tiny):
    return (0.1 * np.random.default_rng(99).standard_normal(2 * tiny.pre.sampling_rate)).astype(np.float32)


def test_batched_sessions_equal_each_alone(tiny, ref):
    scripts = {  # greedy and sampled, voice clone or not, camera frames or not, different lengths
        1: [
            ("system", 1, "omni", ref, None),
            ("unit", audio(1), FRAME),
            ("unit", audio(2), None),
            ("generate", reply_opts(False)),
        ],
        2: [("system", 2, "audio_assistant", None, None), ("unit", audio(3), None), ("generate", reply_opts(True))],
        3: [("system", 3, "omni", None, None), ("unit", audio(4), FRAME), ("generate", reply_opts(True, 3.0))],
        4: [
            ("system", 4, "audio_assistant", None, None),
            ("unit", audio(5), None),
            ("generate", reply_opts(False, tokens=12, speech_s=1.0)),
        ],
    }
    e = BatchEngine(tiny, slots=6, slot_tokens=2048)
    d = Driver(e)
    sids = {k: e.open() for k in scripts}
    for k, steps in scripts.items():
        d.script(sids[k], steps)
    e.run_until_idle()
    assert e.stats.ops["llm"] > e.stats.batches["llm"] and e.stats.ops["tts"] > e.stats.batches["tts"]  # really batched
    for k, steps in scripts.items():
        (want,), s = alone(tiny, k, steps)
        same(d.reply(sids[k]), want)
        caches_close(e._sessions[sids[k]].session.state.llm_cache, s.state.llm_cache)


def test_barge_in_and_sliding_window_inside_a_batch(tiny, ref):
    """A is cut mid-reply (rollback to what was heard) while B and C generate; B's window slides
    before its third turn; then everyone goes on. Each equals its own script run alone."""
    long = reply_opts(False, speech_s=3.0, tokens=60)
    a0 = [("system", 1, "omni", ref, None), ("unit", audio(1), FRAME), ("generate", long)]
    b_turn = lambda k: [("unit", audio(20 + k), None), ("generate", reply_opts(False, 1.0, 9))]  # noqa: E731
    b = [("system", 2, "audio_assistant", None, None)] + b_turn(0) + b_turn(1) + b_turn(2)
    no_stop = GenerateOptions(
        sampling=GREEDY, max_new_tokens=60, max_speech_s=3.0, low_latency=True, force_no_stop=True
    )
    c = [
        ("system", 3, "omni", None, None),
        ("unit", audio(30), None),
        ("unit", audio(31), FRAME),
        ("generate", no_stop),
    ]
    _, after_turn0 = alone(tiny, 2, b[:3])
    budget = after_turn0.state.cache_len + 5  # turn 1 fits, turn 2 makes turn 0 slide out
    e = BatchEngine(tiny, slots=4, slot_tokens=2048)
    d = Driver(e)
    sa, sb, sc = e.open(), e.open(max_cache_tokens=budget), e.open()
    d.script(sa, a0)
    d.script(sc, c)
    d.script(sb, b[:3])
    first = d.cmd(sa, "reply_step")
    while not first:  # A's first piece is out; C is mid-work
        e.tick()
    assert e._sessions[sc].program is not None
    heard_ms = 1000 * len(first[0][0][1]) / 24000 / 2
    a1 = [("rollback", heard_ms), ("unit", audio(2), None), ("generate", reply_opts(False, 1.5))]
    d.script(sa, a1)
    got_b = [d.reply(sb)]
    for k in (1, 2):
        d.script(sb, b_turn(k))
        got_b.append(d.reply(sb))
    want_a, _ = alone(tiny, 1, a0 + a1)
    same(d.reply(sa), want_a[1])
    want_b, sb_alone = alone(tiny, 2, b, budget)
    _, unwindowed = alone(tiny, 2, b)
    assert len(sb_alone.state.turn_starts) == 2 < len(unwindowed.state.turn_starts)  # turn 0 slid out
    for g, w in zip(got_b, want_b):
        same(g, w)
    caches_close(e._sessions[sb].session.state.llm_cache, sb_alone.state.llm_cache)
    assert e._sessions[sb].session.state.turn_starts == sb_alone.state.turn_starts
    same(d.reply(sc), alone(tiny, 3, c)[0][0])


def test_sessions_join_and_leave_mid_reply(tiny):
    a = [("system", 1, "audio_assistant", None, None), ("unit", audio(1), None), ("generate", reply_opts(True, 3.0))]
    b = [("system", 2, "audio_assistant", None, None), ("unit", audio(2), None), ("generate", reply_opts(True, 3.0))]
    c = [("system", 3, "omni", None, None), ("unit", audio(3), FRAME), ("generate", reply_opts(True, 1.5))]
    e = BatchEngine(tiny, slots=2, slot_tokens=2048)
    d = Driver(e)
    sa, sb = e.open(), e.open()
    d.script(sa, a)
    d.script(sb, b)
    for _ in range(60):  # both mid-reply
        e.tick()
    assert e._sessions[sa].program is not None and e._sessions[sb].program is not None
    slot_b = e._sessions[sb].slot
    e.close(sb)  # B leaves mid-reply; C takes its slot at once
    sc = e.open()
    d.script(sc, c)
    e.run_until_idle()
    assert e._sessions[sc].slot == slot_b and sb not in e._sessions
    with pytest.raises(EngineFull):
        e.open()
    same(d.reply(sa), alone(tiny, 1, a)[0][0])
    same(d.reply(sc), alone(tiny, 3, c)[0][0])


def test_pool_forward_step_shapes_chunked_equals_whole_and_prefix_stability(tiny):
    """Through the executor on pool slots: a decode step of 3 sessions appends one position each
    ([3, D] out); a prefill in two ops equals it in one; earlier positions never change while
    other slots of the same pool are written."""
    from omni.model.pool import KVPool, SlotCache
    from omni.model.steps import Executor

    c, ex = tiny.config, Executor.of(tiny)
    pool = KVPool(
        c.num_hidden_layers, 4, c.num_key_value_heads, c.hidden_size // c.num_attention_heads, 64, torch.float32, "cpu"
    )
    caches = [SlotCache(pool, i).reset() for i in range(4)]
    emb = tiny.net.llm.embed(torch.randint(0, 500, (20,), generator=torch.Generator().manual_seed(0))).detach()
    ex.run([LLMForward(caches[0], embeds=emb)])
    ex.run([LLMForward(caches[1], embeds=emb[:7])])
    ex.run([LLMForward(caches[1], embeds=emb[7:])])
    caches_close(caches[1], caches[0])  # chunked == whole
    snap = [t.clone() for i in range(c.num_hidden_layers) for t in caches[0].layer(i)]
    ex.run([LLMForward(caches[2], embeds=emb[:5])])
    outs = ex.run([LLMForward(cc, ids=[7], all_hidden=True) for cc in caches[:3]])  # one decode batch
    assert [o.hidden.shape for o in outs] == [(1, c.hidden_size)] * 3
    assert [cc.seq_len for cc in caches[:3]] == [21, 21, 6]
    now = [t[:, :, :20] for i in range(c.num_hidden_layers) for t in caches[0].layer(i)]
    assert all(torch.equal(x, y) for x, y in zip(snap, now))  # earlier entries untouched


def test_edf_picks_the_most_urgent_kind_and_fills_the_batch_by_deadline():
    p = [
        Pending(5.0, 0, "tts"),
        Pending(1.0, 1, "llm"),
        Pending(3.0, 2, "llm"),
        Pending(0.5, 3, "decode"),
        Pending(2.0, 4, "llm"),
        Pending(2.0, 5, "llm"),
    ]
    assert pick(p, 8) == [3]  # the most urgent op decides the kind
    del p[3]
    assert pick(p, 2) == [1, 3]  # llm: by deadline, cut at max_batch
    assert pick(p, 8) == [1, 3, 4, 2]  # ties first come, first served
    assert pick([], 4) == []


def test_background_ops_yield_to_due_work_and_never_ride_along():
    now, bg = 10.0, Pending(0.0, 1, "llm", background=True)
    due, later = Pending(10.1, 0, "llm"), Pending(11.0, 0, "llm")
    assert pick([due, bg], 8, now) == [0]  # same kind, older, yet not in the batch
    assert pick([later, bg], 8, now) == [1]  # the foreground can wait: background alone
    assert pick([later, bg], 8, now, hold_s=10.1) == [0]  # a reply step on its way holds it back
    assert pick([bg], 8, now, hold_s=10.1) == [] and pick([bg], 8, now) == [0]
    assert pick([later, bg], 8) == [0]  # no clock: background last


def test_a_background_session_has_its_own_slot_and_waits_for_a_reply_in_flight(tiny):
    """A transcript's session opens when every conversation slot is taken, and its prefill runs
    only once the reply that was due has produced everything (batched == alone for both)."""
    now = [100.0]
    e = BatchEngine(tiny, slots=1, slot_tokens=1024, background_slots=1, clock_s=lambda: now[0])
    d = Driver(e)
    fg = e.open()
    with pytest.raises(EngineFull):
        e.open()
    bg = e.open(background=True)
    with pytest.raises(EngineFull):  # one background slot: a second waits its turn
        e.open(background=True)
    assert e.free_slots == 0
    steps = [("system", 1, "audio_assistant", None, None), ("unit", audio(1), None)]
    d.script(fg, steps)
    e.run_until_idle()
    d.cmd(fg, "generate", reply_opts(False, 1.0, 9))
    first = d.cmd(fg, "reply_step", deadline_s=now[0] + 0.2)
    asr = d.cmd(bg, "system", 0, "omni", audio(2), "Please transcribe.")
    while not first:
        e.tick()
        assert not asr, "background work ran while a reply's first audio was due"
    assert first[0][1] is None and len(first[0][0][1]) > 0
    while not asr:
        e.tick()
    assert asr[0][1] is None and not e._sessions[fg].replying  # after the reply's generation ended
    text, wav, end = d.reply(fg)
    (want,), _ = alone(tiny, 1, steps + [("generate", reply_opts(False, 1.0, 9))])
    same((first[0][0][0] + text, np.concatenate([first[0][0][1], wav]), end), want)


def test_a_full_batch_serves_the_session_that_starves_first(tiny):
    """max_batch 1: of three sessions' units, the one whose listener runs out first goes first."""
    now = [100.0]
    e = BatchEngine(tiny, slots=3, slot_tokens=1024, max_batch=1, clock_s=lambda: now[0])
    d = Driver(e)
    sids = [e.open() for _ in range(3)]
    for k, sid in enumerate(sids):
        d.script(sid, [("system", k, "audio_assistant", None, None)])
    e.run_until_idle()
    order, run = [], e.executor.run
    e.executor.run = lambda ops: (
        order.append(next(k for k, s in enumerate(sids) if e._sessions[s].pending is ops[0])),
        run(ops),
    )[1]
    for sid, due in zip(sids, (103.0, 99.0, 100.5)):
        d.cmd(sid, "unit", audio(20), None, deadline_s=due)
    e.run_until_idle()
    assert list(dict.fromkeys(order)) == [1, 2, 0], order
    assert order == [1, 1, 2, 2, 0, 0]  # audio encode, then LLM prefill: the urgent one finishes first


def test_a_failing_op_fails_only_its_session(tiny, monkeypatch):
    """Forced fault: the LLM step raises for one session's cache; the batch is re-run op by op, the
    others' units land and their replies equal alone, and the failing session goes on afterwards."""
    e = BatchEngine(tiny, slots=3, slot_tokens=1024)
    d = Driver(e)
    sids = [e.open() for _ in range(3)]
    for k, sid in enumerate(sids):
        d.script(sid, [("system", k, "audio_assistant", None, None)])
    e.run_until_idle()
    bad = e._sessions[sids[1]].session.state.llm_cache
    llm = e.executor._kinds["llm"]

    def faulty(ops):
        if any(op.cache is bad for op in ops):
            raise RuntimeError("forced fault")
        return llm(ops)

    monkeypatch.setitem(e.executor._kinds, "llm", faulty)
    boxes = [d.cmd(sid, "unit", audio(k), None) for k, sid in enumerate(sids)]
    e.run_until_idle()
    assert [b[0][1] is None for b in boxes] == [True, False, True]
    assert "forced fault" in str(boxes[1][0][1])
    monkeypatch.setitem(e.executor._kinds, "llm", llm)
    for k in (0, 2):
        d.cmd(sids[k], "generate", reply_opts(False, 1.0, 9))
        script = [
            ("system", k, "audio_assistant", None, None),
            ("unit", audio(k), None),
            ("generate", reply_opts(False, 1.0, 9)),
        ]
        same(d.reply(sids[k]), alone(tiny, k, script)[0][0])
    d.cmd(sids[1], "unit", audio(1), None)
    d.cmd(sids[1], "generate", reply_opts(False, 1.0, 9))
    assert len(d.reply(sids[1])[1]) > 0


def test_a_decode_step_padded_to_its_graph_bucket_equals_the_step(tiny):
    """What a CUDA graph replays (omni.model.graphs): the batch padded to a power of two by
    repeating the last row and the keys read up to a length bucket give the same rows, on a CPU."""
    from omni.model.graphs import bucket, pad
    from omni.model.pool import KVPool, SlotCache
    from omni.model.rows import Row, decode_forward, decode_plan

    c, llm = tiny.config, tiny.net.llm
    pool = KVPool(
        c.num_hidden_layers, 4, c.num_key_value_heads, c.hidden_size // c.num_attention_heads, 600, torch.float32, "cpu"
    )
    caches = [SlotCache(pool, i).reset() for i in range(3)]
    with torch.inference_mode():
        for n, cc in zip((5, 17, 9), caches):
            llm.model(llm.embed(torch.randint(0, 500, (1, n))), cache=cc)
        x = llm.embed(torch.tensor([3, 4, 5]))
        rows = [Row(cc, 1, cc.seq_len) for cc in caches]
        want = decode_forward(llm.model, x, decode_plan(rows, "cpu"))
        xp, dp = pad(x, decode_plan(rows, "cpu", length=256), bucket(3))
        got = decode_forward(llm.model, xp, dp)
    assert bucket(3) == 4 and got.shape == (4, c.hidden_size)
    torch.testing.assert_close(got[:3], want, atol=1e-5, rtol=1e-5)


def test_commands_sent_together_all_complete_on_the_engine_thread(tiny):
    """run_forever picks up a session's next queued command and its waiting reply_step after the
    command before it finished inside a batch (nothing else wakes the engine)."""
    import threading

    e = BatchEngine(tiny, slots=1, slot_tokens=1024)
    t = threading.Thread(target=e.run_forever, daemon=True)
    t.start()
    try:
        sid = e.open()
        done = threading.Event()
        got = []
        for op, *args in [
            ("system", 1, "audio_assistant", None, None),
            ("unit", audio(1), None),
            ("generate", reply_opts(False, 0.5, 6)),
            ("reply_step",),
        ]:
            e.submit(
                sid,
                op,
                tuple(args),
                None,
                lambda r, err, op=op: (got.append((op, err)), op == "reply_step" and done.set()),
            )
        assert done.wait(30), got
        assert [op for op, _ in got] == ["system", "unit", "generate", "reply_step"]
        assert all(err is None for _, err in got)
    finally:
        e.stop()
        t.join(10)


def test_a_forward_failing_half_way_is_undone(tiny, monkeypatch):
    """Forced fault in layer 1 of a batched prefill (layer 0 already wrote its keys): the cache
    lengths are restored, the ops are re-run one by one, and every session equals alone."""
    e = BatchEngine(tiny, slots=3, slot_tokens=1024)
    d = Driver(e)
    sids = [e.open() for _ in range(3)]
    for k, sid in enumerate(sids):
        d.script(sid, [("system", k, "audio_assistant", None, None)])
    e.run_until_idle()
    norm = tiny.net.llm.model.layers[1].post_attention_layernorm
    real, fired = norm.forward, []

    def once(x):
        if not fired and x.shape[0] > 30:  # the first batched unit prefill
            fired.append(x.shape)
            raise RuntimeError("forced fault in layer 1")
        return real(x)

    monkeypatch.setattr(norm, "forward", once)
    for k, sid in enumerate(sids):
        d.script(sid, [("unit", audio(k), None), ("generate", reply_opts(False, 1.0, 9))])
    e.run_until_idle()
    assert fired
    for k, sid in enumerate(sids):
        lens = e._sessions[sid].session.state.llm_cache._len
        assert len(set(lens)) == 1, lens
        script = [
            ("system", k, "audio_assistant", None, None),
            ("unit", audio(k), None),
            ("generate", reply_opts(False, 1.0, 9)),
        ]
        same(d.reply(sid), alone(tiny, k, script)[0][0])


def test_a_row_with_ties_does_not_change_another_rows_draw():
    """Each row's sampling path depends on that row alone: a row whose top-k value ties past the
    candidate margin (bf16 logits tie easily) leaves the other rows' tokens as drawn alone."""
    from omni.sampling import choose_rows

    x = torch.randn(2, 5000, generator=torch.Generator().manual_seed(0))
    x[1] = 0.0
    x[1, :50] = 5.0  # 4950 values tie with the 100th
    p = SamplingParams()
    for seed in range(10):
        gens = lambda seed=seed: [torch.Generator().manual_seed(seed), torch.Generator().manual_seed(seed + 100)]  # noqa: E731
        both = choose_rows(x, [(), ()], [p, p], gens())
        assert both[0] == choose_rows(x[:1], [()], [p], gens()[:1])[0]


def test_a_reply_closed_before_its_first_op_changes_nothing(tiny):
    """Barge-in before a reply's first forward ran: the turn flags, the audio encoder cache and
    the rollback record are as before the reply (it never started)."""
    s = Session(tiny, seed=1)
    s.set_system("audio_assistant")
    s.append_unit(audio(1))
    st = s.state
    before = (st.new_user_msg, st.llm_generated, st.llm_generate_completed, st.audio_cache.length, st.cache_len)
    program = s.reply_program(reply_opts(False))
    assert isinstance(next(program), LLMForward)  # the first op, not run
    program.close()
    assert (
        st.new_user_msg,
        st.llm_generated,
        st.llm_generate_completed,
        st.audio_cache.length,
        st.cache_len,
    ) == before and s._reply is None
    from omni.processing import prompt as P

    assert not s.append_unit(audio(2)).text.startswith(P.AFTER_INTERRUPTED)  # the same user turn goes on


def test_a_full_slot_slides_old_turns_mid_turn_and_refuses_a_turn_too_long(tiny):
    """A pool slot cannot grow: when a unit would not leave room for a reply, the oldest complete
    turns slide out even mid-turn; a turn that alone outgrows the slot is refused (ContextFull)
    and the session goes on."""
    from omni.model.pool import ContextFull

    e = BatchEngine(tiny, slots=1, slot_tokens=400, reply_reserve_tokens=40)
    d = Driver(e)
    sid = e.open()
    d.script(sid, [("system", 1, "audio_assistant", None, None)])
    for turn in range(4):
        boxes = [d.cmd(sid, "unit", audio(10 * turn + k), None) for k in range(3)]
        d.cmd(sid, "generate", reply_opts(False, 0.5, 9))
        e.run_until_idle()
        assert all(b[0][1] is None for b in boxes), boxes
        d.reply(sid)
    st = e._sessions[sid].session.state
    assert st.cache_len <= 400 - 40 and len(st.turn_starts) < 4  # old turns slid out
    boxes = [d.cmd(sid, "unit", audio(100 + k), None) for k in range(16)]  # one turn longer than the slot
    e.run_until_idle()
    errors = [b[0][1] for b in boxes if b[0][1] is not None]
    assert errors and all(isinstance(err, ContextFull) for err in errors)
    assert "context is full" in str(errors[0]) and st.cache_len <= 400
    d.cmd(sid, "generate", reply_opts(False, 0.5, 9))  # the session still answers
    assert len(d.reply(sid)[1]) > 0
