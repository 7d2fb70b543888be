"""MiniCPMO: the state-dict module (children named as the official keys) and its embeddings.

Owns: building the children from `OmniConfig` (the family decides which: MiniCPM-o 2.6 has all six,
MiniCPM-V 4.5 only llm, vpm and resampler, with a Qwen3 decoder flavour; omni.family), turning a tokenised prompt plus media into LLM
input embeddings (vision scatter, audio scatter; spec §2.3). Does not own: any session state (the
LLM cache, the audio-encoder cache and the TTS state are created by callers and passed in),
tokenisation, prompt layout, the vocoder (it is not in the safetensors; see `omni.loader`).
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from ..config import OmniConfig
from .decoder import QWEN2, CausalLM, Flavour


class MiniCPMO(nn.Module):
    """Children: llm, vpm, resampler, apm, audio_projection_layer, tts (spec §2.1), each present
    when its `init_*` flag is on (the LLM always)."""

    def __init__(self, cfg: OmniConfig, flavour: Flavour = QWEN2):
        super().__init__()
        self.config = cfg
        self.llm = CausalLM(cfg, flavour)
        if cfg.init_vision:
            from .resampler import Resampler
            from .vision import SiglipVisionTransformer

            self.vpm = SiglipVisionTransformer(cfg.vision, drop_last_layer=cfg.drop_vision_last_layer)
            self.resampler = Resampler(cfg.query_num, cfg.hidden_size, cfg.resampler_heads, cfg.vision.hidden_size)
        if cfg.init_audio:
            from .audio import MultiModalProjector, WhisperEncoder

            self.apm = WhisperEncoder(cfg.audio)
            self.audio_projection_layer = MultiModalProjector(cfg.audio_encoder_out_dim, cfg.hidden_size)
        if cfg.init_tts:
            from .tts import ConditionalChatTTS

            self.tts = ConditionalChatTTS(cfg.tts)

    # ---- vision -------------------------------------------------------------------------------
    def vision_features(
        self,
        strips: Sequence[torch.Tensor],
        tgt_sizes: torch.Tensor,
        temporal_ids: Sequence[Sequence[int]] | None = None,
    ) -> torch.Tensor:
        """Slices as patch strips [3, P, P*N_i] -> resampled features [n_slices, query_num, H];
        with `temporal_ids` (V-4.5 packs, omni.processing.packs) one output per id list."""
        from .vision import encode_slices

        if not strips:
            return torch.zeros(0, self.config.query_num, self.config.hidden_size)
        dtype = self.vpm.embeddings.patch_embedding.weight.dtype
        device = self.vpm.embeddings.patch_embedding.weight.device
        strips = [s.to(device=device, dtype=dtype) for s in strips]
        tgt_sizes = tgt_sizes.to(device)
        hidden = encode_slices(self.vpm, strips, tgt_sizes, self.config.vision_batch_size)
        return self.resampler(hidden, tgt_sizes, temporal_ids)

    # ---- audio --------------------------------------------------------------------------------
    def audio_features(self, mels: Sequence[torch.Tensor]) -> list[torch.Tensor]:
        """Offline path: one log-mel [80, T_i] per clip -> embeddings [tokens_i, H] (chunk mask)."""
        from ..processing.audio import attention_chunk_frames
        from .audio import audio_embeddings

        if not mels:
            return []
        dtype = self.apm.conv1.weight.dtype
        device = self.apm.conv1.weight.device
        T = max(m.shape[-1] for m in mels)
        batch = torch.zeros(len(mels), mels[0].shape[0], T, dtype=dtype, device=device)
        for i, m in enumerate(mels):
            batch[i, :, : m.shape[-1]] = m.to(device=device, dtype=dtype)
        lens = torch.tensor([m.shape[-1] for m in mels], device=device)
        chunk_s = self.config.audio_chunk_length
        chunk_frames = attention_chunk_frames(chunk_s) if chunk_s > 0 else None
        return audio_embeddings(
            self.apm, self.audio_projection_layer, batch, lens, chunk_frames, self.config.audio_pool_step
        )

    # ---- scatter ------------------------------------------------------------------------------
    def embed(
        self,
        input_ids: torch.Tensor,
        image_bounds: Sequence[tuple[int, int]] = (),
        vision: torch.Tensor | None = None,
        audio_bounds: Sequence[tuple[int, int]] = (),
        audio: Sequence[torch.Tensor] = (),
    ) -> torch.Tensor:
        """input_ids [1, L] -> inputs_embeds [1, L, H] with media rows written over placeholders.

        Vision: slice k fills the k-th image bound (query_num rows each). Audio (chunk_input):
        all clips' embeddings are concatenated and written in order over all audio bounds.
        """
        B, L = input_ids.shape
        assert B == 1, "one prompt at a time"
        emb = self.llm.embed(input_ids).clone()
        if image_bounds:
            rows = torch.cat([torch.arange(s, e) for s, e in image_bounds]).to(emb.device)
            assert vision is not None, "image bounds need the vision features"
            feats = vision.reshape(-1, emb.shape[-1]).to(emb.dtype)
            if feats.shape[0] != rows.numel():
                raise ValueError(f"{rows.numel()} image placeholder tokens but {feats.shape[0]} feature rows")
            emb[0, rows] = feats
        if audio_bounds:
            rows = torch.cat([torch.arange(s, e) for s, e in audio_bounds]).to(emb.device)
            feats = torch.cat(list(audio), 0).to(emb.dtype)
            if feats.shape[0] != rows.numel():
                raise ValueError(
                    f"{rows.numel()} audio placeholder tokens but {feats.shape[0]} embeddings "
                    "(several sub-second clips in one message? feed whole seconds)"
                )
            emb[0, rows] = feats
        return emb

    def init_buffers(self) -> None:
        """Recompute non-persistent buffers after `to_empty` (they are not in the checkpoint)."""
        for m in self.modules():
            init = getattr(m, "init_buffers", None)
            if m is not self and init is not None:
                init()
