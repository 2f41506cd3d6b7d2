#!/usr/bin/env bash
# Set up dahell on a fresh machine and run the whole pipeline on the embedded defaults:
# a local Dropi simulator, the embedded PostgreSQL and the tiny test model (dahell demo).
# Installs what is missing (as root: python3-venv, Chromium), makes .venv from requirements.lock,
# never touches the system Python. Any arguments go to `dahell demo`; without a terminal on
# stdin (CI, scripts) the demo exits after its summary instead of serving the status page.
set -euo pipefail
cd "$(dirname "$0")"
scripts/bootstrap.sh cpu,dev
args=("$@")
if [ ! -t 0 ]; then args+=(--no-wait); fi
status=0
.venv/bin/python -m dahell demo "${args[@]}" || status=$?
cat <<'NEXT'

Next:
  ./test.sh                                   run every test (adds the export extra: torch CPU)
  DAHELL_PATHS__DATA_DIR=data/demo .venv/bin/python -m dahell top   the demo's best sellers (--json, --csv)
  .venv/bin/python -m dahell --help           every command
  DAHELL_SCRAPER__EMAIL=... DAHELL_SCRAPER__PASSWORD=... .venv/bin/python -m dahell run
NEXT
exit "$status"
