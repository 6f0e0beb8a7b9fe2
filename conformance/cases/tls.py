"""tls.on_handshake through the running binary: curl through an intercepted CONNECT
tunnel to a local HTTPS origin (Python ssl, PKI made by the openssl command line),
the hook dict of both sides, and the demotion of a forbidden DROP.

Every proxy here gets its own --confdir in the case's temp dir (never ~/.luring).
"""

import re
import socket
import ssl
import threading

from harness import ORIGIN_CN, case, check, curl, eq, make_pki, run_cli, settle

JA4_RE = re.compile(r"^t1[23]d\d{4}[0-9a-z]{2}_[0-9a-f]{12}_[0-9a-f]{12}$")


class HttpsOrigin:
    """HTTPS/1.1 on 127.0.0.1:0 (keep-alive); answers 200 `tls-origin <path>`."""

    def __init__(self, cert, key):
        self.ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self.ctx.load_cert_chain(cert, key)
        self.ctx.set_alpn_protocols(["http/1.1"])
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.sock.settimeout(0.5)
        self.port = self.sock.getsockname()[1]
        self.paths = []
        self.lock = threading.Lock()
        self.stopping = False
        threading.Thread(target=self._accept, daemon=True).start()

    def stop(self):
        self.stopping = True

    def _accept(self):
        while not self.stopping:
            try:
                s, _ = self.sock.accept()
            except socket.timeout:
                continue
            except OSError:
                return
            threading.Thread(target=self._serve, args=(s,), daemon=True).start()

    def _serve(self, raw):
        raw.settimeout(10)
        try:
            s = self.ctx.wrap_socket(raw, server_side=True)
            buf = b""
            for _ in range(100):
                while b"\r\n\r\n" not in buf:
                    data = s.recv(65536)
                    if not data:
                        return
                    buf += data
                head, _, buf = buf.partition(b"\r\n\r\n")
                path = head.split(b"\r\n")[0].split(b" ")[1].decode("latin-1")
                with self.lock:
                    self.paths.append(path)
                body = f"tls-origin {path}".encode()
                s.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % len(body) + body)
        except (OSError, ssl.SSLError, IndexError):
            return
        finally:
            raw.close()


def tls_setup(t, plugin_name):
    """HTTPS origin + a proxy with its own confdir, --upstream-ca and the case's plugin;
    returns (origin, proxy, exported luring CA path)."""
    ca, cert, key = make_pki(t.tmp)
    origin = HttpsOrigin(cert, key)
    conf = str(t.tmp / "confdir")
    luring_ca = str(t.tmp / "luring-ca.pem")
    rc, out = run_cli(t.bin, ["ca", "export", "--confdir", conf, "--format", "pem", "--out", luring_ca])
    eq(rc, 0, f"luring ca export ({out})")
    proxy = t.start_proxy(["--confdir", conf, "--upstream-ca", ca,
                           "--plugin", str(t.plugin_paths[plugin_name])])
    return origin, proxy, luring_ca


HOOK = """
register_hook("tls", "on_handshake", function(msg, ctx)
  log.info(string.format(
    "CONF-TLS side=%s sni=%s alpn=%s version_name=%s cipher_name=%s client_fingerprint=%s conn=%s peer_cert_subject=[%s]",
    tostring(msg.side), tostring(msg.sni), tostring(msg.alpn), tostring(msg.version_name),
    tostring(msg.cipher_name), tostring(msg.client_fingerprint), tostring(ctx.conn_id),
    tostring(msg.peer_cert_subject)))
end)
"""

LINE_RE = re.compile(r"CONF-TLS side=(\S+) sni=(\S+) alpn=(\S+) version_name=(\S+) cipher_name=(\S+) "
                     r"client_fingerprint=(\S+) conn=(\S+) peer_cert_subject=\[(.*?)\]")


@case("row tls.on_handshake", proxy=False, plugins={"row_tls.lua": HOOK})
def _row_tls(t):
    origin, proxy, luring_ca = tls_setup(t, "row_tls.lua")
    try:
        url = f"https://localhost:{origin.port}/row-tls"
        r = curl(proxy.addr, url, "--cacert", luring_ca)
        eq(r.rc, 0, f"curl exit code ({r.err})")
        eq((r.status, r.body), (200, b"tls-origin /row-tls"), "client (status, body): the origin's answer")
        eq(origin.paths, ["/row-tls"], "requests at the HTTPS origin")
        lines = proxy.wait_log(r"CONF-TLS ", timeout=3, count=2)
        settle(0.3)
        lines = proxy.find(r"CONF-TLS ")
        eq(len(lines), 2, f"hook lines, one per side ({lines})")
        by_side = {}
        for ln in lines:
            m = LINE_RE.search(ln)
            check(m, f"unparsable hook line {ln!r}")
            by_side[m.group(1)] = m.groups()
        eq(sorted(by_side), ["client", "server"], "sides seen")
        for side, (_s, sni, alpn, ver, cipher, fp, conn, subj) in by_side.items():
            eq(sni, "localhost", f"{side}: sni")
            eq(alpn, "http/1.1", f"{side}: alpn")
            check(ver in ("TLSv1.2", "TLSv1.3"), f"{side}: version_name {ver!r}")
            check(cipher.startswith("TLS_"), f"{side}: cipher_name {cipher!r} (IANA spelling)")
            check(conn != "nil", f"{side}: ctx.conn_id is nil")
        _, _, _, _, _, fp, sconn, ssubj = by_side["server"]
        check(JA4_RE.match(fp), f"server: client_fingerprint {fp!r} is not a JA4")
        eq(ssubj, "nil", "server: peer_cert_subject (curl sends no client certificate)")
        _, _, _, _, _, cfp, cconn, csubj = by_side["client"]
        check(f"CN={ORIGIN_CN}" in csubj, f"client: peer_cert_subject {csubj!r} lacks CN={ORIGIN_CN}")
        eq(cfp, "nil", "client: client_fingerprint (server side only)")
        eq(cconn, sconn, "ctx.conn_id of both sides (one client connection)")
    finally:
        origin.stop()


@case("demote DROP from tls.on_handshake", proxy=False, plugins={"demote_tls_drop.lua": """
register_hook("tls", "on_handshake", function(msg, ctx)
  log.info("CONF-TLSFIRED " .. tostring(msg.side))
  return action.DROP
end)
"""})
def _tls_drop(t):
    origin, proxy, luring_ca = tls_setup(t, "demote_tls_drop.lua")
    try:
        for path in ("/d1", "/d2"):           # two connections: DROP never takes effect
            r = curl(proxy.addr, f"https://localhost:{origin.port}{path}", "--cacert", luring_ca)
            eq(r.rc, 0, f"curl exit code ({r.err})")
            eq((r.status, r.body), (200, f"tls-origin {path}".encode()), "client (status, body)")
        eq(origin.paths, ["/d1", "/d2"], "requests at the HTTPS origin")
        check(len(proxy.wait_log(r"CONF-TLSFIRED client", count=1)) >= 1,
              f"the hook did not fire on the client side: {proxy.log_tail()}")
        pattern = r"demote_tls_drop.*\bDROP\b|\bDROP\b.*demote_tls_drop"
        found = proxy.wait_log(pattern)
        check(found, f"demotion of DROP not logged: {proxy.log_tail()}")
        settle(0.4)
        eq(len(proxy.find(pattern)), 1, f"log lines about the demoted DROP ({proxy.find(pattern)})")
    finally:
        origin.stop()
