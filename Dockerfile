# syntax=docker/dockerfile:1
# edge-agent image: amd64 and arm64 from the same file, e.g.
#   docker buildx build --platform linux/amd64,linux/arm64 -t ghcr.io/edge-agent/edge-agent:0.1.0 .
# Not built by this repository's CI (no container engine there): see docs/contributing.md.
#
# Nothing is compiled: the agent is pure Python, and every dependency with native code (uvloop,
# pydantic-core, cramjam, aiokafka, PyYAML, aiohttp and its helpers) ships manylinux wheels for
# x86_64 and aarch64; `--only-binary=:all:` makes a missing wheel fail the build instead of
# silently needing a compiler. Pin the base image by digest for reproducible releases.
ARG PYTHON_IMAGE=python:3.11-slim-bookworm

# ---------------------------------------------------------------- build: a virtualenv in /opt
FROM ${PYTHON_IMAGE} AS build
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
COPY pyproject.toml README.md ./
COPY agent ./agent
RUN python -m pip wheel --no-deps --wheel-dir /wheels . \
 && python -m venv /opt/edge-agent \
 && /opt/edge-agent/bin/pip install --only-binary=:all: /wheels/edge_agent-*.whl \
 && /opt/edge-agent/bin/edge-agent --version

# ---------------------------------------------------------------- runtime
FROM ${PYTHON_IMAGE} AS runtime
LABEL org.opencontainers.image.title="edge-agent" \
      org.opencontainers.image.description="Local MQTT -> validation -> durable disk spool -> idempotent Kafka" \
      org.opencontainers.image.source="https://github.com/edge-agent/edge-agent" \
      org.opencontainers.image.licenses="Apache-2.0"

# The fixed uid/gid 10001 is the one the Helm chart runs as and owns the spool with.
RUN groupadd --system --gid 10001 edge-agent \
 && useradd --system --uid 10001 --gid 10001 --no-create-home \
      --home-dir /var/lib/edge-agent --shell /usr/sbin/nologin edge-agent \
 && install -d -o 10001 -g 10001 -m 0700 /var/lib/edge-agent \
 && install -d -m 0755 /etc/edge-agent

COPY --from=build /opt/edge-agent /opt/edge-agent

# Bytecode was compiled at install; the root filesystem may be read-only at run time.
# The agent's HTTP endpoint listens on 127.0.0.1 by default (a bare gateway should not expose
# it); inside a container that would be unreachable from `-p 9810:9810`, so the image listens
# on all the container's addresses. Only the ports you publish are reachable from outside.
ENV PATH=/opt/edge-agent/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    EDGE_AGENT_HTTP__LISTEN_HOST=0.0.0.0

USER 10001:10001
WORKDIR /var/lib/edge-agent
# The spool (spool.directory defaults to /var/lib/edge-agent/spool): mount a volume here, or
# everything not yet in Kafka is lost with the container.
VOLUME /var/lib/edge-agent
# /metrics, /healthz, /readyz, /status
EXPOSE 9810

# Docker and Podman only (Kubernetes uses the chart's probes). No curl in a slim image: Python.
HEALTHCHECK --interval=30s --timeout=5s --start-period=60s --retries=3 \
  CMD ["python", "-c", "import os, sys, urllib.request; port = os.environ.get('EDGE_AGENT_HTTP__PORT', '9810'); sys.exit(0 if urllib.request.urlopen(f'http://127.0.0.1:{port}/healthz', timeout=4).status == 200 else 1)"]

# SIGTERM drains (up to drain_timeout_secs); give `docker stop` a --time above it (default 10 s).
STOPSIGNAL SIGTERM
ENTRYPOINT ["edge-agent"]
CMD ["run", "--config", "/etc/edge-agent/agent.yaml"]
