"""Lifecycle dicts, ctx and shared state: frozen connection and socks5 dicts, on_disconnect
counters, the ctx fields of a hook, and `shared.incr` across requests."""

import re
import time

from harness import CaseFail, case, check, eq, hget, settle, socks5_connect


@case("frozen connection.on_connect dict", plugins={"frozen.lua": """
register_hook("connection", "on_connect", function(msg, ctx)
  msg.client_addr = "10.9.9.9:9"
  msg.conn_id = "forged"
  msg.extra = "added"
  log.info("CONF-FROZEN h1-done")
end)
register_hook("connection", "on_connect", function(msg, ctx)
  log.info(string.format("CONF-FROZEN h2 client_addr=%s conn_id=%s extra=%s",
    tostring(msg.client_addr), tostring(msg.conn_id), tostring(msg.extra)))
end)
"""})
def _frozen(t):
    c = t.raw()
    try:
        c.send(f"GET {t.url('/echo')} HTTP/1.1\r\nHost: 127.0.0.1:{t.origin.port}\r\n\r\n".encode())
        status, *_ = c.read_response()
        port = c.local_port
    finally:
        c.close()
    eq(status, 200, "client status")
    t.proxy.expect_log(r"CONF-FROZEN h1-done", what="first hook finished (writes raised no error)")
    line = t.proxy.expect_log(r"CONF-FROZEN h2 ", what="second hook's log line")[0]
    m = re.search(r"client_addr=(\S+) conn_id=(\S+) extra=(\S+)", line)
    check(m, f"unparsable line {line!r}")
    check(m.group(1).startswith("127.0.0.1") and str(port) in m.group(1),
          f"client_addr seen by the second hook: {m.group(1)!r} (the first hook's write must be ignored)")
    check(m.group(2) not in ("forged", "nil"), f"conn_id seen by the second hook: {m.group(2)!r}")
    eq(m.group(3), "nil", "a key added by the first hook, as seen by the second")
    settle(0.2)
    errs = [ln for ln in t.proxy.lines() if re.search(r"traceback|error", ln, re.I) and "frozen" in ln]
    eq(errs, [], "error lines about frozen.lua")


@case("frozen socks5.on_connect dict", flags=["--mode", "socks5", "--proxy-auth", "conf-user:conf-pass"],
      plugins={"frozen_socks5.lua": """
register_hook("socks5", "on_connect", function(msg, ctx)
  msg.conn_id = "forged"
  msg.client_addr = "10.9.9.9:9"
  msg.target_addr = "10.9.9.9:1"
  msg.username = "mallory"
  msg.extra = "added"
  log.info("CONF-FROZEN-S5 h1-done")
end)
register_hook("socks5", "on_connect", function(msg, ctx)
  log.info(string.format("CONF-FROZEN-S5 h2 conn_id=%s client_addr=%s target_addr=%s username=%s extra=%s",
    tostring(msg.conn_id), tostring(msg.client_addr), tostring(msg.target_addr),
    tostring(msg.username), tostring(msg.extra)))
end)
register_hook("http", "on_request", function(msg, ctx)
  msg.headers:set("x-frozen-conn", tostring(ctx.conn_id))
end)
"""})
def _frozen_socks5(t):
    c, rep = socks5_connect(t.proxy.port, "127.0.0.1", t.origin.port, auth=("conf-user", "conf-pass"))
    try:
        eq(rep, 0, "SOCKS5 reply code")
        port = c.local_port
        c.send(f"GET /echo HTTP/1.1\r\nHost: 127.0.0.1:{t.origin.port}\r\n\r\n".encode())
        status, *_ = c.read_response()
    finally:
        c.close()
    eq(status, 200, "status of the request inside the SOCKS5 tunnel")
    t.proxy.expect_log(r"CONF-FROZEN-S5 h1-done", what="first hook finished (writes raised no error)")
    line = t.proxy.expect_log(r"CONF-FROZEN-S5 h2 ", what="second hook's log line")[0]
    m = re.search(r"conn_id=(\S+) client_addr=(\S+) target_addr=(\S+) username=(\S+) extra=(\S+)", line)
    check(m, f"unparsable line {line!r}")
    conn_id, client_addr, target_addr, username, extra = m.groups()
    eq(client_addr, f"127.0.0.1:{port}", "client_addr seen by the second hook (the first hook's write must be ignored)")
    eq(target_addr, f"127.0.0.1:{t.origin.port}", "target_addr seen by the second hook")
    eq(username, "conf-user", "username seen by the second hook")
    eq(extra, "nil", "a key added by the first hook, as seen by the second")
    eq(hget(t.one_request()["headers"], "x-frozen-conn"), conn_id,
       "conn_id seen by the second hook vs ctx.conn_id of the tunnelled request")
    settle(0.2)
    errs = [ln for ln in t.proxy.lines() if re.search(r"traceback|error", ln, re.I) and "frozen" in ln]
    eq(errs, [], "error lines about frozen_socks5.lua")


