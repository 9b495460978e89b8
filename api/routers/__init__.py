"""The HTTP API's routes, one router per resource (PROTOCOL.md §3); ``api.app`` includes them."""
