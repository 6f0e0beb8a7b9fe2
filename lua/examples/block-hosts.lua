-- block-hosts.lua: refuses requests to a list of hosts with `403 Forbidden`.
--
-- The check runs on http.on_request, which also fires for CONNECT requests (the
-- tunnel target is msg.authority, msg.path is nil), so HTTPS sites reached through a
-- tunnel are refused too: the client gets the 403 instead of "200 Connection
-- established" and no tunnel is opened. The upstream is never contacted.
--
-- A host is blocked if it is in BLOCKED or is a subdomain of an entry
-- ("ads.example.com" also blocks "x.ads.example.com"). "localhost" is in the list so
-- the conformance suite can exercise the plugin without leaving the machine; edit the
-- list for real use. Run it with:
--
--   luring run --plugin lua/examples/block-hosts.lua
--   curl -x http://127.0.0.1:8080 http://localhost:9/         # -> 403
--   curl -x http://127.0.0.1:8080 https://localhost:9/        # CONNECT -> 403

local BLOCKED = {
  "ads.example.com",
  "tracker.example.net",
  "localhost",
}

local blocked = {}
for _, h in ipairs(BLOCKED) do blocked[h:lower()] = true end

-- host part of "host:port" or "[v6]:port"
local function host_of(msg)
  local h = msg.host
  if not h then
    local a = msg.authority or ""
    h = a:match("^%[(.-)%]") or a:match("^([^:]+)") or a
  end
  return h:lower()
end

local function is_blocked(host)
  -- walk up the labels: a.b.example.com, b.example.com, example.com, com
  local bounded = 0
  while host and host ~= "" and bounded < 64 do
    if blocked[host] then return true end
    host = host:match("^[^.]*%.(.+)$")
    bounded = bounded + 1
  end
  return false
end

register_hook("http", "on_request", function(msg, ctx)
  local host = host_of(msg)
  if is_blocked(host) then
    log.info(string.format("block-hosts: refused %s %s from %s", msg.method, host, tostring(ctx.client_addr)))
    return action.RESPOND{
      status = 403,
      headers = { ["content-type"] = "text/plain", ["x-blocked-by"] = "block-hosts" },
      body = "blocked by proxy policy: " .. host .. "\n",
    }
  end
end, { name = "block-hosts" })
