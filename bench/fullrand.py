"""Full-size MiniCPM-o 2.6 shapes with random weights, for benches (no checkpoint needed).

`full_random` builds configs/full.toml straight on the device (meta -> device, no checkpoint).
Tokenizers: the embedded tiny ones (omni/assets/tiny). Their ids are all < the full vocab sizes, so
every id they produce is a valid embedding row; the config's TTS special ids are set to the tiny
ChatTTS tokenizer's ([spk_emb], audio BOS, [Etts]; shapes unchanged), and the LM head rows past the
tiny tokenizer's plain tokens are zeroed, so sampling only draws ids the tokenizer can decode and
never a terminator: replies run to their token cap, which makes timings comparable. `layers` cuts
every tower to that many layers (a CPU run of the same path); `quantize` int8/int4 rounds the LLM's
linears after the float build (so the float model exists first: for load memory see bench/loader.py).
"""

from __future__ import annotations

import torch


def full_config(layers: int | None) -> dict:
    """configs/full.toml as a config.json dict, the TTS special ids set to the tiny ChatTTS
    tokenizer's, every tower cut to `layers` layers when given."""
    from omni.embedded import REPO, TINY_ASSETS, read_model_config
    from omni.processing import tts_text as T
    from omni.processing.tokens import load_tts_tokenizer

    raw = read_model_config(REPO / "configs" / "full.toml")
    tts_tok = load_tts_tokenizer(TINY_ASSETS)
    spk, etts = tts_tok.convert_tokens_to_ids([T.SPK_EMB, T.ETTS])
    raw["tts_config"] = dict(raw["tts_config"], spk_emb_token_id=spk, text_eos_token_id=etts)
    if layers:
        raw["num_hidden_layers"] = layers
        raw["vision_config"] = dict(raw["vision_config"], num_hidden_layers=layers)
        raw["audio_config"] = dict(raw["audio_config"], encoder_layers=layers)
        raw["tts_config"]["num_hidden_layers"] = layers
    return raw


def full_random(device: str, dtype: torch.dtype, layers: int | None, quantize: str | None = None):
    from omni.config import OmniConfig
    from omni.model.omni import MiniCPMO

    cfg = OmniConfig.from_dict(full_config(layers))
    with torch.device("meta"):
        net = MiniCPMO(cfg)
    net = net.to(dtype).to_empty(device=device)  # allocated in the target dtype only
    g = torch.Generator(device=device).manual_seed(0)
    with torch.no_grad():
        for name, p in net.named_parameters():
            if p.dim() == 1 and ("norm" in name or "ln" in name):
                p.fill_(1.0)
            else:
                p.normal_(0.0, 0.02, generator=g)
    net.init_buffers()
    net.tts.float()  # the official TTS runs in fp32 (spec §8.3)
    from omni.quantized import quantize_modules, weights_info

    weights = weights_info(net, dtype, None, None)
    if quantize:  # the LLM's linears rounded in place, one at a time (their float copy dropped)
        weights = quantize_modules(net, quantize, dtype, device)
    return bundle(net, device, dtype, weights)


def bundle(net, device: str, dtype: torch.dtype, weights: dict | None):
    """An `Omni` around a full-size `net` with the embedded tiny tokenizers; the LM head rows past
    the tokenizer's plain tokens zeroed (sampling draws only ids it decodes, never a terminator)."""
    from omni.config import PreprocessorConfig
    from omni.embedded import TINY_ASSETS
    from omni.loader import Omni
    from omni.model.vocos import Vocos
    from omni.processing.image import ImageProcessor
    from omni.processing.tokens import load_tokenizer, load_tts_tokenizer, special_ids

    tok, tts_tok = load_tokenizer(TINY_ASSETS), load_tts_tokenizer(TINY_ASSETS)
    with torch.no_grad():
        net.llm.lm_head.weight[tok.vocab_size :] = 0
    pre = PreprocessorConfig()
    return Omni(
        net=net.eval(),
        vocos=Vocos().to(device).float().eval(),
        config=net.config,
        pre=pre,
        tokenizer=tok,
        ids=special_ids(tok),
        tts_tokenizer=tts_tok,
        image_processor=ImageProcessor(pre),
        checkpoint_dir=None,
        device=torch.device(device),
        dtype=dtype,
        weights=weights,
    )
