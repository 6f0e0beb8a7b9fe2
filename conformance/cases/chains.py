"""Chain rules (spec section 3): registration order across files (--plugin order) and
within a file, each hook sees the previous mutations, the first DROP/RESPOND ends the
chain (and skips the later phase), lifecycle on_connect ends on the first DROP while
the other lifecycle events run every hook."""

import re

from harness import case, check, eq, hget, hget_all, settle


def appender(tag):
    return f"""register_hook("http", "on_request", function(msg, ctx)
  msg.headers:set("x-saw-{tag}", table.concat(msg.headers:get_all("x-chain"), ","))
  msg.headers:add("x-chain", "{tag}")
end)
"""


@case("chain order across two files and within a file",
      plugins={"zeta.lua": appender("z1") + appender("z2"), "alpha.lua": appender("a1")})
def _order(t):
    # zeta.lua is loaded first (--plugin order), although it sorts after alpha.lua
    r = t.curl("/echo")
    eq(r.status, 200, f"client status (curl: {r.err})")
    h = t.one_request()["headers"]
    eq(hget_all(h, "x-chain"), ["z1", "z2", "a1"], "x-chain at the origin (hook order)")
    eq(hget(h, "x-saw-z1"), "", "what the first hook saw")
    eq(hget(h, "x-saw-z2"), "z1", "what the second hook saw")
    eq(hget(h, "x-saw-a1"), "z1,z2", "what the hook of the second file saw")


def ender(act, event="on_request"):
    return f"""
register_hook("http", "{event}", function(msg, ctx)
  log.info("CONF-CHAIN before")
end)
register_hook("http", "{event}", function(msg, ctx)
  return {act}
end)
register_hook("http", "{event}", function(msg, ctx)
  log.info("CONF-CHAIN after-same-file")
end)
register_hook("http", "{event}", function(msg, ctx)
  log.info("CONF-CHAIN after-post-phase")
end, {{ phase = "post_pipeline" }})
"""


def later(event="on_request"):
    return f"""
register_hook("http", "{event}", function(msg, ctx) log.info("CONF-CHAIN after-other-file") end)
"""


def assert_chain_ended(t):
    t.proxy.expect_log(r"CONF-CHAIN before", what="log line of the hook before the ending one")
    settle(0.4)
    ran = t.proxy.find(r"CONF-CHAIN after")
    eq(ran, [], "log lines of hooks after the first DROP/RESPOND")


@case("chain first RESPOND ends the chain",
      plugins={"end_respond.lua": ender('action.RESPOND{ status = 451, body = "ended" }'), "later.lua": later()})
def _respond_ends(t):
    r = t.curl("/echo")
    eq((r.status, r.body), (451, b"ended"), f"client (status, body) (curl: {r.err})")
    assert_chain_ended(t)
    eq(t.origin.snapshot()[1], 0, "connections at the origin")


@case("chain first DROP ends the chain",
      plugins={"end_drop.lua": ender("action.DROP"), "later.lua": later()})
def _drop_ends(t):
    r = t.curl("/echo")
    check(r.status is None and r.rc != 0, f"client got a response to a DROPped request: {r.status} rc {r.rc}")
    assert_chain_ended(t)
    eq(t.origin.snapshot()[1], 0, "connections at the origin")


@case("chain first RESPOND ends the response chain",
      plugins={"end_resp.lua": ender('action.RESPOND{ status = 418, body = "teapot" }', "on_response"),
               "later.lua": later("on_response")})
def _resp_respond_ends(t):
    r = t.curl("/fixed?body=origin")
    eq((r.status, r.body), (418, b"teapot"), f"client (status, body) (curl: {r.err})")
    assert_chain_ended(t)


@case("chain connection.on_connect ends on the first DROP", plugins={"cc_drop.lua": """
register_hook("connection", "on_connect", function(msg, ctx) log.info("CONF-CHAIN before") end)
register_hook("connection", "on_connect", function(msg, ctx) return action.DROP end)
register_hook("connection", "on_connect", function(msg, ctx) log.info("CONF-CHAIN after-same-file") end)
""", "later.lua": """
register_hook("connection", "on_connect", function(msg, ctx) log.info("CONF-CHAIN after-other-file") end)
"""})
def _connect_drop_ends(t):
    c = t.raw()
    try:
        data, closed = c.read_until_closed(timeout=5)
    finally:
        c.close()
    check(closed and data == b"", f"connection not closed silently: closed={closed} data={data[:100]!r}")
    assert_chain_ended(t)


@case("chain connection.on_disconnect runs every hook", plugins={"cd_all.lua": """
register_hook("connection", "on_disconnect", function(msg, ctx) log.info("CONF-DCHAIN 1") end)
register_hook("connection", "on_disconnect", function(msg, ctx)
  log.info("CONF-DCHAIN 2")
  return action.DROP            -- not allowed here: demoted, the chain goes on
end)
register_hook("connection", "on_disconnect", function(msg, ctx) error("conf-disc-error") end)
""", "later.lua": """
register_hook("connection", "on_disconnect", function(msg, ctx) log.info("CONF-DCHAIN 3") end)
"""})
def _disconnect_all(t):
    r = t.curl("/echo")
    eq(r.status, 200, f"client status (curl: {r.err})")
    t.proxy.wait_log(r"CONF-DCHAIN 3", timeout=3)
    seq = [m.group(1) for ln in t.proxy.lines() for m in [re.search(r"CONF-DCHAIN (\d)", ln)] if m]
    eq(seq, ["1", "2", "3"], "on_disconnect hooks that ran, in order")
