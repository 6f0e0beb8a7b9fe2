"""The WebSocket layer (ws.on_upgrade, ws.on_message, ws.on_close; spec sections 2-4).

A request with `Connection: upgrade` + `Upgrade: websocket` runs, in each phase,
http.on_request then ws.on_upgrade (an HTTPMessage request: CONTINUE, DROP, RESPOND),
around the pipeline steps.  When a ws.on_message hook exists, Sec-WebSocket-Extensions
is removed from the handshake (no permessage-deflate: payloads are plain).  After the
101, when ws.on_message or ws.on_close hooks exist, frames are decoded both ways: each
data message (fragments joined, re-sent as one frame, client frames re-masked with the
first fragment's key) and each control frame runs the ws.on_message chains (pre, then
post) with a WSMessage; ws.on_close (frozen dict, every hook runs) fires once both
directions ended, with the first close frame seen, or 1006 without one.  After both close
frames went through, luring closes both connections.  A hook's `msg:close(code, reason)`
ends the WebSocket: the message is not passed on, its destination gets a close frame with
that code and reason, its sender gets the same when the other peer answers, then luring
closes both connections (code 1000 by default; a bad code or a reason over 123 bytes is a
hook error; the first call wins).  Without ws.on_message/on_close hooks an upgraded
connection is relayed as raw bytes (raw.on_chunk).

Clients and origins:
  * the python `websockets` library (sync API): `connect(..., proxy="http://PROXY")`
    (it tunnels with CONNECT; luring serves the HTTP inside), direct connections to a
    `--mode reverse:` proxy, and wss:// through an intercepted CONNECT tunnel; `LibOrigin`
    is a `websockets` server (echo, or per query: `?close=CODE&reason=R` closes after the
    first message, `?ping=DATA` pings the client before each echo);
  * raw sockets speaking RFC 6455 where the library hides what is asserted (fragments,
    masking keys, frames as received, a close without a code, TCP drops, protocol
    errors): `RawWsOrigin` records the handshake and every frame it receives, and
    `raw_open` sends an absolute-form upgrade to the forward proxy.
Hooks report what they saw through `CONF-WS` log lines (payloads and reasons in hex).
The cases are PENDING without `websockets` (version 15 or later: proxy support).
"""

import base64
import hashlib
import logging
import os
import re
import socket
import ssl
import struct
import threading
import time
import urllib.parse
from collections import namedtuple

from harness import (Conn, Pending, RawClient, case, check, eq, hget, hget_all, make_pki,
                     parse_head_lines, run_cli, settle)

try:
    import websockets
    from websockets.exceptions import ConnectionClosed, InvalidStatus
    from websockets.sync.client import connect as _ws_connect
    from websockets.sync.server import serve as _ws_serve
    _WS_MAJOR = int(websockets.__version__.split(".")[0])
except ImportError:                       # the cases are PENDING
    websockets = None
    _WS_MAJOR = 0

    class ConnectionClosed(Exception):
        pass

    class InvalidStatus(Exception):
        pass

IO = 5.0                                   # every wait below is bounded by this (or less)
# Raw peers answer a close frame after this pause (0: at once, the case that once lost
# the second close frame when luring closed a socket it was still writing to).
CLOSE_ECHO_DELAY = float(os.environ.get("CONF_WS_CLOSE_ECHO_DELAY", "0"))
QUIET = logging.getLogger("conformance.ws.quiet")   # the library's tracebacks stay out of the run
QUIET.addHandler(logging.NullHandler())
QUIET.propagate = False

TEXT, BINARY, CLOSE, PING, PONG, CONT = 1, 2, 8, 9, 10, 0
GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"


def need_ws():
    if websockets is None:
        raise Pending("python websockets not installed")
    if _WS_MAJOR < 15:
        raise Pending(f"python websockets {websockets.__version__} has no proxy support (15+)")


def accept_of(key):
    return base64.b64encode(hashlib.sha1((key + GUID).encode()).digest()).decode()


def close_payload(code, reason=b""):
    return struct.pack(">H", code) + reason


# --------------------------------------------------------------------------- frames

Frame = namedtuple("Frame", "fin rsv1 opcode mask payload")


def encode_frame(opcode, payload=b"", fin=True, mask=None, rsv1=False):
    """RFC 6455 section 5.2; `mask` is the 4-byte key of a client frame."""
    b0 = (0x80 if fin else 0) | (0x40 if rsv1 else 0) | opcode
    mbit = 0x80 if mask else 0
    n = len(payload)
    if n < 126:
        head = struct.pack(">BB", b0, mbit | n)
    elif n < 65536:
        head = struct.pack(">BBH", b0, mbit | 126, n)
    else:
        head = struct.pack(">BBQ", b0, mbit | 127, n)
    if mask:
        return head + mask + bytes(b ^ mask[i & 3] for i, b in enumerate(payload))
    return head + payload


def read_frame(conn: Conn):
    """One frame off a Conn (payload unmasked); ConnectionError on EOF, socket.timeout."""
    b0, b1 = conn.read_exact(2)
    n = b1 & 0x7f
    if n == 126:
        n = struct.unpack(">H", conn.read_exact(2))[0]
    elif n == 127:
        n = struct.unpack(">Q", conn.read_exact(8))[0]
    mask = conn.read_exact(4) if b1 & 0x80 else None
    payload = conn.read_exact(n)
    if mask:
        payload = bytes(b ^ mask[i & 3] for i, b in enumerate(payload))
    return Frame(bool(b0 & 0x80), bool(b0 & 0x40), b0 & 0x0f, mask, payload)


def short(frames):
    """(opcode, fin, masked, payload) of frames: what a comparison needs."""
    return [(f.opcode, f.fin, f.mask is not None, f.payload) for f in frames]


# --------------------------------------------------------------------------- Lua

PRELUDE = r"""
local function hex(s)
  if s == nil then return "nil" end
  return "<" .. (tostring(s):gsub(".", function(c) return string.format("%02x", c:byte()) end)) .. ">"
end
local function ws_log(tag, m)
  local p = m.payload
  log.info(string.format(
    "CONF-WS %s op=%s fin=%s masked=%s from_client=%s compressed=%s code=%s(%s) reason=%s len=%s(%s) payload=%s",
    tag, tostring(m.opcode), tostring(m.fin), tostring(m.masked), tostring(m.from_client),
    tostring(m.compressed), tostring(m.close_code), type(m.close_code), hex(m.close_reason),
    tostring(p and #p), type(p), (p ~= nil and #p > 300) and "<long>" or hex(p)))
end
"""
LOG_RE = re.compile(r"CONF-WS (\S+) op=(\S+) fin=(\S+) masked=(\S+) from_client=(\S+) compressed=(\S+) "
                    r"code=(\S+)\((\w+)\) reason=(\S+) len=(\S+)\((\w+)\) payload=(\S+)")
Call = namedtuple("Call", "tag op fin masked from_client compressed code reason len payload")


def _val(s):
    return {"true": True, "false": False, "nil": None}.get(s, s)


def _hex(s):
    if s == "nil":
        return None
    if s == "<long>":
        return "<long>"
    return bytes.fromhex(s[1:-1])


def calls(proxy, tag=None):
    """Every ws_log line so far, in log order (optionally of one tag)."""
    out = []
    for ln in proxy.lines():
        m = LOG_RE.search(ln)
        if not m or (tag is not None and m.group(1) != tag):
            continue
        g = m.groups()
        code = None if g[6] == "nil" else int(g[6])
        check(code is None or g[7] == "number", f"type(close_code) is {g[7]}: {ln!r}")
        check(g[10] == "string", f"type(payload) is {g[10]}: {ln!r}")
        out.append(Call(g[0], int(g[1]), _val(g[2]), _val(g[3]), _val(g[4]), _val(g[5]), code,
                        _hex(g[8]), int(g[9]), _hex(g[11])))
    return out


def wait_calls(proxy, tag, n, timeout=IO):
    """The calls of `tag` once there are n (bounded), after a settle so that extra calls show."""
    proxy.wait_log(rf"CONF-WS {re.escape(tag)} ", timeout=timeout, count=n)
    settle(0.3)
    return calls(proxy, tag)


def brief(cs):
    """(op, from_client, payload) of calls."""
    return [(c.op, c.from_client, c.payload) for c in cs]


def demotion_logged_once(t, stem, action):
    """Exactly one stderr line names the plugin and the demoted action (and the row)."""
    pattern = rf"{stem}.*\b{action}\b|\b{action}\b.*{stem}"
    t.proxy.expect_log(pattern, what=f"demotion of {action} from {stem}")
    settle(0.4)
    lines = t.proxy.find(pattern)
    eq(len(lines), 1, f"log lines about the demoted {action} of {stem} ({lines})")
    check("ws.on_message" in lines[0] or "ws.on_close" in lines[0],
          f"the demotion line does not name the ws row: {lines[0]!r}")


# --------------------------------------------------------------------------- origins

class _CountingSocket(socket.socket):
    """A listening socket that counts the TCP connections it accepts."""
    accepted = 0

    def accept(self):
        conn, addr = super().accept()
        self.accepted += 1
        return conn, addr


class LibOrigin:
    """A `websockets` server on 127.0.0.1:0 (its own thread).  Per connection it records
    the handshake (path, headers in wire order), the messages received, the close frame
    received (code, reason) and the pings it sent (True: the pong came)."""

    def __init__(self, ssl_context=None, compression="deflate"):
        need_ws()
        self.lock = threading.Lock()
        self.conns = []
        sock = _CountingSocket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", 0))
        sock.listen(32)
        self.tcp = sock
        self.port = sock.getsockname()[1]
        self.server = _ws_serve(self._handler, sock=sock, ssl=ssl_context, compression=compression,
                                open_timeout=IO, close_timeout=2, ping_interval=None, logger=QUIET)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    @property
    def accepted(self):
        return self.tcp.accepted

    def url(self, path="/", scheme="ws", host="127.0.0.1"):
        return f"{scheme}://{host}:{self.port}{path}"

    def stop(self):
        th = threading.Thread(target=self.server.shutdown, daemon=True)   # bounded: it waits
        th.start()                                                         # for the handlers
        th.join(4)

    def wait_conns(self, n=1, timeout=IO, done=True):
        """The connection records once n exist (and, done=True, their handlers finished)."""
        deadline = time.monotonic() + timeout
        while True:
            with self.lock:
                cs = list(self.conns)
            ready = len(cs) >= n and (not done or all(c["done"].is_set() for c in cs[:n]))
            if ready or time.monotonic() >= deadline:
                return cs
            time.sleep(0.02)

    def one(self, timeout=IO):
        cs = self.wait_conns(1, timeout)
        eq(len(cs), 1, "WebSocket connections at the origin")
        check(cs[0]["done"].is_set(), f"the origin's connection handler did not finish within {timeout}s")
        return cs[0]

    def _handler(self, ws):
        req = ws.request
        q = urllib.parse.parse_qs(urllib.parse.urlsplit(req.path).query)
        rec = {"path": req.path, "headers": list(req.headers.raw_items()), "messages": [],
               "close_rcvd": None, "pongs": [], "done": threading.Event(),
               "extensions": ws.response.headers.get("Sec-WebSocket-Extensions")}
        with self.lock:
            self.conns.append(rec)
        try:
            for _ in range(1000):
                try:
                    m = ws.recv(timeout=15)
                except TimeoutError:
                    break
                rec["messages"].append(m)
                if "close" in q:
                    ws.close(int(q["close"][0]), q.get("reason", [""])[0])
                    break
                if "ping" in q:
                    rec["pongs"].append(ws.ping(q["ping"][0].encode()).wait(IO))
                ws.send(m)
        except ConnectionClosed:
            pass
        finally:
            r = ws.protocol.close_rcvd
            rec["close_rcvd"] = (r.code, r.reason) if r else None
            rec["done"].set()


