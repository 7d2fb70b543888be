"""`BatchEngine`: one per device; every session on it is a program, and their ops run in batches.

Owns: the sessions of one device (each of the class its model family names, omni.session.kinds:
o-2.6's `Session`, V-4.5's `V45Session`; its LLM cache and TTS state live in a slot of two
preallocated `KVPool`s, the TTS pool only when the family speaks), their command queues, the
programs they run (a command's: system / prefill / unit / frame; or the reply), the outputs a
reply produced that nobody took yet, and the tick loop. Each tick applies the commands that arrived (sessions join and leave
only here, between batches), advances every program to its next op, picks one batch (`schedule.pick`:
earliest deadline first, one kind) and executes it (`steps.Executor`), one packed forward for all.
Does not own: model math, session logic (the programs), threads or asyncio (the caller runs
`run_forever` on a thread and passes `done` callbacks), the sizes and caches of a slot (slots.py),
one session's record (live.py), failure isolation (isolate.py), the counters (stats.py).

Commands of a session run in order; any command but `reply_step` first stops the session's
reply (as `Session.prefill` does alone). `reply_step` returns every piece the reply produced since
the last call, merged, waiting if there is none yet, or (None, end reason) once it is over.
A batch that raises is re-run op by op from the caches' lengths before it (isolate.py), so one
bad session's error reaches only that session.
"""

from __future__ import annotations

import bisect
import itertools
import logging
import threading
import time
from collections import deque
from typing import Callable

import torch

from ..loader import Omni
from ..model.ops import LLMForward, Op
from ..model.pool import KVPool
from ..model.steps import Executor
from ..session.kinds import session_class
from .isolate import run_isolated
from .live import Command, Done, Live, answer, ignore, merged
from .schedule import Pending, pick
from .slots import EngineFull, SlotCaches, slot_bytes, tts_slot_tokens
from .stats import EngineStats

__all__ = ["COMMANDS", "BatchEngine", "EngineFull", "EngineStats", "SlotCaches", "slot_bytes", "tts_slot_tokens"]

log = logging.getLogger("omni.batch")
# open/close: use the methods; probe: one real LLM step on a scratch cache (readiness), any session id;
# frame (a camera frame) and cut (a reply cut to the text delivered): MiniCPM-V 4.5 (omni.session.v45)
COMMANDS = (
    *("open", "close", "system", "prefill", "unit", "frame", "rollback", "cut", "forget", "generate"),
    *("reply_step", "probe"),
)


HOLD_POLL_S = 0.005  # an engine holding background work for a reply step on its way looks again this soon


