"""Exact connection.on_disconnect byte counts (spec section 4: `bytes_in` and `bytes_out`
are the exact bytes read from and written to the client socket, tunnels and protocol
detection included).  Each case drives one client connection with a raw socket that
counts every byte it writes and takes off its socket (`RawClient.sent` / `.received`),
reads what the proxy sends to its end, closes, and compares with the hook's numbers:
a raw CONNECT tunnel (pieces, then more than 64 KiB, which the proxy may splice; and the
same through raw.on_chunk, read and written in user space), plain HTTP inside a CONNECT
tunnel, SOCKS5 with username/password, two keep-alive requests of a forward proxy, a
100 KiB upload, and an intercepted TLS tunnel (the TLS records on the wire, handshake and
close_notify included: the client runs TLS over memory BIOs and counts the raw socket).
"""

import re
import ssl
import threading

from harness import Origin, RawClient, case, check, eq, make_pki, run_cli, socks5_connect

PLUGIN = """
register_hook("connection", "on_disconnect", function(msg, ctx)
  log.info(string.format("CONF-BYTES client_addr=%s bytes_in=%d bytes_out=%d",
    tostring(msg.client_addr), msg.bytes_in, msg.bytes_out))
end)
"""
BYTES_RE = r"CONF-BYTES client_addr=127\.0\.0\.1:{port} bytes_in=(\d+) bytes_out=(\d+)"
ESTABLISHED = b"HTTP/1.1 200 Connection Established\r\n\r\n"


def counts(t, port, proxy=None):
    """(bytes_in, bytes_out) the on_disconnect hook saw for the client on local port `port`."""
    pat = BYTES_RE.format(port=port)
    line = (proxy or t.proxy).expect_log(pat, what=f"the on_disconnect line of the client on port {port}")[0]
    return tuple(map(int, re.search(pat, line).groups()))


def expect_counts(got, exp_in, exp_out, what_in, what_out):
    """One failure message naming both counts, what they should be made of, and the gap."""
    b_in, b_out = got
    bad = []
    if b_in != exp_in:
        bad.append(f"bytes_in {b_in}, expected {exp_in} = {what_in} (off by {b_in - exp_in:+d})")
    if b_out != exp_out:
        bad.append(f"bytes_out {b_out}, expected {exp_out} = {what_out} (off by {b_out - exp_out:+d})")
    check(not bad, "; ".join(bad))


def open_tunnel(t, target, proxy=None):
    """CONNECT on a counting raw client; returns it with the 200 head checked byte for byte."""
    c = RawClient((proxy or t.proxy).port)
    c.send(f"CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n\r\n".encode())
    head = c.conn.read_head()
    eq(head + b"\r\n\r\n" if head is not None else None, ESTABLISHED, "the CONNECT answer")
    eq(c.conn.buf, b"", "bytes after the CONNECT answer before any payload")
    return c


def echo_round(c, data, timeout=10):
    """Send `data` (from a thread: both directions move at once) and read its echo."""
    err = []

    def sender():
        try:
            c.send(data)
        except OSError as e:
            err.append(e)

    th = threading.Thread(target=sender, daemon=True)
    th.start()
    got = c.recv_some(len(data), timeout=timeout)
    th.join(timeout)
    check(not err and not th.is_alive(), f"sending {len(data)} bytes into the tunnel: {err or 'timed out'}")
    eq(len(got), len(data), "bytes echoed back")
    check(got == data, "the echoed bytes differ from the payload")


def tunnel_exact(t):
    pieces = [b"first-piece/", b"second-piece-longer/", bytes((i * 7) % 251 for i in range(300 * 1024))]
    c = open_tunnel(t, f"127.0.0.1:{t.echo.port}")
    try:
        connect_in, established_out = c.sent, c.received
        for p in pieces:
            echo_round(c, p)
        port, sent, received = c.local_port, c.sent, c.received
    finally:
        c.close()
    eq(t.echo.snapshot(), [b"".join(pieces)], "bytes at the echo server")
    payload = sum(map(len, pieces))
    eq((sent, received), (connect_in + payload, established_out + payload), "client-side (sent, received)")
    expect_counts(counts(t, port), sent, received,
                  f"CONNECT request {connect_in} + payload {payload}",
                  f"200 answer {established_out} + echoed payload {payload}")


