"""liveroom's edges: the WebSocket gateway, the HTTP API, the pages, and the CLI that runs them."""
