# syntax=docker/dockerfile:1
# Mainspring's image: `mainspring serve` (the default) and `mainspring worker` from one image.
# Deploying it (Kubernetes manifests, probes, drain, scaling): docs/deploy.md.
#
#   docker build -t mainspring:0.1.0 .
#   docker build --build-arg EXTRAS=postgres,server,worker,models,redis,telemetry,memory \
#     -t mainspring:0.1.0-memory .
#
# Your graphs go in an image built on this one (FROM mainspring:0.1.0, COPY your package to
# /app): the commands import --graph MODULE:ATTR from the working directory, /app.

ARG PYTHON_IMAGE=python:3.11-slim

# Build stage: the package and its extras in a virtual environment the runtime stage copies,
# so no compiler, pip cache or source tree reaches the final image.
FROM ${PYTHON_IMAGE} AS build
# What `serve` and `worker` need: PostgreSQL (asyncpg), the HTTP API (server), the workers'
# schedules and probes (worker), model calls (models), Redis event fan-out (redis), the
# API's /metrics (telemetry).
ARG EXTRAS=postgres,server,worker,models,redis,telemetry
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1
RUN python -m venv /opt/mainspring
WORKDIR /src
# The metadata first: a source-only change rebuilds from the install of the package itself.
COPY pyproject.toml README.md ./
COPY mainspring ./mainspring
RUN /opt/mainspring/bin/pip install ".[${EXTRAS}]"

FROM ${PYTHON_IMAGE}
LABEL org.opencontainers.image.title="mainspring" \
      org.opencontainers.image.description="A durable, journal-backed runtime for AI agents" \
      org.opencontainers.image.licenses="Apache-2.0"
# A fixed numeric uid/gid: Kubernetes' runAsNonRoot can only check a numeric USER.
RUN groupadd --system --gid 10001 mainspring \
    && useradd --system --uid 10001 --gid 10001 --home-dir /home/mainspring --create-home \
        --shell /usr/sbin/nologin mainspring \
    && install -d -o 10001 -g 10001 /app
COPY --from=build /opt/mainspring /opt/mainspring
ENV PATH=/opt/mainspring/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    HOME=/home/mainspring
WORKDIR /app
USER 10001:10001
# 8000: `serve`'s HTTP API; 8081: a worker's --health-port (/healthz, /readyz, /metrics).
EXPOSE 8000 8081
ENTRYPOINT ["mainspring"]
# serve listens on loopback unless told otherwise: in a container that is unreachable.
CMD ["serve", "--host", "0.0.0.0", "--port", "8000"]
