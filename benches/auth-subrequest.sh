#!/usr/bin/env bash
# An auth subrequest per proxied request, luring against OpenResty-style nginx, in one
# run on this machine:
#   luring   luring --mode reverse --workers 1 (core 0) with lua/examples/auth-subrequest.lua:
#            luring.http_request to the auth service, 403 unless it says 200
#   nginx    nginx + lua-nginx-module (core 0): access_by_lua_block doing the same with
#            ngx.location.capture to an internal location proxied to the auth service
#            (keep-alive upstream), the way OpenResty users write it
#   (and both without the auth call, as the floor each one adds to)
# The origin (1 KiB files) and the auth service (/check, 200 after --auth-delay ms,
# by the echo module's echo_sleep) are one nginx on core 1; wrk on core 1.
#
# usage: bash benches/auth-subrequest.sh [--duration SECS] [--connections N]
#                                        [--auth-delay MS] [--no-build]
# Prints: target, req/s, proxy CPU us/request ((utime+stime) delta of the proxy process
# over the requests wrk completed), p50 and p99 latency (wrk --latency), and the CPU
# ratio against nginx. Needs nginx, libnginx-mod-http-lua and libnginx-mod-http-echo.
set -euo pipefail
cd "$(dirname "$0")/.."
source benches/lib.sh

DURATION=5
CONNS=64
DELAY=0
BUILD=1
while (( $# )); do
  case "$1" in
    --duration) DURATION=$2; shift 2 ;;
    --connections) CONNS=$2; shift 2 ;;
    --auth-delay) DELAY=$2; shift 2 ;;
    --no-build) BUILD=0; shift ;;
    -h|--help) sed -n '2,18p' "$0"; exit 0 ;;
    *) echo "unknown argument: $1" >&2; exit 2 ;;
  esac
done

TARGET_DIR="${CARGO_TARGET_DIR:-target}"
BIN="$TARGET_DIR/release/luring"
MODS=/usr/lib/nginx/modules
CLK_TCK=$(getconf CLK_TCK)
for t in wrk nginx taskset curl; do
  command -v "$t" >/dev/null || { echo "$t is required" >&2; exit 1; }
done
for m in ndk_http_module ngx_http_lua_module ngx_http_echo_module; do
  [[ -f $MODS/$m.so ]] || {
    echo "$MODS/$m.so missing (apt install libnginx-mod-http-lua libnginx-mod-http-echo)" >&2
    exit 1
  }
done
if (( BUILD )); then
  cargo build --release --locked --bin luring >&2
fi

TMP=$(mktemp -d "${TMPDIR:-/tmp}/luring-auth.XXXXXX")
PIDS=()
cleanup() {
  local p
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null || true; done
  rm -rf "$TMP"
}
trap cleanup EXIT

nginx_conf() { # name main-context http-context -> path
  mkdir -p "$TMP/$1"
  cat > "$TMP/$1.conf" <<NGX
$2
worker_processes 1; master_process off; daemon off; pid $TMP/$1/nginx.pid;
error_log $TMP/$1/error.log warn;
events { worker_connections 4096; }
http { access_log off; sendfile on; tcp_nodelay on; keepalive_requests 10000000;
  client_body_temp_path $TMP/$1/b; proxy_temp_path $TMP/$1/p; fastcgi_temp_path $TMP/$1/f;
  uwsgi_temp_path $TMP/$1/u; scgi_temp_path $TMP/$1/s; default_type application/octet-stream;
  $3 }
NGX
  echo "$TMP/$1.conf"
}

mkdir -p "$TMP/www"
head -c 1024 /dev/urandom > "$TMP/www/1k.bin"
ORIGIN=$(free_port)
check="return 200 ok;"
(( DELAY > 0 )) && check="echo_sleep $(awk "BEGIN { print $DELAY / 1000 }"); echo ok;"
conf=$(nginx_conf origin "load_module $MODS/ngx_http_echo_module.so;" \
  "server { listen 127.0.0.1:$ORIGIN; root $TMP/www; location = /check { $check } }")
taskset -c 1 nginx -p "$TMP/origin" -c "$conf" 2>"$TMP/origin.err" &
PIDS+=($!)
wait_port "$ORIGIN" || { echo "origin did not start: $(cat "$TMP/origin.err")" >&2; exit 1; }

