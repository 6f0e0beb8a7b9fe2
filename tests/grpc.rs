//! The gRPC layer through the real binary, with python grpcio as client and server:
//! grpc.on_start (metadata, RESPOND_GRPC), grpc.on_data per message both ways (payload
//! rewrites, msg:cancel), grpc.on_end, for the four call kinds; in reverse mode over
//! h2c, through a CONNECT tunnel (h2c inside), through SOCKS5 (h2c inside), with TLS
//! from the client, and in front of a TLS server.

mod support;

use support::*;

/// A grpcio server with the four call kinds (unary Say and Deny, server-streaming
/// Stream and Slow, client-streaming Collect, bidi Bidi): `[CERT KEY]` serves TLS with
/// that certificate, else plaintext. Prints its port, then `RECV METHOD PAYLOAD` for
/// each request message of at most 64 bytes it received, so a test sees what reached
/// the server rather than inferring it from the answers.
const SERVER_PY: &str = r#"
import sys, time
from concurrent import futures
import grpc
def seen(method, m):
    if len(m) <= 64:
        print("RECV %s %s" % (method, m.decode("latin-1")), flush=True)
    return m
def echo(req, ctx):
    seen("Say", req)
    md = dict(ctx.invocation_metadata())
    return b"echo:" + req + (b" md=" + md["x-hook"].encode() if "x-hook" in md else b"")
def stream(req, ctx):
    seen("Stream", req)
    for i in range(3):
        yield b"part%d:" % i + req
def collect(it, ctx):
    return b"+".join(seen("Collect", m) for m in it)
def bidi(it, ctx):
    for m in it:
        yield b"re:" + seen("Bidi", m)
def slow(req, ctx):
    for i in range(3):
        if i:
            time.sleep(1)
        yield b"tick%d" % i
server = grpc.server(futures.ThreadPoolExecutor(4))
server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler("t.Echo", {
    "Say": grpc.unary_unary_rpc_method_handler(echo),
    "Slow": grpc.unary_stream_rpc_method_handler(slow),
    "Deny": grpc.unary_unary_rpc_method_handler(echo),
    "Stream": grpc.unary_stream_rpc_method_handler(stream),
    "Collect": grpc.stream_unary_rpc_method_handler(collect),
    "Bidi": grpc.stream_stream_rpc_method_handler(bidi)}),))
if len(sys.argv) > 2:
    creds = grpc.ssl_server_credentials([(open(sys.argv[2], "rb").read(), open(sys.argv[1], "rb").read())])
    port = server.add_secure_port("127.0.0.1:0", creds)
else:
    port = server.add_insecure_port("127.0.0.1:0")
server.start()
print(port, flush=True)
time.sleep(60)
"#;

/// The client: TARGET [PROXY|-] [CA|-]; one line per call, the four call kinds.
const CLIENT_PY: &str = r#"
import sys, grpc
target, proxy, ca = sys.argv[1:4]
opts = [("grpc.http_proxy", proxy), ("grpc.enable_http_proxy", 1)] if proxy != "-" else []
if ca != "-":
    ch = grpc.secure_channel(target, grpc.ssl_channel_credentials(open(ca, "rb").read()), options=opts)
else:
    ch = grpc.insecure_channel(target, options=opts)
print(ch.unary_unary("/t.Echo/Say")(b"hi", timeout=10).decode())
try:
    ch.unary_unary("/t.Echo/Deny")(b"x", timeout=10); print("deny: no error")
except grpc.RpcError as e:
    print("deny:", e.code().name, e.details())
print(",".join(m.decode() for m in ch.unary_stream("/t.Echo/Stream")(b"s", timeout=10)))
print(",".join(m.decode() for m in ch.stream_stream("/t.Echo/Bidi")(iter([b"a", b"b", b"c"]), timeout=10)))
print(ch.stream_unary("/t.Echo/Collect")(iter([b"x", b"y", b"z"]), timeout=10).decode())
try:
    r = ch.unary_unary("/t.Echo/Say")(b"cancel-me", timeout=10); print("cancel: no error", r)
