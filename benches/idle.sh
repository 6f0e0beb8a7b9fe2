#!/usr/bin/env bash
# RSS per idle client connection: luring (one worker, io_uring and epoll) against nginx
# as a reverse proxy, same client, same run.
#   HTTP/1.1 (default): keep-alive connections to luring in forward mode; each sends one
#     request for a 1 KiB file (absolute-form, which nginx also takes).
#   --h2: h2c connections with prior knowledge (python's h2 package) to luring in
#     reverse mode and to nginx with http2; each makes one request for the file.
# A Python client opens N connections one after another; each reads the whole response
# and stays open. The proxy's VmRSS (/proc/PID/status) is read before the first and
# one second after the last; the difference over N is the figure.
#
# usage: bash benches/idle.sh [--h2] [--bin PATH] [--connections N]
#        (N defaults to 10000, 1000 with --h2; benches/idle-h2.sh is idle.sh --h2)
# Needs nginx and python3 (with h2 for --h2); the client and the proxy each need N
# file descriptors.
set -euo pipefail
cd "$(dirname "$0")/.."
source benches/lib.sh
BIN=target/release/luring
H2=0
N=
while (( $# )); do
  case "$1" in
    --h2) H2=1; shift ;;
    --bin) BIN=$2; shift 2 ;;
    --connections) N=$2; shift 2 ;;
    -h|--help) sed -n '2,15p' "$0"; exit 0 ;;
    *) echo "unknown argument: $1" >&2; exit 2 ;;
  esac
done
if (( H2 )); then N=${N:-1000}; else N=${N:-10000}; fi
command -v nginx >/dev/null || { echo "nginx is required" >&2; exit 1; }
if (( H2 )); then
  python3 -c 'import h2' 2>/dev/null || { echo "python3 h2 is required" >&2; exit 1; }
fi
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
if (( H2 )); then
  KEEP="keepalive_timeout 600s; http2_idle_timeout 600s;" LISTEN="127.0.0.1:$RP http2"
else
  KEEP="keepalive_requests 10000000; keepalive_timeout 600s;" LISTEN="127.0.0.1:$RP"
fi
cat > "$TMP/rp.conf" <<NGX
worker_processes 1; master_process off; daemon off; pid $TMP/rp.pid; error_log $TMP/rp.err warn;
worker_rlimit_nofile $(( N + 2000 ));
events { worker_connections $(( N + 1000 )); }
http { access_log off; $KEEP $TEMPS
  upstream o { server 127.0.0.1:$ORIGIN; keepalive 32; }
  server { listen $LISTEN; location / { proxy_pass http://o;
    proxy_http_version 1.1; proxy_set_header Connection ""; } } }
NGX
cat > "$TMP/client.py" <<'PY'
import socket, sys, time
port, n, origin, pid, h2 = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], int(sys.argv[4]), sys.argv[5] == "1"
def rss():
    for line in open(f"/proc/{pid}/status"):
        if line.startswith("VmRSS"):
            return int(line.split()[1])
def http1(i, s):
    s.sendall(f"GET http://{origin}/1k.bin HTTP/1.1\r\nHost: {origin}\r\n\r\n".encode())
    got = b""
    while b"\r\n\r\n" not in got or len(got.split(b"\r\n\r\n", 1)[1]) < 1024:
        d = s.recv(65536)
        if not d:
            sys.exit(f"connection {i} closed")
        got += d
    return s
def http2(i, s):
    import h2.config, h2.connection, h2.events
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
    return (s, c)
time.sleep(0.5)
before, held, t0 = rss(), [], time.time()
for i in range(n):
    s = socket.create_connection(("127.0.0.1", port), timeout=10)
    held.append(http2(i, s) if h2 else http1(i, s))
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
  out=$(python3 "$TMP/client.py" "$port" "$N" "127.0.0.1:$ORIGIN" "$pid" "$H2")
  read -r before after per <<<"$out"
  printf '%-16s %10s %10s %10s\n' "$name" "$before" "$after" "$per"
}
if (( H2 )); then
  echo "RSS per idle h2c connection (one request each), $N connections, one worker each"
  MODE=(--mode "reverse:http://127.0.0.1:$ORIGIN")
else
  echo "RSS per idle HTTP/1.1 keep-alive connection, $N connections, one worker each"
  MODE=()
fi
printf '%-16s %10s %10s %10s\n' target "KiB before" "KiB after" "KiB/conn"
for io in uring epoll; do
  port=$(free_port)
  "$BIN" run --listen "127.0.0.1:$port" "${MODE[@]}" --workers 1 --io "$io" \
    --log-level warn --max-connections $(( N + 1000 )) > "$TMP/luring.log" 2>&1 &
  pid=$!
  sleep 0.5
  row "luring-$io" "$port" "$pid"
  kill -INT "$pid"; wait "$pid" 2>/dev/null || true
done
nginx -p "$TMP" -c "$TMP/rp.conf" 2>/dev/null &
pid=$!
sleep 0.5
row nginx-proxy "$RP" "$pid"
