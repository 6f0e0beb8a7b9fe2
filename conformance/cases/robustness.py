"""A plugin must not be able to break the wire format: values with CR/LF cannot inject
headers or smuggle requests, invalid values cannot produce an invalid message, and
odd client timing (slow or pipelined uploads) still works with hooks that read bodies.
"Traffic is never broken by a plugin error" (spec section 3, rule 4)."""

import time

from harness import case, check, connect_tunnel, eq, hget, hget_all


def hook_ran(t):
    t.proxy.expect_log(r"CONF-RAN", what="the hook's log line (the hook ran)")


def one_get(t, path="/echo", extra=""):
    c = t.raw()
    try:
        c.send(f"GET {t.url(path)} HTTP/1.1\r\nHost: 127.0.0.1:{t.origin.port}\r\n{extra}\r\n".encode())
        return c.read_response()
    finally:
        c.close()


@case("header value with CRLF cannot inject a header", plugins={"inject_hdr.lua": """
register_hook("http", "on_request", function(msg, ctx) log.info("CONF-RAN")
  msg.headers:set("x-a", "v\\r\\nX-Injected: 1")
end)
register_hook("http", "on_response", function(msg, ctx) log.info("CONF-RAN")
  msg.headers:set("x-b", "v\\r\\nX-Injected-Resp: 1")
end)
"""})
def _inject_header(t):
    status, _r, headers, _b, _t = one_get(t)
    check(100 <= status <= 599, f"client status {status}")
    eq(hget_all(headers, "x-injected-resp"), [], "injected header at the client")
    for q in t.origin_requests(1):
        eq(hget_all(q["headers"], "x-injected"), [], "injected header at the origin")
    hook_ran(t)


@case("path with CRLF cannot smuggle a request", plugins={"inject_path.lua": """
register_hook("http", "on_request", function(msg, ctx) log.info("CONF-RAN")
  msg.path = "/echo HTTP/1.1\\r\\nHost: x\\r\\n\\r\\nGET /smuggled"
end)
"""})
def _inject_path(t):
    status, *_ = one_get(t)
    check(100 <= status <= 599, f"client status {status}")
    time.sleep(0.3)
    reqs, _ = t.origin.snapshot()
    check(len(reqs) <= 1, f"the origin received {len(reqs)} requests: {[q['target'] for q in reqs]}")
    check(all(q["method"] == "GET" and not any(ch in q["target"] for ch in " \r\n") for q in reqs),
          f"a raw space/CR/LF reached the request line at the origin: {[q['target'] for q in reqs]}")
    hook_ran(t)


@case("reason with CRLF cannot inject a response header", plugins={"inject_reason.lua": """
register_hook("http", "on_response", function(msg, ctx) log.info("CONF-RAN")
  msg.reason = "OK\\r\\nX-Injected: 1"
end)
"""})
def _inject_reason(t):
    status, reason, headers, _b, _t = one_get(t, "/fixed?body=x")
    check(100 <= status <= 599, f"client status {status}")
    eq(hget_all(headers, "x-injected"), [], "injected header at the client")
    check("\n" not in reason and "\r" not in reason, f"reason {reason!r}")
    hook_ran(t)


@case("invalid status from a hook never reaches the wire", plugins={"bad_status.lua": """
register_hook("http", "on_response", function(msg, ctx) log.info("CONF-RAN") msg.status = 1000 end)
"""})
def _bad_status(t):
    status, *_ = one_get(t, "/fixed?status=201&body=x")
    check(100 <= status <= 599, f"status {status} on the wire")
    hook_ran(t)


@case("RESPOND with an invalid status is not sent as is", plugins={"bad_respond.lua": """
register_hook("http", "on_request", function(msg, ctx) log.info("CONF-RAN") return action.RESPOND{ status = 42, body = "x" } end)
"""})
def _bad_respond(t):
    status, *_ = one_get(t)
    check(100 <= status <= 599, f"status {status} on the wire")
    hook_ran(t)


