#!/usr/bin/env bash
# RSS per idle HTTP/2 client connection: luring (reverse mode to an HTTP/1.1 origin,
# one worker, io_uring and epoll) against nginx (http2, proxy_pass to the same
# origin), same client, same run. The h2 sibling of benches/idle.sh.
#
# A Python client (the h2 package) opens N h2c connections with prior knowledge one
# after another; each makes one request for a 1 KiB file, reads the whole response and
# stays open. The proxy's VmRSS (/proc/PID/status) is read before the first and one
# second after the last; the difference over N is the figure.
#
# usage: bash benches/idle-h2.sh [--bin PATH] [--connections N]   (default 1000)
# Needs nginx and python3 with h2; the client and the proxy each need N descriptors.
set -euo pipefail
cd "$(dirname "$0")/.."
source benches/lib.sh
BIN=target/release/luring
N=1000
while (( $# )); do
  case "$1" in
    --bin) BIN=$2; shift 2 ;;
    --connections) N=$2; shift 2 ;;
    -h|--help) sed -n '2,12p' "$0"; exit 0 ;;
    *) echo "unknown argument: $1" >&2; exit 2 ;;
  esac
done
command -v nginx >/dev/null || { echo "nginx is required" >&2; exit 1; }
python3 -c 'import h2' 2>/dev/null || { echo "python3 h2 is required" >&2; exit 1; }
ulimit -n $(( N + 2000 )) 2>/dev/null || { echo "cannot raise the fd limit for $N connections" >&2; exit 1; }

TMP=$(mktemp -d "${TMPDIR:-/tmp}/luring-idle-h2.XXXXXX")
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
http { access_log off; keepalive_timeout 600s; http2_idle_timeout 600s; $TEMPS
  upstream o { server 127.0.0.1:$ORIGIN; keepalive 32; }
  server { listen 127.0.0.1:$RP http2; location / { proxy_pass http://o;
    proxy_http_version 1.1; proxy_set_header Connection ""; } } }
NGX
cat > "$TMP/client.py" <<'PY'
import socket, sys, time
import h2.config, h2.connection, h2.events
port, n, pid = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
def rss():
    for line in open(f"/proc/{pid}/status"):
        if line.startswith("VmRSS"):
            return int(line.split()[1])
time.sleep(0.5)
before, conns, t0 = rss(), [], time.time()
for i in range(n):
    s = socket.create_connection(("127.0.0.1", port), timeout=10)
    c = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
    c.initiate_connection()
    c.send_headers(1, [(":method", "GET"), (":scheme", "http"), (":authority", "localhost"),
                       (":path", "/1k.bin")], end_stream=True)
    s.sendall(c.data_to_send())
    got, done = 0, False
    while not done:
        d = s.recv(65536)
        if not d:
            sys.exit(f"connection {i} closed")
        for e in c.receive_data(d):
            if isinstance(e, h2.events.DataReceived):
                got += len(e.data)
                c.acknowledge_received_data(len(e.data), e.stream_id)
            if isinstance(e, h2.events.StreamEnded):
                done = True
        s.sendall(c.data_to_send())
    if got != 1024:
        sys.exit(f"connection {i}: {got} body bytes")
    conns.append((s, c))
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
  out=$(python3 "$TMP/client.py" "$port" "$N" "$pid")
  read -r before after per <<<"$out"
  printf '%-16s %10s %10s %10s\n' "$name" "$before" "$after" "$per"
}
echo "RSS per idle h2c connection (one request each), $N connections, one worker each"
printf '%-16s %10s %10s %10s\n' target "KiB before" "KiB after" "KiB/conn"
for io in uring epoll; do
  port=$(free_port)
  "$BIN" run --listen "127.0.0.1:$port" --mode "reverse:http://127.0.0.1:$ORIGIN" \
    --workers 1 --io "$io" --log-level warn --max-connections $(( N + 1000 )) \
    > "$TMP/luring.log" 2>&1 &
  pid=$!
  sleep 0.5
  row "luring-$io" "$port" "$pid"
  kill -INT "$pid"; wait "$pid" 2>/dev/null || true
done
nginx -p "$TMP" -c "$TMP/rp.conf" 2>/dev/null &
pid=$!
sleep 0.5
row nginx-proxy "$RP" "$pid"