class BatchEngine:
    def __init__(
        self,
        omni: Omni,
        slots: int,
        slot_tokens: int = 8192,
        max_batch: int = 32,
        reply_reserve_tokens: int = 0,
        clock_s: Callable[[], float] = time.monotonic,
        cuda_graphs: bool = True,
        background_slots: int = 0,
    ):
        """`slots`: sessions the engine holds; `slot_tokens`: LLM positions per session (its
        context, sliding window included); `max_batch`: the most ops in one forward (1 = every
        op alone, batching off); `reply_reserve_tokens`: kept free for a reply when prefilling;
        `cuda_graphs`: on a CUDA device, decode steps replay captured graphs;
        `background_slots`: pool slots over `slots` for background sessions (at most that many
        at once), so transcripts run when every conversation slot is in use."""
        assert slots >= 1 and max_batch >= 1, (slots, max_batch)
        c, tts = omni.config, getattr(omni.net, "tts", None)  # no TTS: a text-only family (V-4.5)
        self.omni, self.slots, self.slot_tokens, self.max_batch = omni, slots, slot_tokens, max_batch
        self.background_slots = background_slots
        self.reply_reserve_tokens, self.clock_s = reply_reserve_tokens, clock_s
        self.session_class = session_class(omni.family)
        dev = omni.device
        total = slots + background_slots
        self.llm_pool = KVPool(
            c.num_hidden_layers, total, c.num_key_value_heads, c.head_dim, slot_tokens, omni.dtype, dev
        )
        self.tts_pool = None
        if tts is not None:
            t = tts.cfg
            self.tts_pool = KVPool(
                t.num_hidden_layers,
                total,
                t.num_attention_heads,
                t.hidden_size // t.num_attention_heads,
                tts_slot_tokens(tts),
                tts.emb_text.weight.dtype,
                dev,
            )
        self.executor = Executor.of(omni, cuda_graphs)
        self._free = list(range(total))
        self._slot_of: dict[int, int] = {}  # sid -> slot, for open/close on any thread
        self._background: set[int] = set()  # sids of background sessions
        self._ids = itertools.count(1)
        self._inbox: deque[Command] = deque()
        self._cv = threading.Condition()
        self._sessions: dict[int, Live] = {}
        self._order = itertools.count()
        self._arrival: dict[int, int] = {}  # sid -> order of its pending op
        self._stopped = False
        self.stats = EngineStats()
        self.last_batch_s: float | None = None  # clock time the last batch finished (readiness)
        self.held = False  # the last tick held background ops back and ran nothing

    # ---- any thread ---------------------------------------------------------------------------
    @property
    def free_slots(self) -> int:
        """Conversation (foreground) sessions that can still open."""
        with self._cv:
            return self._free_foreground()

    def _free_foreground(self) -> int:  # holding self._cv
        return min(len(self._free), self.slots - (len(self._slot_of) - len(self._background)))

    def open(self, max_cache_tokens: int | None = None, background: bool = False, done: Done | None = None) -> int:
        """Take a slot for a new session (raises `EngineFull`); returns its id. A `background`
        session's ops run only when no other op is due soon (schedule.pick)."""
        with self._cv:
            if self._stopped:
                raise RuntimeError("the batch engine is stopped")
            if background and len(self._background) >= self.background_slots:
                raise EngineFull(f"all {self.background_slots} background slots of the engine are in use")
            if not background and not self._free_foreground():
                raise EngineFull(f"all {self.slots} session slots of the engine are in use")
            slot = self._free.pop(0)  # lowest first: active slots stay compact
            sid = next(self._ids)
            self._slot_of[sid] = slot
            if background:
                self._background.add(sid)
            self._enqueue(Command(sid, "open", (slot, max_cache_tokens, background), self.clock_s(), done or ignore))
        return sid

    def close(self, sid: int, done: Done | None = None) -> None:
        """End a session. Its slot is free for `open` at once: commands apply in order, so the
        session is gone before a new one can touch the slot."""
        with self._cv:  # one lock for both: no open can queue between the freed slot and the close
            slot = self._slot_of.pop(sid, None)
            self._background.discard(sid)
            if slot is not None:
                bisect.insort(self._free, slot)
            if not self._stopped:
                self._enqueue(Command(sid, "close", (), self.clock_s(), done or ignore))

    def submit(self, sid: int, op: str, args: tuple, deadline_s: float | None, done: Done) -> None:
        """Queue a command; `done(result, error)` is called once, on the engine thread."""
        assert op in COMMANDS, op
        cmd = Command(sid, op, args, self.clock_s() if deadline_s is None else deadline_s, done)
        with self._cv:
            if self._stopped:
                raise RuntimeError("the batch engine is stopped")
            self._enqueue(cmd)

    def _enqueue(self, cmd: Command) -> None:  # holding self._cv
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
            if self.held:  # only held background work: wait a little for a command
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
                answer(cmd, None, e)
        for live in list(self._sessions.values()):
            self._start_next(live)
        waiting = [(live, op) for live in self._sessions.values() if (op := live.pending) is not None]
        hold_s = min(
            (live.hold_s for live in self._sessions.values() if live.replying and not live.background),
            default=float("inf"),
        )
        chosen = pick(
            [Pending(live.deadline_s, self._arrival[live.sid], op.kind, live.background) for live, op in waiting],
            self.max_batch,
            self.clock_s(),
            hold_s,
        )
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
    def _apply(self, cmd: Command) -> None:
        if cmd.op == "probe":
            return answer(cmd, self._probe(), None)
        if cmd.op == "open":
            slot, max_cache_tokens, background = cmd.args
            for pool in (self.llm_pool, self.tts_pool):
                if pool is not None:
                    pool.reset_slot(slot)  # never uninitialised memory under a mask
            caches = SlotCaches(getattr(self.omni.net, "tts", None), self.llm_pool, self.tts_pool, slot)
            session = self.session_class(self.omni, None, max_cache_tokens, caches, self.reply_reserve_tokens)
            self._sessions[cmd.sid] = Live(cmd.sid, slot, session, background=background)
            return answer(cmd, None, None)
        live = self._sessions.get(cmd.sid)
        if live is None:
            return answer(cmd, None, RuntimeError(f"session {cmd.sid} is not open on this engine"))
        if cmd.op == "close":
            self._close(live)
            return answer(cmd, None, None)
        if cmd.op == "reply_step":
            if live.waiter is not None:
                return answer(cmd, None, RuntimeError("a reply step of this session is already waiting"))
            live.waiter, live.reply_deadline_s, live.hold_s = cmd, cmd.deadline_s, float("inf")
            return self._serve(live)
        live.commands.append(cmd)

    def _start_next(self, live: Live) -> None:
        """Start the session's next command if none runs; then advance its program to an op."""
        while live.current is None and live.commands:
            cmd = live.commands.popleft()
            live.stop_reply()
            try:
                started = live.begin(cmd)
            except Exception as e:  # noqa: BLE001 - a bad command fails alone
                answer(cmd, None, e)
                continue
            if not started:
                answer(cmd, None, None)
        if live.program is not None and live.pending is None:
            self._advance(live, None, None)
        self._serve(live)

    def _close(self, live: Live) -> None:
        if live.program is not None:
            live.program.close()
        gone = RuntimeError("the session was closed")
        for cmd in ([live.current] if live.current else []) + list(live.commands):
            answer(cmd, None, gone)
        if live.waiter is not None:
            answer(live.waiter, (None, None), None)
        del self._sessions[live.sid]
        self._arrival.pop(live.sid, None)

    def _fail_all(self, error: BaseException) -> None:
        with self._cv:
            for cmd in self._inbox:
                answer(cmd, None, error)
            self._inbox.clear()
        for live in list(self._sessions.values()):
            for cmd in (
                ([live.current] if live.current else []) + list(live.commands) + ([live.waiter] if live.waiter else [])
            ):
                answer(cmd, None, error)

    # ---- programs -----------------------------------------------------------------------------
    def _advance(self, live: Live, result, error: BaseException | None) -> None:
        """Resume the session's program with an op's result (or error) until its next op."""
        program = live.program
        assert program is not None, "only a session with a program is advanced"
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

    def _finished(self, live: Live, error: BaseException | None) -> None:
        live.program, live.pending = None, None
        if live.replying:
            live.replying, live.reply_error, live.hold_s = False, error, float("inf")
            return self._serve(live)
        cmd, live.current = live.current, None
        assert cmd is not None, "a program that is not the reply runs for `current`"
        answer(cmd, None, error)

    def _serve(self, live: Live) -> None:
        """Answer a waiting reply_step: the merged outputs so far, or the end of the reply."""
        w = live.waiter
        if w is None or live.commands or live.current is not None:
            return  # a reply_step answers after the commands sent before it
        if live.outputs:
            text, wav, calls = merged(live.outputs)
            live.outputs, live.waiter = [], None
            live.reply_deadline_s = float("inf")  # nobody waits: runs ahead only when it costs nothing
            # ...but the next reply_step is on its way, about as urgent: background work must not
            # slip into the gap (before first audio that deadline is already due)
            live.hold_s = w.deadline_s
            self.stats.pieces += 1
            return answer(w, (text, wav, calls, live.session.reply_usage), None)
        if not live.replying:
            live.waiter, live.hold_s = None, float("inf")
            if live.reply_error is not None:
                error, live.reply_error = live.reply_error, None
                return answer(w, None, error)
            return answer(w, (None, live.session.last_reply_end, live.session.reply_usage), None)

    # ---- batches ------------------------------------------------------------------------------
    def _execute(self, batch: list[tuple[Live, Op]]) -> None:
        """Run the ops of `batch` (each session with its pending op) and resume their programs."""
        ops = [op for _, op in batch]
        t0 = time.perf_counter()
        results, errors = run_isolated(self.executor, ops)
        self.stats.add(ops[0].kind, len(ops), time.perf_counter() - t0, ops)
        self.last_batch_s = self.clock_s()
        for (live, _), result, error in zip(batch, results, errors):
            live.pending = None
            if live.program is not None:
                self._advance(live, result, error)
