#!/usr/bin/env bash
# One large download over HTTP/2 with TLS on both sides, side by side in one run:
#   direct        curl to the origin (nginx, TLS + h2)
#   luring        luring --mode reverse:https://origin: TLS terminated with a leaf from
#                 its CA, h2 to the client and to the origin
#   nginx         nginx terminating TLS with h2, proxy_pass https:// to the origin
#                 (nginx speaks HTTP/1.1 upstream; buffers in memory, no temp file)
# The proxies run on core 0, curl and the origin on core 1. Rounds are interleaved.
# Prints MB/s per download and the proxy's CPU per MB ((utime+stime) / MB).
#
# usage: bash benches/h2-download.sh [--size-mb N] [--rounds R] [--bin PATH] [--no-build]
# Needs nginx, curl (with HTTP/2) and openssl.
set -euo pipefail
cd "$(dirname "$0")/.."
source benches/lib.sh
SIZE_MB=100
ROUNDS=3
BIN=target/release/luring
BUILD=1
while (( $# )); do
  case "$1" in
    --size-mb) SIZE_MB=$2; shift 2 ;;
    --rounds) ROUNDS=$2; shift 2 ;;
    --bin) BIN=$2; BUILD=0; shift 2 ;;
    --no-build) BUILD=0; shift ;;
    -h|--help) sed -n '2,12p' "$0"; exit 0 ;;
    *) echo "unknown argument: $1" >&2; exit 2 ;;
  esac
done
for t in nginx curl openssl taskset; do
  command -v "$t" >/dev/null || { echo "$t is required" >&2; exit 1; }
done
curl -V | grep -q HTTP2 || { echo "curl without HTTP/2 support" >&2; exit 1; }
(( BUILD )) && cargo build --release --locked --bin luring >&2

W=$(mktemp -d "${TMPDIR:-/tmp}/luring-h2dl.XXXXXX")
PIDS=()
cleanup() {
  local p
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null || true; done
  [[ -n ${KEEP:-} ]] || rm -rf "$W"
}
trap cleanup EXIT

head -c "${SIZE_MB}M" /dev/zero > "$W/big"
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout "$W/k.pem" \
  -out "$W/c.pem" -days 2 -subj /CN=localhost -addext subjectAltName=DNS:localhost 2>/dev/null
ORIGIN=$(free_port) NGX=$(free_port) LUR=$(free_port)
mkdir -p "$W/o" "$W/n"
cat > "$W/origin.conf" <<NGX
worker_processes 1; master_process off; daemon off; pid $W/o/pid; error_log $W/o/err;
events { worker_connections 1024; }
http { access_log off; client_body_temp_path $W/o/b; proxy_temp_path $W/o/p;
  fastcgi_temp_path $W/o/f; uwsgi_temp_path $W/o/u; scgi_temp_path $W/o/s;
  server { listen 127.0.0.1:$ORIGIN ssl http2; ssl_certificate $W/c.pem;
    ssl_certificate_key $W/k.pem; ssl_protocols TLSv1.3; root $W; } }
NGX
cat > "$W/ngx.conf" <<NGX
worker_processes 1; master_process off; daemon off; pid $W/n/pid; error_log $W/n/err;
events { worker_connections 1024; }
http { access_log off; client_body_temp_path $W/n/b; proxy_temp_path $W/n/p;
  fastcgi_temp_path $W/n/f; uwsgi_temp_path $W/n/u; scgi_temp_path $W/n/s;
  upstream o { server 127.0.0.1:$ORIGIN; keepalive 16; }
  server { listen 127.0.0.1:$NGX ssl http2; ssl_certificate $W/c.pem;
    ssl_certificate_key $W/k.pem; ssl_protocols TLSv1.3;
    location / { proxy_pass https://o; proxy_http_version 1.1; proxy_set_header Connection "";
      proxy_ssl_protocols TLSv1.3; proxy_ssl_session_reuse on; proxy_buffers 16 64k; proxy_max_temp_file_size 0; } } }
NGX
taskset -c 1 nginx -c "$W/origin.conf" 2>"$W/origin.log" &
PIDS+=($!)
taskset -c 0 nginx -c "$W/ngx.conf" 2>"$W/ngx.log" &
NGX_PID=$!; PIDS+=($NGX_PID)
taskset -c 0 "$BIN" run --listen "127.0.0.1:$LUR" --mode "reverse:https://localhost:$ORIGIN" \
  --upstream-ca "$W/c.pem" --confdir "$W/ca" --workers 1 --log-level warn 2>"$W/luring.log" &
LUR_PID=$!; PIDS+=($LUR_PID)
for p in "$ORIGIN" "$NGX" "$LUR"; do
  wait_port "$p" || { echo "a server did not start: $(cat "$W"/*.log | head -c 400)" >&2; exit 1; }
done

CLK_TCK=$(getconf CLK_TCK)
fetch() { # port -> "MB/s http-version"
  taskset -c 1 curl -sk --http2 -o /dev/null -w '%{speed_download} %{http_version} %{size_download}\n' \
    "https://localhost:$1/big"
}
fetch "$ORIGIN" >/dev/null; fetch "$LUR" >/dev/null; fetch "$NGX" >/dev/null   # warm-up
echo "one ${SIZE_MB} MB download over h2 + TLS on both sides, $ROUNDS interleaved rounds"
printf '%-8s %5s %10s %12s %10s\n' target round MB/s "cpu ms/MB" "vs direct"
for r in $(seq 1 "$ROUNDS"); do
  direct=""
  for name in direct luring nginx; do
    case $name in
      direct) port=$ORIGIN pid="" ;;
      luring) port=$LUR pid=$LUR_PID ;;
      nginx) port=$NGX pid=$NGX_PID ;;
    esac
    c0=0; [[ -n $pid ]] && c0=$(cpu_ticks "$pid")
    read -r speed ver size < <(fetch "$port")
    c1=0; [[ -n $pid ]] && c1=$(cpu_ticks "$pid")
    if [[ $ver != 2 || $size != $(( SIZE_MB * 1048576 )) ]]; then
      echo "$name: HTTP/$ver, $size bytes: not an h2 download of the whole file" >&2; exit 1
    fi
    mbs=$(awk -v s="$speed" 'BEGIN { printf "%.0f", s / 1e6 }')
    cpu="-"
    [[ -n $pid ]] && cpu=$(awk -v d=$((c1 - c0)) -v t="$CLK_TCK" -v m="$SIZE_MB" \
      'BEGIN { printf "%.2f", d * 1000 / t / (m * 1.048576) }')
    [[ $name == direct ]] && direct=$mbs
    ratio=$(awk -v a="$mbs" -v b="$direct" 'BEGIN { printf "%.2f", a / b }')
    printf '%-8s %5s %10s %12s %10s\n' "$name" "$r" "$mbs" "$cpu" "$ratio"
  done
done
