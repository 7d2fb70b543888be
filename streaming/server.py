"""`omni serve`: one port for the web client, `/healthz`, WebSocket `/v1/realtime` and WebRTC
signalling (`POST /v1/realtime/calls`, SDP offer in, answer out).

Owns: building the process-wide objects (settings, the model worker, the session manager, the
shared VAD network and its thread, the metrics) and the HTTP routes (`/healthz`, `/readyz`,
`/metrics`: open like healthz; the realtime routes under `/v1/`); auth; TLS. Does not own: protocol
handling (gateway/), conversations (session/).
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import signal
import ssl
import sys
import time
from pathlib import Path

from aiohttp import web

from .gateway.origin import host_allowed, origin_allowed
from .engines.lanes import checkpoint_dir, load_model, weights_of  # noqa: F401 - tests and benches import these here
from .settings import ServerSettings, load_settings

log = logging.getLogger("omni.server")
REPO = Path(__file__).resolve().parent.parent
WEB_CLIENT = REPO / "web_client"
REALTIME_ROUTES = ("/v1/realtime", "/v1/realtime/calls")  # what a page could drive a session through
GUARDED_ROUTES = REALTIME_ROUTES + ("/v1/chat/completions", "/v1/models")  # pages of other origins: refused
SHUTDOWN_CLOSE_S = 3.0  # sessions get this long to close themselves at shutdown, then they are cut
WORKER_CLOSE_S = 4.0  # then the model processes this long to stop, then they are killed


def build_app(settings: ServerSettings, omni, embedded: bool, worker=None, plan=None) -> web.Application:
    """`worker`: a running worker the caller owns (and closes); default: lane threads on `omni`,
    owned and closed by the app. `plan`: the lanes.LanePlan it was built by (shown in /healthz)."""
    from .engines.lanes import model_family
    from .gateway.chat_completions import register as register_chat
    from .gateway.ws import realtime_ws
    from .metrics import Metrics
    from .session.manager import SessionManager
    from .turn.vad import SileroVAD
    from .engines.worker import EngineSpec, EngineWorker

    app = web.Application(
        middlewares=[_origin_middleware, _auth_middleware], client_max_size=settings.max_message_bytes
    )
    app["settings"], app["embedded"] = settings, embedded
    app["worker"] = worker or EngineWorker(omni, EngineSpec.from_settings(settings))
    app["owns_worker"] = worker is None
    app["lane_plan"] = plan
    # Admission by what the engines hold (their KV pools), within the operator's cap.
    app["manager"] = SessionManager(min(settings.max_sessions, app["worker"].capacity), settings.idle_timeout_s)
    app["vad"] = SileroVAD()
    app["conversations"] = set()
    app["metrics"] = Metrics()
    # the checkpoint's folder name only: /healthz is open, and a path says too much about the host
    app["model_name"] = "embedded-tiny" if embedded else _model_name(settings.model or "")
    app["weights"] = omni.weights if omni is not None and omni.weights else weights_of(settings)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/metrics", metrics)
    app.router.add_get("/v1/realtime", realtime_ws)
    app["family"], app["started_at"] = model_family(settings, omni), int(time.time())
    register_chat(app)  # POST /v1/chat/completions, GET /v1/models: the same engines and admission
    try:
        from .gateway.media import use_loopback_ice
        from .gateway.webrtc import post_call

        use_loopback_ice(settings.host in ("127.0.0.1", "localhost", "::1"))
        app.router.add_post("/v1/realtime/calls", post_call)
    except ImportError:  # aiortc missing: WebSocket only
        log.warning("aiortc not installed: WebRTC signalling disabled")
    static = Path(settings.static_dir) if settings.static_dir else WEB_CLIENT
    if static.is_dir():

        async def index(_request: web.Request) -> web.StreamResponse:
            return web.FileResponse(static / "index.html")

        app.router.add_get("/", index)
        app.router.add_static("/", static, show_index=False)
    app.on_startup.append(_start_reaper)
    app.on_shutdown.append(_close_sessions)
    app.on_cleanup.append(_cleanup)
    return app


async def healthz(request: web.Request) -> web.Response:
    app = request.app
    s: ServerSettings = app["settings"]
    return web.json_response(
        {
            "status": "ok",
            "model": app["model_name"],
            "family": app["family"].key,
            "embedded_demo_model": app["embedded"],
            "weights": app["weights"],
            "sessions": app["manager"].in_use,
            "max_sessions": app["manager"].max_sessions,
            "worker": {
                "kind": app["worker"].kind,
                "lanes": app["worker"].lanes,
                "batched": s.max_batch > 1,
                "max_batch": s.max_batch,
                "capacity": app["worker"].capacity,
                "plan": app["lane_plan"].as_dict() if app["lane_plan"] else None,
            },
            "auth_required": s.api_key is not None,
            "tls": s.tls,
            "load_model_hint": "omni serve --model openbmb/MiniCPM-o-2_6 --device cuda --dtype bfloat16 "
            "(8-16 GB GPUs: --model openbmb/MiniCPM-o-2_6-int4, or --quantize int8|int4)",
        }
    )


def _model_name(model: str) -> str:
    from omni.hub import is_hub_id

    return model if is_hub_id(model) and not Path(model).is_dir() else Path(model).name


async def readyz(request: web.Request) -> web.Response:
    """200 when every engine ran a real model step just now (a probe queued behind its work), else 503."""
    engines = await request.app["worker"].ready()
    ready = bool(engines) and all(e["ready"] for e in engines)
    return web.json_response({"ready": ready, "engines": engines}, status=200 if ready else 503)


async def metrics(request: web.Request) -> web.Response:
    body, ctype = await request.app["metrics"].scrape(request.app["worker"])
    return web.Response(body=body, headers={"Content-Type": ctype})


def _refuse(status: int, code: str, message: str) -> web.Response:
    return web.json_response(
        {"error": {"type": "invalid_request_error", "code": code, "message": message}}, status=status
    )


@web.middleware
async def _origin_middleware(request: web.Request, handler):
    """Before auth: a page from another origin is refused with or without a key (gateway/origin.py)."""
    s: ServerSettings = request.app["settings"]
    if not host_allowed(request.headers.get("Host"), s.host):
        return _refuse(
            403,
            "host_not_allowed",
            "this server is bound to loopback and answers only localhost, 127.0.0.1 or [::1] as the Host",
        )
    if request.path in GUARDED_ROUTES and not origin_allowed(
        request.headers.get("Origin"), request.headers.get("Host"), "https" if s.tls else "http", s.host, s.origins
    ):
        return _refuse(
            403,
            "origin_not_allowed",
            f"pages from {request.headers.get('Origin')} may not open "
            "sessions here; the server's allowed_origins setting lists who may",
        )
    return await handler(request)


@web.middleware
async def _auth_middleware(request: web.Request, handler):
    key = request.app["settings"].api_key
    if key is None or request.path in ("/healthz", "/") or not request.path.startswith("/v1/"):
        return await handler(request)
    presented = _presented_key(request)
    # constant time: the comparison's duration says nothing about how much of a guess was right
    if presented is None or not hmac.compare_digest(presented.encode(), key.encode()):
        return web.json_response(
            {
                "error": {
                    "type": "invalid_request_error",
                    "code": "invalid_api_key",
                    "message": "missing or wrong API key: send `Authorization: Bearer <key>`",
                }
            },
            status=401,
        )
    return await handler(request)


def _presented_key(request: web.Request) -> str | None:
    auth = request.headers.get("Authorization", "")
    if auth.startswith("Bearer "):
        return auth[len("Bearer ") :].strip()
    for p in request.headers.get("Sec-WebSocket-Protocol", "").split(","):
        p = p.strip()
        if p.startswith("openai-insecure-api-key."):  # browsers cannot set headers on WebSockets
            return p[len("openai-insecure-api-key.") :]
    return None


async def _start_reaper(app: web.Application) -> None:
    app["reaper"] = asyncio.create_task(app["manager"].reap(), name="idle reaper")


async def _close_sessions(app: web.Application) -> None:
    """Shutdown (SIGTERM, SIGINT): every session is told to close, WebSockets with 1001 (going
    away), WebRTC calls hung up; then the connections' own tasks free everything."""
    for lease in list(app["manager"].leases.values()):
        if lease.close is not None:
            lease.close("server shutdown")
    deadline = asyncio.get_running_loop().time() + SHUTDOWN_CLOSE_S
    while app["conversations"] and asyncio.get_running_loop().time() < deadline:
        await asyncio.sleep(0.05)


