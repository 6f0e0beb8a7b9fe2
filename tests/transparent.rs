//! `--mode transparent` in a network namespace the test makes and removes itself: an
//! nftables REDIRECT rule sends a client's connections for a namespace-local address
//! to luring, which runs as `nobody` so the rule can leave its own upstream traffic
//! alone (`meta skuid`). Nothing leaves the machine. Skipped, with a message, where
//! namespaces or nft are not available.

mod support;

use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;
use support::*;

const SITE: &str = "10.77.0.1";
const LISTEN: &str = "127.0.0.1:18080";
const NOBODY: u32 = 65534;

struct Netns(String);

impl Netns {
    fn new() -> Option<Netns> {
        static N: AtomicUsize = AtomicUsize::new(0);
        let name = format!(
            "luring-t{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::SeqCst)
        );
        let ok = |args: &[&str]| {
            Command::new(args[0])
                .args(&args[1..])
                .status()
                .is_ok_and(|s| s.success())
        };
        if Command::new("nft").arg("--version").output().is_err() {
            eprintln!("SKIPPED: nft is not installed (apt install nftables)");
            return None;
        }
        if !ok(&["ip", "netns", "add", &name]) {
            eprintln!("SKIPPED: cannot create a network namespace here");
            return None;
        }
        let ns = Netns(name);
        assert!(ok(&["ip", "-n", &ns.0, "link", "set", "lo", "up"]));
        assert!(ok(&[
            "ip",
            "-n",
            &ns.0,
            "addr",
            "add",
            &format!("{SITE}/32"),
            "dev",
            "lo"
        ]));
        Some(ns)
    }

    fn cmd(&self, program: &str) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.0, program]);
        c
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.0]).status();
    }
}

/// An HTTP origin on SITE:80 in the namespace answering with the Host it was sent.
const ORIGIN_PY: &str = r#"
import http.server, sys
class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        body = ("host=" + str(self.headers.get("Host")) + " path=" + self.path).encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def log_message(self, *a):
        pass
s = http.server.HTTPServer((sys.argv[1], 80), H)
print("ready", flush=True)
s.serve_forever()
"#;

/// The same origin over TLS on SITE:443 with the test PKI's certificate (for localhost).
const TLS_ORIGIN_PY: &str = r#"
import http.server, ssl, sys
class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        body = ("tls host=" + str(self.headers.get("Host"))).encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def log_message(self, *a):
        pass
s = http.server.HTTPServer((sys.argv[1], 443), H)
ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
ctx.load_cert_chain(sys.argv[2], sys.argv[3])
s.socket = ctx.wrap_socket(s.socket, server_side=True)
s.serve_forever()
"#;

fn spawn_quiet(mut c: Command) -> Child {
    c.stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn in the namespace")
}

fn wait_port(ns: &Netns, addr: &str) -> bool {
    wait_until(Duration::from_secs(10), || {
        let probe = format!(
            "import socket; socket.create_connection(('{}', {}), 1)",
            addr.split(':').next().unwrap(),
            addr.split(':').nth(1).unwrap()
        );
        ns.cmd("python3")
            .args(["-c", &probe])
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    })
}

