#!/usr/bin/env bash
# Side-by-side throughput/CPU comparison on this machine, in one run:
#   direct        wrk -> origin
#   nginx-proxy   wrk -> nginx reverse proxy (core 0) -> origin
#   luring-uring  wrk -> luring --mode reverse --workers 1 --io uring (core 0) -> origin
#   luring-epoll  same with --io epoll
#   haproxy-http  HAProxy in http mode, haproxy-tcp: HAProxy as a pure L4 relay
#                 (when haproxy is installed)
#   uring-l4      the io_uring floor: examples/uring_relay.rs, a minimal L4 relay
#   (with --close every request comes on a new client connection: wrk sends
#    `Connection: close`; upstream connections stay pooled;
#    + luring-*+plugin rows with --plugin FILE, and nginx-lua: nginx with
#    lua-nginx-module setting the two headers of benches/two-headers.lua;
#    + a luring-uring+record row with --record: every flow written to a flow file;
#    + a luring-uring+metrics row with --metrics: --metrics on, scraped every second
#      by curl on core 1 for the whole run)
# for 1 KiB and 64 KiB responses (or --sizes). wrk and the origin (nginx serving
# static files, or a small python origin if nginx is missing) are pinned to core 1.
#
# usage: bash benches/compare.sh [--plugin FILE] [--record] [--metrics] [--close] [--duration SECS]
#                                [--sizes "1k 64k 1m"] [--rounds N] [--no-build]
# With --rounds N every target is measured N times, interleaved, and the median is shown.
# Prints a table: target, size, req/s, proxy CPU us/request
# ((utime+stime) delta of the proxy process from /proc/PID/stat, in clock
# ticks -> us, divided by the requests wrk completed), and ratios vs nginx-proxy and,
# for CPU, vs the uring-l4 floor.
# Figures are for comparison on one machine in one run, not absolutes.
set -euo pipefail
cd "$(dirname "$0")/.."
source benches/lib.sh

DURATION=5
ROUNDS=1
SIZES="1k 64k"
PLUGIN=""
RECORD=0
METRICS=0
WRK_ARGS=()
BUILD=1
while (( $# )); do
  case "$1" in
    --plugin) PLUGIN=$(realpath "$2"); shift 2 ;;
    --record) RECORD=1; shift ;;
    --metrics) METRICS=1; shift ;;
    --close) WRK_ARGS=(-H 'Connection: close'); shift ;;
    --duration) DURATION=$2; shift 2 ;;
    --sizes) SIZES=${2//,/ }; shift 2 ;;
    --rounds) ROUNDS=$2; shift 2 ;;
    --no-build) BUILD=0; shift ;;
    -h|--help) sed -n '2,25p' "$0"; exit 0 ;;
    *) echo "unknown argument: $1" >&2; exit 2 ;;
  esac
done

TARGET_DIR="${CARGO_TARGET_DIR:-target}"
BIN="$TARGET_DIR/release/luring"
CLK_TCK=$(getconf CLK_TCK)
TMP=$(mktemp -d "${TMPDIR:-/tmp}/luring-bench.XXXXXX")
PIDS=()

cleanup() {
  local p
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null || true; done
  rm -rf "$TMP"
}
trap cleanup EXIT

log() { echo "# $*" >&2; }

# --- tools -----------------------------------------------------------------
missing=()
command -v wrk >/dev/null || missing+=(wrk)
command -v taskset >/dev/null || missing+=(util-linux)
command -v curl >/dev/null || missing+=(curl)
command -v nginx >/dev/null || missing+=(nginx-light)
if (( ${#missing[@]} )) && command -v apt-get >/dev/null; then
  log "installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -q >/dev/null && apt-get install -y -q --no-install-recommends "${missing[@]}" >/dev/null \
    || log "install failed; continuing with what is there"
fi
command -v wrk >/dev/null || { echo "wrk is required" >&2; exit 1; }
command -v taskset >/dev/null || { echo "taskset is required" >&2; exit 1; }
HAVE_NGINX=0
command -v nginx >/dev/null && HAVE_NGINX=1

if (( BUILD )); then
  log "cargo build --release"
  cargo build --release --locked --bin luring --example uring_relay >&2
fi
[[ -x "$BIN" ]] || { echo "no release binary at $BIN" >&2; exit 1; }

T0=$(date +%s)



# --- origin ------------------------------------------------------------------
mkdir -p "$TMP/www" "$TMP/ngx"
bytes_of() { # 1k / 64k / 1m -> byte count
  local n=${1%[km]}
  case $1 in *k) echo $((n * 1024)) ;; *m) echo $((n * 1024 * 1024)) ;; *) echo "$n" ;; esac
}
for size in $SIZES; do head -c "$(bytes_of "$size")" /dev/urandom > "$TMP/www/$size.bin"; done
ORIGIN_PORT=$(free_port)

