"""The image and the compose file, read as files (no container daemon here): the image installs
as the README does and runs as a non-root user with a health check; compose runs Redis with AOF,
two gateways, the API and media, each probed on the port it serves."""

from __future__ import annotations

import re
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("engine", "gateway", "api", "runtime", "sdk", "web", "media")


def _dockerfile() -> list[tuple[str, str]]:
    text = (ROOT / "Dockerfile").read_text().replace("\\\n", " ")
    out = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            word, _, rest = line.partition(" ")
            out.append((word.upper(), rest.strip()))
    return out


def test_the_image_installs_as_the_readme_does_and_runs_unprivileged() -> None:
    steps = _dockerfile()
    base = next(rest for word, rest in steps if word == "FROM")
    assert "slim" in base
    copied = {rest.split()[0] for word, rest in steps if word == "COPY"}
    assert set(PACKAGES) | {"scripts", "pyproject.toml"} <= copied
    runs = " ".join(rest for word, rest in steps if word == "RUN")
    assert "scripts/setup" in runs  # the README's install (scripts/up runs it too)
    assert "scripts/setup" in (ROOT / "scripts" / "up").read_text()
    users = [rest for word, rest in steps if word == "USER"]
    assert users and users[-1] not in ("root", "0")
    health = next(rest for word, rest in steps if word == "HEALTHCHECK")
    assert "/healthz" in health
    assert any(word == "ENTRYPOINT" and "liveroom" in rest for word, rest in steps)


def test_compose_runs_redis_with_aof_two_gateways_the_api_and_media() -> None:
    spec = yaml.safe_load((ROOT / "compose.yaml").read_text())
    services = spec["services"]
    redis = services["redis"]
    assert "--appendonly" in redis["command"] and "yes" in redis["command"]
    assert "healthcheck" in redis
    roles: dict[str, list[str]] = {}
    for name, svc in services.items():
        if name == "redis":
            continue
        command = svc["command"]
        role = command[command.index("--role") + 1]
        roles.setdefault(role, []).append(name)
        assert svc["build"] == "."
        assert svc["depends_on"]["redis"]["condition"] == "service_healthy"
        env = svc["environment"]
        assert re.fullmatch(r"\$\{LIVEROOM_SECRET:\?.*\}", env["LIVEROOM_SECRET"])  # no default
        # The image's health check probes the port this service serves inside its container.
        inside = {p.split(":")[-1] for p in svc["ports"]}
        assert env["LIVEROOM_HEALTH_PORT"] in inside
        if "--http-port" in command:
            assert command[command.index("--http-port") + 1] == env["LIVEROOM_HEALTH_PORT"]
    assert len(roles["gateway"]) == 2
    assert roles["api"] and roles["media"]