except grpc.RpcError as e:
    print("cancel:", e.code().name, e.details())
"#;

const PLUGIN: &str = r#"
register_hook("grpc", "on_start", function(m)
  log.info("START " .. tostring(m.service) .. " " .. tostring(m.method) .. " " .. m.protocol)
  if m.method == "Deny" then return action.RESPOND_GRPC{ status = 7, message = "no way" } end
  m.headers:set("x-hook", "yes")
end)
register_hook("grpc", "on_data", function(m)
  if m.payload == "cancel-me" then m:cancel(9, "cancelled by hook") return end
  if m.from_client then m.payload = m.payload .. "!" end
end)
register_hook("grpc", "on_end", function(m)
  log.info("END " .. m.status .. " " .. tostring(m.message))
end)
"#;

type Server = Py;

impl Server {
    /// A plaintext server.
    fn plain() -> Server {
        Py::start(SERVER_PY, &[])
    }
}

/// Runs the client against `target` (through `proxy`, trusting `ca`).
fn client(target: &str, proxy: &str, ca: &str) -> String {
    let out = run_cmd(
        "python3",
        &["-c", CLIENT_PY, target, proxy, ca],
        b"",
        std::time::Duration::from_secs(60),
    );
    out.stdout
}

const EXPECTED: &str = "echo:hi! md=yes\n\
deny: PERMISSION_DENIED no way\n\
part0:s!,part1:s!,part2:s!\n\
re:a!,re:b!,re:c!\n\
x!+y!+z!\n\
cancel: FAILED_PRECONDITION cancelled by hook\n";

/// What the server received from one run of the client, in order per call: the
/// messages as on_data rewrote them; nothing of Deny, which the hook answered.
const SERVER_SAW: &[&str] = &[
    "RECV Say hi!",
    "RECV Stream s!",
    "RECV Bidi a!",
    "RECV Bidi b!",
    "RECV Bidi c!",
    "RECV Collect x!",
    "RECV Collect y!",
    "RECV Collect z!",
];

/// The server saw each client run's messages with the hook's rewrite, in order, and
/// nothing else.
fn assert_server_saw(server: &Server, runs: usize) {
    let want: Vec<String> = (0..runs)
        .flat_map(|_| SERVER_SAW.iter().map(|s| s.to_string()))
        .collect();
    // a message msg:cancel ended is not sent on: "cancel-me" never reaches the server
    wait_until(std::time::Duration::from_secs(5), || {
        server.lines().len() >= want.len()
    });
    assert_eq!(server.lines(), want);
}

fn proxy(conf: &Conf, plugin: &str, extra: &[&str]) -> Proxy {
    let cd = conf.confdir();
    let mut args = vec!["--confdir", cd.as_str(), "--plugin", plugin];
    args.extend_from_slice(extra);
    Proxy::start(&args)
}

fn plugin(conf: &Conf) -> String {
    let p = conf.dir.path("grpc.lua");
    std::fs::write(&p, PLUGIN).unwrap();
    p.to_string_lossy().into_owned()
}

/// on_end fired once per call with the final status, hooks' and the upstream's, for
/// `runs` runs of the client.
fn assert_ends(p: &Proxy, runs: usize) {
    let t = std::time::Duration::from_secs(5);
    let done = wait_until(t, || {
        p.stderr().matches("END 9 cancelled by hook").count() >= runs
    });
    assert!(done, "{}", p.stderr());
    let err = p.stderr();
    assert_eq!(err.matches("START t.Echo").count(), 6 * runs, "{err}");
    assert_eq!(err.matches("END 0 ").count(), 4 * runs, "{err}");
    assert_eq!(err.matches("END 7 no way").count(), runs, "{err}");
    assert_eq!(err.matches("END 9 cancelled").count(), runs, "{err}");
}

