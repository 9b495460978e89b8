# liveroom: one image, one role per container (see compose.yaml and docs/deploy.md).
# The install is the README's: scripts/setup makes .venv and installs the project into it
# (Redis is not in the image: it is a service of its own).
FROM python:3.11-slim-bookworm
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 LIVEROOM_SETUP_NO_REDIS=1
WORKDIR /app
COPY pyproject.toml README.md ./
COPY scripts scripts
COPY engine engine
COPY gateway gateway
COPY api api
COPY runtime runtime
COPY sdk sdk
COPY web web
COPY media media
COPY loadtest loadtest
RUN scripts/setup && useradd --system --no-create-home liveroom
ENV PATH=/app/.venv/bin:$PATH
USER liveroom
EXPOSE 8080 8081
# Each role answers /healthz (the API and media on the HTTP port, a gateway on its WebSocket
# port); LIVEROOM_HEALTH_PORT picks which one this container probes.
ENV LIVEROOM_HEALTH_PORT=8080
HEALTHCHECK --interval=10s --timeout=3s --start-period=20s --retries=3 \
  CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/healthz' % os.environ['LIVEROOM_HEALTH_PORT'], timeout=2)"]
# LIVEROOM_SECRET must be provided; the default development secret is refused here.
ENTRYPOINT ["liveroom"]
CMD ["serve", "--role", "all", "--host", "0.0.0.0", "--redis-url", "redis://redis:6379/0"]