nginx_conf() { # name listen-port body [main-context lines] -> path of a config
  local conf="$TMP/ngx/$1.conf"
  mkdir -p "$TMP/ngx/$1"
  cat > "$conf" <<NGX
${4:-}
worker_processes 1;
master_process off;
daemon off;
pid $TMP/ngx/$1/nginx.pid;
error_log $TMP/ngx/$1/error.log warn;
events { worker_connections 4096; }
http {
  access_log off;
  sendfile on;
  tcp_nodelay on;
  keepalive_requests 10000000;
  keepalive_timeout 60s;
  client_body_temp_path $TMP/ngx/$1/body;
  proxy_temp_path $TMP/ngx/$1/proxy;
  fastcgi_temp_path $TMP/ngx/$1/fastcgi;
  uwsgi_temp_path $TMP/ngx/$1/uwsgi;
  scgi_temp_path $TMP/ngx/$1/scgi;
  default_type application/octet-stream;
  $3
}
NGX
  echo "$conf"
}

if (( HAVE_NGINX )); then
  conf=$(nginx_conf origin "$ORIGIN_PORT" "server { listen 127.0.0.1:$ORIGIN_PORT; root $TMP/www; }")
  taskset -c 1 nginx -p "$TMP/ngx/origin" -c "$conf" 2>"$TMP/origin.err" &
  PIDS+=($!)
  ORIGIN_KIND="nginx"
else
  log "nginx unavailable: using a small python origin (it will be the bottleneck)"
  cat > "$TMP/origin.py" <<'PY'
