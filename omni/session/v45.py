"""`V45Session`: one MiniCPM-V 4.5 conversation on the batch engine: camera frames prefilled as
packs while they arrive, text and images in user turns, replies streamed as text.

Owns: the conversation's programs (omni.model.ops), the same command surface as o-2.6's `Session`
(`system_program`, `prefill_program`, `reply_program`, `forget_reply`; `unit_program` and
`interrupt_ms` refuse, naming the family) plus `frame_program` (a camera frame with its capture
time) and `cut_reply` (a reply cut to the text delivered), and the context's window. The context
is always what the official `chat()` would build for the conversation so far: consecutive user
inputs form one user turn whose parts (packs, texts, images) are joined by "\\n"; a pack is prefilled
when it has `pack_frames` frames (1-6), or sooner when other input follows; an earlier reply is
re-rendered as the template renders it (v45_text.render_run) once the next input shows which
form applies (the messages after the last user turn, v45_turns.Run). Barge-in keeps the text
the client was given (`cut_reply`). The sliding window drops the oldest complete turns (as o-2.6) and, within a long camera turn, its oldest packs.
Does not own: exact tokenisation (v45_text), the open parts' records (v45_turns), the token loop
(v45_reply), what slides out of a full context (v45_window), scheduling (omni.batch).
"""

from __future__ import annotations

from typing import Iterator, cast

import numpy as np
import torch
from PIL import Image

from ..family import UnsupportedInput
from ..loader import Omni
from ..model.ops import LLMForward, LLMSample, VisionEncode, drive, stream
from ..model.steps import Executor
from ..processing import packs
from ..processing.prompt import bounds, plain_text
from .caches import Caches, SoloCaches
from .prefill import PREFILL_CHUNK_TOKENS, InputTooLong, refuse_by_length
from .state import SessionState
from .v45_reply import FAST_PREFIX, THINK_PREFIX, ReplyOptions, V45Reply, decode
from .v45_text import Tail, render_run
from .v45_turns import DEFAULT_PACK_FRAMES, Clip, Run, Turn, check_frame
from .v45_window import BoundedContext

__all__ = ["DEFAULT_PACK_FRAMES", "ReplyOptions", "V45Session"]

DEFAULT_OPTIONS = ReplyOptions()  # frozen: one shared default
USER_OPEN, ASSISTANT_OPEN, CLOSE = "<|im_start|>user\n", "<|im_start|>assistant\n", "<|im_end|>\n"


