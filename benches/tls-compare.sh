#!/usr/bin/env bash
# TLS termination cost, side by side in one run: wrk over HTTPS (keep-alive) to
#   nginx-tls     nginx terminating TLS, proxying to the plain origin
#   luring-tls    luring --mode reverse:http://origin terminating TLS (leaf from its CA)
#   haproxy-tls   HAProxy (http mode) terminating TLS, when haproxy is installed
#   uring-l4-tls  the floor: examples/uring_relay.rs relaying the TLS bytes untouched to
#                 a TLS origin (no HTTP, no crypto: what any TLS proxy costs at least)
# and new TLS connections per second (wrk with Connection: close); then HTTP/2 with TLS
# on both sides (h2load to the proxy, the proxy to an nginx origin over TLS):
#   nginx-h2      nginx http2 terminating TLS, proxy_pass https:// to the origin (HTTP/1.1)
#   haproxy-h2    HAProxy, h2 to the client and to the origin over TLS (when installed)
#   luring-h2     luring --mode reverse:https://origin, h2 to the client and the origin
# Proxies pinned to core 0, wrk and the origin to core 1. Prints req/s and proxy CPU
# microseconds per request. usage: bash benches/tls-compare.sh [--duration SECS]
set -euo pipefail
cd "$(dirname "$0")/.."
DURATION=4
[[ "${1:-}" == "--duration" ]] && DURATION=$2
BIN=target/release/luring
RELAY=target/release/examples/uring_relay
[[ -x $BIN && -x $RELAY ]] || cargo build --release --bin luring --example uring_relay
W=$(mktemp -d)
trap 'kill $(cat $W/ngx.pid 2>/dev/null) $(jobs -p) 2>/dev/null; rm -rf $W' EXIT
head -c 1024 /dev/zero | tr '\0' x > $W/1k
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout $W/k.pem \
  -out $W/c.pem -days 2 -subj /CN=localhost -addext subjectAltName=DNS:localhost 2>/dev/null
cat > $W/origin.conf <<NGX
worker_processes 1; daemon off; pid $W/origin.pid; error_log $W/origin.err;
events { worker_connections 4096; }
http { access_log off; server { listen 127.0.0.1:19100; root $W; keepalive_requests 1000000; }
  server { listen 127.0.0.1:19101 ssl http2; ssl_certificate $W/c.pem; ssl_certificate_key $W/k.pem;
    root $W; keepalive_requests 1000000; } }
