"""Every allowed action of the wired rows (spec section 3): CONTINUE, DROP, RESPOND on
http.on_request, CONTINUE and RESPOND (replace) on http.on_response, DROP on
connection.on_connect and on socks5.on_connect, and the CONNECT request as seen by
http.on_request (RESPOND refuses the tunnel, DROP closes, an assigned authority
redirects, CONTINUE opens).  Mid-stream events end their stream with a method of the
message instead of an action: raw.on_chunk `msg:close()` (here; ws.on_message
`msg:close(code, reason)` is in ws.py).
"""

import re
import time

from harness import case, check, connect_tunnel, eq, hget, hget_all, settle, socks5_connect


def get_line(t, path="/echo"):
    return f"GET {t.url(path)} HTTP/1.1\r\nHost: 127.0.0.1:{t.origin.port}\r\n\r\n".encode()


# --------------------------------------------------------------------------- http.on_request

@case("action http.on_request CONTINUE", plugins={"cont.lua": """
register_hook("http", "on_request", function(msg, ctx)
  msg.headers:add("x-cont", "explicit")
  return action.CONTINUE
end)
register_hook("http", "on_request", function(msg, ctx)
  msg.headers:add("x-cont", "nil-return")
  return nil
end)
register_hook("http", "on_request", function(msg, ctx)
  msg.headers:add("x-cont", "no-return")
end)
"""})
def _req_continue(t):
    r = t.curl("/echo")
    eq(r.status, 200, f"client status (curl: {r.err})")
    eq(hget_all(t.one_request()["headers"], "x-cont"), ["explicit", "nil-return", "no-return"],
       "x-cont at the origin (every CONTINUE form lets the chain and the request go on)")


@case("action http.on_request DROP", plugins={"drop.lua": """
register_hook("http", "on_request", function(msg, ctx)
  if msg.path == "/drop-me" then return action.DROP end
end)
"""})
def _req_drop(t):
    c = t.raw()
    try:
        c.send(get_line(t, "/drop-me"))
        data, closed = c.read_until_closed(timeout=5)
    finally:
        c.close()
    eq(data, b"", "bytes the client got for a DROPped request")
    check(closed, "the client connection was not closed within 5s")
    reqs, conns = t.origin.snapshot()
    eq((len(reqs), conns), (0, 0), "(requests, connections) at the origin")
    # the proxy still serves other requests
    r = t.curl("/echo")
    eq(r.status, 200, f"status of a following request (curl: {r.err})")


@case("action http.on_request RESPOND headers as map", plugins={"respond_map.lua": """
register_hook("http", "on_request", function(msg, ctx)
  return action.RESPOND{ status = 403,
    headers = { ["content-type"] = "text/plain", ["x-why"] = "blocked" },
    body = "no entry" }
end)
"""})
def _req_respond_map(t):
    r = t.curl("/echo")
    eq(r.rc, 0, f"curl exit code ({r.err})")
    eq(r.status, 403, "client status")
    eq(r.body, b"no entry", "client body")
    eq(hget(r.headers, "content-type"), "text/plain", "content-type at the client")
    eq(hget(r.headers, "x-why"), "blocked", "x-why at the client")
    cl = hget(r.headers, "content-length")
    check(cl is None or cl == "8", f"content-length {cl!r} does not match the 8-byte body")
    reqs, conns = t.origin.snapshot()
    eq((len(reqs), conns), (0, 0), "(requests, connections) at the origin: upstream never contacted")


@case("action http.on_request RESPOND headers as ordered list", plugins={"respond_list.lua": """
register_hook("http", "on_request", function(msg, ctx)
  return action.RESPOND{ status = 200,
    headers = { {"X-R", "1"}, {"x-a", "a"}, {"X-R", "2"}, {"x-r", "3"} },
    body = "listed" }
end)
"""})
def _req_respond_list(t):
    c = t.raw()
    try:
        c.send(get_line(t))
        status, _reason, headers, body, _tr = c.read_response()
    finally:
        c.close()
    eq(status, 200, "client status")
    eq(body, b"listed", "client body")
    mine = [(k.lower(), v) for k, v in headers if k.lower() in ("x-r", "x-a")]
    eq(mine, [("x-r", "1"), ("x-a", "a"), ("x-r", "2"), ("x-r", "3")],
       "RESPOND list headers on the wire (order and repeats kept)")
    eq(t.origin.snapshot()[1], 0, "connections at the origin")


# --------------------------------------------------------------------------- http.on_response

