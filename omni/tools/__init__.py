"""Function calling for MiniCPM-o (its Qwen2.5 tool format): the tools a reply may call, their
prompt text, the grammar that keeps every call well-formed, and the reply's calls.

Modules: spec.py (the plain values a reply is asked with), prompt.py (the official template's
strings), grammar.py (llguidance: schema checks, the per-row token masks), calls.py (a call's
tokens -> its name and argument deltas), reply.py (the programs a reply runs to make calls),
turns.py (whole turns prefilled into a streaming context: assistant items, results, tool lists).
"""
