"""`Session`: the official streaming API (streaming_prefill / streaming_generate, spec §4) on one
shared `Omni` bundle, with all per-conversation state in a `SessionState`.

Owns: the prompt rules of a streaming conversation (first call through the TTS template, turn
prefixes after completed / interrupted replies, TDM units), media encoding per fragment (vision
with max_slice_nums=1 and no image ids, audio through the incremental Whisper encoder), the
barge-in rollback (`interrupt` / `interrupt_ms`), and the sliding window of a long session
(`max_cache_tokens`: oldest complete turns dropped before a new user turn). Does not own: model
math, prompt strings (processing.prompt), the 3-token LLM chunk loop (llm.py), the TTS loop
(speech.py), the values its calls take and give (prefill.py, reply.py), where its caches come
from (caches.py), scheduling (omni.batch).

Alone or batched: every operation is a program (omni.model.ops) that yields model ops. The plain
methods (`prefill`, `generate`, ...) run their program at once, op by op; a batch engine
(omni.batch) drives the `*_program`s of many sessions and runs their ops together. Sessions share
nothing but the read-only `Omni` bundle; a session in a batch engine keeps its LLM cache and TTS
state in pool slots (`caches`), which cannot grow, so prefills and replies check the room first.
"""

from __future__ import annotations

from typing import Generator, Iterator, cast

import numpy as np
import torch

from ..loader import Omni
from ..model.ops import AudioEncode, LLMForward, VisionEncode, drive, pull, stream
from ..model.pool import ContextFull, SlotCache
from ..model.steps import Executor
from ..model.tts import GreedySampler, MultinomialSampler
from ..model.tts_loop import SpeechParams
from ..processing import prompt as P
from ..processing.audio import audio_placeholder
from ..tools import turns
from ..tools.reply import ToolReply
from .bargein import BargeIn
from .caches import Caches, SoloCaches
from .llm import LLM_TOKENS_PER_CALL, llm_chunks
from .prefill import PREFILL_CHUNK_TOKENS, STREAM_MAX_SLICE_NUMS, InputTooLong, PrefillRecord, fragment_mel
from .prefill import refuse_by_length
from .whole_turns import prefill_turn
from .reply import GenerateOptions, ReplyRecord, after_first_op, until_done
from .speech import SpeechOptions, stream_speech
from .state import ReplyMark, SessionState

__all__ = ["GenerateOptions", "InputTooLong", "PrefillRecord", "Session", "SoloCaches"]

DEFAULT_OPTIONS = GenerateOptions()  # frozen: one shared default
Reply = Generator[tuple[str, np.ndarray], None, None]  # (text delta, 24-kHz float32 audio) pieces


