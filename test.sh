#!/usr/bin/env bash
# Run every test: makes .venv from requirements.lock with the export extra (torch's CPU build,
# transformers, optimum: the model parity tests need them), then pytest with any arguments given.
set -euo pipefail
cd "$(dirname "$0")"
scripts/bootstrap.sh cpu,dev,export
exec .venv/bin/python -m pytest "$@"
