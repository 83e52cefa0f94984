# Celerity in containers: docs/docker.md is the tutorial, compose.yaml the cluster.
#
#   docker build -t celerity .                    # the worker image (last stage, `runtime`)
#   docker build -t celerity-python --target python .   # Python Celery worker, Flower, clients
#
# Stages:
#   build    Swift toolchain + the C libraries' headers; `swift build -c release` with the
#            Swift runtime linked in statically, so the runtime image needs no toolchain.
#   python   Python Celery 5.7 + Flower 2.2 on python:3.11-slim: the interop worker, Flower
#            and the tutorial's Python clients (interop/).
#   runtime  debian:bookworm-slim with what `celerity` loads (hiredis 0.14, OpenBLAS, zlib, OpenSSL 3 (rediss://),
#            bzip2, libstdc++) and what the example plugins run on (python3 + numpy, nodejs, ruby,
#            /bin/sh), tasks.yaml and plugins/, as the non-root user `celerity`.
#
# Checked in CI without a Docker engine: scripts/check-docker.sh runs hadolint on this file.

# The toolchain this project is tested with (6.3.1). Not older than 6.2: swift-log,
# swift-service-lifecycle and swift-subprocess, at the versions Package.swift allows, need
# tools 6.2.
ARG SWIFT_IMAGE=swift:6.3.1-bookworm

# ---------------------------------------------------------------------------------- build
FROM ${SWIFT_IMAGE} AS build
# DL3008 (pin apt versions) is ignored: Debian bookworm's stable archive only takes security
# fixes, and an exact pin would break the build at the first one instead of taking it.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends \
        libhiredis-dev libopenblas-dev zlib1g-dev libbz2-dev libssl-dev \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /src
# Tests/ too: SwiftPM checks every target's directory when it loads the package, even for
# a build of one product (no test is built or run here).
COPY Package.swift ./
COPY Sources ./Sources
COPY Tests ./Tests
RUN swift build -c release --product celerity --static-swift-stdlib \
    && install -D -m 0755 "$(swift build -c release --show-bin-path)/celerity" /out/celerity

# ---------------------------------------------------------------------------------- python
FROM python:3.11-slim-bookworm AS python
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1
RUN pip install --no-cache-dir "celery[redis]==5.7.0" "flower==2.2.0" \
    && useradd --create-home --uid 10001 celery
WORKDIR /app
COPY interop/py_worker_app.py interop/tutorial_app.py interop/tutorial_clients.py ./
USER 10001
EXPOSE 5555
# A Python Celery worker answers ping like a Celerity one (the same pidbox protocol).
HEALTHCHECK --interval=30s --timeout=10s --start-period=20s --retries=3 \
    CMD ["sh", "-c", "celery -A py_worker_app inspect ping -d \"celery@$(hostname)\" --timeout 5 >/dev/null"]
CMD ["celery", "-A", "py_worker_app", "worker", "-Q", "pyq", "--pool", "solo", "-l", "info"]

# ---------------------------------------------------------------------------------- runtime
FROM debian:bookworm-slim AS runtime
# DL3008 ignored as above. python3-numpy: plugins/matmul_numpy.py; nodejs: the .js plugins; ruby: the .rb ones;
# libopenblas0: mat_mul (dlopened, so ldd does not show it).
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends \
        libhiredis0.14 libopenblas0 zlib1g libbz2-1.0 libssl3 libstdc++6 \
        python3 python3-numpy nodejs ruby \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --create-home --uid 10001 celerity
COPY --from=build /out/celerity /usr/local/bin/celerity
WORKDIR /app
COPY tasks.yaml ./
COPY plugins ./plugins
# The user `celerity` (uid 10001, numeric so Kubernetes' runAsNonRoot can check it): running
# as root would let a plugin write anywhere in the container, and nothing here needs it.
USER 10001
ENV CELERITY_MANIFEST=/app/tasks.yaml \
    CELERITY_BROKER_URL=redis://redis:6379/0
# Healthy = this container's worker answers a ping (Celery's pidbox). Its node name is the
# default, celerity@<hostname>: a command with -n NAME needs its own healthcheck.
HEALTHCHECK --interval=30s --timeout=10s --start-period=20s --retries=3 \
    CMD ["sh", "-c", "celerity inspect ping -d \"celerity@$(hostname)\" --timeout 5 >/dev/null"]
CMD ["celerity", "worker", "-l", "info"]