NGX
cat > $W/ngx.conf <<NGX
worker_processes 1; daemon off; pid $W/ngx.pid; error_log $W/ngx.err;
events { worker_connections 4096; }
http { access_log off;
  upstream o { server 127.0.0.1:19100; keepalive 64; }
  server { listen 127.0.0.1:19443 ssl; ssl_certificate $W/c.pem; ssl_certificate_key $W/k.pem;
    ssl_protocols TLSv1.3; keepalive_requests 1000000;
    location / { proxy_pass http://o; proxy_http_version 1.1; proxy_set_header Connection ""; } }
  upstream ot { server 127.0.0.1:19101; keepalive 256; }
  server { listen 127.0.0.1:19446 ssl http2; ssl_certificate $W/c.pem; ssl_certificate_key $W/k.pem;
    ssl_protocols TLSv1.3; keepalive_requests 1000000;
    location / { proxy_pass https://ot; proxy_http_version 1.1; proxy_set_header Connection "";
      proxy_ssl_session_reuse on; } } }
NGX
taskset -c 1 nginx -c $W/origin.conf & sleep 0.3
cpu_of() { awk '{print $14+$15}' /proc/$1/stat; }
run() { # name pid url extra-wrk-args...
  local name=$1 pid=$2 url=$3; shift 3
  local t0; t0=$(cpu_of "$pid")
  local out; out=$(taskset -c 1 wrk -t1 -c32 -d${DURATION}s "$@" "$url")
  local t1; t1=$(cpu_of "$pid")
  local reqs; reqs=$(awk '/requests in/ {print $1}' <<<"$out")
  local rps; rps=$(awk '/Requests\/sec/ {print $2}' <<<"$out")
  local tick; tick=$(getconf CLK_TCK)
  printf '%-22s %10s req/s %8.1f cpu-us/req\n' "$name" "$rps" \
    "$(echo "($t1-$t0)*1000000/$tick/$reqs" | bc -l)"
}
taskset -c 0 nginx -c $W/ngx.conf & sleep 0.5
NGX_PID=$(pgrep -f "nginx: worker process" -n)
taskset -c 0 $BIN run --mode reverse:http://127.0.0.1:19100 --listen 127.0.0.1:19444 \
  --workers 1 --confdir $W/ca --log-level warn 2>$W/luring.err & sleep 1
LPID=$!
curl -sk -o /dev/null https://localhost:19444/1k --resolve localhost:19444:127.0.0.1
# HAProxy terminating TLS (http mode), when installed (apt: haproxy)
HPID=""
if command -v haproxy >/dev/null; then
  cat $W/c.pem $W/k.pem > $W/hap.pem
  cat > $W/hap.cfg <<HAP
global
  nbthread 1
  maxconn 4096
defaults
  mode http
  timeout connect 5s
  timeout client 60s
  timeout server 60s
  option http-keep-alive
frontend fe
  bind 127.0.0.1:19445 ssl crt $W/hap.pem ssl-min-ver TLSv1.3
  default_backend be
backend be
  http-reuse always
  server o 127.0.0.1:19100
frontend fe2
  bind 127.0.0.1:19449 ssl crt $W/hap.pem ssl-min-ver TLSv1.3 alpn h2,http/1.1
  default_backend be2
backend be2
  http-reuse always
  server o2 127.0.0.1:19101 ssl verify none alpn h2
HAP
  taskset -c 0 haproxy -db -f $W/hap.cfg >/dev/null 2>$W/hap.err & HPID=$!
  sleep 0.5
fi
taskset -c 0 $RELAY 19448 127.0.0.1:19101 >/dev/null 2>$W/relay.err & RPID=$!
sleep 0.3
echo "TLS 1.3 keep-alive, 1 KiB responses (wrk -c32, ${DURATION}s)"
run nginx-tls "$NGX_PID" https://localhost:19443/1k
run uring-l4-tls "$RPID" https://localhost:19448/1k
[[ -n $HPID ]] && run haproxy-tls "$HPID" https://localhost:19445/1k
run luring-tls "$LPID" https://localhost:19444/1k
echo "new TLS connection per request"
run nginx-tls-newconn "$NGX_PID" https://localhost:19443/1k -H "Connection: close"
[[ -n $HPID ]] && run haproxy-tls-newconn "$HPID" https://localhost:19445/1k -H "Connection: close"
run luring-tls-newconn "$LPID" https://localhost:19444/1k -H "Connection: close"
# h2load: run_h2 name pid url; -c10 connections, -m5 streams each, for DURATION seconds
run_h2() {
  local name=$1 pid=$2 url=$3
  local t0; t0=$(cpu_of "$pid")
  local out; out=$(taskset -c 1 h2load -c10 -m5 -D "$DURATION" "$url" 2>&1)
  local t1; t1=$(cpu_of "$pid")
  # in timing mode h2load's "requests:" line may read 0; rate x time is the count
  local rps; rps=$(awk '/^finished in/ {print $4}' <<<"$out")
  local secs; secs=$(awk '/^finished in/ {sub(/s,$/, "", $3); print $3}' <<<"$out")
  local reqs; reqs=$(echo "$rps*$secs" | bc -l)
  local proto; proto=$(awk '/^Application protocol:/ {print $3}' <<<"$out")
  local tick; tick=$(getconf CLK_TCK)
  printf '%-22s %10s req/s %8.1f cpu-us/req  (%s)\n' "$name" "$rps" \
    "$(echo "($t1-$t0)*1000000/$tick/$reqs" | bc -l)" "$proto"
}
if command -v h2load >/dev/null; then
  taskset -c 0 $BIN run --mode reverse:https://localhost:19101 --upstream-ca $W/c.pem \
    --listen 127.0.0.1:19447 --workers 1 --confdir $W/ca --log-level warn 2>$W/luring-h2.err &
  L2PID=$!
  sleep 1
  echo "HTTP/2 over TLS on both sides, 1 KiB responses (h2load -c10 -m5, ${DURATION}s)"
  run_h2 nginx-h2 "$NGX_PID" https://127.0.0.1:19446/1k
  [[ -n $HPID ]] && run_h2 haproxy-h2 "$HPID" https://127.0.0.1:19449/1k
  run_h2 luring-h2 "$L2PID" https://127.0.0.1:19447/1k
fi

