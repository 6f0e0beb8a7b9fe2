"""One case per row of the 17-row surface (spec section 2): a hook on the row, real
traffic from a real client, the effect asserted on both sides of the proxy.

Rows whose layer is not built yet would be PENDING ("layer not built: ..."): today
none.  The rows of the layers with a module of their own are there: ws.py, sse.py,
grpc.py, grpc_web.py.
"""

import re

from harness import LAYERS_NOT_BUILT, ROWS, case, check, connect_tunnel, eq, hget, hget_all, pending_case

# --------------------------------------------------------------------------- http

@case("row http.on_request", plugins={"row_req.lua": """
register_hook("http", "on_request", function(msg, ctx)
  msg.headers:set("x-row", "on_request " .. msg.method .. " " .. msg.path)
end)
"""})
def _row_http_request(t):
    r = t.curl("/echo?a=1")
    eq(r.status, 200, f"client status (curl: {r.err})")
    req = t.one_request()
    eq(hget_all(req["headers"], "x-row"), ["on_request GET /echo?a=1"], "x-row at the origin")
    eq(r.json()["headers"], [list(h) for h in req["headers"]], "client got the origin's echo")


@case("row http.on_response", plugins={"row_resp.lua": """
register_hook("http", "on_response", function(msg, ctx)
  msg.headers:set("x-row", "on_response " .. tostring(msg.status))
end)
"""})
def _row_http_response(t):
    r = t.curl("/fixed?status=202&reason=Accepted&body=resp-body")
    eq(r.status, 202, f"client status (curl: {r.err})")
    eq(hget_all(r.headers, "x-row"), ["on_response 202"], "x-row at the client")
    eq(r.body, b"resp-body", "body at the client")
    req = t.one_request()
    eq(hget(req["headers"], "x-row"), None, "x-row must not reach the origin")


# --------------------------------------------------------------------------- raw

RAW_MUTATE = """
register_hook("raw", "on_chunk", function(msg, ctx)
  if msg.from_client then
    msg.data = string.upper(msg.data)           -- client -> server: upper case
  else
    msg.data = string.gsub(msg.data, "-", "+")  -- server -> client: '-' becomes '+'
  end
end)
"""


@case("row raw.on_chunk", plugins={"row_raw.lua": RAW_MUTATE})
def _row_raw(t):
    c, status, _h = connect_tunnel(t.proxy.port, f"127.0.0.1:{t.echo.port}")
    try:
        eq(status, 200, "CONNECT status")
        c.send(b"abc-1")
        got = c.recv_some(5)
        eq(got, b"ABC+1", "bytes back at the client (upper-cased going up, '-'->'+' coming down)")
        eq(t.echo.snapshot(), [b"ABC-1"], "bytes received by the echo server")
    finally:
        c.close()


@case("raw.on_chunk from_client and offset", plugins={"raw_offsets.lua": """
register_hook("raw", "on_chunk", function(msg, ctx)
  log.info(string.format("CONF-RAW from_client=%s offset=%d len=%d",
    tostring(msg.from_client), msg.offset, #msg.data))
end)
"""})
def _raw_offsets(t):
    c, status, _h = connect_tunnel(t.proxy.port, f"127.0.0.1:{t.echo.port}")
    sent = [b"first-", b"second-part", b"3rd"]
    try:
        eq(status, 200, "CONNECT status")
        for piece in sent:              # one piece at a time: wait for its echo
            c.send(piece)
            eq(c.recv_some(len(piece)), piece, "echo of an unmodified piece")
    finally:
        c.close()
    total = sum(map(len, sent))
    rx = re.compile(r"CONF-RAW from_client=(true|false) offset=(\d+) len=(\d+)")
    # the server side sends the same bytes back: both directions total `total`
    t.proxy.wait_log(r"CONF-RAW from_client=false", timeout=3, count=len(sent))
    for direction in ("true", "false"):
        seen = [(int(m.group(2)), int(m.group(3))) for ln in t.proxy.lines()
                for m in [rx.search(ln)] if m and m.group(1) == direction]
        check(len(seen) >= len(sent), f"from_client={direction}: expected at least {len(sent)} chunks "
                                      f"(pieces were sent one at a time), got {seen}")
        pos = 0
        for off, ln_ in seen:
            eq(off, pos, f"from_client={direction}: offset of a chunk (chunks {seen})")
            pos += ln_
        eq(pos, total, f"from_client={direction}: bytes seen in total")


# --------------------------------------------------------------------------- connection

