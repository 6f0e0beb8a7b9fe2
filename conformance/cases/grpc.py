"""The gRPC layer (grpc.on_start, grpc.on_data, grpc.on_end; spec sections 2-4, guide
docs/plugins.md "gRPC calls") for native gRPC over HTTP/2.

A call (content-type application/grpc) runs, in each phase, http.on_request then
grpc.on_start (GRPCStartMessage: metadata and path rw; CONTINUE, DROP, RESPOND,
RESPOND_GRPC) around the pipeline steps; then each length-prefixed message, in each
direction, runs grpc.on_data (GRPCDataMessage: payload rw after grpc-encoding
decompression, index per direction, msg:cancel; CONTINUE only); grpc.on_end (frozen
GRPCEndMessage dict) fires once per call, from the trailers (or a trailers-only
answer), or with status 2 when the call ends abnormally.

Client and server are python grpcio (raw bytes, no protobuf), each in its own process
(grpcio's fork handlers stay out of the runner): `GrpcServer` (SERVER_PY) records every
call it routes (method path, metadata) and every request message (length, sha256, hex)
as JSON lines; a client script (CLIENT_PRELUDE + the case's body) prints one JSON line
per call (response, status code, details, trailing metadata).  The proxy runs in reverse
mode (`--mode reverse:http://127.0.0.1:PORT`, h2c on both sides), and one case goes
through a CONNECT tunnel (grpcio's `grpc.http_proxy`, h2c inside).  Hooks report what
they saw through `CONF-GRPC-*` log lines (payloads and messages in hex).  The rows are
here ("row grpc.on_start", ...), not in rows.py.  PENDING without grpcio.
With CONF_GRPC_DEBUG=1 in the environment, each client call's outcome goes to stderr.

The grpc-web rows are in grpc_web.py.
"""

import hashlib
import importlib.util
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time

from harness import Pending, CaseFail, _clean_env, case, check, eq, settle

IO = 5.0                 # every wait below is bounded by this (or a little more)
DEBUG = bool(os.environ.get("CONF_GRPC_DEBUG"))   # print each client call's outcome to stderr
CLIENT_TIMEOUT = 20      # one client process, all its calls


def need_grpc():
    if importlib.util.find_spec("grpc") is None:
        raise Pending("python grpcio not installed")


# --------------------------------------------------------------------------- server

SERVER_PY = r'''
import hashlib, json, sys, threading, time
from concurrent import futures
import grpc

_lock = threading.Lock()
def rec(**kw):
    with _lock:
        sys.stdout.write(json.dumps(kw) + "\n")
        sys.stdout.flush()

def data(method, b):
    rec(ev="msg", method=method, len=len(b), sha=hashlib.sha256(b).hexdigest(),
        data=b.hex() if len(b) <= 4096 else None)

def say(req, ctx):
    data("Say", req)
    ctx.set_trailing_metadata((("x-trail", "t1"), ("x-trail-bin", b"\x00\xff")))
    return b"echo:" + req

def other(req, ctx):
    data("Other", req)
    return b"other:" + req

def stream(req, ctx):
    data("Stream", req)
    for i in range(3):
        yield b"part%d:" % i + req

def slow(req, ctx):
    # two parts, then up to 3 s for the client side to go away (a reset from the proxy).
    # The reset is seen by a termination callback: when it comes before grpcio asks
    # this generator for its next part, grpcio never resumes the generator at all.
    data("Slow", req)
    finished = []
    ctx.add_callback(lambda: finished or rec(ev="cancelled", method="Slow"))
    yield b"part0:" + req
    yield b"part1:" + req
    for _ in range(60):
        if not ctx.is_active():
            return
        time.sleep(0.05)
    finished.append(True)
    rec(ev="not-cancelled", method="Slow")
    yield b"part2:" + req

def hang(req, ctx):
    # one part, then nothing for 10 s: the case kills this process meanwhile
    data("Hang", req)
    finished = []
    ctx.add_callback(lambda: finished or rec(ev="cancelled", method="Hang"))
    yield b"first:" + req
    for _ in range(200):
        if not ctx.is_active():
            return
        time.sleep(0.05)
    finished.append(True)
    yield b"late:" + req

def bidi(it, ctx):
    for m in it:
        data("Bidi", m)
        yield b"re:" + m

def fail(req, ctx):
    data("Fail", req)
    ctx.abort(grpc.StatusCode.NOT_FOUND, "nope")

def big(req, ctx):
    data("Big", req)
    return req[::-1]

def gz(req, ctx):
    data("Gz", req)
    ctx.set_compression(grpc.Compression.Gzip)
    return b"y" * 1000 + b"-srv"

U, S, B = grpc.unary_unary_rpc_method_handler, grpc.unary_stream_rpc_method_handler, grpc.stream_stream_rpc_method_handler
METHODS = {
    "/t.Echo/Say": U(say), "/t.Echo/Other": U(other), "/t.Echo/Drop": U(say),
    "/t.Echo/Deny": U(say), "/t.Echo/Refuse": U(say), "/t.Echo/Stream": S(stream),
    "/t.Echo/Slow": S(slow), "/t.Echo/Hang": S(hang), "/t.Echo/Bidi": B(bidi),
    "/t.Echo/Fail": U(fail), "/t.Echo/Big": U(big), "/t.Echo/Gz": U(gz),
}

class Handler(grpc.GenericRpcHandler):
    def service(self, d):
        rec(ev="call", method=d.method,
            md=[[k, v.hex() if isinstance(v, bytes) else v] for k, v in d.invocation_metadata])
        return METHODS.get(d.method)

server = grpc.server(futures.ThreadPoolExecutor(8), handlers=(Handler(),))
port = server.add_insecure_port("127.0.0.1:0")
server.start()
rec(ev="port", port=port)
server.wait_for_termination(60)
'''


class GrpcServer:
    """A grpcio server process (SERVER_PY) on 127.0.0.1; what it routed and received is
    kept as records (dicts) in arrival order."""

    def __init__(self):
        self.lock = threading.Lock()
        self.recs = []
        self.err = []
        self.p = subprocess.Popen([sys.executable, "-c", SERVER_PY], stdin=subprocess.DEVNULL,
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                  env=_clean_env(), start_new_session=True)
        threading.Thread(target=self._pump, daemon=True).start()
        threading.Thread(target=self._pump_err, daemon=True).start()
        self.port = None
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            got = self.records("port")
            if got:
                self.port = got[0]["port"]
                return
            if self.p.poll() is not None:
                break
            time.sleep(0.02)
        self.stop()
        raise CaseFail(f"the grpcio server did not start: {' | '.join(self.err[-10:])}")

    def _pump(self):
        for raw in iter(self.p.stdout.readline, b""):
            try:
                r = json.loads(raw)
            except ValueError:
                continue
            with self.lock:
                self.recs.append(r)

    def _pump_err(self):
        for raw in iter(self.p.stderr.readline, b""):
            self.err.append(raw.decode("utf-8", "replace").rstrip())

    def records(self, ev=None, method=None):
        with self.lock:
            return [r for r in self.recs if (ev is None or r["ev"] == ev)
                    and (method is None or r.get("method") == method)]

    def wait(self, ev, n=1, method=None, timeout=IO):
        deadline = time.monotonic() + timeout
        while True:
            got = self.records(ev, method)
            if len(got) >= n or time.monotonic() >= deadline:
                return got
            time.sleep(0.02)

    def calls(self):
        """Method paths of the calls the server routed, in order."""
        return [r["method"] for r in self.records("call")]

    def call_md(self, method):
        """The metadata of the one call to `method` (name, value) in order; -bin values as bytes."""
        cs = [r for r in self.records("call") if r["method"] == method]
        eq(len(cs), 1, f"calls of {method} at the server ({self.calls()})")
        return [(k, bytes.fromhex(v) if k.endswith("-bin") else v) for k, v in cs[0]["md"]]

    def messages(self, method):
        """Request messages the server got for `method` (bytes; a long one as (len, sha256))."""
        return [bytes.fromhex(r["data"]) if r["data"] is not None else (r["len"], r["sha"])
                for r in self.records("msg", method)]

    def kill(self):
        if self.p.poll() is None:
            os.killpg(self.p.pid, signal.SIGKILL)
        self.p.wait(timeout=5)

    def stop(self):
        if self.p.poll() is None:
            try:
                os.killpg(self.p.pid, signal.SIGKILL)
            except OSError:
                pass
        try:
            self.p.wait(timeout=5)
        except subprocess.TimeoutExpired:
            pass