import asyncio, sys
root, port = sys.argv[1], int(sys.argv[2])
import os
files = {"/" + f: open(os.path.join(root, f), "rb").read() for f in os.listdir(root)}
async def serve(r, w):
    try:
        while True:
            head = await r.readuntil(b"\r\n\r\n")
            path = head.split(b" ")[1].decode()
            body = files.get(path, b"")
            status = b"200 OK" if path in files else b"404 Not Found"
            w.write(b"HTTP/1.1 " + status + b"\r\nContent-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body)
            await w.drain()
    except Exception:
        w.close()
async def main():
    s = await asyncio.start_server(serve, "127.0.0.1", port)
    async with s: await s.serve_forever()
asyncio.run(main())
PY
  taskset -c 1 python3 "$TMP/origin.py" "$TMP/www" "$ORIGIN_PORT" &
  PIDS+=($!)
  ORIGIN_KIND="python"
fi
wait_port "$ORIGIN_PORT" || { echo "origin did not start" >&2; cat "$TMP/origin.err" >&2 || true; exit 1; }

# --- targets -----------------------------------------------------------------
# Each target: name, port, pid of the proxy process ("" for direct).
NAMES=(direct); PORTS=("$ORIGIN_PORT"); TPIDS=("")

register() { # name port pid: a started proxy becomes a target once it accepts connections
  PIDS+=("$3")
  if wait_port "$2"; then
    NAMES+=("$1"); PORTS+=("$2"); TPIDS+=("$3")
  else
    log "$1 did not start: $(head -c 300 "$TMP/$1.err")"
  fi
}

start_nginx_proxy() { # name [location directives] [main-context lines]
  local name=$1 port
  port=$(free_port)
  local conf
  conf=$(nginx_conf "$name" "$port" "upstream origin { server 127.0.0.1:$ORIGIN_PORT; keepalive 64; }
  server { listen 127.0.0.1:$port;
    location / { ${2:-} proxy_pass http://origin; proxy_http_version 1.1; proxy_set_header Connection \"\"; } }" "${3:-}")
  taskset -c 0 nginx -p "$TMP/ngx/$name" -c "$conf" 2>"$TMP/$name.err" &
  register "$name" "$port" $!
}

(( HAVE_NGINX )) && start_nginx_proxy nginx-proxy

# With --plugin, nginx with lua-nginx-module doing the same work as
# benches/two-headers.lua (one request header, one response header) is the baseline
# for the plugin rows, as the plugin engine issue asks.
LUA_MODS=/usr/lib/nginx/modules
if (( HAVE_NGINX )) && [[ -n "$PLUGIN" && -f $LUA_MODS/ngx_http_lua_module.so && -f $LUA_MODS/ndk_http_module.so ]]; then
  start_nginx_proxy nginx-lua \
    "rewrite_by_lua_block { ngx.req.set_header(\"x-bench-request\", \"1\") }
     header_filter_by_lua_block { ngx.header[\"x-bench-response\"] = \"1\" }" \
    "load_module $LUA_MODS/ndk_http_module.so; load_module $LUA_MODS/ngx_http_lua_module.so;"
elif [[ -n "$PLUGIN" ]]; then
  log "no lua-nginx-module (apt: libnginx-mod-http-lua): no nginx-lua baseline row"
fi

# HAProxy, when installed (apt: haproxy), as two more baselines: http mode (a full
# HTTP/1.1 reverse proxy, keep-alive both sides) and tcp mode (a pure L4 relay: the
# cost of moving the bytes of each request and response through one process, with no
# HTTP work at all; the floor any user-space proxy starts from).
start_haproxy() { # name mode
  local name=$1 mode=$2 port
  port=$(free_port)
  local cfg="$TMP/$name.cfg"
  cat > "$cfg" <<HAP
global
  nbthread 1
  cpu-map 1/1 0
  maxconn 4096
defaults
  mode $mode
  timeout connect 5s
  timeout client 60s
  timeout server 60s
  $( [[ $mode == http ]] && echo "option http-keep-alive" )
frontend fe
  bind 127.0.0.1:$port
  default_backend be
backend be
  $( [[ $mode == http ]] && echo "http-reuse always" )
  server origin 127.0.0.1:$ORIGIN_PORT
HAP
  taskset -c 0 haproxy -db -f "$cfg" 2>"$TMP/$name.err" >/dev/null &
  register "$name" "$port" $!
}
if command -v haproxy >/dev/null; then
  start_haproxy haproxy-http http
  start_haproxy haproxy-tcp tcp
else
  log "no haproxy (apt: haproxy): no haproxy-http / haproxy-tcp rows"
fi

# The io_uring floor (examples/uring_relay.rs): the least an io_uring proxy can do per
# request, an L4 relay with multishot receives and DEFER_TASKRUN (uring-l4), and with
# one plain receive at a time and COOP_TASKRUN (uring-l4-basic, the way tokio-uring
# drives the ring).
RELAY="$TARGET_DIR/release/examples/uring_relay"
start_relay() { # name extra-args...
  local name=$1 port; shift
  port=$(free_port)
  taskset -c 0 "$RELAY" "$port" "127.0.0.1:$ORIGIN_PORT" "$@" >/dev/null 2>"$TMP/$name.err" &
  register "$name" "$port" $!
}
if [[ -x "$RELAY" ]]; then
  start_relay uring-l4
  start_relay uring-l4-basic --basic --no-defer
fi

start_luring() { # name io extra-args...
  local name=$1 io=$2; shift 2
  local err="$TMP/$name.err"
  : > "$err"
  taskset -c 0 "$BIN" run --listen 127.0.0.1:0 --mode "reverse:http://127.0.0.1:$ORIGIN_PORT" \
    --workers 1 --io "$io" --log-level warn "$@" 2>"$err" &
  local pid=$!
  PIDS+=("$pid")
  local i port=""
  for i in $(seq 1 100); do
    port=$(sed -n 's/.*luring listening on 127\.0\.0\.1:\([0-9]*\) .*/\1/p' "$err" | head -1 || true)
    [[ -n "$port" ]] && break
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.1
  done
  if [[ -z "$port" ]]; then
    log "$name did not start: $(head -c 300 "$err")"
    return 0
  fi
  NAMES+=("$name"); PORTS+=("$port"); TPIDS+=("$pid")
}

for io in uring epoll; do
  start_luring "luring-$io" "$io"
  if [[ -n "$PLUGIN" ]]; then start_luring "luring-$io+plugin" "$io" --plugin "$PLUGIN"; fi
done
# the recorder's writer thread is pinned with the worker, so its CPU is counted
if (( RECORD )); then start_luring "luring-uring+record" uring --record "$TMP/bench.flows"; fi
# the metrics thread is pinned with the worker, so the cost of answering scrapes is
# counted; the scraper (curl) runs on core 1 with wrk, bounded to an hour of scrapes
if (( METRICS )); then
  MPORT=$(free_port)
  start_luring "luring-uring+metrics" uring --metrics "127.0.0.1:$MPORT"
  ( for _ in $(seq 1 3600); do
      if taskset -c 1 curl -sf -o /dev/null --max-time 2 "http://127.0.0.1:$MPORT/metrics"; then
        echo >> "$TMP/scrapes"
      fi
      sleep 1
    done ) &
  PIDS+=("$!")
fi


# --- measure -----------------------------------------------------------------
declare -A RPS CPU NOTE
median() { # numbers... -> the median, or - when none
  printf '%s\n' "$@" | { grep -E '^[0-9.]+$' || true; } | sort -n | awk '{ v[NR] = $1 } END {
    if (NR == 0) print "-"; else if (NR % 2) print v[(NR + 1) / 2]; else printf "%.1f", (v[NR / 2] + v[NR / 2 + 1]) / 2 }'
}
for size in $SIZES; do
  declare -A RUN_RPS=() RUN_CPU=()
  # rounds interleave the targets, so a noisy minute hits all of them alike
  for round in $(seq 1 "$ROUNDS"); do
    for i in "${!NAMES[@]}"; do
      name=${NAMES[$i]} port=${PORTS[$i]} pid=${TPIDS[$i]}
      url="http://127.0.0.1:$port/$size.bin"
      if (( round == 1 )); then
        check=$(curl -s -o /dev/null -w '%{http_code} %{size_download}' --max-time 5 "$url" || true)
        if [[ "$check" != "200 $(bytes_of "$size")" ]]; then
          NOTE[$name,$size]="bad response: $check"
          continue
        fi
        taskset -c 1 wrk -t1 -c32 -d1s "${WRK_ARGS[@]}" "$url" >/dev/null 2>&1 || true   # warm-up
      fi
      [[ "${NOTE[$name,$size]:-}" == bad* ]] && continue
      before=""
      [[ -n "$pid" ]] && before=$(cpu_ticks "$pid")
      out=$(taskset -c 1 wrk -t1 -c32 -d"${DURATION}s" "${WRK_ARGS[@]}" "$url" 2>&1 || true)
      after=""
      [[ -n "$pid" ]] && after=$(cpu_ticks "$pid")
      reqs=$(awk '/requests in/ { print $1 }' <<<"$out")
      rps=$(awk '/^Requests\/sec:/ { printf "%.0f", $2 }' <<<"$out")
      cpu="-"
      if [[ -n "$pid" && -n "$reqs" && "$reqs" -gt 0 ]]; then
        cpu=$(awk -v d=$((after - before)) -v t="$CLK_TCK" -v n="$reqs" \
          'BEGIN { printf "%.1f", d * 1e6 / t / n }')
      fi
      RUN_RPS[$name]+="${rps:--} " RUN_CPU[$name]+="$cpu "
      errs=$(grep -E "Non-2xx|Socket errors" <<<"$out" | tr -s ' ' | paste -sd';' - || true)
      [[ -n "$errs" ]] && NOTE[$name,$size]=$errs
      log "round $round $name $size: ${rps:-?} req/s $cpu us/req ${errs:-}"
    done
  done
  for name in "${NAMES[@]}"; do
    # shellcheck disable=SC2086
    RPS[$name,$size]=$(median ${RUN_RPS[$name]:-})
    # shellcheck disable=SC2086
    CPU[$name,$size]=$(median ${RUN_CPU[$name]:-})
  done
  unset RUN_RPS RUN_CPU
done

# --- report ------------------------------------------------------------------
ratio() { # a b -> a/b or -
  awk -v a="$1" -v b="$2" 'BEGIN { if (a ~ /^[0-9.]+$/ && b ~ /^[0-9.]+$/ && b > 0) printf "%.2f", a / b; else print "-" }'
}
echo
echo "luring reverse proxy vs nginx: wrk -t1 -c32 -d${DURATION}s ${WRK_ARGS[*]} on core 1, proxies on core 0, origin: $ORIGIN_KIND (core 1), median of $ROUNDS round(s)"
# cpu/uring-l4: CPU per request against the io_uring L4 floor of the same run, the
# ratio issue 17's 1 KiB targets are stated in (- when the floor row did not run)
printf '%-20s %-5s %10s %12s %12s %12s %14s  %s\n' target size req/s "cpu-us/req" "rps/nginx" "cpu/nginx" \
  "cpu/uring-l4" notes
for size in $SIZES; do
  for name in "${NAMES[@]}"; do
    printf '%-20s %-5s %10s %12s %12s %12s %14s  %s\n' "$name" "$size" "${RPS[$name,$size]}" "${CPU[$name,$size]}" \
      "$(ratio "${RPS[$name,$size]}" "${RPS[nginx-proxy,$size]:-}")" \
      "$(ratio "${CPU[$name,$size]}" "${CPU[nginx-proxy,$size]:-}")" \
      "$(ratio "${CPU[$name,$size]}" "${CPU[uring-l4,$size]:-}")" "${NOTE[$name,$size]:-}"
  done
done
if (( METRICS )); then echo "(luring-uring+metrics answered $(wc -l < "$TMP/scrapes" 2>/dev/null || echo 0) scrapes)"; fi
echo "(measured in $(( $(date +%s) - T0 )) s, excluding the build)"
