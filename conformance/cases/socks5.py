"""The SOCKS5 front (`--mode socks5`, RFC 1928 CONNECT, RFC 1929 username/password with
--proxy-auth) as socks5.on_connect sees it: the username, refused credentials (the hook
never runs), the target_addr of each address type, the reply code of an unreachable
target, and a raw relay through the tunnel.  The row itself is in rows.py, DROP in
actions.py, the RESPOND demotion in demote.py, the frozen dict in lifecycle.py.
"""

import re
import socket

from harness import Pending, RawClient, case, check, eq, hget, settle, socks5_connect

S5_LOG = """
register_hook("socks5", "on_connect", function(msg, ctx)
  log.info(string.format("CONF-S5 conn_id=%s client_addr=%s target_addr=%s username=%s",
    tostring(msg.conn_id), tostring(msg.client_addr), tostring(msg.target_addr), tostring(msg.username)))
end)
"""
S5_RE = re.compile(r"CONF-S5 conn_id=(\S+) client_addr=(\S+) target_addr=(\S+) username=(\S+)")
AUTH = ["--mode", "socks5", "--proxy-auth", "conf-user:conf-pass"]


def hook_calls(t):
    """(conn_id, client_addr, target_addr, username) of every socks5.on_connect call so far."""
    return [m.groups() for ln in t.proxy.lines() for m in [S5_RE.search(ln)] if m]


def wait_calls(t, n):
    t.proxy.wait_log(r"CONF-S5 ", count=n)
    return hook_calls(t)


@case("socks5.on_connect username with --proxy-auth", flags=AUTH, plugins={"s5_user.lua": S5_LOG + """
register_hook("http", "on_request", function(msg, ctx)
  msg.headers:set("x-via", "socks5-auth")
end)
"""})
def _username(t):
    r = t.curl_socks5("/echo", via="socks5h://conf-user:conf-pass@")    # curl, RFC 1929
    eq((r.rc, r.status), (0, 200), f"curl exit code and status with the right credentials (curl: {r.err})")
    eq(hget(t.one_request()["headers"], "x-via"), "socks5-auth", "http.on_request's mark at the origin")
    c, rep = socks5_connect(t.proxy.port, "127.0.0.1", t.origin.port, auth=("conf-user", "conf-pass"))
    try:                                                                 # raw RFC 1929 bytes
        eq(rep, 0, "SOCKS5 reply code after username/password")
        port = c.local_port
        c.send(f"GET /echo?raw=1 HTTP/1.1\r\nHost: 127.0.0.1:{t.origin.port}\r\n\r\n".encode())
        status, *_ = c.read_response()
        eq(status, 200, "status of a request inside the raw SOCKS5 tunnel")
    finally:
        c.close()
    calls = wait_calls(t, 2)
    eq(len(calls), 2, f"socks5.on_connect calls ({calls})")
    target = f"127.0.0.1:{t.origin.port}"
    for conn_id, addr, tgt, user in calls:
        eq((tgt, user), (target, "conf-user"), "(target_addr, username) given to the hook")
    eq(calls[1][1], f"127.0.0.1:{port}", "client_addr of the raw client")
    check(calls[0][0] != calls[1][0], f"conn_id equal on two connections: {calls}")
    eq([q["target"] for q in t.origin_requests(2)], ["/echo", "/echo?raw=1"], "targets at the origin")


@case("socks5 wrong credentials refused before socks5.on_connect", flags=AUTH, plugins={"s5_badauth.lua": S5_LOG})
def _bad_credentials(t):
    for via, what in (("socks5h://conf-user:wrong@", "a wrong password"),
                      ("socks5h://someone:conf-pass@", "a wrong user"),
                      ("--socks5", "no credentials")):
        r = t.curl_socks5("/echo", via=via)
        check(r.rc != 0, f"curl exit code with {what}: 0 (status {r.status})")
        eq((r.status, r.body), (None, b""), f"(status, body) curl got with {what}")
    c = RawClient(t.proxy.port)                       # raw: the RFC 1929 status byte
    try:
        c.send(b"\x05\x01\x02")
        eq(c.recv_some(2), b"\x05\x02", "method selection (username/password)")
        c.send(b"\x01\x09conf-user\x05wrong")
        rep = c.recv_some(2)
        check(len(rep) == 2 and rep[0] == 1 and rep[1] != 0, f"RFC 1929 reply to a wrong password: {rep!r}")
        data, closed = c.read_until_closed(timeout=5)
        eq(data, b"", "bytes after the failure reply")
        check(closed, "the connection was not closed within 5s after failed authentication")
    finally:
        c.close()
    c = RawClient(t.proxy.port)                       # raw: only "no authentication" offered
    try:
        c.send(b"\x05\x01\x00")
        eq(c.recv_some(2), b"\x05\xff", "method selection when only no-auth is offered")
        _data, closed = c.read_until_closed(timeout=5)
        check(closed, "the connection was not closed within 5s after no acceptable method")
    finally:
        c.close()
    settle(0.3)
    eq(hook_calls(t), [], "socks5.on_connect calls for refused clients")
    reqs, conns = t.origin.snapshot()
    eq((len(reqs), conns), (0, 0), "(requests, connections) at the origin")
    r = t.curl_socks5("/echo", via="socks5h://conf-user:conf-pass@")   # the hook is live
    eq((r.rc, r.status), (0, 200), f"right credentials afterwards (curl: {r.err})")
    eq(len(wait_calls(t, 1)), 1, "socks5.on_connect calls after one accepted client")


