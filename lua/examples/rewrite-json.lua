-- rewrite-json.lua: rewrites one field of JSON responses.
--
-- For responses with `Content-Type: application/json`, every `"role": "<anything>"`
-- string field is replaced by `"role": "admin"`, and `x-rewritten: <count>` is added.
--
-- There is no JSON library in the plugin state, so this is a plain string.gsub on a
-- known field. That is fine for a known, flat field with a string value; it does not
-- understand nesting, escaped quotes inside the value, or the same key at another
-- depth. Reading msg.body buffers the whole body (up to --max-plugin-body); luring
-- fixes Content-Length for the new body. Run it with:
--
--   luring run --plugin lua/examples/rewrite-json.lua
--   curl -x http://127.0.0.1:8080 http://127.0.0.1:9000/profile.json

local FIELD, NEW_VALUE = "role", "admin"
local pattern = '"' .. FIELD .. '"%s*:%s*"[^"\\]*"'
local replacement = '"' .. FIELD .. '": "' .. NEW_VALUE .. '"'

register_hook("http", "on_response", function(msg, ctx)
  local ctype = msg.headers:get("content-type") or ""
  if not ctype:lower():find("application/json", 1, true) then
    return                                   -- other types: not even read (no buffering)
  end
  local body, n = msg.body:gsub(pattern, replacement)
  if n > 0 then
    msg.body = body
    msg.headers:set("x-rewritten", tostring(n))
  end
end, { name = "rewrite-json" })
