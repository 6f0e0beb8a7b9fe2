"""Phases around the pipeline steps (spec section 3): pre_pipeline hooks see the message
as the peer sent it, the built-in steps run (hop-by-hop removal, --set-*-header),
post_pipeline hooks see exactly what will be sent, and what they leave is committed."""

from harness import case, eq, hget, hget_all

# post_pipeline is registered FIRST on purpose: phases order the hooks, not registration.
REQ_PHASES = """
register_hook("http", "on_request", function(msg, ctx)
  msg.headers:set("x-post-saw-step", tostring(msg.headers:get("x-step")))
  msg.headers:set("x-post-saw-hop", tostring(msg.headers:get("x-hop")))
  msg.headers:add("x-trace", "post")
end, { phase = "post_pipeline" })
register_hook("http", "on_request", function(msg, ctx)
  msg.headers:set("x-pre-saw-step", tostring(msg.headers:get("x-step")))
  msg.headers:set("x-pre-saw-hop", tostring(msg.headers:get("x-hop")))
  msg.headers:add("x-trace", "pre")
end, { phase = "pre_pipeline" })
"""


@case("phases request: --set-request-header between pre and post",
      plugins={"ph_req.lua": REQ_PHASES}, flags=["--set-request-header", "x-step=1"])
def _req_step(t):
    r = t.curl("/echo")
    eq(r.status, 200, f"client status (curl: {r.err})")
    h = t.one_request()["headers"]
    eq(hget_all(h, "x-step"), ["1"], "x-step (set by the pipeline step) at the origin")
    eq(hget(h, "x-pre-saw-step"), "nil", "x-step as seen by the pre_pipeline hook")
    eq(hget(h, "x-post-saw-step"), "1", "x-step as seen by the post_pipeline hook")
    eq(hget_all(h, "x-trace"), ["pre", "post"], "hook order (x-trace at the origin)")


@case("phases request: hop-by-hop headers visible in pre, gone in post",
      plugins={"ph_hop.lua": REQ_PHASES})
def _req_hop(t):
    c = t.raw()
    try:
        c.send((f"GET {t.url('/echo')} HTTP/1.1\r\nHost: 127.0.0.1:{t.origin.port}\r\n"
                "Connection: x-hop\r\nx-hop: 1\r\nx-end-to-end: e\r\n\r\n").encode())
        status, *_ = c.read_response()
    finally:
        c.close()
    eq(status, 200, "client status")
    h = t.one_request()["headers"]
    eq(hget(h, "x-pre-saw-hop"), "1", "x-hop as seen by the pre_pipeline hook")
    eq(hget(h, "x-post-saw-hop"), "nil", "x-hop as seen by the post_pipeline hook")
    eq(hget_all(h, "x-hop"), [], "x-hop at the origin (hop-by-hop, named in Connection)")
    eq(hget_all(h, "x-end-to-end"), ["e"], "an end-to-end header at the origin")


@case("phases request: pre mutation goes through the steps, post mutation is final",
      flags=["--set-request-header", "x-step=1", "--set-request-header", "x-step2=2"],
      plugins={"ph_final.lua": """
register_hook("http", "on_request", function(msg, ctx)
  msg.headers:set("x-step", "0")          -- the step overwrites it
  msg.headers:set("x-pre-only", "p")
end)
register_hook("http", "on_request", function(msg, ctx)
  msg.headers:remove("x-step2")           -- removes what the step added
end, { phase = "post_pipeline" })
"""})
def _req_final(t):
    r = t.curl("/echo")
    eq(r.status, 200, f"client status (curl: {r.err})")
    h = t.one_request()["headers"]
    eq(hget_all(h, "x-step"), ["1"], "x-step at the origin (step ran after the pre hook)")
    eq(hget_all(h, "x-step2"), [], "x-step2 at the origin (removed by the post hook)")
    eq(hget_all(h, "x-pre-only"), ["p"], "x-pre-only at the origin")


RESP_PHASES = """
register_hook("http", "on_response", function(msg, ctx)
  msg.headers:set("x-post-saw-step", tostring(msg.headers:get("x-rstep")))
  msg.headers:set("x-post-saw-hop", tostring(msg.headers:get("x-rhop")))
  msg.headers:add("x-trace", "post")
end, { phase = "post_pipeline" })
register_hook("http", "on_response", function(msg, ctx)
  msg.headers:set("x-pre-saw-step", tostring(msg.headers:get("x-rstep")))
  msg.headers:set("x-pre-saw-hop", tostring(msg.headers:get("x-rhop")))
  msg.headers:add("x-trace", "pre")
end)
"""


@case("phases response: --set-response-header between pre and post",
      plugins={"ph_resp.lua": RESP_PHASES}, flags=["--set-response-header", "x-rstep=1"])
def _resp_step(t):
    r = t.curl("/fixed?body=b")
    eq((r.status, r.body), (200, b"b"), f"client (status, body) (curl: {r.err})")
    h = r.headers
    eq(hget_all(h, "x-rstep"), ["1"], "x-rstep (set by the pipeline step) at the client")
    eq(hget(h, "x-pre-saw-step"), "nil", "x-rstep as seen by the pre_pipeline hook")
    eq(hget(h, "x-post-saw-step"), "1", "x-rstep as seen by the post_pipeline hook")
    eq(hget_all(h, "x-trace"), ["pre", "post"], "hook order (x-trace at the client)")
    eq(hget(t.one_request()["headers"], "x-rstep"), None, "the response step must not touch the request")


@case("phases response: hop-by-hop headers visible in pre, gone in post",
      plugins={"ph_resp_hop.lua": RESP_PHASES})
def _resp_hop(t):
    r = t.curl("/fixed?body=b&h=Connection:%20x-rhop&h=x-rhop:%201&h=x-e2e:%20e")
    eq((r.status, r.body), (200, b"b"), f"client (status, body) (curl: {r.err})")
    h = r.headers
    eq(hget(h, "x-pre-saw-hop"), "1", "x-rhop as seen by the pre_pipeline hook")
    eq(hget(h, "x-post-saw-hop"), "nil", "x-rhop as seen by the post_pipeline hook")
    eq(hget_all(h, "x-rhop"), [], "x-rhop at the client (hop-by-hop, named in Connection)")
    eq(hget_all(h, "x-e2e"), ["e"], "an end-to-end header at the client")
