"""Edges of the contract: actions from the post_pipeline phase, abort vs the next phase,
values that are not actions, the body limit, close-delimited bodies, raw phases and
growing chunks, more ctx fields, reverse mode, several workers sharing `shared`, RESPOND
204/304 given a body (nothing after the head, keep-alive goes on).  The exact
on_disconnect byte counts are in bytecounts.py."""

import re
import time

from harness import case, check, connect_tunnel, eq, hget, hget_all, run_cli, settle


@case("RESPOND from post_pipeline on_request", flags=["--set-request-header", "x-step=1"],
      plugins={"post_respond.lua": """
register_hook("http", "on_request", function(msg, ctx)
  return action.RESPOND{ status = 409, body = "step=" .. tostring(msg.headers:get("x-step")) }
end, { phase = "post_pipeline" })
"""})
def _post_respond(t):
    r = t.curl("/echo")
    eq((r.status, r.body), (409, b"step=1"), f"client (status, body) (curl: {r.err})")
    eq(t.origin.snapshot()[1], 0, "connections at the origin")


@case("DROP from post_pipeline on_request", plugins={"post_drop.lua": """
register_hook("http", "on_request", function(msg, ctx) return action.DROP end, { phase = "post_pipeline" })
"""})
def _post_drop(t):
    c = t.raw()
    try:
        c.send(f"GET {t.url('/echo')} HTTP/1.1\r\nHost: 127.0.0.1:{t.origin.port}\r\n\r\n".encode())
        data, closed = c.read_until_closed(timeout=5)
    finally:
        c.close()
    check(closed and data == b"", f"client: closed={closed}, got {data[:100]!r}")
    eq(t.origin.snapshot()[1], 0, "connections at the origin")


@case("RESPOND with status only", plugins={"respond_204.lua": """
register_hook("http", "on_request", function(msg, ctx) return action.RESPOND{ status = 204 } end)
"""})
def _respond_204(t):
    c = t.raw()
    try:
        for _ in range(2):                  # the connection stays usable after a RESPOND
            c.send(f"GET {t.url('/echo')} HTTP/1.1\r\nHost: 127.0.0.1:{t.origin.port}\r\n\r\n".encode())
            status, _r, _h, body, _t = c.read_response()
            eq((status, body), (204, b""), "client (status, body)")
    finally:
        c.close()


RESPOND_NO_CONTENT = """
register_hook("http", "on_request", function(msg, ctx)
  if msg.path == "/r204" then return action.RESPOND{ status = 204, body = "ignored" } end
  if msg.path == "/r304" then return action.RESPOND{ status = 304, body = "ignored" } end
end)
"""


def respond_no_content(t, status):
    """RESPOND `status` with a body, then an origin request on the same keep-alive
    connection: the body must not reach the wire (it would prefix the next response)."""
    c = t.raw()
    try:
        c.send(f"GET {t.url(f'/r{status}')} HTTP/1.1\r\nHost: 127.0.0.1:{t.origin.port}\r\n\r\n".encode())
        head = c.conn.read_head()
        check(head is not None, f"connection closed before the {status} response")
        lines = head.decode("latin-1").split("\r\n")
        eq(lines[0].split(" ")[:2], ["HTTP/1.1", str(status)], "status line")
        headers = [(k.lower(), v) for k, v in (ln.split(":", 1) for ln in lines[1:] if ln)]
        extra = c.recv_some(1, timeout=0.5)            # nothing may follow the head
        eq(extra, b"", f"bytes after the {status} head (RESPOND's body must be dropped)")
        c.send(f"GET {t.url(f'/fixed?body=after-{status}')} HTTP/1.1\r\nHost: 127.0.0.1:{t.origin.port}\r\n\r\n"
               .encode())
        st2, _r, _h, body2, _t = c.read_response()
        eq((st2, body2), (200, f"after-{status}".encode()), "the next response on the same connection")
        eq(c.recv_some(1, timeout=0.3), b"", "bytes after the second response")
    finally:
        c.close()
    eq([q["target"] for q in t.origin_requests(1)], [f"/fixed?body=after-{status}"], "targets at the origin")
    return headers


@case("RESPOND 204 with a body: no content, no Content-Length, keep-alive goes on",
      plugins={"respond_204_body.lua": RESPOND_NO_CONTENT})
def _respond_204_body(t):
    headers = respond_no_content(t, 204)
    bad = [(k, v) for k, v in headers if k in ("content-length", "transfer-encoding")]
    eq(bad, [], "framing headers on a 204 (RFC 9110 8.6, RFC 9112 6.1)")


