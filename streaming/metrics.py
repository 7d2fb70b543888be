"""Prometheus metrics of one `omni serve` (prometheus-client), served at `GET /metrics`.

Owns the metric objects (in a registry of the app's own, so several apps in one process, as in
tests, do not share counts) and the scrape: engine gauges (queue depth, mean batch size per op
kind, sessions per engine) are read from the worker when Prometheus asks. Does not own: where the
values come from (the transports, the conversation, the responder and the engine handle call the
`observe_*` methods).
"""

from __future__ import annotations

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest

SECONDS = (0.01, 0.025, 0.05, 0.1, 0.2, 0.3, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 5.0, 10.0)


class Metrics:
    def __init__(self) -> None:
        r = self.registry = CollectorRegistry()
        self.sessions_active = Gauge("omni_sessions_active", "Sessions connected now", registry=r)
        self.sessions_total = Counter("omni_sessions", "Sessions started", ["transport"], registry=r)
        self.first_audio = Histogram(
            "omni_time_to_first_audio_seconds",
            "End of the user's turn to the first reply audio",
            buckets=SECONDS,
            registry=r,
        )
        self.unit_cost = Histogram(
            "omni_unit_cost_seconds",
            "Prefill of one 1-s user unit (audio + frame), as the conversation waits for it",
            buckets=SECONDS,
            registry=r,
        )
        self.model_step = Histogram(
            "omni_model_step_seconds",
            "One engine command (prefill, unit, reply step, ...) as the conversation waits for it",
            ["op"],
            buckets=SECONDS,
            registry=r,
        )
        self.underruns = Counter(
            "omni_playout_underruns",
            "Reply audio that came after the audio before it "
            "had played out (a listener playing from the first audio in real time)",
            registry=r,
        )
        self.replica_sessions = Counter(
            "omni_replica_sessions", "Sessions placed on each engine replica", ["replica"], registry=r
        )
        self.queue_depth = Gauge(
            "omni_engine_queue_depth", "Model ops waiting for a batch, per engine", ["replica"], registry=r
        )
        self.batch_size = Gauge(
            "omni_engine_batch_size",
            "Mean ops per batched forward since the engine started, per engine and op kind",
            ["replica", "kind"],
            registry=r,
        )
        self.engine_sessions = Gauge("omni_engine_sessions", "Sessions an engine holds", ["replica"], registry=r)

    # ---- what the service reports ---------------------------------------------------------------
    def session_started(self, transport: str) -> None:
        self.sessions_active.inc()
        self.sessions_total.labels(transport).inc()

    def session_ended(self) -> None:
        self.sessions_active.dec()

    def observe_step(self, op: str, seconds: float) -> None:
        self.model_step.labels(op).observe(seconds)

    # ---- the scrape ---------------------------------------------------------------------------------
    async def scrape(self, worker) -> tuple[bytes, str]:
        """The text exposition, engine gauges refreshed from `worker.stats()` first."""
        try:
            stats = await worker.stats()
        except Exception:  # noqa: BLE001 - a scrape must answer even while an engine is replaced
            stats = []
        for st in stats:
            name = st.get("replica", "?")
            self.queue_depth.labels(name).set(st.get("queue_depth", 0))
            self.engine_sessions.labels(name).set(st.get("sessions", 0))
            for kind, mean in st.get("mean_batch", {}).items():
                self.batch_size.labels(name, kind).set(mean)
        return generate_latest(self.registry), CONTENT_TYPE_LATEST