def md_all(md, name):
    return [v for (k, v) in md if k == name]


# --------------------------------------------------------------------------- client

CLIENT_PRELUDE = r'''
import json, sys, time, grpc
target, proxy = sys.argv[1], sys.argv[2]
if proxy != "-":
    opts = [("grpc.http_proxy", "http://" + proxy), ("grpc.enable_http_proxy", 1)]
else:
    opts = [("grpc.enable_http_proxy", 0)]
ch = grpc.insecure_channel(target, options=opts)

def enc(md):
    return [[k, v.hex() if isinstance(v, bytes) else v] for k, v in (md or ())]

def out(**kw):
    print(json.dumps(kw), flush=True)

def err(e, **kw):
    return dict(ok=False, code=e.code().name, details=e.details(),
                trailing=enc(e.trailing_metadata()), **kw)

def unary(method, req, md=None, timeout=5, **kw):
    try:
        resp, call = ch.unary_unary(method).with_call(req, metadata=md, timeout=timeout, **kw)
        return dict(ok=True, resp=resp.hex(), code=call.code().name, details=call.details(),
                    trailing=enc(call.trailing_metadata()))
    except grpc.RpcError as e:
        return err(e)

def stream(method, req, md=None, timeout=5, first=None, **kw):
    msgs = []
    it = ch.unary_stream(method)(req, metadata=md, timeout=timeout, **kw)
    try:
        for m in it:
            msgs.append(m.hex())
            if first is not None and len(msgs) == 1:
                out(first=first)
        return dict(ok=True, msgs=msgs, code=it.code().name, details=it.details(),
                    trailing=enc(it.trailing_metadata()))
    except grpc.RpcError as e:
        return err(e, msgs=msgs)

def bidi(method, reqs, md=None, timeout=5, **kw):
    msgs = []
    it = ch.stream_stream(method)(iter(reqs), metadata=md, timeout=timeout, **kw)
    try:
        for m in it:
            msgs.append(m.hex())
        return dict(ok=True, msgs=msgs, code=it.code().name, details=it.details(),
                    trailing=enc(it.trailing_metadata()))
    except grpc.RpcError as e:
        return err(e, msgs=msgs)
'''


class Result(dict):
    """One call's outcome: ok, code, details, resp (bytes) or msgs ([bytes]), trailing."""

    def __getattr__(self, k):
        return self.get(k)


def _result(d):
    r = Result(d)
    if "resp" in r:
        r["resp"] = bytes.fromhex(r["resp"])
    if "msgs" in r:
        r["msgs"] = [bytes.fromhex(m) for m in r["msgs"]]
    r["trailing"] = [(k, bytes.fromhex(v) if k.endswith("-bin") else v) for k, v in r.get("trailing") or []]
    return r


def run_client(body, target, proxy="-", timeout=CLIENT_TIMEOUT):
    """Runs CLIENT_PRELUDE + body; returns the JSON lines it printed, as Results."""
    try:
        p = subprocess.run([sys.executable, "-c", CLIENT_PRELUDE + body, target, proxy],
                           stdin=subprocess.DEVNULL, capture_output=True, timeout=timeout,
                           env=_clean_env())
    except subprocess.TimeoutExpired as e:
        raise CaseFail(f"the grpcio client did not finish within {timeout}s; "
                       f"stdout {(e.stdout or b'')[-500:]!r}")
    if p.returncode != 0:
        raise CaseFail(f"the grpcio client failed (rc {p.returncode}): "
                       f"{p.stderr.decode('utf-8', 'replace')[-800:]}")
    res = [_result(json.loads(ln)) for ln in p.stdout.decode().splitlines() if ln.strip()]
    if DEBUG:
        for r in res:
            print("    grpc client:", {k: (v[:60] if isinstance(v, bytes) else v) for k, v in r.items()},
                  file=sys.stderr)
    return res


class Client:
    """A client process whose lines are read as they come (for a case that acts mid-call)."""

    def __init__(self, body, target, proxy="-"):
        self.lines = []
        self.lock = threading.Lock()
        self.p = subprocess.Popen([sys.executable, "-c", CLIENT_PRELUDE + body, target, proxy],
                                  stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                  stderr=subprocess.PIPE, env=_clean_env(), start_new_session=True)
        threading.Thread(target=self._pump, daemon=True).start()

    def _pump(self):
        for raw in iter(self.p.stdout.readline, b""):
            try:
                d = json.loads(raw)
            except ValueError:
                continue
            with self.lock:
                self.lines.append(d)

    def wait_line(self, key, timeout=IO):
        """The first line with `key` (bounded wait)."""
        deadline = time.monotonic() + timeout
        while True:
            with self.lock:
                got = [d for d in self.lines if key in d]
            if got:
                return got[0]
            if time.monotonic() >= deadline or self.p.poll() is not None:
                time.sleep(0.1)           # the reader may still hold a last line
                with self.lock:
                    got = [d for d in self.lines if key in d]
                if got:
                    return got[0]
                raise CaseFail(f"the grpcio client printed no {key!r} line within {timeout}s "
                               f"(exit code {self.p.poll()}, lines {self.lines})")
            time.sleep(0.02)

    def finish(self, timeout=CLIENT_TIMEOUT):
        try:
            self.p.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            raise CaseFail(f"the grpcio client did not finish within {timeout}s")
        time.sleep(0.05)
        with self.lock:
            return [_result(d) for d in self.lines if "first" not in d]

    def kill(self):
        if self.p.poll() is None:
            os.killpg(self.p.pid, signal.SIGKILL)
            self.p.wait(timeout=5)


# --------------------------------------------------------------------------- Lua

PRELUDE = r"""
local function hex(s)
  if s == nil then return "nil" end
  return "<" .. (tostring(s):gsub(".", function(c) return string.format("%02x", c:byte()) end)) .. ">"
end
local function g_start(tag, m, ctx)
  log.info(string.format(
    "CONF-GRPC-START %s flow=%s service=%s method=%s path=%s authority=%s ctype=%s enc=%s proto=%s x-client=%s",
    tag, tostring(ctx.flow_id), tostring(m.service), tostring(m.method), tostring(m.path),
    tostring(m.authority), tostring(m.content_type), tostring(m.encoding), tostring(m.protocol),
    tostring(m.headers:get("x-client"))))
end
local function g_data(tag, m, ctx)
  local p = m.payload
  log.info(string.format(
    "CONF-GRPC-DATA %s flow=%s from_client=%s index=%s(%s) compressed=%s len=%d(%s) payload=%s tail=%s",
    tag, tostring(ctx.flow_id), tostring(m.from_client), tostring(m.index), type(m.index),
    tostring(m.compressed), #p, type(p), (#p > 300) and "<long>" or hex(p), hex(p:sub(-12))))
end
local function g_end(tag, m, ctx)
  local tr = {}
  for _, kv in ipairs(m.trailers) do tr[#tr + 1] = kv[1] .. "=" .. hex(kv[2]) end
  log.info(string.format(
    "CONF-GRPC-END %s flow=%s status=%s(%s) message=%s details=%s trailers=%s",
    tag, tostring(ctx.flow_id), tostring(m.status), type(m.status), hex(m.message),
    hex(m.status_details), table.concat(tr, ",")))
end
"""


def _val(s):
    return {"true": True, "false": False, "nil": None}.get(s, s)


def _hex(s):
    if s == "nil":
        return None
    if s == "<long>":
        return "<long>"
    return bytes.fromhex(s[1:-1])


START_RE = re.compile(r"CONF-GRPC-START (\S+) flow=(\S+) service=(\S+) method=(\S+) path=(\S+) authority=(\S+) "
                      r"ctype=(\S+) enc=(\S+) proto=(\S+) x-client=(\S+)")
DATA_RE = re.compile(r"CONF-GRPC-DATA (\S+) flow=(\S+) from_client=(\S+) index=(\S+)\((\w+)\) compressed=(\S+) "
                     r"len=(\d+)\((\w+)\) payload=(\S+) tail=(\S+)")
END_RE = re.compile(r"CONF-GRPC-END (\S+) flow=(\S+) status=(\S+)\((\w+)\) message=(\S+) details=(\S+) "
                    r"trailers=(\S*)")


