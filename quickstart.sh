#!/usr/bin/env bash
# Set up dahell on a fresh machine and run the whole pipeline on the embedded defaults:
# a local Dropi simulator, the embedded PostgreSQL and the tiny test model (python -m dahell demo).
set -euo pipefail
cd "$(dirname "$0")"
if ! command -v chromium >/dev/null 2>&1; then
    if [ "$(id -u)" -eq 0 ]; then
        apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium
    else
        echo "dahell needs Chromium: sudo apt-get install -y chromium" >&2
        exit 1
    fi
fi
python3 -m pip install -q -e '.[dev]'
exec python3 -m dahell demo "$@"
