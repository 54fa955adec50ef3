#!/usr/bin/env bash
# hoist's offline demo: a busybox base image made from Debian's
# busybox-static, a two-stage Dockerfile (testdata/demo/) built on it, built
# again from the cache, and the image commands around them, all in a
# throw-away store.
#
# Usage: ./scripts/demo.sh   (after `cargo build --release`)
set -euo pipefail
cd "$(dirname "$0")/.."

target_dir=${CARGO_TARGET_DIR:-target}
hoist=${HOIST:-$target_dir/release/hoist}
[ -x "$hoist" ] || hoist=$target_dir/debug/hoist
[ -x "$hoist" ] || { echo "error: no hoist binary in $target_dir; run \`cargo build --release\` first" >&2; exit 1; }

if [ ! -x /bin/busybox ]; then
    if [ "$(id -u)" = 0 ]; then
        apt-get install -y --no-install-recommends busybox-static >/dev/null
    else
        echo "error: /bin/busybox is missing: run \`sudo apt-get install busybox-static\`" >&2
        exit 1
    fi
fi

work=$(mktemp -d "${TMPDIR:-/tmp}/hoist-demo.XXXXXX")
trap 'rm -rf "$work"' EXIT
store=$work/store
step() { printf '\n\033[1m$ %s\033[0m\n' "$*"; }
run() { step "hoist $*"; "$hoist" --root "$store" "$@"; }

./scripts/busybox-rootfs.sh "$work/rootfs"
tar --sort=name --numeric-owner --owner=0 --group=0 -C "$work/rootfs" -cf "$work/busybox.tar" .

run import "$work/busybox.tar" busybox:latest --change 'CMD ["sh"]' --message "busybox from Debian's busybox-static"
run build --progress plain -t demo/hello:1 testdata/demo
step "touch testdata/demo/hello.sh (same content, new mtime): every step is cached"
touch testdata/demo/hello.sh
run build --progress plain -t demo/hello:1 testdata/demo
run tag demo/hello:1 demo/hello:latest
run images
run images --tree
run history demo/hello:1
step "hoist inspect demo/hello:1 (abridged)"
"$hoist" --root "$store" inspect demo/hello:1 | grep -E '"(Id|ManifestDigest|Size|Created)"'
run save --format oci demo/hello:1 -o "$work/hello-oci.tar"
run save --format docker demo/hello:1 -o "$work/hello-docker.tar"
if command -v skopeo >/dev/null; then
    step "skopeo inspect oci-archive:hello-oci.tar"
    skopeo inspect "oci-archive:$work/hello-oci.tar" | grep -E '"(Digest|Architecture|Os)"'
fi
step "hoist load (into a second store)"
"$hoist" --root "$work/store2" load -i "$work/hello-docker.tar"
"$hoist" --root "$work/store2" images
if command -v umoci >/dev/null && [ "$(id -u)" = 0 ]; then
    step "umoci unpack + chroot: run the image's CMD"
    mkdir "$work/layout" && tar -C "$work/layout" -xf "$work/hello-oci.tar"
    umoci unpack --image "$work/layout:docker.io/demo/hello:1" "$work/bundle" >/dev/null
    mkdir -p "$work/bundle/rootfs/srv"
    chroot "$work/bundle/rootfs" /bin/sh -c 'cd /srv && /usr/local/bin/hello && cat /usr/local/share/hello/BUILDINFO'
fi
run du
printf '\ndemo finished: the store was %s (removed now)\n' "$store"