def starts(proxy, tag=None):
    out = []
    for ln in proxy.lines():
        m = START_RE.search(ln)
        if m and (tag is None or m.group(1) == tag):
            g = [_val(x) for x in m.groups()]
            out.append(dict(tag=g[0], flow=g[1], service=g[2], method=g[3], path=g[4], authority=g[5],
                            ctype=g[6], enc=g[7], proto=g[8], x_client=g[9]))
    return out


def datas(proxy, tag=None):
    out = []
    for ln in proxy.lines():
        m = DATA_RE.search(ln)
        if m and (tag is None or m.group(1) == tag):
            g = m.groups()
            check(g[4] == "number", f"type(msg.index) is {g[4]}: {ln!r}")
            check(g[7] == "string", f"type(msg.payload) is {g[7]}: {ln!r}")
            out.append(Result(tag=g[0], flow=g[1], from_client=_val(g[2]), index=int(g[3]),
                              compressed=_val(g[5]), len=int(g[6]), payload=_hex(g[8]), tail=_hex(g[9])))
    return out


def ends(proxy, tag=None):
    out = []
    for ln in proxy.lines():
        m = END_RE.search(ln)
        if m and (tag is None or m.group(1) == tag):
            g = m.groups()
            check(g[3] == "number", f"type(msg.status) is {g[3]}: {ln!r}")
            trailers = []
            for kv in filter(None, g[6].split(",")):
                k, _, v = kv.partition("=")
                trailers.append((k, _hex(v)))
            out.append(Result(tag=g[0], flow=g[1], status=int(g[2]), message=_hex(g[4]),
                              details=_hex(g[5]), trailers=trailers))
    return out


def wait_n(proxy, fn, tag, n, timeout=IO):
    """fn(proxy, tag) once it has n entries (bounded), after a settle so that extra ones show."""
    deadline = time.monotonic() + timeout
    while len(fn(proxy, tag)) < n and time.monotonic() < deadline:
        time.sleep(0.05)
    settle(0.3)
    return fn(proxy, tag)


def demotion_logged_once(proxy, stem, action, row):
    """Exactly one stderr line names the plugin and the demoted action, and the row."""
    pattern = rf"{stem}.*\b{action}\b|\b{action}\b.*{stem}"
    proxy.expect_log(pattern, what=f"demotion of {action} from {stem}")
    settle(0.4)
    lines = proxy.find(pattern)
    eq(len(lines), 1, f"log lines about the demoted {action} of {stem} ({lines})")
    check(row in lines[0], f"the demotion line does not name {row}: {lines[0]!r}")


def hook_errors(proxy, pattern, stem, n):
    """n ERROR lines match `pattern`, and as many error reports name the plugin (the
    report spans lines: the Lua message, the traceback, then plugin= hook= on_error=)."""
    lines = proxy.wait_log(rf"ERROR.*{pattern}", count=n)
    settle(0.3)
    lines = proxy.find(rf"ERROR.*{pattern}")
    eq(len(lines), n, f"hook error lines /{pattern}/ ({lines})")
    tagged = proxy.find(rf"plugin={stem}\.lua hook=\S+ on_error=")
    eq(len(tagged), n, f"error reports naming the plugin {stem}.lua ({tagged})")


# --------------------------------------------------------------------------- the case shape

class G:
    """What a gRPC case gets: the conformance ctx, the grpcio server, the proxy."""

    def __init__(self, t, srv, proxy, tunnel):
        self.t, self.srv, self.proxy, self.tunnel = t, srv, proxy, tunnel

    @property
    def target(self):
        # through the tunnel the client names the server; in reverse mode, the proxy
        return f"127.0.0.1:{self.srv.port}" if self.tunnel else self.proxy.addr

    def run(self, body, timeout=CLIENT_TIMEOUT):
        return run_client(body, self.target, self.proxy.addr if self.tunnel else "-", timeout)

    def client(self, body):
        return Client(body, self.target, self.proxy.addr if self.tunnel else "-")


def grpc_case(name, plugins, flags=(), tunnel=False):
    """A case with a grpcio server and a proxy in front of it: `--mode reverse:` to the
    server, or (tunnel=True) a regular proxy the client reaches with CONNECT."""
    def deco(fn):
        @case(name, plugins=plugins, proxy=False)
        def _run(t):
            need_grpc()
            srv = GrpcServer()
            try:
                args = [] if tunnel else ["--mode", f"reverse:http://127.0.0.1:{srv.port}"]
                for n in plugins:
                    args += ["--plugin", str(t.plugin_paths[n])]
                args += list(flags)
                fn(G(t, srv, t.start_proxy(args), tunnel))
            finally:
                srv.stop()
        return fn
    return deco


# --------------------------------------------------------------------------- rows

ROW_START = PRELUDE + """
register_hook("grpc", "on_start", function(msg, ctx)
  g_start("row", msg, ctx)
  msg.headers:set("x-hook", "on_start " .. tostring(msg.service) .. "/" .. tostring(msg.method))
  msg.headers:set("x-client", msg.headers:get("x-client") .. "+hook")
  msg.headers:remove("x-remove-me")
  msg.headers:add("x-bin-bin", "AAEC")          -- base64 of 00 01 02
end)
"""


@grpc_case("row grpc.on_start", plugins={"row_grpc_start.lua": ROW_START})
def _row_start(g):
    rs = g.run("""
out(**unary("/t.Echo/Say", b"hi", md=[("x-client", "c1"), ("x-remove-me", "r"), ("x-keep", "k")]))
""")
    eq([(r.ok, r.resp) for r in rs], [(True, b"echo:hi")], "(ok, response) at the client")
    eq(g.srv.calls(), ["/t.Echo/Say"], "calls routed by the server")
    md = g.srv.call_md("/t.Echo/Say")
    eq(md_all(md, "x-hook"), ["on_start t.Echo/Say"], "x-hook at the server")
    eq(md_all(md, "x-client"), ["c1+hook"], "x-client at the server (rewritten by the hook)")
    eq(md_all(md, "x-remove-me"), [], "x-remove-me at the server (removed by the hook)")
    eq(md_all(md, "x-keep"), ["k"], "x-keep at the server (untouched)")
    eq(md_all(md, "x-bin-bin"), [b"\x00\x01\x02"], "x-bin-bin at the server (a binary header added by the hook)")
    eq(g.srv.messages("Say"), [b"hi"], "request messages at the server")
    ss = wait_n(g.proxy, starts, "row", 1)
    eq(len(ss), 1, f"grpc.on_start calls for one call ({ss})")
    s = ss[0]
    eq((s["service"], s["method"], s["path"], s["ctype"], s["enc"], s["proto"], s["x_client"]),
       ("t.Echo", "Say", "/t.Echo/Say", "application/grpc", None, "grpc", "c1"),
       "(service, method, path, content_type, encoding, protocol, x-client) given to grpc.on_start")
    eq(s["authority"], f"127.0.0.1:{g.srv.port}", "authority in reverse mode (the upstream's, as http.on_request)")
    check(s["flow"] is not None, "ctx.flow_id is nil in grpc.on_start")


ROW_DATA = PRELUDE + """
register_hook("grpc", "on_data", function(msg, ctx)
  g_data("row", msg, ctx)
  if msg.from_client then
    msg.payload = string.upper(msg.payload)        -- client -> server: upper case
  else
    msg.payload = "[" .. msg.payload .. "]"        -- server -> client: brackets
  end
end)
"""


@grpc_case("row grpc.on_data", plugins={"row_grpc_data.lua": ROW_DATA})
def _row_data(g):
    rs = g.run("""
out(**unary("/t.Echo/Say", b"hello"))
out(**bidi("/t.Echo/Bidi", [b"a", b"b"]))
""")
    eq([(r.ok, r.resp or r.msgs) for r in rs],
       [(True, b"[echo:HELLO]"), (True, [b"[re:A]", b"[re:B]"])],
       "(ok, response) at the client (upper-cased going up, bracketed coming down)")
    eq(g.srv.messages("Say"), [b"HELLO"], "unary request message at the server")
    eq(g.srv.messages("Bidi"), [b"A", b"B"], "bidi messages at the server")
    ds = wait_n(g.proxy, datas, "row", 6)
    # the bidi client sends its messages without waiting for the answers: the two
    # directions interleave as they come, each in order
    eq([(d.from_client, d.index, d.compressed, d.payload) for d in ds[:2]],
       [(True, 0, False, b"hello"), (False, 0, False, b"echo:HELLO")],
       "(from_client, index, compressed, payload) given to grpc.on_data for the unary call, in order")
    for fc, want in ((True, [(0, b"a"), (1, b"b")]), (False, [(0, b"re:A"), (1, b"re:B")])):
        eq([(d.index, d.compressed, d.payload) for d in ds[2:] if d.from_client is fc],
           [(i, False, p) for i, p in want], f"(index, compressed, payload) of the bidi call, from_client={fc}")
    eq(len({d.flow for d in ds}), 2, f"ctx.flow_id values over the two calls ({[d.flow for d in ds]})")


