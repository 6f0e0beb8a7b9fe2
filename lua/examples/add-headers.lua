-- add-headers.lua: stamps traffic that went through luring.
--
-- * every request gets `x-forwarded-by: luring` before it goes upstream;
-- * every response gets `x-proxied-by: luring/<worker>` before it goes to the client.
--
-- Both hooks run in the post_pipeline phase, i.e. after the built-in steps
-- (hop-by-hop removal, --set-request-header ...), so they see and edit exactly what
-- will be sent. Run it with:
--
--   luring check lua/examples/add-headers.lua
--   luring run --plugin lua/examples/add-headers.lua
--   curl -x http://127.0.0.1:8080 http://example.com/ -i     # look for x-proxied-by

register_hook("http", "on_request", function(msg, ctx)
  if msg.method ~= "CONNECT" then             -- a CONNECT request only opens a tunnel
    msg.headers:set("x-forwarded-by", "luring")
  end
end, { phase = "post_pipeline", name = "add-request-header" })

register_hook("http", "on_response", function(msg, ctx)
  msg.headers:set("x-proxied-by", "luring/" .. tostring(ctx.worker))
end, { phase = "post_pipeline", name = "add-response-header" })
