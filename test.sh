#!/usr/bin/env bash
# Run every test: makes .venv from requirements.lock with the export extra (torch's CPU build,
# transformers, optimum: the model parity tests need them), then pytest with any arguments given.
#
# Two test processes (pytest-xdist): most of the suite waits on daemons, Chromium, PostgreSQL
# and timers rather than computing, so two overlap those waits (each has its own embedded
# PostgreSQL, browser and temporary folders). `--dist worksteal` evens out the long e2e tests.
# Arguments come after, so `./test.sh -n 0` runs in one process and `-n 4` in four.
# pytest's own exit status is kept: 5 (no test collected) fails like a failing test.
set -euo pipefail
cd "$(dirname "$0")"
scripts/bootstrap.sh cpu,dev,export
exec .venv/bin/python -m pytest -n 2 --dist worksteal "$@"