/// Run `n` (1-based) of the client through `p` with the test plugin: what the client
/// got, the hooks' log, and what the server received, all of it so far.
fn check_run(p: &Proxy, server: &Server, n: usize, target: &str, proxy: &str, ca: &str) {
    let got = client(target, proxy, ca);
    assert_eq!(got, EXPECTED, "{}", p.stderr());
    assert_ends(p, n);
    assert_server_saw(server, n);
}

#[test]
fn grpc_hooks_in_reverse_mode_over_h2c() {
    let server = Server::plain();
    let conf = Conf::new();
    let plugin = plugin(&conf);
    let mode = format!("reverse:http://127.0.0.1:{}", server.port);
    let p = proxy(&conf, &plugin, &["--mode", &mode]);
    check_run(&p, &server, 1, &format!("127.0.0.1:{}", p.port()), "-", "-");
}

#[test]
fn grpc_hooks_through_a_connect_tunnel_with_h2c_inside() {
    let server = Server::plain();
    let conf = Conf::new();
    let plugin = plugin(&conf);
    let p = proxy(&conf, &plugin, &[]);
    let target = format!("localhost:{}", server.port);
    check_run(&p, &server, 1, &target, &p.url(), "-");
}

#[test]
fn grpc_hooks_with_tls_from_the_client() {
    let server = Server::plain();
    let conf = Conf::new();
    let plugin = plugin(&conf);
    let mode = format!("reverse:http://localhost:{}", server.port);
    let p = proxy(&conf, &plugin, &["--mode", &mode]);
    let target = format!("localhost:{}", p.port());
    check_run(&p, &server, 1, &target, "-", conf.ca());
}

/// A "socksifier" in the manner of redsocks, since grpcio has no SOCKS support:
/// SOCKS_PORT DST_IP DST_PORT. It listens on 127.0.0.1 (prints its port) and, for each
/// connection it accepts, makes a SOCKS5 CONNECT (no auth, IPv4) to DST through the
/// SOCKS5 server on SOCKS_PORT, prints `granted` or `refused CODE`, then relays bytes
/// both ways. Every socket has a timeout and the process ends after 90 s.
const SOCKSIFIER_PY: &str = r#"
import socket, struct, sys, threading, time
socks_port, dst_ip, dst_port = int(sys.argv[1]), sys.argv[2], int(sys.argv[3])
lst = socket.socket()
lst.bind(("127.0.0.1", 0))
lst.listen(16)
lst.settimeout(1.0)
print(lst.getsockname()[1], flush=True)

def exact(s, n):
    b = b""
    while len(b) < n:
        c = s.recv(n - len(b))
        if not c:
            raise EOFError("the SOCKS server closed mid-reply")
        b += c
    return b

def pump(src, dst):
    try:
        while True:
            d = src.recv(65536)
            if not d:
                break
            dst.sendall(d)
    except OSError:
        pass
    for s, how in ((dst, socket.SHUT_WR), (src, socket.SHUT_RD)):
        try:
            s.shutdown(how)
        except OSError:
            pass

def serve(c):
    c.settimeout(60)
    u = socket.create_connection(("127.0.0.1", socks_port), timeout=60)
    u.sendall(b"\x05\x01\x00")
    if exact(u, 2) != b"\x05\x00":
        print("refused method", flush=True); c.close(); u.close(); return
    u.sendall(b"\x05\x01\x00\x01" + socket.inet_aton(dst_ip) + struct.pack(">H", dst_port))
    ver, rep, _, atyp = exact(u, 4)
    exact(u, {1: 4, 4: 16}[atyp] + 2)
    if rep != 0:
        print("refused", rep, flush=True); c.close(); u.close(); return
    print("granted", flush=True)
    threading.Thread(target=pump, args=(c, u), daemon=True).start()
    threading.Thread(target=pump, args=(u, c), daemon=True).start()

end = time.monotonic() + 90
while time.monotonic() < end:
    try:
        c, _ = lst.accept()
    except socket.timeout:
        continue
    threading.Thread(target=serve, args=(c,), daemon=True).start()
