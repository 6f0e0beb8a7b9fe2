#!/usr/bin/env bash
# Soak: the churn of tests/churn.rs (clean closes, client aborts mid-body with
# SO_LINGER 0, upstream resets, half-closes, failed TLS handshakes, HTTP/2 streams
# reset in flight) run for a long time against the real binary over loopback.
# After every round it checks that luring's descriptors are back to the baseline
# (/proc/PID/fd; empty splice pipes kept for reuse are allowed), that none of its
# sockets is in CLOSE_WAIT (/proc/net/tcp{,6}), and that from the fifth round on
# its VmRSS stays within 4 MiB of the fifth round's. It fails at the first round
# that breaks one of these.
#
# usage: bash benches/soak.sh [--minutes M] [--rounds N] [--conns C]
#                             [--io uring|epoll|both] [--workers W]
#   --minutes  per backend, default 15 (both backends: 30 in all)
#   --rounds   upper bound on rounds per backend, default 100000 (the time decides)
#   --conns    connections per round, default 3500 (500 of each kind)
#   --io       default both
#   --workers  luring workers, default 2
# Prints one line per round (connections, seconds, descriptors, CLOSE_WAIT, RSS)
# and a summary per backend; the whole output is kept in target/soak-*.log.
# Uses the debug build (leaks, not speed, are measured) under $CARGO_TARGET_DIR.
set -euo pipefail
cd "$(dirname "$0")/.."

MINUTES=15
ROUNDS=100000
CONNS=3500
IO=both
WORKERS=2
while (( $# )); do
  case "$1" in
    --minutes) MINUTES=$2; shift 2 ;;
    --rounds) ROUNDS=$2; shift 2 ;;
    --conns) CONNS=$2; shift 2 ;;
    --io) IO=$2; shift 2 ;;
    --workers) WORKERS=$2; shift 2 ;;
    -h|--help) sed -n '2,22p' "$0"; exit 0 ;;
    *) echo "unknown argument: $1" >&2; exit 2 ;;
  esac
done

log="${CARGO_TARGET_DIR:-target}/soak-$(date +%Y%m%d-%H%M%S).log"
mkdir -p "$(dirname "$log")"
echo "soak: io=$IO minutes=$MINUTES per backend, $CONNS connections per round, $WORKERS workers; log $log"
CHURN_IO=$IO CHURN_MINUTES=$MINUTES CHURN_ROUNDS=$ROUNDS CHURN_CONNS=$CONNS CHURN_WORKERS=$WORKERS \
  cargo test --test churn -- --ignored --exact soak --nocapture 2>&1 | tee "$log" \
  | grep -a --line-buffered -E '^(--io .* round|soak --io|test soak|thread .* panicked)|assert'
