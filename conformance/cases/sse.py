"""The SSE layer (sse.on_event, spec sections 2-4): a 200 `text/event-stream` response
without Content-Encoding is cut into events as it streams, each event runs the
pre_pipeline then the post_pipeline chain with an SSEMessage (event, data, id, retry,
index), an unchanged event goes on byte for byte, a changed one is re-serialized
(comments and unknown fields, event, id, retry, data lines, "\\n" line ends).

The origin here (SseOrigin) writes one event stream per request, piece by piece (each
piece its own chunk, a short pause between them), with a comment block, CRLF and LF
line ends, a comment line and an unknown field inside an event, a multi-line data field
split across two writes, an id, a retry and an unfinished tail.  At GATE it waits
(bounded) until the client has received the first event: the stream only completes if
the proxy forwarded that event before the origin sent the rest.  Clients: curl -N
(forward proxy, -x), curl -0 (HTTP/1.0), curl --http2-prior-knowledge (reverse mode,
HTTP/1.1 upstream), curl through an intercepted CONNECT tunnel (HTTP/1.1 to this origin
over TLS; h2 on both sides to nghttpd serving the stream as a file), raw sockets for the
framing.  Hooks report what they saw through log.info lines (`CONF-SSE tag idx=...`).
The row itself is here ("row sse.on_event"), not in rows.py.
"""

import gzip
import os
import re
import shutil
import socket
import ssl
import subprocess
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from harness import (Conn, Pending, _clean_env, case, check, eq, hget, hget_all, make_pki,
                     parse_head_lines, run_cli, settle)

GATE = object()          # in a script: wait until the client has what came before (bounded)
GATE_TIMEOUT = 8.0       # how long the origin waits for that (then it goes on, and the case fails)
CLIENT_TIMEOUT = 15      # curl --max-time
SSE_TYPE = "text/event-stream; charset=utf-8"

# --------------------------------------------------------------------------- the stream

COMMENT = b": stream start\r\n\r\n"                                  # comment-only block (CRLF)
EV0 = b"event: greet\r\ndata: hello\r\nid: 1\r\n\r\n"                 # CRLF line ends
EV1A = b"data: line one\n: note in event\ndata: li"                  # first half ...
EV1B = b"ne two\nx-trace: abc\ndata: line three\nid: 2\nretry: 1500\n\n"   # ... second write
KEEPALIVE = b": keepalive\n\n"
EV2 = b"event: bye\ndata: last\n\n"
TAIL = b"data: unfinished"                                           # no blank line: unfinished
PIECES = [COMMENT + EV0, EV1A, EV1B, GATE, KEEPALIVE, EV2, TAIL]
RAW = COMMENT + EV0 + EV1A + EV1B + KEEPALIVE + EV2 + TAIL           # the stream as sent
FIRST = COMMENT + EV0                                                # the client has the first event

# what the hooks get: (index, event, data, id, retry)
EVENTS = [(0, "greet", "hello", "1", None),
          (1, None, "line one\nline two\nline three", "2", 1500),
          (2, "bye", "last", None, None)]


def reserialized(event=None, data="", id_=None, retry=None, other=()):
    """An event as the proxy writes a changed one."""
    out = "".join(f"{o}\n" for o in other)
    if event is not None:
        out += f"event: {event}\n"
    if id_ is not None:
        out += f"id: {id_}\n"
    if retry is not None:
        out += f"retry: {retry}\n"
    out += "".join(f"data: {ln}\n" for ln in data.split("\n"))
    return (out + "\n").encode()


EV1_OTHER = (": note in event", "x-trace: abc")


# --------------------------------------------------------------------------- Lua

PRELUDE = r"""
local function esc(s)
  if s == nil then return "nil" end
  return "{{" .. ((tostring(s):gsub("\r", "\\r")):gsub("\n", "\\n")) .. "}}"
end
local function sse_log(tag, msg)
  log.info(string.format("CONF-SSE %s idx=%s event=%s data=%s id=%s retry=%s(%s)", tag,
    tostring(msg.index), esc(msg.event), esc(msg.data), esc(msg.id), tostring(msg.retry),
    type(msg.retry)))
end
"""
V = r"(nil|\{\{.*?\}\})"
LOG_RE = re.compile(rf"CONF-SSE (\S+) idx=(\d+) event={V} data={V} id={V} retry=(\S+)\((\w+)\)")


def _unesc(v):
    if v == "nil":
        return None
    return v[2:-2].replace("\\n", "\n").replace("\\r", "\r")


def calls(t, tag=None, proxy=None):
    """[(tag, index, event, data, id, retry)] of every sse_log line so far, in log order."""
    out = []
    for ln in (proxy or t.proxy).lines():
        m = LOG_RE.search(ln)
        if not m or (tag is not None and m.group(1) != tag):
            continue
        retry = None if m.group(6) == "nil" else int(m.group(6))
        check(retry is None or m.group(7) == "number", f"type(msg.retry) is {m.group(7)}: {ln!r}")
        out.append((m.group(1), int(m.group(2)), _unesc(m.group(3)), _unesc(m.group(4)),
                    _unesc(m.group(5)), retry))
    return out