@case("connection.on_disconnect fields", plugins={"disc.lua": """
register_hook("http", "on_request", function(msg, ctx)
  log.info("CONF-REQ-CONN " .. tostring(ctx.conn_id))
end)
register_hook("connection", "on_disconnect", function(msg, ctx)
  log.info(string.format("CONF-DISC conn_id=%s client_addr=%s duration_ms=%s bytes_in=%s bytes_out=%s",
    tostring(msg.conn_id), tostring(msg.client_addr), tostring(msg.duration_ms),
    tostring(msg.bytes_in), tostring(msg.bytes_out)))
end)
"""})
def _disconnect(t):
    body = "z" * 3000
    req = (f"GET {t.url('/fixed?body=' + body)} HTTP/1.1\r\nHost: 127.0.0.1:{t.origin.port}\r\n"
           "X-Pad: " + "p" * 500 + "\r\n\r\n").encode()
    c = t.raw()
    try:
        c.send(req)
        status, reason, headers, rbody, _tr = c.read_response()
        port = c.local_port
        time.sleep(0.3)                 # a measurable duration
        sent, received = c.sent, c.received
    finally:
        c.close()
    eq((status, len(rbody)), (200, 3000), "client (status, body length)")
    line = t.proxy.expect_log(r"CONF-DISC ", what="the on_disconnect log line")[0]
    m = re.search(r"conn_id=(\S+) client_addr=(\S+) duration_ms=(\S+) bytes_in=(\S+) bytes_out=(\S+)", line)
    check(m, f"unparsable line {line!r}")
    conn_id, addr, dur, b_in, b_out = m.groups()
    check(addr.startswith("127.0.0.1") and str(port) in addr, f"client_addr {addr!r} (our port is {port})")
    req_line = t.proxy.expect_log(r"CONF-REQ-CONN ", what="the on_request log line")[0]
    check(req_line.split("CONF-REQ-CONN ")[1].split()[0] == conn_id,
          f"conn_id {conn_id} differs from ctx.conn_id of the request: {req_line!r}")
    try:
        dur, b_in, b_out = float(dur), float(b_in), float(b_out)
    except ValueError:
        raise CaseFail(f"duration_ms/bytes_in/bytes_out are not numbers: {line!r}")
    check(250 <= dur < 20000, f"duration_ms {dur} for a connection held ~300 ms")
    eq((b_in, b_out), (sent, received), "(bytes_in, bytes_out): the bytes the client sent and received")


CTX = """
register_hook("http", "on_request", function(msg, ctx)
  msg.headers:set("x-ctx", string.format("conn_id=%s;client_addr=%s;worker=%s;plugin=%s;listener=%s",
    tostring(ctx.conn_id), tostring(ctx.client_addr), tostring(ctx.worker),
    tostring(ctx.plugin), tostring(ctx.listener_name)))
end)
"""


def parse_ctx(v):
    check(v, "no x-ctx header at the origin")
    return dict(kv.split("=", 1) for kv in v.split(";"))


@case("ctx fields", flags=["--listener-name", "conf-ln"], plugins={"ctxplug.lua": CTX})
def _ctx(t):
    get = f"GET {t.url('/echo')} HTTP/1.1\r\nHost: 127.0.0.1:{t.origin.port}\r\n\r\n".encode()
    seen = []
    for reqs_on_conn in (2, 1):               # two requests on one connection, one on another
        c = t.raw()
        try:
            for _ in range(reqs_on_conn):
                c.send(get)
                status, *_ = c.read_response()
                eq(status, 200, "client status")
                seen.append(c.local_port)
        finally:
            c.close()
    reqs = t.origin_requests(3)
    eq(len(reqs), 3, "requests at the origin")
    ctxs = [parse_ctx(hget(q["headers"], "x-ctx")) for q in reqs]
    for cx, port in zip(ctxs, seen):
        check(cx["client_addr"].startswith("127.0.0.1") and str(port) in cx["client_addr"],
              f"ctx.client_addr {cx['client_addr']!r} (our port {port})")
        eq(cx["worker"], "0", "ctx.worker with --workers 1")
        check("ctxplug" in cx["plugin"], f"ctx.plugin {cx['plugin']!r} does not name ctxplug.lua")
        eq(cx["listener"], "conf-ln", "ctx.listener_name")
        check(cx["conn_id"] != "nil", "ctx.conn_id is nil")
    eq(ctxs[0]["conn_id"], ctxs[1]["conn_id"], "ctx.conn_id of two requests on one connection")
    check(ctxs[0]["conn_id"] != ctxs[2]["conn_id"], f"ctx.conn_id equal on two connections: {ctxs[0]['conn_id']}")


@case("shared.incr counter across requests", plugins={"counter.lua": """
register_hook("http", "on_request", function(msg, ctx)
  local n = shared.incr("conf-hits", 1)
  msg.headers:set("x-hits", string.format("%d", n))
  msg.headers:set("x-get", string.format("%d", shared.get("conf-hits")))
  shared.set("conf-last", msg.path)
end)
register_hook("http", "on_response", function(msg, ctx)
  msg.headers:set("x-last", tostring(shared.get("conf-last")))
end)
"""})
def _shared(t):
    paths = ["/echo/1", "/echo/2", "/echo/3"]
    for p in paths:                              # separate curl runs: separate connections
        r = t.curl(p)
        eq(r.status, 200, f"client status (curl: {r.err})")
        eq(hget(r.headers, "x-last"), p, "shared.get of the value set by the request hook")
    reqs = t.origin_requests(3)
    eq([hget(q["headers"], "x-hits") for q in reqs], ["1", "2", "3"], "x-hits at the origin")
    eq([hget(q["headers"], "x-get") for q in reqs], ["1", "2", "3"], "shared.get after incr")
