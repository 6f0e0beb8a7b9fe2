-- A fixed-window rate limit shared by every worker and every luring instance: one
-- Redis counter per client address and window. REDIS_HOST/REDIS_PORT name the server,
-- RATE_LIMIT the requests allowed per WINDOW seconds.
local HOST = os.getenv("REDIS_HOST") or "127.0.0.1"
local PORT = tonumber(os.getenv("REDIS_PORT") or "6379")
local LIMIT = tonumber(os.getenv("RATE_LIMIT") or "100")
local WINDOW = tonumber(os.getenv("WINDOW") or "60")

register_hook("http", "on_request", function(msg, ctx)
  local r, err = luring.redis(HOST, PORT, { timeout = 0.5 })
  if not r then
    log.warn("rate limit: redis unavailable: " .. err)
    return -- fail open
  end
  local ip = tostring(ctx.client_addr):match("^(.*):%d+$") or tostring(ctx.client_addr)
  local key = "rl:" .. ip .. ":" .. math.floor(os.time() / WINDOW)
  -- INCR and EXPIRE in one round trip
  local res, perr = r:pipeline{ { "INCR", key }, { "EXPIRE", key, WINDOW } }
  if not res then
    log.warn("rate limit: " .. perr)
    r:close()
    return
  end
  r:keepalive()
  if type(res[1]) == "number" and res[1] > LIMIT then
    return action.RESPOND{ status = 429, headers = { ["retry-after"] = tostring(WINDOW) }, body = "slow down" }
  end
end, { name = "rate-limit-redis" })
