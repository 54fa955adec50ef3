#!/usr/bin/env bash
# Runs every cargo-fuzz target of the workspace for a short budget each
# (HOIST_FUZZ_SECONDS, default 20), starting from its corpus in the repo.
# Needs cargo-fuzz and a nightly toolchain (`cargo install cargo-fuzz`,
# `rustup toolchain install nightly`); without them it says so and exits 0:
# the corpora are replayed on stable by `cargo test` in any case
# (docs/reliability.md). New inputs go to a scratch directory, not the repo;
# a crash fails the run and leaves its input under <crate>/fuzz/artifacts/.
#
# Usage: ./scripts/fuzz.sh [CRATE/TARGET ...]   (default: every target)
# HOIST_FUZZ_SECONDS (20) per target, HOIST_FUZZ_BUDGET (900) in all.
set -euo pipefail
cd "$(dirname "$0")/.."
seconds="${HOIST_FUZZ_SECONDS:-20}"
# Building a target with sanitizers costs minutes (autobuild's most): past
# this many seconds in all, the remaining targets are skipped, named (a
# build still running then is stopped). 0 skips fuzzing altogether.
budget="${HOIST_FUZZ_BUDGET:-900}"
start=$SECONDS

if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "fuzz: skipped: cargo-fuzz is not installed (cargo install cargo-fuzz)"
    exit 0
fi
if ! cargo +nightly --version >/dev/null 2>&1; then
    echo "fuzz: skipped: no nightly toolchain (rustup toolchain install nightly)"
    exit 0
fi

targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
    # Cheapest builds first, so a tight budget still fuzzes most targets.
    for crate in untrusted frontend snapshotter autobuild; do
        for t in $(cd "$crate" && cargo +nightly fuzz list); do
            targets+=("$crate/$t")
        done
    done
fi

# As root, each run gets a private mount namespace over a fresh tmpfs /tmp:
# the layer-apply target's sentinels live there, and a real escape found by
# the fuzzer writes where the layer aims (snapshotter/fuzz/README.md).
isolate=()
if [ "$(id -u)" = 0 ] && command -v unshare >/dev/null; then
    isolate=(unshare --mount --propagation private sh -c 'mount -t tmpfs tmpfs /tmp && exec "$@"' sh)
fi

summary=()
for ct in "${targets[@]}"; do
    crate="${ct%%/*}" target="${ct#*/}"
    if [ $((SECONDS - start)) -ge "$budget" ]; then
        summary+=("$crate/$target: skipped, the ${budget}s budget is spent")
        continue
    fi
    scratch="$(mktemp -d "${TMPDIR:-/var/tmp}/hoist-fuzz.XXXXXX")"
    mkdir "$scratch/new"
    log="$scratch/log"
    echo "fuzz: $crate/$target for ${seconds}s"
    # The build counts against the budget too: one cut short skips the rest.
    left=$((budget - (SECONDS - start)))
    if ! (cd "$crate" && timeout "$left" cargo +nightly fuzz build -O "$target"); then
        if [ $((SECONDS - start)) -ge "$budget" ]; then
            summary+=("$crate/$target: skipped, its build ran past the ${budget}s budget")
            rm -rf "$scratch"
            continue
        fi
        echo "fuzz: building $crate/$target failed" >&2
        exit 1
    fi
    status=0
    (cd "$crate" && "${isolate[@]}" cargo +nightly fuzz run -O "$target" \
        "$scratch/new" "fuzz/corpus/$target" -- \
        -max_total_time="$seconds" -timeout=20 -print_final_stats=1) >"$log" 2>&1 || status=$?
    runs="$(grep -o 'Done [0-9]* runs' "$log" | grep -o '[0-9]*' || echo '?')"
    summary+=("$crate/$target: $runs executions in ${seconds}s, exit $status")
    if [ "$status" != 0 ]; then
        tail -n 60 "$log"
        echo "fuzz: $crate/$target failed; the input is under $crate/fuzz/artifacts/$target/" >&2
        printf '%s\n' "${summary[@]}"
        exit 1
    fi
    rm -rf "$scratch"
done
printf 'fuzz: %s\n' "${summary[@]}"
