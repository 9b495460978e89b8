# liveroom: one image, one role per container (see docker-compose.yml).
FROM python:3.11-slim-bookworm
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1
WORKDIR /app
COPY pyproject.toml README.md ./
COPY engine engine
COPY gateway gateway
COPY api api
COPY runtime runtime
COPY sdk sdk
COPY web web
COPY media media
COPY loadtest loadtest
RUN pip install --no-cache-dir . && useradd --system liveroom
USER liveroom
EXPOSE 8080 8081
# LIVEROOM_SECRET must be provided; the default development secret is refused here.
ENTRYPOINT ["liveroom"]
CMD ["serve", "--role", "all", "--host", "0.0.0.0", "--redis-url", "redis://redis:6379/0"]