@case("invalid CONNECT authority from a hook: an error answer, proxy lives", plugins={"bad_auth.lua": """
register_hook("http", "on_request", function(msg, ctx)
  if msg.method == "CONNECT" then msg.authority = "no-port-here" end
end)
"""})
def _bad_authority(t):
    c, status, _h = connect_tunnel(t.proxy.port, f"127.0.0.1:{t.echo.port}")
    c.close()
    check(400 <= status <= 599, f"CONNECT answer {status} for an invalid target")
    r = t.curl("/echo")
    eq(r.status, 200, f"status of a later request (curl: {r.err})")


@case("request trailers are rw", plugins={"req_trailers.lua": """
register_hook("http", "on_request", function(msg, ctx)
  local tr = msg.trailers
  msg.headers:set("x-trailer-seen", tr and tostring(tr:get("x-t")) or "none")
  if tr then tr:set("x-t", "changed") end
end)
"""})
def _req_trailers(t):
    c = t.raw()
    try:
        c.send((f"POST {t.url('/echo')} HTTP/1.1\r\nHost: 127.0.0.1:{t.origin.port}\r\n"
                "Transfer-Encoding: chunked\r\nTrailer: x-t\r\n\r\n3\r\nabc\r\n0\r\nx-t: orig\r\n\r\n").encode())
        status, *_ = c.read_response()
    finally:
        c.close()
    eq(status, 200, "client status")
    req = t.one_request()
    eq(req["body"], b"abc", "body at the origin")
    eq(hget(req["headers"], "x-trailer-seen"), "orig", "trailer seen by the hook")
    eq(hget(req["trailers"], "x-t"), "changed", "trailer at the origin")


@case("one Lua state per worker persists across requests", plugins={"state.lua": """
counter = 0          -- a global: per worker state
register_hook("http", "on_request", function(msg, ctx)
  counter = counter + 1
  msg.headers:set("x-local", tostring(counter))
end)
"""})
def _state(t):
    for _ in range(3):
        r = t.curl("/echo")
        eq(r.status, 200, f"client status (curl: {r.err})")
    eq([hget(q["headers"], "x-local") for q in t.origin_requests(3)], ["1", "2", "3"],
       "global counter of the single worker")


@case("slow chunked upload read by a hook", plugins={"slow.lua": """
register_hook("http", "on_request", function(msg, ctx)
  msg.headers:set("x-body", msg.body)
end)
"""})
def _slow(t):
    c = t.raw()
    try:
        c.send((f"POST {t.url('/echo')} HTTP/1.1\r\nHost: 127.0.0.1:{t.origin.port}\r\n"
                "Transfer-Encoding: chunked\r\n\r\n").encode())
        for piece in (b"slow-", b"and-", b"steady"):
            time.sleep(0.3)
            c.send(b"%x\r\n" % len(piece) + piece + b"\r\n")
        time.sleep(0.3)
        c.send(b"0\r\n\r\n")
        status, *_ = c.read_response()
    finally:
        c.close()
    eq(status, 200, "client status")
    req = t.one_request()
    eq((req["body"], hget(req["headers"], "x-body")), (b"slow-and-steady", "slow-and-steady"),
       "(body at the origin, body seen by the hook)")


@case("pipelined requests with a body-reading hook", plugins={"pipelined.lua": """
register_hook("http", "on_request", function(msg, ctx)
  msg.headers:set("x-body", msg.body)
end)
"""})
def _pipelined(t):
    c = t.raw()
    host = f"127.0.0.1:{t.origin.port}"
    try:
        c.send((f"POST {t.url('/echo/1')} HTTP/1.1\r\nHost: {host}\r\nContent-Length: 3\r\n\r\none"
                f"POST {t.url('/echo/2')} HTTP/1.1\r\nHost: {host}\r\nContent-Length: 3\r\n\r\ntwo"
                f"GET {t.url('/echo/3')} HTTP/1.1\r\nHost: {host}\r\n\r\n").encode())
        got = [c.read_response()[3] for _ in range(3)]
    finally:
        c.close()
    import json
    eq([json.loads(b)["target"] for b in got], ["/echo/1", "/echo/2", "/echo/3"], "responses in order")
    reqs = t.origin_requests(3)
    eq([(q["target"], q["body"], hget(q["headers"], "x-body")) for q in reqs],
       [("/echo/1", b"one", "one"), ("/echo/2", b"two", "two"), ("/echo/3", b"", "")],
       "(target, body, body seen by the hook) at the origin")
