#!/usr/bin/env bash
# Install every Debian package the tests need (when missing), then run the
# whole test suite. As root, HOIST_REQUIRE_ROOT_TESTS=1 turns skipped root
# and program-dependent tests into failures, as in CI.
#
# Usage: ./scripts/test.sh [extra cargo test arguments]
set -euo pipefail
cd "$(dirname "$0")/.."

packages=(
    build-essential pkg-config  # C compiler for the bundled SQLite and zstd
    busybox-static skopeo umoci docker-registry buildah crun runc uidmap
    apache2-utils fuse-overlayfs attr libcap2-bin git iproute2 tar gzip
    chromium  # the autobuild status page is tested in headless Chromium
    openssh-client openssh-server  # ssh-agent and sshd for the ssh mount and git-over-ssh tests
    qemu-user-static  # RUN steps of foreign-platform builds (tests/build/platform.rs)
    zsh fish man-db tinyproxy openssl  # completion scripts parsed, man pages rendered, proxy and TLS tests
    docker.io  # a real Docker engine (started by the tests) reads `--load` and `hoist save`
    slirp4netns  # the default network of RUN steps (runner/src/net.rs)
    postgresql  # the autobuild PostgreSQL queue (testutil/src/postgres.rs)
    time  # GNU time measures hoist's peak RSS (tests/it/remote_input.rs)
)
missing=()
for p in "${packages[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
    if [ "$(id -u)" = 0 ]; then
        apt-get update
        DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "${missing[@]}"
    elif command -v sudo >/dev/null; then
        sudo apt-get update
        sudo DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "${missing[@]}"
    else
        echo "warning: missing Debian packages (tests needing them will skip): ${missing[*]}" >&2
    fi
fi

# An arm64 base image for the foreign-platform tests, made offline from
# Debian's busybox-static:arm64 (downloaded once, never installed).
if [ "$(id -u)" = 0 ] && ! ls /var/cache/hoist-test/busybox-static_*_arm64.deb >/dev/null 2>&1; then
    dpkg --print-foreign-architectures | grep -qx arm64 || dpkg --add-architecture arm64
    apt-get update
    mkdir -p /var/cache/hoist-test
    (cd /var/cache/hoist-test && apt-get download busybox-static:arm64)
fi
# An i386 busybox for the runner's seccomp test of 32-bit steps (linux/386).
if [ "$(id -u)" = 0 ] && [ "$(uname -m)" = x86_64 ] && ! ls /var/cache/hoist-test/busybox-static_*_i386.deb >/dev/null 2>&1; then
    dpkg --print-foreign-architectures | grep -qx i386 || dpkg --add-architecture i386
    apt-get update
    mkdir -p /var/cache/hoist-test
    (cd /var/cache/hoist-test && apt-get download busybox-static:i386)
fi

if [ "$(id -u)" = 0 ]; then
    export HOIST_REQUIRE_ROOT_TESTS=1
fi
# /dev/null was once seen replaced by a plain file while tests ran; a
# suite that does that must fail, not pass and leave the host broken.
devnull_ok() { [ -c /dev/null ] && [ "$(stat -c %t:%T /dev/null)" = 1:3 ]; }
devnull_ok || { echo "error: /dev/null is not the null device before the tests" >&2; exit 1; }
status=0
cargo test --workspace "$@" || status=$?
if ! devnull_ok; then
    echo "error: the test suite replaced /dev/null: $(ls -l /dev/null)" >&2
    if [ "$(id -u)" = 0 ]; then
        rm -f /dev/null && mknod -m 666 /dev/null c 1 3
    fi
    exit 1
fi
exit "$status"
