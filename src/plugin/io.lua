-- The waiting half of the `luring` table: sleep, http_request, tcp_connect (cosockets)
-- and redis. Each call yields the hook's coroutine with the IO token and a request;
-- the engine hands the request to the proxy, which does the I/O and resumes the hook
-- with the result (`nil, err` on failure). Nothing here touches a socket: a cosocket
-- is a number the proxy maps to its connection.
local IO, can_wait, luring = ...
local yield, running = coroutine.yield, coroutine.running
local type, error, tostring, tonumber = type, error, tostring, tonumber
local setmetatable, select, pairs, ipairs = setmetatable, select, pairs, ipairs
local concat, lower, sub, find = table.concat, string.lower, string.sub, string.find

-- Yields the request; `name` is the API for the error of a hook that cannot wait.
local function wait(name, ...)
  local ok, why = can_wait(running())
  if not ok then error(name .. ": " .. why, 3) end
  return yield(IO, ...)
end

local function seconds(name, v)
  if v == nil then return nil end
  if type(v) ~= "number" or v < 0 or v ~= v then
    error(name .. ": timeout must be a non-negative number of seconds", 3)
  end
  return v
end

function luring.sleep(s)
  if type(s) ~= "number" or s < 0 or s ~= s then
    error("luring.sleep: seconds must be a non-negative number", 2)
  end
  return wait("luring.sleep", "sleep", s)
end

-- A response's headers: the methods of msg.headers, over a list of {name, value}.
local H = {}
local HMT = { __index = function(h, k)
  local m = H[k]
  if m then return m end
  if type(k) == "string" then return H.get(h, k) end
end }
function H.get(h, name)
  name = lower(name)
  for _, f in ipairs(h._l) do if lower(f[1]) == name then return f[2] end end