NAMES=(); PORTS=(); TPIDS=()
register() { # name port pid
  PIDS+=("$3")
  if wait_port "$2"; then
    NAMES+=("$1"); PORTS+=("$2"); TPIDS+=("$3")
  else
    echo "# $1 did not start: $(head -c 300 "$TMP/$1.err")" >&2
  fi
}
start_nginx() { # name access-phase-lua
  local port conf access=""
  port=$(free_port)
  [[ -n $2 ]] && access="access_by_lua_block { $2 }"
  conf=$(nginx_conf "$1" \
    "load_module $MODS/ndk_http_module.so; load_module $MODS/ngx_http_lua_module.so;" \
    "upstream origin { server 127.0.0.1:$ORIGIN; keepalive 64; }
     server { listen 127.0.0.1:$port;
       location = /_auth { internal; proxy_pass http://origin/check;
         proxy_http_version 1.1; proxy_set_header Connection \"\"; proxy_pass_request_body off; }
       location / { $access proxy_pass http://origin;
         proxy_http_version 1.1; proxy_set_header Connection \"\"; } }")
  taskset -c 0 nginx -p "$TMP/$1" -c "$conf" 2>"$TMP/$1.err" &
  register "$1" "$port" $!
}
start_luring() { # name [plugin]
  local port
  port=$(free_port)
  local extra=()
  [[ -n ${2:-} ]] && extra=(--plugin "$2")
  AUTH_URL="http://127.0.0.1:$ORIGIN/check" taskset -c 0 "$BIN" run \
    --listen "127.0.0.1:$port" --mode "reverse:http://127.0.0.1:$ORIGIN" --workers 1 \
    --log-level warn "${extra[@]}" 2>"$TMP/$1.err" &
  register "$1" "$port" $!
}

start_nginx nginx-noauth ""
start_nginx nginx-auth 'local r = ngx.location.capture("/_auth")
  if r.status ~= 200 then return ngx.exit(403) end'
start_luring luring-noauth
start_luring luring-auth "$(realpath lua/examples/auth-subrequest.lua)"

to_us() { # wrk latency text (12.3us, 4.5ms, 1.2s) -> microseconds
  awk -v v="$1" 'BEGIN { n = v + 0; if (v ~ /ms$/) n *= 1000; else if (v ~ /s$/ && v !~ /us$/) n *= 1000000; printf "%.0f", n }'
}

echo "auth subrequest per request: wrk -t1 -c$CONNS -d${DURATION}s, 1 KiB, auth delay ${DELAY} ms"
printf '%-16s %10s %12s %10s %10s %10s\n' target req/s "cpu us/req" "p50 us" "p99 us" "cpu/nginx"
declare -A CPU
for i in "${!NAMES[@]}"; do
  name=${NAMES[$i]} port=${PORTS[$i]} pid=${TPIDS[$i]}
  # warm-up (connections to the origin, and the worker's pools)
  curl -s -o /dev/null "http://127.0.0.1:$port/1k.bin" || true
  c0=$(cpu_ticks "$pid")
  out=$(taskset -c 1 wrk -t1 -c"$CONNS" -d"${DURATION}s" --latency "http://127.0.0.1:$port/1k.bin")
  c1=$(cpu_ticks "$pid")
  n=$(awk '/requests in/ { print $1 }' <<<"$out")
  rps=$(awk '/Requests\/sec/ { printf "%.0f", $2 }' <<<"$out")
  p50=$(to_us "$(awk '$1 == "50%" { print $2 }' <<<"$out")")
  p99=$(to_us "$(awk '$1 == "99%" { print $2 }' <<<"$out")")
  bad=$(awk '/Non-2xx/ { print $NF }' <<<"$out")
  us=$(awk -v d=$((c1 - c0)) -v t="$CLK_TCK" -v n="$n" 'BEGIN { printf "%.1f", d * 1000000 / t / n }')
  CPU[$name]=$us
  base=${CPU[nginx-${name#*-}]:-}
  ratio="-"
  [[ -n $base ]] && ratio=$(awk -v a="$us" -v b="$base" 'BEGIN { printf "%.2f", a / b }')
  printf '%-16s %10s %12s %10s %10s %10s%s\n' "$name" "$rps" "$us" "$p50" "$p99" "$ratio" \
    "${bad:+  (non-2xx: $bad)}"
done
