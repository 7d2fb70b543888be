"""Streaming sessions: per-conversation state (state.py), the streaming_prefill/generate engine
(engine.py) and the streaming TTS driver (speech.py)."""