ROW_END = PRELUDE + """
register_hook("grpc", "on_end", function(msg, ctx)
  g_end("row", msg, ctx)
end)
register_hook("grpc", "on_start", function(msg, ctx)
  g_start("row", msg, ctx)
end)
"""


@grpc_case("row grpc.on_end", plugins={"row_grpc_end.lua": ROW_END})
def _row_end(g):
    rs = g.run("""
out(**unary("/t.Echo/Say", b"x"))
out(**stream("/t.Echo/Stream", b"s"))
out(**unary("/t.Echo/Fail", b"f"))
""")
    eq([(r.ok, r.code) for r in rs], [(True, "OK"), (True, "OK"), (False, "NOT_FOUND")],
       "(ok, code) of the three calls at the client")
    eq(rs[0].resp, b"echo:x", "unary response at the client")
    eq(md_all(rs[0].trailing, "x-trail"), ["t1"], "the server's trailer x-trail at the client")
    eq(rs[1].msgs, [b"part0:s", b"part1:s", b"part2:s"], "server-streaming messages at the client")
    eq(rs[2].details, "nope", "details of the failed call at the client")
    es = wait_n(g.proxy, ends, "row", 3)
    eq(len(es), 3, f"grpc.on_end calls for three calls ({es})")
    ss = starts(g.proxy, "row")
    eq([s["flow"] for s in ss], [e.flow for e in es], "ctx.flow_id of on_start vs on_end, call by call")
    eq([(e.status, e.message, e.details) for e in es],
       [(0, b"", None), (0, b"", None), (5, b"nope", None)],
       "(status, message, status_details) given to grpc.on_end")
    t0 = es[0].trailers
    eq([k for k, _ in t0 if k in ("grpc-status", "x-trail", "x-trail-bin")], ["grpc-status", "x-trail", "x-trail-bin"],
       f"trailer names of the unary call, in wire order ({t0})")
    eq(dict(t0)["grpc-status"], b"0", "grpc-status in the trailers list")
    eq(dict(t0)["x-trail"], b"t1", "x-trail in the trailers list")
    check(("grpc-status", b"5") in es[2].trailers, f"grpc-status 5 in the failed call's trailers ({es[2].trailers})")


# --------------------------------------------------------------------------- on_start

@grpc_case("grpc.on_start path rewrite routes the call to another method", plugins={"grpc_path.lua": PRELUDE + """
register_hook("grpc", "on_start", function(msg, ctx)
  g_start("pre", msg, ctx)
  if msg.method == "Say" then msg.path = "/t.Echo/Other" end
end)
register_hook("grpc", "on_start", function(msg, ctx)
  g_start("post", msg, ctx)
end, { phase = "post_pipeline" })
"""})
def _path(g):
    rs = g.run("""
out(**unary("/t.Echo/Say", b"p"))
""")
    eq([(r.ok, r.resp) for r in rs], [(True, b"other:p")], "(ok, response) at the client: Other answered")
    eq(g.srv.calls(), ["/t.Echo/Other"], "calls routed by the server")
    eq(g.srv.messages("Other"), [b"p"], "request messages of Other at the server")
    post = wait_n(g.proxy, starts, "post", 1)
    eq([(s["service"], s["method"], s["path"]) for s in post], [("t.Echo", "Other", "/t.Echo/Other")],
       "(service, method, path) in the post_pipeline hook after the rewrite")


ACTIONS = PRELUDE + """
register_hook("http", "on_request", function(msg, ctx)
  log.info("CONF-GRPC-ACT http-pre " .. msg.path)
end)
register_hook("grpc", "on_start", function(msg, ctx)
  log.info("CONF-GRPC-ACT grpc-pre " .. msg.path)
  if msg.method == "Drop" then return action.DROP end
  if msg.method == "Deny" then
    return action.RESPOND_GRPC{ status = 7, message = "denied", details = "\\1\\2" }
  end
  if msg.method == "Refuse" then
    return action.RESPOND{ status = 403, headers = { ["content-type"] = "text/plain" }, body = "no" }
  end
end)
register_hook("grpc", "on_start", function(msg, ctx)
  log.info("CONF-GRPC-ACT grpc-pre-2 " .. msg.path)     -- after DROP/RESPOND: never runs
end)
register_hook("grpc", "on_start", function(msg, ctx)
  log.info("CONF-GRPC-ACT grpc-post " .. msg.path)
end, { phase = "post_pipeline" })
register_hook("grpc", "on_data", function(msg, ctx) g_data("act", msg, ctx) end)
register_hook("grpc", "on_end", function(msg, ctx) g_end("act", msg, ctx) end)
"""


def act_lines(proxy):
    return [ln.split("CONF-GRPC-ACT ")[1].strip().split(" plugin=")[0].strip()
            for ln in proxy.find(r"CONF-GRPC-ACT ")]


@grpc_case("grpc.on_start DROP: the stream is reset, the server never sees the call, the connection lives on",
           plugins={"grpc_act_drop.lua": ACTIONS})
def _drop(g):
    rs = g.run("""
out(**unary("/t.Echo/Drop", b"d"))
out(**unary("/t.Echo/Say", b"after"))
""")
    check(not rs[0].ok and rs[0].code in ("UNAVAILABLE", "CANCELLED", "INTERNAL"),
          f"the dropped call at the client: expected a failure (UNAVAILABLE, CANCELLED or INTERNAL), got {rs[0]}")
    eq((rs[1].ok, rs[1].resp), (True, b"echo:after"), "a second call on the same channel")
    eq(g.srv.calls(), ["/t.Echo/Say"], "calls routed by the server (the dropped one never arrived)")
    wait_n(g.proxy, ends, "act", 2)
    eq(act_lines(g.proxy), ["http-pre /t.Echo/Drop", "grpc-pre /t.Echo/Drop",
                            "http-pre /t.Echo/Say", "grpc-pre /t.Echo/Say", "grpc-pre-2 /t.Echo/Say",
                            "grpc-post /t.Echo/Say"],
       "hooks that ran (DROP ends the chain and skips post_pipeline)")
    eq([d.from_client for d in datas(g.proxy, "act")], [True, False], "grpc.on_data calls (only the second call's)")
    es = ends(g.proxy, "act")
    eq([e.status for e in es], [2, 0], "grpc.on_end status of the dropped call (ended abnormally) and the second")


@grpc_case("grpc.on_start RESPOND_GRPC: a trailers-only answer with status, message and details",
           plugins={"grpc_act_deny.lua": ACTIONS})
def _respond_grpc(g):
    rs = g.run("""
out(**unary("/t.Echo/Deny", b"x"))
out(**unary("/t.Echo/Say", b"after"))
""")
    r = rs[0]
    eq((r.ok, r.code, r.details), (False, "PERMISSION_DENIED", "denied"), "(ok, code, details) at the client")
    eq(md_all(r.trailing, "grpc-status-details-bin"), [b"\x01\x02"],
       f"grpc-status-details-bin in the trailing metadata at the client ({r.trailing})")
    eq((rs[1].ok, rs[1].resp), (True, b"echo:after"), "a second call on the same channel")
    eq(g.srv.calls(), ["/t.Echo/Say"], "calls routed by the server (the denied one never arrived)")
    es = wait_n(g.proxy, ends, "act", 2)
    eq([(e.status, e.message, e.details) for e in es], [(7, b"denied", b"\x01\x02"), (0, b"", None)],
       "(status, message, status_details) given to grpc.on_end")
    eq(act_lines(g.proxy)[:2], ["http-pre /t.Echo/Deny", "grpc-pre /t.Echo/Deny"],
       "hooks that ran for the denied call (RESPOND_GRPC ends the chain)")
    eq([d.from_client for d in datas(g.proxy, "act")], [True, False], "grpc.on_data calls (only the second call's)")


@grpc_case("grpc.on_start RESPOND: a plain HTTP 403, the server never sees the call",
           plugins={"grpc_act_refuse.lua": ACTIONS})
