#!/usr/bin/env bash
# Runs each cargo-fuzz target (fuzz/fuzz_targets/) for a set time and keeps its corpus
# in the repo (fuzz/corpus/TARGET/).
#
#   scripts/fuzz.sh [SECONDS_PER_TARGET] [TARGET...]     default: 60 s, every target
#
# On stable Rust (no nightly here) it builds with `-s none` (no sanitizer: the
# targets are safe Rust, so ASan adds little); cargo-fuzz 0.13 builds that on stable
# as it is. Should a cargo-fuzz version pass -Z flags, the build is retried with
# RUSTC_BOOTSTRAP=1 (stable rustc then takes them, as cargo-fuzz users on stable do);
# set RUSTC_BOOTSTRAP=1 yourself to skip the first try (it changes the build
# fingerprint, so keep to one or the other). With a nightly toolchain set
# FUZZ_TOOLCHAIN=nightly to get AddressSanitizer instead. New corpus entries go to a scratch directory and are merged
# (minimized) into fuzz/corpus/TARGET afterwards, so the checked-in corpus only grows
# by inputs that add coverage. A crash stops the run with its artifact named; turn it
# into a regression test before checking anything in.
#
# Env: FUZZ_TARGET_DIR (default /work/target-fuzz/fuzz or target/fuzz), FUZZ_RSS_MB
# (2048), FUZZ_MAX_LEN (default per target below).
set -euo pipefail

cd "$(dirname "$0")/.."
secs=${1:-60}
shift || true

if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "cargo-fuzz missing: cargo install cargo-fuzz" >&2
    exit 1
fi

toolchain=()
sanitizer=(-s none)
if [[ ${FUZZ_TOOLCHAIN:-} == nightly ]]; then
    toolchain=(+nightly)
    sanitizer=()
fi
if [[ -z ${FUZZ_TARGET_DIR:-} ]]; then
    if [[ -d /work/target-fuzz ]]; then
        FUZZ_TARGET_DIR=/work/target-fuzz/fuzz
    else
        FUZZ_TARGET_DIR=$PWD/target/fuzz
    fi
fi
export CARGO_TARGET_DIR=$FUZZ_TARGET_DIR

mapfile -t all < <(cargo "${toolchain[@]}" fuzz list --fuzz-dir fuzz)
targets=("$@")
[[ ${#targets[@]} -gt 0 ]] || targets=("${all[@]}")

# Inputs longer than this are not worth the time per run for the target.
max_len() {
    case $1 in
        har_import | mitm_import | flow_file) echo 16384 ;;
        client_hello) echo 8192 ;;
        *) echo 4096 ;;
    esac
}

if ! cargo "${toolchain[@]}" fuzz build "${sanitizer[@]}" --fuzz-dir fuzz; then
    [[ -z ${RUSTC_BOOTSTRAP:-} && -z ${toolchain[*]} ]] || exit 1
    echo "build failed on stable; retrying with RUSTC_BOOTSTRAP=1" >&2
    export RUSTC_BOOTSTRAP=1
    cargo fuzz build "${sanitizer[@]}" --fuzz-dir fuzz
fi

summary=()
for t in "${targets[@]}"; do
    corpus=fuzz/corpus/$t
    scratch=$(mktemp -d)
    mkdir -p "$corpus" fuzz/artifacts/"$t"
    log=$(mktemp)
    echo "== $t: ${secs}s"
    set +e
    cargo "${toolchain[@]}" fuzz run "${sanitizer[@]}" --fuzz-dir fuzz "$t" "$scratch" "$corpus" -- \
        -max_total_time="$secs" -max_len="${FUZZ_MAX_LEN:-$(max_len "$t")}" \
        -rss_limit_mb="${FUZZ_RSS_MB:-2048}" -timeout=10 \
        -print_final_stats=1 2>&1 | tee "$log" | grep -E "^(#[0-9]+.*(pulse|DONE)|==|SUMMARY|Test unit|artifact_prefix)"
    rc=${PIPESTATUS[0]}
    set -e
    runs=$(grep -oE "stat::number_of_executed_units: *[0-9]+" "$log" | grep -oE "[0-9]+$" | tail -1)
    if [[ $rc -ne 0 ]]; then
        echo "!! $t failed (exit $rc); the crashing input is under fuzz/artifacts/$t" >&2
        grep -E "panicked|ERROR|Test unit written" "$log" >&2 || true
        summary+=("$t: CRASH after ${runs:-?} executions")
        rm -rf "$scratch" "$log"
        continue
    fi
    # keep only inputs that add coverage: merge scratch + corpus into a fresh directory
    merged=$(mktemp -d)
    cargo "${toolchain[@]}" fuzz run "${sanitizer[@]}" --fuzz-dir fuzz "$t" "$merged" "$corpus" "$scratch" -- \
        -merge=1 -max_len="${FUZZ_MAX_LEN:-$(max_len "$t")}" >/dev/null 2>&1 &&
        rm -rf "$corpus" && mv "$merged" "$corpus" && chmod 755 "$corpus" || rm -rf "$merged"
    summary+=("$t: ${runs:-?} executions, corpus $(ls "$corpus" | wc -l) files")
    rm -rf "$scratch" "$log"
done
echo
printf '%s\n' "${summary[@]}"
echo "corpus total: $(du -sb fuzz/corpus | cut -f1) bytes"
