---@meta luring
-- LuaLS / LuaCATS annotations for luring plugins (docs/rfc/001-plugin-engine.md §9.3).
-- Not loaded at run time: point your editor's Lua language server at this file.

---@alias luring.Protocol "http"|"ws"|"grpc"|"grpc-web"|"sse"|"raw"|"tls"|"connection"|"socks5"
---@alias luring.HttpEvent "on_request"|"on_response"
---@alias luring.WsEvent "on_upgrade"|"on_message"|"on_close"
---@alias luring.GrpcEvent "on_start"|"on_data"|"on_end"
---@alias luring.Phase "pre_pipeline"|"post_pipeline"
---@alias luring.OnError "skip"|"abort"

---@class luring.HookOptions
---@field phase? luring.Phase  pipeline events only; "pre_pipeline" by default
---@field on_error? luring.OnError "skip" (default) logs and runs the next hook; "abort" ends the chain
---@field name? string used in logs and `luring check`; default "file.lua:line"

---@class luring.LifecycleOptions
---@field on_error? luring.OnError
---@field name? string

---An opaque action value returned by a hook.
---@class luring.Action

---@class luring.RespondArgs
---@field status? integer HTTP status (200 by default)
---@field reason? string
---@field headers? table<string, string|string[]>|{[1]: string, [2]: string}[] map, or list of {name, value} pairs (order and repeats kept)
---@field body? string

---@class luring.RespondGrpcArgs
---@field status? integer gRPC status code (2 UNKNOWN by default)
---@field message? string sent percent-encoded in grpc-message
---@field details? string bytes, sent base64 in grpc-status-details-bin
---@field trailers? table<string, string>|{[1]: string, [2]: string}[]

---@class luring.Actions
---@field CONTINUE luring.Action same as returning nil
---@field DROP luring.Action close the connection / reset the stream (where allowed)
---@field RESPOND fun(args: luring.RespondArgs): luring.Action answer from the proxy
---@field RESPOND_GRPC fun(args: luring.RespondGrpcArgs): luring.Action trailers-only gRPC answer
action = {}

---Read-only context of the running hook.
---@class luring.Ctx
---@field conn_id integer
---@field flow_id integer? nil for connection-level events
---@field client_addr string "ip:port"
---@field server_addr string? nil before the upstream connection exists
---@field sni string?
---@field listener_name string
---@field worker integer core index
---@field plugin string script file name of the running hook

---Header list: case-insensitive lookups, wire order and repeats kept. `h["x-a"]` is `h:get("x-a")`; `h["x-a"] = v` is `h:set("x-a", v)` and `h["x-a"] = nil` removes.
---@class Headers
---@field [string] string?
local Headers = {}
---First value of `name`, or nil.
---@param name string
---@return string?
function Headers:get(name) end
---Every value of `name`, in wire order.
---@param name string
---@return string[]
function Headers:get_all(name) end
---Replaces every `name` field by one (keeps the position of the first).
---@param name string
---@param value string
function Headers:set(name, value) end
---Appends a field.
---@param name string
---@param value string
function Headers:add(name, value) end
---Removes every `name` field.
---@param name string
---@return integer removed
function Headers:remove(name) end
---Iterator over (name, value) in wire order, repeats kept: `for k, v in h:pairs() do`.
---@return fun(): string?, string?
function Headers:pairs() end

---@class HTTPRequest
---@field method string (rw)
---@field scheme string (rw)
---@field authority string (rw) "host:port"; for CONNECT the tunnel target
---@field host string
---@field port integer
---@field path string? (rw) with query; nil for CONNECT
---@field http_version "HTTP/1.0"|"HTTP/1.1"|"HTTP/2.0"
---@field headers Headers (rw: assign a table to replace all)
---@field body string (rw) reading it buffers the body (up to max-plugin-body, else an error)
---@field trailers Headers? (rw)
---@field timestamp_start number unix seconds