def _respond(g):
    rs = g.run("""
out(**unary("/t.Echo/Refuse", b"x"))
out(**unary("/t.Echo/Say", b"after"))
""")
    r = rs[0]
    # gRPC over HTTP/2: a non-200 answer without grpc-status maps 403 to PERMISSION_DENIED
    eq((r.ok, r.code), (False, "PERMISSION_DENIED"), f"(ok, code) at the client ({r})")
    check("403" in (r.details or ""), f"the client's details do not name HTTP 403: {r.details!r}")
    eq((rs[1].ok, rs[1].resp), (True, b"echo:after"), "a second call on the same channel")
    eq(g.srv.calls(), ["/t.Echo/Say"], "calls routed by the server (the refused one never arrived)")
    es = wait_n(g.proxy, ends, "act", 2)
    eq(len(es), 2, f"grpc.on_end calls for two calls ({es})")
    eq(act_lines(g.proxy)[:2], ["http-pre /t.Echo/Refuse", "grpc-pre /t.Echo/Refuse"],
       "hooks that ran for the refused call (RESPOND ends the chain)")


PHASES = PRELUDE + """
-- post_pipeline registered first: phases order the hooks, not registration
register_hook("grpc", "on_start", function(msg, ctx)
  msg.headers:set("x-post-saw-step", tostring(msg.headers:get("x-step")))
  msg.headers:set("x-post-saw-client", tostring(msg.headers:get("x-client")))
  msg.headers:add("x-trace", "grpc-post")
end, { phase = "post_pipeline" })
register_hook("http", "on_request", function(msg, ctx)
  msg.headers:add("x-trace", "http-post")
end, { phase = "post_pipeline" })
register_hook("grpc", "on_start", function(msg, ctx)
  msg.headers:set("x-pre-saw-step", tostring(msg.headers:get("x-step")))
  msg.headers:set("x-pre-saw-client", tostring(msg.headers:get("x-client")))
  msg.headers:set("x-client", "changed-in-pre")
  msg.headers:add("x-trace", "grpc-pre")
end)
register_hook("http", "on_request", function(msg, ctx)
  msg.headers:add("x-trace", "http-pre")
end)
register_hook("grpc", "on_data", function(msg, ctx)
  g_data("post", msg, ctx)
  msg.payload = msg.payload .. "[post]"
end, { phase = "post_pipeline" })
register_hook("grpc", "on_data", function(msg, ctx)
  g_data("pre", msg, ctx)
  msg.payload = msg.payload .. "[pre]"
end)
"""


@grpc_case("grpc phases: http.on_request then grpc.on_start, pre and post around --set-request-header; "
           "on_data pre then post",
           plugins={"grpc_phases.lua": PHASES}, flags=["--set-request-header", "x-step=1"])
def _phases(g):
    rs = g.run("""
out(**unary("/t.Echo/Say", b"m", md=[("x-client", "c1")]))
""")
    eq([(r.ok, r.resp) for r in rs], [(True, b"echo:m[pre][post][pre][post]")], "(ok, response) at the client")
    md = g.srv.call_md("/t.Echo/Say")
    eq(md_all(md, "x-step"), ["1"], "x-step (set by the pipeline step) at the server")
    eq(md_all(md, "x-pre-saw-step"), ["nil"], "x-step as seen by the pre_pipeline hook")
    eq(md_all(md, "x-post-saw-step"), ["1"], "x-step as seen by the post_pipeline hook")
    eq(md_all(md, "x-pre-saw-client"), ["c1"], "x-client as seen by the pre_pipeline hook (the client's)")
    eq(md_all(md, "x-post-saw-client"), ["changed-in-pre"], "x-client as seen by the post_pipeline hook")
    eq(md_all(md, "x-trace"), ["http-pre", "grpc-pre", "http-post", "grpc-post"],
       "hook order (x-trace at the server)")
    eq(g.srv.messages("Say"), [b"m[pre][post]"], "request message at the server")
    ds = wait_n(g.proxy, datas, "post", 2)
    eq([(d.tag, d.from_client, d.payload) for d in datas(g.proxy)],
       [("pre", True, b"m"), ("post", True, b"m[pre]"),
        ("pre", False, b"echo:m[pre][post]"), ("post", False, b"echo:m[pre][post][pre]")],
       "(phase, from_client, payload) of the on_data calls, in order")


def appender(tag):
    return f"""register_hook("grpc", "on_data", function(msg, ctx)
  g_data("{tag}", msg, ctx)
  msg.payload = msg.payload .. ",{tag}"
end)
register_hook("grpc", "on_start", function(msg, ctx)
  msg.headers:set("x-saw-{tag}", table.concat(msg.headers:get_all("x-chain"), ","))
  msg.headers:add("x-chain", "{tag}")
end)
register_hook("grpc", "on_end", function(msg, ctx)
  log.info("CONF-GRPC-CHAIN-END {tag}")
end)
"""


@grpc_case("grpc chain order across two plugin files and within a file (on_start, on_data, on_end)",
           plugins={"zeta.lua": PRELUDE + appender("z1") + appender("z2"), "alpha.lua": PRELUDE + appender("a1")})
def _chains(g):
    # zeta.lua is loaded first (--plugin order), although it sorts after alpha.lua
    rs = g.run("""
out(**unary("/t.Echo/Say", b"hi"))
""")
    eq([(r.ok, r.resp) for r in rs], [(True, b"echo:hi,z1,z2,a1,z1,z2,a1")], "(ok, response) at the client")
    md = g.srv.call_md("/t.Echo/Say")
    eq(md_all(md, "x-chain"), ["z1", "z2", "a1"], "x-chain at the server (grpc.on_start order)")
    eq([md_all(md, f"x-saw-{tag}") for tag in ("z1", "z2", "a1")], [[""], ["z1"], ["z1,z2"]],
       "what each grpc.on_start hook saw")
    eq(g.srv.messages("Say"), [b"hi,z1,z2,a1"], "request message at the server")
    wait_n(g.proxy, datas, "a1", 2)
    eq([(d.tag, d.from_client, d.payload) for d in datas(g.proxy)],
       [("z1", True, b"hi"), ("z2", True, b"hi,z1"), ("a1", True, b"hi,z1,z2"),
        ("z1", False, b"echo:hi,z1,z2,a1"), ("z2", False, b"echo:hi,z1,z2,a1,z1"),
        ("a1", False, b"echo:hi,z1,z2,a1,z1,z2")],
       "(hook, from_client, payload seen) of the on_data calls, in order")
    g.proxy.wait_log(r"CONF-GRPC-CHAIN-END a1")
    eq([ln.split("CONF-GRPC-CHAIN-END ")[1].split()[0] for ln in g.proxy.find(r"CONF-GRPC-CHAIN-END ")],
       ["z1", "z2", "a1"], "grpc.on_end hooks, in order")


@grpc_case("grpc on_error skip (on_start, on_data): logged with plugin and traceback, next hook runs",
           plugins={"grpc_err_skip.lua": PRELUDE + """
local function explode()
  error("conf-grpc-kaboom-skip")
end
register_hook("grpc", "on_start", function(msg, ctx)
  msg.headers:set("x-before", "1")
  explode()
end, { name = "grpc-exploder" })
register_hook("grpc", "on_start", function(msg, ctx)
  msg.headers:set("x-after", "1")
end)
register_hook("grpc", "on_data", function(msg, ctx)
  msg.payload = msg.payload .. "[before-error]"
  explode()
end)
register_hook("grpc", "on_data", function(msg, ctx)
  g_data("next", msg, ctx)
end)
"""})
def _err_skip(g):
    rs = g.run("""
out(**unary("/t.Echo/Say", b"e"))
""")
    eq([(r.ok, r.resp) for r in rs], [(True, b"echo:e[before-error][before-error]")],
       "(ok, response) at the client (each direction mutated before the error)")
    md = g.srv.call_md("/t.Echo/Say")
    eq((md_all(md, "x-before"), md_all(md, "x-after")), (["1"], ["1"]),
       "(x-before, x-after) at the server (mutation before the error kept, next hook ran)")
    eq(g.srv.messages("Say"), [b"e[before-error]"], "request message at the server")
    ds = wait_n(g.proxy, datas, "next", 2)
    eq([(d.from_client, d.payload) for d in ds], [(True, b"e[before-error]"), (False, b"echo:e[before-error][before-error]")],
       "what the hook after the failing one saw")
    errs = g.proxy.wait_log(r"conf-grpc-kaboom-skip", count=3)
    eq(len(errs), 3, f"error lines (on_start once, on_data per message) ({errs})")
    check(all("grpc_err_skip" in ln for ln in errs), f"an error line does not name the plugin: {errs}")
    log = "\n".join(g.proxy.lines())
    check(re.search(r"traceback", log, re.I), "the error log has no Lua traceback")
    check("explode" in log, "the traceback does not show the function that raised (explode)")


