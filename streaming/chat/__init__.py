"""Chat completions, the engines' second client beside realtime sessions (no wire format here).

request.py: the typed request the gateway parses into; o26.py / v45.py: what a request means for
each model family (the engine plan, the prompt arguments, refusals naming the family); stops.py:
stop strings over streamed text; complete.py: one request's run on an engine session, admitted
and freed like a realtime session (run_v45.py: a MiniCPM-V 4.5 plan's commands and its reply's
thinking split off). gateway/chat_completions.py is the wire.
"""
