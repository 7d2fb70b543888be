"""ConditionalChatTTS (`tts.`): LLM speaker state + ChatTTS text -> 4-codebook audio codes (spec §5.1).

Owns: the module tree with the official key names (projector, emb_code.q, emb_text, weight-normed
head_code.q, the Llama backbone `model`, `dvae`), text prefill, the audio-code step loop with the
streaming text mask, and the logits pipeline (temperature, TopP then TopK keeping >= 3, EOS held
back for the first steps of every call) with an injectable sampler. Does not own: session state
(the fixed-slot KV cache and `TTSState` of tts_state.py are created here but owned and passed in
by the caller), prompt text and slot arithmetic (omni.processing.tts_text), the chunked loop
(tts_loop.py).
"""

from __future__ import annotations

from typing import cast

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils import parametrize
from torch.nn.utils.parametrizations import weight_norm
from transformers import TopKLogitsWarper, TopPLogitsWarper

from ..config import TTSConfig
from ..processing.tts_text import condition_length, text_start_len, visible_text_count
from .audio import MultiModalProjector  # the official class is shared by audio and TTS projectors
from .decoder import DecoderModel
from .dvae import DVAE
from .ops import FramePick, TTSFrame, TTSPrefill
from .rows import Row, forward_rows
from .tts_state import TTSCache, TTSState

MIN_TOKENS_TO_KEEP = 3  # the official `gen_logits`' TopP/TopK warpers keep at least 3 codes
# ChatTTS repetition-penalty window (frames), used only when repetition_penalty != 1.
PENALTY_WINDOW_FRAMES = 16