"#;

/// `--mode socks5`: grpcio (h2c) reaches the server only through the socksifier's
/// SOCKS5 connections to luring; the hooks fire for all four call kinds.
#[test]
fn grpc_hooks_through_socks5_with_h2c_inside() {
    let server = Server::plain();
    let conf = Conf::new();
    let p = proxy(&conf, &plugin(&conf), &["--mode", "socks5"]);
    let port = p.port().to_string();
    let socks = Py::start(
        SOCKSIFIER_PY,
        &[&port, "127.0.0.1", &server.port.to_string()],
    );
    check_run(
        &p,
        &server,
        1,
        &format!("127.0.0.1:{}", socks.port),
        "-",
        "-",
    );
    // the calls rode SOCKS5 connections luring granted (grpcio keeps one open)
    let lines = socks.lines();
    assert!(
        !lines.is_empty() && lines.iter().all(|l| l == "granted"),
        "{lines:?}"
    );
}

/// Reverse mode to a TLS gRPC server (the test PKI's certificate, trusted through
/// `--upstream-ca`), with h2c then TLS from the client: the server sees the hook's
/// rewrites, the client the hooks' answers.
#[test]
fn grpc_hooks_in_front_of_a_tls_upstream() {
    let pki = TestPki::new();
    let (cert, key) = (
        pki.server_pem.to_str().unwrap(),
        pki.server_key.to_str().unwrap(),
    );
    let server = Py::start(SERVER_PY, &[cert, key]);
    let conf = Conf::new();
    let mode = format!("reverse:https://127.0.0.1:{}", server.port);
    let ca = pki.ca_pem.to_str().unwrap();
    let p = proxy(
        &conf,
        &plugin(&conf),
        &["--mode", &mode, "--upstream-ca", ca],
    );
    check_run(&p, &server, 1, &format!("127.0.0.1:{}", p.port()), "-", "-");
    let tls = format!("localhost:{}", p.port());
    check_run(&p, &server, 2, &tls, "-", conf.ca());
}

#[test]
fn without_grpc_hooks_calls_pass_as_http2_streams() {
    let server = Server::plain();
    let conf = Conf::new();
    let p = conf.dir.path("http.lua");
    std::fs::write(&p, "register_hook('http', 'on_request', function(m) end)").unwrap();
    let mode = format!("reverse:http://127.0.0.1:{}", server.port);
    let p = proxy(&conf, &p.to_string_lossy(), &["--mode", &mode]);
    let got = client(&format!("127.0.0.1:{}", p.port()), "-", "-");
    assert!(
        got.starts_with("echo:hi\ndeny: no error\n"),
        "{got}\n{}",
        p.stderr()
    );
}

#[test]
fn the_grpc_examples_deny_one_method_and_log_every_call() {
    let server = Server::plain();
    let conf = Conf::new();
    let examples = format!("{}/lua/examples", env!("CARGO_MANIFEST_DIR"));
    let deny = format!("{examples}/grpc-deny.lua");
    let log = format!("{examples}/grpc-log.lua");
    let mode = format!("reverse:http://127.0.0.1:{}", server.port);
    let cd = conf.confdir();
    let p = Proxy::start(&[
        "--confdir",
        &cd,
        "--mode",
        &mode,
        "--plugin",
        &deny,
        "--plugin",
        &log,
    ]);
    let got = client(&format!("127.0.0.1:{}", p.port()), "-", "-");
    let lines: Vec<&str> = got.lines().collect();
    assert_eq!(lines[0], "echo:hi", "{got}\n{}", p.stderr());
    assert_eq!(
        lines[1],
        "deny: PERMISSION_DENIED method Deny is not allowed"
    );
    assert_eq!(lines[3], "re:a,re:b,re:c");
    let t = std::time::Duration::from_secs(5);
    assert!(
        p.wait_stderr("grpc t.Echo/Bidi: 3 message(s) up, 3 down, status 0", t),
        "{}",
        p.stderr()
    );
    assert!(p
        .stderr()
        .contains("grpc t.Echo/Stream: 1 message(s) up, 3 down, status 0"));
}

