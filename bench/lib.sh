# Helpers for bench/run and bench/setup. Sourced, never run.
BENCH_WORK=${BENCH_WORK:-/tmp/hoist-bench}
BENCH_SCEN=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/scenarios

# base_tar OUT: a busybox rootfs tarball made from Debian's busybox-static (no network needed).
base_tar() {
  [ -f "$1" ] && return 0
  [ -x /bin/busybox ] || { echo "bench: /bin/busybox missing (apt-get install busybox-static, or bench/setup)" >&2; return 1; }
  local r; r=$(mktemp -d)
  mkdir -p "$r"/{bin,etc,tmp,root,proc,sys,dev}
  cp /bin/busybox "$r/bin/busybox"
  for a in $(/bin/busybox --list); do [ "$a" = busybox ] || ln -sf busybox "$r/bin/$a"; done
  printf 'root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n' > "$r/etc/passwd"
  printf 'root:x:0:\nnogroup:x:65534:\n' > "$r/etc/group"
  chmod 1777 "$r/tmp"
  tar -C "$r" --numeric-owner -cf "$1.part" . && mv "$1.part" "$1"
  rm -rf "$r"
}

# debian_tar OUT: a Debian 12 minbase rootfs tarball made with debootstrap from the Debian
# mirror apt already uses (no image registry involved).
debian_tar() {
  [ -f "$1" ] && return 0
  command -v debootstrap >/dev/null || { echo "bench: debootstrap missing (bench/setup)" >&2; return 1; }
  local r; r=$(mktemp -d)
  debootstrap --variant=minbase bookworm "$r" >"$BENCH_WORK/debootstrap.log" 2>&1 \
    || { echo "bench: debootstrap failed (see $BENCH_WORK/debootstrap.log)" >&2; rm -rf "$r"; return 1; }
  tar -C "$r" --numeric-owner -cf "$1.part" . && mv "$1.part" "$1"
  rm -rf "$r"
}

# docker_up: a dockerd of the bench's own (Debian's docker.io), on a private socket, data root
# and exec root, with no bridge or iptables rules: nothing shared with a system daemon, and a
# fresh store every run. Exports DOCKER_HOST. docker_down stops it and unmounts what it left.
# The data root is in $BENCH_WORK, beside the other tools' stores: every builder writes to the
# same filesystem (a journal-less ext4 and a tmpfs, say, differ several-fold in file creation).
docker_up() {
  command -v dockerd >/dev/null || { echo "bench: dockerd missing (bench/setup --with-docker)" >&2; return 1; }
  # Short: containerd's socket under the exec root must fit in sun_path (108 bytes).
  DOCKERD_DIR=$(mktemp -d /tmp/hbd.XXXX); DOCKERD_ROOT=$(mktemp -d "$BENCH_WORK/dockerd.XXXX")
  dockerd --data-root "$DOCKERD_ROOT" --exec-root "$DOCKERD_DIR/exec" --pidfile "$DOCKERD_DIR/pid" \
    -H "unix://$DOCKERD_DIR/sock" --bridge=none --iptables=false --ip6tables=false \
    --storage-driver=overlay2 >"$DOCKERD_DIR/log" 2>&1 </dev/null &
  DOCKERD_PID=$!
  export DOCKER_HOST="unix://$DOCKERD_DIR/sock"
  for _ in $(seq 120); do docker version >/dev/null 2>&1 && return 0; sleep 0.5; done
  echo "bench: dockerd did not answer within 60 s (log: $DOCKERD_DIR/log)" >&2; return 1
}
docker_down() {
  [ -n "${DOCKERD_PID:-}" ] || return 0
  kill -TERM "$DOCKERD_PID" 2>/dev/null
  for _ in $(seq 60); do kill -0 "$DOCKERD_PID" 2>/dev/null || break; sleep 0.5; done
  kill -KILL "$DOCKERD_PID" 2>/dev/null; wait "$DOCKERD_PID" 2>/dev/null
  local d; for d in "$DOCKERD_DIR" "$DOCKERD_ROOT"; do
    awk -v d="$d" 'index($5, d) == 1 {print $5}' /proc/self/mountinfo | sort -r | while read -r m; do umount "$m" 2>/dev/null; done
  done
  rm -rf "$DOCKERD_DIR" "$DOCKERD_ROOT"; DOCKERD_PID=
}

# free_port: an unused TCP port on loopback.
free_port() { python3 -c 'import socket;s=socket.socket();s.bind(("127.0.0.1",0));print(s.getsockname()[1])'; }

# registry_up: a throwaway distribution registry (Debian's docker-registry) on loopback; sets REG=host:port.
registry_up() {
  local port dir; port=$(free_port); dir="$BENCH_WORK/registry"
  rm -rf "$dir"; mkdir -p "$dir/data"
  printf 'version: 0.1\nlog: {level: error}\nstorage: {filesystem: {rootdirectory: %s/data}, delete: {enabled: true}}\nhttp: {addr: 127.0.0.1:%s}\n' "$dir" "$port" > "$dir/config.yml"
  /usr/bin/docker-registry serve "$dir/config.yml" >"$dir/log" 2>&1 &
  REG_PID=$!; REG="127.0.0.1:$port"
  for _ in $(seq 50); do curl -fsS "http://$REG/v2/" >/dev/null 2>&1 && return 0; sleep 0.1; done
  echo "bench: registry did not start (log: $dir/log)" >&2; return 1
}
registry_down() { [ -n "${REG_PID:-}" ] && kill "$REG_PID" 2>/dev/null; wait "${REG_PID:-}" 2>/dev/null || true; REG_PID=; }
