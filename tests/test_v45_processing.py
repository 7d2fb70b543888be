"""MiniCPM-V 4.5's text and video side: the model card's frame recipe (reproduced on the golden
clip, on long clips, and on real video files decoded by PyAV), the pack processor's text rule and
refusals, the chat messages' refusals, and the streamed text (one step's shapes, chunked == whole,
earlier output never changes)."""

import json

import av
import numpy as np
import pytest
from PIL import Image

from omni.processing import packs, video
from omni.processing import v45_prompt as V
from omni.processing.tokens import MARK_IMAGE


def test_the_frame_recipe_reproduces_the_golden_clip(golden_v45_dir):
    cases = json.loads((golden_v45_dir / "cases.json").read_text())
    rec, spec = cases["inputs"]["video_recipe"], cases["meta"]["spec"]["video"]
    p = video.plan(rec["clip"]["n_frames"], rec["clip"]["fps"], spec["choose_fps"], spec["force_packing"])
    assert p.frame_index.tolist() == rec["chosen_frame_index"]
    assert p.temporal_ids == rec["temporal_ids"]


def test_long_clips_are_packed_and_capped():
    p = video.plan(100 * 30, 30.0)  # 100 s at the default 5 fps: 500 frames > 180
    assert p.packing == 3 and len(p.frame_index) == 500 and len(p.temporal_ids) == 167
    assert p.temporal_ids[0] == [1, 3, 5] and p.temporal_ids[-1][-1] == 999  # frames at 0.1, 0.3... s
    p = video.plan(3600 * 25, 25.0)  # an hour: 180 packs of 3
    assert (p.packing, len(p.temporal_ids), len(p.frame_index)) == (3, 180, 540)
    assert video.plan(2, 25.0).frame_index.tolist() == [1]  # shorter than a step: still one frame
    with pytest.raises(ValueError, match="1 to 6"):
        video.plan(30, 10.0, force_packing=7)


def _clip(path, codec, n=30, fps=10):
    src = [np.full((72, 96, 3), (i * 8, 255 - i * 8, (i * 37) % 256), np.uint8) for i in range(n)]
    with av.open(str(path), "w") as c:
        s = c.add_stream(codec, rate=fps)
        s.width, s.height, s.pix_fmt = 96, 72, {"png": "rgb24", "ffv1": "bgr0"}[codec]
        for a in src:
            for pkt in s.encode(av.VideoFrame.from_ndarray(a, format="rgb24")):
                c.mux(pkt)
        for pkt in s.encode():
            c.mux(pkt)
    return src


@pytest.mark.parametrize("codec, suffix", [("png", ".avi"), ("ffv1", ".mkv")])  # frame count known / unknown
def test_a_video_file_gives_the_recipes_frames(tmp_path, codec, suffix):
    src = _clip(tmp_path / f"clip{suffix}", codec)
    frames, p = video.read_video(tmp_path / f"clip{suffix}", 3, 6)
    assert p.temporal_ids == [[1, 5, 8, 11, 15, 18], [21, 25, 28]]
    assert all(np.array_equal(np.asarray(f), src[i]) for f, i in zip(frames, p.frame_index.tolist()))


def test_a_frames_folder_and_bad_video_inputs(tmp_path):
    for i in range(4):
        Image.new("RGB", (28, 28), (i, 0, 0)).save(tmp_path / f"f{i}.png")
    frames, p = video.read_frames(tmp_path, fps=2.0, force_packing=2)
    assert [f.getpixel((0, 0))[0] for f in frames] == [0, 1, 2, 3] and p.temporal_ids == [[0, 5], [10, 15]]
    (tmp_path / "x.mp4").write_text("not a video")
    with pytest.raises(ValueError, match="not a readable video"):
        video.read_video(tmp_path / "x.mp4")
    with pytest.raises(FileNotFoundError):
        video.read_video(tmp_path / "missing.mp4")
    with pytest.raises(ValueError, match="no image files"):
        video.read_frames(tmp_path / "empty" if (tmp_path / "empty").mkdir() is None else tmp_path)


def test_packed_frames_share_the_first_frames_placeholder(tiny_v45):
    text = "a\n" + "\n".join([MARK_IMAGE] * 3) + "\nq"
    assert packs.expand(text, ["<A>", "", ""]) == "a\n<A>\nq"  # the "\n" before packed frames go
    assert packs.expand(text, ["<A>", "", "<B>"]) == "a\n<A>\n<B>\nq"
    with pytest.raises(ValueError, match="2 images"):
        packs.expand(text, ["<A>", ""])
    small, big = Image.new("RGB", (28, 28)), Image.new("RGB", (56, 28))
    with pytest.raises(ValueError, match="one size"):
        packs.process(tiny_v45.image_processor, [small, big], [[1, 2]])
    with pytest.raises(ValueError, match="do not cover"):
        packs.process(tiny_v45.image_processor, [small, small], [[1]])


def test_messages_the_official_chat_refuses():
    with pytest.raises(ValueError, match="first message"):
        V.collect([{"role": "assistant", "content": "hi"}])
    with pytest.raises(ValueError, match="no audio input"):
        V.collect([{"role": "user", "content": [np.zeros(16000, np.float32)]}])
    with pytest.raises(ValueError, match="role"):
        V.collect([{"role": "system", "content": "x"}])
    c = V.collect([{"role": "user", "content": [Image.new("RGB", (8, 8)), "q"]}], system_prompt="s")
    assert c.messages == [{"role": "system", "content": "s"}, {"role": "user", "content": MARK_IMAGE + "\nq"}]


def test_streamed_text_shapes_chunked_equals_whole_and_never_changes(tiny_v45):
    tok = tiny_v45.tokenizer
    g = np.random.default_rng(0)
    plain = [i for i in range(1, len(tok)) if not {"\n", "\ufffd"} & set(tok.decode([i]))]  # whole characters
    newline = tok.encode("?\n", add_special_tokens=False)
    ids = [int(i) for i in g.choice(plain, 40)] + newline + [int(i) for i in g.choice(plain, 20)]
    d = V.TextDeltas(tok)
    deltas = [d.push([i]) for i in ids]
    assert all(isinstance(x, str) for x in deltas) and d.push([]) == ""  # one step: a str, maybe ""
    text = "".join(deltas) + d.end()
    cut = ids.index(newline[-1]) + 1
    whole = tok.decode(ids[:cut]) + tok.decode(ids[cut:])  # the cache restarts after a newline
    for t in ("<|im_end|>", "<|endoftext|>"):
        whole = whole.replace(t, "")
    assert text == whole  # chunked == whole
    shown = ""
    for x in deltas:  # earlier output never changes: every delta only appends
        shown += x
        assert whole.startswith(shown)