/// `--record` with the gRPC hooks on: each call is one flow whose bodies hold the
/// length-prefixed messages as they went (the hooks' rewrites included on the
/// request side, as luring sent it) and whose trailers hold grpc-status.
#[test]
fn grpc_calls_are_recorded_with_their_messages_and_status() {
    use luring::flows::record::Record;
    let server = Server::plain();
    let conf = Conf::new();
    let file = conf.dir.path("grpc.flows");
    let mode = format!("reverse:http://127.0.0.1:{}", server.port);
    let p = proxy(
        &conf,
        &plugin(&conf),
        &["--mode", &mode, "--record", file.to_str().unwrap()],
    );
    let got = client(&format!("127.0.0.1:{}", p.port()), "-", "-");
    assert_eq!(got, EXPECTED, "{}", p.stderr());
    let mut flows = Vec::new();
    wait_until(std::time::Duration::from_secs(10), || {
        flows = luring::flows::file::open(&file)
            .unwrap()
            .filter_map(|r| match r.ok()? {
                Record::Http(f) => Some(*f),
                _ => None,
            })
            .collect();
        flows.len() >= 6
    });
    assert_eq!(flows.len(), 6, "{}", p.stderr());
    let unary = flows
        .iter()
        .find(|f| f.request.path.ends_with("/Say"))
        .expect("the unary call");
    // one message each way: a 5-byte prefix, then the payload (as the hook changed it)
    assert_eq!(&unary.request.body.data[5..], b"hi!");
    assert_eq!(
        &unary.response.as_ref().unwrap().body.data[5..],
        b"echo:hi! md=yes"
    );
    let status = |f: &luring::flows::record::HttpFlow| {
        let r = f.response.as_ref().unwrap();
        r.trailers
            .iter()
            .chain(r.headers.iter())
            .find(|(n, _)| n.as_slice() == b"grpc-status")
            .map(|(_, v)| String::from_utf8_lossy(v).into_owned())
    };
    assert_eq!(status(unary).as_deref(), Some("0"));
    // client-streaming: three framed messages up (uncompressed, rewritten), one down
    let collect = flows
        .iter()
        .find(|f| f.request.path.ends_with("/Collect"))
        .expect("the client-streaming call");
    let framed = |m: &[u8]| [&[0, 0, 0, 0, m.len() as u8][..], m].concat();
    let up: Vec<u8> = [&b"x!"[..], b"y!", b"z!"]
        .iter()
        .flat_map(|m| framed(m))
        .collect();
    assert_eq!(collect.request.body.data.as_slice(), &up[..]);
    assert_eq!(
        collect.response.as_ref().unwrap().body.data.as_slice(),
        &framed(b"x!+y!+z!")[..]
    );
    assert_eq!(status(collect).as_deref(), Some("0"));
    let deny = flows
        .iter()
        .find(|f| f.request.path.ends_with("/Deny"))
        .unwrap();
    assert_eq!(status(deny).as_deref(), Some("7"));
    assert!(deny.response.as_ref().unwrap().by_proxy);
}

/// A client that prints when each message of the slow stream arrives, then counts a
/// 10,000-message bidi call: TARGET.
const STREAM_PY: &str = r#"
import sys, time, grpc
ch = grpc.insecure_channel(sys.argv[1])
t0 = time.monotonic()
for m in ch.unary_stream("/t.Echo/Slow")(b"", timeout=20):
    print("%s %.2f" % (m.decode(), time.monotonic() - t0), flush=True)
n = 0
for m in ch.stream_stream("/t.Echo/Bidi")((b"x" * 1000 for _ in range(10000)), timeout=60):
    n += 1
print("bidi", n, flush=True)
"#;

