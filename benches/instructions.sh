#!/usr/bin/env bash
# User-space instructions per proxied request, counted by valgrind's callgrind: unlike
# CPU time on a shared 2-core VM, the count hardly moves between runs (about ±2%), so
# it shows changes of a few percent that wrk timings cannot.
#
# Each binary runs as `luring run --mode reverse:http://ORIGIN --workers 1` under
# callgrind while wrk (-t1 -c32, keep-alive, 1 KiB responses) drives it (with --close,
# every request on a new client connection: wrk sends `Connection: close`); a second run
# with a single request measures start-up and shutdown, which are subtracted.
# With --peers, nginx (reverse proxy: one process, master_process off) and HAProxy
# (http mode, nbthread 1), configured as benches/compare.sh's nginx-proxy and
# haproxy-http rows, are counted the same way after the luring rows (they are plain
# proxies: --io, --plugin and --record apply to luring only).
#
# usage: bash benches/instructions.sh [--bin PATH]... [--io uring|epoll] [--peers]
#                                     [--plugin FILE] [--record] [--close] [--duration SECS]
#                                     [--syscalls]
# Default binary: target/release/luring. Give --bin twice to compare two builds.
# Needs valgrind (perf instead with --syscalls), wrk, nginx (origin) and curl; --peers
# needs haproxy too.
set -euo pipefail
cd "$(dirname "$0")/.."
source benches/lib.sh

BINS=()
IO=uring
DURATION=8
EXTRA=()
PEERS=0
SYSCALLS=0
WRK_ARGS=()
while (( $# )); do
  case "$1" in
    --bin) BINS+=("$2"); shift 2 ;;
    --io) IO=$2; shift 2 ;;
    --plugin) EXTRA+=(--plugin "$(realpath "$2")"); shift 2 ;;
    --record) RECORD=1; shift ;;
    --peers) PEERS=1; shift ;;
    --close) WRK_ARGS=(-H 'Connection: close'); shift ;;
    --duration) DURATION=$2; shift 2 ;;
    --syscalls) SYSCALLS=1; shift ;;
    -h|--help) awk 'NR > 1 && !/^#/ { exit } NR > 1' "$0"; exit 0 ;;
    *) echo "unknown argument: $1" >&2; exit 2 ;;
  esac