@case("socks5.on_connect target_addr of IPv4, domain and IPv6 requests", flags=["--mode", "socks5"],
      plugins={"s5_targets.lua": S5_LOG + """
register_hook("socks5", "on_connect", function(msg, ctx)
  -- nothing listens on these: DROP them before any upstream connection
  if msg.target_addr:sub(1, 1) == "[" or msg.target_addr:find("%.invalid:") then
    return action.DROP
  end
end)
"""})
def _targets(t):
    o = t.origin.port
    ports, expect = [], []
    for host, shown in (("conf-target.invalid", f"conf-target.invalid:{o}"), ("::1", f"[::1]:{o}"),
                        ("2001:db8::17", f"[2001:db8::17]:{o}")):
        c, rep = socks5_connect(t.proxy.port, host, o)
        try:
            eq(rep, None, f"SOCKS5 reply code for {host} (DROPped by the hook)")
            ports.append(c.local_port)
        finally:
            c.close()
        expect.append(shown)
    settle(0.3)
    eq(t.origin.snapshot()[1], 0, "connections at the origin after the DROPped requests")
    c, rep = socks5_connect(t.proxy.port, "127.0.0.1", o)          # IPv4, CONTINUE
    try:
        eq(rep, 0, "SOCKS5 reply code for 127.0.0.1")
        ports.append(c.local_port)
        expect.append(f"127.0.0.1:{o}")
        c.send(f"GET /echo?atyp=1 HTTP/1.1\r\nHost: 127.0.0.1:{o}\r\n\r\n".encode())
        status, *_ = c.read_response()
        eq(status, 200, "status inside the IPv4 tunnel")
    finally:
        c.close()
    calls = wait_calls(t, 4)
    eq([x[2] for x in calls], expect, "target_addr of each request")
    eq([x[1] for x in calls], [f"127.0.0.1:{p}" for p in ports], "client_addr of each request")
    eq({x[3] for x in calls}, {"nil"}, "username without --proxy-auth")
    eq(len({x[0] for x in calls}), 4, f"distinct conn_id of four connections ({calls})")
    eq([q["target"] for q in t.origin_requests(1)], ["/echo?atyp=1"], "targets at the origin")
    # a domain name through curl --socks5-hostname, resolved by the proxy
    addrs = {a[4][0] for a in socket.getaddrinfo("localhost", o, type=socket.SOCK_STREAM)}
    if addrs != {"127.0.0.1"}:
        raise Pending(f"localhost resolves to {sorted(addrs)}, the origin listens on 127.0.0.1 only")
    r = t.curl_socks5(via="--socks5-hostname", url=f"http://localhost:{o}/echo?atyp=3")
    eq((r.rc, r.status), (0, 200), f"curl --socks5-hostname localhost (curl: {r.err})")
    calls = wait_calls(t, 5)
    eq(calls[-1][2], f"localhost:{o}", "target_addr of a domain request, as the client named it")
    eq(t.origin_requests(2)[-1]["target"], "/echo?atyp=3", "target at the origin")


@case("socks5 connect refused gives reply code 5", flags=["--mode", "socks5"], plugins={"s5_refused.lua": S5_LOG})
def _refused(t):
    dead = socket.socket(socket.AF_INET, socket.SOCK_STREAM)    # bound, never listening: refuses
    dead.bind(("127.0.0.1", 0))
    dead_port = dead.getsockname()[1]
    try:
        c, rep = socks5_connect(t.proxy.port, "127.0.0.1", dead_port)
        try:
            eq(rep, 5, "SOCKS5 reply code for a target that refuses connections")
            data, closed = c.read_until_closed(timeout=5)
            eq(data, b"", "bytes after the failure reply")
            check(closed, "the connection was not closed within 5s after the failure reply")
        finally:
            c.close()
        r = t.curl_socks5(url=f"http://127.0.0.1:{dead_port}/echo")
        check(r.rc != 0, f"curl exit code for a refused target: 0 (status {r.status})")
    finally:
        dead.close()
    calls = wait_calls(t, 2)
    eq([x[2] for x in calls], [f"127.0.0.1:{dead_port}"] * 2, "target_addr given to the hook (CONTINUE)")
    t.proxy.expect_log(rf"SOCKS5 127\.0\.0\.1:{dead_port}: .*connection refused", what="the refused connect")
    r = t.curl_socks5("/echo")
    eq((r.rc, r.status), (0, 200), f"a reachable target afterwards (curl: {r.err})")


@case("socks5 tunnel relays raw bytes through raw.on_chunk", flags=["--mode", "socks5"],
      plugins={"s5_raw.lua": S5_LOG + """
register_hook("raw", "on_chunk", function(msg, ctx)
  if msg.from_client then msg.data = string.upper(msg.data) else msg.data = string.gsub(msg.data, "-", "+") end
end)
"""})
def _raw_relay(t):
    c, rep = socks5_connect(t.proxy.port, "127.0.0.1", t.echo.port)
    try:
        eq(rep, 0, "SOCKS5 reply code")
        c.send(b"abc-1")
        eq(c.recv_some(5), b"ABC+1", "bytes back at the client (upper-cased going up, '-'->'+' coming down)")
    finally:
        c.close()
    eq(t.echo.snapshot(), [b"ABC-1"], "bytes received by the echo server")
    eq([x[2] for x in wait_calls(t, 1)], [f"127.0.0.1:{t.echo.port}"], "target_addr given to the hook")