@grpc_case("grpc on_error abort (on_start, on_data): rest of the chain skipped, message goes on as mutated",
           plugins={"grpc_err_abort.lua": PRELUDE + """
register_hook("grpc", "on_start", function(msg, ctx)
  msg.headers:set("x-before", "1")
  error("conf-grpc-kaboom-abort")
end, { on_error = "abort" })
register_hook("grpc", "on_start", function(msg, ctx)
  msg.headers:set("x-after-same-file", "1")
end)
register_hook("grpc", "on_data", function(msg, ctx)
  msg.payload = msg.payload .. "[before-abort]"
  error("conf-grpc-kaboom-abort")
end, { on_error = "abort" })
register_hook("grpc", "on_data", function(msg, ctx)
  g_data("same-file", msg, ctx)
  msg.payload = "must-not-be-sent"
end)
""", "grpc_err_abort_later.lua": PRELUDE + """
register_hook("grpc", "on_start", function(msg, ctx)
  msg.headers:set("x-after-other-file", "1")
end)
register_hook("grpc", "on_start", function(msg, ctx)
  msg.headers:set("x-post", "ran")             -- another chain (phase): abort does not skip it
end, { phase = "post_pipeline" })
register_hook("grpc", "on_data", function(msg, ctx)
  g_data("other-file", msg, ctx)
  msg.payload = "must-not-be-sent"
end)
register_hook("grpc", "on_data", function(msg, ctx)
  g_data("post", msg, ctx)
end, { phase = "post_pipeline" })
"""})
def _err_abort(g):
    rs = g.run("""
out(**unary("/t.Echo/Say", b"a"))
""")
    eq([(r.ok, r.resp) for r in rs], [(True, b"echo:a[before-abort][before-abort]")], "(ok, response) at the client")
    md = g.srv.call_md("/t.Echo/Say")
    eq([md_all(md, h) for h in ("x-before", "x-after-same-file", "x-after-other-file", "x-post")],
       [["1"], [], [], ["ran"]], "(x-before, x-after-same-file, x-after-other-file, x-post) at the server")
    eq(g.srv.messages("Say"), [b"a[before-abort]"], "request message at the server")
    ds = wait_n(g.proxy, datas, "post", 2)
    eq([(d.from_client, d.payload) for d in ds], [(True, b"a[before-abort]"), (False, b"echo:a[before-abort][before-abort]")],
       "what the post_pipeline on_data hook saw")
    eq(datas(g.proxy, "same-file") + datas(g.proxy, "other-file"), [], "on_data calls after the aborting hook")
    eq(len(g.proxy.find(r"conf-grpc-kaboom-abort")), 3, "error lines (on_start once, on_data per message)")


# --------------------------------------------------------------------------- on_data

@grpc_case("grpc.on_data index per direction and from_client (server-streaming and bidi calls)",
           plugins={"grpc_index.lua": PRELUDE + """
register_hook("grpc", "on_data", function(msg, ctx) g_data("idx", msg, ctx) end)
"""})
def _index(g):
    rs = g.run("""
out(**stream("/t.Echo/Stream", b"s"))
out(**bidi("/t.Echo/Bidi", [b"x", b"y", b"z"]))
""")
    eq([r.msgs for r in rs], [[b"part0:s", b"part1:s", b"part2:s"], [b"re:x", b"re:y", b"re:z"]],
       "messages at the client (unchanged)")
    ds = wait_n(g.proxy, datas, "idx", 10)
    flows = []
    for d in ds:
        if d.flow not in flows:
            flows.append(d.flow)
    eq(len(flows), 2, f"ctx.flow_id values over two calls ({flows})")
    s = [(d.from_client, d.index, d.payload) for d in ds if d.flow == flows[0]]
    eq(s, [(True, 0, b"s"), (False, 0, b"part0:s"), (False, 1, b"part1:s"), (False, 2, b"part2:s")],
       "(from_client, index, payload) of the server-streaming call")
    b = [(d.from_client, d.index, d.payload) for d in ds if d.flow == flows[1]]
    eq(sorted(x for x in b if x[0]), [(True, 0, b"x"), (True, 1, b"y"), (True, 2, b"z")],
       "client-direction calls of the bidi call")
    eq(sorted(x for x in b if not x[0]), [(False, 0, b"re:x"), (False, 1, b"re:y"), (False, 2, b"re:z")],
       "server-direction calls of the bidi call")
    eq([x for x in b if x[0]], sorted(x for x in b if x[0]), "client-direction calls of the bidi call, in order")


BIG = 300_000


@grpc_case("grpc.on_data: a 300 KB message over many DATA frames fires once per direction, re-framed when changed",
           plugins={"grpc_big.lua": PRELUDE + """
register_hook("grpc", "on_data", function(msg, ctx)
  g_data("big", msg, ctx)
  if msg.from_client then msg.payload = msg.payload .. "!" end
end)
"""})
def _big(g):
    rs = g.run(f"""
import hashlib
payload = bytes(i % 251 for i in range({BIG}))
r = unary("/t.Echo/Big", payload, timeout=10)
want = (payload + b"!")[::-1]
resp = bytes.fromhex(r.pop("resp", ""))
out(ok=r["ok"], code=r["code"], len=len(resp), same=resp == want, trailing=[])
""")
    eq([(r.ok, r.code, r.get("len"), r.get("same")) for r in rs], [(True, "OK", BIG + 1, True)],
       "(ok, code, response length, response is the mutated request reversed) at the client")
    payload = bytes(i % 251 for i in range(BIG))
    eq(g.srv.messages("Big"), [(BIG + 1, hashlib.sha256(payload + b"!").hexdigest())],
       "(length, sha256) of the request message at the server (the mutated message)")
    ds = wait_n(g.proxy, datas, "big", 2)
    eq([(d.from_client, d.index, d.len) for d in ds], [(True, 0, BIG), (False, 0, BIG + 1)],
       "(from_client, index, payload length) of the on_data calls: one per whole message")
    eq(ds[0].tail, payload[-12:], "last bytes of the client message as the hook saw it")


@grpc_case("grpc.on_data with grpc-encoding gzip: the hook sees the decompressed payload, its change is re-compressed",
           plugins={"grpc_gzip.lua": PRELUDE + """
register_hook("grpc", "on_start", function(msg, ctx) g_start("gz", msg, ctx) end)
register_hook("grpc", "on_data", function(msg, ctx)
  g_data("gz", msg, ctx)
  if msg.from_client then msg.payload = msg.payload .. "+hooked"
  else msg.payload = msg.payload .. "+hooked-down" end
end)
"""})
def _gzip(g):
    rs = g.run("""
r = unary("/t.Echo/Gz", b"z" * 1000 + b"-end", compression=grpc.Compression.Gzip)
out(**r)
""")
    eq([(r.ok, r.code) for r in rs], [(True, "OK")], "(ok, code) at the client")
    eq(rs[0].resp, b"y" * 1000 + b"-srv+hooked-down", "response at the client (the server's, changed by the hook)")
    eq(g.srv.messages("Gz"), [b"z" * 1000 + b"-end+hooked"], "request message at the server (changed by the hook)")
    s = wait_n(g.proxy, starts, "gz", 1)
    eq([x["enc"] for x in s], ["gzip"], "msg.encoding in grpc.on_start")
    ds = wait_n(g.proxy, datas, "gz", 2)
    eq([(d.from_client, d.compressed, d.len, d.tail) for d in ds],
       [(True, True, 1004, b"zzzzzzzz-end"), (False, True, 1004, b"yyyyyyyy-srv")],
       "(from_client, compressed, payload length, payload end) given to grpc.on_data (decompressed)")


