"""WebRTC media (WHEP egress, WHIP ingest) with aiortc: not built yet (see the [media] issue)."""