/// With the grpc hooks on, nothing waits for the end of a stream: a server sending one
/// message a second reaches the client one message a second, and a bidi call of 10,000
/// messages each way runs at flat memory.
#[test]
fn streams_flow_message_by_message_at_flat_memory() {
    let server = Server::plain();
    let conf = Conf::new();
    let mode = format!("reverse:http://127.0.0.1:{}", server.port);
    let p = proxy(&conf, &plugin(&conf), &["--mode", &mode, "--workers", "1"]);
    let before = p.vm_rss_kib().unwrap_or(0);
    let target = format!("127.0.0.1:{}", p.port());
    let out = run_cmd(
        "python3",
        &["-c", STREAM_PY, &target],
        b"",
        std::time::Duration::from_secs(90),
    );
    let lines: Vec<&str> = out.stdout.lines().collect();
    assert_eq!(lines.len(), 4, "{out:?}\n{}", p.stderr());
    let at = |i: usize| -> f64 { lines[i].split(' ').nth(1).unwrap().parse().unwrap() };
    // the first message came before the server sent the last one, a second apart each
    assert!(at(1) - at(0) > 0.7 && at(2) - at(1) > 0.7, "{lines:?}");
    assert_eq!(lines[3], "bidi 10000", "{}", p.stderr());
    // 10 MB went each way through on_data hooks; the proxy did not hold it
    let after = p.vm_hwm_kib().unwrap_or(0);
    assert!(
        after < before + 32 * 1024,
        "peak RSS grew from {before} KiB to {after} KiB"
    );
}

/// A grpcio server that ends each of its connections after 300 ms (GOAWAY, then 200 ms
/// of grace: `max_connection_age`, a common setting of gRPC servers). Prints its port.
const AGED_SERVER_PY: &str = r#"
import time
from concurrent import futures
import grpc
server = grpc.server(futures.ThreadPoolExecutor(4), options=[
    ("grpc.max_connection_age_ms", 300), ("grpc.max_connection_age_grace_ms", 200)])
server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler("t.Echo", {
    "Say": grpc.unary_unary_rpc_method_handler(lambda req, ctx: req)}),))
port = server.add_insecure_port("127.0.0.1:0")
server.start()
print(port, flush=True)
time.sleep(60)
"#;

/// TARGET SECS: unary calls one after another on one channel for SECS seconds (at most
/// 20,000); prints "ok N failed M" and the failures' codes.
const CALLS_PY: &str = r#"
import sys, time, grpc
ch = grpc.insecure_channel(sys.argv[1])
say = ch.unary_unary("/t.Echo/Say")
ok, failed, codes = 0, 0, {}
end = time.time() + float(sys.argv[2])
while time.time() < end and ok + failed < 20000:
    try:
        say(b"x" * 100, timeout=5)
        ok += 1
    except grpc.RpcError as e:
        failed += 1
        codes[e.code().name] = codes.get(e.code().name, 0) + 1
print("ok", ok, "failed", failed, codes)
"#;

#[test]
fn calls_outlive_a_server_that_ends_its_connections() {
    // the h2c connection luring makes for gRPC is made again after each GOAWAY, and
    // a call that raced one goes again: no call fails
    let server = Py::start(AGED_SERVER_PY, &[]);
    let mode = format!("reverse:http://127.0.0.1:{}", server.port);
    let p = Proxy::start(&["--mode", &mode]);
    let target = format!("127.0.0.1:{}", p.port());
    let out = run_cmd(
        "python3",
        &["-c", CALLS_PY, &target, "3"],
        b"",
        std::time::Duration::from_secs(60),
    );
    let words: Vec<&str> = out.stdout.split_whitespace().collect();
    assert!(
        words.len() >= 4 && words[0] == "ok" && words[2] == "failed",
        "{out:?}"
    );
    let ok: usize = words[1].parse().unwrap();
    assert_eq!(words[3], "0", "{out:?}\n{}", p.stderr());
    // enough calls to span several of the server's connections (300 ms each)
    assert!(ok >= 100, "{out:?}");
}