#[test]
fn redirected_http_is_served_and_a_loop_is_refused() {
    let Some(ns) = Netns::new() else { return };
    let dir = TempDir::new("transparent");
    let rules = dir.path("rules.nft");
    std::fs::write(
        &rules,
        format!(
            "table ip luring_test {{\n chain redirect_out {{\n  type nat hook output priority -100; policy accept;\n  \
             meta skuid {NOBODY} return\n  ip daddr {SITE} tcp dport {{ 80, 443 }} redirect to :18080\n }}\n}}\n"
        ),
    )
    .unwrap();
    let st = ns
        .cmd("nft")
        .args(["-f", rules.to_str().unwrap()])
        .status()
        .unwrap();
    assert!(st.success(), "nft rules");
    let mut origin = spawn_quiet({
        let mut c = ns.cmd("python3");
        c.args(["-c", ORIGIN_PY, SITE]);
        c
    });
    let pki = TestPki::new();
    let mut tls_origin = spawn_quiet({
        let mut c = ns.cmd("python3");
        c.args(["-c", TLS_ORIGIN_PY, SITE]);
        c.args([
            pki.server_pem.to_str().unwrap(),
            pki.server_key.to_str().unwrap(),
        ]);
        c
    });
    let upstream_ca = dir.path("upstream-ca.pem");
    std::fs::copy(&pki.ca_pem, &upstream_ca).unwrap();
    // luring runs as nobody: the rule leaves its upstream connections alone
    let conf = dir.path("conf");
    std::fs::create_dir_all(&conf).unwrap();
    let _ = Command::new("chmod")
        .args(["-R", "0777", dir.0.to_str().unwrap()])
        .status();
    let log = dir.path("luring.log");
    let logf = std::fs::File::create(&log).unwrap();
    let _ = Command::new("chmod")
        .args(["0666", log.to_str().unwrap()])
        .status();
    let mut luring = ns
        .cmd("setpriv")
        .args([
            &format!("--reuid={NOBODY}"),
            &format!("--regid={NOBODY}"),
            "--clear-groups",
            bin(),
        ])
        .args([
            "run",
            "--mode",
            "transparent",
            "--listen",
            LISTEN,
            "--workers",
            "1",
            "--access-log",
        ])
        .args([
            "--confdir",
            conf.to_str().unwrap(),
            "--upstream-ca",
            upstream_ca.to_str().unwrap(),
        ])
        .stdout(Stdio::null())
        .stderr(logf)
        .spawn()
        .expect("luring in the namespace");
    let ready = wait_port(&ns, &format!("{SITE}:80"))
        && wait_port(&ns, &format!("{SITE}:443"))
        && wait_port(&ns, LISTEN);
    let text = || std::fs::read_to_string(&log).unwrap_or_default();
    if !ready {
        let _ = luring.kill();
        let _ = origin.kill();
        let _ = tls_origin.kill();
        panic!("origin or luring did not listen: {}", text());
    }
    let out = ns
        .cmd("curl")
        .args([
            "-sS",
            "--max-time",
            "10",
            "-H",
            "Host: site.test",
            &format!("http://{SITE}/hello?x=1"),
        ])
        .output()
        .unwrap();
    let body = String::from_utf8_lossy(&out.stdout).into_owned();
    // TLS: intercepted with a leaf for the SNI; upstream, the original address with
    // the SNI's name verified
    let ca = dir.path("luring-ca.pem");
    let st = Command::new(bin())
        .args([
            "ca",
            "export",
            "--confdir",
            conf.to_str().unwrap(),
            "--out",
            ca.to_str().unwrap(),
        ])
        .status()
        .unwrap();
    assert!(st.success());
    let resolve = format!("localhost:443:{SITE}");
    let tls = ns
        .cmd("curl")
        .args([
            "-sS",
            "--max-time",
            "10",
            "--cacert",
            ca.to_str().unwrap(),
            "--resolve",
            &resolve,
        ])
        .arg("https://localhost/secure")
        .output()
        .unwrap();
    let tls_body = String::from_utf8_lossy(&tls.stdout).into_owned();
    // a client that connects to luring's own listener (no redirect) is refused
    let direct = ns
        .cmd("curl")
        .args(["-sS", "--max-time", "5", &format!("http://{LISTEN}/")])
        .output()
        .unwrap();
    std::thread::sleep(Duration::from_millis(300));
    let _ = luring.kill();
    let _ = luring.wait();
    let _ = origin.kill();
    let _ = origin.wait();
    let _ = tls_origin.kill();
    let _ = tls_origin.wait();
    let log = text();
    assert_eq!(
        tls_body,
        "tls host=localhost",
        "{}\n{log}",
        String::from_utf8_lossy(&tls.stderr)
    );
    assert_eq!(
        body,
        "host=site.test path=/hello?x=1",
        "{}\n{log}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        log.contains("GET /hello?x=1"),
        "the request went through luring: {log}"
    );
    assert!(
        !direct.status.success(),
        "a direct connection to the listener was served"
    );
    assert!(log.contains("own listener"), "{log}");
}

/// An HTTP origin on SITE:80 answering with the headers luring adds.
const VIA_ORIGIN_PY: &str = r#"
import http.server, sys
class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        body = ("via=" + str(self.headers.get("x-via")) + " host=" + str(self.headers.get("Host"))).encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def log_message(self, *a):
        pass
