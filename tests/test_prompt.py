"""Pure prompt-layout functions, table-tested."""

import numpy as np
import pytest

from omni.processing import prompt as P
from omni.processing.tokens import MARK_AUDIO, MARK_IMAGE


def test_sys_prompt_modes():
    ref = np.zeros(16000, np.float32)
    assert P.sys_prompt("omni", ref)["content"][0] == P.SYS_OMNI
    assert P.sys_prompt("omni", ref)["content"][2] == P.SYS_OMNI_SUFFIX
    assert P.sys_prompt("omni")["content"] == [P.SYS_OMNI]
    assert P.sys_prompt("audio_assistant")["content"] == [P.SYS_DEFAULT_VOICE, P.SYS_OMNI_SUFFIX]
    assert P.sys_prompt("voice_cloning", ref)["content"][0] == P.SYS_CLONE
    assert all(P.sys_prompt(m, ref)["role"] == "user" for m in P.SYS_MODES)
    with pytest.raises(ValueError, match="unknown system prompt mode"):
        P.sys_prompt("bogus")


@pytest.mark.parametrize("omni_input,sep", [(True, ""), (False, "\n")])
def test_collect_markers_and_join(omni_input, sep):
    from PIL import Image

    img = Image.new("RGB", (8, 8))
    a1, a2 = np.ones(10, np.float32), np.zeros(5, np.float32)
    col = P.collect([{"role": "user", "content": ["<unit>", img, a1, a2]}], omni_input)
    assert col.texts == [("user", sep.join(["<unit>", MARK_IMAGE, MARK_AUDIO, MARK_AUDIO]))]
    assert len(col.images) == 1 and len(col.audios) == 1 and col.audios[0].shape == (15,)


def test_tts_template_and_expansion():
    text = P.tts_template([("user", f"hi{MARK_IMAGE}")], add_generation_prompt=True)
    assert text == f"<|im_start|>user\nhi{MARK_IMAGE}<|im_end|>\n" + P.ASSISTANT_TTS_PREFIX
    assert P.expand_markers(text, ["<image>x</image>"], []).count("<image>x</image>") == 1
    with pytest.raises(ValueError, match="markers but"):
        P.expand_markers(text, [], [])


def test_bounds():
    assert P.bounds([5, 1, 1, 6, 0, 5, 1, 6], (5,), (6,)) == [(1, 3), (6, 7)]
    with pytest.raises(ValueError, match="unbalanced"):
        P.bounds([5, 1], (5,), (6,))


def test_turn_prefixes():
    assert P.AFTER_COMPLETED == "<|im_end|>\n<|im_start|>user\n"
    assert P.AFTER_INTERRUPTED == "<|tts_eos|><|im_end|>\n<|im_start|>user\n"
    assert P.GENERATE_PREFIX.endswith("<|spk_bos|><|spk|><|spk_eos|><|tts_bos|>")
