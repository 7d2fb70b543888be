"""`--model` as a local folder or a Hugging Face hub id (`openbmb/MiniCPM-o-2_6`, `--revision`).

Owns: `resolve`, which turns the argument into a checkpoint folder: an existing folder wins; an
`org/name` id resolves through the Hugging Face cache (huggingface_hub's `snapshot_download`, the
cache layout `models--org--name/snapshots/<commit>/`), fetching only the files the loader reads,
with its progress bars; offline and not cached, one line saying what to run. Does not own: reading
the folder (omni.loader).
"""

from __future__ import annotations

import re
from pathlib import Path

# What omni.loader and the tokenizers read: configs (incl. quantize_config.json, the index),
# weights, the Qwen2 tokenizer, the vocoder and the TTS tokenizer; not the remote code, demo media.
ALLOW_PATTERNS = [
    "*.json",
    "*.safetensors",
    "merges.txt",
    "vocab.json",
    "assets/Vocos.pt",
    "assets/chattts_tokenizer/*",
]
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


class HubError(ValueError):
    """A model argument that names neither a folder nor a hub repo we can get."""


def is_hub_id(model: str) -> bool:
    return bool(_HUB_ID.match(model)) and not model.startswith((".", "/", "~"))


def resolve(
    model: str | Path,
    revision: str | None = None,
    cache_dir: str | Path | None = None,
    offline: bool | None = None,
) -> Path:
    """The checkpoint folder for `model`. `offline` None: huggingface_hub's HF_HUB_OFFLINE;
    `cache_dir` None: its HF_HUB_CACHE. Raises HubError (one line) or FileNotFoundError."""
    path = Path(model).expanduser()
    if path.is_dir():
        if revision is not None:
            raise HubError(f"--revision {revision} is for hub ids, and {model} is a local folder")
        return path
    text = str(model)
    if not is_hub_id(text):
        raise FileNotFoundError(f"{model}: no such checkpoint folder (and not a hub id like openbmb/MiniCPM-o-2_6)")
    from huggingface_hub import constants, snapshot_download
    from huggingface_hub.errors import (
        GatedRepoError,
        HfHubHTTPError,
        LocalEntryNotFoundError,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    offline = constants.HF_HUB_OFFLINE if offline is None else offline
    where = str(cache_dir or constants.HF_HUB_CACHE)
    rev = f" --revision {revision}" if revision else ""
    fetch = f"run `hf download {text}{rev}` where the hub is reachable (or pass a local folder)"
    try:
        folder = snapshot_download(
            text, revision=revision, cache_dir=cache_dir, local_files_only=offline, allow_patterns=ALLOW_PATTERNS
        )
    except GatedRepoError:
        raise HubError(f"{text} is gated: accept its terms on huggingface.co and log in (`hf auth login`)") from None
    except RepositoryNotFoundError:
        raise HubError(f"{text}: no such model on the Hugging Face hub (or it is private: `hf auth login`)") from None
    except RevisionNotFoundError:
        raise HubError(f"{text} has no revision {revision!r}") from None
    except LocalEntryNotFoundError:
        why = "downloads are off (HF_HUB_OFFLINE)" if offline else "the hub could not be reached"
        raise HubError(f"{text}{rev} is not in the Hugging Face cache ({where}) and {why}: {fetch}") from None
    except HfHubHTTPError as e:
        raise HubError(f"{text}: download failed ({str(e).splitlines()[0]}): {fetch}") from None
    out = Path(str(folder))
    if not (out / "config.json").is_file():
        raise HubError(f"{text}{rev}: the cached snapshot {out} has no config.json (incomplete): {fetch}")
    return out