@case("RESPOND 304 with a body: nothing after the head, keep-alive goes on",
      plugins={"respond_304_body.lua": RESPOND_NO_CONTENT})
def _respond_304_body(t):
    respond_no_content(t, 304)     # Content-Length may announce the length (RFC 9110 8.6): not checked


@case("on_error abort in pre_pipeline: steps and post_pipeline still run",
      flags=["--set-request-header", "x-step=1"], plugins={"abort_pre.lua": """
register_hook("http", "on_request", function(msg, ctx)
  msg.headers:set("x-before", "1")
  error("conf-abort-pre")
end, { on_error = "abort" })
register_hook("http", "on_request", function(msg, ctx)
  msg.headers:set("x-pre-after", "1")
end)
register_hook("http", "on_request", function(msg, ctx)
  msg.headers:set("x-post", "1")
end, { phase = "post_pipeline" })
"""})
def _abort_pre(t):
    r = t.curl("/echo")
    eq(r.status, 200, f"client status (curl: {r.err})")
    h = t.one_request()["headers"]
    eq((hget(h, "x-before"), hget(h, "x-pre-after")), ("1", None), "(x-before, x-pre-after) at the origin")
    eq(hget(h, "x-step"), "1", "x-step (the pipeline step still ran)")
    eq(hget(h, "x-post"), "1", "x-post (the post_pipeline chain is another chain)")


@case("a return value that is not an action is demoted", plugins={"not_action.lua": """
register_hook("http", "on_request", function(msg, ctx) return "DROP" end)
register_hook("http", "on_request", function(msg, ctx) msg.headers:set("x-after", "1") return 42 end)
"""})
def _not_action(t):
    r = t.curl("/echo")
    eq(r.status, 200, f"client status (curl: {r.err})")
    eq(hget(t.one_request()["headers"], "x-after"), "1", "x-after at the origin (chain went on)")


@case("body above --max-plugin-body: hook fails, body passes intact", flags=["--max-plugin-body", "1000"],
      plugins={"big_body.lua": """
register_hook("http", "on_request", function(msg, ctx)
  msg.headers:set("x-len", tostring(#msg.body))
end)
register_hook("http", "on_request", function(msg, ctx)
  msg.headers:set("x-after", "1")
end)
"""})
def _body_limit(t):
    payload = bytes((i * 7) % 251 for i in range(5000))
    c = t.raw()
    try:
        c.send((f"POST {t.url('/echo')} HTTP/1.1\r\nHost: 127.0.0.1:{t.origin.port}\r\n"
                f"Content-Length: {len(payload)}\r\n\r\n").encode() + payload)
        status, *_ = c.read_response()
    finally:
        c.close()
    eq(status, 200, "client status")
    req = t.one_request()
    check(req["body"] == payload, f"body at the origin: {len(req['body'])} bytes, intact={req['body'] == payload}")
    check(hget(req["headers"], "x-len") in (None, "1000"),
          f"x-len {hget(req['headers'], 'x-len')!r}: a hook read more than --max-plugin-body")
    eq(hget(req["headers"], "x-after"), "1", "x-after (the next hook ran)")


@case("body below --max-plugin-body is read whole", flags=["--max-plugin-body", "100000"],
      plugins={"ok_body.lua": """
register_hook("http", "on_request", function(msg, ctx)
  msg.body = msg.body:upper()
end)
"""})
def _body_ok(t):
    payload = b"abcdefghij" * 9000
    c = t.raw()
    try:
        c.send((f"POST {t.url('/echo')} HTTP/1.1\r\nHost: 127.0.0.1:{t.origin.port}\r\n"
                f"Content-Length: {len(payload)}\r\n\r\n").encode() + payload)
        status, *_ = c.read_response()
    finally:
        c.close()
    eq(status, 200, "client status")
    req = t.one_request()
    eq(len(req["body"]), len(payload), "body length at the origin")
    check(req["body"] == payload.upper(), "body at the origin is not the upper-cased upload")


@case("read a close-delimited response body", plugins={"close_body.lua": """
register_hook("http", "on_response", function(msg, ctx)
  msg.body = msg.body .. "+tail"
end)
"""})
def _close_delimited(t):
    r = t.curl("/fixed?nolen=1&body=until-close")
    eq((r.status, r.body), (200, b"until-close+tail"), f"client (status, body) (curl rc {r.rc}: {r.err})")