def wait_calls(t, tag, n, proxy=None, timeout=3.0):
    """The calls of `tag` once there are n of them (bounded), after a settle so that extra
    calls would show; returned without the tag."""
    p = proxy or t.proxy
    p.wait_log(rf"CONF-SSE {re.escape(tag)} ", timeout=timeout, count=n)
    settle(0.3)
    return [c[1:] for c in calls(t, tag, p)]


# --------------------------------------------------------------------------- origin

class SseOrigin:
    """HTTP/1.1 origin on 127.0.0.1:0 (keep-alive) answering every request with one event
    stream written piece by piece.  framing: "chunked" (one chunk per piece),
    "length" (Content-Length, pieces written as they come) or "close" (close-delimited).
    At the i-th GATE it waits for gates[i] (at most GATE_TIMEOUT) and records whether it
    was set; the client sets it (curl_stream) once it has received the bytes before."""

    def __init__(self, pieces=PIECES, status=200, content_type=SSE_TYPE, extra_headers=(),
                 framing="chunked", pause=0.05, ssl_context=None):
        self.pieces, self.status, self.framing, self.pause = list(pieces), status, framing, pause
        self.headers = ([("Content-Type", content_type)] if content_type else []) + \
            [("Cache-Control", "no-cache")] + list(extra_headers)
        self.ssl_context = ssl_context
        self.gates = [threading.Event() for p in self.pieces if p is GATE]
        self.lock = threading.Lock()
        self.requests = []          # (method, target, version, headers)
        self.gate_waits = []        # True: the client had what came before; False: timed out
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(32)
        self.sock.settimeout(0.5)
        self.port = self.sock.getsockname()[1]
        self.stopping = False
        threading.Thread(target=self._accept, daemon=True).start()

    def url(self, path="/events", scheme="http", host="127.0.0.1"):
        return f"{scheme}://{host}:{self.port}{path}"

    def open_gates(self):
        """For clients that do not release gates (raw sockets): no waiting."""
        for g in self.gates:
            g.set()
        return self

    def stop(self):
        self.stopping = True
        self.open_gates()
        try:
            self.sock.close()
        except OSError:
            pass

    def snapshot(self):
        with self.lock:
            return list(self.requests), list(self.gate_waits)

    def _accept(self):
        while not self.stopping:
            try:
                s, _ = self.sock.accept()
            except socket.timeout:
                continue
            except OSError:
                return
            threading.Thread(target=self._serve, args=(s,), daemon=True).start()

    def _serve(self, s):
        try:
            if self.ssl_context is not None:
                s.settimeout(10)
                s = self.ssl_context.wrap_socket(s, server_side=True)
            c = Conn(s, timeout=20)
            for _ in range(100):                 # bounded keep-alive
                head = c.read_head()
                if head is None:
                    return
                lines = head.decode("latin-1").split("\r\n")
                method, target, version = (lines[0].split(" ", 2) + ["", ""])[:3]
                headers = parse_head_lines(lines[1:])
                with self.lock:
                    self.requests.append((method, target, version, headers))
                if not self._respond(s, target):
                    return
        except (OSError, ValueError, ConnectionError):
            return
        finally:
            try:
                s.close()
            except OSError:
                pass

    def _respond(self, s, target) -> bool:
        """Writes one response (`?framing=` in the target overrides the framing); False
        when the connection must close after it."""
        m = re.search(r"[?&]framing=(\w+)", target)
        framing = m.group(1) if m else self.framing
        body = [p for p in self.pieces if p is not GATE]
        head = f"HTTP/1.1 {self.status} {'OK' if self.status == 200 else 'Other'}\r\n"
        head += "".join(f"{k}: {v}\r\n" for k, v in self.headers)
        if framing == "chunked":
            head += "Transfer-Encoding: chunked\r\n"
        elif framing == "length":
            head += f"Content-Length: {sum(map(len, body))}\r\n"
        else:
            head += "Connection: close\r\n"
        s.sendall((head + "\r\n").encode("latin-1"))
        gates = iter(self.gates)
        for p in self.pieces:
            if p is GATE:
                ok = next(gates).wait(GATE_TIMEOUT)
                with self.lock:
                    self.gate_waits.append(ok)
                continue
            time.sleep(self.pause)
            s.sendall(b"%x\r\n%s\r\n" % (len(p), p) if framing == "chunked" else p)
        if framing == "chunked":
            s.sendall(b"0\r\n\r\n")
        return framing != "close"


# --------------------------------------------------------------------------- client

@dataclass
class Streamed:
    rc: int
    err: str
    status: int
    version: str            # "1.0", "1.1", "2" from the status line
    headers: list
    body: bytes
    released: list          # what the client had when it opened each gate


