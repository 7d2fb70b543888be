"""`BatchEngine`: one per device; every session on it is a program, and their ops run in batches.

Owns: the sessions of one device (each an `omni.session.engine.Session` whose LLM cache and TTS
state live in a slot of two preallocated `KVPool`s), their command queues, the programs they run
(a command's: system / prefill / unit; or the reply), the outputs a reply produced that nobody
took yet, and the tick loop. Each tick applies the commands that arrived (sessions join and leave
only here, between batches), advances every program to its next op, picks one batch (`schedule.pick`:
earliest deadline first, one kind) and executes it (`steps.Executor`), one packed forward for all.
Does not own: model math, session logic (the programs), threads or asyncio (the caller runs
`run_forever` on a thread and passes `done` callbacks).

Commands of a session run in order; any command but `reply_step` first stops the session's
reply (as `Session.prefill` does alone). `reply_step` returns every piece the reply produced since
the last call, merged, waiting if there is none yet, or (None, end reason) once it is over.
A batch that raises is re-run op by op from the caches' lengths before it, so one bad session's
error reaches only that session.
"""
from __future__ import annotations

import bisect
import itertools
import logging
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np
import torch

from ..model.ops import LLMForward, Op, TTSFrame, TTSPrefill
from ..model.pool import KVPool, SlotCache, TTSSlotCache
from ..model.steps import Executor
from ..model.tts_loop import SpeechParams
from ..session.engine import Session
from ..session.speech import CARRY_FRAMES
from .schedule import Pending, pick

log = logging.getLogger("omni.batch")
Done = Callable[[Any, BaseException | None], None]
# open/close: use the methods; probe: one real LLM step on a scratch cache (readiness), any session id
COMMANDS = ("open", "close", "system", "prefill", "unit", "rollback", "forget", "generate", "reply_step",
            "probe")


HOLD_POLL_S = 0.005     # an engine holding background work for a reply step on its way looks again this soon


class EngineFull(RuntimeError):
    """Every slot of the engine's pools is taken."""


def tts_slot_tokens(tts) -> int:
    """A TTS segment's most positions: text slots + the official frame cap (checked after a call,
    so one call more) + the frames a rollover carries in."""
    p = SpeechParams()
    return tts.condition_length - 1 + p.max_frames + 2 * p.frames_per_step + CARRY_FRAMES


def slot_bytes(omni, slot_tokens: int) -> int:
    """Memory of one session's slots (LLM + TTS pools)."""
    c, t = omni.config, omni.net.tts.cfg
    llm = KVPool.slot_bytes(c.num_hidden_layers, c.num_key_value_heads, c.hidden_size // c.num_attention_heads,
                            slot_tokens, omni.dtype)
    tts = KVPool.slot_bytes(t.num_hidden_layers, t.num_attention_heads, t.hidden_size // t.num_attention_heads,
                            tts_slot_tokens(omni.net.tts), torch.float32)
    return llm + tts


class SlotCaches:
    """A session's caches in the engine's pools: its slot, reset whenever asked for a fresh one."""

    def __init__(self, tts, llm_pool: KVPool, tts_pool: KVPool, slot: int):
        self.tts = tts
        self._llm = SlotCache(llm_pool, slot)
        self._tts = TTSSlotCache(tts_pool, slot, tts.condition_length - 1)

    def llm(self) -> SlotCache:
        """The LLM slot, empty; it was zeroed when the session opened (stale keys after are finite)."""
        self._llm._len = [0] * self._llm.num_layers
        return self._llm

    def tts_state(self, text_mask: torch.Tensor | None = None):
        return self.tts.new_state(text_mask, cache=self._tts.reset())


@dataclass(eq=False)
class _Command:
    sid: int
    op: str
    args: tuple
    deadline_s: float
    done: Done


@dataclass(eq=False)
class _Live:
    """One session on the engine, owned by the engine thread."""
    sid: int
    slot: int
    session: Session
    background: bool = False               # its ops yield to every other session's (transcripts)
    commands: deque = field(default_factory=deque)
    current: _Command | None = None        # the command whose program runs
    program: Any = None                    # its program, or the reply program, or None
    replying: bool = False                 # `program` is the reply program
    pending: Op | None = None              # the op `program` waits on
    outputs: list = field(default_factory=list)      # (text, wav) of the reply not yet handed out
    waiter: _Command | None = None         # a reply_step waiting for output
    reply_deadline_s: float = float("inf")
    hold_s: float = float("inf")           # while replying: the last reply_step's deadline (background yields)
    reply_error: BaseException | None = None

    @property
    def deadline_s(self) -> float:
        if self.current is not None:
            return self.current.deadline_s
        return self.waiter.deadline_s if self.waiter is not None else self.reply_deadline_s