end
function H.get_all(h, name)
  name = lower(name)
  local out = {}
  for _, f in ipairs(h._l) do if lower(f[1]) == name then out[#out + 1] = f[2] end end
  return out
end
function H.remove(h, name)
  name = lower(name)
  local keep = {}
  for _, f in ipairs(h._l) do if lower(f[1]) ~= name then keep[#keep + 1] = f end end
  h._l = keep
end
function H.add(h, name, value) h._l[#h._l + 1] = { name, tostring(value) } end
function H.set(h, name, value) H.remove(h, name); H.add(h, name, value) end
function H.pairs(h)
  local i = 0
  return function()
    i = i + 1
    local f = h._l[i]
    if f then return f[1], f[2] end
  end
end

-- Request headers as a flat {name, value, name, value...} list; a map or a list of
-- {name, value} pairs, as action.RESPOND takes them.
local function flat_headers(hs)
  local out = {}
  if hs == nil then return out end
  if type(hs) ~= "table" then error("luring.http_request: headers must be a table", 3) end
  for k, v in pairs(hs) do
    if type(k) == "number" and type(v) == "table" then
      out[#out + 1], out[#out + 2] = tostring(v[1]), tostring(v[2])
    else
      out[#out + 1], out[#out + 2] = tostring(k), tostring(v)
    end
  end
  return out
end

function luring.http_request(t)
  if type(t) ~= "table" then error("luring.http_request: expects a table", 2) end
  local url = t.url
  if type(url) ~= "string" then error("luring.http_request: url must be a string", 2) end
  local method = t.method or "GET"
  local body = t.body
  if body ~= nil and type(body) ~= "string" then
    error("luring.http_request: body must be a string", 2)
  end
  local status, list, rbody = wait("luring.http_request", "http", tostring(method), url,
    flat_headers(t.headers), body or "", seconds("luring.http_request", t.timeout))
  if not status then return nil, list end
  local l = {}
  for i = 1, #list, 2 do l[#l + 1] = { list[i], list[i + 1] } end
  return { status = status, headers = setmetatable({ _l = l }, HMT), body = rbody }
end

-- Cosockets. `timeout` applies to each operation (nil: the hook timeout alone).
local S = {}
S.__index = S

function luring.tcp_connect(host, port, opts)
  if type(host) ~= "string" then error("luring.tcp_connect: host must be a string", 2) end
  port = tonumber(port)
  if not port or port < 1 or port > 65535 or port % 1 ~= 0 then
    error("luring.tcp_connect: port must be 1-65535", 2)
  end
  opts = opts or {}
  local timeout = seconds("luring.tcp_connect", opts.timeout)
  local sni = opts.sni
  if sni ~= nil and type(sni) ~= "string" then error("luring.tcp_connect: sni must be a string", 2) end
  local id, err, reused = wait("luring.tcp_connect", "connect", host, port, opts.tls and true or false,
    sni, timeout)
  if not id then return nil, err end
  return setmetatable({ _id = id, _timeout = timeout, _reused = reused }, S)
end

local function live(s, name)
  if type(s) ~= "table" or not s._id then error("cosocket:" .. name .. ": call it with ':'", 3) end
  return s._id
end

function S:send(data)
  local id = live(self, "send")
  if type(data) == "table" then data = concat(data) end
  if type(data) ~= "string" then data = tostring(data) end
  return wait("cosocket:send", "send", id, data, self._timeout)
end

-- receive(n): n bytes; receive("*l") or receive(): a line without its CRLF;
-- receive("*a"): everything until the peer closes.
function S:receive(p)
  local id = live(self, "receive")
  if p == nil or p == "*l" then return wait("cosocket:receive", "recv", id, "line", nil, self._timeout) end
  if p == "*a" then return wait("cosocket:receive", "recv", id, "all", nil, self._timeout) end
  local n = tonumber(p)
  if not n or n < 0 or n % 1 ~= 0 then error("cosocket:receive: expects a byte count, '*l' or '*a'", 2) end
  return wait("cosocket:receive", "recv", id, "bytes", n, self._timeout)
end

-- The bytes up to `delim` (left out; the delimiter itself is consumed).
function S:receive_until(delim)
  local id = live(self, "receive_until")
  if type(delim) ~= "string" or delim == "" then
    error("cosocket:receive_until: delimiter must be a non-empty string", 2)
  end
  return wait("cosocket:receive_until", "recv", id, "until", delim, self._timeout)
end

function S:set_timeout(sec)
  live(self, "set_timeout")
  self._timeout = seconds("cosocket:set_timeout", sec)
  return true
end

-- How many times this connection came from the keep-alive pool (0: new).
function S:get_reused_times() return self._reused or 0 end

function S:close()
  local id = live(self, "close")
  return wait("cosocket:close", "close", id)
end

function S:keepalive()
  local id = live(self, "keepalive")
  return wait("cosocket:keepalive", "keepalive", id)
end

-- Redis: a RESP2 client on a cosocket.
local null = setmetatable({}, { __tostring = function() return "luring.null" end })
luring.null = null

local R = {}
R.__index = R

local function encode(args, out)
  out[#out + 1] = "*" .. #args .. "\r\n"
  for i = 1, #args do
    local a = tostring(args[i])
    out[#out + 1] = "$" .. #a .. "\r\n"
    out[#out + 1] = a
    out[#out + 1] = "\r\n"
  end
end

-- One reply: value, or nil and err (a Redis error reply is `false, "ERR ..."`, so a
-- pipeline can tell it from an I/O failure).
local function read_reply(s)
  local line, err = s:receive("*l")
  if not line then return nil, err end
  local kind, rest = sub(line, 1, 1), sub(line, 2)
  if kind == "+" then return rest end
  if kind == "-" then return false, rest end
  if kind == ":" then return tonumber(rest) end
  if kind == "$" then
    local n = tonumber(rest)
    if not n then return nil, "redis: bad reply" end
    if n < 0 then return null end
    local data, e = s:receive(n + 2)
    if not data then return nil, e end
    return sub(data, 1, n)
  end
  if kind == "*" then
    local n = tonumber(rest)
    if not n then return nil, "redis: bad reply" end
    if n < 0 then return null end
    local out = {}
    for i = 1, n do
      local v, e = read_reply(s)
      if v == nil then return nil, e end
      if v == false then v = { err = e } end
      out[i] = v
    end
    return out
  end
  return nil, "redis: bad reply type '" .. kind .. "'"
end

function R:call(...)
  local out = {}
  encode({ ... }, out)
  local ok, err = self._s:send(out)
  if not ok then return nil, err end
  local v, e = read_reply(self._s)
  if v == false then return nil, e end
  if v == null then return nil end
  return v, e
end

-- pipeline{{"INCR", k}, {"EXPIRE", k, 60}}: one write, then one reply per command;
-- an error reply is `{err = "..."}`, a null reply is luring.null.
function R:pipeline(cmds)
  if type(cmds) ~= "table" then error("redis:pipeline: expects a list of commands", 2) end
  local out = {}
  for _, c in ipairs(cmds) do encode(c, out) end
  local ok, err = self._s:send(out)
  if not ok then return nil, err end
  local res = {}
  for i = 1, #cmds do
    local v, e = read_reply(self._s)
    if v == nil then return nil, e end
    if v == false then v = { err = e } end
    res[i] = v
  end
  return res
end

function R:keepalive() return self._s:keepalive() end
function R:close() return self._s:close() end
function R:set_timeout(sec) return self._s:set_timeout(sec) end

-- A pooled connection was authenticated and switched to its db when it was new: the
-- pool is keyed by host and port, so one Redis server is used with one password and db.
function luring.redis(host, port, opts)
  opts = opts or {}
  if host ~= nil and type(host) ~= "string" then error("luring.redis: host must be a string", 2) end
  local p = tonumber(port or 6379)
  if not p or p < 1 or p > 65535 or p % 1 ~= 0 then
    error("luring.redis: port must be 1-65535", 2)
  end
  local s, err = luring.tcp_connect(host or "127.0.0.1", port or 6379, { timeout = opts.timeout })
  if not s then return nil, err end
  local r = setmetatable({ _s = s }, R)
  if s:get_reused_times() == 0 then
    if opts.password then
      local ok, e = r:call("AUTH", opts.password)
      if not ok then s:close(); return nil, e or "redis: AUTH failed" end
    end
    if opts.db and opts.db ~= 0 then
      local ok, e = r:call("SELECT", opts.db)
      if not ok then s:close(); return nil, e or "redis: SELECT failed" end
    end
  end
  return r
end
