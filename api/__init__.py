"""The HTTP API (PROTOCOL.md §3) on FastAPI, and the pages it serves."""