def curl_stream(url, *args, proxy=None, origin=None, release=(FIRST,), timeout=CLIENT_TIMEOUT):
    """curl -N; the body is read from curl's stdout as it arrives and, once it holds
    release[i], origin.gates[i] is set (the origin then sends what follows that GATE)."""
    pending = list(zip(release, origin.gates)) if origin is not None else []
    with tempfile.TemporaryDirectory() as d:
        hfile, efile = os.path.join(d, "h"), os.path.join(d, "e")
        cmd = ["curl", "-sS", "-N", "--globoff", "--max-time", str(timeout), "-D", hfile]
        if proxy:
            cmd += ["-x", f"http://{proxy}"]
        cmd += [*args, url]
        buf, released = bytearray(), []
        with open(efile, "wb") as ef:
            p = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=ef,
                                 env=_clean_env())

            def reader():
                fd = p.stdout.fileno()
                while True:
                    data = os.read(fd, 65536)
                    if not data:
                        return
                    buf.extend(data)
                    while pending and pending[0][0] in buf:
                        released.append(bytes(buf))
                        pending.pop(0)[1].set()

            th = threading.Thread(target=reader, daemon=True)
            th.start()
            try:
                rc = p.wait(timeout=timeout + 5)
            except subprocess.TimeoutExpired:
                p.kill()
                rc = p.wait(timeout=5)
            th.join(5)
            p.stdout.close()
        err = Path(efile).read_text(errors="replace").strip()
        raw_h = Path(hfile).read_bytes().decode("latin-1") if os.path.exists(hfile) else ""
    blocks = [b for b in raw_h.split("\r\n\r\n") if b.strip()]
    status, version, headers = None, "", []
    if blocks:
        lines = blocks[-1].split("\r\n")
        parts = lines[0].split(" ")
        if len(parts) >= 2 and parts[1].isdigit():
            status, version = int(parts[1]), parts[0].split("/", 1)[-1]
        headers = parse_head_lines(lines[1:])
    return Streamed(rc, err, status, version, headers, bytes(buf), released)


def check_stream(s, origin, expected, what, gated=True):
    """curl finished cleanly with a 200 event stream carrying exactly `expected`, and (gated)
    the origin only sent the rest after the client had the first event."""
    eq((s.rc, s.status), (0, 200), f"{what}: curl exit code and status (curl: {s.err})")
    eq(hget(s.headers, "content-type"), SSE_TYPE, f"{what}: content-type at the client")
    eq(hget_all(s.headers, "content-length"), [], f"{what}: content-length at the client")
    eq(s.body, expected, f"{what}: event stream at the client")
    if gated:
        _reqs, waits = origin.snapshot()
        check(waits and waits[0], f"{what}: the origin waited {GATE_TIMEOUT}s for the client to get "
                                  f"the first event before sending the last one, in vain (the proxy "
                                  f"held the stream back); the client had {s.body!r} at the end")


def raw_get(c, url, version="HTTP/1.1", host=None):
    hostport = url.split("/")[2]
    c.send(f"GET {url} {version}\r\nHost: {host or hostport}\r\n\r\n".encode())


def dechunk_exact(c):
    """Reads one chunked body from a RawClient: (body, [chunk sizes])."""
    body, sizes = b"", []
    for _ in range(10000):
        size = int(c.conn.read_line().split(b";")[0].strip(), 16)
        sizes.append(size)
        if size == 0:
            eq(c.conn.read_line(), b"", "end of the chunked body (no trailers)")
            return body, sizes
        body += c.conn.read_exact(size)
        eq(c.conn.read_line(), b"", "chunk terminator")
    raise AssertionError("too many chunks")


# --------------------------------------------------------------------------- the row

ROW_PLUGIN = PRELUDE + """
register_hook("sse", "on_event", function(msg, ctx)
  sse_log("row", msg)
  if msg.index == 1 then msg.data = string.upper(msg.data) end
end)
"""
ROW_EXPECT = (COMMENT + EV0 + reserialized(None, "LINE ONE\nLINE TWO\nLINE THREE", "2", 1500, EV1_OTHER)
              + KEEPALIVE + EV2 + TAIL)


@case("row sse.on_event", plugins={"row_sse.lua": ROW_PLUGIN})
def _row_sse(t):
    o = SseOrigin()
    try:
        s = curl_stream(o.url("/events?n=1"), proxy=t.proxy.addr, origin=o)
        check_stream(s, o, ROW_EXPECT, "first stream")
        eq(wait_calls(t, "row", 3), EVENTS, "sse.on_event calls (index, event, data, id, retry)")
        s = curl_stream(o.url("/events?n=2"), proxy=t.proxy.addr)      # index restarts per response
        check_stream(s, o, ROW_EXPECT, "second stream", gated=False)
        eq(wait_calls(t, "row", 6), EVENTS + EVENTS, "sse.on_event calls after a second stream")
        eq([r[1] for r in o.snapshot()[0]], ["/events?n=1", "/events?n=2"], "targets at the origin")
    finally:
        o.stop()


# --------------------------------------------------------------------------- streaming

