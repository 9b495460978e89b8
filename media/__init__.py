"""WebRTC media with aiortc: WHEP egress for viewers, WHIP ingest for hosts, built-in sources,
one encoder per room and codec, encoded frames fanned out to every viewer (see docs/media.md).

Nothing here may encode per viewer or hold an unbounded per-viewer queue."""
