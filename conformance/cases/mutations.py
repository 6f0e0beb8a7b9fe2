"""Mutations reach the wire (spec sections 3 and 4): request method/path/authority/
headers/body at the origin (Content-Length fixed), response status/reason/headers/body
at the client; message fields and the headers API read what the peer sent."""

import re

from harness import case, check, eq, hget, hget_all


@case("mutate request method", plugins={"m_method.lua": """
register_hook("http", "on_request", function(msg, ctx)
  if msg.method == "GET" then msg.method = "PUT" end
end)
"""})
def _method(t):
    r = t.curl("/echo")
    eq(r.status, 200, f"client status (curl: {r.err})")
    eq(t.one_request()["method"], "PUT", "method at the origin")
    eq(r.json()["method"], "PUT", "method echoed to the client")


@case("mutate request path", plugins={"m_path.lua": """
register_hook("http", "on_request", function(msg, ctx)
  msg.path = "/echo/rewritten?from=" .. msg.path:gsub("[^%w]", "_")
end)
"""})
def _path(t):
    r = t.curl("/orig?q=1")
    eq(r.status, 200, f"client status (curl: {r.err})")
    eq(t.one_request()["target"], "/echo/rewritten?from=_orig_q_1", "request-target at the origin")


@case("mutate request authority", plugins={"m_authority.lua": """
register_hook("http", "on_request", function(msg, ctx)
  msg.authority = "127.0.0.1:@ORIGIN2_PORT@"
end)
"""})
def _authority(t):
    r = t.curl("/echo/where")
    eq(r.status, 200, f"client status (curl: {r.err})")
    eq(r.json().get("origin"), "origin2", "which origin answered")
    reqs2 = t.origin_requests(1, origin=t.origin2)
    eq([q["target"] for q in reqs2], ["/echo/where"], "targets at the new authority")
    eq(t.origin.snapshot()[1], 0, "connections at the original authority")


@case("mutate request headers", plugins={"m_headers.lua": """
register_hook("http", "on_request", function(msg, ctx)
  msg.headers:set("x-keep", "k2")
  msg.headers:remove("x-drop")
  msg.headers:add("x-multi", "3")
  msg.headers:add("x-new", "n")
end)
"""})
def _headers(t):
    r = t.curl("/echo", "-H", "X-Keep: k1", "-H", "X-Drop: d", "-H", "X-Multi: 1", "-H", "X-Multi: 2")
    eq(r.status, 200, f"client status (curl: {r.err})")
    h = t.one_request()["headers"]
    eq(hget_all(h, "x-keep"), ["k2"], "x-keep (set replaces)")
    eq(hget_all(h, "x-drop"), [], "x-drop (removed)")
    eq(hget_all(h, "x-multi"), ["1", "2", "3"], "x-multi (add appends, repeats kept)")
    eq(hget_all(h, "x-new"), ["n"], "x-new (added)")


@case("headers API reads in wire order", plugins={"m_hapi.lua": """
register_hook("http", "on_request", function(msg, ctx)
  local h = msg.headers
  local names = {}
  for name, value in h:pairs() do
    if name:lower():sub(1, 2) == "x-" then names[#names + 1] = name:lower() .. "=" .. value end
  end
  h:set("x-api", table.concat({
    "get=" .. tostring(h:get("X-MULTI")),
    "all=" .. table.concat(h:get_all("x-multi"), ","),
    "idx=" .. tostring(h["x-first"]),
    "absent=" .. tostring(h:get("x-absent")),
    "none=" .. #h:get_all("x-absent"),
    "order=" .. table.concat(names, ","),
  }, ";"))
end)
"""})
def _headers_api(t):
    c = t.raw()
    try:
        c.send((f"GET {t.url('/echo')} HTTP/1.1\r\nHost: 127.0.0.1:{t.origin.port}\r\n"
                "X-First: 1\r\nx-multi: a\r\nX-Other: o\r\nX-MULTI: b\r\n\r\n").encode())
        status, *_ = c.read_response()
    finally:
        c.close()
    eq(status, 200, "client status")
    eq(hget(t.one_request()["headers"], "x-api"),
       "get=a;all=a,b;idx=1;absent=nil;none=0;order=x-first=1,x-multi=a,x-other=o,x-multi=b",
       "what the headers API returned (x-api at the origin)")


@case("request message fields", plugins={"m_fields.lua": """
register_hook("http", "on_request", function(msg, ctx)
  msg.headers:set("x-fields", table.concat({
    msg.method, tostring(msg.scheme), tostring(msg.authority), tostring(msg.host),
    tostring(msg.port), tostring(msg.path), tostring(msg.http_version),
    type(msg.timestamp_start)}, "|"))
end)
"""})
def _fields(t):
    r = t.curl("/echo?q=1")
    eq(r.status, 200, f"client status (curl: {r.err})")
    p = t.origin.port
    eq(hget(t.one_request()["headers"], "x-fields"),
       f"GET|http|127.0.0.1:{p}|127.0.0.1|{p}|/echo?q=1|HTTP/1.1|number", "request fields seen by the hook")


