#!/usr/bin/env bash
# User-space instructions per proxied request, counted by valgrind's callgrind: unlike
# CPU time on a shared 2-core VM, the count hardly moves between runs (about ±2%), so
# it shows changes of a few percent that wrk timings cannot.
#
# Each binary runs as `luring run --mode reverse:http://ORIGIN --workers 1` under
# callgrind while wrk (-t1 -c32, keep-alive, 1 KiB responses) drives it; a second run
# with a single request measures start-up and shutdown, which are subtracted.
#
# usage: bash benches/instructions.sh [--bin PATH]... [--io uring|epoll]
#                                     [--plugin FILE] [--record] [--duration SECS]
# Default binary: target/release/luring. Give --bin twice to compare two builds.
# Needs valgrind, wrk, nginx (origin) and curl.
set -euo pipefail
cd "$(dirname "$0")/.."
source benches/lib.sh

BINS=()
IO=uring
DURATION=8
EXTRA=()
while (( $# )); do
  case "$1" in
    --bin) BINS+=("$2"); shift 2 ;;
    --io) IO=$2; shift 2 ;;
    --plugin) EXTRA+=(--plugin "$(realpath "$2")"); shift 2 ;;
    --record) RECORD=1; shift ;;
    --duration) DURATION=$2; shift 2 ;;
    -h|--help) sed -n '2,14p' "$0"; exit 0 ;;
    *) echo "unknown argument: $1" >&2; exit 2 ;;
  esac
done
(( ${#BINS[@]} )) || BINS=(target/release/luring)
RECORD=${RECORD:-0}
for t in valgrind wrk nginx curl; do
  command -v "$t" >/dev/null || { echo "$t is required" >&2; exit 1; }
done

TMP=$(mktemp -d "${TMPDIR:-/tmp}/luring-instr.XXXXXX")
trap 'kill $(jobs -p) 2>/dev/null; wait 2>/dev/null; rm -rf "$TMP"' EXIT
ORIGIN=$(free_port)
mkdir -p "$TMP/www"
head -c 1024 /dev/urandom > "$TMP/www/1k.bin"
cat > "$TMP/origin.conf" <<NGX
worker_processes 1; master_process off; daemon off; pid $TMP/origin.pid;
error_log $TMP/origin.err warn;
events { worker_connections 4096; }
http { access_log off; sendfile on; tcp_nodelay on; keepalive_requests 10000000;
  client_body_temp_path $TMP/b; proxy_temp_path $TMP/p; fastcgi_temp_path $TMP/f;
  uwsgi_temp_path $TMP/u; scgi_temp_path $TMP/s;
  server { listen 127.0.0.1:$ORIGIN; root $TMP/www; } }
NGX
taskset -c 1 nginx -p "$TMP" -c "$TMP/origin.conf" 2>/dev/null &
sleep 0.5

# bin load(0|1) -> "instructions requests"
measure() {
  local bin=$1 load=$2 port out
  port=$(free_port)
  out="$TMP/cg.$port"
  # --record: every flow goes to a flow file (the recorder's writer thread is counted
  # too), a new one per run: appending to another run's file would count its reading
  local rec=()
  (( RECORD )) && rec=(--record "$TMP/rec.$port.flows")
  taskset -c 0 valgrind --tool=callgrind --callgrind-out-file="$out" "$bin" run \
    --listen "127.0.0.1:$port" --mode "reverse:http://127.0.0.1:$ORIGIN" --workers 1 \
    --io "$IO" --log-level warn "${EXTRA[@]}" "${rec[@]}" > "$TMP/log.$port" 2>&1 &
  local pid=$! i n=1
  for i in $(seq 1 150); do
    curl -s -o /dev/null "http://127.0.0.1:$port/1k.bin" && break
    sleep 0.2
  done
  if (( load )); then
    n=$(taskset -c 1 wrk -t1 -c32 -d"${DURATION}s" "http://127.0.0.1:$port/1k.bin" \
      | awk '/requests in/ { print $1 }')
    n=$((n + 1))
  fi
  kill -INT "$pid"
  wait "$pid" 2>/dev/null || true
  local ir
  ir=$(grep -o 'refs: *[0-9,]*' "$TMP/log.$port" | tr -d ', ' | cut -d: -f2)
  echo "$ir $n"
}

echo "user-space instructions per request: luring reverse proxy, --io $IO, wrk -c32, 1 KiB${EXTRA:+, ${EXTRA[*]}}$( (( RECORD )) && echo ", --record")"
for bin in "${BINS[@]}"; do
  read -r base _ < <(measure "$bin" 0)
  read -r total n < <(measure "$bin" 1)
  printf '%-40s %8d instructions/request (%d requests)\n' "$bin" $(( (total - base) / n )) "$n"
done
