"""CUDA graphs of the decode step: the LLM token step and the TTS frame step of every session at
once, replayed instead of launching each kernel of each layer again (hundreds per step).

Owns: `DecodeGraphs`, a cache of captured `rows.decode_forward` runs, one per (batch, length)
bucket: batch padded up to a power of two by repeating the last row (it writes the same key to the
same place again, harmlessly), keys read up to a power of two (at least `length_bucket`) with the
padding masked. Inputs are copied into the graph's static buffers (asynchronous copies, no host sync); the
step's output is the graph's static output, copied out. Does not own: which steps are decode steps
(rows.forward_rows asks), the heads and sampling after the backbone (outside the graph).

Each graph is checked once against the eager step on the same inputs right after its capture; a
mismatch or a failed capture turns graphs off for this model (logged) and everything runs eager.
"""

from __future__ import annotations

import logging

import torch

from .rows import Decode, Row, decode_forward, decode_plan, pool_slot

log = logging.getLogger("omni.graphs")
LENGTH_BUCKET = 256  # keys are read up to a power of two >= this: few graphs, at most 2x the attention
MAX_BATCH_BUCKET = 64
CHECK_ATOL = {torch.float32: 1e-3, torch.bfloat16: 5e-2, torch.float16: 2e-2}


def bucket(n: int) -> int:
    return 1 << max(0, (n - 1).bit_length())


def pad(x: torch.Tensor, d: Decode, B: int) -> tuple[torch.Tensor, Decode]:
    """A decode step's inputs padded to `B` rows by repeating the last (same key, same place)."""
    n = B - x.shape[0]
    rep = lambda t: torch.cat([t, t[-1:].expand(n, *t.shape[1:])]) if n else t  # noqa: E731
    return rep(x), Decode(d.pool, rep(d.slots), rep(d.positions), rep(d.mask))


class _Graph:
    def __init__(self, model, pool, B: int, L: int, x: torch.Tensor, mempool):
        dev = x.device
        self.x = torch.zeros(B, x.shape[1], dtype=x.dtype, device=dev)
        self.d = Decode(
            pool,
            torch.zeros(B, dtype=torch.long, device=dev),
            torch.zeros(B, dtype=torch.long, device=dev),
            torch.zeros(B, 1, 1, L, dtype=torch.bool, device=dev),
        )
        self.graph = torch.cuda.CUDAGraph()
        self.model = model
        self.out: torch.Tensor | None = None
        self.mempool = mempool

    def load(self, x: torch.Tensor, d: Decode) -> None:
        """Copy the step's inputs, padded to the graph's batch, into the static buffers."""
        xp, dp = pad(x, d, self.x.shape[0])
        for dst, src in (
            (self.x, xp),
            (self.d.slots, dp.slots),
            (self.d.positions, dp.positions),
            (self.d.mask, dp.mask),
        ):
            dst.copy_(src, non_blocking=True)

    def capture(self) -> None:
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):  # warm-up outside the capture (allocator, kernels)
            for _ in range(2):
                decode_forward(self.model, self.x, self.d)
        torch.cuda.current_stream().wait_stream(side)
        with torch.cuda.graph(self.graph, pool=self.mempool):
            self.out = decode_forward(self.model, self.x, self.d)

    def replay(self, B: int) -> torch.Tensor:
        self.graph.replay()
        assert self.out is not None, "replay before capture"
        return self.out[:B].clone()


class DecodeGraphs:
    """`decode_step` for `rows.forward_rows`: decode steps of a model over one pool, as graphs."""

    def __init__(self, model, length_bucket: int = LENGTH_BUCKET):
        self.model, self.length_bucket = model, length_bucket
        self._graphs: dict[tuple, _Graph] = {}
        self._mempool = None
        self.enabled = True
        self.replays = 0

    def __call__(self, x: torch.Tensor, rows: list[Row]) -> torch.Tensor:
        B, pool = x.shape[0], pool_slot(rows[0]).pool
        if not self.enabled or not x.is_cuda or B > MAX_BATCH_BUCKET:
            return decode_forward(self.model, x, decode_plan(rows, x.device))
        L = min(pool.tokens, max(self.length_bucket, bucket(max(r.start for r in rows) + 1)))
        d = decode_plan(rows, x.device, length=L)
        key = (id(pool), bucket(B), L)
        g = self._graphs.get(key)
        if g is None:
            g = self._capture(key, pool, x, d)
            if g is None:
                return decode_forward(self.model, x, d)
        g.load(x, d)
        self.replays += 1
        return g.replay(B)

    def _capture(self, key, pool, x: torch.Tensor, d: Decode) -> _Graph | None:
        try:
            if self._mempool is None:
                self._mempool = torch.cuda.graph_pool_handle()
            g = _Graph(self.model, pool, key[1], key[2], x, self._mempool)
            g.load(x, d)
            g.capture()
            got = g.replay(x.shape[0])
            want = decode_forward(self.model, x, d)  # rewrites the same keys: harmless
            err = float((got.float() - want.float()).abs().max())
            if err > CHECK_ATOL.get(x.dtype, 1e-3):
                raise RuntimeError(f"graph output differs from the eager step by {err:.3g}")
        except Exception as e:  # noqa: BLE001 - graphs are an optimisation: fall back to eager
            log.error(
                "CUDA graph capture for batch %d, length %d failed (%s): decode steps run eager", key[1], key[2], e
            )
            self.enabled = False
            return None
        self._graphs[key] = g
        log.info("captured a decode-step CUDA graph for batch %d, length %d", key[1], key[2])
        return g
