"""Which browser pages may drive the realtime routes: the `Origin` policy and the `Host` check.

Any page a user visits can open a WebSocket to this server or POST a form to its calls route
(neither needs a CORS preflight), and a DNS-rebinding page can even pose as a local host name. So:
* a WebSocket upgrade or a calls POST that carries an `Origin` must come from an allowed origin
  (`allowed_origins`; by default the server's own: the page's own host and port, plus localhost
  and 127.0.0.1 on that port), with or without an api key; SDKs send no `Origin` and pass;
* a server bound to loopback answers only `Host` names that are loopback names.

Owns: those two decisions, as pure functions of the headers and settings. Does not own: the HTTP
responses (server.py's middleware) or api keys.
"""

from __future__ import annotations

import ipaddress
import socket
from urllib.parse import urlsplit

LOOPBACK_NAMES = frozenset({"localhost", "127.0.0.1", "::1"})
WILDCARD_HOSTS = frozenset({"0.0.0.0", "::", ""})


def split_host(host_header: str) -> tuple[str, int | None]:
    """`Host` (or an origin's netloc) as (lower-case name without brackets, port or None)."""
    u = urlsplit(f"//{host_header}")
    try:
        port = u.port
    except ValueError:
        port = -1  # not a port: matches nothing
    return (u.hostname or "").lower(), port


def is_loopback_bind(bind_host: str) -> bool:
    return bind_host.lower().strip("[]") in LOOPBACK_NAMES


def host_allowed(host_header: str | None, bind_host: str) -> bool:
    """Bound to loopback: only loopback names (a rebinding page's own name is refused)."""
    if not is_loopback_bind(bind_host):
        return True
    name, _ = split_host(host_header or "")
    return name in LOOPBACK_NAMES


def _names_of_this_machine() -> set[str]:
    names = {socket.gethostname().lower(), socket.getfqdn().lower()}
    return {n for n in names if n}


def _literal_or_own(name: str, bind_host: str) -> bool:
    """A host name a same-origin page may carry when the server is not on loopback: an IP
    address, a loopback name, the bound name or this machine's own names (not an attacker's DNS name)."""
    if name in LOOPBACK_NAMES or name == bind_host.lower():
        return True
    try:
        ipaddress.ip_address(name)
        return True
    except ValueError:
        return name in _names_of_this_machine()


def origin_allowed(
    origin: str | None, host_header: str | None, scheme: str, bind_host: str, allowed: tuple[str, ...] | None
) -> bool:
    """Whether a request with this `Origin` may open a realtime session.

    `allowed`: the `allowed_origins` setting (exact origins such as "https://app.example", or "*"),
    or None for the default: the page's own origin, and localhost / 127.0.0.1 on the same port."""
    if origin is None:
        return True  # not a browser page (SDKs, curl)
    origin = origin.strip().rstrip("/").lower()
    if allowed is not None:
        return "*" in allowed or origin in {a.rstrip("/").lower() for a in allowed}
    o = urlsplit(origin)
    if o.scheme != scheme or not o.hostname:
        return False
    o_name, o_port = split_host(o.netloc)
    h_name, h_port = split_host(host_header or "")
    port = h_port or (443 if scheme == "https" else 80)
    if (o_port or (443 if scheme == "https" else 80)) != port:
        return False
    if o_name in ("localhost", "127.0.0.1"):
        return True
    return o_name == h_name and _literal_or_own(h_name, bind_host)