@case("sse streaming: every event, re-serialized too, reaches the client before the next is sent",
      plugins={"sse_stream.lua": PRELUDE + """
register_hook("sse", "on_event", function(msg, ctx)
  sse_log("st", msg)
  msg.data = "#" .. msg.index .. " " .. msg.data
end)
"""})
def _streaming(t):
    # the origin sends b only once the client has a, c only once it has b
    o = SseOrigin([b"data: a\n\n", GATE, b"data: b\r\n\r\n", GATE, b"data: c\n\n"], pause=0.02)
    try:
        s = curl_stream(o.url(), proxy=t.proxy.addr, origin=o,
                        release=(b"data: #0 a\n\n", b"data: #1 b\n\n"))
        waits = o.snapshot()[1]
    finally:
        o.stop()
    eq((s.rc, s.status), (0, 200), f"curl exit code and status (curl: {s.err})")
    eq(s.body, b"data: #0 a\n\ndata: #1 b\n\ndata: #2 c\n\n", "event stream at the client")
    eq(waits, [True, True], "the origin's waits for the client to have event 0, then event 1 "
                            "(False: the proxy held the event back)")
    eq(s.released, [b"data: #0 a\n\n", b"data: #0 a\n\ndata: #1 b\n\n"],
       "what the client had when it released each gate")
    eq(wait_calls(t, "st", 3), [(0, None, "a", None, None), (1, None, "b", None, None),
                                (2, None, "c", None, None)], "sse.on_event calls")


# --------------------------------------------------------------------------- phases, chains

@case("sse phases: pre_pipeline then post_pipeline, post sees the pre change", plugins={
    "sse_phases.lua": PRELUDE + """
-- post_pipeline registered first: phases order the hooks, not registration
register_hook("sse", "on_event", function(msg, ctx)
  sse_log("post", msg)
  msg.data = msg.data .. " [post]"
end, { phase = "post_pipeline" })
register_hook("sse", "on_event", function(msg, ctx)
  sse_log("pre", msg)
  msg.data = msg.data .. " [pre]"
  if msg.index == 0 then msg.id = "pre-id" end
end, { phase = "pre_pipeline" })
"""})
def _phases(t):
    o = SseOrigin()
    first = reserialized("greet", "hello [pre] [post]", "pre-id")
    try:
        s = curl_stream(o.url(), proxy=t.proxy.addr, origin=o, release=(COMMENT + first,))
    finally:
        o.stop()
    expect = (COMMENT + first
              + reserialized(None, "line one\nline two\nline three [pre] [post]", "2", 1500, EV1_OTHER)
              + KEEPALIVE + reserialized("bye", "last [pre] [post]") + TAIL)
    check_stream(s, o, expect, "stream")
    t.proxy.wait_log(r"CONF-SSE post idx=2", count=1)
    settle(0.3)                                   # further calls would show
    seq = [(c[0], c[1]) for c in calls(t)]
    eq(seq, [("pre", 0), ("post", 0), ("pre", 1), ("post", 1), ("pre", 2), ("post", 2)],
       "(phase, index) of the hook calls, in order")
    eq([c[1:] for c in calls(t, "pre")], EVENTS, "what the pre_pipeline hook saw (the event as sent)")
    eq([c[1:] for c in calls(t, "post")],
       [(0, "greet", "hello [pre]", "pre-id", None),
        (1, None, "line one\nline two\nline three [pre]", "2", 1500),
        (2, "bye", "last [pre]", None, None)], "what the post_pipeline hook saw")


def appender(tag, extra=""):
    return f"""register_hook("sse", "on_event", function(msg, ctx)
  sse_log("{tag}", msg)
  msg.data = msg.data .. ",{tag}"{extra}
end)
"""


@case("sse chain order across two files and within a file; every field writable", plugins={
    "zeta.lua": PRELUDE + appender("z1", """
  if msg.index == 0 then msg.event = nil; msg.retry = 3000 end
  if msg.index == 1 then msg.id = nil; msg.retry = nil; msg.event = "upd" end
  if msg.index == 2 then msg.id = "z-id" end""") + appender("z2"),
    "alpha.lua": PRELUDE + appender("a1")})
def _chains(t):
    # zeta.lua is loaded first (--plugin order), although it sorts after alpha.lua
    o = SseOrigin()
    try:
        s = curl_stream(o.url(), proxy=t.proxy.addr, origin=o,
                        release=(COMMENT + b"id: 1\nretry: 3000\ndata: hello,z1,z2,a1\n\n",))
    finally:
        o.stop()
    expect = (COMMENT + reserialized(None, "hello,z1,z2,a1", "1", 3000)
              + reserialized("upd", "line one\nline two\nline three,z1,z2,a1", None, None, EV1_OTHER)
              + KEEPALIVE + reserialized("bye", "last,z1,z2,a1", "z-id") + TAIL)
    check_stream(s, o, expect, "stream")
    t.proxy.wait_log(r"CONF-SSE a1 idx=2", count=1)
    settle(0.3)                                   # further calls would show
    eq([(c[0], c[1]) for c in calls(t)],
       [(tag, i) for i in range(3) for tag in ("z1", "z2", "a1")], "(hook, index) of the calls, in order")
    eq([c[1:] for c in calls(t, "z2")],
       [(0, None, "hello,z1", "1", 3000),
        (1, "upd", "line one\nline two\nline three,z1", None, None),
        (2, "bye", "last,z1", "z-id", None)], "what the second hook of zeta.lua saw")
    eq([c[1:] for c in calls(t, "a1")],
       [(0, None, "hello,z1,z2", "1", 3000),
        (1, "upd", "line one\nline two\nline three,z1,z2", None, None),
        (2, "bye", "last,z1,z2", "z-id", None)], "what the hook of alpha.lua saw")


