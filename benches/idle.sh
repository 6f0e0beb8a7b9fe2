#!/usr/bin/env bash
# RSS per idle HTTP/1.1 keep-alive client connection: luring (forward mode, one
# worker, io_uring and epoll) against nginx as a reverse proxy, same client, same run.
#
# A Python client opens N connections one after another; each sends one request for
# a 1 KiB file (absolute-form, which nginx also takes), reads the whole response and
# stays open. The proxy's VmRSS (/proc/PID/status) is read before the first and one
# second after the last; the difference over N is the figure.
#
# usage: bash benches/idle.sh [--bin PATH] [--connections N]   (default 10000)
# Needs nginx and python3; the client and the proxy each need N file descriptors.
set -euo pipefail
cd "$(dirname "$0")/.."
source benches/lib.sh
BIN=target/release/luring
N=10000
while (( $# )); do
  case "$1" in
    --bin) BIN=$2; shift 2 ;;
    --connections) N=$2; shift 2 ;;
    -h|--help) sed -n '2,11p' "$0"; exit 0 ;;
    *) echo "unknown argument: $1" >&2; exit 2 ;;
  esac
done
command -v nginx >/dev/null || { echo "nginx is required" >&2; exit 1; }
ulimit -n $(( N + 2000 )) 2>/dev/null || { echo "cannot raise the fd limit for $N connections" >&2; exit 1; }

TMP=$(mktemp -d "${TMPDIR:-/tmp}/luring-idle.XXXXXX")
trap 'kill $(jobs -p) 2>/dev/null; wait 2>/dev/null; rm -rf "$TMP"' EXIT
ORIGIN=$(free_port)
RP=$(free_port)
mkdir -p "$TMP/www"
head -c 1024 /dev/urandom > "$TMP/www/1k.bin"
TEMPS="client_body_temp_path $TMP/b; proxy_temp_path $TMP/p; fastcgi_temp_path $TMP/f; uwsgi_temp_path $TMP/u; scgi_temp_path $TMP/s;"
cat > "$TMP/origin.conf" <<NGX
worker_processes 1; master_process off; daemon off; pid $TMP/origin.pid; error_log $TMP/origin.err warn;
events { worker_connections 1024; }
http { access_log off; keepalive_requests 10000000; $TEMPS
  server { listen 127.0.0.1:$ORIGIN; root $TMP/www; } }
NGX
cat > "$TMP/rp.conf" <<NGX
worker_processes 1; master_process off; daemon off; pid $TMP/rp.pid; error_log $TMP/rp.err warn;
worker_rlimit_nofile $(( N + 2000 ));
events { worker_connections $(( N + 1000 )); }
http { access_log off; keepalive_requests 10000000; keepalive_timeout 600s; $TEMPS
  upstream o { server 127.0.0.1:$ORIGIN; keepalive 32; }
  server { listen 127.0.0.1:$RP; location / { proxy_pass http://o;
    proxy_http_version 1.1; proxy_set_header Connection ""; } } }
NGX
cat > "$TMP/client.py" <<'PY'
import socket, sys, time
port, n, origin, pid = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], int(sys.argv[4])
def rss():
    for line in open(f"/proc/{pid}/status"):
        if line.startswith("VmRSS"):
            return int(line.split()[1])
time.sleep(0.5)
before, socks, t0 = rss(), [], time.time()
req = f"GET http://{origin}/1k.bin HTTP/1.1\r\nHost: {origin}\r\n\r\n".encode()
for i in range(n):
    s = socket.create_connection(("127.0.0.1", port), timeout=10)
    s.sendall(req)
    got = b""
    while b"\r\n\r\n" not in got or len(got.split(b"\r\n\r\n", 1)[1]) < 1024:
        d = s.recv(65536)
        if not d:
            sys.exit(f"connection {i} closed")
        got += d
    socks.append(s)
    if time.time() - t0 > 300:
        sys.exit("too slow")
time.sleep(1.0)
after = rss()
print(f"{before} {after} {(after - before) / n:.2f}")
PY
nginx -p "$TMP" -c "$TMP/origin.conf" 2>/dev/null &
sleep 0.5
row() {
  local name=$1 port=$2 pid=$3 out
  out=$(python3 "$TMP/client.py" "$port" "$N" "127.0.0.1:$ORIGIN" "$pid")
  read -r before after per <<<"$out"
  printf '%-16s %10s %10s %10s\n' "$name" "$before" "$after" "$per"
}
echo "RSS per idle HTTP/1.1 keep-alive connection, $N connections, one worker each"
printf '%-16s %10s %10s %10s\n' target "KiB before" "KiB after" "KiB/conn"
for io in uring epoll; do
  port=$(free_port)
  "$BIN" run --listen "127.0.0.1:$port" --workers 1 --io "$io" --log-level warn \
    --max-connections $(( N + 1000 )) > "$TMP/luring.log" 2>&1 &
  pid=$!
  sleep 0.5
  row "luring-$io" "$port" "$pid"
  kill -INT "$pid"; wait "$pid" 2>/dev/null || true
done
nginx -p "$TMP" -c "$TMP/rp.conf" 2>/dev/null &
pid=$!
sleep 0.5
row nginx-proxy "$RP" "$pid"
