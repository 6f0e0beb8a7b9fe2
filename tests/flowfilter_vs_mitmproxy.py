#!/usr/bin/env python3
"""Which flows mitmproxy's own filter selects, for comparison with `luring flows`.

usage: flowfilter_vs_mitmproxy.py FLOWS.jsonl EXPRESSIONS.txt

FLOWS.jsonl is `luring flows export --format jsonl` of a flow file; each HTTP and
tunnel line is rebuilt as a mitmproxy HTTPFlow or TCPFlow. EXPRESSIONS.txt has one
filter expression a line. Prints one JSON object: expression -> sorted list of the
flow ids mitmproxy.flowfilter selects, or "error" when mitmproxy does not parse it.
Driven by tests/flows_cli.rs (mitmproxy_agrees_on_the_filter_table).
"""

import base64
import json
import sys

from mitmproxy import flow, flowfilter, http, tcp, websocket
from mitmproxy.test import tflow


def raw(b):
    """A luring jsonl body or message as bytes."""
    if b.get("encoding") == "base64":
        return base64.b64decode(b["text"])
    return b["text"].encode()


def fields(lst):
    return http.Headers([(n.encode(), v.encode()) for n, v in lst])


def addr(s):
    """ "host:port" (or "[v6]:port") as a peername tuple; None when empty."""
    if not s:
        return None
    host, _, port = s.rpartition(":")
    return (host.strip("[]"), int(port))


def authority(a, scheme):
    if a.startswith("["):
        host, _, rest = a[1:].partition("]")
        port = rest[1:]
    else:
        host, _, port = a.partition(":")
    return host, int(port) if port else {"http": 80, "https": 443}.get(scheme, 443)


def version(v):
    return b"HTTP/2.0" if v == "HTTP/2" else v.encode()


def http_flow(o):
    q = o["request"]
    host, port = authority(q["authority"], q["scheme"])
    ts = o["times"]["request_start"] / 1e9
    req = http.Request(
        host,
        port,
        q["method"].encode(),
        q["scheme"].encode(),
        # mitmproxy keeps an authority for HTTP/2 (:authority); HTTP/1 requests here
        # are origin-form, named by their Host header.
        q["authority"].encode() if q["version"] == "HTTP/2" else b"",
        q["path"].encode(),
        version(q["version"]),
        fields(q["headers"]),
        raw(q["body"]),
        None,
        ts,
        ts,
    )
    f = tflow.tflow(req=req)
    f.client_conn.peername = addr(o["client"])
    f.server_conn.address = addr(o["server"])
    r = o["response"]
    if r is not None:
        f.response = http.Response(
            version(r["version"] or q["version"]),
            r["status"],
            r["reason"].encode(),
            fields(r["headers"]),
            raw(r["body"]),
            None,
            ts,
            ts,
        )
        # mitmproxy makes flow.websocket when a 101 answers an Upgrade: websocket.
        upgrade = req.headers.get("upgrade", "").lower() == "websocket"
        if r["status"] == 101 and upgrade:
            f.websocket = websocket.WebSocketData()
            for m in o["websocket"]:
                f.websocket.messages.append(
                    websocket.WebSocketMessage(m["opcode"], m["from_client"], raw(m), m["ts"] / 1e9)
                )
    if o["error"] is not None:
        f.error = flow.Error(o["error"])
    f.metadata = dict(o["notes"])
    f.id = str(o["id"])
    return f


def tcp_flow(o):
    f = tflow.ttcpflow()
    f.client_conn.peername = addr(o["client"])
    f.server_conn.address = addr(o["server"])
    f.messages = [tcp.TCPMessage(c["from_client"], raw(c), c["ts"] / 1e9) for c in o["chunks"]]
    f.error = flow.Error(o["error"]) if o["error"] is not None else None
    f.id = str(o["id"])
    return f


def main():
    flows = []
    with open(sys.argv[1]) as fh:
        for line in fh:
            o = json.loads(line)
            if o["type"] == "http":
                flows.append((o["id"], http_flow(o)))
            elif o["type"] == "tunnel":
                flows.append((o["id"], tcp_flow(o)))
    out = {}
    with open(sys.argv[2]) as fh:
        for expr in fh.read().splitlines():
            try:
                flt = flowfilter.parse(expr)
            except ValueError:
                out[expr] = "error"
                continue
            out[expr] = sorted(i for i, f in flows if flt(f))
    json.dump(out, sys.stdout)


if __name__ == "__main__":
    main()