class Session(BargeIn):
    prefill_chunk_tokens = PREFILL_CHUNK_TOKENS

    def __init__(
        self,
        m: Omni,
        seed: int | None = None,
        max_cache_tokens: int | None = None,
        caches: Caches | None = None,
        reply_reserve_tokens: int = 0,
    ):
        """`max_cache_tokens`: LLM cache budget; before a new user turn is prefilled, the oldest
        complete turns are dropped until the cache fits (the system prompt and the latest turn
        always stay). None keeps everything (the official behaviour). `caches`: where the LLM
        cache and TTS states come from (default `SoloCaches`). A bounded cache (a pool slot) also
        slides when a prefill would not leave `reply_reserve_tokens` free for the next reply."""
        self.m = m
        self.seed = seed
        self.max_cache_tokens = max_cache_tokens
        self.caches: Caches = caches if caches is not None else SoloCaches(m)
        self.reply_reserve_tokens = reply_reserve_tokens
        self._run = Executor.of(m).one
        self.reset()

    def reset(self) -> None:
        gen = torch.Generator(device=self.m.device)  # multinomial draws on the logits' device (CUDA needs this)
        if self.seed is not None:  # per-session seed: sampled replies are reproducible per session
            gen.manual_seed(self.seed)
        else:
            gen.seed()
        self.state = SessionState(self.caches.llm(), generator=gen)
        self._reply: ReplyRecord | None = None
        self.last_reply_end: str | None = None  # "eos" | "max_tokens" | "max_speech" once a reply ends
        self._active: Reply | None = None

    # ---- run alone: each program driven at once -----------------------------------------------
    def set_system(
        self, mode: str = "omni", ref_audio: np.ndarray | None = None, text: str | None = None, tools: str = ""
    ) -> PrefillRecord:
        """Start a new conversation with the system prompt of `get_sys_prompt` or a custom text."""
        return drive(self.system_program(mode, ref_audio, text, tools), self._run)

    def append_unit(self, audio_16k: np.ndarray, frame=None) -> PrefillRecord:
        """One TDM unit (spec §3.5): `<unit>` + frame + audio, or the audio alone."""
        return drive(self.unit_program(audio_16k, frame), self._run)

    def prefill(self, msg: dict) -> PrefillRecord:
        """Official streaming_prefill of one message (spec §4.2)."""
        return drive(self.prefill_program(msg), self._run)

    def generate(
        self, options: GenerateOptions = DEFAULT_OPTIONS, trace: dict | None = None
    ) -> Iterator[tuple[str, np.ndarray]]:
        """Official streaming_generate (spec §4.4): yields (text delta, 24-kHz float32 audio)."""
        program = self.reply_program(options, trace)
        self._close_active()
        self._active = cast(Reply, stream(program, self._run))  # a generator function (ops types it Iterator)
        return self._active

    def reply_step(self) -> tuple[str, np.ndarray] | None:
        """The next (text, audio) of the reply `generate` started, or None once it is over (or
        was interrupted)."""
        if self._active is None:
            return None
        item = next(self._active, None)
        if item is None:
            self._active = None
        return item

    # ---- programs (omni.model.ops): what a batch engine drives ---------------------------------
    def system_program(
        self, mode: str = "omni", ref_audio: np.ndarray | None = None, text: str | None = None, tools: str = ""
    ):
        """`tools`: the template's `# Tools` section (omni.tools.prompt), at the system turn's end."""
        if ref_audio is not None and not 1 <= len(ref_audio) / self.m.pre.sampling_rate <= 30:
            raise ValueError("reference clip must be 1-30 s of 16 kHz audio")
        self.reset()
        if text is None:
            msg = P.sys_prompt(mode, ref_audio)
        else:
            msg = {"role": "user", "content": [text] + ([ref_audio] if ref_audio is not None else [])}
        if tools:
            msg["content"] = [*msg["content"], tools]
        return self.prefill_program(msg)

    def unit_program(self, audio_16k: np.ndarray, frame=None):
        content = ["<unit>", frame, audio_16k] if frame is not None else [audio_16k]
        return self.prefill_program({"role": "user", "content": content})

    def prefill_program(self, msg: dict, max_tokens: int | None = None):
        """Program of `prefill` (checks the message at once, so a bad one fails before any op).
        `max_tokens`: a message that tokenizes longer is refused (`InputTooLong`)."""
        self._close_active()
        self._reply = None  # new input follows the reply: it can no longer be cut or forgotten
        m, st = self.m, self.state
        if msg.get("turn"):  # a whole turn (omni.tools.turns: assistant item, tool results, tools)
            text, opens = turns.render(msg, st.new_user_msg, self._turn_prefix())
            refuse_by_length(m.tokenizer, [text], max_tokens)
            ids = m.tokenizer.encode(text, add_special_tokens=False)
            if max_tokens is not None and len(ids) > max_tokens:
                raise InputTooLong(f"the item is {len(ids)} tokens long; the limit is {max_tokens}")
            return prefill_turn(self, text, ids, opens, msg["role"])
        refuse_by_length(m.tokenizer, [c for c in msg["content"] if isinstance(c, str)], max_tokens)
        col = P.collect([msg], omni_input=True)
        role, content = col.texts[0]
        first = not st.started
        opens_turn = not first and st.new_user_msg and role == "user"
        prefix = self._turn_prefix() if opens_turn else ""
        if first:
            text = P.tts_template([(role, content)], add_generation_prompt=False)
        else:
            text = prefix + content
        strips, tgt, img_ph = [], None, []
        if col.images:
            strips, tgt, img_ph = m.image_processor.process(
                col.images, max_slice_nums=STREAM_MAX_SLICE_NUMS, use_image_id=False
            )
        text = P.expand_markers(
            text, img_ph, [audio_placeholder(len(a), chunk_input=m.config.chunk_input) for a in col.audios]
        )
        mels = [fragment_mel(m, a) for a in col.audios]
        ids = m.tokenizer.encode(text, add_special_tokens=first)
        if max_tokens is not None and len(ids) > max_tokens:
            raise InputTooLong(
                f"the item is {len(ids)} tokens long; the limit is {max_tokens} (the server's max_item_tokens)"
            )
        return self._prefill(role, first, opens_turn, prefix, text, ids, strips, tgt, mels)

    def _prefill(self, role, first, opens_turn, prefix, text, ids, strips, tgt, mels):
        m, st = self.m, self.state
        if opens_turn:
            self._slide_window()
        self._make_room(len(ids))  # before any state changes: a refusal leaves the session as it was
        if opens_turn:
            st.new_user_msg = False
            # The turn starts after the close of the previous reply (`<|im_end|>\n`), so a dropped
            # turn takes its reply's close with it and the next turn opens right after the system.
            close = m.tokenizer.encode(prefix[: len(prefix) - len(P.USER_OPEN)], add_special_tokens=False)
            st.turn_starts.append(st.cache_len + len(close))
        if role in ("system", "assistant"):
            st.new_user_msg = True
            st.audio_cache.clear()
        s = m.ids
        ib = P.bounds(ids, (s.image_start, s.slice_start), (s.image_end, s.slice_end))
        ab = P.bounds(ids, (s.audio_start,), (s.audio_end,))
        vision = (yield VisionEncode(strips, tgt)) if strips else None
        audio = []
        for mel in mels:  # one clip through the streaming encoder in one call (full attention within it)
            audio.append((yield AudioEncode(mel, st.audio_cache)))
        if first:  # the reference/system audio must not stay in the user-audio cache
            st.audio_cache.clear()
        input_ids = torch.tensor([ids], device=m.device)
        embeds = m.net.embed(input_ids, ib, vision, ab, audio)
        start = st.cache_len
        try:
            # In chunks: a chunk's attention takes chunk x context memory, not the whole
            # message's square (the math is the same causal attention over cache + chunk).
            step = self.prefill_chunk_tokens
            for i in range(0, embeds.shape[1], step):
                out = yield LLMForward(st.llm_cache, embeds=embeds[0, i : i + step])
        except BaseException:
            st.crop(start)  # a chunk failed: none of the message stays
            raise
        st.started = True
        st.record(role, start)
        return PrefillRecord(
            text, input_ids, ib, ab, tgt, mels, vision, embeds, out.hidden, (start, st.cache_len)
        )  # no LM head here: a unit needs no logits

    def _turn_prefix(self) -> str:
        st = self.state
        if not st.llm_generated:
            return P.USER_OPEN
        return P.AFTER_COMPLETED if st.llm_generate_completed else P.AFTER_INTERRUPTED

    def reply_program(self, options: GenerateOptions = DEFAULT_OPTIONS, trace: dict | None = None):
        """Program of `generate`: outputs (text delta, 24-kHz float32 audio)."""
        if not self.state.started:
            raise RuntimeError("prefill a system prompt and user input before generate")
        self._reply = None  # a new reply: the last one can no longer be cut or forgotten
        return self._reply_program(options, trace)

    def _reply_program(self, o: GenerateOptions, trace: dict | None):
        m, st = self.m, self.state
        ids = m.tokenizer.encode(P.GENERATE_PREFIX, add_special_tokens=False)
        max_new_tokens = self._reply_room(len(ids), o.max_new_tokens)
        ((spk_pos, _),) = P.bounds(ids, (m.ids.spk_bos,), (m.ids.spk_eos,))
        reply = ReplyRecord(
            st.cache_len + len(ids), len(ids), (st.new_user_msg, st.llm_generated, st.llm_generate_completed)
        )

        def begin() -> None:  # once the first op ran: a reply closed before that never started
            st.new_user_msg, st.llm_generated, st.llm_generate_completed = True, True, False
            st.audio_cache.clear()
            self._reply = reply

        llm_done: list[bool] = []
        self.last_reply_end = None
        tools = ToolReply(m, st, o.tools, o.sampling) if o.tools is not None else None
        if tools is not None and tools.forced:  # a forced call is the whole reply: no text, no speech
            yield from after_first_op(tools.calls(ids, max_new_tokens), begin)
            self.last_reply_end = "max_tokens" if tools.cut else "eos"
            return
        chunks = until_done(
            after_first_op(llm_chunks(m, st, ids, max_new_tokens, o.sampling, trace, tools), begin), llm_done
        )
        if not o.generate_audio:
            while (ch := (yield from pull(chunks))) is not None:
                yield ch.text, np.zeros(0, np.float32)
            yield from self._calls(tools, reply, max_new_tokens)
            self.last_reply_end = "eos" if st.llm_generate_completed else "max_tokens"
            return
        sampler = MultinomialSampler(st.generator) if o.sampling.do_sample else GreedySampler()
        assert m.vocos is not None and m.tts_tokenizer is not None, "speech needs a checkpoint with the TTS"
        rate = m.vocos.dims.sample_rate_hz
        opts = SpeechOptions(
            low_latency=o.low_latency,
            max_speech_samples=None if o.max_speech_s is None else int(o.max_speech_s * rate),
            params=SpeechParams(force_no_stop=o.force_no_stop),
        )
        speech = stream_speech(
            m.net.tts, m.vocos, m.tts_tokenizer, chunks, spk_pos, sampler, self.caches.tts_state, opts, trace
        )
        while (piece := (yield from pull(speech))) is not None:
            reply.samples += piece.wav.shape[-1]
            reply.marks.append(ReplyMark(reply.samples, piece.cache_len))
            if trace is not None:
                n = trace.setdefault("_yields", 0)
                trace[f"yield.{n}.wav"], trace[f"yield.{n}.text"] = piece.wav.detach().cpu(), piece.text
                trace["_yields"] = n + 1
            yield piece.text, piece.wav.detach().float().cpu().numpy()
        yield from self._calls(tools, reply, max_new_tokens)  # after the speech: it stops at the call
        budget = opts.max_speech_samples
        if st.llm_generate_completed:
            self.last_reply_end = "eos"  # the LLM's terminator
        elif budget is not None and reply.samples >= budget:
            self.last_reply_end = "max_speech"
        elif llm_done:
            self.last_reply_end = "max_tokens"
        else:
            self.last_reply_end = "eos"  # the TTS drew its EOS code first

    def _calls(self, tools: ToolReply | None, reply: ReplyRecord, max_new_tokens: int):
        """Program: the calls the reply's text stopped at (`<tool_call>`), if it did."""
        if tools is not None and tools.opened is not None:
            left = max_new_tokens - (self.state.cache_len - reply.prefix_end)
            yield from tools.calls([tools.opened], max(left, 1))

    # ---- a bounded cache -----------------------------------------------------------------------
    def _make_room(self, n: int) -> None:
        """A pool slot cannot grow: slide the oldest complete turns out (even mid-turn) until `n`
        more positions plus a reply's reserve fit, or refuse with `ContextFull`."""
        cache = self.state.llm_cache
        need = n + self.reply_reserve_tokens
        if not isinstance(cache, SlotCache) or need <= cache.free:
            return
        self._drop_turns(max(cache.capacity - need, 0))
        if need > cache.free:
            raise ContextFull(
                f"the conversation context is full: {n} more positions (plus {self.reply_reserve_tokens} "
                f"kept for the reply) do not fit in the {cache.capacity}-position context of "
                f"this session, which holds {cache.seq_len}; end the turn sooner or start a new "
                "conversation"
            )

    def _reply_room(self, prefix: int, max_new_tokens: int) -> int:
        """max_new_tokens, cut to what fits in a bounded cache (the LLM overshoots its cap by 2)."""
        cache = self.state.llm_cache
        if not isinstance(cache, SlotCache):
            return max_new_tokens
        need = prefix + max_new_tokens + LLM_TOKENS_PER_CALL - 1
        if need > cache.free:
            self._drop_turns(max(cache.capacity - need, 0))
        fits = cache.free - prefix - (LLM_TOKENS_PER_CALL - 1)
        if fits < 1:
            raise ContextFull(
                f"the conversation context is full ({cache.seq_len} of {cache.capacity} "
                "positions): no room for a reply; start a new conversation"
            )
        return min(max_new_tokens, fits)

    @property
    def reply_usage(self) -> tuple[int, int] | None:
        """(context tokens before the reply's first sample, tokens sampled so far) of the latest
        reply, None before one starts: every sampled token but the newest is in the cache."""
        r = self._reply
        return None if r is None else (r.prefix_end, max(0, self.state.cache_len - r.prefix_end + 1))

    def _slide_window(self) -> None:
        """Drop the oldest complete turns while the cache is over budget (never mid-turn)."""
        st = self.state
        if self.max_cache_tokens is None or st.cache_len <= self.max_cache_tokens:
            return
        self._drop_turns(self.max_cache_tokens)

    def _drop_turns(self, budget: int) -> None:
        dropped = self.state.drop_oldest_turns(budget, self.m.net.llm.model.inv_freq)
        if dropped and self._reply is not None:  # the latest reply is never dropped: shift it
            self._reply.shift(dropped)

    def _close_active(self) -> None:
        if self._active is not None:
            self._active.close()
            self._active = None