@case("mutate request body (Content-Length fixed)", plugins={"m_body.lua": """
register_hook("http", "on_request", function(msg, ctx)
  msg.headers:set("x-orig-body", msg.body)
  msg.body = "mutated-body-xyz"
end)
"""})
def _body(t):
    r = t.curl("/echo", "-X", "POST", "-H", "Expect:", "-H", "Content-Type: text/plain", "--data-binary", "abc")
    eq(r.status, 200, f"client status (curl: {r.err})")
    req = t.one_request()
    eq(req["body"], b"mutated-body-xyz", "body at the origin")
    eq(hget(req["headers"], "x-orig-body"), "abc", "original body read by the hook")
    cl = hget_all(req["headers"], "content-length")
    te = hget(req["headers"], "transfer-encoding")
    check(cl == ["16"] or (not cl and te and "chunked" in te.lower()),
          f"framing at the origin does not match the new body: content-length {cl}, transfer-encoding {te!r}")


@case("read body of a chunked upload", plugins={"m_chunked.lua": """
register_hook("http", "on_request", function(msg, ctx)
  local b = msg.body
  msg.headers:set("x-body-len", tostring(#b))
  msg.headers:set("x-body", b)
end)
"""})
def _chunked_upload(t):
    payload = b"chunk-one|chunk-two-longer|3"
    c = t.raw()
    try:
        c.send((f"POST {t.url('/echo')} HTTP/1.1\r\nHost: 127.0.0.1:{t.origin.port}\r\n"
                "Transfer-Encoding: chunked\r\n\r\n").encode())
        for piece in (b"chunk-one|", b"chunk-two-longer|", b"3"):
            c.send(b"%x\r\n" % len(piece) + piece + b"\r\n")
        c.send(b"0\r\n\r\n")
        status, *_ = c.read_response()
    finally:
        c.close()
    eq(status, 200, "client status")
    req = t.one_request()
    eq(req["body"], payload, "body at the origin")
    eq(hget(req["headers"], "x-body-len"), str(len(payload)), "length of msg.body seen by the hook")
    eq(hget(req["headers"], "x-body"), payload.decode(), "msg.body seen by the hook")


@case("mutate response status, reason, headers, body", plugins={"m_resp.lua": """
register_hook("http", "on_response", function(msg, ctx)
  msg.status = 299
  msg.reason = "Mutated"
  msg.headers:set("x-resp", "r")
  msg.headers:remove("x-origin")
  msg.body = "new response body"
end)
"""})
def _resp(t):
    c = t.raw()
    try:
        c.send(f"GET {t.url('/fixed?status=200&body=original&h=X-Origin:%20o')} HTTP/1.1\r\n"
               f"Host: 127.0.0.1:{t.origin.port}\r\n\r\n".encode())
        status, reason, headers, body, _tr = c.read_response()
    finally:
        c.close()
    eq((status, reason), (299, "Mutated"), "status line at the client")
    eq(hget(headers, "x-resp"), "r", "x-resp at the client")
    eq(hget(headers, "x-origin"), None, "x-origin (removed) at the client")
    eq(body, b"new response body", "body at the client")
    cl = hget_all(headers, "content-length")
    check(cl in (["17"], []), f"content-length at the client {cl} does not match the 17-byte body")


@case("read body of a chunked response", plugins={"m_resp_chunked.lua": """
register_hook("http", "on_response", function(msg, ctx)
  msg.headers:set("x-resp-body", msg.body)
  msg.headers:set("x-req", msg.request.method .. " " .. msg.request.path)
end)
"""})
def _resp_chunked(t):
    r = t.curl("/chunked?part=ab&part=cde&part=f")
    eq(r.status, 200, f"client status (curl: {r.err})")
    eq(r.body, b"abcdef", "body at the client")
    eq(hget(r.headers, "x-resp-body"), "abcdef", "msg.body read by the response hook")
    eq(hget(r.headers, "x-req"), "GET /chunked?part=ab&part=cde&part=f", "msg.request seen by the response hook")


@case("response trailers visible and forwarded", plugins={"m_trailers.lua": """
register_hook("http", "on_response", function(msg, ctx)
  local tr = msg.trailers
  log.info("CONF-TRAILER " .. (tr and tostring(tr:get("x-trailer")) or "no-trailers"))
end)
"""})
def _trailers(t):
    c = t.raw()
    try:
        c.send(f"GET {t.url('/chunked?part=ab&t=x-trailer:%20t1')} HTTP/1.1\r\n"
               f"Host: 127.0.0.1:{t.origin.port}\r\nTE: trailers\r\n\r\n".encode())
        status, _r, headers, body, trailers = c.read_response()
    finally:
        c.close()
    eq((status, body), (200, b"ab"), "client (status, body)")
    eq(hget(trailers, "x-trailer"), "t1", f"trailer at the client (headers {headers})")
    line = t.proxy.expect_log(r"CONF-TRAILER ", what="the hook's trailer log line")[0]
    check(re.search(r"CONF-TRAILER t1\b", line), f"msg.trailers:get('x-trailer') in the hook: {line!r}")
