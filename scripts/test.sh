#!/usr/bin/env bash
# The one test command: bash scripts/test.sh
#
# For a fresh Debian 12 machine (as root, Rust toolchain present) or a
# developer machine. Installs the system tools the tests use if missing, then
# runs, failing fast:
#   cargo fmt --check, cargo clippy -D warnings, cargo test (unit + integration),
#   cargo build + conformance/run.py (if conformance/run.py exists).
# Non-interactive (CI=true, no stdin). Prints a summary at the end.
set -euo pipefail
cd "$(dirname "$0")/.."

export DEBIAN_FRONTEND=noninteractive
export CARGO_TERM_COLOR="${CARGO_TERM_COLOR:-never}"
TARGET_DIR="${CARGO_TARGET_DIR:-target}"
LOG_DIR="$(mktemp -d "${TMPDIR:-/tmp}/luring-test.XXXXXX")"
T0=$(date +%s)
SUMMARY=()

say() { printf '\n=== %s\n' "$*"; }

finish() {
  local rc=$?
  local total=$(( $(date +%s) - T0 ))
  printf '\n=== summary (%ss total)\n' "$total"
  local line
  for line in "${SUMMARY[@]}"; do printf '  %s\n' "$line"; done
  # Aggregate of every "test result:" line cargo printed (unit, integration, doc).
  if [[ -f "$LOG_DIR/cargo-test.log" ]]; then
    awk '/^test result:/ {
           for (i = 1; i <= NF; i++) {
             if ($(i+1) ~ /^passed/) p += $i
             if ($(i+1) ~ /^failed/) f += $i
             if ($(i+1) ~ /^ignored/) s += $i
           }
         }
         END { printf "tests: %d passed, %d failed, %d skipped\n", p, f, s }' \
      "$LOG_DIR/cargo-test.log"
  fi
  if (( rc == 0 )); then echo "scripts/test.sh: OK"; else echo "scripts/test.sh: FAILED (exit $rc)"; fi
  rm -rf "$LOG_DIR"
  exit "$rc"
}
trap finish EXIT

# step NAME CMD...: run, time, record; stop at the first failure.
step() {
  local name=$1; shift
  say "$name: $*"
  local s=$(date +%s) rc=0
  "$@" || rc=$?
  local d=$(( $(date +%s) - s ))
  if (( rc == 0 )); then
    SUMMARY+=("ok    ${d}s  $name")
  else
    SUMMARY+=("FAIL  ${d}s  $name (exit $rc)")
    exit "$rc"
  fi
}

# ---------------------------------------------------------------------------
# System packages: command -> Debian package. Only what the tests use:
#   curl             integration tests (real client), conformance
#   python3, pip     conformance/run.py
#   nc, openssl, nghttp   conformance interop (raw TCP, TLS, HTTP/2 clients)
#   h2load, nghttpd       tests/http2.rs (HTTP/2 load client, h2-only origin)
#   redis-server          tests/hook_io.rs (rate limit shared by two luring processes)
#   tinyproxy             tests/chain.rs (--mode upstream: chained to a proxy no one here wrote)
#   nft                   tests/transparent.rs (the REDIRECT rule in a test namespace)
#   promtool              tests/metrics.rs (checks the Prometheus exposition)
APT_NEED=()
need_cmd() { command -v "$1" >/dev/null 2>&1 || APT_NEED+=("$2"); }
need_cmd curl curl
need_cmd python3 python3
need_cmd nc netcat-openbsd
need_cmd openssl openssl
need_cmd nghttp nghttp2-client
need_cmd h2load nghttp2-client
need_cmd nghttpd nghttp2-server
need_cmd tinyproxy tinyproxy
need_cmd nft nftables
need_cmd redis-server redis-server
need_cmd promtool prometheus
need_cmd nginx nginx-light   # tests/bench.rs: luring and nginx side by side
need_cmd slowhttptest slowhttptest   # tests/slow_clients.rs: slow header, body and read attacks
python3 -m pip --version >/dev/null 2>&1 || APT_NEED+=(python3-pip)

install_apt() {
  if (( ${#APT_NEED[@]} == 0 )); then
    echo "all system tools present"
    return 0
  fi
  if ! command -v apt-get >/dev/null 2>&1; then
    echo "missing ${APT_NEED[*]} and no apt-get: install them by hand" >&2
    return 1
  fi
  apt-get update -q
  apt-get install -y -q --no-install-recommends "${APT_NEED[@]}"
}

# Python packages the tests import: "import-name:pip-name" (websockets: tests/upgrade.rs;
# grpcio: tests/tls.rs, tests/grpc.rs; sonora, a gRPC-web server and client:
# tests/grpc_web.rs, conformance/cases/grpc_web.py; mitmproxy: mitmdump writes the HAR
# and dump that tests/flows_har.rs imports, and tests/flows_cli.rs checks filters
# against mitmproxy.flowfilter; h2, which brings hyperframe and hpack: raw HTTP/2 frames
# without client-side checks in tests/smuggling.rs, the hostile HTTP/2 clients and
# origin of tests/h2_attacks.rs, and conformance/cases/waits.py).
PIP_NEED=(websockets:websockets grpc:grpcio sonora:sonora mitmproxy:mitmproxy h2:h2)
install_pip() {
  local missing=() spec
  for spec in "${PIP_NEED[@]}"; do
    python3 -c "import ${spec%%:*}" >/dev/null 2>&1 || missing+=("${spec#*:}")
  done
  if (( ${#missing[@]} == 0 )); then
    echo "all python packages present"
    return 0
  fi
  local extra=()
  if python3 -m pip install --help 2>/dev/null | grep -q -- --break-system-packages; then
    extra=(--break-system-packages)  # Debian 12's python is PEP 668 managed
  fi
  python3 -m pip install -q --disable-pip-version-check --root-user-action=ignore "${extra[@]}" "${missing[@]}"
}

step "install system tools" install_apt
if (( ${#PIP_NEED[@]} )); then step "install python packages" install_pip; fi

# ---------------------------------------------------------------------------
step "cargo fmt --check" cargo fmt --all -- --check
step "cargo clippy" cargo clippy --all-targets --locked -- -D warnings

run_tests() {
  # Tests in one binary run in parallel; binaries run one after another.
  cargo test --locked --no-fail-fast 2>&1 | tee "$LOG_DIR/cargo-test.log"
}
step "cargo test" run_tests

step "cargo build" cargo build --locked
if [[ -f conformance/run.py ]]; then
  step "conformance" python3 conformance/run.py --bin "$TARGET_DIR/debug/luring"
else
  SUMMARY+=("skip      conformance (no conformance/run.py)")
fi
