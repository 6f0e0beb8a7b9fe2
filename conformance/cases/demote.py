"""Forbidden actions are logged (plugin, hook, action) once and demoted to CONTINUE:
traffic goes on unchanged (spec section 3)."""

from harness import case, check, connect_tunnel, eq, hget, settle


def demotion_logged_once(t, stem, action):
    """Exactly one stderr line names the plugin and the demoted action."""
    pattern = rf"{stem}.*\b{action}\b|\b{action}\b.*{stem}"
    t.proxy.expect_log(pattern, what=f"demotion of {action} from {stem}")
    settle(0.4)
    lines = t.proxy.find(pattern)
    eq(len(lines), 1, f"log lines about the demoted {action} of {stem} ({lines})")


@case("demote DROP from http.on_response", plugins={"demote_resp_drop.lua": """
register_hook("http", "on_response", function(msg, ctx)
  return action.DROP
end)
"""})
def _resp_drop(t):
    r = t.curl("/fixed?status=200&body=still-here&h=X-Origin:%20o")
    eq(r.rc, 0, f"curl exit code ({r.err})")
    eq((r.status, r.body), (200, b"still-here"), "client (status, body): the origin's response")
    eq(hget(r.headers, "x-origin"), "o", "origin header at the client")
    demotion_logged_once(t, "demote_resp_drop", "DROP")


@case("demote RESPOND from connection.on_connect", plugins={"demote_conn_respond.lua": """
register_hook("connection", "on_connect", function(msg, ctx)
  return action.RESPOND{ status = 403, body = "must not be sent" }
end)
"""})
def _conn_respond(t):
    r = t.curl("/echo")
    eq(r.status, 200, f"client status (curl: {r.err})")
    check(b"must not be sent" not in r.body, "the demoted RESPOND body reached the client")
    eq(len(t.origin_requests()), 1, "requests at the origin")
    demotion_logged_once(t, "demote_conn_respond", "RESPOND")


@case("demote RESPOND from socks5.on_connect", flags=["--mode", "socks5"], plugins={"demote_socks5_respond.lua": """
register_hook("socks5", "on_connect", function(msg, ctx)
  log.info("CONF-SOCKS5-HOOK " .. msg.target_addr)
  return action.RESPOND{ status = 403, body = "must not be sent" }
end)
register_hook("http", "on_request", function(msg, ctx)
  msg.headers:set("x-after-demotion", "yes")
end)
"""})
def _socks5_respond(t):
    for n in (1, 2):                        # two connections: the demotion is logged once
        r = t.curl_socks5("/echo")
        eq((r.rc, r.status), (0, 200), f"curl exit code and status, connection {n} (curl: {r.err})")
        check(b"must not be sent" not in r.body, "the demoted RESPOND body reached the client")
    reqs = t.origin_requests(2)
    eq(len(reqs), 2, "requests at the origin")
    eq([hget(q["headers"], "x-after-demotion") for q in reqs], ["yes", "yes"],
       "http.on_request's mark at the origin (the tunnel went on as CONTINUE)")
    eq(len(t.proxy.wait_log(r"CONF-SOCKS5-HOOK ", count=2)), 2, "socks5.on_connect calls")
    demotion_logged_once(t, "demote_socks5_respond", "RESPOND")


def raw_plugin(act):
    return f"""
register_hook("raw", "on_chunk", function(msg, ctx)
  if msg.from_client and msg.offset == 0 then
    return action.{act}
  end
end)
"""


def tunnel_unchanged(t):
    c, status, _h = connect_tunnel(t.proxy.port, f"127.0.0.1:{t.echo.port}")
    try:
        eq(status, 200, "CONNECT status")
        c.send(b"unchanged-bytes")
        eq(c.recv_some(15), b"unchanged-bytes", "echo through the tunnel")
    finally:
        c.close()
    eq(t.echo.snapshot(), [b"unchanged-bytes"], "bytes at the tunnel target")


@case("demote RESPOND from raw.on_chunk", plugins={"demote_raw_respond.lua": raw_plugin(
    'RESPOND{ status = 403, body = "must not be sent" }')})
def _raw_respond(t):
    tunnel_unchanged(t)
    demotion_logged_once(t, "demote_raw_respond", "RESPOND")


@case("demote DROP from raw.on_chunk", plugins={"demote_raw_drop.lua": raw_plugin("DROP")})
def _raw_drop(t):
    tunnel_unchanged(t)
    demotion_logged_once(t, "demote_raw_drop", "DROP")


@case("demote DROP from connection.on_disconnect", plugins={"demote_disc_drop.lua": """
register_hook("connection", "on_disconnect", function(msg, ctx)
  return action.DROP
end)
"""})
def _disc_drop(t):
    r = t.curl("/echo")
    eq(r.status, 200, f"client status (curl: {r.err})")
    demotion_logged_once(t, "demote_disc_drop", "DROP")
    r = t.curl("/echo")
    eq(r.status, 200, f"status of a second request (curl: {r.err})")


@case("demote RESPOND_GRPC from http.on_request", plugins={"demote_req_grpc.lua": """
register_hook("http", "on_request", function(msg, ctx)
  return action.RESPOND_GRPC{ status = 7, message = "denied" }
end)
"""})
def _req_grpc(t):
    r = t.curl("/echo")
    eq(r.status, 200, f"client status (curl: {r.err})")
    eq(hget(r.headers, "grpc-status"), None, "grpc-status at the client")
    eq(len(t.origin_requests(1)), 1, "requests at the origin")
    demotion_logged_once(t, "demote_req_grpc", "RESPOND_GRPC")