@case("raw.on_chunk pre then post, growing chunk", plugins={"raw_phases.lua": """
register_hook("raw", "on_chunk", function(msg, ctx)
  if msg.from_client then msg.data = msg.data .. "!" end
end, { phase = "post_pipeline" })
register_hook("raw", "on_chunk", function(msg, ctx)
  if msg.from_client then msg.data = msg.data:upper() end
end)
"""})
def _raw_phases(t):
    c, status, _h = connect_tunnel(t.proxy.port, f"127.0.0.1:{t.echo.port}")
    try:
        eq(status, 200, "CONNECT status")
        c.send(b"ab")
        eq(c.recv_some(3), b"AB!", "echo of the mutated chunk")
    finally:
        c.close()
    eq(t.echo.snapshot(), [b"AB!"], "bytes at the tunnel target (pre upper-cased, then post appended)")


@case("ctx.flow_id and ctx.server_addr", plugins={"ctx2.lua": """
register_hook("http", "on_request", function(msg, ctx)
  msg.headers:set("x-flow", tostring(ctx.flow_id))
end)
register_hook("http", "on_response", function(msg, ctx)
  msg.headers:set("x-flow", tostring(ctx.flow_id))
  msg.headers:set("x-server", tostring(ctx.server_addr))
end)
"""})
def _ctx2(t):
    c = t.raw()
    flows = []
    try:
        for _ in range(2):
            c.send(f"GET {t.url('/echo')} HTTP/1.1\r\nHost: 127.0.0.1:{t.origin.port}\r\n\r\n".encode())
            status, _r, headers, _b, _t = c.read_response()
            eq(status, 200, "client status")
            check(str(t.origin.port) in (hget(headers, "x-server") or ""),
                  f"ctx.server_addr in on_response: {hget(headers, 'x-server')!r} (origin port {t.origin.port})")
            flows.append(hget(headers, "x-flow"))
    finally:
        c.close()
    reqs = t.origin_requests(2)
    eq([hget(q["headers"], "x-flow") for q in reqs], flows, "ctx.flow_id of request and response hooks")
    check(flows[0] not in (None, "nil") and flows[0] != flows[1],
          f"ctx.flow_id of two requests on one connection: {flows}")


@case("frozen connection.on_disconnect dict", plugins={"frozen_disc.lua": """
register_hook("connection", "on_disconnect", function(msg, ctx)
  msg.bytes_out = -1
  msg.extra = "added"
end)
register_hook("connection", "on_disconnect", function(msg, ctx)
  log.info(string.format("CONF-FDISC bytes_out=%s extra=%s", tostring(msg.bytes_out), tostring(msg.extra)))
end)
"""})
def _frozen_disc(t):
    r = t.curl("/echo")
    eq(r.status, 200, f"client status (curl: {r.err})")
    line = t.proxy.expect_log(r"CONF-FDISC ", what="the second hook's log line")[0]
    m = re.search(r"bytes_out=(\S+) extra=(\S+)", line)
    check(m and m.group(1) not in ("-1", "nil") and m.group(2) == "nil",
          f"the second hook saw the first hook's writes: {line!r}")


@case("runaway hook in http.on_response", flags=["--hook-budget-ms", "50"], plugins={"runaway_resp.lua": """
register_hook("http", "on_response", function(msg, ctx) while true do end end)
register_hook("http", "on_response", function(msg, ctx) msg.headers:set("x-after", "1") end)
"""})
def _runaway_resp(t):
    start = time.monotonic()
    r = t.curl("/fixed?body=done", timeout=8)
    took = time.monotonic() - start
    eq((r.status, r.body), (200, b"done"), f"client (status, body) (curl rc {r.rc}: {r.err})")
    eq(hget(r.headers, "x-after"), "1", "x-after at the client")
    check(took < 5, f"the request took {took:.1f}s with a 50 ms budget")


@case("runaway hook with a function call loop", flags=["--hook-budget-ms", "50"], plugins={"runaway_calls.lua": """
local function f(n) return n + 1 end
register_hook("http", "on_request", function(msg, ctx)
  local n = 0
  while true do n = f(n) % 7 end
end)
register_hook("http", "on_request", function(msg, ctx) msg.headers:set("x-after", "1") end)
"""})
def _runaway_calls(t):
    start = time.monotonic()
    r = t.curl("/echo", timeout=8)
    eq(r.status, 200, f"client status (curl rc {r.rc}: {r.err})")
    check(time.monotonic() - start < 5, "the request took more than 5 s with a 50 ms budget")
    eq(hget(t.one_request()["headers"], "x-after"), "1", "x-after (the interrupted hook counted as an error, skip)")


