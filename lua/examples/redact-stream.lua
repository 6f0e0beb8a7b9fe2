-- redact-stream.lua: masks e-mail addresses and API keys in server-sent event streams
-- (LLM token streams, notification feeds) as each event passes, without buffering
-- the stream.
--
-- * only events whose data matched are rewritten; the others go on byte for byte;
-- * the number of redactions so far is kept per worker in `redacted`, and every
--   rewritten event gets `id` left alone, so clients resume as before.
--
--   luring check lua/examples/redact-stream.lua
--   luring run --plugin lua/examples/redact-stream.lua
--   curl -N -x http://127.0.0.1:8080 http://127.0.0.1:9000/stream

local patterns = {
  "[%w%._%%+-]+@[%w%.-]+%.%a%a+",   -- e-mail addresses
  "sk%-[%w_-]+",                     -- API keys of the sk-... form
}

redacted = 0

register_hook("sse", "on_event", function(ev, ctx)
  local data, total = ev.data, 0
  for _, p in ipairs(patterns) do
    local n
    data, n = data:gsub(p, "[redacted]")
    total = total + n
  end
  if total > 0 then
    ev.data = data
    redacted = redacted + total
    log.info(string.format("redacted %d in event %d (%d on worker %d)",
      total, ev.index, redacted, ctx.worker))
  end
end, { name = "redact-stream" })
