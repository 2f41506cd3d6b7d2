#!/usr/bin/env bash
# Make this machine ready for the container tests (tests/container/), as CI runs them:
#
#   tests/container/prepare.sh && .venv/bin/python -m pytest tests/container
#
# Idempotent; each step is skipped when already done:
# 1. podman, runc and mmdebstrap from Debian's archive (apt-get, as root), when missing;
# 2. a containers.conf for dahell's tests (runc, cgroupfs, no default ulimits: this machine's
#    cgroup layout refuses crun and setting rlimits), at $DAHELL_CONTAINERS_CONF;
# 3. the base image docker.io/library/debian:bookworm-slim: when it is absent and no registry
#    answers, made from Debian's archive with mmdebstrap --variant=minbase and imported under
#    that name, so the same Dockerfile builds unchanged here and where the registry is reachable.
#
# Not root, or without apt-get: it says what is missing and exits 0; the tests then skip with
# the reason ("no container engine") instead of failing.
set -euo pipefail
CONF=${DAHELL_CONTAINERS_CONF:-/etc/containers/dahell-tests.conf}
BASE=docker.io/library/debian:bookworm-slim
SUITE=bookworm
say() { printf 'container prepare: %s\n' "$*" >&2; }

install_engine() {
    local debs=()
    command -v podman >/dev/null 2>&1 || debs+=(podman)
    command -v runc >/dev/null 2>&1 || debs+=(runc)
    command -v mmdebstrap >/dev/null 2>&1 || debs+=(mmdebstrap)
    [ ${#debs[@]} -eq 0 ] && return 0
    if [ "$(id -u)" -ne 0 ] || ! command -v apt-get >/dev/null 2>&1; then
        say "missing ${debs[*]} and cannot install them (needs root and apt-get): tests will skip"
        exit 0
    fi
    say "installing ${debs[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${debs[@]}" >/dev/null
}

write_conf() {
    mkdir -p "$(dirname "$CONF")"
    local want
    want='# Written by dahell tests/container/prepare.sh: the podman settings this kind of machine needs.
[containers]
default_ulimits = []
log_driver = "k8s-file"

[engine]
runtime = "runc"
cgroup_manager = "cgroupfs"
events_logger = "file"
'
    if [ ! -f "$CONF" ] || [ "$(cat "$CONF")" != "$(printf '%s' "$want")" ]; then
        printf '%s' "$want" >"$CONF"
        say "wrote $CONF"
    fi
}

podman_() { CONTAINERS_CONF=$CONF podman "$@"; }

check_storage() {
    # vfs copies every layer in full: a 4 GB image fills the disk. Root podman picks overlay by
    # itself where the kernel has it; forcing it with --storage-driver clashes with a store
    # made before, so this only checks.
    local driver
    driver=$(podman_ info --format '{{.Store.GraphDriverName}}')
    [ "$driver" = overlay ] || say "warning: podman storage driver is $driver, not overlay"
}

make_base() {
    if podman_ image exists "$BASE"; then return 0; fi
    if timeout 60 podman_ pull -q "$BASE" >/dev/null 2>&1; then
        say "pulled $BASE"
        return 0
    fi
    say "no registry answers: making $BASE from Debian's archive (mmdebstrap $SUITE)"
    local tmp
    tmp=$(mktemp -d)
    trap 'rm -rf "$tmp"' RETURN
    # As debian:bookworm-slim is made: minbase, no docs, man pages or translations (kept out of
    # later apt installs too: the path-excludes stay in /etc/dpkg/dpkg.cfg.d), merged /usr
    # without the usrmerge tool (and the perl it pulls in: perl-base stays, as in the registry's
    # image), no apt lists.
    local opts=(--quiet --variant=minbase --include=usr-is-merged --aptopt='Acquire::Retries "3"')
    local dir
    for dir in doc man info locale groff lintian linda; do
        opts+=("--dpkgopt=path-exclude=/usr/share/$dir/*")
    done
    opts+=('--dpkgopt=path-include=/usr/share/doc/*/copyright')
    mmdebstrap "${opts[@]}" \
        --customize-hook='chroot "$1" env DEBIAN_FRONTEND=noninteractive apt-get purge -y -qq \
            usrmerge libfile-find-rule-perl libnumber-compare-perl libtext-glob-perl perl \
            perl-modules-5.36 libperl5.36 libgdbm6 libgdbm-compat4' \
        --customize-hook='rm -rf "$1"/var/lib/apt/lists/* "$1"/var/cache/apt/*' \
        "$SUITE" "$tmp/base.tar"
    podman_ import --quiet --change 'CMD ["bash"]' "$tmp/base.tar" "$BASE" >/dev/null
    say "imported $BASE"
}

[ "$(id -u)" -eq 0 ] || { say "not root: the container tests need root podman here; they will skip"; exit 0; }
install_engine
write_conf
check_storage
make_base
