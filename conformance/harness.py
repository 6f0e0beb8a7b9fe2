"""Shared machinery for the luring conformance suite (stdlib only).

What lives here:
  * Origin      a threaded HTTP/1.1 origin on 127.0.0.1 that records every request it
                receives (method, target, headers in wire order with original case,
                body, trailers, connection number) and answers by path:
                  /fixed?status=..&reason=..&h=Name:%20value&body=..   fixed response
                  /chunked?part=..&part=..&t=Name:%20value             chunked + trailers
                  /json                                                known JSON body
                  anything else                                        JSON echo of the request
  * EchoServer  a raw TCP echo server (for CONNECT tunnels / raw.on_chunk)
  * Proxy       one `luring run` process: start, parse the listening port, collect its
                logs, stop.  Every wait is bounded.
  * curl() / RawClient / connect_tunnel() / socks5_connect()   real clients.
  * the case registry (`case` decorator), CaseFail / Pending, small assertion helpers.

Every blocking call has a timeout; nothing in here can wait forever.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import struct
import subprocess
import tempfile
import threading
import time
import urllib.parse
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional

IO_TIMEOUT = 5.0          # one socket read / write
PROXY_START_TIMEOUT = 15.0
CURL_TIMEOUT = 10
MAX_HEAD = 1 << 20


# --------------------------------------------------------------------------- results

class CaseFail(Exception):
    """An assertion about the wire did not hold."""


class Pending(Exception):
    """The case cannot run yet (layer or client not available)."""


def check(cond, msg: str):
    if not cond:
        raise CaseFail(msg)


def eq(got, expected, what: str):
    if got != expected:
        raise CaseFail(f"{what}: expected {expected!r}, got {got!r}")


# --------------------------------------------------------------------------- registry

@dataclass
class Case:
    name: str
    fn: Optional[Callable]
    group: str = ""
    plugins: dict = field(default_factory=dict)   # file name -> Lua source (templated)
    flags: list = field(default_factory=list)     # extra `luring run` flags (templated)
    proxy: bool = True                            # start `luring run` for this case
    pending: Optional[str] = None                 # reason: never run, report PENDING


CASES: list[Case] = []


def case(name, plugins=None, flags=(), proxy=True, pending=None):
    """Register a case.  `plugins` maps file names to Lua source; they are passed to
    `luring run` as --plugin in dict order.  Sources and flags may contain the
    placeholders @ORIGIN_PORT@, @ORIGIN2_PORT@, @ECHO_PORT@."""
    def deco(fn):
        CASES.append(Case(name=name, fn=fn, plugins=dict(plugins or {}), flags=list(flags),
                          proxy=proxy and pending is None, pending=pending))
        return fn
    return deco


def pending_case(name, reason):
    CASES.append(Case(name=name, fn=None, proxy=False, pending=reason))


# --------------------------------------------------------------------------- headers

def hget_all(headers, name):
    n = name.lower()
    return [v for (k, v) in headers if k.lower() == n]


def hget(headers, name):
    vals = hget_all(headers, name)
    return vals[0] if vals else None


def parse_head_lines(lines):
    out = []
    for ln in lines:
        if not ln:
            continue
        k, _, v = ln.partition(":")
        out.append((k, v.strip()))
    return out


# --------------------------------------------------------------------------- socket io

class Conn:
    """A buffered socket reader with bounded waits."""

    def __init__(self, sock: socket.socket, timeout=IO_TIMEOUT):
        self.sock = sock
        self.buf = b""
        self.timeout = timeout
        self.received = 0          # every byte taken off the socket, consumed or buffered
        sock.settimeout(timeout)

    def _fill(self) -> bool:
        data = self.sock.recv(65536)
        if not data:
            return False
        self.received += len(data)
        self.buf += data
        return True

    def read_head(self) -> Optional[bytes]:
        """Bytes up to and including CRLFCRLF; None on clean EOF before any byte."""
        while b"\r\n\r\n" not in self.buf:
            if len(self.buf) > MAX_HEAD:
                raise ValueError("head too large")
            if not self._fill():
                if self.buf:
                    raise ConnectionError(f"EOF inside head: {self.buf[:200]!r}")
                return None
        head, _, rest = self.buf.partition(b"\r\n\r\n")
        self.buf = rest
        return head

    def read_exact(self, n: int) -> bytes:
        while len(self.buf) < n:
            if not self._fill():
                raise ConnectionError(f"EOF after {len(self.buf)} of {n} body bytes")
        out, self.buf = self.buf[:n], self.buf[n:]
        return out

    def read_line(self) -> bytes:
        while b"\r\n" not in self.buf:
            if len(self.buf) > MAX_HEAD:
                raise ValueError("line too long")
            if not self._fill():
                raise ConnectionError("EOF inside chunked framing")
        line, _, self.buf = self.buf.partition(b"\r\n")
        return line

    def read_chunked(self):
        """Returns (body, trailers)."""
        body = b""
        for _ in range(100000):
            line = self.read_line()
            size = int(line.split(b";")[0].strip(), 16)
            if size == 0:
                trailers = []
                for _ in range(1000):
                    t = self.read_line()
                    if not t:
                        return body, trailers
                    k, _, v = t.decode("latin-1").partition(":")
                    trailers.append((k, v.strip()))
                raise ValueError("too many trailers")
            body += self.read_exact(size)
            eq(self.read_line(), b"", "chunk terminator")
        raise ValueError("too many chunks")

    def read_to_eof(self, limit=16 << 20) -> bytes:
        while len(self.buf) < limit:
            if not self._fill():
                break
        out, self.buf = self.buf, b""
        return out


# --------------------------------------------------------------------------- origin

class Origin:
    """Threaded HTTP/1.1 origin on 127.0.0.1:0 recording what it receives."""

    def __init__(self, label="origin", ssl_context=None):
        self.label = label
        self.ssl_context = ssl_context        # serve HTTPS when given
        self.lock = threading.Lock()
        self.requests: list[dict] = []
        self.conn_count = 0
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(128)
        self.sock.settimeout(0.5)
        self.port = self.sock.getsockname()[1]
        self.stopping = False
        threading.Thread(target=self._accept_loop, daemon=True).start()

    def reset(self):
        with self.lock:
            self.requests = []
            self.conn_count = 0

    def stop(self):
        self.stopping = True
        try:
            self.sock.close()
        except OSError:
            pass

    def snapshot(self):
        with self.lock:
            return list(self.requests), self.conn_count

    def _accept_loop(self):
        while not self.stopping:
            try:
                s, _ = self.sock.accept()
            except socket.timeout:
                continue
            except OSError:
                return
            with self.lock:
                self.conn_count += 1
                conn_no = self.conn_count
            threading.Thread(target=self._serve, args=(s, conn_no), daemon=True).start()

    def _serve(self, s, conn_no):
        if self.ssl_context is not None:
            try:
                s.settimeout(10)
                s = self.ssl_context.wrap_socket(s, server_side=True)
            except OSError:
                s.close()
                return
        c = Conn(s, timeout=30)
        try:
            for _ in range(1000):          # bounded keep-alive
                head = c.read_head()
                if head is None:
                    return
                lines = head.decode("latin-1").split("\r\n")
                method, target, version = (lines[0].split(" ", 2) + ["", ""])[:3]
                headers = parse_head_lines(lines[1:])
                te = (hget(headers, "transfer-encoding") or "").lower()
                trailers = []
                if "chunked" in te:
                    body, trailers = c.read_chunked()
                elif hget(headers, "content-length") is not None:
                    body = c.read_exact(int(hget(headers, "content-length")))
                else:
                    body = b""
                req = {"method": method, "target": target, "http_version": version,
                       "headers": headers, "body": body, "trailers": trailers, "conn": conn_no}
                with self.lock:
                    self.requests.append(req)
                close = (hget(headers, "connection") or "").lower() == "close" or version == "HTTP/1.0"
                out = self._respond(req, close)
                if out.endswith(CLOSE):
                    s.sendall(out[:-len(CLOSE)])
                    return
                s.sendall(out)
                if close:
                    return
        except (OSError, ValueError, ConnectionError, CaseFail):
            return
        finally:
            try:
                s.close()
            except OSError:
                pass

    def _respond(self, req, close) -> bytes:
        url = urllib.parse.urlsplit(req["target"])
        path = url.path
        q = urllib.parse.parse_qs(url.query, keep_blank_values=True)
        conn_hdr = [("Connection", "close")] if close else []
        if path == "/fixed":
            status = int(q.get("status", ["200"])[0])
            reason = q.get("reason", ["OK"])[0]
            body = q.get("body", [""])[0].encode()
            hs = [tuple(x.split(":", 1)) for x in q.get("h", [])]
            hs = [(k, v.strip()) for k, v in hs]
            if q.get("nolen"):          # close-delimited body: no Content-Length, then close
                head = f"HTTP/1.1 {status} {reason}\r\n" + "".join(f"{k}: {v}\r\n" for k, v in hs)
                return (head + "Connection: close\r\n\r\n").encode("latin-1") + body + CLOSE
            return build_response(status, reason, hs + conn_hdr, body)
        if path == "/chunked":
            parts = [p.encode() for p in q.get("part", ["hello"])]
            trailers = [tuple(x.split(":", 1)) for x in q.get("t", [])]
            head = f"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nTransfer-Encoding: chunked\r\n"
            if trailers:
                head += "Trailer: " + ", ".join(k for k, _ in trailers) + "\r\n"
            for k, v in conn_hdr:
                head += f"{k}: {v}\r\n"
            out = (head + "\r\n").encode()
            for p in parts:
                out += b"%x\r\n" % len(p) + p + b"\r\n"
            out += b"0\r\n" + "".join(f"{k}: {v.strip()}\r\n" for k, v in trailers).encode() + b"\r\n"
            return out
        if path == "/json":
            body = JSON_BODY.encode()
            return build_response(200, "OK", [("Content-Type", "application/json")] + conn_hdr, body)
        echo = {"method": req["method"], "target": req["target"], "http_version": req["http_version"],
                "headers": req["headers"], "body": req["body"].decode("latin-1"),
                "trailers": req["trailers"], "conn": req["conn"], "origin": self.label}
        body = json.dumps(echo).encode()
        return build_response(200, "OK", [("Content-Type", "application/json")] + conn_hdr, body)


CLOSE = b"\x00<close>\x00"     # marker: the origin closes after this response
JSON_BODY = '{"user": "alice", "role": "guest", "items": [1, 2, 3]}'


def build_response(status, reason, headers, body: bytes) -> bytes:
    head = f"HTTP/1.1 {status} {reason}\r\n"
    for k, v in headers:
        head += f"{k}: {v}\r\n"
    head += f"Content-Length: {len(body)}\r\n\r\n"
    return head.encode("latin-1") + body


# --------------------------------------------------------------------------- echo server

class EchoServer:
    """Raw TCP echo on 127.0.0.1:0; records the bytes each connection received and how
    it ended (`ends`: None while open, "eof", "reset", "timeout" or "error ...")."""

    def __init__(self):
        self.lock = threading.Lock()
        self.received: list[bytearray] = []
        self.conns: list[dict] = []
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)
        self.sock.settimeout(0.5)
        self.port = self.sock.getsockname()[1]
        self.stopping = False
        threading.Thread(target=self._accept_loop, daemon=True).start()

    def reset(self):
        with self.lock:
            self.received = []
            self.conns = []

    def snapshot(self):
        with self.lock:
            return [bytes(b) for b in self.received]

    def ends(self):
        with self.lock:
            return [c["end"] for c in self.conns]

    def wait_ended(self, n=1, timeout=IO_TIMEOUT):
        """How the connections ended, once the first n did (bounded; None: still open)."""
        deadline = time.monotonic() + timeout
        while True:
            ends = self.ends()
            if (len(ends) >= n and None not in ends[:n]) or time.monotonic() >= deadline:
                return ends
            time.sleep(0.02)

    def stop(self):
        self.stopping = True

    def _accept_loop(self):
        while not self.stopping:
            try:
                s, _ = self.sock.accept()
            except socket.timeout:
                continue
            except OSError:
                return
            buf = bytearray()
            rec = {"end": None}
            with self.lock:
                self.received.append(buf)
                self.conns.append(rec)
            threading.Thread(target=self._serve, args=(s, buf, rec), daemon=True).start()

    def _serve(self, s, buf, rec):
        s.settimeout(30)
        end = "open after 100000 reads"
        try:
            for _ in range(100000):
                data = s.recv(65536)
                if not data:
                    end = "eof"
                    return
                with self.lock:
                    buf.extend(data)
                s.sendall(data)
        except ConnectionResetError:
            end = "reset"
        except socket.timeout:
            end = "timeout"
        except OSError as e:
            end = f"error {type(e).__name__}: {e}"
        finally:
            s.close()
            with self.lock:
                rec["end"] = end


# --------------------------------------------------------------------------- proxy

class ProxyStartError(Exception):
    pass


class Proxy:
    """One `luring run` process with its logs collected line by line."""

    LISTEN_RE = re.compile(r"luring listening on 127\.0\.0\.1:(\d+)")

    def __init__(self, binary, args, timeout=PROXY_START_TIMEOUT):
        workers = [] if "--workers" in args else ["--workers", "1"]   # a case may ask for more
        self.cmd = [binary, "run", "--listen", "127.0.0.1:0", *workers, *args]
        self.stderr_lines: list[str] = []
        self.stdout_lines: list[str] = []
        self.lock = threading.Lock()
        self.p = subprocess.Popen(self.cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                  stderr=subprocess.PIPE, start_new_session=True)
        self._readers = [
            threading.Thread(target=self._pump, args=(self.p.stderr, self.stderr_lines), daemon=True),
            threading.Thread(target=self._pump, args=(self.p.stdout, self.stdout_lines), daemon=True),
        ]
        for t in self._readers:
            t.start()
        self.port = None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self.lock:
                for ln in self.stderr_lines:
                    m = self.LISTEN_RE.search(ln)
                    if m:
                        self.port = int(m.group(1))
                        break
            if self.port:
                return
            if self.p.poll() is not None:
                time.sleep(0.1)   # let the readers drain
                self.stop()
                raise ProxyStartError(f"luring exited with {self.p.returncode} before listening: "
                                      f"{self.log_tail(200)}")
            time.sleep(0.02)
        self.stop()
        raise ProxyStartError(f"no 'luring listening on' line within {timeout}s: {self.log_tail()}")

    ANSI_RE = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")

    def _pump(self, stream, sink):
        for raw in iter(stream.readline, b""):
            line = self.ANSI_RE.sub("", raw.decode("utf-8", "replace").rstrip("\n"))
            with self.lock:
                sink.append(line)

    @property
    def addr(self):
        return f"127.0.0.1:{self.port}"

    def log_tail(self, n=15):
        with self.lock:
            lines = self.stderr_lines[-n:] + [f"(stdout) {x}" for x in self.stdout_lines[-5:]]
        return " | ".join(lines) if lines else "(no output)"

    def lines(self, stream="stderr"):
        with self.lock:
            return list(self.stderr_lines if stream == "stderr" else self.stdout_lines)

    def find(self, pattern, stream="stderr"):
        rx = re.compile(pattern)
        return [ln for ln in self.lines(stream) if rx.search(ln)]

    def wait_log(self, pattern, timeout=3.0, count=1):
        """Wait until `count` stderr lines match; return them (possibly fewer on timeout)."""
        deadline = time.monotonic() + timeout
        while True:
            found = self.find(pattern)
            if len(found) >= count or time.monotonic() >= deadline:
                return found
            time.sleep(0.05)

    def expect_log(self, pattern, timeout=3.0, what=None):
        found = self.wait_log(pattern, timeout)
        if not found:
            on_stdout = self.find(pattern, "stdout")
            where = " (it is on stdout, the log must go to stderr)" if on_stdout else ""
            raise CaseFail(f"{what or 'log line'} /{pattern}/ not found in stderr{where}; "
                           f"log: {self.log_tail()}")
        return found

    def alive(self):
        return self.p.poll() is None

    def stop(self):
        if self.p.poll() is None:
            try:
                self.p.send_signal(signal.SIGTERM)
                self.p.wait(timeout=3)
            except subprocess.TimeoutExpired:
                self.p.kill()
                try:
                    self.p.wait(timeout=3)
                except subprocess.TimeoutExpired:
                    pass
        for t in self._readers:
            t.join(timeout=1)


def run_cli(binary, args, timeout=15):
    """Run `luring ARGS`; returns (rc, combined output).  rc None = timed out (killed)."""
    try:
        p = subprocess.run([binary, *args], stdin=subprocess.DEVNULL, capture_output=True,
                           timeout=timeout)
    except subprocess.TimeoutExpired as e:
        out = (e.stdout or b"") + (e.stderr or b"")
        return None, out.decode("utf-8", "replace")
    return p.returncode, Proxy.ANSI_RE.sub("", (p.stdout + p.stderr).decode("utf-8", "replace"))


# --------------------------------------------------------------------------- clients

@dataclass
class Reply:
    rc: int                       # curl exit code (0 ok, 52 empty reply, 28 timeout...)
    status: Optional[int]
    reason: str
    headers: list
    body: bytes
    err: str

    def json(self):
        try:
            return json.loads(self.body)
        except ValueError:
            raise CaseFail(f"client body is not the origin's JSON echo: {self.body[:300]!r}")


def _clean_env():
    env = {k: v for k, v in os.environ.items() if "proxy" not in k.lower()}
    return env


def curl(proxy_addr, url, *args, timeout=CURL_TIMEOUT, tunnel=False) -> Reply:
    """curl through the proxy (forward mode).  tunnel=True uses CONNECT (-p)."""
    with tempfile.TemporaryDirectory() as d:
        hfile, bfile = os.path.join(d, "h"), os.path.join(d, "b")
        cmd = ["curl", "-sS", "--globoff", "--max-time", str(timeout), "-D", hfile, "-o", bfile]
        if proxy_addr:
            cmd += ["-x", f"http://{proxy_addr}"]
        if tunnel:
            cmd += ["-p"]
        cmd += list(args) + [url]
        try:
            p = subprocess.run(cmd, capture_output=True, timeout=timeout + 5, env=_clean_env())
            rc, err = p.returncode, p.stderr.decode("utf-8", "replace")
        except subprocess.TimeoutExpired:
            rc, err = 28, "curl wrapper timeout"
        raw_h = Path(hfile).read_bytes().decode("latin-1") if os.path.exists(hfile) else ""
        body = Path(bfile).read_bytes() if os.path.exists(bfile) else b""
    # -D holds every head (CONNECT answer, 1xx, final); the last one is the response.
    blocks = [b for b in raw_h.split("\r\n\r\n") if b.strip()]
    status, reason, headers = None, "", []
    if blocks:
        lines = blocks[-1].split("\r\n")
        parts = lines[0].split(" ", 2)
        if len(parts) >= 2 and parts[1].isdigit():
            status = int(parts[1])
            reason = parts[2] if len(parts) > 2 else ""
        headers = parse_head_lines(lines[1:])
    return Reply(rc, status, reason, headers, body, err.strip())


class RawClient:
    """A plain TCP client for exact bytes on the wire.  `sent` and `received` count every
    byte it wrote to and took off its socket (through these methods)."""

    def __init__(self, port, timeout=IO_TIMEOUT):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        self.conn = Conn(self.sock, timeout)
        self.sent = 0

    @property
    def local_port(self):
        return self.sock.getsockname()[1]

    @property
    def received(self):
        return self.conn.received

    def send(self, data: bytes):
        self.sock.sendall(data)
        self.sent += len(data)

    def read_response(self, head_only=False, method="GET"):
        """Parse one HTTP/1.1 response.  Returns (status, reason, headers, body, trailers)."""
        head = self.conn.read_head()
        if head is None:
            raise CaseFail("connection closed before any response byte")
        lines = head.decode("latin-1").split("\r\n")
        parts = lines[0].split(" ", 2)
        check(len(parts) >= 2 and parts[0].startswith("HTTP/"), f"bad status line {lines[0]!r}")
        status = int(parts[1])
        reason = parts[2] if len(parts) > 2 else ""
        headers = parse_head_lines(lines[1:])
        body, trailers = b"", []
        if head_only or method == "HEAD" or status in (204, 304) or 100 <= status < 200:
            return status, reason, headers, body, trailers
        te = (hget(headers, "transfer-encoding") or "").lower()
        if "chunked" in te:
            body, trailers = self.conn.read_chunked()
        elif hget(headers, "content-length") is not None:
            body = self.conn.read_exact(int(hget(headers, "content-length")))
        else:
            body = self.conn.read_to_eof()
        return status, reason, headers, body, trailers

    def recv_some(self, min_bytes=1, timeout=IO_TIMEOUT) -> bytes:
        """Read at least min_bytes (buffered first), bounded by timeout."""
        deadline = time.monotonic() + timeout
        while len(self.conn.buf) < min_bytes:
            left = deadline - time.monotonic()
            if left <= 0:
                break
            self.sock.settimeout(left)
            try:
                if not self.conn._fill():
                    break
            except socket.timeout:
                break
        self.sock.settimeout(self.conn.timeout)
        out, self.conn.buf = self.conn.buf, b""
        return out

    def read_until_closed(self, timeout=IO_TIMEOUT):
        """Returns (bytes_received, closed).  A reset counts as closed."""
        deadline = time.monotonic() + timeout
        got = self.conn.buf
        self.conn.buf = b""
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                return got, False
            self.sock.settimeout(left)
            try:
                data = self.sock.recv(65536)
            except socket.timeout:
                return got, False
            except ConnectionResetError:
                return got, True
            if not data:
                return got, True
            self.conn.received += len(data)
            got += data

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass


def connect_tunnel(proxy_port, target, extra_headers=""):
    """Open a CONNECT tunnel; returns (client, status, headers)."""
    c = RawClient(proxy_port)
    c.send(f"CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n{extra_headers}\r\n".encode())
    status, _reason, headers, _b, _t = c.read_response(head_only=True)
    return c, status, headers


def socks5_addr(host: str) -> bytes:
    """ATYP and address of a SOCKS5 request: IPv4, IPv6, or else a domain name."""
    for fam, atyp in ((socket.AF_INET, 1), (socket.AF_INET6, 4)):
        try:
            return bytes([atyp]) + socket.inet_pton(fam, host)
        except OSError:
            pass
    name = host.encode("idna")
    return bytes([3, len(name)]) + name


def socks5_connect(proxy_port, host, port, auth=None):
    """SOCKS5 CONNECT (RFC 1928) over a raw socket; username/password (RFC 1929) when
    auth=(user, password).  Method negotiation and authentication must succeed.
    Returns (client, rep): rep is the reply code (0 succeeded, 5 connection refused...),
    None when the proxy closed the connection without sending a reply byte."""
    c = RawClient(proxy_port)
    try:
        method = 2 if auth else 0
        c.send(bytes([5, 1, method]))
        eq(c.conn.read_exact(2), bytes([5, method]), "SOCKS5 method selection reply")
        if auth:
            u, p = (x.encode() for x in auth)
            c.send(bytes([1, len(u)]) + u + bytes([len(p)]) + p)
            eq(c.conn.read_exact(2), b"\x01\x00", "SOCKS5 username/password reply")
        c.send(b"\x05\x01\x00" + socks5_addr(host) + struct.pack(">H", port))
        try:
            head = c.conn.read_exact(4)
        except ConnectionError:
            if c.conn.buf:
                raise CaseFail(f"SOCKS5 reply cut short: {c.conn.buf!r}")
            return c, None
        except socket.timeout:
            raise CaseFail(f"no SOCKS5 reply and no close within {c.conn.timeout}s")
        check(head[0] == 5 and head[2] == 0, f"bad SOCKS5 reply head {head!r}")
        alen = {1: 4, 4: 16}.get(head[3])
        if head[3] == 3:
            alen = c.conn.read_exact(1)[0]
        check(alen is not None, f"bad address type in the SOCKS5 reply {head!r}")
        c.conn.read_exact(alen + 2)
        return c, head[1]
    except BaseException:
        c.close()
        raise


# --------------------------------------------------------------------------- per-case context

class Ctx:
    """What a case function receives."""

    def __init__(self, binary, tmpdir, origin, origin2, echo, proxy=None, plugin_paths=None):
        self.bin = binary
        self.tmp = Path(tmpdir)
        self.origin = origin
        self.origin2 = origin2
        self.echo = echo
        self.proxy = proxy
        self.plugin_paths = plugin_paths or {}

    # convenience ----------------------------------------------------------
    def url(self, path="/echo", origin=None):
        return f"http://127.0.0.1:{(origin or self.origin).port}{path}"

    def curl(self, path="/echo", *args, **kw):
        return curl(self.proxy.addr, self.url(path), *args, **kw)

    def curl_socks5(self, path="/echo", *args, via="--socks5", url=None, **kw):
        """curl with the proxy as its SOCKS5 proxy: `via` is the curl option naming it
        (--socks5, --socks5-hostname), or the start of a -x proxy URL before the
        address ("socks5h://", "socks5h://user:pass@"); `url` overrides the origin URL."""
        opts = [via, self.proxy.addr] if via.startswith("--") else ["-x", via + self.proxy.addr]
        return curl(None, url or self.url(path), *opts, *args, **kw)

    def raw(self):
        return RawClient(self.proxy.port)

    def write(self, name, text) -> Path:
        p = self.tmp / name
        p.write_text(text)
        return p

    def require_layer(self, flag, layer):
        """PENDING unless `luring run --help` lists `flag` (the layer's own option)."""
        rc, out = run_cli(self.bin, ["run", "--help"])
        if flag not in out:
            raise Pending(f"layer not built: {layer}")

    def check_cli(self, *files, timeout=15):
        return run_cli(self.bin, ["check", *map(str, files)], timeout)

    def start_proxy(self, args, timeout=PROXY_START_TIMEOUT):
        """An extra proxy owned by the case (stopped by the runner)."""
        p = Proxy(self.bin, args, timeout)
        self.extra_proxies.append(p)
        return p

    extra_proxies: list

    def origin_requests(self, n=None, timeout=2.0, origin=None):
        """Wait (bounded) for the origin to have recorded n requests; return them."""
        o = origin or self.origin
        deadline = time.monotonic() + timeout
        while True:
            reqs, _ = o.snapshot()
            if n is None or len(reqs) >= n or time.monotonic() >= deadline:
                return reqs
            time.sleep(0.02)

    def one_request(self, origin=None):
        reqs = self.origin_requests(1, origin=origin)
        eq(len(reqs), 1, "requests received by the origin")
        return reqs[0]

    def template(self, text: str) -> str:
        return (text.replace("@ORIGIN_PORT@", str(self.origin.port))
                .replace("@ORIGIN2_PORT@", str(self.origin2.port))
                .replace("@ECHO_PORT@", str(self.echo.port)))


# --------------------------------------------------------------------------- the surface

# (protocol, event, kind, layer) for the 17 rows of spec section 2, in table order.
ROWS = [
    ("http", "on_request", "pipeline", "http"),
    ("http", "on_response", "pipeline", "http"),
    ("ws", "on_upgrade", "pipeline", "ws"),
    ("ws", "on_message", "pipeline", "ws"),
    ("ws", "on_close", "lifecycle", "ws"),
    ("grpc", "on_start", "pipeline", "grpc"),
    ("grpc", "on_data", "pipeline", "grpc"),
    ("grpc", "on_end", "lifecycle", "grpc"),
    ("grpc-web", "on_start", "pipeline", "grpc-web"),
    ("grpc-web", "on_data", "pipeline", "grpc-web"),
    ("grpc-web", "on_end", "lifecycle", "grpc-web"),
    ("sse", "on_event", "pipeline", "sse"),
    ("raw", "on_chunk", "pipeline", "raw"),
    ("tls", "on_handshake", "lifecycle", "tls"),
    ("connection", "on_connect", "lifecycle", "connection"),
    ("connection", "on_disconnect", "lifecycle", "connection"),
    ("socks5", "on_connect", "lifecycle", "socks5"),
]

# Layers the proxy does not have yet: their rows are PENDING (registration is still checked).
# The grpc rows are proven in cases/grpc.py, the grpc-web rows in cases/grpc_web.py.
LAYERS_NOT_BUILT: set = set()


def settle(seconds=0.4):
    """Give the proxy a moment to emit log lines that must NOT appear (bounded)."""
    time.sleep(seconds)


# --------------------------------------------------------------------------- TLS test PKI

ORIGIN_CN = "luring-conf-origin"


def make_pki(tmp):
    """A CA and a server certificate for localhost/127.0.0.1; returns (ca, cert, key)."""
    if shutil.which("openssl") is None:
        raise Pending("openssl command line not found")
    ca_key, ca, key, csr, cert, ext = (str(tmp / n) for n in
                                       ("ca.key", "ca.pem", "srv.key", "srv.csr", "srv.pem", "ext.cnf"))
    (tmp / "ext.cnf").write_text("basicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature\n"
                                 "extendedKeyUsage=serverAuth\nsubjectAltName=DNS:localhost,IP:127.0.0.1\n")
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes"]
    for args in (["req", "-x509", *ec, "-keyout", ca_key, "-out", ca, "-days", "30",
                  "-subj", "/CN=luring conf CA", "-addext", "basicConstraints=critical,CA:TRUE",
                  "-addext", "keyUsage=critical,keyCertSign,cRLSign"],
                 ["req", "-new", *ec, "-keyout", key, "-out", csr, "-subj", f"/CN={ORIGIN_CN}"],
                 ["x509", "-req", "-in", csr, "-CA", ca, "-CAkey", ca_key, "-CAcreateserial",
                  "-out", cert, "-days", "30", "-extfile", ext]):
        p = subprocess.run(["openssl", *args], capture_output=True, timeout=30, stdin=subprocess.DEVNULL)
        check(p.returncode == 0, f"openssl {args[0]} failed: {p.stderr.decode(errors='replace')}")
    return ca, cert, key
