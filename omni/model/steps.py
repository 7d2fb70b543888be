"""Executing model ops: a list of ops of one kind, from one session or many, in batched forwards.

Owns: `Executor.run` (the batched execution of each op kind: one packed LLM forward and one
lm-head GEMM for every `LLMForward`, one TTS forward for every `TTSPrefill`/`TTSFrame`, one DVAE +
Vocos pass per group of equal-length code chunks, one vision tower pass per group of equal-size
frames, one Whisper pass per group of equal-length mel chunks) and `Executor.one` (a single op, as
a session run alone uses it). Does not own: the op types and program protocol (ops.py), choosing
which ops run together (omni.batch), model math (the modules).

Results of a batch are per op and equal what each op gives alone, up to float rounding of the
larger GEMMs: every stage after the forward (sampling, masking) is row-wise.
"""

from __future__ import annotations

from collections import defaultdict
from typing import TYPE_CHECKING, Callable

import torch

from .. import token_masks
from ..sampling import choose_rows
from .ops import AudioEncode, Decode, LLMForward, LLMOut, Op, VisionEncode
from .rows import Row, forward_rows, linear

if TYPE_CHECKING:
    from ..loader import Omni
    from .graphs import DecodeGraphs
    from .omni import MiniCPMO
    from .tts import ConditionalChatTTS
    from .vocos import Vocos


CPU_VISION_BATCH = 2


