"""Which browser pages may open a WebSocket to the gateway (the `Origin` allow-list).

Browsers send `Origin` on every WebSocket handshake and let any page connect anywhere, so a
page on another site could act with a viewer's token. Non-browser clients send no `Origin`
and are not concerned. The rule (``Settings.allowed_origins``):

- a listed origin (scheme://host[:port], compared case-insensitively) is allowed;
- with an empty list, dev mode allows every origin; outside dev mode only pages served from
  the host the client connected to (the same hostname as the `Host` header, any port: the
  player is served by the API port and talks to the gateway port) are allowed.
"""

from __future__ import annotations

from urllib.parse import urlsplit


def parse_allowed(setting: str) -> frozenset[str]:
    return frozenset(_norm(o) for o in setting.split(",") if o.strip())


def _norm(origin: str) -> str:
    return origin.strip().rstrip("/").lower()


def _hostname(value: str) -> str | None:
    try:
        return urlsplit(value if "//" in value else "//" + value).hostname
    except ValueError:
        return None


def origin_allowed(
    origin: str | None, host: str | None, allowed: frozenset[str], *, dev: bool
) -> bool:
    if origin is None:
        return True
    if allowed:
        return _norm(origin) in allowed
    if dev:
        return True
    mine = _hostname(host) if host else None
    return mine is not None and _hostname(origin) == mine