---@class HTTPResponse
---@field status integer (rw)
---@field reason string (rw)
---@field http_version "HTTP/1.0"|"HTTP/1.1"|"HTTP/2.0"
---@field headers Headers (rw)
---@field body string (rw) reading it buffers the body
---@field trailers Headers? (rw)
---@field request HTTPRequest read-only view

---@class WSMessage
---@field opcode 1|2|8|9|10
---@field fin boolean
---@field masked boolean
---@field payload string (rw) after permessage-deflate inflation
---@field compressed boolean
---@field from_client boolean
---@field close_code integer?
---@field close_reason string?
local WSMessage = {}
---Ends the WebSocket: a close frame with this code and reason to both peers. The first call wins.
---@param code? integer 1000 by default; 1000-1003, 1007-1014 or 3000-4999
---@param reason? string UTF-8, at most 123 bytes
function WSMessage:close(code, reason) end

---@class WSCloseDict
---@field opcode integer
---@field fin boolean
---@field masked boolean
---@field payload string
---@field close_code integer 1006 for an abnormal closure
---@field close_reason string?
---@field compressed boolean

---No `body`: the call's messages come one by one to on_data.
---@class GRPCStartMessage
---@field service string? from the path "/pkg.Service/Method"; nil for another shape
---@field method string?
---@field path string (rw) a gRPC path; another one calls another method
---@field authority string the request's authority, or its Host header
---@field headers Headers (rw metadata)
---@field content_type string?
---@field encoding string? grpc-encoding
---@field protocol "grpc"|"grpc-web"|"grpc-web-text"

---@class GRPCDataMessage
---@field from_client boolean
---@field index integer 0-based per direction
---@field compressed boolean flag of the length-prefixed frame
---@field payload string (rw) one whole message, decompressed
local GRPCDataMessage = {}
---Ends the call: this status and message in trailers to the client, RST_STREAM CANCEL upstream. The first call wins.
---@param status integer gRPC status code 0-16
---@param message? string
function GRPCDataMessage:cancel(status, message) end

---@class GRPCEndDict
---@field status integer 2 (UNKNOWN) for a synthesized end
---@field message string
---@field status_details string? grpc-status-details-bin, decoded
---@field trailers {[1]: string, [2]: string}[] in wire order

---@class SSEMessage
---@field event string? (rw) nil means "message"
---@field data string (rw) lines joined by "\n"
---@field id string? (rw)
---@field retry integer? (rw)
---@field index integer

---@class RawMessage
---@field from_client boolean
---@field data string (rw)
---@field offset integer bytes seen before this chunk in that direction
local RawMessage = {}
---Closes both sides of the tunnel after this chunk.
function RawMessage:close() end

---@class TLSHandshakeDict
---@field side "server"|"client"
---@field sni string?
---@field alpn string?
---@field version_name string?
---@field cipher_name string?
---@field peer_cert_subject string?
---@field client_fingerprint string? JA4 (server side only)

---@class ConnectDict
---@field conn_id integer
---@field client_addr string
---@field listener_name string

---@class DisconnectDict
---@field conn_id integer
---@field client_addr string
---@field duration_ms number
---@field bytes_in integer
---@field bytes_out integer

---@class Socks5ConnectDict
---@field conn_id integer
---@field client_addr string
---@field target_addr string "host:port"
---@field username string?

---@alias luring.Ret luring.Action|nil