@case("action http.on_response CONTINUE", plugins={"resp_cont.lua": """
register_hook("http", "on_response", function(msg, ctx)
  msg.headers:add("x-cont", "explicit")
  return action.CONTINUE
end)
register_hook("http", "on_response", function(msg, ctx)
  msg.headers:add("x-cont", "implicit")
end)
"""})
def _resp_continue(t):
    r = t.curl("/fixed?body=origin-body")
    eq(r.status, 200, f"client status (curl: {r.err})")
    eq(r.body, b"origin-body", "client body")
    eq(hget_all(r.headers, "x-cont"), ["explicit", "implicit"], "x-cont at the client")


@case("action http.on_response RESPOND replaces", plugins={"resp_replace.lua": """
register_hook("http", "on_response", function(msg, ctx)
  return action.RESPOND{ status = 503, headers = { ["x-replaced"] = tostring(msg.status) },
    body = "replaced by plugin" }
end)
"""})
def _resp_respond(t):
    r = t.curl("/fixed?status=201&body=from-origin&h=X-Origin:%20yes")
    eq(r.status, 503, f"client status (curl: {r.err})")
    eq(r.body, b"replaced by plugin", "client body")
    eq(hget(r.headers, "x-replaced"), "201", "x-replaced (the hook saw the origin's status)")
    eq(hget(r.headers, "x-origin"), None, "origin header must be gone with the replaced response")
    eq(len(t.origin_requests()), 1, "requests at the origin (the upstream was contacted)")


# --------------------------------------------------------------------------- connection.on_connect

@case("action connection.on_connect DROP", plugins={"conn_drop.lua": """
register_hook("connection", "on_connect", function(msg, ctx)
  log.info("CONF-CONNECT-DROP " .. tostring(msg.conn_id))
  return action.DROP
end)
"""})
def _conn_drop(t):
    c = t.raw()
    try:
        try:
            c.send(get_line(t))
        except OSError:
            pass                      # already closed by the proxy: fine
        data, closed = c.read_until_closed(timeout=5)
    finally:
        c.close()
    eq(data, b"", "bytes the client got from a DROPped connection")
    check(closed, "the connection was not closed within 5s")
    t.proxy.expect_log(r"CONF-CONNECT-DROP", what="the on_connect hook's log line")
    settle(0.3)
    reqs, conns = t.origin.snapshot()
    eq((len(reqs), conns), (0, 0), "(requests, connections) at the origin")


# --------------------------------------------------------------------------- socks5.on_connect

@case("action socks5.on_connect DROP", flags=["--mode", "socks5"], plugins={"socks5_drop.lua": """
register_hook("socks5", "on_connect", function(msg, ctx)
  log.info("CONF-SOCKS5-DROP " .. msg.target_addr)
  return action.DROP
end)
register_hook("http", "on_request", function(msg, ctx)
  log.info("CONF-SOCKS5-DROP-REQ " .. msg.path)
end)
"""})
def _socks5_drop(t):
    target = f"127.0.0.1:{t.origin.port}"
    c, rep = socks5_connect(t.proxy.port, "127.0.0.1", t.origin.port)   # raw: the reply byte itself
    try:
        eq(rep, None, "SOCKS5 reply code of a DROPped connect (the proxy must close without a reply)")
        data, closed = c.read_until_closed(timeout=5)
    finally:
        c.close()
    eq(data, b"", "bytes the client got after its SOCKS5 request")
    check(closed, "the client connection was not closed within 5s")
    r = t.curl_socks5("/echo")                                          # curl --socks5
    check(r.rc != 0, f"curl exit code through a DROPping socks5.on_connect: 0 (status {r.status})")
    eq((r.status, r.body), (None, b""), "(status, body) curl got")
    lines = t.proxy.wait_log(r"CONF-SOCKS5-DROP " + re.escape(target), count=2)
    eq(len(lines), 2, f"socks5.on_connect calls for two connections ({lines})")
    settle(0.3)
    reqs, conns = t.origin.snapshot()
    eq((len(reqs), conns), (0, 0), "(requests, connections) at the origin")
    eq(t.proxy.find(r"CONF-SOCKS5-DROP-REQ"), [], "http.on_request calls after a DROP")


# --------------------------------------------------------------------------- CONNECT

CONNECT_LOG = """
register_hook("http", "on_request", function(msg, ctx)
  if msg.method == "CONNECT" then
    log.info(string.format("CONF-CONNECT-REQ method=%s authority=%s path=%s",
      msg.method, tostring(msg.authority), tostring(msg.path)))
  end
end)
"""