# --------------------------------------------------------------------------- errors

@case("sse on_error skip: logged, next hook runs; bad event/id/retry values are hook errors",
      plugins={"sse_err_skip.lua": PRELUDE + """
local function explode()
  error("conf-sse-kaboom-skip")
end
register_hook("sse", "on_event", function(msg, ctx)
  if msg.index == 0 then
    msg.data = "before-error"
    explode()
  elseif msg.index == 1 then
    msg.id = "evil\\ndata: injected-by-id"
  elseif msg.index == 2 then
    msg.event = "evil\\r\\ndata: injected-by-event"
  end
end, { name = "sse-exploder" })
register_hook("sse", "on_event", function(msg, ctx)
  if msg.index == 1 then msg.retry = 2.5 end              -- not an integer: a hook error
  if msg.index == 2 then msg.retry = -1 end               -- negative: a hook error
end)
register_hook("sse", "on_event", function(msg, ctx)
  sse_log("next", msg)
end)
"""})
def _err_skip(t):
    o = SseOrigin()
    try:
        s = curl_stream(o.url(), proxy=t.proxy.addr, origin=o,
                        release=(COMMENT + b"event: greet\nid: 1\ndata: before-error\n\n",))
    finally:
        o.stop()
    # event 0 goes on as mutated before the error; the refused assignments changed nothing
    expect = COMMENT + reserialized("greet", "before-error", "1") + EV1A + EV1B + KEEPALIVE + EV2 + TAIL
    check_stream(s, o, expect, "stream")
    check(b"injected" not in s.body, "a field with a line break reached the client")
    eq(wait_calls(t, "next", 3), [(0, "greet", "before-error", "1", None)] + EVENTS[1:],
       "what the next hook saw (it ran for every event)")
    t.proxy.expect_log(r"conf-sse-kaboom-skip", what="the error message")
    log = "\n".join(t.proxy.lines())
    check("sse_err_skip" in log, "the error log does not name the plugin sse_err_skip")
    check(re.search(r"traceback", log, re.I), "the error log has no Lua traceback")
    check("explode" in log, "the traceback does not show the function that raised (explode)")
    lines = t.proxy.find(r"ERROR.*line break")
    eq(len(lines), 2, f"hook errors about a line break in id, then event ({lines})")
    check(re.search(r"\bid\b", lines[0]) and re.search(r"\bevent\b", lines[1]),
          f"the errors do not name the field (id, then event): {lines}")
    lines = t.proxy.find(r"ERROR.*\bretry\b")
    eq(len(lines), 2, f"hook errors about a retry of 2.5, then -1 ({lines})")


@case("sse on_error abort: rest of the chain skipped, event goes on as mutated", plugins={
    "sse_err_abort.lua": PRELUDE + """
register_hook("sse", "on_event", function(msg, ctx)
  msg.data = msg.data .. " [before-abort]"
  error("conf-sse-kaboom-abort")
end, { on_error = "abort" })
register_hook("sse", "on_event", function(msg, ctx)
  sse_log("same-file", msg)
  msg.data = "must-not-be-sent"
end)
""", "sse_err_abort_later.lua": PRELUDE + """
register_hook("sse", "on_event", function(msg, ctx)
  sse_log("other-file", msg)
  msg.data = "must-not-be-sent"
end)
register_hook("sse", "on_event", function(msg, ctx)
  sse_log("post", msg)     -- another chain (phase): abort does not skip it
end, { phase = "post_pipeline" })
"""})
def _err_abort(t):
    o = SseOrigin()
    try:
        s = curl_stream(o.url(), proxy=t.proxy.addr, origin=o,
                        release=(COMMENT + b"event: greet\nid: 1\ndata: hello [before-abort]\n\n",))
    finally:
        o.stop()
    expect = (COMMENT + reserialized("greet", "hello [before-abort]", "1")
              + reserialized(None, "line one\nline two\nline three [before-abort]", "2", 1500, EV1_OTHER)
              + KEEPALIVE + reserialized("bye", "last [before-abort]") + TAIL)
    check_stream(s, o, expect, "stream")
    eq(wait_calls(t, "post", 3),
       [(0, "greet", "hello [before-abort]", "1", None),
        (1, None, "line one\nline two\nline three [before-abort]", "2", 1500),
        (2, "bye", "last [before-abort]", None, None)], "what the post_pipeline hook saw")
    eq([c for c in calls(t) if c[0] != "post"], [], "calls of the pre_pipeline hooks after the aborting one")
    eq(len(t.proxy.find(r"conf-sse-kaboom-abort")), 3, "error log lines (one per event)")


