"""TLS interception: tls.on_handshake fires once per side with the handshake dict, and
requests inside an intercepted CONNECT tunnel fire http.on_request as usual.

The origin is an HTTPS server with a throwaway certificate made by the `openssl` CLI;
the proxy trusts it with --upstream-ca; curl trusts the proxy's CA (`luring ca export`,
kept under the suite's scratch $XDG_CONFIG_HOME). PENDING when the binary has no TLS
layer (no --upstream-ca option)."""

import shutil
import ssl
import subprocess

from harness import Origin, Pending, case, check, curl, eq, hget, run_cli

PLUGIN = """
register_hook("tls", "on_handshake", function(msg, ctx)
  msg.side = "forged"            -- lifecycle dict: frozen, the write is ignored
  msg.sni = "forged.example"
end)
register_hook("tls", "on_handshake", function(msg, ctx)
  log.info(table.concat({ "CONF-TLS", tostring(msg.side), tostring(msg.sni), tostring(msg.alpn),
    tostring(msg.version_name), tostring(msg.cipher_name), tostring(msg.peer_cert_subject),
    tostring(msg.client_fingerprint), "END" }, "|"))
end)
register_hook("http", "on_request", function(msg, ctx)
  if msg.method ~= "CONNECT" then
    msg.headers:set("x-inside", table.concat({ tostring(msg.scheme), msg.method, tostring(msg.path),
      "sni=" .. tostring(ctx.sni) }, " "))
  end
end)
"""


def openssl(*args):
    p = subprocess.run(["openssl", *map(str, args)], capture_output=True, timeout=30)
    check(p.returncode == 0, f"openssl {args[0]} failed: {p.stderr[-300:]!r}")


def make_cert(t):
    """A throwaway CA and a localhost leaf it signs; returns (leaf key, leaf cert, CA cert)."""
    if shutil.which("openssl") is None:
        raise Pending("openssl CLI not found (needed for the HTTPS origin's certificate)")
    d = t.tmp
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    openssl("req", "-x509", *ec, "-days", "1", "-subj", "/CN=conformance test CA",
            "-keyout", d / "ca.key", "-out", d / "ca.pem")
    openssl("req", *ec, "-subj", "/CN=localhost", "-keyout", d / "origin.key", "-out", d / "origin.csr")
    (d / "ext.cnf").write_text("basicConstraints=critical,CA:FALSE\n"
                               "subjectAltName=DNS:localhost,IP:127.0.0.1\n"
                               "extendedKeyUsage=serverAuth\n")
    openssl("x509", "-req", "-in", d / "origin.csr", "-CA", d / "ca.pem", "-CAkey", d / "ca.key",
            "-CAcreateserial", "-days", "1", "-extfile", d / "ext.cnf", "-out", d / "origin.pem")
    return d / "origin.key", d / "origin.pem", d / "ca.pem"


@case("row tls.on_handshake", proxy=False)
def _row_tls(t):
    t.require_layer("--upstream-ca", "tls")
    key, cert, origin_ca = make_cert(t)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(str(cert), str(key))
    origin = Origin("tls-origin", ssl_context=ctx)
    try:
        plugin = t.write("tls_hooks.lua", PLUGIN)
        proxy = t.start_proxy(["--plugin", str(plugin), "--upstream-ca", str(origin_ca)])
        ca = t.tmp / "luring-ca.pem"
        rc, out = run_cli(t.bin, ["ca", "export", "--out", str(ca)])
        check(rc == 0 and ca.exists(), f"`luring ca export` failed ({rc}): {out.strip()[:300]!r}")
        r = curl(proxy.addr, f"https://localhost:{origin.port}/echo", "--cacert", str(ca))
        eq(r.status, 200, f"client status through the intercepted tunnel (curl rc {r.rc}: {r.err})")
        reqs, _ = origin.snapshot()
        eq(len(reqs), 1, "requests at the HTTPS origin")
        inside = hget(reqs[0]["headers"], "x-inside") or ""
        check(inside.startswith("https GET /echo"),
              f"http.on_request inside the tunnel: x-inside {inside!r} (expected 'https GET /echo ...')")
        check(inside.endswith("sni=localhost"), f"ctx.sni inside the tunnel: {inside!r}")
        proxy.wait_log(r"CONF-TLS\|", timeout=3, count=2)
        lines = [ln[ln.index("CONF-TLS|"):] for ln in proxy.find(r"CONF-TLS\|")]
        rows = {}
        for ln in lines:
            f = ln.split("|")
            check(len(f) >= 9 and f[8].startswith("END"), f"unparsable line {ln!r}")
            check(f[1] not in rows, f"tls.on_handshake fired twice for side {f[1]}: {lines}")
            rows[f[1]] = dict(zip(["sni", "alpn", "version", "cipher", "peer", "fp"], f[2:8]))
        eq(sorted(rows), ["client", "server"], f"sides seen by tls.on_handshake ({lines})")
        srv, cli = rows["server"], rows["client"]
        for side, d in rows.items():
            eq(d["sni"], "localhost", f"{side} side: sni (the first hook's write must be ignored)")
            check(d["version"].startswith("TLSv1."), f"{side} side: version_name {d['version']!r}")
            check(d["cipher"].startswith("TLS_"), f"{side} side: cipher_name {d['cipher']!r} (IANA name)")
        eq(srv["alpn"], "http/1.1", "server side: alpn (curl offers h2 and http/1.1; luring speaks http/1.1)")
        eq(srv["peer"], "nil", "server side: peer_cert_subject (curl sent no client certificate)")
        check(srv["fp"][:3] in ("t13", "t12") and srv["fp"].count("_") == 2,
              f"server side: client_fingerprint {srv['fp']!r} is not a JA4 string")
        check("localhost" in cli["peer"], f"client side: peer_cert_subject {cli['peer']!r}")
        eq(cli["fp"], "nil", "client side: client_fingerprint")
    finally:
        origin.stop()
