#!/usr/bin/env bash
# Make the project's own environment, .venv, from requirements.lock: what quickstart.sh and
# test.sh run first. Never installs into the system Python.
#
#   scripts/bootstrap.sh EXTRAS     e.g. "cpu,dev" (quick start) or "cpu,dev,export" (tests)
#
# On a bare Debian/Ubuntu machine it first installs, as root with apt-get, what is missing:
# Python's venv module (python3-venv), Chromium (the scraper's browser) and libatomic1 (needed
# by Playwright's bundled driver). Not root: it prints the apt-get command and stops.
# Running it again is fast: a stamp in .venv records the lock, pyproject and extras installed.
set -euo pipefail
cd "$(dirname "$0")/.."
EXTRAS=${1:-cpu,dev}
VENV=.venv
say() { printf 'dahell setup: %s\n' "$*" >&2; }

missing_debs() {
    python3 -c 'import venv, ensurepip' >/dev/null 2>&1 || echo python3-venv
    command -v chromium >/dev/null 2>&1 || echo chromium
    ldconfig -p 2>/dev/null | grep -q 'libatomic\.so\.1' || echo libatomic1
    [ -e /etc/ssl/certs/ca-certificates.crt ] || echo ca-certificates
}

install_debs() {
    local debs
    debs=$(missing_debs | tr '\n' ' ')
    [ -z "${debs// /}" ] && return 0
    if [ "$(id -u)" -ne 0 ]; then
        say "missing system packages: $debs"
        say "run: sudo apt-get install -y $debs   (then run this again)"
        exit 1
    fi
    say "installing system packages: $debs"
    apt-get update -qq
    # shellcheck disable=SC2086
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $debs >/dev/null
}

# Where pip finds torch's CPU build (locked as X+cpu): a configured wheel folder that holds it,
# else PyTorch's CPU index page. Only asked for when the export extra is installed.
torch_links() {
    case ",$EXTRAS," in *,export,*) ;; *) return 0 ;; esac
    if [ -n "${TORCH_CPU_WHEELS:-}" ]; then echo "--find-links=$TORCH_CPU_WHEELS"; return 0; fi
    local want dirs d
    want=$(sed -n 's/^torch==\([^ ]*\).*/\1/p' requirements.lock)
    dirs="${PIP_FIND_LINKS:-} $("$VENV/bin/python" -m pip config get global.find-links 2>/dev/null || true)"
    for d in $dirs; do
        d=${d#file://}
        compgen -G "$d/torch-${want}-*.whl" >/dev/null 2>&1 && return 0
    done
    echo "--find-links=https://download.pytorch.org/whl/cpu/torch/"
}

install_debs
if [ ! -x "$VENV/bin/python" ] || ! "$VENV/bin/python" -c 'import sys' >/dev/null 2>&1; then
    say "creating $VENV"
    rm -rf "$VENV"
    python3 -m venv "$VENV"
fi
stamp="$VENV/.dahell-installed"
want="$EXTRAS $(cat requirements.lock pyproject.toml | sha256sum | cut -d' ' -f1)"
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
    exit 0
fi
# pip warns once per package and configured index that has no page for it ("Location
# 'file:///...' is ignored: it is neither a file nor a directory"): a machine whose pip config
# adds local file:// indexes that hold a few packages prints a screenful of them on every
# install. They are harmless (pip goes on to the next index), so exactly those lines are dropped
# from pip's stderr; every other line, errors included, still shows, and pip's exit status is
# kept (pipefail; the filter itself always succeeds).
IGNORED_LOCATION="^WARNING: Location 'file://[^']*' is ignored: it is neither a file nor a directory\.\$"
quiet_ignored_locations() { grep -v -E "$IGNORED_LOCATION" || true; }

say "installing dahell[$EXTRAS] from requirements.lock into $VENV"
export PIP_DISABLE_PIP_VERSION_CHECK=1
# stdout goes straight through (fd 3); only stderr passes the filter, then back to stderr.
{
    # shellcheck disable=SC2046
    "$VENV/bin/python" -m pip install -q -c requirements.lock $(torch_links) -e ".[$EXTRAS]" \
        2>&1 1>&3 3>&- | quiet_ignored_locations >&2
} 3>&1
echo "$want" > "$stamp"