@grpc_case("grpc.on_data msg:cancel(9, \"x\") on a server message: the client gets FAILED_PRECONDITION, the server a reset",
           plugins={"grpc_cancel.lua": PRELUDE + """
register_hook("grpc", "on_data", function(msg, ctx)
  g_data("c", msg, ctx)
  if not msg.from_client and msg.index == 1 then msg:cancel(9, "x") end
end)
register_hook("grpc", "on_data", function(msg, ctx)
  g_data("c2", msg, ctx)          -- still runs after msg:cancel (CONTINUE)
  if not msg.from_client and msg.index == 1 then msg:cancel(10, "second") end   -- the first call wins
end)
register_hook("grpc", "on_end", function(msg, ctx) g_end("c", msg, ctx) end)
"""})
def _cancel(g):
    rs = g.run("""
out(**stream("/t.Echo/Slow", b"s"))
out(**unary("/t.Echo/Say", b"after"))
""")
    r = rs[0]
    eq((r.ok, r.code, r.details), (False, "FAILED_PRECONDITION", "x"), "(ok, code, details) at the client")
    eq(r.msgs, [b"part0:s"], "messages at the client before the cancel (the cancelled one is not sent)")
    eq((rs[1].ok, rs[1].resp), (True, b"echo:after"), "a second call on the same channel")
    eq(len(g.srv.wait("cancelled", method="Slow", timeout=4)), 1,
       f"the server saw its call cancelled (RST_STREAM) ({g.srv.records()})")
    es = wait_n(g.proxy, ends, "c", 2)
    eq([(e.status, e.message) for e in es], [(9, b"x"), (0, b"")], "grpc.on_end (status, message) of the two calls")
    ds = [(d.from_client, d.index) for d in datas(g.proxy, "c") if d.flow == es[0].flow]
    eq(ds, [(True, 0), (False, 0), (False, 1)], "on_data calls of the cancelled call (none after the cancel)")
    eq([(d.from_client, d.index) for d in datas(g.proxy, "c2") if d.flow == es[0].flow],
       [(True, 0), (False, 0), (False, 1)], "calls of the hook after the cancelling one (the chain goes on)")


@grpc_case("grpc.on_data msg:cancel on a client message: the server never gets it; a status out of range is a hook error",
           plugins={"grpc_cancel_up.lua": PRELUDE + """
register_hook("grpc", "on_data", function(msg, ctx)
  if msg.from_client and msg.payload == "stop" then msg:cancel(8, "quota gone") end
  if msg.from_client and msg.payload == "bad-status" then msg:cancel(17, "out of range") end
end)
register_hook("grpc", "on_data", function(msg, ctx)
  g_data("next", msg, ctx)
end)
register_hook("grpc", "on_end", function(msg, ctx) g_end("cu", msg, ctx) end)
"""})
def _cancel_up(g):
    # the unary call is cancelled before any response; the bidi call once its response
    # has started (the client sends "stop" only after it got "re:one")
    rs = g.run("""
import threading
out(**unary("/t.Echo/Say", b"stop"))
out(**unary("/t.Echo/Say", b"bad-status"))
got = threading.Event()
def reqs():
    yield b"one"
    got.wait(5)
    yield b"stop"
    yield b"three"
msgs = []
it = ch.stream_stream("/t.Echo/Bidi")(reqs(), timeout=5)
try:
    for m in it:
        msgs.append(m.hex())
        got.set()
    out(ok=True, msgs=msgs, code=it.code().name, details=it.details(), trailing=[])
except grpc.RpcError as e:
    out(**err(e, msgs=msgs))
""")
    eq((rs[0].ok, rs[0].code, rs[0].details), (False, "RESOURCE_EXHAUSTED", "quota gone"),
       "(ok, code, details) of the unary call cancelled before any response, at the client")
    eq((rs[1].ok, rs[1].resp), (True, b"echo:bad-status"), "the call whose hook passed status 17 (a hook error: it goes on)")
    eq(rs[2].msgs, [b"re:one"], "bidi messages at the client before the cancel")
    eq((rs[2].ok, rs[2].code, rs[2].details), (False, "RESOURCE_EXHAUSTED", "quota gone"),
       "(ok, code, details) of the bidi call cancelled after its response started, at the client")
    eq(g.srv.messages("Say"), [b"bad-status"], "unary request messages at the server (the cancelled one never arrived)")
    eq(g.srv.messages("Bidi"), [b"one"], "bidi messages at the server (nothing from the cancelled one on)")
    es = wait_n(g.proxy, ends, "cu", 3)
    eq(sorted((e.status, e.message) for e in es), [(0, b""), (8, b"quota gone"), (8, b"quota gone")],
       "grpc.on_end (status, message) of the three calls")
    hook_errors(g.proxy, r"cancel: status must be a gRPC status code 0-16", "grpc_cancel_up", 1)


@grpc_case("grpc.on_start: reading msg.body is a hook error, the call goes on",
           plugins={"grpc_nobody.lua": PRELUDE + """
register_hook("grpc", "on_start", function(msg, ctx)
  msg.headers:set("x-before", "1")
  local b = msg.body
  msg.headers:set("x-body-read", tostring(b))
end)
register_hook("grpc", "on_start", function(msg, ctx)
  msg.headers:set("x-after", "1")
end)
"""})
def _no_body(g):
    rs = g.run("""
out(**unary("/t.Echo/Say", b"b"))
""")
    eq([(r.ok, r.resp) for r in rs], [(True, b"echo:b")], "(ok, response) at the client")
    md = g.srv.call_md("/t.Echo/Say")
    eq([md_all(md, h) for h in ("x-before", "x-body-read", "x-after")], [["1"], [], ["1"]],
       "(x-before, x-body-read, x-after) at the server")
    hook_errors(g.proxy, r"GRPCStartMessage has no body", "grpc_nobody", 1)


@grpc_case("--max-grpc-message: a larger message passes unhooked and unchanged, with a warning",
           flags=["--max-grpc-message", "1000"], plugins={"grpc_max.lua": PRELUDE + """
register_hook("grpc", "on_data", function(msg, ctx)
  g_data("max", msg, ctx)
  msg.payload = msg.payload .. "!"
end)
"""})
def _max(g):
    rs = g.run("""
out(**unary("/t.Echo/Big", b"s" * 999 + b"e"))
out(**unary("/t.Echo/Big", b"L" * 5000))
out(**unary("/t.Echo/Big", b"L" * 6000))
""")
    eq([(r.ok, len(r.resp or b"")) for r in rs], [(True, 1001), (True, 5000), (True, 6000)],
       "(ok, response length) at the client")
    eq(rs[0].resp, b"!e" + b"s" * 999,
       "response of the small call (its request hooked; the 1001-byte answer is over the limit, unhooked)")
    eq([len(m) if isinstance(m, bytes) else m[0] for m in g.srv.messages("Big")], [1001, 5000, 6000],
       "request message lengths at the server (the large ones unchanged)")
    ds = wait_n(g.proxy, datas, "max", 2)
    eq([(d.from_client, d.len) for d in ds], [(True, 1000)],
       "on_data calls: only the message within --max-grpc-message (its 1001-byte answer is over it)")
    warns = g.proxy.find(r"WARN.*max-grpc-message")
    check(len(warns) >= 1, "no warning about --max-grpc-message")


def demote_plugin(act):
    return PRELUDE + f"""
register_hook("grpc", "on_data", function(msg, ctx)
  return action.{act}
end)
register_hook("grpc", "on_data", function(msg, ctx)
  g_data("after", msg, ctx)      -- demoted to CONTINUE: the chain goes on
end)
"""


def demoted_unchanged(g, stem, action):
    rs = g.run("""
out(**unary("/t.Echo/Say", b"one"))
out(**bidi("/t.Echo/Bidi", [b"two", b"three"]))
""")
    eq([(r.ok, r.resp or r.msgs) for r in rs], [(True, b"echo:one"), (True, [b"re:two", b"re:three"])],
       "(ok, response) at the client (unchanged)")
    eq((g.srv.messages("Say"), g.srv.messages("Bidi")), ([b"one"], [b"two", b"three"]),
       "request messages at the server (unchanged)")
    ds = wait_n(g.proxy, datas, "after", 6)
    eq(len(ds), 6, f"calls of the hook after the demoted one ({ds})")
    demotion_logged_once(g.proxy, stem, action, "grpc.on_data")


@grpc_case("demote DROP from grpc.on_data", plugins={"demote_grpc_drop.lua": demote_plugin("DROP")})
def _demote_drop(g):
    demoted_unchanged(g, "demote_grpc_drop", "DROP")


@grpc_case("demote RESPOND from grpc.on_data", plugins={"demote_grpc_respond.lua": demote_plugin(
    'RESPOND{ status = 403, body = "must not be sent" }')})