@case("connection.on_disconnect counts tunnel bytes exactly (raw CONNECT, pieces, then 300 KiB)",
      plugins={"bytes_tunnel.lua": PLUGIN})
def _tunnel_exact(t):
    tunnel_exact(t)      # nothing looks at the bytes: the proxy may move them with splice


@case("connection.on_disconnect counts tunnel bytes exactly through raw.on_chunk (read and write)",
      plugins={"bytes_tunnel_raw.lua": PLUGIN + """
register_hook("raw", "on_chunk", function(msg, ctx) end)
"""})
def _tunnel_exact_read(t):
    tunnel_exact(t)      # a raw.on_chunk hook sees every chunk: read into user space, written back


@case("connection.on_disconnect counts exactly for HTTP inside a CONNECT tunnel",
      plugins={"bytes_inside.lua": PLUGIN})
def _inside_exact(t):
    target = f"127.0.0.1:{t.origin.port}"
    c = open_tunnel(t, target)
    try:
        connect_in, established_out = c.sent, c.received
        c.send(f"GET /fixed?body=inside-the-tunnel HTTP/1.1\r\nHost: {target}\r\n"      # as curl -p does
               "User-Agent: conf-bytes\r\nAccept: */*\r\n\r\n".encode())
        status, _r, _h, body, _t = c.read_response()
        eq((status, body), (200, b"inside-the-tunnel"), "response (status, body) inside the tunnel")
        eq(c.conn.buf, b"", "bytes after the end of the response")
        port, sent, received = c.local_port, c.sent, c.received
    finally:
        c.close()
    eq([q["target"] for q in t.origin_requests(1)], ["/fixed?body=inside-the-tunnel"], "targets at the origin")
    expect_counts(counts(t, port), sent, received,
                  f"CONNECT request {connect_in} + GET {sent - connect_in}",
                  f"200 answer {established_out} + response {received - established_out}")


@case("connection.on_disconnect counts exactly through SOCKS5 with username/password",
      flags=["--mode", "socks5", "--proxy-auth", "conf-user:conf-pass"], plugins={"bytes_s5.lua": PLUGIN})
def _socks5_exact(t):
    pieces = [b"socks-one/", b"socks-two-longer/"]
    c, rep = socks5_connect(t.proxy.port, "127.0.0.1", t.echo.port, auth=("conf-user", "conf-pass"))
    try:
        eq(rep, 0, "SOCKS5 reply code")
        eq(c.conn.buf, b"", "bytes after the SOCKS5 reply before any payload")
        hs_in, hs_out = c.sent, c.received          # greeting + auth + request / choice + auth reply + reply
        for p in pieces:
            echo_round(c, p)
        port, sent, received = c.local_port, c.sent, c.received
    finally:
        c.close()
    eq(t.echo.snapshot(), [b"".join(pieces)], "bytes at the echo server")
    payload = sum(map(len, pieces))
    expect_counts(counts(t, port), sent, received,
                  f"greeting + auth request + connect request {hs_in} + payload {payload}",
                  f"method choice + auth reply + connect reply {hs_out} + echoed payload {payload}")


@case("connection.on_disconnect counts exactly for two keep-alive requests",
      plugins={"bytes_keepalive.lua": PLUGIN})
def _keepalive_exact(t):
    c = t.raw()
    sizes = []
    try:
        for path in ("/fixed?body=first-response", "/echo/second"):
            before = (c.sent, c.received)
            c.send(f"GET {t.url(path)} HTTP/1.1\r\nHost: 127.0.0.1:{t.origin.port}\r\n"
                   "User-Agent: conf-bytes\r\n\r\n".encode())
            status, *_ = c.read_response()
            eq(status, 200, f"status of {path}")
            eq(c.conn.buf, b"", f"bytes after the end of the response to {path}")
            sizes.append((c.sent - before[0], c.received - before[1]))
        port, sent, received = c.local_port, c.sent, c.received
    finally:
        c.close()
    eq([q["target"] for q in t.origin_requests(2)], ["/fixed?body=first-response", "/echo/second"],
       "targets at the origin")
    expect_counts(counts(t, port), sent, received,
                  " + ".join(f"request {i}" for i, _ in sizes),
                  " + ".join(f"response {o}" for _, o in sizes))


