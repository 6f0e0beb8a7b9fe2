-- Benchmark plugin: one request header and one response header, the load the plugin
-- engine issue measures (benches/compare.sh --plugin benches/two-headers.lua).
register_hook("http", "on_request", function(msg)
  msg.headers:set("x-bench-request", "1")
end)
register_hook("http", "on_response", function(msg)
  msg.headers:set("x-bench-response", "1")
end)
