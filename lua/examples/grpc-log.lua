-- grpc-log.lua: one log line per gRPC call, when it ends: service, method, messages
-- each way and the final status (2, UNKNOWN, when the call broke off).
--
--   luring run --plugin lua/examples/grpc-log.lua

local calls = {}   -- flow id -> what was seen; per worker, as every Lua global

register_hook("grpc", "on_start", function(m, ctx)
  calls[ctx.flow_id] = { service = m.service, method = m.method, up = 0, down = 0 }
end)

register_hook("grpc", "on_data", function(m, ctx)
  local c = calls[ctx.flow_id]
  if not c then return end
  if m.from_client then c.up = c.up + 1 else c.down = c.down + 1 end
end, { phase = "post_pipeline" })

register_hook("grpc", "on_end", function(m, ctx)
  local c = calls[ctx.flow_id] or { service = "?", method = "?", up = 0, down = 0 }
  calls[ctx.flow_id] = nil
  log.info(string.format("grpc %s/%s: %d message(s) up, %d down, status %d %s",
    tostring(c.service), tostring(c.method), c.up, c.down, m.status, m.message or ""))
end)
