"""Pre-norm RoPE decoder shared by the LLMs (`llm.`: o-2.6's Qwen2, V-4.5's Qwen3, one code with a
`Flavour`) and the TTS Llama backbone (`tts.model.`).

Owns: the transformer math (RMSNorm, rotary embedding, grouped-query attention, SwiGLU MLP) with
the attribute names of the official checkpoints, and `KVCache`, the per-session key/value store
that the *caller* owns and passes into every forward. Does not own: any session state, sampling,
prompt layout.

The math mirrors transformers' Qwen2/Qwen3/Llama modules (spec §2.3): RoPE inverse frequencies and
angles in float32, rotate-half convention, RMSNorm in float32, no embedding scaling.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn


class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        dtype = x.dtype
        h = x.float()
        h = h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + self.eps)
        return self.weight * h.to(dtype)


def rope_inv_freq(head_dim: int, theta: float) -> torch.Tensor:
    """[head_dim/2] float32, the exact transformers formula."""
    return 1.0 / (theta ** (torch.arange(0, head_dim, 2, dtype=torch.int64).float() / head_dim))


def rope_cos_sin(position_ids: torch.Tensor, inv_freq: torch.Tensor, dtype: torch.dtype):
    """position_ids [B, T] -> cos, sin [B, 1, T, head_dim] (angles in float32)."""
    freqs = position_ids.to(torch.float32)[..., None] * inv_freq.to(position_ids.device)[None, None, :]
    emb = torch.cat((freqs, freqs), dim=-1)
    return emb.cos().to(dtype)[:, None], emb.sin().to(dtype)[:, None]


def rotate_half(x: torch.Tensor) -> torch.Tensor:
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat((-x2, x1), dim=-1)


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    return x * cos + rotate_half(x) * sin


class KVCache:
    """Keys/values per layer, [B, H_kv, T, head_dim] each, grown in place (amortised doubling).

    Owned by the session; the model only calls `update`. `crop` and `drop` support barge-in
    rollback and sliding windows.
    """

    def __init__(self, num_layers: int):
        """`num_layers` 0: layers are added as `update` first meets them (in order)."""
        self.num_layers = num_layers
        self._k: list[torch.Tensor | None] = [None] * num_layers
        self._v: list[torch.Tensor | None] = [None] * num_layers
        self._len = [0] * num_layers

    @property
    def seq_len(self) -> int:
        return self._len[0] if self._len else 0

    def update(self, layer: int, k: torch.Tensor, v: torch.Tensor):
        """Append k, v [B, H, T, D] to `layer`; return all keys and values so far."""
        if layer == self.num_layers:  # a cache built with 0 layers learns them in order
            self._k.append(None)
            self._v.append(None)
            self._len.append(0)
            self.num_layers += 1
        B, H, T, D = k.shape
        n = self._len[layer]
        buf_k, buf_v = self._k[layer], self._v[layer]
        if buf_k is None or buf_v is None or buf_k.shape[2] < n + T:  # k and v are None together
            cap = max(64, 2 * (n + T))
            new_k = k.new_empty(B, H, cap, D)
            new_v = v.new_empty(B, H, cap, D)
            if n:
                assert buf_k is not None and buf_v is not None  # n positions were written
                new_k[:, :, :n] = buf_k[:, :, :n]
                new_v[:, :, :n] = buf_v[:, :, :n]
            self._k[layer], self._v[layer] = buf_k, buf_v = new_k, new_v
        buf_k[:, :, n : n + T] = k
        buf_v[:, :, n : n + T] = v
        self._len[layer] = n + T
        return buf_k[:, :, : n + T], buf_v[:, :, : n + T]

    def layer(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        n, k, v = self._len[i], self._k[i], self._v[i]
        assert k is not None and v is not None, f"layer {i} has no keys yet"
        return k[:, :, :n], v[:, :, :n]

    def crop(self, length: int) -> None:
        """Keep the first `length` positions (absolute count, unlike transformers 5.x)."""
        assert 0 <= length <= self.seq_len, f"crop to {length} of {self.seq_len}"
        self._len = [length] * self.num_layers

    def drop(self, start: int, end: int, inv_freq: torch.Tensor) -> None:
        """Remove positions [start, end) and shift later keys back by end-start positions.

        Keys carry their RoPE rotation, and rotations compose: rotating by -(end-start) gives
        exactly the key a token at the new position would have had at that layer's input. This is
        what lets a long session slide its window without a hard reset (spec §4.1 positions stay
        contiguous).
        """
        n, d = self.seq_len, end - start
        assert 0 <= start <= end <= n, f"drop [{start}, {end}) of {n}"
        if d == 0:
            return
        for i in range(self.num_layers):
            k, v = self._k[i], self._v[i]
            assert k is not None and v is not None  # 0 <= start < end <= n: every layer has n positions
            tail_k = k[:, :, end:n]
            shift = torch.full((1, tail_k.shape[2]), -float(d), device=k.device)
            cos, sin = rope_cos_sin(shift, inv_freq, torch.float32)
            k[:, :, start : n - d] = apply_rope(tail_k.float(), cos, sin).to(k.dtype)
            v[:, :, start : n - d] = v[:, :, end:n].clone()
        self._len = [n - d] * self.num_layers

    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in self._k + self._v if t is not None)


@dataclass(frozen=True)
class Flavour:
    """What differs between the decoders served: Qwen2 (o-2.6's LLM: q/k/v biases) and Qwen3
    (V-4.5's: no biases, an RMSNorm over head_dim on every query and key head before RoPE)."""

    qkv_bias: bool = True
    qk_norm: bool = False


QWEN2 = Flavour(qkv_bias=True, qk_norm=False)
QWEN3 = Flavour(qkv_bias=False, qk_norm=True)


class Attention(nn.Module):
    def __init__(
        self, hidden: int, heads: int, kv_heads: int, bias: bool, head_dim: int | None = None, qk_norm_eps: float = 0
    ):
        """`head_dim` None: hidden // heads (Qwen2); `qk_norm_eps` > 0: Qwen3's q_norm / k_norm."""
        super().__init__()
        self.heads, self.kv_heads, self.head_dim = heads, kv_heads, head_dim or hidden // heads
        self.q_proj = nn.Linear(hidden, heads * self.head_dim, bias=bias)
        self.k_proj = nn.Linear(hidden, kv_heads * self.head_dim, bias=bias)
        self.v_proj = nn.Linear(hidden, kv_heads * self.head_dim, bias=bias)
        self.o_proj = nn.Linear(heads * self.head_dim, hidden, bias=False)
        if qk_norm_eps:
            self.q_norm = RMSNorm(self.head_dim, qk_norm_eps)
            self.k_norm = RMSNorm(self.head_dim, qk_norm_eps)
        self.qk_norm = bool(qk_norm_eps)

    def norm_qk(self, q: torch.Tensor, k: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """q [..., heads, head_dim], k [..., kv_heads, head_dim] before RoPE: Qwen3 normalises each
        head (identity for Qwen2)."""
        return (self.q_norm(q), self.k_norm(k)) if self.qk_norm else (q, k)

    def forward(self, x, cos, sin, layer_idx: int, cache, mask):
        """x [B, T, D]; mask: bool/additive [B|1, 1, T, S] or None (no masking)."""
        B, T, _ = x.shape
        q = self.q_proj(x).view(B, T, self.heads, self.head_dim)
        k = self.k_proj(x).view(B, T, self.kv_heads, self.head_dim)
        q, k = self.norm_qk(q, k)
        q, k = q.transpose(1, 2), k.transpose(1, 2)
        v = self.v_proj(x).view(B, T, self.kv_heads, self.head_dim).transpose(1, 2)
        q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)
        if cache is not None:
            k, v = cache.update(layer_idx, k, v)
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, enable_gqa=self.kv_heads != self.heads)
        return self.o_proj(out.transpose(1, 2).reshape(B, T, -1))


class MLP(nn.Module):
    def __init__(self, hidden: int, inter: int):
        super().__init__()
        self.gate_proj = nn.Linear(hidden, inter, bias=False)
        self.up_proj = nn.Linear(hidden, inter, bias=False)
        self.down_proj = nn.Linear(inter, hidden, bias=False)

    def forward(self, x):
        return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))


