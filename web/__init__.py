"""The pages (web player, host console): static files the HTTP API serves."""
