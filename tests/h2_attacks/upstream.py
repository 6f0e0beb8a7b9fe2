"""A hostile HTTP/2 origin (TLS with ALPN h2) for tests/h2_attacks.rs.

    upstream.py MODE CERT KEY

Prints its port on the first line, then serves until killed (each connection is
bounded: at most 30 s and a fixed number of frames). For every request stream it
answers as MODE says:

    push_promise        a PUSH_PROMISE before the response (push is disabled by luring)
    big_headers         a response header list of 1 MiB (HEADERS + CONTINUATION)
    continuation_flood  a response header block that never ends (CONTINUATION frames)
    goaway_mid_stream   200, part of the body, then GOAWAY and a close
    stalled_window      a window of 0 on every stream, never opened, and no answer
    stalled_read        a window of 0, never opened, and a response head at once (the
                        upload can never go on, the body never comes)
    ok                  200 "fine" (the control case)
    goaway_after        200 "fine" to the first GOAWAY_AFTER streams of a connection, a
                        GOAWAY (NO_ERROR) naming the last of them, no answer to any
                        later stream, and a close 0.3 s on: nginx's keepalive_requests,
                        which ends an h2 connection after 1,000 requests by default
"""

import socket
import ssl
import sys
import threading
import time

from hpack import Encoder
from hyperframe.frame import (
    ContinuationFrame,
    DataFrame,
    Frame,
    GoAwayFrame,
    HeadersFrame,
    PingFrame,
    PushPromiseFrame,
    SettingsFrame,
)

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
CONN_SECS = 30
GOAWAY_AFTER = 10


def frames_of(sock):
    """Yields the frames the client sends, after its preface; ends at EOF."""
    buf = b""
    while len(buf) < len(PREFACE):
        chunk = sock.recv(1 << 16)
        if not chunk:
            return
        buf += chunk
    buf = buf[len(PREFACE) :]
    while True:
        while len(buf) >= 9:
            n = int.from_bytes(buf[:3], "big")
            if len(buf) < 9 + n:
                break
            f, _ = Frame.parse_frame_header(memoryview(buf[:9]))
            f.parse_body(memoryview(buf[9 : 9 + n]))
            buf = buf[9 + n :]
            yield f
        chunk = sock.recv(1 << 16)
        if not chunk:
            return
        buf += chunk


def send(sock, *frames):
    sock.sendall(b"".join(f.serialize() for f in frames))


def headers(sid, block, end_stream=False, end_headers=True):
    f = HeadersFrame(sid)
    f.data = block
    f.flags = set()
    if end_headers:
        f.flags.add("END_HEADERS")
    if end_stream:
        f.flags.add("END_STREAM")
    return f


def respond(mode, sock, enc, sid, deadline):
    if mode == "ok":
        d = DataFrame(sid)
        d.data = b"fine"
        d.flags = {"END_STREAM"}
        send(sock, headers(sid, enc.encode([(":status", "200")])), d)
    elif mode == "push_promise":
        p = PushPromiseFrame(sid)
        p.promised_stream_id = 2
        p.data = enc.encode([(":method", "GET"), (":scheme", "https"),
                             (":authority", "localhost"), (":path", "/pushed")])
        p.flags = {"END_HEADERS"}
        d = DataFrame(sid)
        d.data = b"pushed"
        d.flags = {"END_STREAM"}
        send(sock, p, headers(sid, enc.encode([(":status", "200")])), d)
    elif mode == "big_headers":
        fields = [(":status", "200")] + [(f"x-big-{i}", "v" * 1000) for i in range(1024)]
        block = enc.encode(fields, huffman=False)
        chunks = [block[i : i + 16000] for i in range(0, len(block), 16000)]
        out = []
        for j, chunk in enumerate(chunks):
            f = HeadersFrame(sid) if j == 0 else ContinuationFrame(sid)
            f.data = chunk
            f.flags = {"END_STREAM"} if j == 0 else set()
            if j == len(chunks) - 1:
                f.flags.add("END_HEADERS")
            out.append(f)
        send(sock, *out)
    elif mode == "continuation_flood":
        send(sock, headers(sid, enc.encode([(":status", "200")]), end_headers=False))
        for _ in range(1000):
            batch = []
            for _ in range(100):
                f = ContinuationFrame(sid)
                f.data = b""
                batch.append(f)
            send(sock, *batch)
            if time.monotonic() > deadline:
                return
    elif mode == "goaway_mid_stream":
        d = DataFrame(sid)
        d.data = b"x" * 1000
        g = GoAwayFrame(0)
        g.last_stream_id = sid
        g.error_code = 2
        # no content-length: only the stream's end tells the client the body is whole
        send(sock, headers(sid, enc.encode([(":status", "200")])), d, g)
        time.sleep(0.2)
        sock.close()
        raise OSError("closed after GOAWAY")
    elif mode == "stalled_window":
        pass
    elif mode == "stalled_read":
        send(sock, headers(sid, enc.encode([(":status", "200")])))


def serve(mode, sock):
    sock.settimeout(CONN_SECS)
    deadline = time.monotonic() + CONN_SECS
    enc = Encoder()
    s = SettingsFrame(0)
    if mode in ("stalled_window", "stalled_read"):
        s.settings = {SettingsFrame.INITIAL_WINDOW_SIZE: 0}
    answered = 0
    try:
        send(sock, s)
        for n, f in enumerate(frames_of(sock)):
            if n > 100000 or time.monotonic() > deadline:
                break
            if mode == "goaway_after" and isinstance(f, HeadersFrame):
                if answered < GOAWAY_AFTER:
                    respond("ok", sock, enc, f.stream_id, deadline)
                    answered += 1
                    if answered == GOAWAY_AFTER:
                        g = GoAwayFrame(0)
                        g.last_stream_id = f.stream_id
                        g.error_code = 0
                        send(sock, g)
                        threading.Timer(0.3, sock.close).start()
                continue
            if isinstance(f, SettingsFrame) and "ACK" not in f.flags:
                a = SettingsFrame(0)
                a.flags = {"ACK"}
                send(sock, a)
            elif isinstance(f, PingFrame) and "ACK" not in f.flags:
                p = PingFrame(0)
                p.flags = {"ACK"}
                p.opaque_data = f.opaque_data
                send(sock, p)
            elif isinstance(f, HeadersFrame) and "END_HEADERS" in f.flags:
                respond(mode, sock, enc, f.stream_id, deadline)
    except (OSError, ssl.SSLError):
        pass
    finally:
        try:
            sock.close()
        except OSError:
            pass


def main():
    mode, cert, key = sys.argv[1], sys.argv[2], sys.argv[3]
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(cert, key)
    ctx.set_alpn_protocols(["h2"])
    lsock = socket.socket()
    lsock.bind(("127.0.0.1", 0))
    lsock.listen(64)
    print(lsock.getsockname()[1], flush=True)
    while True:
        raw, _ = lsock.accept()
        try:
            tls = ctx.wrap_socket(raw, server_side=True)
        except (OSError, ssl.SSLError):
            raw.close()
            continue
        threading.Thread(target=serve, args=(mode, tls), daemon=True).start()


if __name__ == "__main__":
    main()
