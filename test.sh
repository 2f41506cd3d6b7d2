#!/usr/bin/env bash
# Run every test: makes .venv from requirements.lock with the export extra (torch's CPU build,
# transformers, optimum: the model parity tests need them), then pytest with any arguments given.
#
# Two test processes (pytest-xdist; each has its own embedded PostgreSQL, browser and temporary
# folders): the suite mostly waits on daemons, Chromium and timers, so two halve its time on two
# cores (689 tests: 142 s against about 250 s in one). `./test.sh -n 0` runs them in one process;
# any other pytest arguments pass through (`./test.sh tests/unit -q`).
# pytest's own exit status is kept: 5 (no test collected) fails like a failing test.
set -euo pipefail
cd "$(dirname "$0")"
scripts/bootstrap.sh cpu,dev,export
exec .venv/bin/python -m pytest -n 2 --dist worksteal "$@"