---Registers a hook for one row of the §9.3 surface. Errors are load-time errors.
---@overload fun(protocol: "http", event: luring.HttpEvent, fn: fun(msg: HTTPRequest|HTTPResponse, ctx: luring.Ctx): luring.Ret, opts?: luring.HookOptions)
---@overload fun(protocol: "http", event: "on_request", fn: fun(msg: HTTPRequest, ctx: luring.Ctx): luring.Ret, opts?: luring.HookOptions)
---@overload fun(protocol: "http", event: "on_response", fn: fun(msg: HTTPResponse, ctx: luring.Ctx): luring.Ret, opts?: luring.HookOptions)
---@overload fun(protocol: "ws", event: "on_upgrade", fn: fun(msg: HTTPRequest, ctx: luring.Ctx): luring.Ret, opts?: luring.HookOptions)
---@overload fun(protocol: "ws", event: "on_message", fn: fun(msg: WSMessage, ctx: luring.Ctx): luring.Ret, opts?: luring.HookOptions)
---@overload fun(protocol: "ws", event: "on_close", fn: fun(msg: WSCloseDict, ctx: luring.Ctx): luring.Ret, opts?: luring.LifecycleOptions)
---@overload fun(protocol: "grpc"|"grpc-web", event: "on_start", fn: fun(msg: GRPCStartMessage, ctx: luring.Ctx): luring.Ret, opts?: luring.HookOptions)
---@overload fun(protocol: "grpc"|"grpc-web", event: "on_data", fn: fun(msg: GRPCDataMessage, ctx: luring.Ctx): luring.Ret, opts?: luring.HookOptions)
---@overload fun(protocol: "grpc"|"grpc-web", event: "on_end", fn: fun(msg: GRPCEndDict, ctx: luring.Ctx): luring.Ret, opts?: luring.LifecycleOptions)
---@overload fun(protocol: "sse", event: "on_event", fn: fun(msg: SSEMessage, ctx: luring.Ctx): luring.Ret, opts?: luring.HookOptions)
---@overload fun(protocol: "raw", event: "on_chunk", fn: fun(msg: RawMessage, ctx: luring.Ctx): luring.Ret, opts?: luring.HookOptions)
---@overload fun(protocol: "tls", event: "on_handshake", fn: fun(msg: TLSHandshakeDict, ctx: luring.Ctx): luring.Ret, opts?: luring.LifecycleOptions)
---@overload fun(protocol: "connection", event: "on_connect", fn: fun(msg: ConnectDict, ctx: luring.Ctx): luring.Ret, opts?: luring.LifecycleOptions)
---@overload fun(protocol: "connection", event: "on_disconnect", fn: fun(msg: DisconnectDict, ctx: luring.Ctx): luring.Ret, opts?: luring.LifecycleOptions)
---@overload fun(protocol: "socks5", event: "on_connect", fn: fun(msg: Socks5ConnectDict, ctx: luring.Ctx): luring.Ret, opts?: luring.LifecycleOptions)
---@param protocol luring.Protocol
---@param event string
---@param fn fun(msg: any, ctx: luring.Ctx): luring.Ret
---@param opts? luring.HookOptions
function register_hook(protocol, event, fn, opts) end

---Logging through the proxy's tracing (target "luring::plugin"); `print` logs at info.
---@class luring.Log
log = {}
---@param ... any
function log.debug(...) end
---@param ... any
function log.info(...) end
---@param ... any
function log.warn(...) end
---@param ... any
function log.error(...) end

---Process-wide store shared by every worker (a concurrent map; TTL checked on read).
---@class luring.Shared
shared = {}
---@param key string
---@return string|number|boolean|nil
function shared.get(key) end
---@param key string
---@param value string|number|boolean|nil nil deletes
---@param ttl_seconds? number
function shared.set(key, value, ttl_seconds) end
---Adds `delta` (1 by default) to a number (0 when absent or expired); returns the new value.
---@param key string
---@param delta? number
---@param ttl_seconds? number applied when the key is created
---@return number
function shared.incr(key, delta, ttl_seconds) end
---@param key string
function shared.delete(key) end

---One field of a decoded protobuf message.
---@class luring.ProtobufField
---@field number integer 1..2^29-1
---@field wire_type? 0|1|2|3|5 varint, fixed64, length-delimited, group, fixed32; inferred when absent (2 for a string, else 0)
---@field value number|string|boolean numbers past 2^53 are decimal strings; wire types 2 and 3 are strings

---A decoded message: its fields in wire order.
---@alias luring.ProtobufMessage luring.ProtobufField[]

---Helpers of the proxy.
---@class luring.Helpers
---@field protobuf luring.Protobuf
luring = {}

---The protobuf wire format without a schema.
---@class luring.Protobuf
luring.protobuf = {}

