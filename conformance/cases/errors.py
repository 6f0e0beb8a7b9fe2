"""Hook errors (spec section 3, rule 4): on_error "skip" logs (plugin, hook, traceback)
and goes on; "abort" skips the rest of the chain and the message goes on as mutated so
far; a runaway hook is interrupted by the per-call budget and counts as an error.
Traffic is never broken by a plugin error."""

import re
import time

from harness import case, check, eq, hget, hget_all


@case("on_error skip: logged with plugin and traceback, next hook runs", plugins={"err_skip.lua": """
local function explode()
  error("conf-kaboom-skip")
end
register_hook("http", "on_request", function(msg, ctx)
  msg.headers:set("x-before", "1")
  explode()
end, { name = "exploding-hook" })
register_hook("http", "on_request", function(msg, ctx)
  msg.headers:set("x-after", "1")
end)
"""})
def _skip(t):
    r = t.curl("/echo")
    eq(r.status, 200, f"client status (curl: {r.err})")
    h = t.one_request()["headers"]
    eq(hget(h, "x-after"), "1", "x-after (set by the hook after the failing one)")
    eq(hget(h, "x-before"), "1", "x-before (mutation made before the error)")
    t.proxy.expect_log(r"conf-kaboom-skip", what="the error message")
    log = "\n".join(t.proxy.lines())
    check("err_skip" in log, "the error log does not name the plugin err_skip")
    check(re.search(r"traceback", log, re.I), "the error log has no Lua traceback")
    check("explode" in log, "the traceback does not show the function that raised (explode)")


@case("on_error abort: rest of chain skipped, message goes on as mutated", plugins={"err_abort.lua": """
register_hook("http", "on_request", function(msg, ctx)
  msg.headers:set("x-before", "1")
  error("conf-kaboom-abort")
end, { on_error = "abort" })
register_hook("http", "on_request", function(msg, ctx)
  msg.headers:set("x-after-same-file", "1")
end)
""", "err_abort_later.lua": """
register_hook("http", "on_request", function(msg, ctx)
  msg.headers:set("x-after-other-file", "1")
end)
"""})
def _abort(t):
    r = t.curl("/echo")
    eq(r.status, 200, f"client status (curl: {r.err})")
    h = t.one_request()["headers"]
    eq(hget(h, "x-before"), "1", "x-before (mutated so far) at the origin")
    eq(hget_all(h, "x-after-same-file"), [], "x-after-same-file (chain aborted)")
    eq(hget_all(h, "x-after-other-file"), [], "x-after-other-file (chain aborted)")
    t.proxy.expect_log(r"conf-kaboom-abort", what="the error message")
    r = t.curl("/echo")
    eq(r.status, 200, f"status of a second request (curl: {r.err})")


@case("on_error skip in http.on_response", plugins={"err_resp.lua": """
register_hook("http", "on_response", function(msg, ctx) error("conf-kaboom-resp") end)
register_hook("http", "on_response", function(msg, ctx) msg.headers:set("x-after", "1") end)
"""})
def _resp_skip(t):
    r = t.curl("/fixed?body=ok")
    eq((r.status, r.body), (200, b"ok"), f"client (status, body) (curl: {r.err})")
    eq(hget(r.headers, "x-after"), "1", "x-after at the client")
    t.proxy.expect_log(r"conf-kaboom-resp", what="the error message")


@case("error in connection.on_connect does not break traffic", plugins={"err_conn.lua": """
register_hook("connection", "on_connect", function(msg, ctx) error("conf-kaboom-connect") end)
"""})
def _conn_err(t):
    r = t.curl("/echo")
    eq(r.status, 200, f"client status (curl: {r.err})")
    t.proxy.expect_log(r"conf-kaboom-connect", what="the error message")


@case("runaway hook interrupted by --hook-budget-ms 50", flags=["--hook-budget-ms", "50"],
      plugins={"runaway.lua": """
register_hook("http", "on_request", function(msg, ctx)
  msg.headers:set("x-before", "1")
  while true do end
end, { name = "spinner" })
register_hook("http", "on_request", function(msg, ctx)
  msg.headers:set("x-after", "1")
end)
"""})
def _runaway(t):
    for i in (1, 2):
        start = time.monotonic()
        r = t.curl("/echo", timeout=8)
        took = time.monotonic() - start
        eq(r.status, 200, f"request {i}: client status (curl rc {r.rc}: {r.err})")
        check(took < 5, f"request {i} took {took:.1f}s with a 50 ms budget")
    reqs = t.origin_requests(2)
    eq(len(reqs), 2, "requests at the origin")
    for q in reqs:
        eq(hget(q["headers"], "x-after"), "1", "x-after (on_error skip: the next hook ran)")
    check(t.proxy.find(r"spinner|runaway"), "the interrupted hook was not logged")