class RawWsOrigin:
    """An RFC 6455 origin on raw sockets (127.0.0.1:0).  It counts TCP connections,
    records each handshake (method, target, headers) and every frame it receives as it
    came (fin, rsv1, opcode, masking key, unmasked payload), answers 101, then by path:
      default  echo: a data frame comes back as one unmasked frame, a ping gets a pong
               with its payload, a close is echoed, then it waits for the proxy to close
               (`end`: "eof after close", or "no eof after close" after 5 s);
      /push    sends a fragmented text ("SRV-", a ping "sp", "FRAG", "MENTS") in the
               same write as the 101, then echoes;
      /drop    drops the TCP connection (no close frame) on the first data frame;
      /close-first  answers the first data frame with a close (4002, "raw-bye"), then
               waits for its echo and for the proxy to close.
A close frame is echoed after CLOSE_ECHO_DELAY.
    `end` is also "eof without close" when the peer went away without a close frame."""

    def __init__(self):
        self.lock = threading.Lock()
        self.conns = []
        self.accepted = 0
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(32)
        self.sock.settimeout(0.5)
        self.port = self.sock.getsockname()[1]
        self.stopping = False
        threading.Thread(target=self._accept, daemon=True).start()

    def url(self, path="/"):
        return f"http://127.0.0.1:{self.port}{path}"

    def stop(self):
        self.stopping = True
        try:
            self.sock.close()
        except OSError:
            pass

    def wait_done(self, n=1, timeout=IO):
        deadline = time.monotonic() + timeout
        while True:
            with self.lock:
                cs = list(self.conns)
            if (len(cs) >= n and all(c["done"].is_set() for c in cs[:n])) or time.monotonic() >= deadline:
                return cs
            time.sleep(0.02)

    def one(self, timeout=IO):
        cs = self.wait_done(1, timeout)
        eq(len(cs), 1, "WebSocket connections at the raw origin")
        check(cs[0]["done"].is_set(), f"the raw origin's connection did not end within {timeout}s")
        return cs[0]

    def _accept(self):
        while not self.stopping:
            try:
                s, _ = self.sock.accept()
            except socket.timeout:
                continue
            except OSError:
                return
            with self.lock:
                self.accepted += 1
            threading.Thread(target=self._serve, args=(s,), daemon=True).start()

    def _serve(self, s):
        rec = {"method": None, "target": None, "headers": [], "frames": [], "end": None,
               "done": threading.Event()}
        c = Conn(s, timeout=15)
        try:
            head = c.read_head()
            if head is None:
                rec["end"] = "no request"
                return
            lines = head.decode("latin-1").split("\r\n")
            rec["method"], rec["target"] = lines[0].split(" ")[:2]
            rec["headers"] = parse_head_lines(lines[1:])
            with self.lock:
                self.conns.append(rec)
            key = hget(rec["headers"], "sec-websocket-key") or ""
            path = urllib.parse.urlsplit(rec["target"]).path
            push = b""
            if path == "/push":             # in the same write as the 101
                push = (encode_frame(TEXT, b"SRV-", fin=False) + encode_frame(PING, b"sp")
                        + encode_frame(CONT, b"FRAG", fin=False) + encode_frame(CONT, b"MENTS"))
            s.sendall(("HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                       f"Sec-WebSocket-Accept: {accept_of(key)}\r\n\r\n").encode() + push)
            for _ in range(10000):
                try:
                    f = read_frame(c)
                except ConnectionError:
                    rec["end"] = "eof without close"
                    return
                rec["frames"].append(f)
                if f.opcode in (TEXT, BINARY, CONT) and path == "/drop":
                    rec["end"] = "dropped"
                    return
                if f.opcode in (TEXT, BINARY) and path == "/close-first":
                    s.sendall(encode_frame(CLOSE, close_payload(4002, b"raw-bye")))
                elif f.opcode == PING:
                    s.sendall(encode_frame(PONG, f.payload))
                elif f.opcode in (TEXT, BINARY):
                    s.sendall(encode_frame(f.opcode, f.payload))
                elif f.opcode == CLOSE:
                    if path != "/close-first":          # else this is the echo of its close
                        time.sleep(CLOSE_ECHO_DELAY)
                        s.sendall(encode_frame(CLOSE, f.payload))
                    c.sock.settimeout(IO)
                    try:
                        rest = c.read_to_eof()
                        rec["end"] = "eof after close" if not rest else f"bytes after close {rest[:50]!r}"
                    except socket.timeout:
                        rec["end"] = "no eof after close"
                    return
        except (OSError, ValueError) as e:
            rec["end"] = rec["end"] or f"error {type(e).__name__}: {e}"
        finally:
            try:
                s.close()
            except OSError:
                pass
            rec["done"].set()


# --------------------------------------------------------------------------- clients

def lib_connect(url, proxy=None, **kw):
    """A `websockets` client: through `proxy` (host:port, CONNECT) or direct."""
    need_ws()
    return _ws_connect(url, proxy=f"http://{proxy}" if proxy else None, open_timeout=IO,
                       close_timeout=IO, ping_interval=None, logger=QUIET, **kw)


def upgrade_request(target, host, extra=(), key=None, connection="Upgrade"):
    key = key or base64.b64encode(os.urandom(16)).decode()
    lines = [f"GET {target} HTTP/1.1", f"Host: {host}", f"Connection: {connection}", "Upgrade: websocket",
             "Sec-WebSocket-Version: 13", f"Sec-WebSocket-Key: {key}"]
    lines += [f"{k}: {v}" for k, v in extra]
    return ("\r\n".join(lines) + "\r\n\r\n").encode(), key


def raw_open(proxy_port, origin_port, path="/", extra=(), connection="Upgrade", expect=101):
    """A raw client: an absolute-form upgrade to the forward proxy.  With expect=101 the
    handshake must succeed (accept key checked); returns (client, status, headers, body)."""
    c = RawClient(proxy_port)
    try:
        req, key = upgrade_request(f"http://127.0.0.1:{origin_port}{path}", f"127.0.0.1:{origin_port}",
                                   extra, connection=connection)
        c.send(req)
        if expect is None:
            return c, None, [], b""
        status, _r, headers, body, _t = c.read_response(head_only=(expect == 101))
        if expect == 101:
            eq(status, 101, "status of the upgrade at the client")
            eq(hget(headers, "sec-websocket-accept"), accept_of(key), "Sec-WebSocket-Accept at the client")
            eq((hget(headers, "upgrade") or "").lower(), "websocket", "Upgrade header of the 101")
        return c, status, headers, body
    except BaseException:
        c.close()
        raise


MASKS = [b"\x11\x22\x33\x44", b"\xa1\xb2\xc3\xd4", b"\x05\x06\x07\x08", b"\xf0\x0f\xf0\x0f",
         b"\x99\x88\x77\x66", b"\x01\x01\x01\x01"]


def send(c, opcode, payload=b"", fin=True, mask=MASKS[0]):
    c.send(encode_frame(opcode, payload, fin=fin, mask=mask))


def recv(c, timeout=IO):
    c.sock.settimeout(timeout)
    try:
        return read_frame(c.conn)
    except socket.timeout:
        raise AssertionError(f"no frame from the proxy within {timeout}s")


def closed_by_proxy(c, what):
    data, closed = c.read_until_closed(timeout=IO)
    check(closed, f"{what}: the proxy did not close the client connection within {IO}s")
    eq(data, b"", f"{what}: bytes the client got before the close")


# --------------------------------------------------------------------------- the rows

ROW_UPGRADE = PRELUDE + """
register_hook("ws", "on_upgrade", function(msg, ctx)
  log.info(string.format("CONF-WS-UP method=%s path=%s version=%s upgrade=%s key=%s conn=%s",
    msg.method, tostring(msg.path), tostring(msg.http_version), tostring(msg.headers:get("upgrade")),
    tostring(msg.headers:get("sec-websocket-key") ~= nil), tostring(ctx.conn_id)))
  msg.headers:set("x-ws-upgrade", "seen " .. msg.path)
  msg.headers:remove("user-agent")
  msg.path = "/rewritten" .. msg.path
end)
"""


@case("row ws.on_upgrade", plugins={"row_ws_upgrade.lua": ROW_UPGRADE})
def _row_upgrade(t):
    o = LibOrigin()
    try:
        with lib_connect(o.url("/chat?room=1"), proxy=t.proxy.addr) as ws:
            ws.send("after the upgrade")
            eq(ws.recv(timeout=IO), "after the upgrade", "echo through the upgraded connection")
        rec = o.one()
    finally:
        o.stop()
    eq(rec["path"], "/rewritten/chat?room=1", "path at the origin (msg.path assigned by the hook)")
    eq(hget_all(rec["headers"], "x-ws-upgrade"), ["seen /chat?room=1"], "x-ws-upgrade at the origin")
    eq(hget_all(rec["headers"], "user-agent"), [], "user-agent at the origin (removed by the hook)")
    eq(rec["messages"], ["after the upgrade"], "messages at the origin")
    lines = t.proxy.expect_log(r"CONF-WS-UP ", what="ws.on_upgrade log line")
    eq(len(lines), 1, f"ws.on_upgrade calls for one handshake ({lines})")
    m = re.search(r"method=(\S+) path=(\S+) version=(\S+) upgrade=(\S+) key=(\S+) conn=(\S+)", lines[0])
    check(m, f"unparsable line {lines[0]!r}")
    eq(m.groups()[:5], ("GET", "/chat?room=1", "HTTP/1.1", "websocket", "true"),
       "(method, path, http_version, upgrade, has sec-websocket-key) given to the hook")
    check(m.group(6) != "nil", "ctx.conn_id is nil")
    r = t.curl("/echo")                                       # a plain request: no ws.on_upgrade
    eq(r.status, 200, f"status of a plain request (curl: {r.err})")
    eq(t.one_request()["target"], "/echo", "target of the plain request at the HTTP origin")
    settle(0.3)
    eq(len(t.proxy.find(r"CONF-WS-UP ")), 1, "ws.on_upgrade calls after a plain (not upgrade) request")


ROW_MESSAGE = PRELUDE + """
register_hook("ws", "on_message", function(msg, ctx)
  ws_log("row", msg)
  if msg.opcode == 1 then
    if msg.from_client then
      msg.payload = string.upper(msg.payload)           -- client -> server: upper case
    else
      msg.payload = "[" .. msg.payload .. "]"           -- server -> client: brackets
    end
  end
end)
"""


@case("row ws.on_message", plugins={"row_ws_message.lua": ROW_MESSAGE})
def _row_message(t):
    o = LibOrigin()
    try:
        with lib_connect(o.url("/row"), proxy=t.proxy.addr) as ws:     # offers permessage-deflate
            ext = ws.response.headers.get("Sec-WebSocket-Extensions")
            ws.send("hello")
            eq(ws.recv(timeout=IO), "[HELLO]", "echo at the client (upper-cased going up, bracketed coming down)")
            ws.send("second one")
            eq(ws.recv(timeout=IO), "[SECOND ONE]", "second echo at the client")
        rec = o.one()
    finally:
        o.stop()
    eq(rec["messages"], ["HELLO", "SECOND ONE"], "messages at the origin")
    eq(hget_all(rec["headers"], "sec-websocket-extensions"), [],
       "Sec-WebSocket-Extensions at the origin (the client offered permessage-deflate)")
    eq((ext, rec["extensions"]), (None, None), "negotiated extensions (client, origin)")
    cs = [c for c in wait_calls(t.proxy, "row", 6) if c.op in (TEXT, BINARY)]
    eq([(c.op, c.fin, c.masked, c.from_client, c.compressed, c.code, c.reason, c.payload) for c in cs],
       [(TEXT, True, True, True, False, None, None, b"hello"),
        (TEXT, True, False, False, False, None, None, b"HELLO"),
        (TEXT, True, True, True, False, None, None, b"second one"),
        (TEXT, True, False, False, False, None, None, b"SECOND ONE")],
       "(opcode, fin, masked, from_client, compressed, close_code, close_reason, payload) of the data messages")


ROW_CLOSE = PRELUDE + """
register_hook("ws", "on_close", function(msg, ctx)
  ws_log("close", msg)
  log.info("CONF-WS-CLOSE-CTX conn=" .. tostring(ctx.conn_id))
end)
register_hook("ws", "on_upgrade", function(msg, ctx)
  log.info("CONF-WS-UP-CTX conn=" .. tostring(ctx.conn_id))
end)
"""


@case("row ws.on_close", plugins={"row_ws_close.lua": ROW_CLOSE})
def _row_close(t):
    o = LibOrigin()
    try:
        ws = lib_connect(o.url("/bye"), proxy=t.proxy.addr)
        with ws:
            ws.send("last words")
            eq(ws.recv(timeout=IO), "last words", "echo at the client")
            ws.close(4000, "bye")
        eq((ws.close_code, ws.close_reason), (4000, "bye"), "the origin's close reply at the client")
        rec = o.one()
    finally:
        o.stop()
    eq(rec["close_rcvd"], (4000, "bye"), "close frame at the origin")
    cs = wait_calls(t.proxy, "close", 1)
    eq(len(cs), 1, f"ws.on_close calls for one connection ({cs})")
    c = cs[0]
    eq((c.op, c.fin, c.masked, c.compressed, c.code, c.reason, c.payload),
       (CLOSE, True, True, False, 4000, b"bye", close_payload(4000, b"bye")),
       "(opcode, fin, masked, compressed, close_code, close_reason, payload) given to ws.on_close")
    eq(c.from_client, None, "from_client in the close dict (not a field of it)")
    up = t.proxy.expect_log(r"CONF-WS-UP-CTX ")[0].split("conn=")[1].split()[0]
    down = t.proxy.expect_log(r"CONF-WS-CLOSE-CTX ")[0].split("conn=")[1].split()[0]
    eq(down, up, "ctx.conn_id in ws.on_close vs in ws.on_upgrade")


# --------------------------------------------------------------------------- on_upgrade

UPGRADE_ACTIONS = """
register_hook("http", "on_request", function(msg, ctx)
  if msg.method ~= "CONNECT" then log.info("CONF-WS-ACT http-pre " .. msg.path) end
end)
register_hook("ws", "on_upgrade", function(msg, ctx)
  log.info("CONF-WS-ACT ws-pre " .. msg.path)
  if msg.path:find("drop") then return action.DROP end
  if msg.path:find("respond") then
    return action.RESPOND{ status = 403, headers = { {"content-type", "text/plain"}, {"x-denied", "by-plugin"} },
                           body = "no websocket for you" }
  end
end)
register_hook("ws", "on_upgrade", function(msg, ctx)
  log.info("CONF-WS-ACT ws-pre-after " .. msg.path)      -- skipped after DROP/RESPOND
end)
register_hook("ws", "on_upgrade", function(msg, ctx)
  log.info("CONF-WS-ACT ws-post " .. msg.path)           -- later phase: skipped too
end, { phase = "post_pipeline" })
register_hook("ws", "on_message", function(msg, ctx) end)
"""


def act_lines(t):
    return [ln.split("CONF-WS-ACT ")[1].split(" plugin=")[0] for ln in t.proxy.find(r"CONF-WS-ACT ")]


@case("ws.on_upgrade DROP: client connection closed, upstream never contacted",
      plugins={"ws_up_drop.lua": UPGRADE_ACTIONS})
def _upgrade_drop(t):
    o = LibOrigin()
    try:
        c, *_ = raw_open(t.proxy.port, o.port, "/drop-raw", expect=None)    # forward proxy, raw
        try:
            closed_by_proxy(c, "DROP (forward proxy)")
        finally:
            c.close()
        eq(o.accepted, 0, "TCP connections at the origin after a DROPped forward upgrade")
        try:                                                                 # websockets, CONNECT
            with lib_connect(o.url("/drop-lib"), proxy=t.proxy.addr):
                raise AssertionError("the websockets client upgraded although ws.on_upgrade DROPped")
        except InvalidStatus as e:
            raise AssertionError(f"the client got an HTTP response to a DROPped upgrade: {e}")
        except TimeoutError:
            raise AssertionError(f"the connection of a DROPped upgrade was not closed within {IO}s")
        except (websockets.exceptions.InvalidHandshake, ConnectionError, EOFError, OSError):
            pass                                                  # closed without a response
        settle(0.3)
        eq(o.wait_conns(0, done=False), [], "WebSocket handshakes at the origin")
        eq(act_lines(t), ["http-pre /drop-raw", "ws-pre /drop-raw", "http-pre /drop-lib", "ws-pre /drop-lib"],
           "hooks that ran (in order) for the two DROPped upgrades")
        with lib_connect(o.url("/ok"), proxy=t.proxy.addr) as ws:           # the chain is live
            ws.send("fine")
            eq(ws.recv(timeout=IO), "fine", "echo of an upgrade the hook let through")
        eq(o.one()["path"], "/ok", "path of the accepted upgrade at the origin")
    finally:
        o.stop()
    t.proxy.wait_log(r"CONF-WS-ACT ws-post /ok")
    eq(act_lines(t)[4:], ["http-pre /ok", "ws-pre /ok", "ws-pre-after /ok", "ws-post /ok"],
       "hooks that ran for an upgrade that was not dropped")


@case("ws.on_upgrade RESPOND: the client gets the response instead of the upgrade",
      plugins={"ws_up_respond.lua": UPGRADE_ACTIONS})
def _upgrade_respond(t):
    o = LibOrigin()
    try:
        c, status, headers, body = raw_open(t.proxy.port, o.port, "/respond-raw", expect=403)
        c.close()
        eq((status, body), (403, b"no websocket for you"), "(status, body) at the raw client")
        eq(hget(headers, "x-denied"), "by-plugin", "x-denied at the raw client")
        eq(hget(headers, "upgrade"), None, "Upgrade header in the RESPOND answer")
        eq(hget(headers, "sec-websocket-accept"), None, "Sec-WebSocket-Accept in the RESPOND answer")
        eq(o.accepted, 0, "TCP connections at the origin after a RESPONDed forward upgrade")
        try:
            with lib_connect(o.url("/respond-lib"), proxy=t.proxy.addr):
                raise AssertionError("the websockets client upgraded although ws.on_upgrade RESPONDed")
        except InvalidStatus as e:
            r = e.response
            eq((r.status_code, r.body), (403, b"no websocket for you"), "(status, body) at the websockets client")
            eq(r.headers.get("x-denied"), "by-plugin", "x-denied at the websockets client")
        settle(0.3)
        eq(o.wait_conns(0, done=False), [], "WebSocket handshakes at the origin")
    finally:
        o.stop()
    eq(act_lines(t), ["http-pre /respond-raw", "ws-pre /respond-raw", "http-pre /respond-lib", "ws-pre /respond-lib"],
       "hooks that ran (in order) for the two RESPONDed upgrades")


# post_pipeline hooks registered first: phases order the hooks, not registration
UPGRADE_PHASES = """
local function mark(tag)
  return function(msg, ctx)
    msg.headers:set("x-" .. tag .. "-saw-step", tostring(msg.headers:get("x-step")))
    msg.headers:add("x-trace", tag)
  end
end
register_hook("ws", "on_upgrade", mark("ws-post"), { phase = "post_pipeline" })
register_hook("http", "on_request", mark("http-post"), { phase = "post_pipeline" })
register_hook("ws", "on_upgrade", mark("ws-pre"))
register_hook("http", "on_request", mark("http-pre"), { phase = "pre_pipeline" })
register_hook("ws", "on_upgrade", function(msg, ctx)
  msg.headers:set("x-step2", "0")       -- the step overwrites it
end)
register_hook("ws", "on_upgrade", function(msg, ctx)
  msg.headers:remove("x-step3")         -- removes what the step added: final
end, { phase = "post_pipeline" })
register_hook("ws", "on_message", function(msg, ctx) end)
"""


@case("ws.on_upgrade phases: http.on_request then ws.on_upgrade, pre and post around --set-request-header",
      plugins={"ws_up_phases.lua": UPGRADE_PHASES},
      flags=["--set-request-header", "x-step=1", "--set-request-header", "x-step2=2",
             "--set-request-header", "x-step3=3"])
def _upgrade_phases(t):
    o = LibOrigin()
    try:
        c, *_ = raw_open(t.proxy.port, o.port, "/phases")
        try:
            send(c, TEXT, b"ping-through")
            f = recv(c)
            eq((f.opcode, f.payload, f.mask), (TEXT, b"ping-through", None), "echo at the raw client")
        finally:
            c.close()
        h = o.one()["headers"]
    finally:
        o.stop()
    eq(hget_all(h, "x-trace"), ["http-pre", "ws-pre", "http-post", "ws-post"],
       "hook order at the origin (x-trace): each phase runs http.on_request then ws.on_upgrade")
    eq(hget_all(h, "x-step"), ["1"], "x-step (set by the pipeline step) at the origin")
    eq([hget(h, f"x-{tag}-saw-step") for tag in ("http-pre", "ws-pre", "http-post", "ws-post")],
       ["nil", "nil", "1", "1"], "x-step as seen by http-pre, ws-pre, http-post, ws-post")
    eq(hget_all(h, "x-step2"), ["2"], "x-step2 at the origin (the step ran after the pre hook)")
    eq(hget_all(h, "x-step3"), [], "x-step3 at the origin (removed by the post hook)")
    eq((hget(h, "connection") or "").lower(), "upgrade", "Connection at the origin")
    eq((hget(h, "upgrade") or "").lower(), "websocket", "Upgrade at the origin")


@case("ws.on_upgrade forward proxy (absolute-form, raw client): path rewrite, Connection: keep-alive, Upgrade",
      plugins={"ws_up_forward.lua": """
register_hook("ws", "on_upgrade", function(msg, ctx)
  log.info("CONF-WS-FWD path=" .. tostring(msg.path) .. " authority=" .. tostring(msg.authority)
    .. " ext=" .. tostring(msg.headers:get("sec-websocket-extensions")))
  msg.path = "/moved?from=" .. msg.path:sub(2)
  msg.headers:add("x-fwd", "1")
end)
register_hook("ws", "on_message", function(msg, ctx) end)
"""})
def _upgrade_forward(t):
    o = RawWsOrigin()
    try:
        for n, conn in enumerate(("Upgrade", "keep-alive, Upgrade")):
            c, *_ = raw_open(t.proxy.port, o.port, f"/fwd{n}", connection=conn,
                             extra=[("Sec-WebSocket-Extensions", "permessage-deflate; client_max_window_bits")])
            try:
                send(c, TEXT, b"x", mask=MASKS[n])
                eq(recv(c).payload, b"x", f"echo (Connection: {conn})")
                send(c, CLOSE, close_payload(1000), mask=MASKS[n])
                eq(recv(c).opcode, CLOSE, f"close echo (Connection: {conn})")
            finally:
                c.close()
        cs = o.wait_done(2)
    finally:
        o.stop()
    eq([(r["method"], r["target"]) for r in cs], [("GET", "/moved?from=fwd0"), ("GET", "/moved?from=fwd1")],
       "(method, target) at the origin: origin-form, rewritten by the hook")
    for r in cs:
        eq(hget_all(r["headers"], "x-fwd"), ["1"], "x-fwd at the origin")
        eq(hget_all(r["headers"], "sec-websocket-extensions"), [], "Sec-WebSocket-Extensions at the origin")
    lines = t.proxy.wait_log(r"CONF-WS-FWD ", count=2)
    eq(len(lines), 2, f"ws.on_upgrade calls ({lines})")
    check(f"authority=127.0.0.1:{o.port}" in lines[0] and "path=/fwd0 " in lines[0]
          and "ext=permessage-deflate" in lines[0],
          f"what ws.on_upgrade saw (path, authority, the client's extensions): {lines[0]!r}")


@case("ws in reverse mode: ws.on_upgrade and ws.on_message with a direct websockets client", proxy=False,
      plugins={"ws_reverse.lua": PRELUDE + """
register_hook("ws", "on_upgrade", function(msg, ctx)
  msg.headers:set("x-reverse", msg.method .. " " .. msg.path)
end)
register_hook("ws", "on_message", function(msg, ctx)
  ws_log("rev", msg)
  if msg.opcode == 1 and msg.from_client then msg.payload = msg.payload .. " via reverse" end
end)
"""})
def _reverse(t):
    o = LibOrigin()
    try:
        proxy = t.start_proxy(["--mode", f"reverse:http://127.0.0.1:{o.port}",
                               "--plugin", str(t.plugin_paths["ws_reverse.lua"])])
        with lib_connect(f"ws://{proxy.addr}/rev?x=1") as ws:
            ws.send("hi")
            eq(ws.recv(timeout=IO), "hi via reverse", "echo at the client")
        rec = o.one()
    finally:
        o.stop()
    eq(rec["path"], "/rev?x=1", "path at the origin")
    eq(hget_all(rec["headers"], "x-reverse"), ["GET /rev?x=1"], "x-reverse at the origin")
    eq(rec["messages"], ["hi via reverse"], "messages at the origin")
    eq(brief(c for c in wait_calls(proxy, "rev", 4) if c.op == TEXT),
       [(TEXT, True, b"hi"), (TEXT, False, b"hi via reverse")], "ws.on_message calls for the text messages")


# --------------------------------------------------------------------------- on_message

@case("ws.on_message binary payloads (7-bit, 16-bit and 64-bit lengths) and UTF-8 text",
      plugins={"ws_binary.lua": PRELUDE + """
register_hook("ws", "on_message", function(msg, ctx)
  ws_log("bin", msg)
  if msg.opcode == 2 then
    if msg.from_client then msg.payload = msg.payload:reverse()        -- byte-wise
    else msg.payload = "\\255\\000" .. msg.payload end
  end
end)
"""})
def _binary(t):
    small, mid, big = bytes(range(256))[:100], bytes(range(256)) * 2 + b"\x00", os.urandom(70000)
    text = "h\u00e9llo \u2713 \U0001F600"
    o = LibOrigin()
    try:
        with lib_connect(o.url("/bin"), proxy=t.proxy.addr) as ws:
            got = []
            for p in (small, mid, big):
                ws.send(p)
                got.append(ws.recv(timeout=IO))
            ws.send(text)
            got.append(ws.recv(timeout=IO))
        rec = o.one()
    finally:
        o.stop()
    eq(rec["messages"][:3] == [small[::-1], mid[::-1], big[::-1]], True,
       "binary messages at the origin are the reversed payloads")
    eq(rec["messages"][3], text, "UTF-8 text at the origin (unchanged)")
    for p, g in zip((small, mid, big), got):
        eq(g == b"\xff\x00" + p[::-1], True, f"{len(p)}-byte binary message back at the client "
                                             f"(reversed, then prefixed): got {len(g)} bytes {g[:8]!r}...")
    eq(got[3], text, "UTF-8 text back at the client")
    cs = wait_calls(t.proxy, "bin", 10)
    eq([(c.op, c.from_client, c.len) for c in cs if c.op in (TEXT, BINARY)],
       [(BINARY, True, 100), (BINARY, False, 100), (BINARY, True, 513), (BINARY, False, 513),
        (BINARY, True, 70000), (BINARY, False, 70000), (TEXT, True, len(text.encode())),
        (TEXT, False, len(text.encode()))], "(opcode, from_client, payload length) of the messages")
    eq([c.payload for c in cs[:2]], [small, small[::-1]], "payload bytes given to the hook (100-byte message)")
    eq(cs[6].payload, text.encode(), "payload of the text message given to the hook (UTF-8 bytes)")


FRAG_PLUGIN = PRELUDE + """
register_hook("ws", "on_message", function(msg, ctx)
  ws_log("frag", msg)
  if msg.opcode == 1 then
    if msg.from_client then msg.payload = string.upper(msg.payload)
    else msg.payload = string.lower(msg.payload) end
  end
end)
"""


@case("ws.on_message fragmented messages joined both ways, control frames in between (raw client and origin)",
      plugins={"ws_frag.lua": FRAG_PLUGIN})
def _fragments(t):
    o = RawWsOrigin()
    try:
        c, *_ = raw_open(t.proxy.port, o.port, "/push")
        try:
            # server -> client: "SRV-" + ping + "FRAG" + "MENTS"
            got = [recv(c), recv(c)]
            eq(short(got), [(PING, True, False, b"sp"), (TEXT, True, False, b"srv-fragments")],
               "frames at the client for the origin's fragmented text with a ping inside")
            send(c, PONG, b"sp", mask=MASKS[5])
            # client -> server: text in three fragments with a ping inside, binary in two
            send(c, TEXT, b"frag", fin=False, mask=MASKS[0])
            send(c, PING, b"cp", mask=MASKS[1])
            send(c, CONT, b"men", fin=False, mask=MASKS[2])
            send(c, CONT, b"ted", mask=MASKS[3])
            send(c, BINARY, b"\x00\x01", fin=False, mask=MASKS[4])
            send(c, CONT, b"\x02", mask=MASKS[5])
            got = [recv(c) for _ in range(3)]
            eq(short(got), [(PONG, True, False, b"cp"), (TEXT, True, False, b"fragmented"),
                            (BINARY, True, False, b"\x00\x01\x02")], "frames back at the client")
            send(c, CLOSE, close_payload(1000, b"done"), mask=MASKS[2])
            eq(recv(c).opcode, CLOSE, "close echo at the client")
            closed_by_proxy(c, "after the closing handshake")
        finally:
            c.close()
        rec = o.one()
    finally:
        o.stop()
    fr = rec["frames"]
    eq([(f.opcode, f.fin, f.rsv1, f.mask, f.payload) for f in fr],
       [(PONG, True, False, MASKS[5], b"sp"), (PING, True, False, MASKS[1], b"cp"),
        (TEXT, True, False, MASKS[0], b"FRAGMENTED"), (BINARY, True, False, MASKS[4], b"\x00\x01\x02"),
        (CLOSE, True, False, MASKS[2], close_payload(1000, b"done"))],
       "frames at the origin (opcode, fin, rsv1, masking key, payload): one frame per message, "
       "masked with the key of its first fragment")
    eq(rec["end"], "eof after close", "how the origin's connection ended")
    cs = wait_calls(t.proxy, "frag", 9)
    eq(brief(c for c in cs if not c.from_client),
       [(PING, False, b"sp"), (TEXT, False, b"SRV-FRAGMENTS"), (PONG, False, b"cp"), (TEXT, False, b"FRAGMENTED"),
        (BINARY, False, b"\x00\x01\x02"), (CLOSE, False, close_payload(1000, b"done"))],
       "ws.on_message calls, server to client")
    eq(brief(c for c in cs if c.from_client),
       [(PONG, True, b"sp"), (PING, True, b"cp"), (TEXT, True, b"fragmented"), (BINARY, True, b"\x00\x01\x02"),
        (CLOSE, True, close_payload(1000, b"done"))], "ws.on_message calls, client to server")
    eq({(c.fin, c.masked == c.from_client) for c in cs}, {(True, True)}, "(fin, masked == from_client) of every call")


@case("ws.on_message ping/pong pass both ways; a rewritten ping payload reaches the server",
      plugins={"ws_ping.lua": PRELUDE + """
register_hook("ws", "on_message", function(msg, ctx)
  ws_log("ctl", msg)
  if msg.opcode == 9 and msg.payload == "rewrite-me" then msg.payload = "rewritten" end
end)
"""})
def _ping_pong(t):
    o = LibOrigin()
    try:
        with lib_connect(o.url("/p?ping=srv-ping"), proxy=t.proxy.addr) as ws:
            eq(ws.ping(b"cli-ping").wait(IO), True, "the client's ping got its pong")
            ws.send("m")                                  # the origin pings, then echoes
            eq(ws.recv(timeout=IO), "m", "echo at the client")
        rec = o.one()
        eq(rec["pongs"], [True], "the origin's ping got its pong")
        c, *_ = raw_open(t.proxy.port, o.port, "/raw")   # a raw client and the library's pong
        try:
            send(c, PING, b"rewrite-me")
            f = recv(c)
            eq((f.opcode, f.payload, f.mask), (PONG, b"rewritten", None),
               "pong at the raw client (the origin answered the rewritten ping)")
        finally:
            c.close()
    finally:
        o.stop()
    cs = [x for x in wait_calls(t.proxy, "ctl", 7) if x.op in (PING, PONG)]
    eq([(x.op, x.from_client, x.masked, x.payload) for x in cs],
       [(PING, True, True, b"cli-ping"), (PONG, False, False, b"cli-ping"),
        (PING, False, False, b"srv-ping"), (PONG, True, True, b"srv-ping"),
        (PING, True, True, b"rewrite-me"), (PONG, False, False, b"rewritten")],
       "(opcode, from_client, masked, payload) of the ping/pong calls")


@case("ws close code and reason in ws.on_message and ws.on_close (origin closes first)",
      plugins={"ws_srv_close.lua": PRELUDE + """
register_hook("ws", "on_message", function(msg, ctx) ws_log("msg", msg) end)
register_hook("ws", "on_close", function(msg, ctx) ws_log("close", msg) end)
"""})
def _server_close(t):
    o = LibOrigin()
    try:
        ws = lib_connect(o.url("/c?close=4001&reason=srv-bye"), proxy=t.proxy.addr)
        with ws:
            ws.send("trigger")
            try:
                ws.recv(timeout=IO)
                raise AssertionError("the client got a message instead of the origin's close")
            except ConnectionClosed:
                pass
        eq((ws.close_code, ws.close_reason), (4001, "srv-bye"), "close frame at the client")
        rec = o.one()
        eq(rec["close_rcvd"], (4001, "srv-bye"), "the client's close reply at the origin")
    finally:
        o.stop()
    cs = [c for c in wait_calls(t.proxy, "msg", 3) if c.op == CLOSE]
    eq([(c.from_client, c.masked, c.code, c.reason, c.payload) for c in cs],
       [(False, False, 4001, b"srv-bye", close_payload(4001, b"srv-bye")),
        (True, True, 4001, b"srv-bye", close_payload(4001, b"srv-bye"))],
       "(from_client, masked, close_code, close_reason, payload) of the close frames in ws.on_message")
    cl = wait_calls(t.proxy, "close", 1)
    eq([(c.op, c.fin, c.masked, c.compressed, c.code, c.reason, c.payload) for c in cl],
       [(CLOSE, True, False, False, 4001, b"srv-bye", close_payload(4001, b"srv-bye"))],
       "ws.on_close calls (the first close frame: the origin's)")


@case("ws closing handshake on raw sockets: a close without a code (1005), the origin closing first; "
      "after both close frames luring closes both connections",
      plugins={"ws_closing.lua": PRELUDE + """
register_hook("ws", "on_message", function(msg, ctx) ws_log("msg", msg) end)
register_hook("ws", "on_close", function(msg, ctx) ws_log("close", msg) end)
"""})
def _closing(t):
    o = RawWsOrigin()
    try:
        # 1. the client closes, without a code; the origin echoes
        c, *_ = raw_open(t.proxy.port, o.port, "/nocode")
        try:
            send(c, CLOSE, b"")
            f = recv(c)
            eq((f.opcode, f.payload, f.mask), (CLOSE, b"", None), "close echo at the client")
            closed_by_proxy(c, "after both close frames")  # the client waits: luring closes
        finally:
            c.close()
        eq(len(wait_calls(t.proxy, "close", 1)), 1, "ws.on_close calls after the first connection")
        # 2. the origin closes first (4002 "raw-bye"); the client echoes
        c, *_ = raw_open(t.proxy.port, o.port, "/close-first")
        try:
            send(c, TEXT, b"bye please", mask=MASKS[3])
            f = recv(c)
            eq((f.opcode, f.payload, f.mask), (CLOSE, close_payload(4002, b"raw-bye"), None),
               "the origin's close at the client")
            time.sleep(CLOSE_ECHO_DELAY)
            send(c, CLOSE, f.payload, mask=MASKS[4])
            closed_by_proxy(c, "after both close frames (origin first)")
        finally:
            c.close()
        cs = o.wait_done(2)
    finally:
        o.stop()
    eq([(r["target"], short(r["frames"]), r["end"]) for r in cs],
       [("/nocode", [(CLOSE, True, True, b"")], "eof after close"),
        ("/close-first", [(TEXT, True, True, b"bye please"), (CLOSE, True, True, close_payload(4002, b"raw-bye"))],
         "eof after close")],
       "(target, frames, how it ended) at the origin: the client's close and its echo came, then luring closed")
    eq(cs[1]["frames"][1].mask, MASKS[4], "masking key of the client's close echo at the origin")
    cs = wait_calls(t.proxy, "msg", 5)
    eq([(c.op, c.from_client, c.masked, c.code, c.reason, c.payload) for c in cs if c.op == CLOSE],
       [(CLOSE, True, True, 1005, b"", b""), (CLOSE, False, False, 1005, b"", b""),
        (CLOSE, False, False, 4002, b"raw-bye", close_payload(4002, b"raw-bye")),
        (CLOSE, True, True, 4002, b"raw-bye", close_payload(4002, b"raw-bye"))],
       "(opcode, from_client, masked, close_code, close_reason, payload) of the close frames in ws.on_message")
    eq([(c.op, c.fin, c.masked, c.compressed, c.code, c.reason, c.payload) for c in wait_calls(t.proxy, "close", 2)],
       [(CLOSE, True, True, False, 1005, b"", b""),
        (CLOSE, True, False, False, 4002, b"raw-bye", close_payload(4002, b"raw-bye"))],
       "ws.on_close calls (the first close frame of each connection)")


@case("ws.on_close 1006: the origin drops TCP, the client vanishes, a protocol error",
      plugins={"ws_1006.lua": PRELUDE + """
register_hook("ws", "on_message", function(msg, ctx) ws_log("msg", msg) end)
register_hook("ws", "on_close", function(msg, ctx) ws_log("close", msg) end)
"""})
def _close_1006(t):
    raw = RawWsOrigin()
    try:
        # 1. the origin drops the TCP connection on the first message (websockets client)
        ws = lib_connect(f"ws://127.0.0.1:{raw.port}/drop", proxy=t.proxy.addr)
        with ws:
            ws.send("boom")
            try:
                ws.recv(timeout=IO)
                raise AssertionError("the client got a message from an origin that hung up")
            except ConnectionClosed:
                pass
        eq(ws.close_code, 1006, "close code at the websockets client (no close frame came)")
        eq(len(wait_calls(t.proxy, "close", 1)), 1, "ws.on_close calls after the origin dropped TCP")
        # 2. the client vanishes without a close frame (raw client)
        c, *_ = raw_open(t.proxy.port, raw.port, "/vanish")
        send(c, TEXT, b"hi")
        eq(recv(c).payload, b"hi", "echo before the client vanishes")
        c.close()
        eq(len(wait_calls(t.proxy, "close", 2)), 2, "ws.on_close calls after the client vanished")
        # 3. a protocol error: a frame with the reserved opcode 3
        c, *_ = raw_open(t.proxy.port, raw.port, "/proto")
        try:
            c.send(encode_frame(3, b"???", mask=MASKS[1]))
            closed_by_proxy(c, "after a frame with a reserved opcode")
        finally:
            c.close()
        cs = raw.wait_done(3)
    finally:
        raw.stop()
    eq([(r["target"], r["end"]) for r in cs],
       [("/drop", "dropped"), ("/vanish", "eof without close"), ("/proto", "eof without close")],
       "how each origin connection ended")
    eq(short(cs[2]["frames"]), [], "frames at the origin after the protocol error (not forwarded)")
    cl = wait_calls(t.proxy, "close", 3)
    eq([(c.op, c.fin, c.masked, c.compressed, c.code, c.reason, c.payload) for c in cl],
       [(CLOSE, True, False, False, 1006, b"", b"")] * 3, "ws.on_close calls (abnormal closure)")
    eq([x for x in calls(t.proxy, "msg") if x.op == CLOSE], [], "close frames in ws.on_message")
    eq(brief(calls(t.proxy, "msg")), [(TEXT, True, b"boom"), (TEXT, True, b"hi"), (TEXT, False, b"hi")],
       "ws.on_message calls (none for the reserved opcode)")


@case("ws.on_close 1006 when --tunnel-idle-timeout closes a quiet WebSocket",
      flags=["--tunnel-idle-timeout", "1"], plugins={"ws_idle.lua": PRELUDE + """
register_hook("ws", "on_close", function(msg, ctx) ws_log("close", msg) end)
"""})
def _idle(t):
    o = RawWsOrigin()
    try:
        c, *_ = raw_open(t.proxy.port, o.port, "/idle")
        try:
            send(c, TEXT, b"then silence")
            eq(recv(c).payload, b"then silence", "echo at the client")
            start = time.monotonic()
            data, closed = c.read_until_closed(timeout=IO)
            took = time.monotonic() - start
        finally:
            c.close()
        rec = o.one()
    finally:
        o.stop()
    check(closed and data == b"", f"the quiet WebSocket was not closed within {IO}s (got {data[:50]!r})")
    check(0.5 <= took < 4, f"closed after {took:.1f}s of silence with --tunnel-idle-timeout 1")
    eq(rec["end"], "eof without close", "how the origin's connection ended")
    eq([(c.op, c.masked, c.code, c.reason, c.payload) for c in wait_calls(t.proxy, "close", 1)],
       [(CLOSE, False, 1006, b"", b"")], "ws.on_close calls (abnormal closure)")


@case("frozen ws.on_close dict; every hook runs (DROP demoted, an error skipped)", plugins={
    "ws_frozen.lua": PRELUDE + """
register_hook("ws", "on_close", function(msg, ctx)
  msg.close_code = 1
  msg.close_reason = "forged"
  msg.payload = "forged"
  msg.opcode = 1
  msg.masked = false
  msg.extra = "added"
  log.info("CONF-WS-FROZEN h1-done")
end)
register_hook("ws", "on_close", function(msg, ctx)
  log.info("CONF-WS-FROZEN h2")
  return action.DROP            -- not allowed here: demoted, the chain goes on
end)
register_hook("ws", "on_close", function(msg, ctx) error("conf-ws-close-error") end)
""", "ws_frozen_later.lua": PRELUDE + """
register_hook("ws", "on_close", function(msg, ctx)
  ws_log("h4", msg)
  log.info("CONF-WS-FROZEN h4 extra=" .. tostring(msg.extra))
end)
"""})
def _frozen(t):
    o = LibOrigin()
    try:
        for n in (1, 2):
            with lib_connect(o.url(f"/f{n}"), proxy=t.proxy.addr) as ws:
                ws.send("x")
                eq(ws.recv(timeout=IO), "x", f"echo, connection {n}")
                ws.close(4000 + n, f"bye{n}")
        o.wait_conns(2)
    finally:
        o.stop()
    cs = wait_calls(t.proxy, "h4", 2)
    eq([(c.op, c.fin, c.masked, c.compressed, c.code, c.reason, c.payload) for c in cs],
       [(CLOSE, True, True, False, 4000 + n, f"bye{n}".encode(), close_payload(4000 + n, f"bye{n}".encode()))
        for n in (1, 2)], "what the last hook saw (the first hook's writes must be ignored)")
    eq([ln.split("extra=")[1].split()[0] for ln in t.proxy.find(r"CONF-WS-FROZEN h4 ")], ["nil", "nil"],
       "a key added by the first hook, as seen by the last")
    seq = [m.group(1) for ln in t.proxy.lines() for m in [re.search(r"CONF-WS-FROZEN (h\d)", ln)] if m]
    eq(seq, ["h1", "h2", "h4"] * 2, "hooks that ran, in order, for each connection")
    eq(len(t.proxy.find(r"conf-ws-close-error")), 2, "error lines of the failing hook (one per connection)")
    demotion_logged_once(t, "ws_frozen", "DROP")


def demote_plugin(act):
    return PRELUDE + f"""
register_hook("ws", "on_message", function(msg, ctx)
  return action.{act}
end)
register_hook("ws", "on_message", function(msg, ctx)
  ws_log("after", msg)      -- demoted to CONTINUE: the chain goes on
end)
"""


def demoted_unchanged(t, stem, action):
    o = LibOrigin()
    try:
        with lib_connect(o.url("/d"), proxy=t.proxy.addr) as ws:
            for m in ("one", b"two", "three"):
                ws.send(m)
                eq(ws.recv(timeout=IO), m, "echo at the client (unchanged)")
            eq(ws.ping(b"pg").wait(IO), True, "a ping got its pong")
        rec = o.one()
    finally:
        o.stop()
    eq(rec["messages"], ["one", b"two", "three"], "messages at the origin (unchanged)")
    eq(rec["close_rcvd"], (1000, ""), "close frame at the origin")
    cs = wait_calls(t.proxy, "after", 10)
    eq(brief(cs), [(TEXT, True, b"one"), (TEXT, False, b"one"), (BINARY, True, b"two"), (BINARY, False, b"two"),
                   (TEXT, True, b"three"), (TEXT, False, b"three"), (PING, True, b"pg"), (PONG, False, b"pg"),
                   (CLOSE, True, close_payload(1000)), (CLOSE, False, close_payload(1000))],
       "calls of the hook after the demoted one")
    demotion_logged_once(t, stem, action)


@case("demote DROP from ws.on_message", plugins={"demote_ws_drop.lua": demote_plugin("DROP")})
def _demote_drop(t):
    demoted_unchanged(t, "demote_ws_drop", "DROP")


@case("demote RESPOND from ws.on_message", plugins={"demote_ws_respond.lua": demote_plugin(
    'RESPOND{ status = 403, body = "must not be sent" }')})
def _demote_respond(t):
    demoted_unchanged(t, "demote_ws_respond", "RESPOND")


@case("ws.on_message on_error skip: logged, next hook runs; read-only fields and long control payloads are errors",
      plugins={"ws_err_skip.lua": PRELUDE + """
local function explode()
  error("conf-ws-kaboom-skip")
end
register_hook("ws", "on_message", function(msg, ctx)
  if msg.opcode == 1 then
    msg.payload = msg.payload .. "[before-error]"
    explode()
  end
end, { name = "ws-exploder" })
register_hook("ws", "on_message", function(msg, ctx)
  if msg.opcode == 1 and msg.from_client then msg.opcode = 2 end      -- read-only: a hook error
  if msg.opcode == 9 then msg.payload = string.rep("x", 126) end      -- over 125 bytes: a hook error
end)
register_hook("ws", "on_message", function(msg, ctx)
  ws_log("next", msg)
end)
"""})
def _err_skip(t):
    o = LibOrigin()
    try:
        with lib_connect(o.url("/e"), proxy=t.proxy.addr) as ws:
            ws.send("hi")
            eq(ws.recv(timeout=IO), "hi[before-error][before-error]",
               "echo at the client (each direction mutated before the error)")
            eq(ws.ping(b"p1").wait(IO), True, "the ping got its pong (its payload unchanged)")
        rec = o.one()
    finally:
        o.stop()
    eq(rec["messages"], ["hi[before-error]"], "messages at the origin (still text, mutated before the error)")
    cs = wait_calls(t.proxy, "next", 6)
    eq(brief(cs)[:4], [(TEXT, True, b"hi[before-error]"), (TEXT, False, b"hi[before-error][before-error]"),
                       (PING, True, b"p1"), (PONG, False, b"p1")], "what the last hook saw")
    t.proxy.expect_log(r"conf-ws-kaboom-skip", what="the error message")
    errs = t.proxy.find(r"conf-ws-kaboom-skip")
    eq(len(errs), 2, f"error lines (one per text message) ({errs})")
    log = "\n".join(t.proxy.lines())
    check("ws_err_skip" in errs[0], f"the error line does not name the plugin ws_err_skip: {errs[0]!r}")
    check(re.search(r"traceback", log, re.I), "the error log has no Lua traceback")
    check("explode" in log, "the traceback does not show the function that raised (explode)")
    eq(len(t.proxy.find(r"ERROR.*payload is writable")), 1, "hook errors for assigning msg.opcode")
    eq(len(t.proxy.find(r"ERROR.*125 bytes")), 1, "hook errors for a 126-byte ping payload")


@case("ws.on_message on_error abort: rest of the chain skipped, message goes on as mutated", plugins={
    "ws_err_abort.lua": PRELUDE + """
register_hook("ws", "on_message", function(msg, ctx)
  if msg.opcode <= 2 then
    msg.payload = msg.payload .. "[before-abort]"
    error("conf-ws-kaboom-abort")
  end
end, { on_error = "abort" })
register_hook("ws", "on_message", function(msg, ctx)
  ws_log("same-file", msg)
  if msg.opcode <= 2 then msg.payload = "must-not-be-sent" end
end)
""", "ws_err_abort_later.lua": PRELUDE + """
register_hook("ws", "on_message", function(msg, ctx)
  ws_log("other-file", msg)
  if msg.opcode <= 2 then msg.payload = "must-not-be-sent" end
end)
register_hook("ws", "on_message", function(msg, ctx)
  ws_log("post", msg)      -- another chain (phase): abort does not skip it
end, { phase = "post_pipeline" })
"""})
def _err_abort(t):
    o = LibOrigin()
    try:
        with lib_connect(o.url("/a"), proxy=t.proxy.addr) as ws:
            ws.send("m")
            eq(ws.recv(timeout=IO), "m[before-abort][before-abort]", "echo at the client")
            ws.send(b"b")
            eq(ws.recv(timeout=IO), b"b[before-abort][before-abort]", "binary echo at the client")
        rec = o.one()
    finally:
        o.stop()
    eq(rec["messages"], ["m[before-abort]", b"b[before-abort]"], "messages at the origin")
    cs = wait_calls(t.proxy, "post", 6)
    eq(brief(cs)[:4], [(TEXT, True, b"m[before-abort]"), (TEXT, False, b"m[before-abort][before-abort]"),
                       (BINARY, True, b"b[before-abort]"), (BINARY, False, b"b[before-abort][before-abort]")],
       "what the post_pipeline hook saw")
    eq({c.op for c in calls(t.proxy, "same-file") + calls(t.proxy, "other-file")}, {CLOSE},
       "opcodes of the pre_pipeline calls after the aborting hook (only close frames, where it did not fail)")
    eq(len(t.proxy.find(r"conf-ws-kaboom-abort")), 4, "error lines (one per data message)")


@case("ws.on_message phases: pre_pipeline then post_pipeline, post sees the pre change",
      plugins={"ws_msg_phases.lua": PRELUDE + """
-- post_pipeline registered first: phases order the hooks, not registration
register_hook("ws", "on_message", function(msg, ctx)
  ws_log("post", msg)
  if msg.opcode == 1 then msg.payload = msg.payload .. " [post]" end
end, { phase = "post_pipeline" })
register_hook("ws", "on_message", function(msg, ctx)
  ws_log("pre", msg)
  if msg.opcode == 1 then msg.payload = msg.payload .. " [pre]" end
end, { phase = "pre_pipeline" })
"""})
def _msg_phases(t):
    o = LibOrigin()
    try:
        with lib_connect(o.url("/ph"), proxy=t.proxy.addr) as ws:
            ws.send("a")
            eq(ws.recv(timeout=IO), "a [pre] [post] [pre] [post]", "echo at the client")
        rec = o.one()
    finally:
        o.stop()
    eq(rec["messages"], ["a [pre] [post]"], "messages at the origin")
    wait_calls(t.proxy, "post", 4)
    seq = [(c.tag, c.op, c.from_client, c.payload) for c in calls(t.proxy)]
    eq(seq[:4], [("pre", TEXT, True, b"a"), ("post", TEXT, True, b"a [pre]"),
                 ("pre", TEXT, False, b"a [pre] [post]"), ("post", TEXT, False, b"a [pre] [post] [pre]")],
       "(phase, opcode, from_client, payload) of the hook calls, in order")
    eq([c[0] for c in seq[4:]], ["pre", "post", "pre", "post"], "phases of the close frame calls")


def ws_appender(tag):
    return f"""register_hook("ws", "on_message", function(msg, ctx)
  ws_log("{tag}", msg)
  if msg.opcode == 1 then msg.payload = msg.payload .. ",{tag}" end
end)
register_hook("ws", "on_upgrade", function(msg, ctx)
  msg.headers:set("x-saw-{tag}", table.concat(msg.headers:get_all("x-chain"), ","))
  msg.headers:add("x-chain", "{tag}")
end)
"""


@case("ws chain order across two plugin files and within a file (ws.on_upgrade and ws.on_message)",
      plugins={"zeta.lua": PRELUDE + ws_appender("z1") + ws_appender("z2"), "alpha.lua": PRELUDE + ws_appender("a1")})
def _chains(t):
    # zeta.lua is loaded first (--plugin order), although it sorts after alpha.lua
    o = LibOrigin()
    try:
        with lib_connect(o.url("/chain"), proxy=t.proxy.addr) as ws:
            ws.send("hi")
            eq(ws.recv(timeout=IO), "hi,z1,z2,a1,z1,z2,a1", "echo at the client")
        rec = o.one()
    finally:
        o.stop()
    h = rec["headers"]
    eq(hget_all(h, "x-chain"), ["z1", "z2", "a1"], "x-chain at the origin (ws.on_upgrade order)")
    eq([hget(h, f"x-saw-{tag}") for tag in ("z1", "z2", "a1")], ["", "z1", "z1,z2"],
       "what each ws.on_upgrade hook saw")
    eq(rec["messages"], ["hi,z1,z2,a1"], "messages at the origin")
    wait_calls(t.proxy, "a1", 4)
    eq([(c.tag, c.from_client, c.payload) for c in calls(t.proxy) if c.op == TEXT],
       [("z1", True, b"hi"), ("z2", True, b"hi,z1"), ("a1", True, b"hi,z1,z2"),
        ("z1", False, b"hi,z1,z2,a1"), ("z2", False, b"hi,z1,z2,a1,z1"), ("a1", False, b"hi,z1,z2,a1,z1,z2")],
       "(hook, from_client, payload seen) of the text calls, in order")


# --------------------------------------------------------------------------- without message hooks

@case("ws.on_close alone: permessage-deflate kept, compressed frames relayed, close reported",
      plugins={"ws_close_only.lua": PRELUDE + """
register_hook("ws", "on_close", function(msg, ctx) ws_log("close", msg) end)
"""})
def _close_only(t):
    o = LibOrigin()
    try:
        ws = lib_connect(o.url("/z"), proxy=t.proxy.addr)
        with ws:
            ext = ws.response.headers.get("Sec-WebSocket-Extensions") or ""
            ws.send("squeeze me " * 50)
            eq(ws.recv(timeout=IO), "squeeze me " * 50, "echo of a compressed message")
            ws.close(4010, "zip")
        rec = o.one()
    finally:
        o.stop()
    check("permessage-deflate" in (hget(rec["headers"], "sec-websocket-extensions") or ""),
          f"Sec-WebSocket-Extensions at the origin: {rec['headers']}")
    check("permessage-deflate" in ext, f"negotiated extensions at the client: {ext!r}")
    eq(rec["messages"], ["squeeze me " * 50], "messages at the origin")
    eq(rec["close_rcvd"], (4010, "zip"), "close frame at the origin")
    eq([(c.op, c.masked, c.compressed, c.code, c.reason) for c in wait_calls(t.proxy, "close", 1)],
       [(CLOSE, True, False, 4010, b"zip")], "ws.on_close calls")


@case("ws without ws.on_message/on_close hooks: relayed as raw bytes through raw.on_chunk", proxy=False,
      plugins={"ws_raw_relay.lua": """
register_hook("ws", "on_upgrade", function(msg, ctx)
  msg.headers:set("x-raw-relay", "1")
end)
register_hook("raw", "on_chunk", function(msg, ctx)
  log.info(string.format("CONF-WS-RAW from_client=%s len=%d", tostring(msg.from_client), #msg.data))
end)
"""})
def _raw_relay(t):
    o = LibOrigin()
    try:
        proxy = t.start_proxy(["--mode", f"reverse:http://127.0.0.1:{o.port}",
                               "--plugin", str(t.plugin_paths["ws_raw_relay.lua"])])
        with lib_connect(f"ws://{proxy.addr}/raw") as ws:
            ext = ws.response.headers.get("Sec-WebSocket-Extensions") or ""
            ws.send("relay " * 40)
            eq(ws.recv(timeout=IO), "relay " * 40, "echo at the client")
        rec = o.one()
    finally:
        o.stop()
    eq(hget(rec["headers"], "x-raw-relay"), "1", "x-raw-relay (ws.on_upgrade) at the origin")
    check("permessage-deflate" in (hget(rec["headers"], "sec-websocket-extensions") or ""),
          f"Sec-WebSocket-Extensions at the origin (kept without ws.on_message): {rec['headers']}")
    check("permessage-deflate" in ext, f"negotiated extensions at the client: {ext!r}")
    eq(rec["close_rcvd"], (1000, ""), "close frame at the origin")
    proxy.wait_log(r"CONF-WS-RAW from_client=false", count=2)
    settle(0.3)
    seen = [re.search(r"from_client=(\w+) len=(\d+)", ln).groups() for ln in proxy.find(r"CONF-WS-RAW ")]
    for side in ("true", "false"):
        n = sum(int(ln) for fc, ln in seen if fc == side)
        check(n >= 2 * 2 + 4, f"raw.on_chunk bytes from_client={side}: {n} (chunks {seen})")


# --------------------------------------------------------------------------- wss in a tunnel

@case("wss through an intercepted CONNECT tunnel (websockets client and TLS origin)", proxy=False,
      plugins={"ws_tls.lua": PRELUDE + """
register_hook("ws", "on_upgrade", function(msg, ctx)
  msg.headers:set("x-wss", string.format("%s %s sni=%s", tostring(msg.scheme), msg.path, tostring(ctx.sni)))
end)
register_hook("ws", "on_message", function(msg, ctx)
  ws_log("tls", msg)
  if msg.opcode == 1 then msg.payload = msg.payload .. (msg.from_client and "+up" or "+down") end
end)
register_hook("ws", "on_close", function(msg, ctx) ws_log("close", msg) end)
"""})
def _wss(t):
    need_ws()
    ca, cert, key = make_pki(t.tmp)
    conf = str(t.tmp / "confdir")
    luring_ca = str(t.tmp / "luring-ca.pem")
    rc, out = run_cli(t.bin, ["ca", "export", "--confdir", conf, "--format", "pem", "--out", luring_ca])
    eq(rc, 0, f"luring ca export ({out})")
    proxy = t.start_proxy(["--confdir", conf, "--upstream-ca", ca, "--plugin", str(t.plugin_paths["ws_tls.lua"])])
    sctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    sctx.load_cert_chain(cert, key)
    o = LibOrigin(ssl_context=sctx)
    try:
        cctx = ssl.create_default_context(cafile=luring_ca)        # trusts luring's CA only
        ws = lib_connect(o.url("/secure?q=1", "wss", "localhost"), proxy=proxy.addr, ssl=cctx)
        with ws:
            issuer = dict(x[0] for x in ws.socket.getpeercert()["issuer"])
            ws.send("over tls")
            eq(ws.recv(timeout=IO), "over tls+up+down", "echo at the client")
            ws.close(4443, "tls-bye")
        rec = o.one()
    finally:
        o.stop()
    check(issuer.get("commonName") != "luring conf CA",
          f"the client saw the origin's own certificate (issuer {issuer}): the tunnel was not intercepted")
    eq(rec["path"], "/secure?q=1", "path at the TLS origin")
    eq(hget_all(rec["headers"], "x-wss"), ["https /secure?q=1 sni=localhost"], "x-wss at the TLS origin")
    eq(rec["messages"], ["over tls+up"], "messages at the TLS origin")
    eq(rec["close_rcvd"], (4443, "tls-bye"), "close frame at the TLS origin")
    eq(brief(c for c in wait_calls(proxy, "tls", 4) if c.op == TEXT),
       [(TEXT, True, b"over tls"), (TEXT, False, b"over tls+up")], "ws.on_message calls for the text")
    eq([(c.code, c.reason) for c in wait_calls(proxy, "close", 1)], [(4443, b"tls-bye")], "ws.on_close calls")


# --------------------------------------------------------------------------- msg:close(code, reason)

# A hook ends the WebSocket: the message is not passed on, the peer it was going to gets
# a close frame with the hook's code and reason at once, the peer that sent it gets the
# same code and reason when the other answers (the closing handshake), then luring closes
# both connections; ws.on_close reports that code and reason.
WS_CLOSE = PRELUDE + """
register_hook("ws", "on_message", function(msg, ctx)
  ws_log("msg", msg)
  if msg.opcode ~= 1 then return end
  local p = msg.payload
  if msg.from_client and p:sub(1, 8) == "close-me" then msg:close(4001, "bye") end
  if not msg.from_client and p:sub(1, 9) == "srv-close" then msg:close(4002, "srv") end
  if msg.from_client and p == "close-default" then msg:close() end
end)
register_hook("ws", "on_close", function(msg, ctx) ws_log("close", msg) end)
"""
CLOSE_WAIT = 2.5     # luring closes the TCP connections at once; the clients wait IO (5 s) for it


def closed_at_client(ws, what):
    """recv() on a websockets client ends with ConnectionClosed within CLOSE_WAIT (the
    close frame came and luring closed TCP); returns the seconds it took."""
    start = time.monotonic()
    try:
        m = ws.recv(timeout=IO)
        raise AssertionError(f"{what}: the client got the message {m!r} instead of a close")
    except ConnectionClosed:
        pass
    except TimeoutError:
        raise AssertionError(f"{what}: neither a message nor a close at the client within {IO}s")
    took = time.monotonic() - start
    check(took < CLOSE_WAIT, f"{what}: the client's connection ended only after {took:.1f}s "
                             f"(luring did not close TCP after the closing handshake)")
    return took


def on_close_calls(t, n=1):
    return [(c.op, c.code, c.reason, c.payload) for c in wait_calls(t.proxy, "close", n)]


@case("ws msg:close(4001, \"bye\") on a client message: the origin gets the close instead, the client gets "
      "it back, both connections end", plugins={"ws_close_client.lua": WS_CLOSE})
def _msg_close_client(t):
    o = LibOrigin()
    try:
        ws = lib_connect(o.url("/mc"), proxy=t.proxy.addr)
        with ws:
            ws.send("hello")
            eq(ws.recv(timeout=IO), "hello", "echo before the close")
            ws.send("close-me now")
            closed_at_client(ws, "after msg:close(4001, \"bye\")")
        eq((ws.close_code, ws.close_reason), (4001, "bye"), "close frame at the client")
        rec = o.one(timeout=CLOSE_WAIT)
    finally:
        o.stop()
    eq(rec["messages"], ["hello"], "messages at the origin (the closed-on message not passed on)")
    eq(rec["close_rcvd"], (4001, "bye"), "close frame at the origin")
    eq(on_close_calls(t), [(CLOSE, 4001, b"bye", close_payload(4001, b"bye"))],
       "ws.on_close calls (opcode, close_code, close_reason, payload)")
    eq(brief(c for c in calls(t.proxy, "msg") if c.op == TEXT),
       [(TEXT, True, b"hello"), (TEXT, False, b"hello"), (TEXT, True, b"close-me now")],
       "text messages in ws.on_message")


@case("ws msg:close(4002, \"srv\") on a server message: the client gets the close instead, the origin gets "
      "it back, both connections end", plugins={"ws_close_server.lua": WS_CLOSE})
def _msg_close_server(t):
    o = LibOrigin()
    try:
        ws = lib_connect(o.url("/ms"), proxy=t.proxy.addr)
        with ws:
            ws.send("hello")
            eq(ws.recv(timeout=IO), "hello", "echo before the close")
            ws.send("srv-close please")             # the origin echoes it: closed on the way down
            closed_at_client(ws, "after msg:close(4002, \"srv\") on the origin's echo")
        eq((ws.close_code, ws.close_reason), (4002, "srv"), "close frame at the client")
        rec = o.one(timeout=CLOSE_WAIT)
    finally:
        o.stop()
    eq(rec["messages"], ["hello", "srv-close please"], "messages at the origin")
    eq(rec["close_rcvd"], (4002, "srv"), "close frame at the origin (the answer to the hook's close)")
    eq(on_close_calls(t), [(CLOSE, 4002, b"srv", close_payload(4002, b"srv"))],
       "ws.on_close calls (opcode, close_code, close_reason, payload)")


@case("ws msg:close() on raw sockets: nothing after the close is passed on, the answering peer's own code "
      "is replaced by the hook's, luring closes both connections", plugins={"ws_close_raw.lua": WS_CLOSE})
def _msg_close_raw(t):
    o = RawWsOrigin()
    try:
        # 1. a client message: "close-me" and "after" in one write; the origin echoes the close
        c, *_ = raw_open(t.proxy.port, o.port, "/raw-client")
        try:
            c.send(encode_frame(TEXT, b"close-me", mask=MASKS[1]) + encode_frame(TEXT, b"after", mask=MASKS[2]))
            f = recv(c)
            eq((f.opcode, f.mask, f.payload), (CLOSE, None, close_payload(4001, b"bye")),
               "frame at the client (the origin's answer to the hook's close)")
            closed_by_proxy(c, "after the closing handshake of the hook's close (client message)")
        finally:
            c.close()
        # 2. a server message: the client answers the close with its own code and reason
        c, *_ = raw_open(t.proxy.port, o.port, "/raw-server")
        try:
            send(c, TEXT, b"srv-close", mask=MASKS[3])
            f = recv(c)
            eq((f.opcode, f.mask, f.payload), (CLOSE, None, close_payload(4002, b"srv")),
               "frame at the client in place of the origin's echo")
            send(c, CLOSE, close_payload(1001, b"client-own"), mask=MASKS[4])
            closed_by_proxy(c, "after the closing handshake of the hook's close (server message)")
        finally:
            c.close()
        cs = o.wait_done(2)
    finally:
        o.stop()
    eq([(r["target"], [(f.opcode, f.mask is not None, f.payload) for f in r["frames"]], r["end"]) for r in cs],
       [("/raw-client", [(CLOSE, True, close_payload(4001, b"bye"))], "eof after close"),
        ("/raw-server", [(TEXT, True, b"srv-close"), (CLOSE, True, close_payload(4002, b"srv"))],
         "eof after close")],
       "(target, frames (opcode, masked, payload), how it ended) at the origin")
    eq(on_close_calls(t, 2), [(CLOSE, 4001, b"bye", close_payload(4001, b"bye")),
                              (CLOSE, 4002, b"srv", close_payload(4002, b"srv"))],
       "ws.on_close calls of the two connections")


@case("ws msg:close() without a code: 1000 and an empty reason", plugins={"ws_close_default.lua": WS_CLOSE})
def _msg_close_default(t):
    o = LibOrigin()
    try:
        ws = lib_connect(o.url("/md"), proxy=t.proxy.addr)
        with ws:
            ws.send("close-default")
            closed_at_client(ws, "after msg:close()")
        eq((ws.close_code, ws.close_reason), (1000, ""), "close frame at the client")
        rec = o.one(timeout=CLOSE_WAIT)
    finally:
        o.stop()
    eq(rec["messages"], [], "messages at the origin")
    eq(rec["close_rcvd"], (1000, ""), "close frame at the origin")
    eq(on_close_calls(t), [(CLOSE, 1000, b"", close_payload(1000))], "ws.on_close calls")


# (message, Lua call): every one is a hook error; the message goes on unchanged
BAD_CLOSES = [
    ("bad-999", 'm:close(999, "x")'), ("bad-1004", "m:close(1004)"), ("bad-1005", "m:close(1005)"),
    ("bad-1006", "m:close(1006)"), ("bad-1015", "m:close(1015)"), ("bad-2999", "m:close(2999)"),
    ("bad-5000", "m:close(5000)"), ("bad-0", "m:close(0)"), ("bad-frac", "m:close(4000.5)"),
    ("bad-reason", 'm:close(4000, string.rep("\\195\\169", 62))'),     # 124 bytes of UTF-8 (62 chars)
]


@case("ws msg:close() with a bad code or a reason over 123 bytes: a hook error, the message goes on, "
      "the connection stays up", plugins={"ws_close_bad.lua": PRELUDE + """
local bad = {
""" + "".join(f'  ["{m}"] = function(m) {call} end,\n' for m, call in BAD_CLOSES) + """}
register_hook("ws", "on_message", function(msg, ctx)
  if msg.from_client and bad[msg.payload] then bad[msg.payload](msg) end
end)
register_hook("ws", "on_message", function(msg, ctx)
  ws_log("next", msg)       -- on_error skip: the chain goes on
end)
register_hook("ws", "on_close", function(msg, ctx) ws_log("close", msg) end)
"""})
def _msg_close_bad(t):
    names = [m for m, _ in BAD_CLOSES]
    o = LibOrigin()
    try:
        ws = lib_connect(o.url("/mb"), proxy=t.proxy.addr)
        with ws:
            for m in names:
                ws.send(m)
                eq(ws.recv(timeout=IO), m, f"echo of {m!r} (unchanged, the connection up)")
            ws.send("still up")
            eq(ws.recv(timeout=IO), "still up", "echo after the bad calls")
            ws.close(4100, "client-end")
        eq((ws.close_code, ws.close_reason), (4100, "client-end"), "the origin's close answer at the client")
        rec = o.one()
    finally:
        o.stop()
    eq(rec["messages"], names + ["still up"], "messages at the origin (every one passed on unchanged)")
    eq(rec["close_rcvd"], (4100, "client-end"), "close frame at the origin (the client's own)")
    eq(brief(c for c in wait_calls(t.proxy, "next", 2 * len(names) + 4) if c.op == TEXT and c.from_client),
       [(TEXT, True, m.encode()) for m in names + ["still up"]], "client messages seen by the next hook")
    eq(on_close_calls(t), [(CLOSE, 4100, b"client-end", close_payload(4100, b"client-end"))],
       "ws.on_close calls")
    errs = t.proxy.find(r"ERROR")
    eq(len(errs), len(names), f"error lines, one per bad call ({errs})")
    check(all("close" in ln for ln in errs), f"an error line does not say what failed (close): {errs}")
    eq(len(t.proxy.find(r'plugin=ws_close_bad\.lua .*on_error="skip"')), len(names),
       "error reports naming the plugin and its on_error rule")


@case("ws msg:close(): the first call wins; code 4999 and a 123-byte UTF-8 reason are accepted",
      plugins={"ws_close_first.lua": PRELUDE + """
register_hook("ws", "on_message", function(msg, ctx)
  if msg.from_client and msg.payload == "twice" then
    msg:close(4999, string.rep("\\195\\169", 61) .. "!")      -- 123 bytes
    msg:close(1000, "second call")
  end
end)
register_hook("ws", "on_message", function(msg, ctx)
  if msg.from_client and msg.payload == "twice" then msg:close(3000, "later hook") end
end)
register_hook("ws", "on_close", function(msg, ctx) ws_log("close", msg) end)
"""})
def _msg_close_first(t):
    reason = "\u00e9" * 61 + "!"
    o = LibOrigin()
    try:
        ws = lib_connect(o.url("/mf"), proxy=t.proxy.addr)
        with ws:
            ws.send("twice")
            closed_at_client(ws, "after msg:close(4999, ...)")
        eq((ws.close_code, ws.close_reason), (4999, reason), "close frame at the client")
        rec = o.one(timeout=CLOSE_WAIT)
    finally:
        o.stop()
    eq(rec["messages"], [], "messages at the origin")
    eq(rec["close_rcvd"], (4999, reason), "close frame at the origin")
    eq(on_close_calls(t), [(CLOSE, 4999, reason.encode(), close_payload(4999, reason.encode()))],
       "ws.on_close calls")