---Adds a key/value note to the flow this hook runs for, kept in its recording
---(`luring run --record`). Values are converted with tostring. Without --record it
---does nothing. Raises an error in a connection-level hook (there is no flow).
---@param key string
---@param value any
function luring.flow_note(key, value) end

---Leaves the flow this hook runs for out of the recording (`--record`).
function luring.skip_recording() end
---Decodes a message; malformed input is an error.
---@param bytes string
---@return luring.ProtobufMessage
function luring.protobuf.decode(bytes) end
---Decodes a nested value as a message, or gives nil when it is not one.
---@param value any
---@return luring.ProtobufMessage?
function luring.protobuf.decode_message(value) end
---Encodes a message; unchanged decoded fields come out byte for byte.
---@param message luring.ProtobufMessage
---@return string
function luring.protobuf.encode(message) end

-- Waiting calls (docs/plugins.md, "Waiting in hooks"). They suspend the hook's
-- coroutine while the worker serves others; every hook can call them (not top-level
-- plugin code). I/O failures come back
-- as `nil, err` ("timeout", "connect refused", "dns: ...", "tls: ...", "closed"...).

---Waits `seconds` without blocking the worker.
---@param seconds number
---@return true
function luring.sleep(seconds) end

---@class luring.HttpRequestArgs
---@field url string http:// or https:// URL (https verified as proxied traffic)
---@field method? string default "GET"
---@field headers? table<string,string>|string[][] a map or a list of {name, value}
---@field body? string
---@field timeout? number seconds for the whole call

---@class luring.HttpResponse
---@field status integer
---@field headers Headers same methods as msg.headers
---@field body string

---HTTP/1.1 subrequest over the worker's upstream pool.
---@param args luring.HttpRequestArgs
---@return luring.HttpResponse? response
---@return string? err
function luring.http_request(args) end

---@class luring.TcpOptions
---@field timeout? number connect timeout and each operation's, in seconds
---@field tls? boolean TLS, verified as proxied traffic
---@field sni? string name for SNI and verification (default: host)

---@class luring.Cosocket
local Cosocket = {}
---@param data string|string[]
---@return integer? sent
---@return string? err
function Cosocket:send(data) end
---`n` bytes, "*l" (a line without CRLF; the default) or "*a" (until the peer closes).
---@param pattern? integer|"*l"|"*a"
---@return string? data
---@return string? err
function Cosocket:receive(pattern) end
---The bytes before `delimiter`; the delimiter is consumed.
---@param delimiter string
---@return string? data
---@return string? err
function Cosocket:receive_until(delimiter) end
---@param seconds number? limit of each later operation
function Cosocket:set_timeout(seconds) end
---@return true
function Cosocket:close() end
---Returns the connection to the worker's pool (keyed by host, port, tls).
---@return true
function Cosocket:keepalive() end
---@return integer times this connection came from the pool (0: new)
function Cosocket:get_reused_times() end

---@param host string
---@param port integer
---@param opts? luring.TcpOptions
---@return luring.Cosocket? sock
---@return string? err
function luring.tcp_connect(host, port, opts) end

---@class luring.RedisOptions
---@field timeout? number
---@field password? string sent with AUTH on a new connection
---@field db? integer sent with SELECT on a new connection

---@class luring.Redis
local Redis = {}
---One command; its reply, `nil, "ERR ..."` for an error reply, nil for a null reply.
---@return any reply
---@return string? err
function Redis:call(...) end
---Several commands in one write; one reply each ({err = "..."} for an error reply,
---luring.null for a null one).
---@param commands any[][]
---@return any[]? replies
---@return string? err
function Redis:pipeline(commands) end
function Redis:keepalive() end
function Redis:close() end

---A RESP client on a pooled cosocket.
---@param host? string default "127.0.0.1"
---@param port? integer default 6379
---@param opts? luring.RedisOptions
---@return luring.Redis? client
---@return string? err
function luring.redis(host, port, opts) end

---The null value in Redis pipeline and array replies.
luring.null = {}