async def _cleanup(app: web.Application) -> None:
    app["reaper"].cancel()
    await asyncio.gather(app["reaper"], return_exceptions=True)
    for conv in list(app["conversations"]):
        await conv.close()
    if app["owns_worker"]:
        app["worker"].close()


def runner_options(settings: ServerSettings) -> dict:
    """aiohttp's request-handler options: its keep-alive timer also runs from a connection's start
    and closes one that is idle mid-request, so it is the header-read timeout too."""
    return {"keepalive_timeout": settings.header_timeout_s}


def lan_address() -> str:
    """This machine's address on its default route (what a phone on the LAN opens), or localhost."""
    import socket

    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            s.connect(("10.255.255.255", 1))  # no packet is sent: this only picks the route
            return s.getsockname()[0]
        except OSError:
            return "127.0.0.1"


def ssl_context(settings: ServerSettings) -> ssl.SSLContext | None:
    if not settings.tls:
        return None
    from .tls import self_signed

    cert, key = (settings.tls_cert, settings.tls_key) if settings.tls_cert else self_signed()
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(cert, key)
    return ctx


class _Terminated(BaseException):
    """SIGTERM while loading (a BaseException: no `except Exception` on the way swallows it)."""


def _exit_on_sigterm(_signum, _frame) -> None:
    raise _Terminated()