# --------------------------------------------------------------------------- demotions

def demotion_logged_once(t, stem, action):
    """Exactly one stderr line names the plugin and the demoted action (and the row)."""
    pattern = rf"{stem}.*\b{action}\b|\b{action}\b.*{stem}"
    t.proxy.expect_log(pattern, what=f"demotion of {action} from {stem}")
    settle(0.4)
    lines = t.proxy.find(pattern)
    eq(len(lines), 1, f"log lines about the demoted {action} of {stem} ({lines})")
    check("sse.on_event" in lines[0], f"the demotion line does not name sse.on_event: {lines[0]!r}")


def demote_plugin(act):
    return PRELUDE + f"""
register_hook("sse", "on_event", function(msg, ctx)
  return action.{act}
end)
register_hook("sse", "on_event", function(msg, ctx)
  sse_log("after", msg)      -- demoted to CONTINUE: the chain goes on
end)
"""


def demoted_stream_unchanged(t, stem, action):
    o = SseOrigin()
    try:
        s = curl_stream(o.url(), proxy=t.proxy.addr, origin=o)
    finally:
        o.stop()
    check_stream(s, o, RAW, "stream (unchanged, byte for byte)")
    check(b"must not be sent" not in s.body, "the demoted RESPOND body reached the client")
    eq(wait_calls(t, "after", 3), EVENTS, "calls of the hook after the demoted one")
    demotion_logged_once(t, stem, action)


@case("demote DROP from sse.on_event", plugins={"demote_sse_drop.lua": demote_plugin("DROP")})
def _demote_drop(t):
    demoted_stream_unchanged(t, "demote_sse_drop", "DROP")


@case("demote RESPOND from sse.on_event", plugins={"demote_sse_respond.lua": demote_plugin(
    'RESPOND{ status = 403, body = "must not be sent" }')})
def _demote_respond(t):
    demoted_stream_unchanged(t, "demote_sse_respond", "RESPOND")


# --------------------------------------------------------------------------- not cut

LOGGER = PRELUDE + """
register_hook("sse", "on_event", function(msg, ctx)
  sse_log("seen", msg)
  msg.data = "rewritten"
end)
"""


@case("sse comment-only blocks pass through without the hook", plugins={"sse_comments.lua": LOGGER})
def _comments(t):
    only = [b": keepalive\n\n", b": ping\r\n\r\n", b":\n\n", b"\n", b": bye\n\n"]
    o1, o2 = SseOrigin(only), SseOrigin(only[:2] + [b"data: after comments\n\n", b": tail\n\n"])
    try:
        s = curl_stream(o1.url(), proxy=t.proxy.addr)
        check_stream(s, o1, b"".join(only), "a stream of comments only", gated=False)
        settle(0.3)
        eq(calls(t), [], "sse.on_event calls for comment-only blocks")
        s = curl_stream(o2.url(), proxy=t.proxy.addr)     # the hook is live: one event, index 0
        check_stream(s, o2, b"".join(only[:2]) + b"data: rewritten\n\n: tail\n\n", "comments and one event",
                     gated=False)
        eq(wait_calls(t, "seen", 1), [(0, None, "after comments", None, None)],
           "sse.on_event calls (comment blocks do not count in index)")
    finally:
        o1.stop()
        o2.stop()


@case("sse gzip-encoded event stream passes without the hook", plugins={"sse_gzip.lua": LOGGER})
def _gzip(t):
    z = gzip.compress(RAW)
    n = len(z) // 3
    o = SseOrigin([z[:n], z[n:2 * n], z[2 * n:]], extra_headers=[("Content-Encoding", "gzip")])
    try:
        s = curl_stream(o.url(), proxy=t.proxy.addr)          # no --compressed: the bytes as sent
        check_stream(s, o, z, "gzip stream", gated=False)
        eq(hget(s.headers, "content-encoding"), "gzip", "content-encoding at the client")
        s = curl_stream(o.url(), "--compressed", proxy=t.proxy.addr)
        eq((s.rc, s.body), (0, RAW), f"curl --compressed: exit code and decoded stream (curl: {s.err})")
    finally:
        o.stop()
    settle(0.3)
    eq(calls(t), [], "sse.on_event calls for a gzip-encoded stream")


@case("sse only 200 text/event-stream responses are cut (status, media type, parameters, case)",
      plugins={"sse_which.lua": LOGGER})
def _which(t):
    body, fired = [b"data: x\n\n"], 0
    for status, ctype, cut in ((201, SSE_TYPE, False), (200, "text/plain", False),
                               (200, "text/event-streams", False), (200, None, False),
                               (200, "text/event-stream", True),
                               (200, 'Text/Event-Stream ; charset="utf-8"', True)):
        o = SseOrigin(body, status=status, content_type=ctype)
        try:
            s = curl_stream(o.url(), proxy=t.proxy.addr)
        finally:
            o.stop()
        what = f"status {status}, content-type {ctype!r}"
        eq((s.rc, s.status), (0, status), f"{what}: curl exit code and status (curl: {s.err})")
        eq(s.body, b"data: rewritten\n\n" if cut else body[0], f"{what}: body at the client")
        fired += cut
        settle(0.2)
        eq(len(calls(t)), fired, f"{what}: sse.on_event calls so far")


