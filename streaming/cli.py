"""The installed `omni` command: the model's commands (omni.cli) plus `serve`, the realtime service.

`python -m streaming.cli serve ...` is the same as `omni serve ...`. Flags override the settings
file (configs/server.toml documents every key and its default)."""

from __future__ import annotations

import sys

from omni.cli import build_parser, run


def _cmd_serve(a) -> int:
    from .server import serve

    return serve(a)


def main(argv=None) -> int:
    ap, sub = build_parser()
    p = sub.add_parser(
        "serve",
        help="start the realtime service (web page, WebSocket, WebRTC)",
        description="Flags override --config; unset ones keep the settings' defaults "
        "(shown in brackets, as in configs/server.toml).",
    )
    p.add_argument("--config", help="server settings TOML (configs/server.toml documents every key)")
    p.add_argument(
        "--model", help="checkpoint folder, or hub id like openbmb/MiniCPM-o-2_6 [the embedded tiny demo model]"
    )
    p.add_argument("--revision", help="hub ids: branch, tag or commit [main]")
    p.add_argument(
        "--quantize",
        choices=["int8", "int4"],
        help="quantize the LLM's linears of a bf16/fp32 checkpoint at load [off]",
    )
    p.add_argument("--device", help="cpu or cuda [cpu]")
    p.add_argument("--dtype", choices=["float32", "bfloat16", "float16"], help="weights' dtype [float32]")
    p.add_argument("--host", help="address to bind; 0.0.0.0 serves the LAN (set --api-key) [127.0.0.1]")
    p.add_argument("--port", type=int, help="port for the page, /v1/realtime and /v1/realtime/calls [8000]")
    p.add_argument("--api-key", help="require `Authorization: Bearer KEY` on /v1/ routes [none]")
    p.add_argument("--tls-cert", help="certificate PEM for HTTPS/WSS (with --tls-key) [none]")
    p.add_argument("--tls-key", help="private key PEM (with --tls-cert) [none]")
    p.add_argument(
        "--tls-self-signed",
        action="store_true",
        help="HTTPS with a throwaway certificate (iPad/phone microphones need HTTPS)",
    )
    p.add_argument("--max-sessions", type=int, help="concurrent sessions; more get server_busy [16]")
    p.add_argument(
        "--worker",
        choices=["auto", "processes", "threads", "ray"],
        help="where the model engines run (ray: replicas on a Ray cluster, pip install -e '.[ray]') [auto]",
    )
    p.add_argument(
        "--memory-gb",
        type=float,
        help="CPU: memory the model copies and KV pools may use; sizes the model processes [what is available]",
    )
    p.add_argument("--ray-address", help="worker ray: the cluster to join [start a local one]")
    p.add_argument(
        "--replicas", dest="ray_replicas", type=int, help="worker ray: engine replicas [one per GPU, or per CPU core]"
    )
    p.set_defaults(fn=_cmd_serve)
    return run(ap, argv)


if __name__ == "__main__":
    sys.exit(main())
