"""The example plugins of lua/examples/, run as shipped, with real traffic."""

import json
import time
from pathlib import Path

from harness import CaseFail, case, check, connect_tunnel, curl, eq, hget, hget_all, settle

EXAMPLES = Path(__file__).resolve().parents[2] / "lua" / "examples"


def example(name):
    return {name: (EXAMPLES / name).read_text()}


@case("example add-headers.lua", plugins=example("add-headers.lua"))
def _add_headers(t):
    r = t.curl("/echo")
    eq(r.status, 200, f"client status (curl: {r.err})")
    eq(hget_all(r.headers, "x-proxied-by"), ["luring/0"], "x-proxied-by at the client")
    eq(hget_all(t.one_request()["headers"], "x-forwarded-by"), ["luring"], "x-forwarded-by at the origin")


@case("example block-hosts.lua", plugins=example("block-hosts.lua"))
def _block_hosts(t):
    # localhost is in the example's list; 127.0.0.1 is not
    r = curl(t.proxy.addr, f"http://localhost:{t.origin.port}/echo")
    eq(r.status, 403, f"status for a blocked host (curl: {r.err})")
    check(b"blocked by proxy policy: localhost" in r.body, f"body for a blocked host: {r.body[:200]!r}")
    eq(hget(r.headers, "x-blocked-by"), "block-hosts", "x-blocked-by")
    eq(t.origin.snapshot()[1], 0, "connections at the origin for a blocked host")
    r = t.curl("/echo")
    eq(r.status, 200, f"status for an allowed host (curl: {r.err})")
    eq(len(t.origin_requests(1)), 1, "requests at the origin for an allowed host")
    # CONNECT: refused for a blocked host, opened for an allowed one
    c, status, _h = connect_tunnel(t.proxy.port, f"localhost:{t.echo.port}")
    c.close()
    eq(status, 403, "CONNECT status for a blocked host")
    settle(0.2)
    eq(t.echo.snapshot(), [], "connections at the tunnel target of a blocked CONNECT")
    c, status, _h = connect_tunnel(t.proxy.port, f"127.0.0.1:{t.echo.port}")
    try:
        eq(status, 200, "CONNECT status for an allowed host")
        c.send(b"allowed")
        eq(c.recv_some(7), b"allowed", "echo through the allowed tunnel")
    finally:
        c.close()


@case("example rewrite-json.lua", plugins=example("rewrite-json.lua"))
def _rewrite_json(t):
    r = t.curl("/json")
    eq(r.status, 200, f"client status (curl: {r.err})")
    doc = json.loads(r.body)
    eq(doc, {"user": "alice", "role": "admin", "items": [1, 2, 3]}, "JSON document at the client")
    eq(hget(r.headers, "x-rewritten"), "1", "x-rewritten")
    cl = hget(r.headers, "content-length")
    check(cl is None or int(cl) == len(r.body), f"content-length {cl} for a {len(r.body)}-byte body")
    # not JSON: untouched
    r = t.curl('/fixed?body={"role":%20"guest"}&h=Content-Type:%20text/plain')
    eq(r.body, b'{"role": "guest"}', "a text/plain body must not be rewritten")
    eq(hget(r.headers, "x-rewritten"), None, "x-rewritten on a text/plain response")


def wait_window_start(window, margin=0.05, limit=5.0):
    """Sleep until just after the next multiple of `window` seconds of wall time."""
    now = time.time()
    target = (int(now // window) + 1) * window + margin
    time.sleep(min(limit, target - now))


@case("example rate-limit.lua", plugins=example("rate-limit.lua"))
def _rate_limit(t):
    window, limit = 2, 3          # as configured at the top of the example
    for attempt in range(2):      # a burst that straddles a window is retried once
        wait_window_start(window)
        start = time.time()
        statuses = []
        for _ in range(limit + 2):
            c = t.raw()
            try:
                c.send(f"GET {t.url('/echo')} HTTP/1.1\r\nHost: 127.0.0.1:{t.origin.port}\r\n"
                       "Connection: close\r\n\r\n".encode())
                statuses.append(c.read_response()[0])
            finally:
                c.close()
        if int(start // window) == int(time.time() // window):
            break
    else:
        raise CaseFail("could not fit a burst of requests into one 2 s window (machine too slow?)")
    eq(statuses, [200] * limit + [429] * 2, "statuses of a burst from one client")
    eq(len(t.origin_requests(limit)), limit, "requests at the origin (429s never go upstream)")
    wait_window_start(window)
    r = t.curl("/echo")
    eq(r.status, 200, f"status in the next window (curl: {r.err})")


@case("example redact-stream.lua", plugins=example("redact-stream.lua"))
def _redact_stream(t):
    import urllib.parse
    stream = ("data: write to bob@example.com\n\n"
              "id: 2\ndata: key sk-abc_123 and\ndata: carol@test.org\n\n"
              "data: nothing here\r\n\r\n")
    q = urllib.parse.urlencode({"body": stream, "h": "Content-Type: text/event-stream"})
    r = t.curl(f"/fixed?{q}")
    eq(r.status, 200, f"client status (curl: {r.err})")
    eq(r.body.decode(), "data: write to [redacted]\n\n"
       "id: 2\ndata: key [redacted] and\ndata: [redacted]\n\n"
       "data: nothing here\r\n\r\n", "the stream at the client")
    check(t.proxy.wait_log("redacted 2 in event 1"), "the redaction count is logged")