class DecoderLayer(nn.Module):
    def __init__(self, hidden, inter, heads, kv_heads, eps, bias, head_dim=None, qk_norm=False):
        super().__init__()
        self.self_attn = Attention(hidden, heads, kv_heads, bias, head_dim, eps if qk_norm else 0)
        self.mlp = MLP(hidden, inter)
        self.input_layernorm = RMSNorm(hidden, eps)
        self.post_attention_layernorm = RMSNorm(hidden, eps)

    def forward(self, x, cos, sin, layer_idx, cache, mask):
        x = x + self.self_attn(self.input_layernorm(x), cos, sin, layer_idx, cache, mask)
        return x + self.mlp(self.post_attention_layernorm(x))


def causal_mask(T: int, past: int, device) -> torch.Tensor | None:
    """Bool [1, 1, T, past+T]: query i (absolute past+i) sees keys <= past+i. None when T == 1."""
    if T == 1:
        return None
    q = torch.arange(past, past + T, device=device)[:, None]
    k = torch.arange(past + T, device=device)[None, :]
    return (k <= q)[None, None]


class DecoderModel(nn.Module):
    """`embed_tokens`, `layers.N`, `norm` — the names under `llm.model.` and `tts.model.`."""

    def __init__(
        self,
        vocab: int,
        hidden: int,
        inter: int,
        layers: int,
        heads: int,
        kv_heads: int,
        rope_theta: float,
        eps: float,
        qkv_bias: bool,
        head_dim: int | None = None,
        qk_norm: bool = False,
    ):
        super().__init__()
        self.embed_tokens = nn.Embedding(vocab, hidden)
        self.layers = nn.ModuleList(
            DecoderLayer(hidden, inter, heads, kv_heads, eps, qkv_bias, head_dim, qk_norm) for _ in range(layers)
        )
        self.norm = RMSNorm(hidden, eps)
        self.head_dim, self.rope_theta = head_dim or hidden // heads, rope_theta
        self.register_buffer("inv_freq", rope_inv_freq(self.head_dim, rope_theta), persistent=False)

    def init_buffers(self) -> None:
        self.inv_freq = rope_inv_freq(self.head_dim, self.rope_theta).to(self.norm.weight.device)

    def forward(
        self,
        inputs_embeds: torch.Tensor,
        position_ids: torch.Tensor | None = None,
        cache: KVCache | None = None,
        mask: torch.Tensor | None | str = "causal",
    ) -> torch.Tensor:
        """inputs_embeds [B, T, D] -> final hidden after `norm` [B, T, D].

        position_ids default to cache length + arange(T) (contiguous positions, spec §4.1);
        mask "causal" builds the causal mask over cache + new, None disables masking, a tensor is
        used as given.
        """
        B, T, _ = inputs_embeds.shape
        past = cache.seq_len if cache is not None else 0
        if position_ids is None:
            position_ids = torch.arange(past, past + T, device=inputs_embeds.device)[None].expand(B, T)
        if isinstance(mask, str):
            mask = causal_mask(T, past, inputs_embeds.device)
        cos, sin = rope_cos_sin(position_ids, self.inv_freq, inputs_embeds.dtype)
        h = inputs_embeds
        for i, layer in enumerate(self.layers):
            h = layer(h, cos, sin, i, cache, mask)
        return self.norm(h)


class CausalLM(nn.Module):
    """Qwen2ForCausalLM / Qwen3ForCausalLM layout: `model` + `lm_head` (state-dict prefix `llm.`)."""

    def __init__(self, cfg, flavour: Flavour = QWEN2):
        super().__init__()
        self.model = DecoderModel(
            cfg.vocab_size,
            cfg.hidden_size,
            cfg.intermediate_size,
            cfg.num_hidden_layers,
            cfg.num_attention_heads,
            cfg.num_key_value_heads,
            cfg.rope_theta,
            cfg.rms_norm_eps,
            qkv_bias=flavour.qkv_bias,
            head_dim=cfg.head_dim,
            qk_norm=flavour.qk_norm,
        )
        self.lm_head = nn.Linear(cfg.hidden_size, cfg.vocab_size, bias=False)

    def new_cache(self) -> KVCache:
        return KVCache(len(self.model.layers))

    def embed(self, input_ids: torch.Tensor) -> torch.Tensor:
        return self.model.embed_tokens(input_ids)
