-- Asks an auth service about every request and answers 403 when it says no.
-- The call waits without blocking the worker: other requests go on meanwhile.
-- AUTH_URL is where the service answers GET /check (200 = allowed).
local AUTH_URL = os.getenv("AUTH_URL") or "http://127.0.0.1:9000/check"

register_hook("http", "on_request", function(msg)
  local res, err = luring.http_request{
    url = AUTH_URL,
    headers = { authorization = msg.headers:get("authorization") or "" },
    timeout = 1.0,
  }
  if not res then
    return action.RESPOND{ status = 503, body = "auth unavailable: " .. err }
  end
  if res.status ~= 200 then
    return action.RESPOND{ status = 403, body = "denied" }
  end
end, { name = "auth-subrequest" })
