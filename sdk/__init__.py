"""Client SDKs: the Python client of the gateway protocol."""
