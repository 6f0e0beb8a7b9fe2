"""A gRPC-web client for tests/grpc_web.rs and conformance: one line per call."""
import base64, struct, sys, urllib3, grpc
# URL MODE [PROXY]: MODE "bin" is sonora's client (grpc-web+proto); "text" is a raw
# grpc-web-text client (sonora's client has no text mode); PROXY a forward proxy URL.
url, mode = sys.argv[1], sys.argv[2]
proxy = sys.argv[3] if len(sys.argv) > 3 else None
ident = lambda b: b
def frames(data):
    i, out = 0, []
    while i < len(data):
        flags, n = struct.unpack(">BI", data[i:i+5]); out.append((flags, data[i+5:i+5+n])); i += 5 + n
    return out
def raw_call(path, msg):
    ct = "application/grpc-web-text"
    body = base64.b64encode(struct.pack(">BI", 0, len(msg)) + msg)
    pm = urllib3.ProxyManager(proxy) if proxy else urllib3.PoolManager()
    r = pm.request("POST", url.rstrip("/") + path, body=body,
        headers={"Content-Type": ct, "Accept": ct, "X-Grpc-Web": "1"}, timeout=10)
    data = r.data
    data = b"".join(base64.b64decode(data[i:i+4]) for i in range(0, len(data), 4))
    msgs, trailers = [], {}
    for flags, p in frames(data):
        if flags & 0x80:
            for line in p.decode().split("\r\n"):
                if line: k, v = line.split(":", 1); trailers[k.strip().lower()] = v.strip()
        else: msgs.append(p)
    code = int(trailers.get("grpc-status", r.headers.get("grpc-status", "2")))
    return msgs, [c for c in grpc.StatusCode if c.value[0] == code][0].name, trailers.get("grpc-message", "")
def sonora_call(path, msg):
    from sonora.client import insecure_web_channel
    ch = insecure_web_channel(url)
    if proxy:
        ch._session = urllib3.ProxyManager(proxy)
    try:
        if path.endswith("Stream"):
            return list(ch.unary_stream(path, ident, ident)(msg, timeout=10)), "OK", ""
        return [ch.unary_unary(path, ident, ident)(msg, timeout=10)], "OK", ""
    except grpc.RpcError as e:
        return [], e.code().name, e.details()
for path, msg in [("/t.Echo/Say", b"hi"), ("/t.Echo/Deny", b"x"), ("/t.Echo/Stream", b"s"), ("/t.Echo/Say", b"cancel-me")]:
    msgs, status, details = (raw_call if mode == "text" else sonora_call)(path, msg)
    print(path.split("/")[-1], ",".join(m.decode() for m in msgs), status, details)