s = http.server.HTTPServer((sys.argv[1], 80), H)
s.serve_forever()
"#;

#[test]
fn tproxy_connections_take_their_destination_from_the_local_address() {
    // a gateway namespace (luring, and the site on its lo) and a client namespace
    // routed through it; the gateway's TPROXY rule hands the client's connections for
    // SITE:80 to luring's IP_TRANSPARENT listener, without NAT
    let Some(gw) = Netns::new() else { return };
    let Some(client) = Netns::new() else { return };
    let ok = |ns: &Netns, args: &[&str]| {
        ns.cmd(args[0])
            .args(&args[1..])
            .status()
            .is_ok_and(|s| s.success())
    };
    let (vg, vc) = (
        format!("vg{}", std::process::id() % 100000),
        format!("vc{}", std::process::id() % 100000),
    );
    assert!(ok(
        &gw,
        &["ip", "link", "add", &vg, "type", "veth", "peer", "name", &vc]
    ));
    assert!(ok(&gw, &["ip", "link", "set", &vc, "netns", &client.0]));
    assert!(ok(&gw, &["ip", "addr", "add", "10.78.0.1/24", "dev", &vg]));
    assert!(ok(&gw, &["ip", "link", "set", &vg, "up"]));
    // the client reaches SITE through the gateway, not on its own lo
    let site = format!("{SITE}/32");
    assert!(ok(&client, &["ip", "addr", "del", &site, "dev", "lo"]));
    assert!(ok(
        &client,
        &["ip", "addr", "add", "10.78.0.2/24", "dev", &vc]
    ));
    assert!(ok(&client, &["ip", "link", "set", &vc, "up"]));
    assert!(ok(
        &client,
        &["ip", "route", "add", "default", "via", "10.78.0.1"]
    ));
    assert!(ok(
        &gw,
        &["ip", "rule", "add", "fwmark", "1", "lookup", "100"]
    ));
    assert!(ok(
        &gw,
        &[
            "ip",
            "route",
            "add",
            "local",
            "0.0.0.0/0",
            "dev",
            "lo",
            "table",
            "100"
        ]
    ));
    let dir = TempDir::new("tproxy");
    let rules = dir.path("rules.nft");
    std::fs::write(
        &rules,
        format!(
            "table ip luring_tproxy {{\n chain pre {{\n  type filter hook prerouting priority mangle; policy accept;\n  \
             iifname \"{vg}\" ip daddr {SITE} tcp dport 80 tproxy to :18081 meta mark set 1 accept\n }}\n}}\n"
        ),
    )
    .unwrap();
    if !gw
        .cmd("nft")
        .args(["-f", rules.to_str().unwrap()])
        .status()
        .is_ok_and(|s| s.success())
    {
        eprintln!("SKIPPED: this kernel has no nftables tproxy support");
        return;
    }
    let mut origin = spawn_quiet({
        let mut c = gw.cmd("python3");
        c.args(["-c", VIA_ORIGIN_PY, SITE]);
        c
    });
    let log = dir.path("luring.log");
    let logf = std::fs::File::create(&log).unwrap();
    let mut luring = gw
        .cmd(bin())
        .args(["run", "--mode", "transparent", "--listen", "0.0.0.0:18081"])
        .args([
            "--workers",
            "1",
            "--access-log",
            "--set-request-header",
            "x-via=luring",
        ])
        .args(["--confdir", dir.path("conf").to_str().unwrap()])
        .stdout(Stdio::null())
        .stderr(logf)
        .spawn()
        .expect("luring in the namespace");
    let text = || std::fs::read_to_string(&log).unwrap_or_default();
    let ready = wait_port(&gw, &format!("{SITE}:80")) && wait_port(&gw, "127.0.0.1:18081");
    let out = ready.then(|| {
        client
            .cmd("curl")
            .args(["-sS", "--max-time", "10", "-H", "Host: site.test"])
            .arg(format!("http://{SITE}/tp"))
            .output()
            .unwrap()
    });
    let _ = luring.kill();
    let _ = luring.wait();
    let _ = origin.kill();
    let _ = origin.wait();
    let log = text();
    let out = out.unwrap_or_else(|| panic!("origin or luring did not listen: {log}"));
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "via=luring host=site.test",
        "{}\n{log}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!log.contains("IP_TRANSPARENT refused"), "{log}");
}
