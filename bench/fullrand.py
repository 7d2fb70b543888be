"""Full-size MiniCPM-o 2.6 shapes with random weights, for benches (no checkpoint needed).

`full_random` builds configs/full.toml straight on the device (meta -> device, no checkpoint).
Tokenizers: the embedded tiny ones (omni/assets/tiny). Their ids are all < the full vocab sizes, so
every id they produce is a valid embedding row; the config's TTS special ids are set to the tiny
ChatTTS tokenizer's ([spk_emb], audio BOS, [Etts]; shapes unchanged), and the LM head rows past the
tiny tokenizer's plain tokens are zeroed, so sampling only draws ids the tokenizer can decode and
never a terminator: replies run to their token cap, which makes timings comparable. `layers` cuts
every tower to that many layers (a CPU run of the same path).
"""

from __future__ import annotations

import torch


def full_random(device: str, dtype: torch.dtype, layers: int | None):
    from omni.config import OmniConfig, PreprocessorConfig
    from omni.embedded import REPO, TINY_ASSETS, read_model_config
    from omni.loader import Omni
    from omni.model.omni import MiniCPMO
    from omni.model.vocos import Vocos
    from omni.processing.image import ImageProcessor
    from omni.processing.tokens import load_tokenizer, load_tts_tokenizer, special_ids
    from omni.processing import tts_text as T

    raw = read_model_config(REPO / "configs" / "full.toml")
    tok, tts_tok = load_tokenizer(TINY_ASSETS), load_tts_tokenizer(TINY_ASSETS)
    spk, etts, bos = tts_tok.convert_tokens_to_ids([T.SPK_EMB, T.ETTS, T.PTTS])
    raw["tts_config"] = dict(raw["tts_config"], spk_emb_token_id=spk, text_eos_token_id=etts)
    if layers:
        raw["num_hidden_layers"] = layers
        raw["vision_config"] = dict(raw["vision_config"], num_hidden_layers=layers)
        raw["audio_config"] = dict(raw["audio_config"], encoder_layers=layers)
        raw["tts_config"]["num_hidden_layers"] = layers
    cfg = OmniConfig.from_dict(raw)
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
        net.llm.lm_head.weight[tok.vocab_size :] = 0  # never sample an id the tokenizer cannot decode
    net.init_buffers()
    net.tts.float()  # the official TTS runs in fp32 (spec §8.3)
    vocos = Vocos().to(device).float().eval()
    pre = PreprocessorConfig()
    return Omni(
        net=net.eval(),
        vocos=vocos,
        config=cfg,
        pre=pre,
        tokenizer=tok,
        ids=special_ids(tok),
        tts_tokenizer=tts_tok,
        image_processor=ImageProcessor(pre),
        checkpoint_dir=None,
        device=torch.device(device),
        dtype=dtype,
    )
