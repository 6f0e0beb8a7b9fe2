#!/usr/bin/env bash
# gRPC through luring against nginx's grpc_pass, in one run on this machine: a unary
# call with a 1 KiB message, h2c on both sides, driven by h2load (a fixed gRPC frame).
#   nginx-grpc      nginx `grpc_pass` (core 0)
#   luring          luring --mode reverse:http://SERVER (core 0), no hooks
#   luring+on_data  the same with a grpc.on_data hook that reads every payload
# then bidi streaming throughput (MB/s) of a grpcio client, direct and through luring
# with the on_data hook. The unary server is `luring bench origin` replaying one call
# recorded through luring from nghttpd (which echoes the request's gRPC frame and adds a
# `grpc-status: 0` trailer): about 58k calls/s on one core, so the proxies set the pace
# (python grpcio managed about 7.8k calls/s and nghttpd's echo 11k, so calls arrived
# one by one and nothing was batched). The bidi server is python grpcio. Servers and
# h2load run on core 1, the proxies on core 0.
#
# usage: bash benches/grpc-compare.sh [--calls N] [--clients C] [--no-build]
# Prints calls/s and proxy CPU per call ((utime+stime) of the proxy process over the
# calls h2load completed), with ratios against nginx and against luring without hooks.
set -euo pipefail
cd "$(dirname "$0")/.."
source benches/lib.sh

CALLS=20000
CLIENTS=8
BUILD=1
while (( $# )); do
  case "$1" in
    --calls) CALLS=$2; shift 2 ;;
    --clients) CLIENTS=$2; shift 2 ;;
    --no-build) BUILD=0; shift ;;
    -h|--help) sed -n '2,12p' "$0"; exit 0 ;;
    *) echo "unknown argument: $1" >&2; exit 2 ;;
  esac
done
for t in h2load nghttpd nginx taskset python3; do
  command -v "$t" >/dev/null || { echo "$t is required" >&2; exit 1; }
done
python3 -c "import grpc" 2>/dev/null || { echo "python grpcio is required" >&2; exit 1; }
TARGET_DIR="${CARGO_TARGET_DIR:-target}"
BIN="$TARGET_DIR/release/luring"
(( BUILD )) && cargo build --release --locked --bin luring >&2
CLK_TCK=$(getconf CLK_TCK)

TMP=$(mktemp -d "${TMPDIR:-/tmp}/luring-grpc.XXXXXX")
PIDS=()
cleanup() {
  local p
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null || true; done
  rm -rf "$TMP"
}
trap cleanup EXIT

# --- the gRPC server: unary echo and bidi echo, raw bytes (no protobuf classes) ----------
cat > "$TMP/server.py" <<'PY'
import sys, grpc
from concurrent import futures
ident = lambda b: b
def say(req, ctx): return req
def bidi(it, ctx):
    for m in it: yield m
h = grpc.method_handlers_generic_handler("t.Echo", {
    "Say": grpc.unary_unary_rpc_method_handler(say, ident, ident),
    "Bidi": grpc.stream_stream_rpc_method_handler(bidi, ident, ident)})
s = grpc.server(futures.ThreadPoolExecutor(8), handlers=[h])
s.add_insecure_port("127.0.0.1:" + sys.argv[1]); s.start(); s.wait_for_termination()
PY
GRPC=$(free_port)
taskset -c 1 python3 "$TMP/server.py" "$GRPC" &
PIDS+=($!)
wait_port "$GRPC" || { echo "gRPC server did not start" >&2; exit 1; }

# one gRPC frame: uncompressed flag, 4-byte length, 1 KiB payload
python3 -c 'import sys, struct; p = b"x" * 1024; sys.stdout.buffer.write(b"\0" + struct.pack(">I", len(p)) + p)' > "$TMP/frame.bin"

# the unary server: one call to nghttpd (it sends the request body back, then a
# grpc-status trailer) recorded through luring, then served by `luring bench origin`
ECHO=$(free_port) REC=$(free_port) UNARY=$(free_port)
taskset -c 1 nghttpd --no-tls -a 127.0.0.1 --echo-upload --trailer 'grpc-status: 0' "$ECHO" \
  >/dev/null 2>"$TMP/nghttpd.err" &
PIDS+=($!)
"$BIN" run --listen "127.0.0.1:$REC" --mode "reverse:http://127.0.0.1:$ECHO" --workers 1 \
  --record "$TMP/unary.flows" --log-level warn 2>"$TMP/record.err" &
rec_pid=$!
wait_port "$ECHO" && wait_port "$REC" || { echo "recording set-up did not start" >&2; exit 1; }
h2load -n 1 -c 1 -H 'content-type: application/grpc' -H 'te: trailers' -d "$TMP/frame.bin" \
  "http://127.0.0.1:$REC/t.Echo/Say" >/dev/null
kill "$rec_pid"; wait "$rec_pid" 2>/dev/null || true
taskset -c 1 "$BIN" bench origin "$TMP/unary.flows" --listen "127.0.0.1:$UNARY" --ignore-host \
  >/dev/null 2>"$TMP/origin.err" &
PIDS+=($!)
wait_port "$UNARY" || { echo "bench origin did not start: $(head -c 300 "$TMP/origin.err")" >&2; exit 1; }

