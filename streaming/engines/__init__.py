"""The engine owners: where the batch engines live and how their clients reach them.

A client holds an engine session through one handle type (`handle.EngineHandle`), opened by
`open_session()` on whichever worker runs the engines. Where the engines run: threads in this process
(`worker.EngineWorker`), one model process per lane (`procs.ProcessWorker`, whose far side is
`model_process.py`), or Ray actors (`rayworker.RayWorker`, far side `ray_replica.py`); how many,
by memory, and the model they load: `lanes.py`. Only plain data crosses to a process or actor.

Kept free of imports: a model process imports this package before anything else.
"""
