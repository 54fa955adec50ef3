#!/usr/bin/env python3
"""The machine's limit for each scenario of bench/run: a lower bound on the wall time
of any builder on this machine, from the work the scenario cannot avoid, measured in the
same run. Usage: limits.py WORK SCENARIO... ; prints "label seconds how" lines.

Inputs (all written by bench/run during the run):
- WORK/log/LABEL.hoist.log: hoist's build summary (the RUN steps' cgroup CPU time);
- WORK/ctx/CTX: the scenario's context (stat walk, bytes to hash);
- b3sum and openssl: this machine's hash rates;
- WORK/t/floor-*: the transfer and apt floors bench/run timed itself.
"""
import os
import re
import subprocess
import sys
import time

WORK = sys.argv[1]
CORES = os.cpu_count() or 1


def seconds(text):
    m = re.fullmatch(r"(\d+)m(\d+)s", text)
    if m:
        return int(m.group(1)) * 60 + int(m.group(2))
    m = re.fullmatch(r"([\d.]+)s", text)
    return float(m.group(1)) if m else None


def run_cpu(label):
    """CPU seconds of each RUN step hoist ran, from its last build summary."""
    path = os.path.join(WORK, "log", f"{label}.hoist.log")
    try:
        lines = open(path, errors="replace").read().splitlines()
    except OSError:
        return None
    starts = [i for i, l in enumerate(lines) if l.startswith("build summary (")]
    if not starts:
        return None
    cpus = []
    for line in lines[starts[-1] + 2 :]:
        if not line.startswith("  ") or line.startswith("  total:"):
            break
        cols = re.split(r"\s{2,}", line.strip())
        # name, result, wall, cpu, memory, layer
        if len(cols) >= 4 and "] RUN " in cols[0] and cols[1] == "done":
            cpu = seconds(cols[3])
            if cpu is not None:
                cpus.append(cpu)
    return cpus


def schedule(cpus):
    """The shortest any scheduler can run these steps in: their CPU spread over the
    cores, but no step faster than its own CPU time (each is one process chain)."""
    if not cpus:
        return 0.0
    return max(sum(cpus) / CORES, max(cpus))


def walk(ctx):
    """Seconds to stat every file of the context (what proves nothing changed), and
    its bytes: measured, warm cache, best of three."""
    best, size = None, 0
    for _ in range(3):
        t0 = time.perf_counter()
        total = 0
        for root, _dirs, files in os.walk(ctx):
            for f in files:
                total += os.lstat(os.path.join(root, f)).st_size
        dt = time.perf_counter() - t0
        best, size = (dt if best is None else min(best, dt)), total
    return best, size


def sha256_rate():
    """Bytes per second of one core's SHA-256 (openssl, 1 MiB blocks: SHA-NI where the
    CPU has it, as hoist's sha2 uses it)."""
    out = subprocess.run(
        ["openssl", "speed", "-seconds", "2", "-bytes", "1048576", "sha256"],
        capture_output=True, text=True, check=True,
    ).stdout
    for line in out.splitlines():
        if line.startswith("sha256 "):
            return float(line.split()[-1].rstrip("k")) * 1000
    raise SystemExit("limits: no sha256 line in openssl speed's output")


def blake3_rate():
    """Bytes per second one core reads and hashes with BLAKE3 (b3sum, one thread,
    read(2) rather than mmap: the kernel's copy counted, as hoist pays it), the fastest
    collision-resistant hash on this machine and the one hoist hashes context files
    with. A 256 MiB file in WORK, in the page cache as it was just written; best of
    four."""
    sample = os.path.join(WORK, "t", "blake3-sample")
    with open(sample, "wb") as f:
        f.write(os.urandom(256 << 20))
    try:
        best = None
        for _ in range(4):
            t0 = time.perf_counter()
            subprocess.run(
                ["b3sum", "--num-threads", "1", "--no-mmap", sample],
                capture_output=True, check=True,
            )
            dt = time.perf_counter() - t0
            best = dt if best is None else min(best, dt)
        return (256 << 20) / best
    finally:
        os.remove(sample)


def floor(name):
    try:
        return float(open(os.path.join(WORK, "t", f"floor-{name}")).read().split()[0])
    except (OSError, ValueError, IndexError):
        return None


def emit(label, value, how):
    if value is not None:
        print(f"{label} {value:.2f} {how}")


for s in sys.argv[2:]:
    if s == "noop":
        t, _ = walk(os.path.join(WORK, "ctx", "multistage"))
        emit(s, t, "stat of every context file")
    elif s in ("multistage", "parallel", "biglayer", "biglayer-zstd"):
        cpus = run_cpu(s)
        if cpus:
            emit(s, schedule(cpus), f"RUN steps' CPU ({'+'.join(f'{c:.2f}' for c in cpus)} s) on {CORES} cores, none faster than its own CPU")
    elif s == "incremental":
        cpus = run_cpu(s)
        t, _ = walk(os.path.join(WORK, "ctx", "incremental"))
        if cpus is not None:
            emit(s, t + schedule(cpus), "stat of the 20,000 context files + the RUN after the COPY")
    elif s == "bigcontext":
        t, size = walk(os.path.join(WORK, "ctx", "bigcontext"))
        rate = blake3_rate()
        emit(s, t + size / (CORES * rate), f"stat walk + {size / 1e9:.2f} GB ÷ ({CORES} cores × BLAKE3 {rate / 1e9:.2f} GB/s, read and hashed)")
    elif s == "transfer":
        size, rate = floor("bytes"), sha256_rate()
        if size:
            hashed = size / (CORES * rate)
            curl = lambda n: f"{floor(n):.2f} s" if floor(n) is not None else "—"
            emit("transfer-push", hashed, f"{size / 1e6:.0f} MB hashed once on {CORES} cores at {rate / 1e9:.2f} GB/s (the registry must hash what it receives); curl PUTting the same blobs two at a time took {curl('push')}")
            emit("transfer-pull", hashed, f"the same bytes hashed once (the client must verify what it writes); curl fetching and writing them, unhashed, took {curl('pull')}")
    elif s == "apt":
        emit(s, floor("apt"), "the RUN's commands in a plain chroot (host network, dpkg unsafe-io), no builder")
