"""Model families: what each MiniCPM checkpoint served is made of, chosen from its config.json.

Owns: `Family` (the `model_type` and `version` of config.json it matches, its encoders and heads,
the LLM decoder flavour, its processor (how video becomes vision items), its prompt layout and the special tokens
it may lack) and `FAMILIES`, the registry: MiniCPM-o 2.6 and MiniCPM-V 4.5. Everything that
differs by family asks its `Family` (the loader: which module and tokens, whether a vocoder ships;
the CLI: which inputs a model takes; the golden checker: which cases), never `model_type` itself.
A third family is one more entry here plus its own modules (docs/ARCHITECTURE.md).
Does not own: the modules themselves (omni.model), prompt strings (omni.processing).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any


from .config import OmniConfig
from .model.decoder import QWEN2, QWEN3, Flavour
from .model.omni import MiniCPMO


class UnsupportedInput(ValueError):
    """An input or output the model's family does not have (audio on MiniCPM-V 4.5...)."""


@dataclass(frozen=True)
class Family:
    key: str  # short name in messages and options: "o-2.6", "v-4.5"
    title: str  # "MiniCPM-o 2.6"
    model_type: str  # config.json `model_type`
    version: float  # config.json `version`
    inputs: tuple[str, ...]  # what `omni chat` and sessions take: "text", "image", "video", "audio"
    encoders: tuple[str, ...]  # "vision", "audio": the towers before the LLM
    heads: tuple[str, ...]  # "text", "speech": what the model answers in
    decoder: Flavour  # the LLM: Qwen2 (biases) or Qwen3 (q/k norm, no biases)
    processor: str  # "images": a frame is an image; "packs": video packs of 1-6 frames (omni.processing.packs)
    prompt: str  # "minicpmo": chat + TTS templates (omni.processing.prompt); "qwen3": thinking switch (v45_prompt)
    session: str  # the realtime session class (omni.session.kinds): "streaming" (o-2.6's API), "packs" (V-4.5)
    absent_tokens: tuple[str, ...] = ()  # omni.processing.tokens.SpecialIds fields its vocabulary lacks

    def config(self, raw: dict[str, Any]) -> OmniConfig:
        """config.json -> `OmniConfig` with the towers this family has switched on."""
        return self.restrict(OmniConfig.from_dict(raw))

    def restrict(self, cfg: OmniConfig) -> OmniConfig:
        """`cfg` with only this family's towers on (config.json may leave the flags out)."""
        return cfg.replace(
            init_vision=cfg.init_vision and "vision" in self.encoders,
            init_audio=cfg.init_audio and "audio" in self.encoders,
            init_tts=cfg.init_tts and "speech" in self.heads,
        )

    def build(self, cfg: OmniConfig) -> MiniCPMO:
        """The state-dict module (on the current default device: `meta` for a strict load)."""
        return MiniCPMO(self.restrict(cfg), self.decoder)

    def require(self, what: str) -> None:
        """Raise `UnsupportedInput` naming the family unless it takes `what` in or gives it out."""
        if what not in self.inputs and what not in self.heads:
            raise UnsupportedInput(
                f"{self.title} has no {what} {'output' if what == 'speech' else 'input'}: it takes "
                f"{', '.join(self.inputs)} and answers in {' and '.join(self.heads)}"
            )


O26 = Family(
    key="o-2.6",
    title="MiniCPM-o 2.6",
    model_type="minicpmo",
    version=2.6,
    inputs=("text", "image", "audio"),
    encoders=("vision", "audio"),
    heads=("text", "speech"),
    decoder=QWEN2,
    processor="images",
    prompt="minicpmo",
    session="streaming",
)
V45 = Family(
    key="v-4.5",
    title="MiniCPM-V 4.5",
    model_type="minicpmv",
    version=4.5,
    inputs=("text", "image", "video"),
    encoders=("vision",),
    heads=("text",),
    decoder=QWEN3,
    processor="packs",
    prompt="qwen3",
    session="packs",
    absent_tokens=("audio_start", "audio_end", "spk_bos", "spk", "spk_eos", "tts_bos", "tts_eos"),
)
FAMILIES = (O26, V45)


def family_of(raw: dict[str, Any]) -> Family:
    """The family a config.json describes (`model_type`, `version`; o-2.6 when both are absent)."""
    model_type = raw.get("model_type", O26.model_type)
    try:
        version = float(raw.get("version", O26.version if model_type == O26.model_type else "nan"))
    except (TypeError, ValueError):
        version = float("nan")
    for f in FAMILIES:
        if f.model_type == model_type and f.version == version:
            return f
    known = "; ".join(f"{f.title} (model_type {f.model_type!r}, version {f.version})" for f in FAMILIES)
    raise ValueError(
        f"config.json has model_type {model_type!r}, version {raw.get('version')!r}: not a supported "
        f"model family. Supported: {known}"
    )


def family_of_dir(ckpt: str | Path) -> Family:
    """The family of a checkpoint directory, from its config.json alone (nothing loads)."""
    path = Path(ckpt) / "config.json"
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: not a checkpoint directory")
    return family_of(json.loads(path.read_text()))


def family_for(cfg: OmniConfig) -> Family:
    return family_of({"model_type": cfg.model_type, "version": cfg.version})


def read_config(raw: dict[str, Any]) -> OmniConfig:
    """config.json -> the `OmniConfig` of its family."""
    return family_of(raw).config(raw)