@case("sse without an sse.on_event hook the stream is untouched, framing included",
      plugins={"sse_none.lua": """
register_hook("http", "on_response", function(msg, ctx)
  msg.headers:set("x-resp-hook", "1")
end)
"""})
def _no_hook(t):
    o = SseOrigin(framing="length").open_gates()
    c = t.raw()
    try:
        raw_get(c, o.url())
        status, _r, headers, body, _tr = c.read_response()
    finally:
        c.close()
        o.stop()
    eq(status, 200, "status")
    eq(hget(headers, "x-resp-hook"), "1", "http.on_response ran")
    eq((hget(headers, "content-length"), hget(headers, "transfer-encoding")), (str(len(RAW)), None),
       "(content-length, transfer-encoding) at the client")
    eq(body, RAW, "event stream at the client")


# --------------------------------------------------------------------------- framing

@case("sse HTTP/1.1 client: chunked, Content-Length removed, keep-alive kept",
      plugins={"sse_h11.lua": ROW_PLUGIN})
def _h11_framing(t):
    o_len, o_close = SseOrigin(framing="length").open_gates(), SseOrigin(framing="close").open_gates()
    c = t.raw()
    try:
        # one client connection: a Content-Length origin twice, then a close-delimited one
        # (whose end the proxy announces with Connection: close, then closes)
        for o, what in ((o_len, "Content-Length origin"), (o_len, "Content-Length origin, same connection"),
                        (o_close, "close-delimited origin, same connection")):
            raw_get(c, o.url())
            head = c.conn.read_head()
            check(head is not None, f"{what}: no response (the proxy closed the client connection)")
            lines = head.decode("latin-1").split("\r\n")
            check(lines[0].startswith("HTTP/1.1 200"), f"{what}: status line {lines[0]!r}")
            h = parse_head_lines(lines[1:])
            eq(hget_all(h, "content-length"), [], f"{what}: content-length at the client")
            eq(hget(h, "transfer-encoding"), "chunked", f"{what}: transfer-encoding at the client")
            eq(hget(h, "content-type"), SSE_TYPE, f"{what}: content-type at the client")
            body, sizes = dechunk_exact(c)
            eq(body, ROW_EXPECT, f"{what}: event stream at the client")
            check(len(sizes) > 2, f"{what}: the stream came in one chunk ({sizes}), not as it streamed")
        eq((hget(h, "connection") or "").lower(), "close", "connection header after a close-delimited upstream")
        rest, closed = c.read_until_closed(timeout=5)
        check(closed and rest == b"", f"the proxy did not close after Connection: close ({rest[:100]!r})")
    finally:
        c.close()
        o_len.stop()
        o_close.stop()
    eq(wait_calls(t, "row", 9), EVENTS * 3, "sse.on_event calls (index restarts per response)")
    eq(len(o_len.snapshot()[0]), 2, "requests at the Content-Length origin")


@case("sse HTTP/1.0 client (curl -0): close-delimited stream", plugins={"sse_h10.lua": ROW_PLUGIN})
def _h10(t):
    o = SseOrigin()
    try:
        s = curl_stream(o.url(), "-0", proxy=t.proxy.addr, origin=o)
        check_stream(s, o, ROW_EXPECT, "curl -0")
        eq(hget_all(s.headers, "transfer-encoding"), [], "transfer-encoding to an HTTP/1.0 client")
        eq(wait_calls(t, "row", 3), EVENTS, "sse.on_event calls")
        c = t.raw()                                   # the exact bytes, and the close
        o.open_gates()
        try:
            raw_get(c, o.url("/raw10"), version="HTTP/1.0")
            data, closed = c.read_until_closed(timeout=10)
        finally:
            c.close()
    finally:
        o.stop()
    check(closed, f"the proxy did not close the HTTP/1.0 connection after the stream: {data[-200:]!r}")
    head, sep, body = data.partition(b"\r\n\r\n")
    check(sep, f"no response head: {data[:300]!r}")
    h = parse_head_lines(head.decode("latin-1").split("\r\n")[1:])
    eq((hget(h, "content-length"), hget(h, "transfer-encoding")), (None, None),
       "(content-length, transfer-encoding) to a raw HTTP/1.0 client")
    eq(body, ROW_EXPECT, "event stream at the raw HTTP/1.0 client (close-delimited)")


# --------------------------------------------------------------------------- HTTP/2, CONNECT

def need_curl_http2():
    p = subprocess.run(["curl", "--version"], capture_output=True, timeout=10)
    if b"HTTP2" not in p.stdout:
        raise Pending("curl without HTTP/2 support")


@case("sse over HTTP/2 (reverse mode, curl --http2-prior-knowledge)", proxy=False,
      plugins={"sse_h2.lua": ROW_PLUGIN})
