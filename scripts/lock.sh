#!/usr/bin/env bash
# Re-resolve requirements.lock from pyproject.toml: exact versions of every package, direct and
# transitive, for every extra (cpu, gpu, export, dev), for CPython 3.11+ on Linux x86-64.
#
# Everything installs from this one file used as a pip constraint (`pip install -c
# requirements.lock '.[cpu,dev]'`): quickstart.sh, test.sh, .ci/run and the Dockerfile. A package
# outside the lock cannot slip in unnoticed: .ci/run checks the installed set against it.
#
# torch is locked as its CPU build (X+cpu), which lives on PyTorch's CPU index rather than PyPI.
# TORCH_CPU_WHEELS names where to find it: a folder of wheels or that index's torch page
# (default: /opt/wheels when it exists, else https://download.pytorch.org/whl/cpu/torch/).
#
# Upgrade everything:   scripts/lock.sh --upgrade
# Upgrade one package:  scripts/lock.sh --upgrade-package aiohttp
# Check it is current:  scripts/lock.sh --check   (CI: pyproject changed, lock not re-resolved)
set -euo pipefail
cd "$(dirname "$0")/.."
UV=${UV:-$(command -v .venv/bin/uv || command -v uv)}
if [ -z "${TORCH_CPU_WHEELS:-}" ]; then
    if [ -d /opt/wheels ]; then TORCH_CPU_WHEELS=/opt/wheels
    else TORCH_CPU_WHEELS=https://download.pytorch.org/whl/cpu/torch/; fi
fi
compile() {
    "$UV" pip compile pyproject.toml --all-extras --quiet \
        --python-version 3.11 --python-platform x86_64-manylinux_2_28 \
        --find-links "$TORCH_CPU_WHEELS" \
        --constraint scripts/lock-constraints.txt \
        --no-header --annotation-style line "$@"
}
if [ "${1:-}" = "--check" ]; then
    # Re-resolve a copy (its pins are kept as preferences) and compare.
    fresh=$(mktemp)
    trap 'rm -f "$fresh"' EXIT
    cp requirements.lock "$fresh"
    compile --output-file "$fresh"
    if ! diff -u requirements.lock "$fresh"; then
        echo "requirements.lock is out of date with pyproject.toml: run scripts/lock.sh" >&2
        exit 1
    fi
    echo "requirements.lock is up to date"
    exit 0
fi
compile --output-file requirements.lock "$@"