class MultinomialSampler:
    """The official draw: softmax then one multinomial sample per codebook (seedable)."""

    def __init__(self, generator: torch.Generator | None = None):
        self.generator = generator

    def __call__(self, logits: torch.Tensor) -> torch.Tensor:
        """logits [Q, V] (masked entries -inf) -> ids [Q]."""
        return self.draw(F.softmax(logits, dim=-1))

    def draw(self, probs: torch.Tensor) -> torch.Tensor:
        """probs [Q, V] -> ids [Q]."""
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
        self.projector = MultiModalProjector(cfg.llm_dim, H) if cfg.use_mlp else nn.Linear(cfg.llm_dim, H, bias=False)
        self.emb_code = nn.ModuleList(nn.Embedding(cfg.num_audio_tokens, H) for _ in range(cfg.num_vq))
        self.emb_text = nn.Embedding(cfg.num_text_tokens, H)
        self.head_code = nn.ModuleList(
            weight_norm(nn.Linear(H, cfg.num_audio_tokens, bias=False), name="weight") for _ in range(cfg.num_vq)
        )
        self.dvae = DVAE()
        # Llama defaults for everything the official LlamaConfig does not set (spec §1.4).
        self.model = DecoderModel(
            cfg.llama_vocab_size,
            H,
            cfg.intermediate_size,
            cfg.num_hidden_layers,
            cfg.num_attention_heads,
            cfg.num_attention_heads,
            cfg.rope_theta,
            cfg.rms_norm_eps,
            qkv_bias=False,
        )
        if self.dvae.dims.codebook_size + 1 != cfg.num_audio_tokens:
            raise ValueError(
                f"num_audio_tokens {cfg.num_audio_tokens} != FSQ codebook {self.dvae.dims.codebook_size} + EOS"
            )

    @property
    def condition_length(self) -> int:
        return condition_length(self.cfg.streaming_text_reserved_len, self.cfg.num_spk_embs)

    def new_state(self, text_mask: torch.Tensor | None = None, cache: TTSCache | None = None) -> TTSState:
        """A fresh segment; `cache`: a reset slot of a batch engine's pool instead of a new cache."""
        c, w = self.cfg, self.emb_text.weight
        if cache is None:
            cache = TTSCache(
                c.num_hidden_layers,
                c.num_attention_heads,
                c.hidden_size // c.num_attention_heads,
                self.condition_length - 1,
                w.dtype,
                w.device,
            )
        frames = torch.zeros(1, 0, c.num_vq, dtype=torch.long)  # on the host: the loop reads every frame
        return TTSState(cache, frames, self.condition_length, text_mask)

    def speaker_embedding(self, spk_hidden: torch.Tensor) -> torch.Tensor:
        """[..., llm_dim] -> L2-normalised [..., hidden]."""
        return F.normalize(self.projector(spk_hidden.to(self.emb_text.weight.dtype)), p=2, dim=-1)

    def text_embeddings(self, input_ids: torch.Tensor, spk_hidden: torch.Tensor | None) -> torch.Tensor:
        """input_ids [1, n] -> [n, H]: `emb_text`, with the `[spk_emb]` rows taking the speaker."""
        B, n = input_ids.shape
        assert B == 1 and n > 0, f"ids {tuple(input_ids.shape)}"
        ids = input_ids.to(self.emb_text.weight.device).long()
        emb = self.emb_text(ids)[0]
        is_spk = ids[0] == self.cfg.spk_emb_token_id
        if is_spk.any():
            assert spk_hidden is not None, "[spk_emb] in the chunk but no speaker hidden state"
            assert int(is_spk.sum()) == self.cfg.num_spk_embs
            rows = is_spk.nonzero()[:, 0]
            # Official apply_spk_emb: batch row 0 of the projection ([H] or [n_spk, H]) fills the span.
            emb[int(rows.min()) : int(rows.max()) + 1] = self.speaker_embedding(spk_hidden)[0]
        return emb

    def audio_prefill(self, state: TTSState, frames: torch.Tensor) -> TTSPrefill:
        """Segment rollover (spec §5.3): the op that carries frames [1, n, Q] of the previous
        segment into `state` (run it, then set `state.frames = frames`).

        `state` holds text only (no frame drawn yet). Feeds the audio BOS plus frames[:, :-1] at
        positions [past, past+n); the last frame is not fed, it becomes the next step's input, so
        afterwards the cache is one step behind as `generate` expects.
        Official quirk kept: the mask is the one-row streaming mask broadcast over all n queries
        (make_streaming_chunk_mask_generation with past_seen_tokens=past), so there is no
        causality among the new tokens: each carried frame also attends to the later ones.
        """
        B, n, Q = frames.shape
        assert B == 1 and n > 0 and Q == self.cfg.num_vq, f"frames {tuple(frames.shape)}"
        assert state.frames.shape[1] == 0 and state.cache.seq_len == self.condition_length - 1, (
            "prefill_audio_ids needs a fresh segment (text prefilled, no audio yet)"
        )
        dev = self.emb_text.weight.device
        frames = frames.to(dev).long()
        bos = self.emb_text(torch.tensor([self.cfg.audio_bos_token_id], device=dev))  # [1, H]
        emb = torch.cat([bos, self._code_sum(frames[0, :-1])], 0)  # [n, H]
        past = state.cache.seq_len
        return TTSPrefill(state, emb, None, self.streaming_mask(past, state.text_mask, dev, new=n)[0, 0, 0])

    def streaming_mask(self, past: int, text_mask: torch.Tensor | None, device=None, new: int = 1) -> torch.Tensor:
        """bool [1, 1, 1, past+new] (True = attend) for the audio step(s) at cache length `past`.

        Hides text slots not yet revealed and the [Ptts] slot itself (so the BOS input is never
        attended to, not even by its own step: official quirk kept), then every condition slot
        where `text_mask` is 0. One row, broadcast over the `new` queries (see prefill_audio_ids).
        """
        c, C = self.cfg, self.condition_length
        V = visible_text_count(
            past, c.streaming_text_reserved_len, c.streaming_audio_chunk_size, c.streaming_text_chunk_size
        )
        allowed = torch.ones(past + new, dtype=torch.bool, device=device)
        allowed[text_start_len(c.num_spk_embs) + V : C] = False
        if text_mask is not None:
            allowed[:C] &= text_mask.to(device=device).bool()
        return allowed[None, None, None]

    # ---- solo entry points (one state, run at once) -----------------------------------------------
    @torch.inference_mode()
    def prefill_text(
        self, state: TTSState, input_ids: torch.Tensor, begin: int, end: int, spk_hidden: torch.Tensor | None = None
    ) -> None:
        """Write text slots [begin, end) from input_ids [1, end-begin]; `[spk_emb]` rows take the speaker."""
        assert input_ids.shape[1] == end - begin, f"ids {tuple(input_ids.shape)} for slots [{begin}, {end})"
        self.step_rows([TTSPrefill(state, self.text_embeddings(input_ids, spk_hidden), begin)])

    @torch.inference_mode()
    def prefill_audio_ids(self, state: TTSState, frames: torch.Tensor) -> None:
        """Run `audio_prefill` at once."""
        self.step_rows([self.audio_prefill(state, frames)])
        state.frames = frames.cpu().long()

    @torch.inference_mode()
    def generate(
        self,
        state: TTSState,
        max_new_frames: int,
        temperatures,
        sampler,
        min_new_frames: int = 10,
        force_no_stop: bool = False,
    ) -> tuple[torch.Tensor, bool]:
        """Run `generate_steps` at once."""
        program = self.generate_steps(state, max_new_frames, temperatures, sampler, min_new_frames, force_no_stop)
        result = None
        while True:
            try:
                op = program.send(result)
            except StopIteration as stop:
                return stop.value
            result = self.step_rows([op])[0]

    # ---- steps (any number of states at once) ----------------------------------------------------
    def generate_steps(
        self,
        state: TTSState,
        max_new_frames: int,
        temperatures,
        sampler,
        min_new_frames: int = 10,
        force_no_stop: bool = False,
    ):
        """Program: draw up to `max_new_frames` frames into `state` (one `TTSFrame` op each);
        returns (state.codes [1, n, Q], finished).

        Official per-call behaviour: EOS is masked for the first `min_new_frames` steps of every
        call; the step is finished when any codebook draws EOS; an EOS at step 0 breaks before
        the frame is stored, yet the last stored frame is still dropped from `codes` (quirk kept).
        """
        c = self.cfg
        temps = tuple(float(t) for t in temperatures)
        assert len(temps) == c.num_vq, f"{len(temps)} temperatures for {c.num_vq} codebooks"
        for i in range(max_new_frames):
            assert state.input_len == state.cache.seq_len + 1, (
                f"frames {state.frames.shape[1]} out of step with cache {state.cache.seq_len}"
            )
            ids = yield TTSFrame(state, FramePick(temps, sampler, i < min_new_frames or force_no_stop))
            done = bool((ids == c.eos_code).any())
            if i == 0 and done:
                state.finished = True
                break
            state.frames = torch.cat([state.frames, ids.view(1, 1, -1)], 1)
            if done:
                state.finished = True
                break
        return state.codes, state.finished

    @torch.inference_mode()
    def step_rows(self, ops: list, decode_step=None) -> list:
        """Execute TTS ops of many states in one packed forward: `TTSPrefill` -> None, `TTSFrame`
        -> the drawn codes [Q] (long, on the host). `decode_step`: see rows.forward_rows."""
        frames = [op for op in ops if isinstance(op, TTSFrame)]
        x, rows = [], []
        for op in ops:
            if isinstance(op, TTSPrefill):
                st, n = op.state, op.embeds.shape[0]
                start = op.slot if op.slot is not None else st.cache.seq_len
                x.append(op.embeds)
                rows.append(Row(st.cache, n, start, append=op.slot is None, mask=op.mask))
        if frames:
            x.append(self.step_inputs([op.state for op in frames]))
            for op in frames:
                past = op.state.cache.seq_len
                # the mask on the host: the batched step builds its [B, L] mask there (no device sync)
                rows.append(Row(op.state.cache, 1, past, mask=self.streaming_mask(past, op.state.text_mask)[0, 0, 0]))
        h = forward_rows(self.model, torch.cat(x, 0), rows, decode_step)
        picked = iter(())
        if frames:
            logits = self.head_logits(h[h.shape[0] - len(frames) :])
            picked = iter(self.pick_frames(logits, [op.state for op in frames], [op.pick for op in frames]))
        return [next(picked) if isinstance(op, TTSFrame) else None for op in ops]

    def step_inputs(self, states: list[TTSState]) -> torch.Tensor:
        """[B, H]: emb_text(audio BOS) at the first step of a segment, else the last frame's code sum."""
        dev = self.emb_text.weight.device
        x = torch.empty(len(states), self.cfg.hidden_size, dtype=self.emb_text.weight.dtype, device=dev)
        bos = [b for b, s in enumerate(states) if s.frames.shape[1] == 0]
        codes = [b for b, s in enumerate(states) if s.frames.shape[1] > 0]
        if bos:
            x[bos] = self.emb_text(torch.tensor([self.cfg.audio_bos_token_id], device=dev))
        if codes:
            x[codes] = self._code_sum(torch.stack([states[b].frames[0, -1] for b in codes]).to(dev))
        return x

    def _code_sum(self, frames: torch.Tensor) -> torch.Tensor:
        """frames [n, Q] -> [n, H]: the sum of the Q codebook embeddings."""
        return torch.stack([emb(frames[:, q]) for q, emb in enumerate(self.emb_code)], -1).sum(-1)

    def head_logits(self, h: torch.Tensor) -> torch.Tensor:
        """h [B, H] -> float logits [B, Q, V] of the weight-normed code heads."""
        return torch.stack([F.linear(h, w) for w in self._head_weights()], 1).float()

    def _head_weights(self) -> list[torch.Tensor]:
        """The heads' weight-normed weights, recomputed only when a parameter changed (a weight
        norm per head per frame was 2% of a reply)."""
        # get_submodule, not attribute access: torch types a submodule attribute as Tensor | Module
        originals = [p for head in self.head_code for p in head.get_submodule("parametrizations.weight").parameters()]
        key = tuple((p.data_ptr(), p._version) for p in originals)
        if getattr(self, "_head_cache", (None,))[0] != key:
            with torch.no_grad(), parametrize.cached():
                heads = [cast(nn.Linear, head) for head in self.head_code]  # ModuleList yields nn.Module
                self._head_cache = (key, [head.weight.detach() for head in heads])
        return self._head_cache[1]

    def pick_frames(self, logits: torch.Tensor, states: list[TTSState], picks: list[FramePick]) -> list[torch.Tensor]:
        """logits [B, Q, V] -> codes [Q] per state: the official `gen_logits` pipeline (temperature;
        after the first step repetition penalty, top-p then top-k keeping >= 3; EOS masked when
        asked) and each state's own sampler. Every stage is row-wise, so a row's codes do not
        depend on the other rows."""
        c = self.cfg
        B, Q, V = logits.shape
        temps = torch.tensor([p.temperatures for p in picks], dtype=torch.float32, device=logits.device)
        logits = logits / temps[:, :, None]
        warp = [b for b, s in enumerate(states) if s.frames.shape[1] > 0]
        if warp:
            if c.repetition_penalty != 1.0:
                for b in warp:
                    logits[b] = repetition_penalty(
                        logits[b], states[b].frames[0].to(logits.device), c.repetition_penalty
                    )
            top_p = TopPLogitsWarper(c.top_p, min_tokens_to_keep=MIN_TOKENS_TO_KEEP)
            top_k = TopKLogitsWarper(c.top_k, min_tokens_to_keep=MIN_TOKENS_TO_KEEP)
            rows = logits[warp].reshape(-1, V)
            # ChatTTS order: top-p, then top-k
            logits[warp] = top_k(None, top_p(None, rows)).view(len(warp), Q, V)  # pyright: ignore[reportArgumentType] - the warpers never read input_ids
        blocked = [b for b, p in enumerate(picks) if p.block_eos]
        if blocked:
            logits[blocked, :, c.eos_code] = float("-inf")
        out: list = [None] * B
        greedy = [
            b for b, p in enumerate(picks) if type(p.sampler) is GreedySampler
        ]  # not subclasses: they may draw differently
        if greedy:
            ids = GreedySampler()(logits[greedy])
            for j, b in enumerate(greedy):
                out[b] = ids[j]
        drawn = [b for b, p in enumerate(picks) if type(p.sampler) is MultinomialSampler]
        if drawn:  # one softmax for all rows, then each row's draw with its own generator
            probs = F.softmax(logits[drawn], dim=-1)
            for j, b in enumerate(drawn):
                out[b] = picks[b].sampler.draw(probs[j])
        for b, p in enumerate(picks):
            if out[b] is None:
                out[b] = p.sampler(logits[b])
        return list(torch.stack(out).long().cpu())  # one transfer for the batch (the loop reads them)

    @torch.inference_mode()
    def decode_to_mel(self, codes: torch.Tensor) -> torch.Tensor:
        """codes [1, T, num_vq] -> mel [1, num_mels, 2T] (DVAE decode, spec §5.4)."""
        B, T, Q = codes.shape
        assert T > 0 and Q == self.cfg.num_vq, f"codes {tuple(codes.shape)}"
        return self.dvae.decode(codes.to(self.emb_text.weight.device))
