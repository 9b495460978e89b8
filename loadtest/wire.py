"""The client side of a WebSocket, as cheap as Python allows, with no I/O.

The benchmark's viewers must not be the bottleneck they are meant to measure, so they skip
``websockets``' per-message machinery: a hand-written upgrade request, then a scanner that
splits the server's (unmasked, uncompressed) frames out of the byte stream. Counting a frame's
events needs no decode: a ``liveroom.v1.msgpack`` message is a msgpack array, whose header
holds its length.
"""

from __future__ import annotations

import base64
import hashlib
import os

GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"

OP_CONT, OP_TEXT, OP_BINARY, OP_CLOSE, OP_PING, OP_PONG = 0x0, 0x1, 0x2, 0x8, 0x9, 0xA


def upgrade_request(
    host: str, port: int, path: str, token: str, subprotocol: str
) -> tuple[bytes, bytes]:
    """(the HTTP upgrade request, the Sec-WebSocket-Accept value the server must answer)."""
    key = base64.b64encode(os.urandom(16))
    accept = base64.b64encode(hashlib.sha1(key + GUID).digest())
    request = (
        f"GET {path} HTTP/1.1\r\n"
        f"Host: {host}:{port}\r\n"
        "Upgrade: websocket\r\n"
        "Connection: Upgrade\r\n"
        f"Sec-WebSocket-Key: {key.decode()}\r\n"
        "Sec-WebSocket-Version: 13\r\n"
        f"Sec-WebSocket-Protocol: {subprotocol}\r\n"
        f"Authorization: Bearer {token}\r\n"
        "\r\n"
    ).encode()
    return request, accept


def check_upgrade(head: bytes, accept: bytes) -> str | None:
    """None if ``head`` (the response up to the blank line) accepts the upgrade, else why not."""
    status_line, _, rest = head.partition(b"\r\n")
    if not status_line.startswith(b"HTTP/1.1 101"):
        return status_line.decode(errors="replace")
    for line in rest.split(b"\r\n"):
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"sec-websocket-accept" and value.strip() == accept:
            return None
    return "bad Sec-WebSocket-Accept"


def masked_frame(opcode: int, payload: bytes) -> bytes:
    """A client frame (clients must mask); only for control frames (payload <= 125 bytes)."""
    mask = os.urandom(4)
    n = len(payload)
    key = int.from_bytes((mask * (n // 4 + 1))[:n], "big")
    body = (int.from_bytes(payload, "big") ^ key).to_bytes(n, "big")
    return bytes((0x80 | opcode, 0x80 | len(payload))) + mask + body


def close_code(payload: bytes) -> int:
    return int.from_bytes(payload[:2], "big") if len(payload) >= 2 else 1005


def msgpack_array_len(payload: bytes) -> int:
    """Events in a msgpack message (an array), read from its header alone."""
    if not payload:
        return 0
    b = payload[0]
    if 0x90 <= b <= 0x9F:
        return b & 0x0F
    if b == 0xDC:
        return int.from_bytes(payload[1:3], "big")
    if b == 0xDD:
        return int.from_bytes(payload[1:5], "big")
    return 0


class FrameScanner:
    """Splits server frames out of a byte stream: ``feed`` returns the complete ones."""

    __slots__ = ("_buf",)

    def __init__(self) -> None:
        self._buf = b""

    def feed(self, data: bytes) -> list[tuple[int, bytes]]:
        buf = self._buf + data if self._buf else data
        n = len(buf)
        pos = 0
        out: list[tuple[int, bytes]] = []
        while n - pos >= 2:
            length = buf[pos + 1] & 0x7F  # a server never masks
            head = 2
            if length == 126:
                if n - pos < 4:
                    break
                length = int.from_bytes(buf[pos + 2 : pos + 4], "big")
                head = 4
            elif length == 127:
                if n - pos < 10:
                    break
                length = int.from_bytes(buf[pos + 2 : pos + 10], "big")
                head = 10
            end = pos + head + length
            if end > n:
                break
            out.append((buf[pos] & 0x0F, buf[pos + head : end]))
            pos = end
        self._buf = buf[pos:] if pos < n else b""
        return out