@case("http_version of an HTTP/1.0 request", plugins={"v10.lua": """
register_hook("http", "on_request", function(msg, ctx) msg.headers:set("x-ver", msg.http_version) end)
"""})
def _http10(t):
    c = t.raw()
    try:
        c.send(f"GET {t.url('/echo')} HTTP/1.0\r\nHost: 127.0.0.1:{t.origin.port}\r\n\r\n".encode())
        status, *_ = c.read_response()
    finally:
        c.close()
    eq(status, 200, "client status")
    eq(hget(t.one_request()["headers"], "x-ver"), "HTTP/1.0", "msg.http_version")


@case("reverse mode: hooks see and rewrite the request",
      flags=["--mode", "reverse:http://127.0.0.1:@ORIGIN_PORT@"], plugins={"rev.lua": """
register_hook("http", "on_request", function(msg, ctx)
  msg.headers:set("x-seen", msg.method .. " " .. msg.path)
  msg.path = "/echo/reversed"
end)
register_hook("http", "on_response", function(msg, ctx)
  msg.headers:set("x-resp", tostring(msg.status))
end)
"""})
def _reverse(t):
    from harness import curl
    r = curl(None, f"http://{t.proxy.addr}/front?a=1")
    eq(r.status, 200, f"client status (curl: {r.err})")
    eq(hget(r.headers, "x-resp"), "200", "x-resp at the client")
    req = t.one_request()
    eq(req["target"], "/echo/reversed", "target at the origin")
    eq(hget(req["headers"], "x-seen"), "GET /front?a=1", "what the hook saw")


@case("shared counter across 2 workers", flags=["--workers", "2"], plugins={"shared2.lua": """
register_hook("http", "on_request", function(msg, ctx)
  msg.headers:set("x-hits", string.format("%d", shared.incr("conf-hits2", 1)))
  msg.headers:set("x-worker", tostring(ctx.worker))
end)
"""})
def _shared_workers(t):
    n = 12
    for _ in range(n):                     # one connection each: SO_REUSEPORT spreads them
        c = t.raw()
        try:
            c.send(f"GET {t.url('/echo')} HTTP/1.1\r\nHost: 127.0.0.1:{t.origin.port}\r\n"
                   "Connection: close\r\n\r\n".encode())
            status, *_ = c.read_response()
            eq(status, 200, "client status")
        finally:
            c.close()
    reqs = t.origin_requests(n)
    eq([hget(q["headers"], "x-hits") for q in reqs], [str(i) for i in range(1, n + 1)],
       "x-hits at the origin (one counter for all workers)")
    workers = {hget(q["headers"], "x-worker") for q in reqs}
    check(workers <= {"0", "1"}, f"ctx.worker values {workers} with --workers 2")


@case("check a missing file: exit 1 naming it", proxy=False)
def _check_missing(t):
    rc, out = run_cli(t.bin, ["check", str(t.tmp / "no_such_plugin.lua")])
    eq(rc, 1, f"exit code (output {out.strip()[:200]!r})")
    check("no_such_plugin.lua" in out, f"output does not name the file: {out.strip()[:200]!r}")


@case("RESPOND in on_response skips the response pipeline steps",
      flags=["--set-response-header", "x-rstep=1"], plugins={"resp_skip_steps.lua": """
register_hook("http", "on_response", function(msg, ctx)
  return action.RESPOND{ status = 418, body = "teapot" }
end)
"""})
def _respond_skips_steps(t):
    r = t.curl("/fixed?body=origin")
    eq((r.status, r.body), (418, b"teapot"), f"client (status, body) (curl: {r.err})")
    eq(hget_all(r.headers, "x-rstep"), [], "x-rstep (the pipeline steps are skipped after RESPOND)")


@case("ctx.server_addr is nil in connection.on_connect", plugins={"ctx_conn.lua": """
register_hook("connection", "on_connect", function(msg, ctx)
  log.info("CONF-SRV server_addr=" .. tostring(ctx.server_addr) .. " conn_id=" .. tostring(ctx.conn_id))
end)
"""})
def _ctx_on_connect(t):
    r = t.curl("/echo")
    eq(r.status, 200, f"client status (curl: {r.err})")
    line = t.proxy.expect_log(r"CONF-SRV ", what="the on_connect log line")[0]
    check("server_addr=nil" in line and "conn_id=nil" not in line, f"ctx in on_connect: {line!r}")