def _h2_reverse(t):
    need_curl_http2()
    o = SseOrigin()
    try:
        proxy = t.start_proxy(["--mode", f"reverse:http://127.0.0.1:{o.port}",
                               "--plugin", str(t.plugin_paths["sse_h2.lua"])])
        s = curl_stream(f"http://{proxy.addr}/events?h2=1", "--http2-prior-knowledge", origin=o)
        eq(s.version, "2", f"HTTP version between curl and the proxy (curl: {s.err})")
        check_stream(s, o, ROW_EXPECT, "h2 stream")
        eq(wait_calls(t, "row", 3, proxy=proxy), EVENTS, "sse.on_event calls")
        o.open_gates()
        for framing in ("length", "close"):                  # Content-Length dropped; EOF ends it
            s = curl_stream(f"http://{proxy.addr}/events?framing={framing}", "--http2-prior-knowledge")
            eq(s.version, "2", f"{framing} origin: HTTP version (curl: {s.err})")
            check_stream(s, o, ROW_EXPECT, f"h2 stream from a {framing} origin", gated=False)
        eq(wait_calls(t, "row", 9, proxy=proxy), EVENTS * 3, "sse.on_event calls after three streams")
        eq([r[1] for r in o.snapshot()[0]], ["/events?h2=1", "/events?framing=length", "/events?framing=close"],
           "targets at the origin")
    finally:
        o.stop()


def tunnel_setup(t, plugin):
    """A PKI for the origin, the proxy's CA exported, and a proxy trusting the origin."""
    ca, cert, key = make_pki(t.tmp)
    conf = str(t.tmp / "confdir")
    luring_ca = str(t.tmp / "luring-ca.pem")
    rc, out = run_cli(t.bin, ["ca", "export", "--confdir", conf, "--format", "pem", "--out", luring_ca])
    eq(rc, 0, f"luring ca export ({out})")
    proxy = t.start_proxy(["--confdir", conf, "--upstream-ca", ca, "--plugin", str(t.plugin_paths[plugin])])
    return proxy, luring_ca, cert, key


@case("sse in an intercepted CONNECT tunnel (HTTP/1.1)", proxy=False, plugins={"sse_tunnel.lua": ROW_PLUGIN})
def _tunnel_h1(t):
    proxy, luring_ca, cert, key = tunnel_setup(t, "sse_tunnel.lua")
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(cert, key)
    ctx.set_alpn_protocols(["http/1.1"])
    o = SseOrigin(ssl_context=ctx)
    try:
        s = curl_stream(o.url("/events?tls=1", "https", "localhost"), "--http1.1", "--cacert", luring_ca,
                        proxy=proxy.addr, origin=o)
        eq(s.version, "1.1", f"HTTP version between curl and the proxy (curl: {s.err})")
        check_stream(s, o, ROW_EXPECT, "stream in the tunnel")
        eq(wait_calls(t, "row", 3, proxy=proxy), EVENTS, "sse.on_event calls")
        eq([r[1] for r in o.snapshot()[0]], ["/events?tls=1"], "targets at the origin")
    finally:
        o.stop()


@case("sse in an intercepted CONNECT tunnel, HTTP/2 on both sides (nghttpd origin)", proxy=False,
      plugins={"sse_tunnel_h2.lua": ROW_PLUGIN})
def _tunnel_h2(t):
    need_curl_http2()
    if shutil.which("nghttpd") is None:
        raise Pending("nghttpd not found (apt nghttp2-server)")
    proxy, luring_ca, cert, key = tunnel_setup(t, "sse_tunnel_h2.lua")
    root = t.tmp / "h2root"
    root.mkdir()
    (root / "stream.sse").write_bytes(RAW)
    (root / "stream.gz.sse").write_bytes(gzip.compress(RAW))
    mime = t.tmp / "mime.types"
    mime.write_text(f"{SSE_TYPE.split(';')[0]}\tsse\n")
    s0 = socket.socket()
    s0.bind(("127.0.0.1", 0))
    port = s0.getsockname()[1]
    s0.close()
    ngh = subprocess.Popen(["nghttpd", "-a", "127.0.0.1", "--no-content-length", "--mime-types-file",
                            str(mime), "-d", str(root), str(port), key, cert],
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
                break
            except OSError:
                check(time.monotonic() < deadline, "nghttpd did not listen")
                time.sleep(0.05)
        s = curl_stream(f"https://localhost:{port}/stream.sse", "--http2", "--cacert", luring_ca,
                        proxy=proxy.addr)
        eq(s.version, "2", f"HTTP version between curl and the proxy (curl: {s.err})")
        eq((s.rc, s.status), (0, 200), f"curl exit code and status (curl: {s.err})")
        eq(hget(s.headers, "content-type"), "text/event-stream", "content-type at the client")
        eq(s.body, ROW_EXPECT, "event stream at the client")
        eq(wait_calls(t, "row", 3, proxy=proxy), EVENTS, "sse.on_event calls")
    finally:
        ngh.kill()
        ngh.wait(timeout=5)