@case("action CONNECT CONTINUE opens the tunnel", plugins={"connect_cont.lua": CONNECT_LOG})
def _connect_continue(t):
    r = t.curl("/echo", tunnel=True)
    eq(r.status, 200, f"status of the request inside the tunnel (curl: {r.err})")
    req = t.one_request()
    eq(req["target"], "/echo", "target at the origin (origin-form inside the tunnel)")
    line = t.proxy.expect_log(r"CONF-CONNECT-REQ ", what="the CONNECT hook's log line")[0]
    check(f"method=CONNECT authority=127.0.0.1:{t.origin.port} path=nil" in line,
          f"CONNECT message fields: expected authority=127.0.0.1:{t.origin.port} path=nil in {line!r}")


@case("action CONNECT RESPOND 403 refuses the tunnel", plugins={"connect_403.lua": """
register_hook("http", "on_request", function(msg, ctx)
  if msg.method == "CONNECT" then
    return action.RESPOND{ status = 403, headers = { ["x-tunnel"] = "refused" }, body = "no tunnel" }
  end
end)
"""})
def _connect_respond(t):
    c, status, headers = connect_tunnel(t.proxy.port, f"127.0.0.1:{t.echo.port}")
    try:
        eq(status, 403, "CONNECT answer status")
        eq(hget(headers, "x-tunnel"), "refused", "x-tunnel on the CONNECT answer")
        try:
            c.send(b"should-not-pass")
        except OSError:
            pass
        settle(0.3)
    finally:
        c.close()
    eq(t.echo.snapshot(), [], "connections/bytes at the tunnel target (none may be opened)")


@case("action CONNECT DROP closes", plugins={"connect_drop.lua": """
register_hook("http", "on_request", function(msg, ctx)
  if msg.method == "CONNECT" then return action.DROP end
end)
"""})
def _connect_drop(t):
    c = t.raw()
    try:
        c.send(f"CONNECT 127.0.0.1:{t.echo.port} HTTP/1.1\r\nHost: 127.0.0.1:{t.echo.port}\r\n\r\n".encode())
        data, closed = c.read_until_closed(timeout=5)
    finally:
        c.close()
    eq(data, b"", "bytes the client got for a DROPped CONNECT")
    check(closed, "the client connection was not closed within 5s")
    eq(t.echo.snapshot(), [], "connections at the tunnel target")


@case("action CONNECT assigned authority redirects the tunnel", plugins={"connect_redirect.lua": """
register_hook("http", "on_request", function(msg, ctx)
  if msg.method == "CONNECT" and msg.authority == "127.0.0.1:1" then
    msg.authority = "127.0.0.1:@ECHO_PORT@"
  end
end)
"""})
def _connect_redirect(t):
    # port 1 on loopback has no listener: without the redirect the tunnel cannot open
    c, status, _h = connect_tunnel(t.proxy.port, "127.0.0.1:1")
    try:
        eq(status, 200, "CONNECT status for the redirected tunnel")
        c.send(b"via-redirect")
        eq(c.recv_some(12), b"via-redirect", "echo through the redirected tunnel")
    finally:
        c.close()
    eq(t.echo.snapshot(), [b"via-redirect"], "bytes at the redirect target")


@case("plain HTTP inside a CONNECT tunnel fires http.on_request/on_response", plugins={"tunnel_http.lua": """
register_hook("http", "on_request", function(msg, ctx)
  if msg.method ~= "CONNECT" then
    msg.headers:set("x-inner", msg.scheme .. " " .. msg.authority .. " " .. msg.path)
  end
end)
register_hook("http", "on_response", function(msg, ctx)
  msg.headers:set("x-inner-resp", msg.request.scheme)
end)
"""})
def _connect_plain_http_inside(t):
    r = t.curl("/echo?in=tunnel", tunnel=True)
    eq(r.status, 200, f"status inside the tunnel (curl: {r.err})")
    req = t.one_request()
    eq(hget(req["headers"], "x-inner"), f"http 127.0.0.1:{t.origin.port} /echo?in=tunnel",
       "what on_request saw, as received by the origin")
    eq(hget(r.headers, "x-inner-resp"), "http", "on_response's mark at the client")


@case("raw.on_chunk gets the bytes of plain HTTP inside a CONNECT tunnel", plugins={"tunnel_raw.lua": """
register_hook("raw", "on_chunk", function(msg, ctx)
  if msg.from_client then msg.data = string.gsub(msg.data, "/echo%?in=raw", "/echo?in=RAW") end
end)
register_hook("http", "on_request", function(msg, ctx)
  msg.headers:set("x-http-hook", msg.method)
end)
"""})
def _connect_plain_http_raw(t):
    r = t.curl("/echo?in=raw", tunnel=True)
    eq(r.status, 200, f"status inside the tunnel (curl: {r.err})")
    req = t.one_request()
    eq(req["target"], "/echo?in=RAW", "target rewritten by raw.on_chunk, as received by the origin")
    eq(hget(req["headers"], "x-http-hook"), None, "http.on_request must not see a raw tunnel's requests")


