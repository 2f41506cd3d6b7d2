# dahell in one container: scraper (Chromium), loader, vectorizer (ONNX Runtime, GPU or CPU) and,
# by default, the embedded PostgreSQL with its data on the /data volume.
#
#   docker build -t dahell .
#   docker run -d --name dahell --gpus all --shm-size=1g --stop-timeout=45 -p 9464:9464 \
#       -v dahell-data:/data -v "$PWD/models:/models" \
#       -e DAHELL_SCRAPER__EMAIL=... -e DAHELL_SCRAPER__PASSWORD_FILE=/run/secrets/dropi \
#       dahell
#
# External PostgreSQL (with pgvector) instead of the embedded one: -e DAHELL_DATABASE__DSN=...
# (or DAHELL_DATABASE__DSN_FILE). Without --gpus the vectorizer runs on the CPU.
# --shm-size: PostgreSQL and Chromium both use /dev/shm; Docker's default 64 MB is tight.
# --stop-timeout: longer than supervisor.shutdown_timeout_s (30 s), so SIGTERM can drain queues.
#
# Base image: python:3.11-slim (Debian 12), not nvidia/cuda:*-ubuntu24.04, because
# - Ubuntu's `chromium` package is only a wrapper around a snap, which does not run in a container;
#   Debian's is a real package, the one the scraper is tested with (found via PATH);
# - the CUDA runtime, cuBLAS and cuDNN that onnxruntime-gpu needs come as pip wheels
#   (`onnxruntime-gpu[cuda,cudnn]`), always the versions that onnxruntime build expects, and
#   the driver (libcuda) is mounted by the NVIDIA Container Toolkit at run time; the nvidia/cuda
#   images would add a second, possibly mismatched, CUDA plus a Python other than 3.11.
# The host driver must support the CUDA major version of the installed onnxruntime-gpu. When
# CUDA cannot load, onnxruntime falls back to the CPU provider (logged as providers_fallback).
FROM python:3.11-slim-bookworm

SHELL ["/bin/bash", "-o", "pipefail", "-c"]

ENV PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

# chromium: the scraper's browser. tini: PID 1 that forwards SIGTERM to Python and reaps the
# processes Chromium and PostgreSQL leave behind. Debian versions are not pinned: the security
# archive drops old versions, which would break rebuilds.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends chromium fonts-liberation tini ca-certificates \
    && rm -rf /var/lib/apt/lists/*

RUN groupadd --system --gid 10001 dahell \
    && useradd --system --uid 10001 --gid dahell --create-home --home-dir /home/dahell dahell \
    && mkdir -p /data /models \
    && chown dahell:dahell /data /models

WORKDIR /app

# Dependencies first, from pyproject.toml only: this layer is rebuilt when they change, not when
# the code does. The [cuda,cudnn] extra brings the CUDA libraries as wheels; ldconfig makes them
# findable by onnxruntime's CUDA provider without LD_LIBRARY_PATH.
COPY pyproject.toml README.md ./
RUN python -c "import tomllib; print('\n'.join(tomllib.load(open('pyproject.toml', 'rb'))['project']['dependencies']))" > /tmp/requirements.txt \
    && pip install --no-cache-dir -r /tmp/requirements.txt "onnxruntime-gpu[cuda,cudnn]>=1.18" \
    && rm /tmp/requirements.txt \
    && { find /usr/local/lib/python3.11/site-packages/nvidia -name 'lib*.so*' -printf '%h\n' || true; } \
        | sort -u > /etc/ld.so.conf.d/nvidia-wheels.conf \
    && ldconfig

# The code, installed in place: migrations are read from /app/sql, next to /app/dahell.
COPY dahell ./dahell
COPY sql ./sql
# The tiny test model (for `dahell demo`), writable: the embedder may save an optimised graph.
COPY --chown=10001:10001 models ./models
RUN pip install --no-cache-dir --no-deps -e .

ENV DAHELL_PATHS__DATA_DIR=/data \
    DAHELL_VECTORIZER__MODEL_DIR=/models/siglip-so400m-patch14-384 \
    DAHELL_HTTP__LISTEN=0.0.0.0:9464 \
    HOME=/home/dahell

USER 10001:10001
VOLUME ["/data", "/models"]
EXPOSE 9464

# /healthz answers 503 (urlopen raises, exit 1) when a stage has failed or stalled.
HEALTHCHECK --interval=30s --timeout=5s --start-period=120s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:9464/healthz', timeout=4)"]

STOPSIGNAL SIGTERM
ENTRYPOINT ["tini", "--", "python", "-m", "dahell"]
CMD ["run"]
