-- rate-limit.lua: per-client rate limit, LIMIT requests per WINDOW seconds.
--
-- Counters live in `shared` (one concurrent map for all workers), so the limit holds
-- across cores: the key is "<client ip>:<window number>" and shared.incr(key, 1, ttl)
-- returns the new count. The window number changes every WINDOW seconds, so each
-- window starts at 0; the TTL (two windows) lets old counters expire from the map.
-- Over the limit the client gets `429 Too Many Requests` with Retry-After, and the
-- upstream is not contacted. Run it with:
--
--   luring run --plugin lua/examples/rate-limit.lua
--   for i in 1 2 3 4 5; do curl -s -o /dev/null -w '%{http_code}\n' -x http://127.0.0.1:8080 http://127.0.0.1:9000/; done

local LIMIT = 3       -- requests
local WINDOW = 2      -- seconds

local function client_ip(addr)
  addr = tostring(addr or "?")
  return addr:match("^%[(.-)%]") or addr:match("^([^:]+)") or addr
end

register_hook("http", "on_request", function(msg, ctx)
  local now = os.time()
  local window = math.floor(now / WINDOW)
  local key = "rate-limit:" .. client_ip(ctx.client_addr) .. ":" .. window
  local n = shared.incr(key, 1, 2 * WINDOW)
  if n > LIMIT then
    local retry = (window + 1) * WINDOW - now
    return action.RESPOND{
      status = 429,
      headers = { ["retry-after"] = tostring(retry), ["content-type"] = "text/plain" },
      body = "rate limit: " .. LIMIT .. " requests per " .. WINDOW .. " s\n",
    }
  end
end, { name = "rate-limit" })
