"""The gRPC-web rows (grpc-web.on_start, grpc-web.on_data, grpc-web.on_end; spec sections
2-4, guide docs/plugins.md "gRPC-web") over HTTP/1.1, in reverse mode in front of
sonora's gRPC-web WSGI server, and through `--grpc-web` in front of a grpcio server.

Clients: sonora's own client (application/grpc-web+proto) and a raw grpc-web-text
client (sonora's client has no text mode); both in tests/grpc_web/web_client.py, which
prints one line per call: method, messages, status name, status message.  Its four
calls are Say "hi", Deny "x", Stream "s" (3 answers) and Say "cancel-me".
Hooks report through `CONF-GW` log lines.  PENDING without sonora.
"""

import importlib.util
import os
import socket
import subprocess
import sys

from harness import Pending, case, check, eq

HERE = os.path.dirname(os.path.abspath(__file__))
PEERS = os.path.join(HERE, "..", "..", "tests", "grpc_web")
IO = 5.0


def need_sonora():
    for mod in ("sonora", "grpc"):
        if importlib.util.find_spec(mod) is None:
            raise Pending(f"python {mod} not installed")


class Peer:
    """A server script from tests/grpc_web (it prints its port, lives 60 s at most)."""

    def __init__(self, script):
        self.p = subprocess.Popen([sys.executable, os.path.join(PEERS, script), "60"],
                                  stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        self.port = int(self.p.stdout.readline().strip())

    def stop(self):
        self.p.kill()
        self.p.wait(timeout=IO)


def client(url, mode):
    r = subprocess.run([sys.executable, os.path.join(PEERS, "web_client.py"), url, mode],
                       capture_output=True, text=True, timeout=30)
    return r.stdout


def web_case(name, plugins, server="web_server.py", flags=()):
    """A case with a gRPC-web (or, for the gateway, grpcio) server behind a reverse proxy."""
    def deco(fn):
        @case(name, plugins=plugins, proxy=False)
        def _run(t):
            need_sonora()
            srv = Peer(server)
            try:
                args = ["--mode", f"reverse:http://127.0.0.1:{srv.port}", *flags]
                for n in plugins:
                    args += ["--plugin", str(t.plugin_paths[n])]
                fn(t.start_proxy(args))
            finally:
                srv.stop()
        return fn
    return deco


LOGGING = """
register_hook("grpc-web", "on_start", function(m, ctx)
  log.info("CONF-GW start " .. PHASE .. " " .. m.service .. "/" .. m.method .. " " .. m.protocol
    .. " " .. tostring(m.headers:get("x-hook")))
  m.headers:set("x-hook", "yes")
end, { phase = PHASE })
register_hook("grpc-web", "on_data", function(m, ctx)
  log.info("CONF-GW data " .. PHASE .. " " .. tostring(m.from_client) .. " " .. m.index .. " " .. m.payload)
  if PHASE == "post_pipeline" then m.payload = m.payload .. "!" end
end, { phase = PHASE })
"""

ROWS = {
    "pre.lua": 'local PHASE = "pre_pipeline"\n' + LOGGING,
    "post.lua": 'local PHASE = "post_pipeline"\n' + LOGGING + """
register_hook("grpc-web", "on_end", function(m)
  log.info("CONF-GW end " .. m.status .. " " .. m.message .. " " .. #m.trailers)
end)
""",
}

PASSED = ("Say echo:hi! md=yes! OK \n"
          "Deny echo:x! md=yes! OK \n"
          "Stream part0:s!!,part1:s!!,part2:s!! OK \n"
          "Say echo:cancel-me! md=yes! OK \n")


def check_rows(p, mode, protocol):
    eq(client(f"http://{p.addr}", mode), PASSED, f"{mode} client output (payloads rewritten both ways)")
    starts = p.wait_log(f"CONF-GW start .* {protocol} ", count=8)
    eq(len(starts), 8, f"grpc-web.on_start calls (4 calls x 2 phases): {p.log_tail()}")
    pre = [s for s in starts if "start pre_pipeline" in s]
    check(all(" nil plugin=" in s for s in pre), f"pre_pipeline saw x-hook unset: {pre}")
    post = [s for s in starts if "start post_pipeline" in s]
    check(all(" yes plugin=" in s for s in post), f"post_pipeline saw the pre hook's x-hook: {post}")
    ends = p.wait_log("CONF-GW end ", count=4)
    eq([e.split("CONF-GW end ")[1].split(" ")[0] for e in ends], ["0"] * 4, "on_end statuses")


@web_case("row grpc-web.on_start/on_data/on_end (binary, sonora client and server)", ROWS)
def _rows_binary(p):
    check_rows(p, "bin", "grpc-web")
    datas = p.find("CONF-GW data post_pipeline false ")
    eq(len(datas), 6, f"on_data from the server (1+1+3+1 messages): {datas}")


@web_case("row grpc-web.* (grpc-web-text, base64 both ways)", ROWS)
def _rows_text(p):
    check_rows(p, "text", "grpc-web-text")


@web_case("row grpc-web.* through --grpc-web to a grpcio server", ROWS,
          server="grpc_server.py", flags=["--grpc-web"])
def _rows_gateway(p):
    out = client(f"http://{p.addr}", "text")
    check(out.startswith("Say echo:hi! md=yes! OK \nDeny  NOT_FOUND upstream says no\n"), f"client output: {out!r}")
    ends = p.wait_log("CONF-GW end ", count=4)
    eq(sorted(e.split("CONF-GW end ")[1].split(" ")[0] for e in ends), ["0", "0", "0", "5"], "on_end statuses")


ACTIONS = {"actions.lua": """
register_hook("grpc-web", "on_start", function(m)
  if m.method == "Deny" then return action.RESPOND_GRPC{ status = 7, message = "no way" } end
end)
register_hook("grpc-web", "on_data", function(m)
  if m.payload == "cancel-me" then m:cancel(9, "cancelled by hook") end
  if m.payload == "s" then return action.DROP end     -- not allowed on on_data: demoted
end)
register_hook("grpc-web", "on_end", function(m) log.info("CONF-GW end " .. m.status) end)
"""}


@web_case("grpc-web RESPOND_GRPC and msg:cancel as seen by sonora's client; DROP demoted on on_data", ACTIONS)
def _actions(p):
    eq(client(f"http://{p.addr}", "bin"),
       "Say echo:hi OK \nDeny  PERMISSION_DENIED no way\nStream part0:s,part1:s,part2:s OK \n"
       "Say  FAILED_PRECONDITION cancelled by hook\n", "client output")
    p.expect_log("DROP", what="the demoted DROP logged")
    ends = p.wait_log("CONF-GW end ", count=4)
    eq(sorted(int(e.split("CONF-GW end ")[1].split()[0]) for e in ends), [0, 0, 7, 9], "on_end once per call")


DROP = {"drop.lua": """
register_hook("grpc-web", "on_start", function(m) return action.DROP end)
register_hook("grpc-web", "on_end", function(m) log.info("CONF-GW end " .. m.status) end)
"""}


@web_case("grpc-web DROP on HTTP/1.1 closes the connection; on_end status 2", DROP)
def _drop(p):
    s = socket.create_connection((p.host if hasattr(p, "host") else "127.0.0.1", p.port), timeout=IO)
    s.sendall(b"POST /t.Echo/Say HTTP/1.1\r\nHost: x\r\ncontent-type: application/grpc-web-text\r\n"
              b"content-length: 12\r\n\r\nAAAAAAJoaQ==")
    eq(s.recv(100), b"", "bytes before the close")
    s.close()
    p.expect_log("CONF-GW end 2", what="the synthesized on_end")
