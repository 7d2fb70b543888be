"""ConditionalChatTTS (`tts.`): LLM speaker state + ChatTTS text -> 4-codebook audio codes (spec §5.1).

Owns: the module tree with the official key names (projector, emb_code.q, emb_text, weight-normed
head_code.q, the Llama backbone `model`, `dvae`), the fixed-slot KV cache, text prefill, the
audio-code step loop with the streaming text mask, and the logits pipeline (temperature, TopP then
TopK keeping >= 3, EOS held back for the first steps of every call) with an injectable sampler.
Does not own: session state (`TTSState` is created here but owned and passed in by the caller),
prompt text and slot arithmetic (omni.processing.tts_text), the chunked loop (tts_loop.py).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils import parametrize
from torch.nn.utils.parametrizations import weight_norm
from transformers import TopKLogitsWarper, TopPLogitsWarper

from ..config import TTSConfig
from ..processing.tts_text import condition_length, text_start_len, visible_text_count
from .audio import MultiModalProjector  # the official class is shared by audio and TTS projectors
from .decoder import DecoderModel, causal_mask
from .dvae import DVAE

MIN_TOKENS_TO_KEEP = 3   # the official `gen_logits`' TopP/TopK warpers keep at least 3 codes
# ChatTTS repetition-penalty window (frames), used only when repetition_penalty != 1.
PENALTY_WINDOW_FRAMES = 16


class TTSCache:
    """Per layer k/v [1, H, slots, Dh]: `text_slots` fixed zero-initialised text slots, audio appended.

    Owned by the session. `update` appends (audio steps); `at_slot(b)` gives the object the
    decoder writes a text prefill through: it attends over the truncated prefix [:b] only and
    stores the new k/v in place at [b, b+n), even after audio has been appended.
    """

    def __init__(self, num_layers: int, kv_heads: int, head_dim: int, text_slots: int,
                 dtype=torch.float32, device=None, capacity_frames: int = 256):
        self.text_slots = text_slots
        shape = (1, kv_heads, text_slots + capacity_frames, head_dim)
        self._k = [torch.zeros(shape, dtype=dtype, device=device) for _ in range(num_layers)]
        self._v = [torch.zeros(shape, dtype=dtype, device=device) for _ in range(num_layers)]
        self._len = [text_slots] * num_layers

    @property
    def seq_len(self) -> int:
        return self._len[0]

    def update(self, layer: int, k: torch.Tensor, v: torch.Tensor):
        """Append k, v [1, H, T, Dh]; return all keys and values of `layer`."""
        n, T = self._len[layer], k.shape[2]
        cap = self._k[layer].shape[2]
        if n + T > cap:  # amortised doubling; text slots keep their place
            extra = max(n + T, 2 * cap) - cap
            grow = lambda buf: torch.cat([buf, buf.new_zeros(*buf.shape[:2], extra, buf.shape[3])], 2)
            self._k[layer], self._v[layer] = grow(self._k[layer]), grow(self._v[layer])
        self._k[layer][:, :, n:n + T] = k
        self._v[layer][:, :, n:n + T] = v
        self._len[layer] = n + T
        return self._k[layer][:, :, :n + T], self._v[layer][:, :, :n + T]

    def at_slot(self, begin: int) -> "_SlotWriter":
        return _SlotWriter(self, begin)

    def layer(self, i: int):
        n = self._len[i]
        return self._k[i][:, :, :n], self._v[i][:, :, :n]


class _SlotWriter:
    def __init__(self, cache: TTSCache, begin: int):
        self.cache, self.seq_len = cache, begin

    def update(self, layer: int, k: torch.Tensor, v: torch.Tensor):
        b, e = self.seq_len, self.seq_len + k.shape[2]
        assert e <= self.cache.text_slots, f"text slots [{b}, {e}) exceed {self.cache.text_slots}"
        self.cache._k[layer][:, :, b:e] = k
        self.cache._v[layer][:, :, b:e] = v
        return self.cache._k[layer][:, :, :e], self.cache._v[layer][:, :, :e]


@dataclass
class TTSState:
    """One TTS segment of one session: cache, codes so far, text mask. Created by `new_state`."""
    cache: TTSCache
    frames: torch.Tensor            # [1, n, num_vq] long: every frame drawn (incl. a final EOS frame)
    condition_length: int
    text_mask: torch.Tensor | None  # int8 [condition_length] (tts_text.text_mask), None = no text mask
    finished: bool = False

    @property
    def codes(self) -> torch.Tensor:
        """[1, n', num_vq] the official `new_ids`: the last frame dropped once finished (the EOS frame)."""
        return self.frames[:, :-1] if self.finished else self.frames

    @property
    def input_len(self) -> int:
        """Length of the official `audio_input_ids` (condition rows + frames)."""
        return self.condition_length + self.frames.shape[1]


class MultinomialSampler:
    """The official draw: softmax then one multinomial sample per codebook (seedable)."""

    def __init__(self, generator: torch.Generator | None = None):
        self.generator = generator

    def __call__(self, logits: torch.Tensor) -> torch.Tensor:
        """logits [Q, V] (masked entries -inf) -> ids [Q]."""
        probs = F.softmax(logits, dim=-1)
        return torch.multinomial(probs, 1, generator=self.generator).squeeze(-1)


class GreedySampler:
    """Arg-max of the softmax scores: what the golden reference ran instead of torch.multinomial."""

    def __call__(self, logits: torch.Tensor) -> torch.Tensor:
        return F.softmax(logits, dim=-1).argmax(-1)


def repetition_penalty(logits: torch.Tensor, frames: torch.Tensor, penalty: float) -> torch.Tensor:
    """ChatTTS penalty: logits [Q, V], frames [n, Q]; each id seen f times in the window scales by penalty^f."""
    Q, V = logits.shape
    freq = F.one_hot(frames[-PENALTY_WINDOW_FRAMES:].T.long(), V).sum(1)
    alpha = torch.pow(torch.tensor(penalty, device=logits.device), freq)
    return torch.where(logits < 0, logits * alpha, logits / alpha)


class ConditionalChatTTS(nn.Module):
    def __init__(self, cfg: TTSConfig):
        super().__init__()
        self.cfg = cfg
        H = cfg.hidden_size
        self.projector = (MultiModalProjector(cfg.llm_dim, H) if cfg.use_mlp
                          else nn.Linear(cfg.llm_dim, H, bias=False))
        self.emb_code = nn.ModuleList(nn.Embedding(cfg.num_audio_tokens, H) for _ in range(cfg.num_vq))
        self.emb_text = nn.Embedding(cfg.num_text_tokens, H)
        self.head_code = nn.ModuleList(weight_norm(nn.Linear(H, cfg.num_audio_tokens, bias=False), name="weight")
                                       for _ in range(cfg.num_vq))
        self.dvae = DVAE()
        # Llama defaults for everything the official LlamaConfig does not set (spec §1.4).
        self.model = DecoderModel(cfg.llama_vocab_size, H, cfg.intermediate_size, cfg.num_hidden_layers,
                                  cfg.num_attention_heads, cfg.num_attention_heads, cfg.rope_theta,
                                  cfg.rms_norm_eps, qkv_bias=False)
        if self.dvae.dims.codebook_size + 1 != cfg.num_audio_tokens:
            raise ValueError(f"num_audio_tokens {cfg.num_audio_tokens} != FSQ codebook "
                             f"{self.dvae.dims.codebook_size} + EOS")

    @property
    def condition_length(self) -> int:
        return condition_length(self.cfg.streaming_text_reserved_len, self.cfg.num_spk_embs)

    def new_state(self, text_mask: torch.Tensor | None = None) -> TTSState:
        c, w = self.cfg, self.emb_text.weight
        cache = TTSCache(c.num_hidden_layers, c.num_attention_heads, c.hidden_size // c.num_attention_heads,
                         self.condition_length - 1, w.dtype, w.device)
        frames = torch.zeros(1, 0, c.num_vq, dtype=torch.long, device=w.device)
        return TTSState(cache, frames, self.condition_length, text_mask)

    def speaker_embedding(self, spk_hidden: torch.Tensor) -> torch.Tensor:
        """[..., llm_dim] -> L2-normalised [..., hidden]."""
        return F.normalize(self.projector(spk_hidden.to(self.emb_text.weight.dtype)), p=2, dim=-1)

    @torch.inference_mode()
    def prefill_text(self, state: TTSState, input_ids: torch.Tensor, begin: int, end: int,
                     spk_hidden: torch.Tensor | None = None) -> None:
        """Write text slots [begin, end) from input_ids [1, end-begin]; `[spk_emb]` rows take the speaker."""
        B, n = input_ids.shape
        assert B == 1 and n == end - begin > 0, f"ids {tuple(input_ids.shape)} for slots [{begin}, {end})"
        ids = input_ids.to(self.emb_text.weight.device).long()
        emb = self.emb_text(ids)
        is_spk = ids[0] == self.cfg.spk_emb_token_id
        if is_spk.any():
            assert spk_hidden is not None, "[spk_emb] in the chunk but no speaker hidden state"
            assert int(is_spk.sum()) == self.cfg.num_spk_embs
            rows = is_spk.nonzero()[:, 0]
            # Official apply_spk_emb: batch row 0 of the projection ([H] or [n_spk, H]) fills the span.
            emb[0, int(rows.min()):int(rows.max()) + 1] = self.speaker_embedding(spk_hidden)[0]
        pos = torch.arange(begin, end, device=ids.device)[None]
        self.model(emb, position_ids=pos, cache=state.cache.at_slot(begin), mask=causal_mask(n, begin, ids.device))

    def streaming_mask(self, past: int, text_mask: torch.Tensor | None, device=None,
                       new: int = 1) -> torch.Tensor:
        """bool [1, 1, 1, past+new] (True = attend) for the audio step(s) at cache length `past`.

        Hides text slots not yet revealed and the [Ptts] slot itself (so the BOS input is never
        attended to, not even by its own step: official quirk kept), then every condition slot
        where `text_mask` is 0. One row, broadcast over the `new` queries (see prefill_audio_ids).
        """
        c, C = self.cfg, self.condition_length
        V = visible_text_count(past, c.streaming_text_reserved_len, c.streaming_audio_chunk_size,
                               c.streaming_text_chunk_size)
        allowed = torch.ones(past + new, dtype=torch.bool, device=device)
        allowed[text_start_len(c.num_spk_embs) + V:C] = False
        if text_mask is not None:
            allowed[:C] &= text_mask.to(device=device).bool()
        return allowed[None, None, None]

    @torch.inference_mode()
    def prefill_audio_ids(self, state: TTSState, frames: torch.Tensor) -> None:
        """Segment rollover (spec §5.3): carry frames [1, n, Q] of the previous segment into `state`.

        `state` holds text only (no frame drawn yet). Feeds the audio BOS plus frames[:, :-1] at
        positions [past, past+n); the last frame is not fed, it becomes the next step's input, so
        afterwards state.frames == frames and the cache is one step behind as `generate` expects.
        Official quirk kept: the mask is the one-row streaming mask broadcast over all n queries
        (make_streaming_chunk_mask_generation with past_seen_tokens=past), so there is no
        causality among the new tokens: each carried frame also attends to the later ones.
        """
        B, n, Q = frames.shape
        assert B == 1 and n > 0 and Q == self.cfg.num_vq, f"frames {tuple(frames.shape)}"
        assert state.frames.shape[1] == 0 and state.cache.seq_len == self.condition_length - 1, \
            "prefill_audio_ids needs a fresh segment (text prefilled, no audio yet)"
        dev = self.emb_text.weight.device
        frames = frames.to(dev).long()
        bos = self.emb_text(torch.tensor([[self.cfg.audio_bos_token_id]], device=dev))
        codes = frames[:, :-1]
        code_emb = torch.stack([emb(codes[:, :, q]) for q, emb in enumerate(self.emb_code)], 3).sum(3)
        emb = torch.cat([bos, code_emb], 1)                                   # [1, n, H]
        past = state.cache.seq_len
        pos = torch.arange(past, past + n, device=dev)[None]
        self.model(emb, position_ids=pos, cache=state.cache,
                   mask=self.streaming_mask(past, state.text_mask, dev, new=n))
        state.frames = frames

    def _step_input(self, state: TTSState) -> torch.Tensor:
        """[1, 1, H]: emb_text(audio BOS) at the first step of a segment, else the last frame's code sum."""
        dev = self.emb_text.weight.device
        if state.frames.shape[1] == 0:
            return self.emb_text(torch.tensor([[self.cfg.audio_bos_token_id]], device=dev))
        last = state.frames[:, -1:]
        return torch.stack([emb(last[:, :, q]) for q, emb in enumerate(self.emb_code)], 3).sum(3)

    @torch.inference_mode()
    def generate(self, state: TTSState, max_new_frames: int, temperatures, sampler,
                 min_new_frames: int = 10, force_no_stop: bool = False) -> tuple[torch.Tensor, bool]:
        """Draw up to `max_new_frames` frames into `state`; return (state.codes [1, n, Q], finished).

        Official per-call behaviour: EOS is masked for the first `min_new_frames` steps of every
        call; the step is finished when any codebook draws EOS; an EOS at step 0 breaks before
        the frame is stored, yet the last stored frame is still dropped from `codes` (quirk kept).
        """
        c = self.cfg
        eos, penalty = c.eos_code, c.repetition_penalty
        # transformers' warpers as the official `gen_logits` builds them (min_tokens_to_keep=3).
        top_p = TopPLogitsWarper(c.top_p, min_tokens_to_keep=MIN_TOKENS_TO_KEEP)
        top_k = TopKLogitsWarper(c.top_k, min_tokens_to_keep=MIN_TOKENS_TO_KEEP)
        dev = self.emb_text.weight.device
        temps = torch.as_tensor(temperatures, dtype=torch.float32, device=dev).view(-1, 1)
        assert temps.shape[0] == c.num_vq, f"{temps.shape[0]} temperatures for {c.num_vq} codebooks"
        text_mask = None if state.text_mask is None else state.text_mask.to(dev).bool()   # once per call
        with parametrize.cached():
            for i in range(max_new_frames):
                past = state.cache.seq_len
                assert state.input_len == past + 1, f"frames {state.frames.shape[1]} out of step with cache {past}"
                bos = state.frames.shape[1] == 0
                h = self.model(self._step_input(state), position_ids=torch.tensor([[past]], device=dev),
                               cache=state.cache, mask=self.streaming_mask(past, text_mask, dev))
                logits = torch.stack([head(h)[0, -1] for head in self.head_code]).float() / temps  # [Q, V]
                if not bos:
                    if penalty != 1.0:
                        logits = repetition_penalty(logits, state.frames[0], penalty)
                    logits = top_k(None, top_p(None, logits))     # ChatTTS order: top-p, then top-k
                if i < min_new_frames or force_no_stop:
                    logits[:, eos] = float("-inf")
                ids = sampler(logits).to(dev).long()
                done = bool((ids == eos).any())
                if i == 0 and done:
                    state.finished = True
                    break
                state.frames = torch.cat([state.frames, ids.view(1, 1, -1)], 1)
                if done:
                    state.finished = True
                    break
        return state.codes, state.finished

    @torch.inference_mode()
    def decode_to_mel(self, codes: torch.Tensor) -> torch.Tensor:
        """codes [1, T, num_vq] -> mel [1, num_mels, 2T] (DVAE decode, spec §5.4)."""
        B, T, Q = codes.shape
        assert T > 0 and Q == self.cfg.num_vq, f"codes {tuple(codes.shape)}"
        return self.dvae.decode(codes.to(self.emb_text.weight.device))