class BatchEngine:
    def __init__(self, omni, slots: int, slot_tokens: int = 8192, max_batch: int = 32,
                 reply_reserve_tokens: int = 0, clock_s: Callable[[], float] = time.monotonic,
                 cuda_graphs: bool = True, background_slots: int = 0):
        """`slots`: sessions the engine holds; `slot_tokens`: LLM positions per session (its
        context, sliding window included); `max_batch`: the most ops in one forward (1 = every
        op alone, batching off); `reply_reserve_tokens`: kept free for a reply when prefilling;
        `cuda_graphs`: on a CUDA device, decode steps replay captured graphs;
        `background_slots`: pool slots over `slots` for background sessions (at most that many
        at once), so transcripts run when every conversation slot is in use."""
        assert slots >= 1 and max_batch >= 1, (slots, max_batch)
        c, t = omni.config, omni.net.tts.cfg
        self.omni, self.slots, self.slot_tokens, self.max_batch = omni, slots, slot_tokens, max_batch
        self.background_slots = background_slots
        self.reply_reserve_tokens, self.clock_s = reply_reserve_tokens, clock_s
        dev = omni.device
        total = slots + background_slots
        self.llm_pool = KVPool(c.num_hidden_layers, total, c.num_key_value_heads,
                               c.hidden_size // c.num_attention_heads, slot_tokens, omni.dtype, dev)
        self.tts_pool = KVPool(t.num_hidden_layers, total, t.num_attention_heads, t.hidden_size // t.num_attention_heads,
                               tts_slot_tokens(omni.net.tts), omni.net.tts.emb_text.weight.dtype, dev)
        self.executor = Executor.of(omni, cuda_graphs)
        self._free = list(range(total))
        self._slot_of: dict[int, int] = {}      # sid -> slot, for open/close on any thread
        self._background: set[int] = set()      # sids of background sessions
        self._ids = itertools.count(1)
        self._inbox: deque[_Command] = deque()
        self._cv = threading.Condition()
        self._sessions: dict[int, _Live] = {}
        self._order = itertools.count()
        self._arrival: dict[int, int] = {}      # sid -> order of its pending op
        self._stopped = False
        self.stats = EngineStats()
        self.last_batch_s: float | None = None   # clock time the last batch finished (readiness)
        self.held = False                        # the last tick held background ops back and ran nothing

    # ---- any thread ---------------------------------------------------------------------------
    @property
    def free_slots(self) -> int:
        """Conversation (foreground) sessions that can still open."""
        with self._cv:
            return self._free_foreground()

    def _free_foreground(self) -> int:   # holding self._cv
        return min(len(self._free), self.slots - (len(self._slot_of) - len(self._background)))

    def open(self, max_cache_tokens: int | None = None, background: bool = False,
             done: Done | None = None) -> int:
        """Take a slot for a new session (raises `EngineFull`); returns its id. A `background`
        session's ops run only when no other op is due soon (schedule.pick)."""
        with self._cv:
            if self._stopped:
                raise RuntimeError("the batch engine is stopped")
            if background and len(self._background) >= self.background_slots:
                raise EngineFull(f"all {self.background_slots} background slots of the engine are in use")
            if not background and not self._free_foreground():
                raise EngineFull(f"all {self.slots} session slots of the engine are in use")
            slot = self._free.pop(0)             # lowest first: active slots stay compact
            sid = next(self._ids)
            self._slot_of[sid] = slot
            if background:
                self._background.add(sid)
            self._enqueue(_Command(sid, "open", (slot, max_cache_tokens, background), self.clock_s(),
                                   done or _ignore))
        return sid

    def close(self, sid: int, done: Done | None = None) -> None:
        """End a session. Its slot is free for `open` at once: commands apply in order, so the
        session is gone before a new one can touch the slot."""
        with self._cv:   # one lock for both: no open can queue between the freed slot and the close
            slot = self._slot_of.pop(sid, None)
            self._background.discard(sid)
            if slot is not None:
                bisect.insort(self._free, slot)
            if not self._stopped:
                self._enqueue(_Command(sid, "close", (), self.clock_s(), done or _ignore))

    def submit(self, sid: int, op: str, args: tuple, deadline_s: float | None, done: Done) -> None:
        """Queue a command; `done(result, error)` is called once, on the engine thread."""
        assert op in COMMANDS, op
        cmd = _Command(sid, op, args, self.clock_s() if deadline_s is None else deadline_s, done)
        with self._cv:
            if self._stopped:
                raise RuntimeError("the batch engine is stopped")
            self._enqueue(cmd)

    def _enqueue(self, cmd: _Command) -> None:   # holding self._cv
        self._inbox.append(cmd)
        self._cv.notify()

    def stop(self) -> None:
        with self._cv:
            self._stopped = True
            self._cv.notify()

    # ---- the engine thread --------------------------------------------------------------------
    def run_forever(self) -> None:
        while True:
            with self._cv:
                while not self._inbox and not self._has_work() and not self._stopped:
                    self._cv.wait()
                if self._stopped:
                    break
            try:
                self.tick()
            except Exception:  # noqa: BLE001 - a bug here must not stop every session
                log.exception("batch engine tick failed")
            if self.held:                      # only held background work: wait a little for a command
                with self._cv:
                    if not self._inbox and not self._stopped:
                        self._cv.wait(HOLD_POLL_S)
        self._fail_all(RuntimeError("the batch engine stopped"))

    def run_until_idle(self) -> None:
        """Tick until no command and no op is left, or only held background work (tests and
        benches drive the engine this way)."""
        while self.tick() and not self.held:
            pass

    @torch.inference_mode()
    def tick(self) -> bool:
        """Apply arrived commands, advance programs, run one batch; False if there was nothing to do."""
        with self._cv:
            commands = list(self._inbox)
            self._inbox.clear()
        for cmd in commands:
            try:
                self._apply(cmd)
            except Exception as e:  # noqa: BLE001 - e.g. out of memory opening a session: it fails alone
                log.exception("batch engine command %s failed", cmd.op)
                _answer(cmd, None, e)
        for live in list(self._sessions.values()):
            self._start_next(live)
        waiting = [live for live in self._sessions.values() if live.pending is not None]
        hold_s = min((live.hold_s for live in self._sessions.values() if live.replying and not live.background),
                     default=float("inf"))
        chosen = pick([Pending(live.deadline_s, self._arrival[live.sid], live.pending.kind, live.background)
                       for live in waiting], self.max_batch, self.clock_s(), hold_s)
        if chosen:
            self._execute([waiting[i] for i in chosen])
        self.held = bool(waiting) and not chosen
        return bool(commands or chosen) or self._has_work()

    def _probe(self) -> float:
        """One real one-token LLM step on a scratch cache: proves this engine's model runs (seconds)."""
        t = time.perf_counter()
        self.executor.run([LLMForward(self.omni.net.llm.new_cache(), ids=[0])])
        self.last_batch_s = self.clock_s()
        return time.perf_counter() - t

    @property
    def queue_depth(self) -> int:
        """Ops waiting for a batch now (read from any thread: a snapshot)."""
        return sum(live.pending is not None for live in list(self._sessions.values()))

    def _has_work(self) -> bool:
        """An op to run, a command to start, or a waiting reply_step that can be answered."""
        for live in self._sessions.values():
            if live.pending is not None or (live.current is None and live.commands):
                return True
            if live.waiter is not None and live.current is None and (live.outputs or not live.replying):
                return True
        return False

    # ---- commands -----------------------------------------------------------------------------
    def _apply(self, cmd: _Command) -> None:
        if cmd.op == "probe":
            return _answer(cmd, self._probe(), None)
        if cmd.op == "open":
            slot, max_cache_tokens, background = cmd.args
            self.llm_pool.reset_slot(slot)          # never uninitialised memory under a mask
            self.tts_pool.reset_slot(slot)
            caches = SlotCaches(self.omni.net.tts, self.llm_pool, self.tts_pool, slot)
            session = Session(self.omni, None, max_cache_tokens, caches, self.reply_reserve_tokens)
            self._sessions[cmd.sid] = _Live(cmd.sid, slot, session, background=background)
            return _answer(cmd, None, None)
        live = self._sessions.get(cmd.sid)
        if live is None:
            return _answer(cmd, None, RuntimeError(f"session {cmd.sid} is not open on this engine"))
        if cmd.op == "close":
            self._close(live)
            return _answer(cmd, None, None)
        if cmd.op == "reply_step":
            if live.waiter is not None:
                return _answer(cmd, None, RuntimeError("a reply step of this session is already waiting"))
            live.waiter, live.reply_deadline_s, live.hold_s = cmd, cmd.deadline_s, float("inf")
            return self._serve(live)
        live.commands.append(cmd)

    def _start_next(self, live: _Live) -> None:
        """Start the session's next command if none runs; then advance its program to an op."""
        while live.current is None and live.commands:
            cmd = live.commands.popleft()
            self._stop_reply(live)
            try:
                started = self._begin(live, cmd)
            except Exception as e:  # noqa: BLE001 - a bad command fails alone
                _answer(cmd, None, e)
                continue
            if not started:
                _answer(cmd, None, None)
        if live.program is not None and live.pending is None:
            self._advance(live, None, None)
        self._serve(live)

    def _begin(self, live: _Live, cmd: _Command) -> bool:
        """Set up `cmd`; True if it runs a program (done when the program ends)."""
        s = live.session
        if cmd.op == "generate":
            live.program, live.replying = s.reply_program(*cmd.args), True
            live.outputs, live.reply_error, live.reply_deadline_s = [], None, cmd.deadline_s
            return False
        if cmd.op == "rollback":
            s.interrupt_ms(*cmd.args)
            return False
        if cmd.op == "forget":
            s.forget_reply()
            return False
        if cmd.op == "system":
            seed, mode, ref, text = cmd.args
            s.seed = seed                     # a seed takes effect from the context start
            program = s.system_program(mode, ref, text)
        elif cmd.op == "prefill":
            program = s.prefill_program(*cmd.args)
        else:
            program = s.unit_program(*cmd.args)
        live.current, live.program, live.replying = cmd, program, False
        return True

    def _stop_reply(self, live: _Live) -> None:
        """Close the reply program (the caller answers a waiting reply_step afterwards)."""
        if live.replying:
            live.program.close()
            live.program, live.pending, live.replying, live.hold_s = None, None, False, float("inf")
            live.outputs = []

    def _close(self, live: _Live) -> None:
        if live.program is not None:
            live.program.close()
        gone = RuntimeError("the session was closed")
        for cmd in ([live.current] if live.current else []) + list(live.commands):
            _answer(cmd, None, gone)
        if live.waiter is not None:
            _answer(live.waiter, (None, None), None)
        del self._sessions[live.sid]
        self._arrival.pop(live.sid, None)

    def _fail_all(self, error: BaseException) -> None:
        with self._cv:
            for cmd in self._inbox:
                _answer(cmd, None, error)
            self._inbox.clear()
        for live in list(self._sessions.values()):
            for cmd in ([live.current] if live.current else []) + list(live.commands) + \
                       ([live.waiter] if live.waiter else []):
                _answer(cmd, None, error)

    # ---- programs -----------------------------------------------------------------------------
    def _advance(self, live: _Live, result, error: BaseException | None) -> None:
        """Resume the session's program with an op's result (or error) until its next op."""
        program = live.program
        while True:
            try:
                item = program.throw(error) if error is not None else program.send(result)
            except StopIteration:
                return self._finished(live, None)
            except Exception as e:  # noqa: BLE001 - the session's own failure
                return self._finished(live, e)
            result = error = None
            if isinstance(item, Op):
                live.pending = item
                self._arrival[live.sid] = next(self._order)
                return
            assert live.replying, f"a command program yielded an output: {item!r}"
            live.outputs.append(item)
            self._serve(live)

    def _finished(self, live: _Live, error: BaseException | None) -> None:
        live.program, live.pending = None, None
        if live.replying:
            live.replying, live.reply_error, live.hold_s = False, error, float("inf")
            return self._serve(live)
        cmd, live.current = live.current, None
        _answer(cmd, None, error)

    def _serve(self, live: _Live) -> None:
        """Answer a waiting reply_step: the merged outputs so far, or the end of the reply."""
        w = live.waiter
        if w is None or live.commands or live.current is not None:
            return                        # a reply_step answers after the commands sent before it
        if live.outputs:
            text = "".join(t for t, _ in live.outputs)
            wav = np.concatenate([a for _, a in live.outputs]) if len(live.outputs) > 1 else live.outputs[0][1]
            live.outputs, live.waiter = [], None
            live.reply_deadline_s = float("inf")   # nobody waits: runs ahead only when it costs nothing
            # ...but the next reply_step is on its way, about as urgent: background work must not
            # slip into the gap (before first audio that deadline is already due)
            live.hold_s = w.deadline_s
            self.stats.pieces += 1
            return _answer(w, (text, wav), None)
        if not live.replying:
            live.waiter, live.hold_s = None, float("inf")
            if live.reply_error is not None:
                error, live.reply_error = live.reply_error, None
                return _answer(w, None, error)
            return _answer(w, (None, live.session.last_reply_end), None)

    # ---- batches ------------------------------------------------------------------------------
    def _execute(self, batch: list[_Live]) -> None:
        ops = [live.pending for live in batch]
        marks = [_lengths(op) for op in ops]
        t0 = time.perf_counter()
        try:
            results, errors = self.executor.run(ops), [None] * len(ops)
        except Exception as e:  # noqa: BLE001 - isolate the op that raises
            for m in marks:        # a forward that raised half-way advanced some layers: undo
                _restore(m)
            if len(ops) == 1:
                results, errors = [None], [e]
            else:
                log.warning("a batch of %d %s ops failed (%s); running them one by one", len(ops), ops[0].kind, e)
                results, errors = self._one_by_one(ops, marks)
        self.stats.add(ops[0].kind, len(ops), time.perf_counter() - t0, ops)
        self.last_batch_s = self.clock_s()
        for live, result, error in zip(batch, results, errors):
            live.pending = None
            if live.program is not None:
                self._advance(live, result, error)

    def _one_by_one(self, ops: list[Op], marks: list) -> tuple[list, list]:
        results, errors = [], []
        for op, mark in zip(ops, marks):
            try:
                results.append(self.executor.one(op))
                errors.append(None)
            except Exception as e:  # noqa: BLE001 - handed to that session's program
                _restore(mark)
                results.append(None)
                errors.append(e)
        return results, errors


def _answer(cmd: _Command, result, error) -> None:
    """Call a command's `done` once; a callback that raises must not break the engine's state."""
    try:
        cmd.done(result, error)
    except Exception:  # noqa: BLE001 - the caller's bug, not the engine's
        log.exception("a batch engine callback raised (command %s of session %d)", cmd.op, cmd.sid)


def _ignore(result, error) -> None:
    if error is not None:   # nobody waits (open/close without a callback): e.g. the engine stopped first
        log.debug("batch engine command failed: %s", error)


def _lengths(op: Op):
    """What an op may change in its cache (per-layer lengths; layers a fresh encoder cache learns),
    to undo a forward that raised half-way."""
    cache = getattr(op, "cache", None)
    if isinstance(op, (TTSPrefill, TTSFrame)):
        cache = op.state.cache
    if cache is None or not hasattr(cache, "_len"):
        return None
    return cache, list(cache._len), getattr(cache, "num_layers", None)


def _restore(mark) -> None:
    if mark is not None:
        cache, lens, layers = mark
        cache._len = list(lens)
        if layers is not None and cache.num_layers != layers:   # layers learnt by the failed forward
            cache.num_layers = layers
            cache._k, cache._v = cache._k[:layers], cache._v[:layers]


@dataclass
class EngineStats:
    """Per op kind: batches run, ops in them, seconds; plus LLM tokens and TTS frames."""
    batches: dict = field(default_factory=dict)
    ops: dict = field(default_factory=dict)
    seconds: dict = field(default_factory=dict)
    llm_tokens: int = 0
    llm_decode_tokens: int = 0
    llm_decode_s: float = 0.0
    tts_frames: int = 0
    tts_frame_s: float = 0.0
    pieces: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)   # read from other threads

    def add(self, kind: str, n: int, seconds: float, ops: list[Op]) -> None:
        with self.lock:
            self._add(kind, n, seconds, ops)

    def _add(self, kind: str, n: int, seconds: float, ops: list[Op]) -> None:
        self.batches[kind] = self.batches.get(kind, 0) + 1
        self.ops[kind] = self.ops.get(kind, 0) + n
        self.seconds[kind] = self.seconds.get(kind, 0.0) + seconds
        if kind == "llm":
            self.llm_tokens += sum(op.length for op in ops if isinstance(op, LLMForward))
            if all(op.length == 1 for op in ops):
                self.llm_decode_tokens += n
                self.llm_decode_s += seconds
        elif kind == "tts":
            frames = sum(isinstance(op, TTSFrame) for op in ops)
            self.tts_frames += frames
            if frames == n:
                self.tts_frame_s += seconds

    def as_dict(self) -> dict:
        with self.lock:
            return self._as_dict()

    def _as_dict(self) -> dict:
        return {"batches": dict(self.batches), "ops": dict(self.ops),
                "mean_batch": {k: round(self.ops[k] / self.batches[k], 2) for k in self.batches},
                "seconds": {k: round(v, 3) for k, v in self.seconds.items()},
                "llm_tokens": self.llm_tokens, "tts_frames": self.tts_frames, "pieces": self.pieces}