# --------------------------------------------------------------------------- raw.on_chunk msg:close()

RAW_CLOSE = """
register_hook("raw", "on_chunk", function(msg, ctx)
  log.info(string.format("CONF-RAW-CLOSE from_client=%s offset=%d data=[%s]",
    tostring(msg.from_client), msg.offset, msg.data))
  if msg.data:find("STOP", 1, true) then
    if msg.from_client then
      msg.data = (msg.data:gsub("STOP", "HALT"))     -- modified, then the last chunk
    else
      msg.data = msg.data:lower()
    end
    msg:close()
  end
end)
"""

CLOSE_WAIT = 2.0     # "promptly": both sockets must see the end within this


def tunnel_ends(t, c, what):
    """The client and the tunnel target both see the end promptly; returns what the
    client received before its end."""
    start = time.monotonic()
    data, closed = c.read_until_closed(timeout=CLOSE_WAIT)
    check(closed, f"{what}: the client's tunnel socket did not end within {CLOSE_WAIT}s "
                  f"(received {data!r} meanwhile)")
    ends = t.echo.wait_ended(1, timeout=max(0.1, CLOSE_WAIT - (time.monotonic() - start)))
    eq(len(ends), 1, f"{what}: connections at the tunnel target")
    check(ends[0] is not None, f"{what}: the tunnel target's connection did not end within {CLOSE_WAIT}s")
    eq(ends[0], "eof", f"{what}: how the tunnel target's connection ended")
    return data


def late_bytes_dropped(t, c, before):
    """Bytes the client writes after the close never reach the tunnel target."""
    try:
        c.sock.sendall(b"LATE-BYTES")
    except OSError:
        pass                                     # the socket is gone: fine
    settle(0.3)
    eq(t.echo.snapshot(), [before], "bytes at the tunnel target after a late write from the client")


@case("raw.on_chunk msg:close() on a client chunk: the modified chunk is sent, then both sides end",
      plugins={"raw_close_up.lua": RAW_CLOSE})
def _raw_close_client(t):
    c, status, _h = connect_tunnel(t.proxy.port, f"127.0.0.1:{t.echo.port}")
    try:
        eq(status, 200, "CONNECT status")
        for piece in (b"one,", b"two,"):            # one at a time: wait for its echo
            c.send(piece)
            eq(c.recv_some(len(piece)), piece, "echo before the close")
        c.send(b"three STOP tail")
        data = tunnel_ends(t, c, "after msg:close() on the client's chunk")
        check(b"three HALT tail".startswith(data),
              f"bytes at the client after its last chunk (at most the echo of the modified chunk): {data!r}")
        eq(t.echo.snapshot(), [b"one,two,three HALT tail"],
           "bytes at the tunnel target (everything up to and including the modified chunk)")
        late_bytes_dropped(t, c, b"one,two,three HALT tail")
    finally:
        c.close()
    ups = [re.search(r"data=\[(.*)\]", ln).group(1) for ln in t.proxy.find(r"CONF-RAW-CLOSE from_client=true")]
    eq(ups, ["one,", "two,", "three STOP tail"], "client chunks seen by raw.on_chunk")


@case("raw.on_chunk msg:close() on a server chunk: the client gets the modified chunk, then both sides end",
      plugins={"raw_close_down.lua": RAW_CLOSE.replace('if msg.data:find("STOP", 1, true) then',
                                                      'if not msg.from_client and msg.data:find("STOP", 1, true) then')})
def _raw_close_server(t):
    c, status, _h = connect_tunnel(t.proxy.port, f"127.0.0.1:{t.echo.port}")
    try:
        eq(status, 200, "CONNECT status")
        c.send(b"first ")
        eq(c.recv_some(6), b"first ", "echo before the close")
        c.send(b"Now STOP Here")                    # goes up unchanged; its echo is closed on
        data = tunnel_ends(t, c, "after msg:close() on the server's chunk")
        eq(data, b"now stop here", "bytes at the client after the server's chunk (lower-cased by the hook), "
                                   "then the end")
        eq(t.echo.snapshot(), [b"first Now STOP Here"], "bytes at the tunnel target")
        late_bytes_dropped(t, c, b"first Now STOP Here")
    finally:
        c.close()
