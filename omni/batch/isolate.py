"""Running one batch so that an op that raises fails only its own session.

Owns `run_isolated`: one batched forward for the ops; if it raises, every op's cache goes back to
the lengths it had before (a forward that raised half-way advanced some layers) and the ops run
again one by one, so each op gets its own result or its own error. Does not own: which ops form
a batch (schedule.py), handing results to programs (the engine).
"""

from __future__ import annotations

import logging

from ..model.ops import Op, TTSFrame, TTSPrefill
from ..model.steps import Executor

log = logging.getLogger("omni.batch")


def run_isolated(executor: Executor, ops: list[Op]) -> tuple[list, list[BaseException | None]]:
    """One result and one error (None if it ran) per op, in order."""
    marks = [_lengths(op) for op in ops]
    try:
        return executor.run(ops), [None] * len(ops)
    except Exception as e:  # noqa: BLE001 - isolate the op that raises
        for m in marks:  # a forward that raised half-way advanced some layers: undo
            _restore(m)
        if len(ops) == 1:
            return [None], [e]
        log.warning("a batch of %d %s ops failed (%s); running them one by one", len(ops), ops[0].kind, e)
        return _one_by_one(executor, ops, marks)


def _one_by_one(executor: Executor, ops: list[Op], marks: list) -> tuple[list, list[BaseException | None]]:
    results: list = []
    errors: list[BaseException | None] = []
    for op, mark in zip(ops, marks):
        try:
            results.append(executor.one(op))
            errors.append(None)
        except Exception as e:  # noqa: BLE001 - handed to that session's program
            _restore(mark)
            results.append(None)
            errors.append(e)
    return results, errors


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
        if layers is not None and cache.num_layers != layers:  # layers learnt by the failed forward
            cache.num_layers = layers
            cache._k, cache._v = cache._k[:layers], cache._v[:layers]
