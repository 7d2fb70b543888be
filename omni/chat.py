"""Offline chat: messages (text, PIL images, 16-kHz audio) -> text and optional 24-kHz speech.

The whole prompt goes through the processor path of the official `chat()` (spec §3, §4.7): markers
joined with "\\n", the TTS template whenever audio is present (or asked for), image slicing with
image ids, chunk-masked offline audio encoding, one LLM prefill, then token-by-token decoding.
Voice cloning is in context (spec §3.4, §5.2): `with_voice` puts a reference clip into a
`get_sys_prompt` system message ahead of the turn, as the streaming session's `set_system` does.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from .loader import Omni
from .processing import prompt as P
from .sampling import GREEDY, SamplingParams, choose

# Reference-clip limits: the server's (streaming/gateway/codecs.py MIN_REFERENCE_S /
# MAX_REFERENCE_S, and the 1-30 s check of omni.session.engine.system_program), duplicated here
# because omni/ imports nothing from streaming/. Spec §5.2: <=30 s; shorter than 1 s gives the
# model too little of the voice.
MIN_REFERENCE_S = 1.0
MAX_REFERENCE_S = 30.0
REFERENCE_RATE_HZ = 16000  # the model's audio input rate (preprocessor sampling_rate)
VOICE_MODE = "audio_assistant"  # the streaming session's mode: cloned voice with a clip


def read_voice_clip(path: str | Path) -> np.ndarray:
    """A voice-clone reference clip (any file soundfile reads: WAV, FLAC, OGG...) -> float32 mono
    at 16 kHz, 1-30 s long. Down-mixed by channel mean and resampled with soxr HQ, as
    `librosa.load(path, sr=16000)` and the server's reference decoder do.

    Raises FileNotFoundError (no such file) or ValueError (not audio, or too short / too long),
    each with a one-line message naming the file.
    """
    import librosa
    import soundfile as sf

    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"voice clip {str(path)!r} does not exist")
    if not path.is_file():
        raise ValueError(f"voice clip {str(path)!r} is not a file")
    try:
        info = sf.info(str(path))  # the length first: a long file is refused before it is read
        seconds = info.frames / info.samplerate
        if MIN_REFERENCE_S <= seconds <= MAX_REFERENCE_S:
            x, rate = sf.read(str(path), dtype="float32", always_2d=True)
    except Exception as e:  # soundfile raises LibsndfileError, RuntimeError, TypeError...
        why = " ".join(str(e).split()) or type(e).__name__
        raise ValueError(f"voice clip {str(path)!r} is not a readable audio file ({why})") from None
    if not MIN_REFERENCE_S <= seconds <= MAX_REFERENCE_S:
        raise ValueError(
            f"voice clip {str(path)!r} is {seconds:.2f} s long; it must be {MIN_REFERENCE_S:g} to {MAX_REFERENCE_S:g} s"
        )
    x = x.mean(axis=1) if x.shape[1] > 1 else x[:, 0]
    if rate != REFERENCE_RATE_HZ:
        x = librosa.resample(x, orig_sr=rate, target_sr=REFERENCE_RATE_HZ, res_type="soxr_hq")
    return np.ascontiguousarray(x, dtype=np.float32)


def with_voice(msgs: list, ref_16k: np.ndarray, mode: str = VOICE_MODE) -> list:
    """`msgs` preceded by the `get_sys_prompt(ref_audio, mode)` system message, so the spoken
    reply clones the voice of `ref_16k` (16-kHz mono, 1-30 s)."""
    seconds = len(ref_16k) / REFERENCE_RATE_HZ
    if not MIN_REFERENCE_S <= seconds <= MAX_REFERENCE_S:
        raise ValueError(
            f"reference clip is {seconds:.2f} s of 16 kHz audio; it must be "
            f"{MIN_REFERENCE_S:g} to {MAX_REFERENCE_S:g} s"
        )
    return [P.sys_prompt(mode, ref_16k), *msgs]


@dataclass
class Prepared:
    """A tokenised prompt with its media, ready for `Omni.net.embed`."""

    text: str
    input_ids: torch.Tensor  # [1, L]
    image_bounds: list[tuple[int, int]]
    audio_bounds: list[tuple[int, int]]
    spk_bounds: list[tuple[int, int]]
    strips: list[torch.Tensor] = field(default_factory=list)
    tgt_sizes: torch.Tensor | None = None
    mels: list[torch.Tensor] = field(default_factory=list)


def prepare(
    m: Omni,
    msgs,
    use_tts_template: bool | None = None,
    omni_input: bool = False,
    max_slice_nums: int | None = None,
    use_image_id: bool | None = None,
) -> Prepared:
    from .processing.audio import audio_placeholder, log_mel_pieces

    col = P.collect(msgs, omni_input)
    tts = use_tts_template if use_tts_template is not None else bool(col.audios)
    if tts:
        text = P.tts_template(col.texts, add_generation_prompt=True)
    else:
        text = m.tokenizer.apply_chat_template(
            [{"role": r, "content": c} for r, c in col.texts], tokenize=False, add_generation_prompt=True
        )
        assert isinstance(text, str)  # tokenize=False: the prompt string
    use_id = m.pre.use_image_id if use_image_id is None else use_image_id
    strips, tgt_sizes, img_ph = [], None, []
    if col.images:
        strips, tgt_sizes, img_ph = m.image_processor.process(
            col.images, max_slice_nums=max_slice_nums, use_image_id=use_id
        )
    aud_ph = [audio_placeholder(len(a), chunk_input=m.config.chunk_input) for a in col.audios]
    text = P.expand_markers(text, img_ph, aud_ph)
    ids = m.tokenizer.encode(text, add_special_tokens=False)
    s = m.ids
    return Prepared(
        text=text,
        input_ids=torch.tensor([ids]),
        image_bounds=P.bounds(ids, (s.image_start, s.slice_start), (s.image_end, s.slice_end)),
        audio_bounds=P.bounds(ids, (s.audio_start,), (s.audio_end,)),
        spk_bounds=P.bounds(ids, (s.spk_bos,), (s.spk_eos,)),
        strips=strips,
        tgt_sizes=tgt_sizes,
        # A clip over 30 s is encoded as separate <=30-s items (official split); their embeddings
        # follow each other in the same placeholder runs.
        mels=[torch.from_numpy(piece) for a in col.audios for piece in log_mel_pieces(a, m.pre)],
    )


@torch.inference_mode()
def embed_prepared(m: Omni, p: Prepared) -> torch.Tensor:
    vision = None
    if p.strips:
        assert p.tgt_sizes is not None  # `prepare` sets strips and tgt_sizes together
        vision = m.net.vision_features(p.strips, p.tgt_sizes)
    audio = m.net.audio_features(p.mels) if p.mels else []
    return m.net.embed(p.input_ids.to(m.device), p.image_bounds, vision, p.audio_bounds, audio)


@dataclass
class ChatResult:
    text: str
    ids: list[int]
    prompt_logits: torch.Tensor | None  # [L, V] when asked for
    spk_hidden: torch.Tensor | None  # [n_spk, H] last-layer hidden at <|spk|>
    wav_24k: np.ndarray | None


@torch.inference_mode()
def chat(
    m: Omni,
    msgs,
    max_new_tokens: int = 256,
    sampling: SamplingParams = GREEDY,
    seed: int | None = None,
    generate_audio: bool = False,
    use_tts_template: bool | None = None,
    return_prompt_logits: bool = False,
    max_slice_nums: int | None = None,
) -> ChatResult:
    """Answer `msgs` (list of {"role", "content": [str | PIL.Image | np.ndarray 16 kHz]}).

    With `seed`, one generator drives the LLM draws and then the speech draws, so a seeded reply
    (text and `wav_24k`) is reproducible, as in a seeded streaming session."""
    if max_new_tokens < 1:
        raise ValueError("max_new_tokens must be >= 1")
    p = prepare(
        m, msgs, use_tts_template=use_tts_template or (True if generate_audio else None), max_slice_nums=max_slice_nums
    )
    gen = torch.Generator(device=m.device).manual_seed(seed) if seed is not None else None  # draws run on the device
    llm = m.net.llm
    cache = llm.new_cache()
    hidden = llm.model(embed_prepared(m, p), cache=cache)
    logits = llm.lm_head(hidden[0] if return_prompt_logits else hidden[0, -1:])
    spk = hidden[0, [s for s, _ in p.spk_bounds]] if p.spk_bounds else None
    out: list[int] = []
    step_logits = logits[-1]
    while True:
        # Official chat() feeds inputs_embeds only, so the penalty sees generated ids alone.
        tok = choose(step_logits, torch.tensor(out, dtype=torch.long), sampling, gen)
        out.append(tok)
        if tok in m.ids.terminators or len(out) >= max_new_tokens:
            break
        h = llm.model(llm.embed(torch.tensor([[tok]], device=m.device)), cache=cache)
        step_logits = llm.lm_head(h[0, -1])
    text = decode_answer(m, out)
    wav = None
    if generate_audio:
        from .model.tts import MultinomialSampler
        from .model.tts_loop import synthesize

        assert m.vocos is not None, "generate_audio needs a checkpoint with the TTS"
        assert spk is not None, "generate_audio: the TTS template puts <|spk|> in the prompt"
        wav, _ = synthesize(m.net.tts, m.vocos, m.tts_tokenizer, spk[:1], text, sampler=MultinomialSampler(gen))
    return ChatResult(
        text=text, ids=out, prompt_logits=logits if return_prompt_logits else None, spk_hidden=spk, wav_24k=wav
    )


def decode_text(m: Omni, ids: list[int]) -> str:
    """The official `_decode_text` (spec §4.5): every id 0 dropped (a quirk kept for parity: id 0
    is "!" in the Qwen vocabulary), a leading BOS and a trailing terminator stripped, other
    special tokens kept."""
    ids = [i for i in ids if i != 0]
    bos_token = m.tokenizer.bos_token
    bos = m.tokenizer.convert_tokens_to_ids(bos_token) if isinstance(bos_token, str) and bos_token else None
    if ids and ids[0] == bos:
        ids = ids[1:]
    if ids and ids[-1] in m.ids.terminators:
        ids = ids[:-1]
    text = m.tokenizer.decode(ids)
    assert isinstance(text, str)  # one sequence of ids: one string
    return text


def decode_answer(m: Omni, ids: list[int]) -> str:
    """Text of a chat answer: `decode_text` with `<|tts_eos|>` removed (spec §3.4)."""
    return decode_text(m, ids).replace("<|tts_eos|>", "")
