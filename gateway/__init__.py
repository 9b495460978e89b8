"""The WebSocket gateway (PROTOCOL.md §4): handshakes, the room hub, tick flushes, ops."""
