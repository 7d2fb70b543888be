"""Regenerate the fake-microphone WAVs in tests/assets/speech/ (espeak-ng + sox, 48 kHz s16 mono).

    python tests/e2e/make_speech.py

one_turn.wav   LEAD_S of silence (the call connects meanwhile), one question, 12 s silence
two_turns.wav  question, GAP_S of silence (shorter than a long reply), a second question, 12 s silence
voice_ref.wav  a ~7 s clip in another espeak voice, uploaded as the reference voice
"""

from __future__ import annotations

import subprocess
import tempfile
from pathlib import Path

OUT = Path(__file__).resolve().parents[1] / "assets" / "speech"
GAP_S = 2.0
LEAD_S = 2.0  # Chromium starts the file at getUserMedia; the call must be up before speech
Q1 = "Hello there. Can you tell me what you see on my camera right now?"
Q2 = "Wait, stop. Tell me a short story about a red fox instead."
REF = (
    "This is my own voice. I am reading a short passage so that the assistant can learn "
    "how I sound, and answer me in the same voice."
)


def _say(text: str, path: Path, voice: str = "en-us") -> None:
    raw = path.with_suffix(".raw.wav")
    subprocess.run(["espeak-ng", "-v", voice, "-s", "150", "-w", str(raw), text], check=True)
    subprocess.run(["sox", str(raw), "-r", "48000", "-c", "1", "-b", "16", str(path), "norm", "-3"], check=True)


def _silence(seconds: float, path: Path) -> None:
    subprocess.run(
        ["sox", "-n", "-r", "48000", "-c", "1", "-b", "16", str(path), "trim", "0", str(seconds)], check=True
    )


def _concat(parts: list[Path], out: Path) -> None:
    subprocess.run(["sox", *map(str, parts), str(out)], check=True)


def main() -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as d:
        t = Path(d)
        _say(Q1, t / "q1.wav")
        _say(Q2, t / "q2.wav")
        _say(REF, t / "ref.wav", voice="en-gb")
        _silence(LEAD_S, t / "lead.wav")
        _silence(GAP_S, t / "gap.wav")
        _silence(12.0, t / "tail.wav")
        _concat([t / "lead.wav", t / "q1.wav", t / "tail.wav"], OUT / "one_turn.wav")
        _concat([t / "lead.wav", t / "q1.wav", t / "gap.wav", t / "q2.wav", t / "tail.wav"], OUT / "two_turns.wav")
        subprocess.run(["sox", str(t / "ref.wav"), "-r", "24000", str(OUT / "voice_ref.wav")], check=True)
    for p in sorted(OUT.glob("*.wav")):
        print(p.name, subprocess.run(["soxi", "-D", str(p)], capture_output=True, text=True).stdout.strip(), "s")


if __name__ == "__main__":
    main()