def _demote_respond(g):
    demoted_unchanged(g, "demote_grpc_respond", "RESPOND")


@grpc_case("demote RESPOND_GRPC from grpc.on_data", plugins={"demote_grpc_rgrpc.lua": demote_plugin(
    'RESPOND_GRPC{ status = 7, message = "must not be sent" }')})
def _demote_respond_grpc(g):
    demoted_unchanged(g, "demote_grpc_rgrpc", "RESPOND_GRPC")


# --------------------------------------------------------------------------- on_end

@grpc_case("grpc.on_end status 2 when the upstream dies mid-call (server killed during a stream)",
           plugins={"grpc_died.lua": PRELUDE + """
register_hook("grpc", "on_end", function(msg, ctx) g_end("died", msg, ctx) end)
register_hook("grpc", "on_data", function(msg, ctx) g_data("died", msg, ctx) end)
"""})
def _died(g):
    c = g.client("""
out(**stream("/t.Echo/Hang", b"h", timeout=8, first="got"))
""")
    try:
        c.wait_line("first")                    # the first message went through: the call is open
        g.srv.kill()
        rs = c.finish()
    finally:
        c.kill()
    eq(len(rs), 1, f"client results ({rs})")
    r = rs[0]
    check(not r.ok, f"the call must fail at the client once the server died: {r}")
    eq(r.msgs, [b"first:h"], "messages at the client before the server died")
    es = wait_n(g.proxy, ends, "died", 1)
    eq([(e.status, e.trailers) for e in es], [(2, [])],
       "grpc.on_end calls for the call (exactly one, status 2 UNKNOWN, no trailers)")
    eq([(d.from_client, d.payload) for d in datas(g.proxy, "died")], [(True, b"h"), (False, b"first:h")],
       "grpc.on_data calls")


@grpc_case("grpc.on_end when the client gives up (deadline): exactly once, status 2; the server sees the cancel",
           plugins={"grpc_deadline.lua": PRELUDE + """
register_hook("grpc", "on_end", function(msg, ctx) g_end("dl", msg, ctx) end)
register_hook("grpc", "on_start", function(msg, ctx)
  msg.headers:remove("grpc-timeout")    -- only the client knows the deadline: the end comes from its reset
end)
"""})
def _deadline(g):
    rs = g.run("""
out(**stream("/t.Echo/Hang", b"h", timeout=1))
out(**unary("/t.Echo/Say", b"after"))
""")
    eq((rs[0].ok, rs[0].code, rs[0].msgs), (False, "DEADLINE_EXCEEDED", [b"first:h"]),
       "(ok, code, messages) of the call that ran out of time at the client")
    eq((rs[1].ok, rs[1].resp), (True, b"echo:after"), "a second call on the same channel")
    es = wait_n(g.proxy, ends, "dl", 2)
    eq(sorted(e.status for e in es), [0, 2], "grpc.on_end status of the abandoned call (UNKNOWN) and the second")
    eq(len(g.srv.wait("cancelled", method="Hang")), 1,
       f"the server saw the abandoned call cancelled (RST_STREAM) ({g.srv.records()})")


@grpc_case("frozen grpc.on_end dict; every hook runs (DROP demoted, an error skipped)", plugins={
    "grpc_frozen.lua": PRELUDE + """
register_hook("grpc", "on_end", function(msg, ctx)
  msg.status = 99
  msg.message = "forged"
  msg.status_details = "forged"
  msg.trailers = {}
  msg.extra = "added"
  local t = msg.trailers
  if t and t[1] then t[1][2] = "forged" end        -- a fresh copy on every read
  log.info("CONF-GRPC-FROZEN h1-done")
end)
register_hook("grpc", "on_end", function(msg, ctx)
  log.info("CONF-GRPC-FROZEN h2")
  return action.DROP            -- not allowed here: demoted, the chain goes on
end)
register_hook("grpc", "on_end", function(msg, ctx) error("conf-grpc-end-error") end)
""", "grpc_frozen_later.lua": PRELUDE + """
register_hook("grpc", "on_end", function(msg, ctx)
  g_end("h4", msg, ctx)
  log.info("CONF-GRPC-FROZEN h4 extra=" .. tostring(msg.extra))
end)
"""})
def _frozen(g):
    rs = g.run("""
out(**unary("/t.Echo/Say", b"1"))
out(**unary("/t.Echo/Fail", b"2"))
""")
    eq([(r.ok, r.code) for r in rs], [(True, "OK"), (False, "NOT_FOUND")], "(ok, code) at the client")
    es = wait_n(g.proxy, ends, "h4", 2)
    eq([(e.status, e.message, e.details) for e in es], [(0, b"", None), (5, b"nope", None)],
       "what the last hook saw (the first hook's writes must be ignored)")
    check(es[0].trailers and es[0].trailers[0][1] != b"forged" and ("grpc-status", b"0") in es[0].trailers,
          f"trailers seen by the last hook: {es[0].trailers}")
    eq([ln.split("extra=")[1].split()[0] for ln in g.proxy.find(r"CONF-GRPC-FROZEN h4 ")], ["nil", "nil"],
       "a key added by the first hook, as seen by the last")
    seq = [m.group(1) for ln in g.proxy.lines() for m in [re.search(r"CONF-GRPC-FROZEN (h\d)", ln)] if m]
    eq(seq, ["h1", "h2", "h4"] * 2, "hooks that ran, in order, for each call")
    eq(len(g.proxy.find(r"conf-grpc-end-error")), 2, "error lines of the failing hook (one per call)")
    demotion_logged_once(g.proxy, "grpc_frozen", "DROP", "grpc.on_end")


# --------------------------------------------------------------------------- CONNECT tunnel

@grpc_case("grpc rows through a CONNECT tunnel (grpc.http_proxy, h2c inside): on_start, on_data, on_end",
           tunnel=True, plugins={"grpc_tunnel.lua": PRELUDE + """
register_hook("grpc", "on_start", function(msg, ctx)
  g_start("tun", msg, ctx)
  msg.headers:set("x-hook", "tunnel")
end)
register_hook("grpc", "on_data", function(msg, ctx)
  g_data("tun", msg, ctx)
  if msg.from_client then msg.payload = msg.payload .. "!" end
end)
register_hook("grpc", "on_end", function(msg, ctx) g_end("tun", msg, ctx) end)
register_hook("http", "on_request", function(msg, ctx)
  if msg.method == "CONNECT" then log.info("CONF-GRPC-CONNECT " .. tostring(msg.authority)) end
end)
"""})
def _tunnel(g):
    rs = g.run("""
out(**unary("/t.Echo/Say", b"t", md=[("x-client", "c")]))
out(**stream("/t.Echo/Stream", b"s"))
""")
    eq([(r.ok, r.resp or r.msgs) for r in rs],
       [(True, b"echo:t!"), (True, [b"part0:s!", b"part1:s!", b"part2:s!"])], "(ok, response) at the client")
    eq(md_all(g.srv.call_md("/t.Echo/Say"), "x-hook"), ["tunnel"], "x-hook at the server")
    eq(g.srv.messages("Say") + g.srv.messages("Stream"), [b"t!", b"s!"], "request messages at the server")
    conn = g.proxy.expect_log(r"CONF-GRPC-CONNECT ", what="the CONNECT request")
    eq([ln.split("CONF-GRPC-CONNECT ")[1].split()[0] for ln in conn], [f"127.0.0.1:{g.srv.port}"],
       "CONNECT requests (one tunnel for both calls)")
    ss = wait_n(g.proxy, starts, "tun", 2)
    eq([(s["service"], s["method"], s["proto"], s["authority"], s["x_client"]) for s in ss],
       [("t.Echo", "Say", "grpc", f"127.0.0.1:{g.srv.port}", "c"),
        ("t.Echo", "Stream", "grpc", f"127.0.0.1:{g.srv.port}", None)],
       "(service, method, protocol, authority, x-client) given to grpc.on_start")
    ds = wait_n(g.proxy, datas, "tun", 6)
    eq([(d.from_client, d.index, d.payload) for d in ds],
       [(True, 0, b"t"), (False, 0, b"echo:t!"), (True, 0, b"s"),
        (False, 0, b"part0:s!"), (False, 1, b"part1:s!"), (False, 2, b"part2:s!")],
       "(from_client, index, payload) given to grpc.on_data")
    es = wait_n(g.proxy, ends, "tun", 2)
    eq([e.status for e in es], [0, 0], "grpc.on_end status of both calls")
