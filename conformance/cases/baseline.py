"""The proxy without plugins: the ground the hook cases stand on (forwarding, the
pipeline steps, hop-by-hop removal, CONNECT tunnels, chunked bodies with trailers).
When one of these fails, the hook cases built on the same behaviour fail too."""

from harness import case, check, connect_tunnel, eq, hget, hget_all


@case("baseline forward GET keeps header order and case")
def _get(t):
    r = t.curl("/echo?x=1", "-H", "X-First: 1", "-H", "x-second: 2", "-H", "X-First: 3")
    eq(r.status, 200, f"client status (curl: {r.err})")
    req = t.one_request()
    eq(req["target"], "/echo?x=1", "origin-form target at the origin")
    mine = [(k, v) for k, v in req["headers"] if k.lower() in ("x-first", "x-second")]
    eq(mine, [("X-First", "1"), ("x-second", "2"), ("X-First", "3")], "headers at the origin")
    eq(r.json()["headers"], [list(h) for h in req["headers"]], "client got the origin's echo")


@case("baseline --set-request-header and --set-response-header",
      flags=["--set-request-header", "x-step=1", "--set-response-header", "x-rstep=2"])
def _steps(t):
    r = t.curl("/fixed?body=b", "-H", "x-step: 0")
    eq(r.status, 200, f"client status (curl: {r.err})")
    eq(hget_all(r.headers, "x-rstep"), ["2"], "x-rstep at the client")
    eq(hget_all(t.one_request()["headers"], "x-step"), ["1"], "x-step at the origin (set replaces)")


@case("baseline hop-by-hop headers removed both ways")
def _hop(t):
    c = t.raw()
    try:
        c.send((f"GET {t.url('/fixed?body=b&h=Connection:%20x-rhop&h=x-rhop:%201')} HTTP/1.1\r\n"
                f"Host: 127.0.0.1:{t.origin.port}\r\nConnection: x-hop\r\nx-hop: 1\r\n"
                "Keep-Alive: timeout=5\r\nProxy-Connection: keep-alive\r\n\r\n").encode())
        status, _r, headers, body, _tr = c.read_response()
    finally:
        c.close()
    eq((status, body), (200, b"b"), "client (status, body)")
    eq(hget_all(headers, "x-rhop"), [], "x-rhop at the client")
    h = t.one_request()["headers"]
    for name in ("x-hop", "keep-alive", "proxy-connection"):
        eq(hget_all(h, name), [], f"{name} at the origin")


@case("baseline CONNECT tunnel")
def _tunnel(t):
    c, status, _h = connect_tunnel(t.proxy.port, f"127.0.0.1:{t.echo.port}")
    try:
        eq(status, 200, "CONNECT status")
        c.send(b"ping-1")
        eq(c.recv_some(6), b"ping-1", "echo through the tunnel")
    finally:
        c.close()
    eq(t.echo.snapshot(), [b"ping-1"], "bytes at the tunnel target")


@case("baseline chunked upload and chunked response with trailers")
def _chunked(t):
    c = t.raw()
    try:
        c.send((f"POST {t.url('/echo')} HTTP/1.1\r\nHost: 127.0.0.1:{t.origin.port}\r\n"
                "Transfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n").encode())
        status, *_ = c.read_response()
        eq(status, 200, "status of the chunked upload")
    finally:
        c.close()
    c = t.raw()
    try:
        c.send(f"GET {t.url('/chunked?part=ab&part=c&t=x-trailer:%20t1')} HTTP/1.1\r\n"
               f"Host: 127.0.0.1:{t.origin.port}\r\nTE: trailers\r\n\r\n".encode())
        status, _r, _h, body, trailers = c.read_response()
    finally:
        c.close()
    eq(t.origin_requests(1)[0]["body"], b"abcde", "uploaded body at the origin")
    eq((status, body), (200, b"abc"), "chunked response at the client")
    eq(hget(trailers, "x-trailer"), "t1", "trailer at the client")


def keepalive_after_upload(t, upload: bytes, rounds=20):
    """Several client connections, each: upload, then a GET on the same connection.
    From the second round on the upload goes over a pooled upstream connection."""
    for i in range(rounds):
        c = t.raw()
        try:
            c.send(f"POST {t.url('/echo')} HTTP/1.1\r\nHost: 127.0.0.1:{t.origin.port}\r\n".encode() + upload)
            status, _r, headers, _b, _t = c.read_response()
            eq(status, 200, f"round {i + 1}: status of the upload")
            eq(hget(headers, "connection"), None, f"round {i + 1}: Connection header on the answer to a keep-alive upload")
            c.send(f"GET {t.url('/echo')} HTTP/1.1\r\nHost: 127.0.0.1:{t.origin.port}\r\n\r\n".encode())
            eq(c.read_response()[0], 200, f"round {i + 1}: status of the next request on the same connection")
        finally:
            c.close()


@case("baseline keep-alive after a Content-Length upload on a pooled upstream connection")
def _keepalive_cl(t):
    keepalive_after_upload(t, b"Content-Length: 3\r\n\r\nabc")


@case("baseline keep-alive after a chunked upload on a pooled upstream connection")
def _keepalive_chunked(t):
    keepalive_after_upload(t, b"Transfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n")


@case("baseline keep-alive: two requests, one upstream connection reused")
def _keepalive(t):
    c = t.raw()
    try:
        for _ in range(2):
            c.send(f"GET {t.url('/echo')} HTTP/1.1\r\nHost: 127.0.0.1:{t.origin.port}\r\n\r\n".encode())
            status, *_ = c.read_response()
            eq(status, 200, "client status")
    finally:
        c.close()
    reqs, conns = t.origin.snapshot()
    eq(len(reqs), 2, "requests at the origin")
    eq(conns, 1, "upstream connections (the idle one is reused from the pool)")