class V45Session(BoundedContext):
    prefill_chunk_tokens = PREFILL_CHUNK_TOKENS

    def __init__(
        self,
        m: Omni,
        seed: int | None = None,
        max_cache_tokens: int | None = None,
        caches: Caches | None = None,
        reply_reserve_tokens: int = 0,
    ):
        """As o-2.6's `Session`: `max_cache_tokens` the context budget (oldest turns, then a
        camera turn's oldest packs, slide out), `caches` a pool slot in an engine, and a bounded
        cache keeps `reply_reserve_tokens` free for the next reply when prefilling."""
        if m.family.session != "packs":
            raise ValueError(f"{m.family.title} is not a MiniCPM-V 4.5 checkpoint: use omni.session.engine.Session")
        self.m, self.seed, self.max_cache_tokens = m, seed, max_cache_tokens
        self.caches: Caches = caches if caches is not None else SoloCaches(m)
        self.reply_reserve_tokens = reply_reserve_tokens
        self._run = Executor.of(m).one
        self.reset()

    def reset(self) -> None:
        gen = torch.Generator(device=self.m.device)
        if self.seed is not None:
            gen.manual_seed(self.seed)
        else:
            gen.seed()
        self.state = SessionState(self.caches.llm(), generator=gen)
        self.tail = Tail()  # the context's text since its last added token
        self.turn: Turn | None = None  # the open user turn
        self.clip = Clip()  # its frames waiting for a pack, its time origin
        self.run: Run | None = None  # the messages after the last user turn (rendered by what follows)
        self._reply: V45Reply | None = None  # the latest reply, while nothing followed it
        self.stills = 0  # images so far: the next one's image id (chat() numbers a request's images)
        self.last_reply_end: str | None = None
        self._active: Iterator | None = None

    @property
    def title(self) -> str:
        return self.m.family.title

    # ---- run alone ----------------------------------------------------------------------------
    def set_system(self, text: str | None = None) -> None:
        drive(self.system_program("default", None, text), self._run)

    def append_frame(
        self, image: Image.Image, t_s: float, pack_frames: int = DEFAULT_PACK_FRAMES, origin_s: float | None = None
    ) -> None:
        drive(self.frame_program(image, t_s, pack_frames, origin_s), self._run)

    def prefill(self, msg: dict, max_tokens: int | None = None) -> None:
        drive(self.prefill_program(msg, max_tokens), self._run)

    def generate(self, options=DEFAULT_OPTIONS) -> Iterator[tuple[str, np.ndarray]]:
        program = self.reply_program(options)
        self._close_active()
        self._active = cast(Iterator, stream(program, self._run))
        return self._active

    def reply_step(self) -> tuple[str, np.ndarray] | None:
        if self._active is None:
            return None
        item = next(self._active, None)
        if item is None:
            self._active = None
        return item

    # ---- programs: what a batch engine drives ----------------------------------------------------
    def system_program(self, mode: str = "default", ref_audio=None, text: str | None = None, tools: str = ""):
        """A new conversation, with `text` as its system message (none by default, as `chat()`).
        `mode` (o-2.6's system prompts) has no meaning here; a voice clip and tools are refused."""
        if ref_audio is not None:
            self.m.family.require("audio")
        if tools:
            raise UnsupportedInput(f"function calling is not available for {self.title} sessions")
        self.reset()
        return self._feed_program(f"<|im_start|>system\n{text}{CLOSE}" if text else "", "system")

    def unit_program(self, audio_16k, frame=None):
        self.m.family.require("audio")

    def frame_program(
        self, image: Image.Image, t_s: float, pack_frames: int = DEFAULT_PACK_FRAMES, origin_s: float | None = None
    ):
        """A camera frame captured at `t_s` seconds (any clock; `origin_s` on it: the turn's time
        origin when this is the turn's first frame, default `t_s`). It waits for its pack."""
        check_frame(image, pack_frames)
        tid = self.clip.temporal_id(t_s, origin_s)
        self._close_active()
        return self._frame(image, float(t_s), tid, origin_s, pack_frames)

    def _frame(self, image, t_s, tid, origin_s, pack_frames):
        if self.clip.size not in (None, image.size):  # one size per pack (the processor's rule)
            yield from self._flush()
        self.clip.add(image, t_s, tid, origin_s)
        if len(self.clip.frames) >= pack_frames:
            yield from self._flush()

    def prefill_program(self, msg: dict, max_tokens: int | None = None):
        """A message: a user's (text and images, one part of the open user turn), an assistant's
        (history the client adds) or a system message. Checked at once: a bad one changes nothing."""
        role, content = msg.get("role"), msg.get("content")
        if msg.get("turn"):
            raise UnsupportedInput(f"function-calling turns are not available for {self.title} sessions")
        if role not in ("user", "assistant", "system"):
            raise ValueError(f"message role must be user, assistant or system, got {role!r}")
        parts = [content] if isinstance(content, str) else list(content or [])
        texts = [p for p in parts if isinstance(p, str)]
        for p in parts:
            if isinstance(p, np.ndarray):
                self.m.family.require("audio")
            elif not isinstance(p, (str, Image.Image)):
                raise TypeError(f"message content of type {type(p).__name__} is not text or a PIL image")
        if not parts:
            raise ValueError("an empty message")
        if role != "user" and len(texts) != len(parts):
            raise ValueError(f"an {role} message holds text only")
        refuse_by_length(self.m.tokenizer, texts, max_tokens)
        n = sum(len(self.m.tokenizer.encode(t, add_special_tokens=False)) for t in texts)
        if max_tokens is not None and n > max_tokens:
            raise InputTooLong(f"the item is {n} tokens long; the limit is {max_tokens} (the server's max_item_tokens)")
        self._close_active()
        return self._user_message(parts) if role == "user" else self._message(role, "\n".join(texts))

    def _user_message(self, parts: list):
        yield from self._flush()
        ip, strips, sizes, text = self.m.image_processor, [], [], []
        for p in parts:
            if isinstance(p, str):
                text.append(p)
                continue
            items = packs.process(ip, [p])
            strips += items.strips
            sizes.append(items.tgt_sizes)
            text.append(ip.placeholder(p.size, self.stills))  # numbered over the session's images
            self.stills += 1
        vision = VisionEncode(strips, torch.cat(sizes, 0)) if strips else None
        yield from self._user_part("\n".join(text), vision)

    def _message(self, role: str, text: str):
        """Program: an assistant or system message: it joins the run after the last user turn
        (closing the turn), rendered when the next input shows how."""
        yield from self._flush()
        self._conclude()
        if self.turn is not None:
            self.run, self.turn, self.clip = Run([(role, text)], close=CLOSE), None, Clip()
        elif self.run is not None:
            self.run.entries.append((role, text))
        else:
            self.run = Run([(role, text)])

    def reply_program(self, options=DEFAULT_OPTIONS, trace: dict | None = None):
        """Program of a reply: outputs (text delta, no audio) as `chat(stream=True)` streams them."""
        o = ReplyOptions.of(options, self.title)
        if o.max_new_tokens < 1:
            raise ValueError(f"max_new_tokens must be >= 1, got {o.max_new_tokens}")
        if not (self.state.started or self.clip.frames or self.run or self._reply):
            raise RuntimeError("prefill a user turn (text or camera frames) before generate")
        self._close_active()
        return self._reply_program(o)

    def _reply_program(self, o: ReplyOptions):
        m, st, tok = self.m, self.state, self.m.tokenizer
        yield from self._flush()
        self._conclude()
        self._rewind()
        run = self.run.copy() if self.run is not None else Run()
        close = CLOSE if self.turn is not None else run.close
        prefix = close + render_run(run.entries, True) + ASSISTANT_OPEN + (THINK_PREFIX if o.thinking else FAST_PREFIX)
        max_new_tokens = self._reply_room(len(self.tail.plan(tok, prefix).ids), o.max_new_tokens)
        params, undo = o.params, []

        def room_made() -> None:  # (positions are final now) what `forget` restores; where the run starts
            turn = self.turn.copy() if self.turn is not None else None
            run_copy = self.run.copy() if self.run is not None else None
            undo.append((st.cache_len, turn, self.tail.copy(), self.clip, run_copy))
            pre = self.tail.plan(tok, close)
            run.tail = self.tail.copy()
            run.tail.commit(tok, pre)
            run.start, run.close = self.tail.start + len(pre.all_ids), ""

        out, _, _ = yield from self._feed(
            prefix, "reply", sample=LLMSample(params, (), st.generator), reserve=False, on_room=room_made
        )
        assert out is not None, "the prefix is never empty: its forward draws the first token"
        reply = V45Reply(undo[0], st.cache_len)
        self._reply, self.run, self.turn, self.clip, self.last_reply_end = reply, run, None, Clip(), None
        if o.thinking:  # the official stream starts with the prompt's open think block
            reply.text.append(THINK_PREFIX)
            yield THINK_PREFIX, np.zeros(0, np.float32)
        self.last_reply_end = yield from decode(m, st, out, params, max_new_tokens, reply)

    @property
    def reply_usage(self) -> tuple[int, int] | None:
        """(context tokens before the reply's first sample, tokens sampled so far) of the latest
        reply, None before one starts or once input followed it."""
        r = self._reply
        return None if r is None else (r.prompt_tokens, len(r.ids))

    # ---- after a reply ------------------------------------------------------------------------
    def interrupt_ms(self, played_ms: float) -> int:
        raise UnsupportedInput(f"{self.title} has no speech output: cut a reply by the text delivered (`cut`)")

    def cut_reply(self, chars: int | None = None) -> int:
        """Stop the reply; the context keeps its first `chars` characters of text (None: all it
        produced), rendered when the next input comes. Returns the cache length."""
        if chars is not None and (not isinstance(chars, int) or chars < 0):
            raise ValueError(f"characters delivered must be a whole number >= 0, got {chars!r}")
        self._close_active()
        self._conclude(chars)
        return self.state.cache_len

    def forget_reply(self) -> int:
        """Stop the reply and take it out of the context: as before it (its user turn still open)."""
        self._close_active()
        r = self._reply
        if r is not None:
            n, self.turn, self.tail, self.clip, self.run = r.undo
            self.state.crop(n)
            self._reply = None
        return self.state.cache_len

    def _conclude(self, chars: int | None = None) -> None:
        """The latest reply joins the run as an assistant message (its first `chars` characters)."""
        r, run = self._reply, self.run
        if r is not None:
            assert run is not None, "a reply belongs to the run after the last user turn"
            text = "".join(r.text)
            # re-rendered from text: a media token the model wrote would open an image with none in it
            run.entries.append(("assistant", plain_text(text if chars is None else text[:chars])))
            self._reply = None

    def _rewind(self) -> None:
        """Back to where the run starts (what follows is rendered afresh, in the form now known)."""
        run = self.run
        if run is not None and run.start is not None:
            assert run.tail is not None, "a run in the cache keeps its tail"
            self.state.crop(run.start)
            self.tail = run.tail.copy()

    # ---- feeding the context -------------------------------------------------------------------
    def _flush(self):
        """Program: the frames waiting, as one pack (one resampler output, its time ids)."""
        if not self.clip.frames:
            return
        frames, ids = self.clip.take()
        items = packs.process(self.m.image_processor, frames, [ids], max_slice_nums=1, use_image_id=False)
        vision = VisionEncode(items.strips, items.tgt_sizes, items.temporal_ids)
        at, fed = yield from self._user_part(items.placeholders[0], vision, is_pack=True)
        s = self.m.ids  # the pack is the fed text's end
        first, last = len(fed) - 1 - fed[::-1].index(s.image_start), len(fed) - 1 - fed[::-1].index(s.image_end)
        assert self.turn is not None, "a pack is part of the open user turn"
        self.turn.packs.append([at + first, at + last + 1])

    def _user_part(self, text: str, vision: VisionEncode | None, is_pack: bool = False):
        """Program: one part of the user turn; the first opens it, after the run before it (as
        history) -> (cache position of the ids fed, the ids)."""
        self._conclude()
        if self.turn is not None:
            _, at, fed = yield from self._feed("\n" + text, "user", vision, slide_packs=is_pack)
            self.turn.parts += 1
            return at, fed
        self._rewind()
        run = self.run
        before = run.close + render_run(run.entries, False) if run is not None else ""
        pre = len(self.tail.plan(self.m.tokenizer, before).ids)  # the ids before `<|im_start|>user`
        self._slide_window(pre)
        _, at, fed = yield from self._feed(before + USER_OPEN + text, "user", vision, slide_packs=is_pack)
        self.run, self.turn = None, Turn(at + pre, parts=1)
        self.state.turn_starts.append(at + pre)
        return at, fed

    def _feed_program(self, text: str, kind: str):
        if text:
            yield from self._feed(text, kind)

    def _feed(self, text, kind, vision=None, sample=None, slide_packs=False, reserve=True, on_room=None):
        """Program: append `text` (its placeholders filled by `vision`) so the cache holds the
        conversation's text tokenised whole -> (the last position's `LLMOut`, the cache position
        of the first id fed, the ids fed)."""
        m, st = self.m, self.state
        tail = self.tail
        assert st.cache_len == tail.start + len(tail.ids), "the tail is what the cache ends with"
        plan = tail.plan(m.tokenizer, text)
        self._make_room(len(plan.ids) - (len(tail.ids) - plan.keep), slide_packs, reserve)
        if on_room is not None:
            on_room()
        keep = tail.start + plan.keep
        if keep < st.cache_len:  # the tail tokenises differently with the new text
            st.crop(keep)
            tail.cropped(plan.keep)
        feats = (yield vision) if vision is not None else None
        s = m.ids
        ib = bounds(plan.ids, (s.image_start, s.slice_start), (s.image_end, s.slice_end))
        embeds = m.net.embed(torch.tensor([plan.ids], device=m.device), ib, feats)[0] if ib else None
        out, step = None, self.prefill_chunk_tokens
        try:
            for i in range(0, len(plan.ids), step):  # in chunks: bounded attention memory
                last = i + step >= len(plan.ids)
                chunk = sample if last else None
                if embeds is not None:
                    out = yield LLMForward(st.llm_cache, embeds=embeds[i : i + step], sample=chunk)
                else:
                    out = yield LLMForward(st.llm_cache, ids=plan.ids[i : i + step], sample=chunk)
        except BaseException:
            st.crop(keep)  # none of the piece stays
            raise
        st.started = True
        st.record(kind, keep)
        tail.commit(m.tokenizer, plan)
        return out, keep, plan.ids

    def _close_active(self) -> None:
        if self._active is not None:
            close = getattr(self._active, "close", None)
            if close is not None:
                close()
            self._active = None