NAMES=(); PORTS=(); TPIDS=()
register() { # name port pid
  PIDS+=("$3")
  if wait_port "$2"; then NAMES+=("$1"); PORTS+=("$2"); TPIDS+=("$3")
  else echo "# $1 did not start: $(head -c 300 "$TMP/$1.err")" >&2; fi
}

port=$(free_port)
mkdir -p "$TMP/ngx"
cat > "$TMP/ngx.conf" <<NGX
worker_processes 1; master_process off; daemon off; pid $TMP/ngx/nginx.pid;
error_log $TMP/ngx/error.log warn;
events { worker_connections 4096; }
http { access_log off; client_body_temp_path $TMP/ngx/b; proxy_temp_path $TMP/ngx/p;
  fastcgi_temp_path $TMP/ngx/f; uwsgi_temp_path $TMP/ngx/u; scgi_temp_path $TMP/ngx/s;
  keepalive_requests 1000000;
  upstream grpcs { server 127.0.0.1:$UNARY; keepalive 16; keepalive_requests 1000000; }
  server { listen 127.0.0.1:$port http2; location / { grpc_pass grpc://grpcs; } } }
NGX
taskset -c 0 nginx -p "$TMP/ngx" -c "$TMP/ngx.conf" 2>"$TMP/nginx-grpc.err" &
register nginx-grpc "$port" $!

start_luring() { # name upstream-port [plugin]
  local p extra=()
  p=$(free_port)
  [[ -n ${3:-} ]] && extra=(--plugin "$3")
  taskset -c 0 "$BIN" run --listen "127.0.0.1:$p" --mode "reverse:http://127.0.0.1:$2" \
    --workers 1 --log-level warn "${extra[@]}" 2>"$TMP/$1.err" &
  register "$1" "$p" $!
}
cat > "$TMP/on_data.lua" <<'LUA'
-- reads every message's payload, as a plugin that looks into calls does
register_hook("grpc", "on_data", function(msg)
  local n = #msg.payload
end)
LUA
start_luring luring "$UNARY"
start_luring luring+on_data "$UNARY" "$TMP/on_data.lua"

echo "gRPC unary, 1 KiB message, h2c both sides: h2load -n $CALLS -c $CLIENTS -m 8"
printf '%-16s %10s %12s %10s %12s\n' target calls/s "cpu us/call" cpu/nginx "cpu/luring"
declare -A CPU
for i in "${!NAMES[@]}"; do
  name=${NAMES[$i]} port=${PORTS[$i]} pid=${TPIDS[$i]}
  h2() { taskset -c 1 h2load -n "$1" -c "$CLIENTS" -m 8 -H 'content-type: application/grpc' \
    -H 'te: trailers' -d "$TMP/frame.bin" "http://127.0.0.1:$port/t.Echo/Say"; }
  h2 200 >/dev/null 2>&1 || true   # warm-up
  c0=$(cpu_ticks "$pid")
  out=$(h2 "$CALLS" 2>&1)
  c1=$(cpu_ticks "$pid")
  ok=$(awk '/requests:/ { print $8 }' <<<"$out")
  rps=$(awk '/finished in/ { gsub(",", "", $4); printf "%.0f", $4 }' <<<"$out")
  us=$(awk -v d=$((c1 - c0)) -v t="$CLK_TCK" -v n="${ok:-0}" 'BEGIN { if (n > 0) printf "%.1f", d * 1000000 / t / n; else print "-" }')
  CPU[$name]=$us
  rn="-"; rl="-"
  [[ -n ${CPU[nginx-grpc]:-} && $us != - ]] && rn=$(awk -v a="$us" -v b="${CPU[nginx-grpc]}" 'BEGIN { printf "%.2f", a / b }')
  [[ -n ${CPU[luring]:-} && $us != - ]] && rl=$(awk -v a="$us" -v b="${CPU[luring]}" 'BEGIN { printf "%.2f", a / b }')
  printf '%-16s %10s %12s %10s %12s   (%s succeeded)\n' "$name" "$rps" "$us" "$rn" "$rl" "${ok:-0}"
done

# --- bidi throughput: 64 KiB messages for 5 s each way, direct and through luring ------
cat > "$TMP/bidi.py" <<'PY'
import sys, time, grpc
target, secs = sys.argv[1], float(sys.argv[2])
ch = grpc.insecure_channel(target)
call = ch.stream_stream("/t.Echo/Bidi", request_serializer=lambda b: b, response_deserializer=lambda b: b)
msg = b"y" * 65536
end = time.monotonic() + secs
def gen():
    while time.monotonic() < end:
        yield msg
t0 = time.monotonic(); n = 0
for r in call(gen()):
    n += len(r)
dt = time.monotonic() - t0
print("%.1f" % (n / dt / 1e6))
PY
NAMES=()
start_luring luring-bidi "$GRPC" "$TMP/on_data.lua"
direct=$(taskset -c 1 python3 "$TMP/bidi.py" "127.0.0.1:$GRPC" 5)
through="-"
(( ${#NAMES[@]} )) && through=$(taskset -c 1 python3 "$TMP/bidi.py" "127.0.0.1:${PORTS[-1]}" 5)
echo "bidi echo, 64 KiB messages, 5 s: direct $direct MB/s, through luring with on_data $through MB/s (echoed bytes received)"
