"""Failed flows visible to plugins (spec section 4, HTTPMessage response `error`): a
response luring makes itself because the flow failed runs http.on_response, with
`msg.error` naming the reason; a hook can log it or RESPOND with its own page.
`msg.error` is nil on a normal response."""

import re
import socket
import ssl
import threading

from harness import case, check, curl, eq, hget, make_pki, Origin

PLUGIN = """
register_hook("http", "on_response", function(msg, ctx)
  log.info("FAILED-FLOW " .. tostring(msg.status) .. " error=" .. tostring(msg.error))
  if msg.error then
    return action.RESPOND{ status = 599, body = "custom page: " .. msg.error,
                           headers = { ["x-was"] = tostring(msg.status) } }
  end
  msg.headers:set("x-error", tostring(msg.error))
end)
"""


def closed_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


class Stall:
    """Accepts connections and never answers (until stopped)."""

    def __init__(self):
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.port = self.sock.getsockname()[1]
        self.conns = []
        self.stop = False
        threading.Thread(target=self._run, daemon=True).start()

    def _run(self):
        self.sock.settimeout(0.3)
        while not self.stop:
            try:
                c, _ = self.sock.accept()
                self.conns.append(c)
            except OSError:
                pass

    def close(self):
        self.stop = True
        for c in self.conns:
            c.close()
        self.sock.close()


def custom(r, reason_prefix, status):
    eq(r.status, 599, f"client status (the hook's RESPOND; curl: {r.err})")
    body = r.body.decode(errors="replace")
    check(body.startswith("custom page: " + reason_prefix),
          f"body {body!r} does not start with 'custom page: {reason_prefix}'")
    eq(hget(r.headers, "x-was"), str(status), "the status luring had made (x-was)")


@case("msg.error: connect refused", plugins={"fail.lua": PLUGIN})
def _refused(t):
    r = curl(t.proxy.addr, f"http://127.0.0.1:{closed_port()}/x")
    custom(r, "connect refused", 502)
    t.proxy.expect_log(r"FAILED-FLOW 502 error=connect refused", what="the hook's log line")


@case("msg.error: dns", plugins={"fail.lua": PLUGIN})
def _dns(t):
    r = curl(t.proxy.addr, "http://no-such-host.invalid/x")
    custom(r, "dns: ", 502)


@case("msg.error: upstream timeout", plugins={"fail.lua": PLUGIN}, flags=["--upstream-timeout", "1"])
def _timeout(t):
    s = Stall()
    try:
        r = curl(t.proxy.addr, f"http://127.0.0.1:{s.port}/x")
        custom(r, "upstream timeout", 504)
    finally:
        s.close()


@case("msg.error: upstream tls (untrusted certificate)", plugins={"fail.lua": PLUGIN}, proxy=False)
def _tls(t):
    ca, cert, key = make_pki(t.tmp)
    sctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    sctx.load_cert_chain(cert, key)
    origin = Origin("tls-origin", ssl_context=sctx)
    try:
        # the origin's CA is not given to luring: its certificate is not trusted
        proxy = t.start_proxy(["--mode", f"reverse:https://127.0.0.1:{origin.port}",
                               "--plugin", str(t.plugin_paths["fail.lua"])])
        r = curl(None, f"http://{proxy.addr}/x")
        custom(r, "upstream tls: ", 502)
    finally:
        origin.stop = True


@case("msg.error: bad upstream response", plugins={"fail.lua": PLUGIN})
def _bad(t):
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(4)
    port = srv.getsockname()[1]

    def answer():
        c, _ = srv.accept()
        c.recv(65536)
        c.sendall(b"this is not HTTP\r\n\r\n")
        c.close()
    threading.Thread(target=answer, daemon=True).start()
    try:
        r = curl(t.proxy.addr, f"http://127.0.0.1:{port}/x")
        custom(r, "bad upstream response", 502)
    finally:
        srv.close()


@case("msg.error: nil on a normal response", plugins={"fail.lua": PLUGIN})
def _nil(t):
    r = t.curl("/echo")
    eq(r.status, 200, f"client status (curl: {r.err})")
    eq(hget(r.headers, "x-error"), "nil", "tostring(msg.error) on a normal response")


@case("msg.error: HTTP/2 stream of a reverse proxy whose upstream refuses",
      plugins={"fail.lua": PLUGIN}, proxy=False)
def _h2(t):
    proxy = t.start_proxy(["--mode", f"reverse:http://127.0.0.1:{closed_port()}",
                           "--plugin", str(t.plugin_paths["fail.lua"])])
    r = curl(None, f"http://{proxy.addr}/x", "--http2-prior-knowledge")
    custom(r, "connect refused", 502)


DISC = """
register_hook("connection", "on_disconnect", function(d)
  log.info(string.format("DISC up_in=%d up_out=%d error=%s",
    d.upstream_bytes_in, d.upstream_bytes_out, tostring(d.error)))
end)
"""


@case("connection.on_disconnect: upstream byte counts and no error on a clean close",
      plugins={"disc_up.lua": DISC})
def _disc_clean(t):
    from harness import build_response
    r = t.curl("/fixed?body=hello")
    eq(r.status, 200, f"client status (curl: {r.err})")
    want_in = len(build_response(200, "OK", [], b"hello"))
    req = t.one_request()
    pat = r"DISC up_in=(\d+) up_out=(\d+) error=(\S+)"
    m = re.search(pat, t.proxy.expect_log(pat, what="the on_disconnect line")[0])
    eq(int(m.group(1)), want_in, "upstream_bytes_in (the origin's response, exactly)")
    check(int(m.group(2)) >= len(req["target"]) + 20, f"upstream_bytes_out {m.group(2)} too small")
    eq(m.group(3), "nil", "error on a clean close")


@case("connection.on_disconnect: error names why a failed connection ended",
      plugins={"disc_up.lua": DISC})
def _disc_failed(t):
    r = curl(t.proxy.addr, f"http://127.0.0.1:{closed_port()}/x")
    eq(r.status, 502, f"client status (curl: {r.err})")
    pat = r"DISC up_in=0 up_out=0 error=(.+)"
    m = re.search(pat, t.proxy.expect_log(pat, what="the on_disconnect line")[0])
    check("refused" in m.group(1), f"error {m.group(1)!r} does not say the connection was refused")


@case("connection.on_disconnect: upstream byte counts of an HTTP/2 client's streams",
      flags=["--mode", "reverse:http://127.0.0.1:@ORIGIN_PORT@"], plugins={"disc_up.lua": DISC})
def _disc_h2(t):
    from harness import build_response
    r = curl(None, f"http://{t.proxy.addr}/fixed?body=hello", "--http2-prior-knowledge")
    eq(r.status, 200, f"client status (curl: {r.err})")
    want_in = len(build_response(200, "OK", [], b"hello"))
    req = t.one_request()
    pat = r"DISC up_in=(\d+) up_out=(\d+) error=(\S+)"
    m = re.search(pat, t.proxy.expect_log(pat, what="the on_disconnect line")[0])
    eq(int(m.group(1)), want_in, "upstream_bytes_in (the origin's response, exactly)")
    check(int(m.group(2)) >= len(req["target"]) + 20, f"upstream_bytes_out {m.group(2)} too small")
