#!/usr/bin/env bash
# Proxy CPU per request of two or more luring builds, A/B in one run: each build runs
# alone (one worker on core 0; load and origin on core 1), rounds interleaved, and the
# CPU per request ((utime+stime) / requests) of every round is printed per build, then
# the requests per second of the same rounds.
# Instruction counts (instructions.sh) can move without CPU time moving: a change that
# saves instructions may cost system calls. Measure both.
#
#   --load h1     wrk -c32 keep-alive, 1 KiB, reverse mode to a plain nginx origin
#   --load h1one  the same over one connection (wrk -c1): each request waits for the
#                 one before, so a late wake-up of the worker shows as fewer requests
#                 per second
#   --load h1close  the same with a new client connection per request (wrk sends
#                 `Connection: close`; upstream connections stay pooled)
#   --load h2c    h2load -c10 -m5 over h2c, the same origin (HTTP/1 upstream)
#   --load h2tls  h2load -c10 -m5, h2 with TLS on both sides (an nginx h2 TLS origin)
#
# usage: bash benches/ab-cpu.sh [--load h1|h1one|h1close|h2c|h2tls] [--rounds N] BIN BIN...
# Needs nginx, wrk, h2load (nghttp2-client) and openssl.
set -euo pipefail
cd "$(dirname "$0")/.."
source benches/lib.sh

LOAD=h1
ROUNDS=3
BINS=()
while (( $# )); do
  case "$1" in
    --load) LOAD=$2; shift 2 ;;
    --rounds) ROUNDS=$2; shift 2 ;;
    -h|--help) sed -n '2,15p' "$0"; exit 0 ;;
    -*) echo "unknown argument: $1" >&2; exit 2 ;;
    *) BINS+=("$(realpath "$1")"); shift ;;
  esac
done
(( ${#BINS[@]} >= 2 )) || { echo "give at least two builds" >&2; exit 2; }
case $LOAD in h1|h1one|h1close|h2c|h2tls) ;; *) echo "unknown load: $LOAD" >&2; exit 2 ;; esac
for t in nginx wrk h2load openssl taskset; do
  command -v "$t" >/dev/null || { echo "$t is required" >&2; exit 1; }
done

W=$(mktemp -d "${TMPDIR:-/tmp}/luring-ab.XXXXXX")
PIDS=()
cleanup() {
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null || true; done
  rm -rf "$W"
}
trap cleanup EXIT

head -c 1024 /dev/urandom > "$W/1k.bin"
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout "$W/k.pem" \
  -out "$W/c.pem" -days 2 -subj /CN=localhost -addext subjectAltName=DNS:localhost 2>/dev/null
ORIGIN=$(free_port)
mkdir -p "$W/o"
if [[ $LOAD == h2tls ]]; then
  LISTEN="127.0.0.1:$ORIGIN ssl http2; ssl_certificate $W/c.pem; ssl_certificate_key $W/k.pem; ssl_protocols TLSv1.3"
  MODE="reverse:https://localhost:$ORIGIN"
else
  LISTEN="127.0.0.1:$ORIGIN"
  MODE="reverse:http://127.0.0.1:$ORIGIN"
fi
cat > "$W/origin.conf" <<NGX
worker_processes 1; master_process off; daemon off; pid $W/o/pid; error_log $W/o/err;
events { worker_connections 1024; }
http { access_log off; keepalive_requests 10000000; client_body_temp_path $W/o/b;
  proxy_temp_path $W/o/p; fastcgi_temp_path $W/o/f; uwsgi_temp_path $W/o/u;
  scgi_temp_path $W/o/s; server { listen $LISTEN; root $W; } }
NGX
taskset -c 1 nginx -p "$W" -c "$W/origin.conf" 2>/dev/null &
PIDS+=($!)
wait_port "$ORIGIN" || { echo "origin did not start" >&2; exit 1; }

# load PORT WARM -> the load tool's output (WARM: a short run first, not counted)
load() {
  local port=$1 n=100000 secs=4
  (( $2 )) && n=5000 secs=1
  case $LOAD in
    h1) taskset -c 1 wrk -t1 -c32 -d"${secs}s" "http://127.0.0.1:$port/1k.bin" ;;
    h1one) taskset -c 1 wrk -t1 -c1 -d"${secs}s" "http://127.0.0.1:$port/1k.bin" ;;
    h1close) taskset -c 1 wrk -t1 -c32 -d"${secs}s" -H 'Connection: close' \
      "http://127.0.0.1:$port/1k.bin" ;;
    h2c) taskset -c 1 h2load -c10 -m5 -n "$n" "http://127.0.0.1:$port/1k.bin" ;;
    h2tls) taskset -c 1 h2load -c10 -m5 -n "$n" "https://localhost:$port/1k.bin" ;;
  esac
}

# the requests a load tool's output says were answered
answered() {
  case $LOAD in
    h1|h1one|h1close) awk '/requests in/ { print $1 }' ;;
    *) awk '/^status codes:/ { print $3 }' ;;
  esac
}

declare -A CPU RATE
for r in $(seq 1 "$ROUNDS"); do
  for i in "${!BINS[@]}"; do
    port=$(free_port)
    taskset -c 0 "${BINS[$i]}" run --listen "127.0.0.1:$port" --mode "$MODE" \
      --upstream-ca "$W/c.pem" --confdir "$W/ca" --workers 1 --log-level warn \
      2>"$W/luring.$i.log" &
    pid=$!
    wait_port "$port" || { echo "${BINS[$i]} did not start: $(head -c 300 "$W/luring.$i.log")" >&2; exit 1; }
    load "$port" 1 >/dev/null 2>&1
    c0=$(cpu_ticks "$pid")
    t0=$(date +%s%N)
    out=$(load "$port" 0 2>&1)
    t1=$(date +%s%N)
    c1=$(cpu_ticks "$pid")
    kill "$pid"; wait "$pid" 2>/dev/null || true
    n=$(answered <<<"$out")
    [[ -n $n && $n -gt 0 ]] || { echo "no requests answered by ${BINS[$i]}: $out" >&2; exit 1; }
    CPU[$i]="${CPU[$i]:-} $(awk -v d=$((c1 - c0)) -v n="$n" -v hz="$(getconf CLK_TCK)" \
      'BEGIN { printf "%.2f", d * 1e6 / hz / n }')"
    RATE[$i]="${RATE[$i]:-} $(awk -v n="$n" -v ns=$((t1 - t0)) 'BEGIN { printf "%.0f", n * 1e9 / ns }')"
  done
done
echo "proxy CPU us per request, --load $LOAD, $ROUNDS round(s) interleaved"
for i in "${!BINS[@]}"; do
  printf '%-50s %s\n' "${BINS[$i]}" "${CPU[$i]}"
done
# CPU per request alone can hide a build that stalls: it can look cheaper per request
# while it answers far fewer (a DEFER_TASKRUN try did just that, docs/decisions.md)
echo "requests per second, the same rounds"
for i in "${!BINS[@]}"; do
  printf '%-50s %s\n' "${BINS[$i]}" "${RATE[$i]}"
done