@case("row connection.on_connect", flags=["--listener-name", "conf-ln"], plugins={"row_connect.lua": """
register_hook("connection", "on_connect", function(msg, ctx)
  log.info(string.format("CONF-CONNECT conn_id=%s client_addr=%s listener_name=%s",
    tostring(msg.conn_id), tostring(msg.client_addr), tostring(msg.listener_name)))
end)
"""})
def _row_connect(t):
    c = t.raw()
    try:
        c.send(f"GET {t.url('/echo')} HTTP/1.1\r\nHost: 127.0.0.1:{t.origin.port}\r\n\r\n".encode())
        status, _r, _h, _b, _t = c.read_response()
        eq(status, 200, "client status")
        port = c.local_port
    finally:
        c.close()
    line = t.proxy.expect_log(r"CONF-CONNECT ", what="on_connect log line")[0]
    m = re.search(r"conn_id=(\S+) client_addr=(\S+) listener_name=(\S+)", line)
    check(m, f"unparsable log line {line!r}")
    check(m.group(1) != "nil", f"conn_id is nil: {line!r}")
    check("127.0.0.1" in m.group(2) and str(port) in m.group(2),
          f"client_addr {m.group(2)!r} is not 127.0.0.1 with our port {port}")
    eq(m.group(3), "conf-ln", "listener_name")
    eq(len(t.origin_requests()), 1, "requests at the origin")


@case("row connection.on_disconnect", plugins={"row_disconnect.lua": """
register_hook("connection", "on_disconnect", function(msg, ctx)
  log.info(string.format("CONF-DISC conn_id=%s client_addr=%s", tostring(msg.conn_id), tostring(msg.client_addr)))
end)
"""})
def _row_disconnect(t):
    r = t.curl("/echo")
    eq(r.status, 200, f"client status (curl: {r.err})")
    line = t.proxy.expect_log(r"CONF-DISC ", what="on_disconnect log line")[0]
    check("conn_id=nil" not in line and "client_addr=127.0.0.1" in line, f"fields missing: {line!r}")
    eq(len(t.origin_requests()), 1, "requests at the origin")


# --------------------------------------------------------------------------- socks5

@case("row socks5.on_connect", flags=["--mode", "socks5"], plugins={"row_socks5.lua": """
register_hook("socks5", "on_connect", function(msg, ctx)
  log.info(string.format("CONF-SOCKS5 conn_id=%s(%s) client_addr=%s target_addr=%s username=%s",
    tostring(msg.conn_id), type(msg.conn_id), tostring(msg.client_addr),
    tostring(msg.target_addr), tostring(msg.username)))
end)
register_hook("http", "on_request", function(msg, ctx)
  msg.headers:set("x-row", "socks5 " .. msg.method .. " " .. msg.path)
  msg.headers:set("x-conn", tostring(ctx.conn_id))
end)
"""})
def _row_socks5(t):
    r = t.curl_socks5("/echo?a=1")           # curl --socks5: IPv4 target, no auth
    eq((r.rc, r.status), (0, 200), f"curl exit code and status through SOCKS5 (curl: {r.err})")
    req = t.one_request()
    eq(hget_all(req["headers"], "x-row"), ["socks5 GET /echo?a=1"], "x-row at the origin")
    eq(req["target"], "/echo?a=1", "target at the origin")
    eq(r.json()["headers"], [list(h) for h in req["headers"]], "client got the origin's echo")
    lines = t.proxy.expect_log(r"CONF-SOCKS5 ", what="socks5.on_connect log line")
    eq(len(lines), 1, f"socks5.on_connect calls for one connection ({lines})")
    m = re.search(r"conn_id=(\S+)\((\w+)\) client_addr=(\S+) target_addr=(\S+) username=(\S+)", lines[0])
    check(m, f"unparsable log line {lines[0]!r}")
    conn_id, conn_type, client_addr, target_addr, username = m.groups()
    eq(conn_type, "number", "type(msg.conn_id)")
    check(re.fullmatch(r"127\.0\.0\.1:\d+", client_addr), f"client_addr {client_addr!r} is not 127.0.0.1:PORT")
    eq(target_addr, f"127.0.0.1:{t.origin.port}", "target_addr")
    eq(username, "nil", "username without --proxy-auth")
    eq(hget(req["headers"], "x-conn"), conn_id, "ctx.conn_id of the tunnelled request vs msg.conn_id")


# --------------------------------------------------------------------------- not built yet

for _p, _e, _k, _layer in ROWS:
    if _layer in LAYERS_NOT_BUILT:
        pending_case(f"row {_p}.{_e}", f"layer not built: the {_layer} gateway/message layer is not built yet "
                                       "(native gRPC over HTTP/2, the grpc rows, is proven in grpc.py)")
