-- grpc-deny.lua: refuse one gRPC method with PERMISSION_DENIED, before the upstream is
-- contacted; every other call goes on with a marker in its metadata.
--
--   luring run --plugin lua/examples/grpc-deny.lua
--
-- The call to deny is "/<service>/<method>"; change it to yours.
local DENIED = { ["/t.Echo/Deny"] = true, ["/admin.Admin/Shutdown"] = true }

register_hook("grpc", "on_start", function(m)
  if DENIED[m.path] then
    log.info("denied gRPC call " .. m.path .. " to " .. tostring(m.authority))
    return action.RESPOND_GRPC{ status = 7, message = "method " .. m.method .. " is not allowed" }
  end
  m.headers:set("x-checked-by", "luring")
end)
