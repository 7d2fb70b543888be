"""Shared decoder: one step's shapes, chunked prefill == whole, earlier cache never changes, crop."""

import torch

from omni.config import OmniConfig
from omni.model.decoder import CausalLM, KVCache


def _llm(seed=0):
    torch.manual_seed(seed)
    cfg = OmniConfig(
        hidden_size=128,
        intermediate_size=256,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        vocab_size=97,
    )
    return CausalLM(cfg).eval(), cfg


@torch.no_grad()
def test_one_step_shapes():
    llm, cfg = _llm()
    cache = llm.new_cache()
    h = llm.model(llm.embed(torch.tensor([[1, 2, 3]])), cache=cache)
    assert h.shape == (1, 3, cfg.hidden_size)
    k, v = cache.layer(0)
    assert k.shape == (1, cfg.num_key_value_heads, 3, cfg.head_dim) == v.shape
    assert cache.seq_len == 3


@torch.no_grad()
def test_chunked_prefill_equals_whole():
    llm, _ = _llm()
    ids = torch.randint(0, 97, (1, 30))
    whole = llm.lm_head(llm.model(llm.embed(ids), cache=llm.new_cache()))
    cache = llm.new_cache()
    parts = [llm.lm_head(llm.model(llm.embed(ids[:, s : s + 7]), cache=cache)) for s in range(0, 30, 7)]
    assert torch.allclose(torch.cat(parts, 1), whole, atol=1e-5)


@torch.no_grad()
def test_earlier_cache_never_changes_and_crop_rolls_back():
    llm, _ = _llm()
    cache = llm.new_cache()
    llm.model(llm.embed(torch.randint(0, 97, (1, 10))), cache=cache)
    k0 = cache.layer(1)[0].clone()
    for _ in range(100):  # forces several reallocations of the growing buffer
        llm.model(llm.embed(torch.randint(0, 97, (1, 1))), cache=cache)
    assert torch.equal(cache.layer(1)[0][:, :, :10], k0)
    ids = torch.randint(0, 97, (1, 5))
    cache.crop(10)
    a = llm.model(llm.embed(ids), cache=cache)
    cache2 = KVCache(2)
    for i in range(2):
        k, v = cache.layer(i)
        cache2.update(i, k[:, :, :10].clone(), v[:, :, :10].clone())
    b = llm.model(llm.embed(ids), cache=cache2)
    assert torch.allclose(a, b, atol=1e-6)


@torch.no_grad()
def test_drop_shifts_later_keys_to_their_new_positions():
    llm, _ = _llm()
    a, b, c = (torch.randint(0, 97, (1, n)) for n in (6, 9, 5))
    cache = llm.new_cache()
    llm.model(llm.embed(torch.cat([a, b, c], 1)), cache=cache)
    cache.drop(6, 15, llm.model.inv_freq)
    fresh = llm.new_cache()
    llm.model(llm.embed(torch.cat([a, c], 1)), cache=fresh)
    assert cache.seq_len == fresh.seq_len == 11
    # Layer 0 keys/values depend only on token and position, so they must equal a fresh prefill.
    k, v = cache.layer(0)
    fk, fv = fresh.layer(0)
    assert torch.allclose(k, fk, atol=1e-5) and torch.allclose(v, fv, atol=1e-6)
    # Decoding continues at position 11 with a cache of the right length.
    h = llm.model(llm.embed(torch.tensor([[3]])), cache=cache)
    assert h.shape[1] == 1 and cache.seq_len == 12