done
(( ${#BINS[@]} )) || BINS=(target/release/luring)
RECORD=${RECORD:-0}
TOOLS=(wrk nginx curl)
if (( SYSCALLS )); then TOOLS+=(perf); else TOOLS+=(valgrind); fi
(( PEERS )) && TOOLS+=(haproxy)
for t in "${TOOLS[@]}"; do
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

# target port -> CMD: what callgrind runs for target (a luring binary, nginx or
# haproxy) listening on 127.0.0.1:port; STOP: the signal that ends it with callgrind
# still printing its totals
target_cmd() {
  local target=$1 port=$2 dir="$TMP/$1.$2"
  case $target in
    nginx)
      # benches/compare.sh's nginx-proxy, in one process (master_process off, so
      # callgrind counts the process that serves the requests); keepalive 32 keeps
      # every upstream connection wrk's 32 can use, as compare.sh's 64 does
      mkdir -p "$dir"
      cat > "$dir/nginx.conf" <<NGX
worker_processes 1;
master_process off;
daemon off;
pid $dir/nginx.pid;
error_log $dir/error.log warn;
events { worker_connections 4096; }
http {
  access_log off;
  sendfile on;
  tcp_nodelay on;
  keepalive_requests 10000000;
  keepalive_timeout 60s;
  client_body_temp_path $dir/body;
  proxy_temp_path $dir/proxy;
  fastcgi_temp_path $dir/fastcgi;
  uwsgi_temp_path $dir/uwsgi;
  scgi_temp_path $dir/scgi;
  default_type application/octet-stream;
  upstream origin { server 127.0.0.1:$ORIGIN; keepalive 32; }
  server { listen 127.0.0.1:$port;
    location / { proxy_pass http://origin; proxy_http_version 1.1; proxy_set_header Connection ""; } }
}
NGX
      CMD=(nginx -p "$dir" -c "$dir/nginx.conf")
      # graceful: closes the idle connections and exits 0
      STOP=QUIT ;;
    haproxy)
      # benches/compare.sh's haproxy-http
      cat > "$dir.cfg" <<HAP
global
  nbthread 1
  cpu-map 1/1 0
  maxconn 4096
defaults
  mode http
  timeout connect 5s
  timeout client 60s
  timeout server 60s
  option http-keep-alive
frontend fe
  bind 127.0.0.1:$port
  default_backend be
backend be
  http-reuse always
  server origin 127.0.0.1:$ORIGIN
HAP
      CMD=(haproxy -db -f "$dir.cfg")
      # HAProxy 2.6 with -db leaves SIGTERM at its default action: the process dies
      # and valgrind prints its totals. (SIGINT is ignored, inherited from this
      # shell's background job; SIGUSR1's soft stop crashes in deinit under valgrind.)
      STOP=TERM ;;
    *)
      # --record: every flow goes to a flow file (the recorder's writer thread is
      # counted too), a new one per run: appending to another run's file would count
      # its reading
      local rec=()
      (( RECORD )) && rec=(--record "$TMP/rec.$port.flows")
      CMD=("$target" run --listen "127.0.0.1:$port" --mode "reverse:http://127.0.0.1:$ORIGIN"
        --workers 1 --io "$IO" --log-level warn "${EXTRA[@]}" "${rec[@]}")
      STOP=INT ;;
  esac
}

# target load(0|1) -> IR (instructions of the whole run) and N (requests); returns 1,
# having said why, when the run cannot be counted
measure() {
  local target=$1 load=$2 port out log
  port=$(free_port)
  out="$TMP/cg.$port"
  log="$TMP/log.$port"
  target_cmd "$target" "$port"
  taskset -c 0 valgrind --tool=callgrind --callgrind-out-file="$out" "${CMD[@]}" > "$log" 2>&1 &
  local pid=$! i up=0
  N=1
  IR=""
  # start-up under valgrind takes a few seconds (nginx 1, HAProxy 3): up to about 30 s
  for i in $(seq 1 150); do
    if curl -sf -o /dev/null --max-time 10 "http://127.0.0.1:$port/1k.bin"; then up=1; break; fi
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.2
  done
  local err=""
  if (( ! up )); then
    err="$target did not answer on 127.0.0.1:$port"
  elif (( load )); then
    local res reqs bad
    res=$(taskset -c 1 wrk -t1 -c32 -d"${DURATION}s" "${WRK_ARGS[@]}" "http://127.0.0.1:$port/1k.bin")
    reqs=$(awk '/requests in/ { print $1 }' <<<"$res")
    # wrk prints this line only when some responses were not 2xx or 3xx
    bad=$(awk '/^ *Non-2xx or 3xx responses:/ { print $NF }' <<<"$res")
    if [[ -z "$reqs" || "$reqs" -eq 0 ]]; then
      err="$target: wrk completed no requests"
    elif [[ -n "$bad" && "$bad" -ne 0 ]]; then
      err="$target: $bad of $reqs responses were not 2xx"
    else
      N=$((reqs + 1))
    fi
    if grep -q 'Socket errors' <<<"$res"; then
      echo "$target: $(grep 'Socket errors' <<<"$res" | tr -s ' ')" >&2
    fi
  fi
  kill -"$STOP" "$pid" 2>/dev/null || true
  for i in $(seq 1 300); do
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.1
  done
  if kill -0 "$pid" 2>/dev/null; then
    err=${err:-"$target did not exit within 30 s of SIG$STOP"}
    kill -KILL "$pid" 2>/dev/null || true
  fi
  wait "$pid" 2>/dev/null || true
  if [[ -z "$err" ]]; then
    IR=$(grep -o 'refs: *[0-9,]*' "$log" | tr -d ', ' | cut -d: -f2 || true)
    [[ -n "$IR" ]] || err="$target: callgrind printed no totals (no \"refs:\")"
  fi
  # one process only: a fork would show up as a second pid in valgrind's lines
  if [[ -z "$err" ]] && (( $(grep -oE '^==[0-9]+==' "$log" | sort -u | wc -l) != 1 )); then
    err="$target: more than one process in callgrind's log"
  fi
  if [[ -n "$err" ]]; then
    echo "error: $err; its log ends:" >&2
    tail -n 20 "$log" >&2
    return 1
  fi
}

# name target: one row of the table
row() {
  local name=$1 target=$2 base total n per
  measure "$target" 0 || exit 1
  base=$IR
  measure "$target" 1 || exit 1
  total=$IR n=$N
  per=$(( (total - base) / n ))
  # any HTTP proxy spends thousands of instructions on a request: less means the
  # requests did not go through the counted process
  if (( per < 1000 )); then
    echo "error: $name: $per instructions/request ($total - $base over $n requests) is too few to be real" >&2
    exit 1
  fi
  printf '%-40s %8d instructions/request (%d requests)\n' "$name" "$per" "$n"
}

# The kernel events --syscalls counts, as "label=tracepoint" (labels are the table's
# rows; the first is the total).
KERNEL_EVENTS=(
  "system calls=raw_syscalls:sys_enter"
  "  recvfrom=syscalls:sys_enter_recvfrom"
  "  sendto=syscalls:sys_enter_sendto"
  "  sendmsg=syscalls:sys_enter_sendmsg"
  "  writev=syscalls:sys_enter_writev"
  "  read=syscalls:sys_enter_read"
  "  write=syscalls:sys_enter_write"
  "  epoll_wait=syscalls:sys_enter_epoll_wait"
  "  epoll_ctl=syscalls:sys_enter_epoll_ctl"
  "  io_uring_enter=syscalls:sys_enter_io_uring_enter"
  "  accept4=syscalls:sys_enter_accept4"
  "  close=syscalls:sys_enter_close"
  "  ioctl=syscalls:sys_enter_ioctl"
  "  getsockopt=syscalls:sys_enter_getsockopt"
  "  setsockopt=syscalls:sys_enter_setsockopt"
  "io_uring operations=io_uring:io_uring_submit_req"
  "  of which armed a poll=io_uring:io_uring_poll_arm"
  "  task-work runs=io_uring:io_uring_task_work_run"
  "context switches=context-switches"
)

# target -> COUNTS (one per KERNEL_EVENTS entry, per request, space-separated) and N
measure_kernel() {
  local target=$1 port out log i up=0 events
  port=$(free_port)
  out="$TMP/perf.$port"
  log="$TMP/log.$port"
  target_cmd "$target" "$port"
  taskset -c 0 "${CMD[@]}" > "$log" 2>&1 &
  local pid=$!
  for i in $(seq 1 100); do
    if curl -sf -o /dev/null --max-time 5 "http://127.0.0.1:$port/1k.bin"; then up=1; break; fi
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.1
  done
  if (( ! up )); then
    echo "error: $target did not answer on 127.0.0.1:$port; its log ends:" >&2
    tail -n 20 "$log" >&2
    return 1
  fi
  events=$(printf '%s\n' "${KERNEL_EVENTS[@]}" | sed 's/^[^=]*=//' | paste -sd, -)
  # counting starts before the load and ends after it: the requests are wrk's total
  perf stat -x, -e "$events" -p "$pid" -o "$out" -- sleep "$((DURATION + 1))" 2> "$out.err" &
  local perf_pid=$!
  sleep 0.3
  local res reqs
  res=$(taskset -c 1 wrk -t1 -c32 -d"${DURATION}s" "${WRK_ARGS[@]}" "http://127.0.0.1:$port/1k.bin")
  wait "$perf_pid" || true
  kill -"$STOP" "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
  reqs=$(awk '/requests in/ { print $1 }' <<<"$res")
  if grep -q 'Non-2xx' <<<"$res" || [[ -z "$reqs" || "$reqs" -eq 0 ]]; then
    echo "error: $target: wrk did not complete its requests: $res" >&2
    return 1
  fi
  # perf -x, lines: value,unit,event,...; "<not supported>" / "<not counted>" when the
  # tracepoint is missing or not readable
  if ! grep -q ',raw_syscalls:sys_enter' "$out" 2>/dev/null || grep -q '^<not' "$out"; then
    echo "error: perf could not count the kernel's tracepoints (root, or a lower kernel.perf_event_paranoid):" >&2
    cat "$out.err" "$out" 2>/dev/null | tail -n 5 >&2
    return 1
  fi
  N=$reqs
  COUNTS=$(awk -F, -v n="$reqs" 'NF > 2 && $1 ~ /^[0-9]+$/ { printf "%.2f ", $1 / n }' "$out")
}

if (( SYSCALLS )); then
  NAMES=() COLUMNS=()
  for bin in "${BINS[@]}"; do
    measure_kernel "$bin" || exit 1
    NAMES+=("$(basename "$bin")") COLUMNS+=("$COUNTS")
  done
  if (( PEERS )); then
    measure_kernel nginx || exit 1
    NAMES+=("nginx") COLUMNS+=("$COUNTS")
    measure_kernel haproxy || exit 1
    NAMES+=("haproxy") COLUMNS+=("$COUNTS")
  fi
  echo "kernel work per request (perf tracepoints): reverse proxy, --io $IO, wrk -c32 ${WRK_ARGS[*]}, 1 KiB${EXTRA:+, ${EXTRA[*]}}"
  printf '%-26s' ""
  printf '%16s' "${NAMES[@]}"
  echo
  for i in "${!KERNEL_EVENTS[@]}"; do
    printf '%-26s' "${KERNEL_EVENTS[$i]%%=*}"
    for c in "${COLUMNS[@]}"; do
      read -r -a v <<<"$c"
      printf '%16s' "${v[$i]:--}"
    done
    echo
  done
  exit 0
fi

echo "user-space instructions per request: luring reverse proxy, --io $IO, wrk -c32 ${WRK_ARGS[*]}, 1 KiB${EXTRA:+, ${EXTRA[*]}}$( (( RECORD )) && echo ", --record")"
for bin in "${BINS[@]}"; do
  row "$bin" "$bin"
done
if (( PEERS )); then
  row "nginx $(nginx -v 2>&1 | sed 's/.*nginx\///') (proxy_pass, keepalive)" nginx
  row "haproxy $(haproxy -v | awk 'NR == 1 { sub(/-.*/, "", $3); print $3 }') (http mode)" haproxy
fi