def serve(args) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    for chatty in ("aioice", "aiortc"):  # every ICE check at INFO: most of the log, none of it ours
        logging.getLogger(chatty).setLevel(logging.WARNING)
    overrides = {
        k: getattr(args, k, None)
        for k in (
            "host",
            "port",
            "model",
            "revision",
            "quantize",
            "device",
            "dtype",
            "api_key",
            "tls_cert",
            "tls_key",
            "max_sessions",
            "worker",
            "ray_address",
            "ray_replicas",
            "memory_gb",
        )
    }
    if getattr(args, "tls_self_signed", False):
        overrides["tls_self_signed"] = True
    settings = load_settings(args.config, **overrides)
    embedded = settings.model is None
    if embedded:
        print(
            "serving the EMBEDDED DEMO MODEL (tiny, random weights: replies are noise by design). "
            "Load a real checkpoint with --model DIR or a hub id (openbmb/MiniCPM-o-2_6).",
            file=sys.stderr,
        )
    from .engines.lanes import NoRoom, make_worker, plan_for

    try:
        plan = plan_for(settings, checkpoint_dir(settings))
    except (NoRoom, FileNotFoundError) as e:
        print(f"omni: cannot start: {e}", file=sys.stderr)
        return 2
    print(f"omni: {plan.kind}, {plan.lanes} lane(s): {plan.reason}", file=sys.stderr, flush=True)
    # SIGTERM while the model loads: unwind (the worker kills the model processes it started)
    # instead of dying at once; aiohttp installs its own handler for serving.
    signal.signal(signal.SIGTERM, _exit_on_sigterm)
    try:
        worker = make_worker(settings, plan)
    except _Terminated:
        print("omni: stopped while loading the model (SIGTERM)", file=sys.stderr)
        return 143
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    w = weights_of(settings)
    print(
        f"omni: model ready ({worker.lanes} lane(s), {worker.kind}, room for "
        f"{min(settings.max_sessions, worker.capacity)} session(s), batches of up to {settings.max_batch}); "
        f"weights {w['dtype']}, quantization {w['quantization']}, kernel {w['kernel']}",
        file=sys.stderr,
    )
    app = build_app(settings, None, embedded, worker, plan)  # the worker holds the model
    # after the sessions (SHUTDOWN_CLOSE_S): the whole shutdown stays well inside 10 s
    app.on_cleanup.append(lambda _app: asyncio.to_thread(worker.close, WORKER_CLOSE_S))
    scheme = "https" if settings.tls else "http"
    host = lan_address() if settings.host in ("0.0.0.0", "::", "") else settings.host
    if host != settings.host and settings.api_key is None:
        print(
            f"omni: WARNING: serving every network interface ({settings.host}) with no api key: anyone on "
            "the network can hold conversations; set --api-key",
            file=sys.stderr,
        )
    opened = (
        f"omni: open {scheme}://{host}:{settings.port}/  (realtime API: "
        f"{'wss' if settings.tls else 'ws'}://{host}:{settings.port}/v1/realtime)"
    )
    # SIGTERM and SIGINT: stop accepting, close every session (1001), exit well within 10 s.
    # `print` runs once the socket listens: "omni: open" means it answers.
    web.run_app(
        app,
        host=settings.host,
        port=settings.port,
        ssl_context=ssl_context(settings),
        print=lambda _aiohttp_line: print(opened, file=sys.stderr, flush=True),
        access_log=None,
        shutdown_timeout=SHUTDOWN_CLOSE_S,
        handler_cancellation=True,
        **runner_options(settings),
    )
    return 0