@case("RESPOND with a wrong content-length header gets consistent framing", plugins={"respond_cl.lua": """
register_hook("http", "on_request", function(msg, ctx)
  return action.RESPOND{ status = 200, headers = { ["content-length"] = "999" }, body = "abc" }
end)
"""})
def _respond_cl(t):
    c = t.raw()
    try:
        c.send(f"GET {t.url('/echo')} HTTP/1.1\r\nHost: 127.0.0.1:{t.origin.port}\r\n\r\n".encode())
        c.conn.timeout = 2
        c.sock.settimeout(2)
        status, _r, headers, body, _t = c.read_response()
    finally:
        c.close()
    eq((status, body), (200, b"abc"), "client (status, body)")
    eq(hget_all(headers, "content-length"), ["3"], "content-length at the client")


@case("mutate the body of a chunked upload", plugins={"m_chunked_body.lua": """
register_hook("http", "on_request", function(msg, ctx)
  msg.body = "replaced:" .. msg.body
end)
"""})
def _mutate_chunked(t):
    c = t.raw()
    try:
        c.send((f"POST {t.url('/echo')} HTTP/1.1\r\nHost: 127.0.0.1:{t.origin.port}\r\n"
                "Transfer-Encoding: chunked\r\n\r\n4\r\nabcd\r\n2\r\nef\r\n0\r\n\r\n").encode())
        status, *_ = c.read_response()
    finally:
        c.close()
    eq(status, 200, "client status")
    req = t.one_request()
    eq(req["body"], b"replaced:abcdef", "body at the origin")
    cl = hget_all(req["headers"], "content-length")
    te = hget(req["headers"], "transfer-encoding")
    check(cl == ["15"] or (not cl and te and "chunked" in te.lower()),
          f"framing at the origin: content-length {cl}, transfer-encoding {te!r}")


@case("a 10 ms busy hook is within the default 100 ms budget", plugins={"busy10.lua": """
register_hook("http", "on_request", function(msg, ctx)
  local t0 = os.clock()
  local n = 0
  while os.clock() - t0 < 0.01 do n = n + 1 end  -- 10 ms of CPU: room for a loaded machine
  msg.headers:set("x-busy", "done")
end)
"""})
def _busy_ok(t):
    r = t.curl("/echo")
    eq(r.status, 200, f"client status (curl: {r.err})")
    eq(hget(t.one_request()["headers"], "x-busy"), "done", "x-busy (the hook was not interrupted)")


@case("waiting for a slow body does not count against the hook budget",
      flags=["--hook-budget-ms", "50"], plugins={"slow_budget.lua": """
register_hook("http", "on_request", function(msg, ctx)
  msg.headers:set("x-body", msg.body)
end)
"""})
def _slow_budget(t):
    c = t.raw()
    try:
        c.send((f"POST {t.url('/echo')} HTTP/1.1\r\nHost: 127.0.0.1:{t.origin.port}\r\n"
                "Content-Length: 10\r\n\r\nfirst").encode())
        time.sleep(0.5)                 # ten times the budget, spent waiting for the client
        c.send(b"-half")
        status, *_ = c.read_response()
    finally:
        c.close()
    eq(status, 200, "client status")
    req = t.one_request()
    eq((req["body"], hget(req["headers"], "x-body")), (b"first-half", "first-half"),
       "(body at the origin, msg.body seen by the hook)")


@case("connection.on_disconnect fires after a DROPped request", plugins={"drop_disc.lua": """
register_hook("http", "on_request", function(msg, ctx)
  log.info("CONF-DROPPING " .. tostring(ctx.conn_id))
  return action.DROP
end)
register_hook("connection", "on_disconnect", function(msg, ctx)
  log.info("CONF-GONE " .. tostring(msg.conn_id))
end)
"""})
def _drop_then_disconnect(t):
    c = t.raw()
    try:
        c.send(f"GET {t.url('/echo')} HTTP/1.1\r\nHost: 127.0.0.1:{t.origin.port}\r\n\r\n".encode())
        c.read_until_closed(timeout=5)
    finally:
        c.close()
    dropping = t.proxy.expect_log(r"CONF-DROPPING \S+", what="the DROP hook's line")[0]
    gone = t.proxy.expect_log(r"CONF-GONE \S+", what="the on_disconnect line")[0]
    cid = re.search(r"CONF-DROPPING (\S+)", dropping).group(1)
    eq(re.search(r"CONF-GONE (\S+)", gone).group(1), cid, "conn_id in on_disconnect")