class Executor:
    """Runs ops on a model bundle's modules (`m.net`, `m.vocos`); a TTS-only user passes `tts`."""

    def __init__(
        self,
        net: MiniCPMO | None = None,
        vocos: Vocos | None = None,
        tts: ConditionalChatTTS | None = None,
        audio_pool_step: int = 2,
        cuda_graphs: bool = False,
    ):
        """`cuda_graphs`: run decode steps (LLM token, TTS frame) as captured CUDA graphs."""
        self.net, self.vocos = net, vocos
        self.tts: ConditionalChatTTS | None = tts if tts is not None else getattr(net, "tts", None)
        self.audio_pool_step = audio_pool_step
        self.graphs: dict[str, DecodeGraphs] = {}
        if cuda_graphs:
            from .graphs import DecodeGraphs

            self.graphs = {"llm": DecodeGraphs(self._net().llm.model)}
            if self.tts is not None:  # a family without speech (MiniCPM-V 4.5) has no TTS step
                self.graphs["tts"] = DecodeGraphs(self.tts.model)
        self._kinds: dict[str, Callable[[list], list]] = {
            "llm": self._llm,
            "tts": self._tts,
            "decode": self._decode,
            "vision": self._vision,
            "audio": self._audio,
        }

    @classmethod
    def of(cls, m: Omni, cuda_graphs: bool = False) -> "Executor":
        """For an `omni.loader.Omni` bundle (graphs only on a CUDA device)."""
        return cls(
            m.net,
            m.vocos,
            audio_pool_step=m.config.audio_pool_step,
            cuda_graphs=cuda_graphs and m.device.type == "cuda",
        )

    @torch.inference_mode()
    def run(self, ops: list[Op]) -> list:
        """One result per op, in order; all ops must be of one kind."""
        kinds = {op.kind for op in ops}
        assert len(kinds) == 1, f"one kind per batch, got {sorted(kinds)}"
        return self._kinds[ops[0].kind](ops)

    def one(self, op: Op):
        return self.run([op])[0]

    # The modules an op kind needs; a TTS-only executor (tts, vocos) has no `net`.
    def _net(self) -> MiniCPMO:
        assert self.net is not None, "LLM, vision and audio ops need the model's `net`"
        return self.net

    def _tts_model(self) -> ConditionalChatTTS:
        assert self.tts is not None, "TTS and decode ops need a model with the TTS"
        return self.tts

    # ---- per kind ---------------------------------------------------------------------------------
    def _llm(self, ops: list[LLMForward]) -> list[LLMOut]:
        llm = self._net().llm
        dev = llm.lm_head.weight.device
        ids = [i for op in ops if op.ids is not None for i in op.ids]
        id_emb = iter(
            llm.embed(torch.tensor(ids, device=dev)).split([op.length for op in ops if op.ids is not None])
            if ids
            else ()
        )
        x = torch.cat([next(id_emb) if op.ids is not None else _embeds(op).to(dev) for op in ops], 0)
        rows = [Row(op.cache, op.length, op.cache.seq_len) for op in ops]
        h = forward_rows(llm.model, x, rows, self.graphs.get("llm"))
        ends = torch.tensor([op.length for op in ops]).cumsum(0) - 1
        last = h[ends.to(dev)]  # [B, D]
        drawn = [b for b, op in enumerate(ops) if op.sample is not None]
        tokens: list = [None] * len(ops)
        if drawn:
            logits = linear(llm.lm_head, last[drawn])
            s = [op.sample for op in ops if op.sample is not None]  # in the order of `drawn`
            # the rows' masks are computed here, on the CPU, while the device runs the forward
            allowed = token_masks.gather([x.mask for x in s], logits.shape[1], logits.device)
            for b, tok in zip(
                drawn,
                choose_rows(logits, [x.seen for x in s], [x.params for x in s], [x.generator for x in s], allowed),
            ):
                tokens[b] = tok
        out, start = [], 0
        for b, op in enumerate(ops):
            hidden = h[start : start + op.length] if op.all_hidden else last[b]
            out.append(LLMOut(hidden, tokens[b]))
            start += op.length
        return out

    def _tts(self, ops: list) -> list:
        return self._tts_model().step_rows(ops, self.graphs.get("tts"))

    def _decode(self, ops: list[Decode]) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """-> (mel [1, num_mels, 2T], wav [n]) per op; chunks batch only with equal lengths (the
        convolutions see zero padding at a chunk's end, so padding would change the samples)."""
        out: list = [None] * len(ops)
        tts, vocos = self._tts_model(), self.vocos
        assert vocos is not None, "decode ops need the vocoder"
        for group in _groups(ops, lambda op: op.codes.shape[1]).values():
            codes = torch.cat([ops[b].codes for b in group], 0)
            mel = tts.decode_to_mel(codes)
            wav = vocos.decode(mel.float())
            for j, b in enumerate(group):
                out[b] = (mel[j : j + 1], wav[j])
        return out

    def _vision(self, ops: list[VisionEncode]) -> list[torch.Tensor]:
        out: list = [None] * len(ops)
        net = self._net()
        # On a CPU a batch of frames is no faster per frame (the eager attention's [heads, P, P]
        # scores dominate: 770 ms a full-size frame alone, 825 in eights, 978 in sixteens).
        chunk = CPU_VISION_BATCH if net.llm.lm_head.weight.device.type == "cpu" else len(ops)
        groups = [
            g[i : i + chunk]
            for g in _groups(ops, lambda op: tuple(tuple(s.shape) for s in op.strips)).values()
            for i in range(0, len(g), chunk)
        ]
        for group in groups:
            strips = [s for b in group for s in ops[b].strips]
            # Packs (V-4.5) of several sessions share one resampler call (padding keys are masked);
            # a still beside them is a group of one with id -1 (bit-identical to the 2-D path).
            packed = any(ops[b].temporal_ids is not None for b in group)
            ids = [t for b in group for t in (ops[b].temporal_ids or [[-1]] * len(ops[b].strips))] if packed else None
            feats = net.vision_features(strips, torch.cat([ops[b].tgt_sizes for b in group], 0), ids)
            for b, f in zip(group, feats.split([ops[b].outputs for b in group])):
                out[b] = f
        return out

    def _audio(self, ops: list[AudioEncode]) -> list[torch.Tensor]:
        from .audio import audio_embeddings_streaming_rows

        out: list = [None] * len(ops)
        net = self._net()
        for group in _groups(ops, lambda op: op.mel.shape[-1]).values():
            mels = torch.cat([ops[b].mel for b in group], 0)
            embs = audio_embeddings_streaming_rows(
                net.apm, net.audio_projection_layer, mels, [ops[b].cache for b in group], self.audio_pool_step
            )
            for b, e in zip(group, embs):
                out[b] = e
        return out


def _embeds(op: LLMForward) -> torch.Tensor:
    assert op.embeds is not None, "an LLMForward needs ids or embeds"
    return op.embeds


def _groups(ops: list, key) -> dict:
    groups: dict = defaultdict(list)
    for b, op in enumerate(ops):
        groups[key(op)].append(b)
    return groups