@case("connection.on_disconnect counts exactly for a 100 KiB upload and its echo",
      plugins={"bytes_upload.lua": PLUGIN})
def _upload_exact(t):
    payload = b"0123456789abcdef" * (100 * 64)        # bodies above 16 KiB may move with splice
    c = t.raw()
    try:
        head = (f"POST {t.url('/echo/upload')} HTTP/1.1\r\nHost: 127.0.0.1:{t.origin.port}\r\n"
                f"Content-Length: {len(payload)}\r\n\r\n").encode()
        c.send(head)
        c.send(payload)
        status, _r, _h, body, _t = c.read_response()
        eq(status, 200, "client status")
        check(len(body) > len(payload), f"echoed body of {len(body)} bytes for a {len(payload)}-byte upload")
        eq(c.conn.buf, b"", "bytes after the end of the response")
        port, sent, received = c.local_port, c.sent, c.received
    finally:
        c.close()
    eq(t.one_request()["body"], payload, "body at the origin")
    expect_counts(counts(t, port), sent, received,
                  f"request head {len(head)} + body {len(payload)}", f"response {received}")


@case("connection.on_disconnect counts TLS record bytes exactly in an intercepted tunnel",
      proxy=False, plugins={"bytes_tls.lua": PLUGIN})
def _tls_exact(t):
    ca, cert, key = make_pki(t.tmp)
    sctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    sctx.load_cert_chain(cert, key)
    origin = Origin("tls-origin", ssl_context=sctx)
    try:
        conf, luring_ca = str(t.tmp / "confdir"), str(t.tmp / "luring-ca.pem")
        rc, out = run_cli(t.bin, ["ca", "export", "--confdir", conf, "--format", "pem", "--out", luring_ca])
        eq(rc, 0, f"luring ca export ({out})")
        proxy = t.start_proxy(["--confdir", conf, "--upstream-ca", ca,
                                 "--plugin", str(t.plugin_paths["bytes_tls.lua"])])
        target = f"localhost:{origin.port}"
        c = open_tunnel(t, target, proxy)
        try:
            connect_in, established_out = c.sent, c.received
            cctx = ssl.create_default_context(cafile=luring_ca)
            cctx.set_alpn_protocols(["http/1.1"])
            inc, outg = ssl.MemoryBIO(), ssl.MemoryBIO()
            tls = cctx.wrap_bio(inc, outg, server_hostname="localhost")

            def flush():
                data = outg.read()
                if data:
                    c.send(data)

            def feed():                         # raw bytes off the socket, counted by the client
                if not c.conn.buf:
                    check(c.conn._fill(), "the proxy closed the connection inside TLS")
                inc.write(c.conn.buf)
                c.conn.buf = b""

            for _ in range(100):
                try:
                    tls.do_handshake()
                    flush()
                    break
                except ssl.SSLWantReadError:
                    flush()
                    feed()
            tls.write(f"GET /fixed?body=inside-tls HTTP/1.1\r\nHost: {target}\r\n\r\n".encode())
            flush()
            plain = b""
            for _ in range(1000):               # the response, up to the end of its body
                head, sep, body = plain.partition(b"\r\n\r\n")
                m = re.search(rb"(?i)\r\ncontent-length: *(\d+)", head)
                if sep and m and len(body) >= int(m.group(1)):
                    break
                try:
                    plain += tls.read(65536)
                except ssl.SSLWantReadError:
                    feed()
            check(plain.startswith(b"HTTP/1.1 200 ") and plain.endswith(b"\r\n\r\ninside-tls"),
                  f"response inside TLS: {plain[-300:]!r}")
            try:                                # close_notify, then every byte up to the proxy's close
                tls.unwrap()
            except ssl.SSLWantReadError:
                pass
            flush()
            _rest, closed = c.read_until_closed(timeout=3)
            port, sent, received = c.local_port, c.sent, c.received
        finally:
            c.close()
        eq([q["target"] for q in origin.snapshot()[0]], ["/fixed?body=inside-tls"], "targets at the origin")
        expect_counts(counts(t, port, proxy), sent, received,
                      f"CONNECT request {connect_in} + TLS records {sent - connect_in}",
                      f"200 answer {established_out} + TLS records {received - established_out}"
                      + ("" if closed else " (the proxy had not closed 3 s after close_notify)"))
    finally:
        origin.stop()
