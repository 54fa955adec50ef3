#!/bin/bash
# Push and pull 500 MB in five layers between an OCI layout and a local
# distribution registry: hoist-registry's `transfer` example side by side with
# `skopeo copy`, same layout, fresh registry per run. Prints seconds and peak
# RSS (KB). Usage (from the repository root, after
# `cargo build --release -p hoist-registry --example transfer`):
#   registry/bench/transfer.sh [RUNS]
set -euo pipefail
RUNS=${1:-3}
TARGET=${CARGO_TARGET_DIR:-target}
T=$TARGET/release/examples/transfer
W=${BENCH_WORK:-/tmp/hoist-registry-bench}
mkdir -p "$W"

# The layout: five 100 MiB random layers (already "compressed" as far as a
# registry client is concerned), made once.
if [ ! -f "$W/layout/.done" ]; then
  rm -rf "$W/layout" && mkdir -p "$W/layout/blobs/sha256"
  layers=""
  for i in 1 2 3 4 5; do
    head -c $((100 << 20)) /dev/urandom > "$W/l$i"
    d=$(sha256sum "$W/l$i" | cut -d' ' -f1); mv "$W/l$i" "$W/layout/blobs/sha256/$d"
    layers="$layers{\"mediaType\":\"application/vnd.oci.image.layer.v1.tar+gzip\",\"digest\":\"sha256:$d\",\"size\":$((100 << 20))},"
  done
  printf '{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]}}' > "$W/config"
  c=$(sha256sum "$W/config" | cut -d' ' -f1); cs=$(stat -c %s "$W/config"); mv "$W/config" "$W/layout/blobs/sha256/$c"
  printf '{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"sha256:%s","size":%s},"layers":[%s]}' "$c" "$cs" "${layers%,}" > "$W/manifest"
  m=$(sha256sum "$W/manifest" | cut -d' ' -f1); ms=$(stat -c %s "$W/manifest"); mv "$W/manifest" "$W/layout/blobs/sha256/$m"
  printf '{"imageLayoutVersion":"1.0.0"}' > "$W/layout/oci-layout"
  printf '{"schemaVersion":2,"manifests":[{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"sha256:%s","size":%s,"annotations":{"org.opencontainers.image.ref.name":"f"}}]}' "$m" "$ms" > "$W/layout/index.json"
  touch "$W/layout/.done"
fi

registry_up() {
  local port; port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
  rm -rf "$W/registry"; mkdir -p "$W/registry/data"
  printf 'version: 0.1\nlog: {level: error}\nstorage: {filesystem: {rootdirectory: %s/registry/data}, delete: {enabled: true}}\nhttp: {addr: 127.0.0.1:%s}\n' "$W" "$port" > "$W/registry/config.yml"
  docker-registry serve "$W/registry/config.yml" > "$W/registry/log" 2>&1 &
  REG_PID=$!; REG=127.0.0.1:$port
  for _ in $(seq 50); do curl -fsS "http://$REG/v2/" > /dev/null 2>&1 && return 0; sleep 0.1; done
  echo "registry did not start" >&2; exit 1
}
registry_down() { kill "$REG_PID"; wait "$REG_PID" 2> /dev/null || true; }
timed() { local label=$1; shift; sync; /usr/bin/time -f "$label %e s %M KB" "$@" 2>&1 | grep -E " s [0-9]+ KB$"; }

for _ in $(seq "$RUNS"); do
  registry_up
  timed "hoist  push" "$T" push "$W/layout" f "$REG/bench/f:1"
  rm -rf "$W/pulled"; timed "hoist  pull" "$T" pull "$REG/bench/f:1" "$W/pulled" f
  registry_down
  registry_up
  timed "skopeo push" skopeo copy -q --dest-tls-verify=false "oci:$W/layout:f" "docker://$REG/bench/f:1"
  rm -rf "$W/pulled"; timed "skopeo pull" skopeo copy -q --src-tls-verify=false "docker://$REG/bench/f:1" "oci:$W/pulled:f"
  registry_down
done
