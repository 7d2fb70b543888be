"""The batch engine: every session on a device driven as a program, their model ops run together
(engine.py), and which ops go into the next batch (schedule.py)."""
