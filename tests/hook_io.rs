//! Waiting hooks (issue 16): luring.sleep, luring.http_request, cosockets and Redis from
//! real plugins in a real luring process, against real servers on loopback.

mod support;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};
use support::*;

fn plugin(dir: &TempDir, name: &str, code: &str) -> String {
    let p = dir.path(name);
    std::fs::write(&p, code).unwrap();
    p.to_str().unwrap().to_string()
}

fn get(origin: &Origin, path: &str, extra: &str) -> String {
    format!(
        "GET {}{path} HTTP/1.1\r\nHost: 127.0.0.1:{}\r\n{extra}\r\n",
        origin.url(),
        origin.port()
    )
}

/// A port nothing listens on.
fn closed_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn fd_count(pid: i32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, |d| d.count())
}

/// A line service: answers "pong" to each line; counts accepted connections.
fn line_service() -> (SocketAddr, Arc<AtomicUsize>) {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    let accepted = Arc::new(AtomicUsize::new(0));
    let a = accepted.clone();
    thread::spawn(move || {
        for s in l.incoming() {
            let Ok(s) = s else { continue };
            a.fetch_add(1, Ordering::SeqCst);
            thread::spawn(move || {
                let _ = s.set_read_timeout(Some(Duration::from_secs(30)));
                let mut w = s.try_clone().unwrap();
                for line in BufReader::new(s).lines() {
                    let Ok(_) = line else { break };
                    if w.write_all(b"pong\r\n").is_err() {
                        break;
                    }
                }
            });
        }
    });
    (addr, accepted)
}

#[test]
fn auth_subrequest_does_not_block_the_worker() {
    let auth = Origin::start(slow(
        Duration::from_millis(50),
        handler(|ex| {
            let ok = ex.req.header("x-user") != Some("bad");
            let status = if ok { 200 } else { 401 };
            ex.write(format!("HTTP/1.1 {status} X\r\nContent-Length: 0\r\n\r\n").as_bytes())?;
            Ok(Next::KeepAlive)
        }),
    ));
    let origin = Origin::start(fixed(200, &[], b"hello"));
    let dir = TempDir::new("hookio-auth");
    let code = std::fs::read_to_string("lua/examples/auth-subrequest.lua")
        .unwrap()
        .replace(
            "http://127.0.0.1:9000/check",
            &format!("{}/check", auth.url()),
        )
        .replace(
            "headers = { authorization = msg.headers:get(\"authorization\") or \"\" }",
            "headers = { [\"x-user\"] = msg.headers:get(\"x-user\") or \"\" }",
        );
    let p = plugin(&dir, "auth.lua", &code);
    let proxy = Proxy::start(&["--workers", "1", "--plugin", &p]);

    let mut c = Client::connect(proxy.addr);
    assert_eq!(c.request(&get(&origin, "/", "x-user: bad\r\n")).status, 403);
    assert_eq!(c.request(&get(&origin, "/", "")).status, 200);

    const CLIENTS: usize = 200;
    const EACH: usize = 2;
    let start = Instant::now();
    let oks: Vec<_> = (0..CLIENTS)
        .map(|_| {
            let (addr, req) = (proxy.addr, get(&origin, "/", ""));
            thread::spawn(move || {
                let mut c = Client::connect(addr);
                c.set_read_timeout(Duration::from_secs(30));
                (0..EACH).filter(|_| c.request(&req).status == 200).count()
            })
        })
        .collect();
    let ok: usize = oks.into_iter().map(|t| t.join().unwrap()).sum();
    let secs = start.elapsed().as_secs_f64();
    assert_eq!(ok, CLIENTS * EACH);
    let rate = ok as f64 / secs;
    // a blocking 50 ms call allows 20 requests a second on one worker
    eprintln!("auth subrequest: {ok} requests in {secs:.2} s = {rate:.0}/s");
    assert!(rate >= 10.0 * 20.0, "{rate:.0} requests/s");
}

#[test]
fn failures_are_nil_err_and_traffic_continues() {
    let silent = Origin::start(never_respond());
    let origin = Origin::start(fixed(200, &[], b"ok"));
    let closed = closed_port();
    let dir = TempDir::new("hookio-err");
    let p = plugin(
        &dir,
        "err.lua",
        &format!(
            r#"
register_hook("http", "on_request", function(msg)
  if msg.path ~= "/probe" then return end
  local r1, e1 = luring.http_request{{ url = "http://127.0.0.1:{closed}/x" }}
  local r2, e2 = luring.http_request{{ url = "{silent}/slow", timeout = 0.2 }}
  local s3, e3 = luring.tcp_connect("127.0.0.1", {closed})
  local r4, e4 = luring.http_request{{ url = "ftp://x/" }}
  local ok = luring.sleep(0.01)
  return action.RESPOND{{ status = 200, headers = {{
    ["x-e1"] = tostring(r1) .. "|" .. e1, ["x-e2"] = tostring(r2) .. "|" .. e2,
    ["x-e3"] = tostring(s3) .. "|" .. e3, ["x-e4"] = e4, ["x-sleep"] = tostring(ok) }} }}
end)
"#,
            silent = silent.url()
        ),
    );
    let proxy = Proxy::start(&["--workers", "1", "--plugin", &p]);
    let mut c = Client::connect(proxy.addr);
    let r = c.request(&get(&origin, "/probe", ""));
    assert_eq!(r.status, 200);
    assert_eq!(r.header("x-e1"), Some("nil|connect refused"));
    assert_eq!(r.header("x-e2"), Some("nil|timeout"));
    assert_eq!(r.header("x-e3"), Some("nil|connect refused"));
    assert!(
        r.header("x-e4").unwrap().starts_with("bad url"),
        "{:?}",
        r.headers
    );
    assert_eq!(r.header("x-sleep"), Some("true"));
    assert_eq!(c.request(&get(&origin, "/", "")).body, b"ok");
}

#[test]
fn hook_timeout_is_a_hook_error_and_on_error_applies() {
    let origin = Origin::start(fixed(200, &[], b"ok"));
    let dir = TempDir::new("hookio-timeout");
    let p = plugin(
        &dir,
        "t.lua",
        r#"
register_hook("http", "on_request", function(msg)
  luring.sleep(30)
  msg.headers:set("x-never", "1")
end, { name = "sleeper" })
register_hook("http", "on_request", function(msg)
  msg.headers:set("x-second", "ran")
end)
"#,
    );
    let proxy = Proxy::start(&["--workers", "1", "--hook-timeout", "0.3", "--plugin", &p]);
    let mut c = Client::connect(proxy.addr);
    let start = Instant::now();
    let r = c.request(&get(&origin, "/", ""));
    assert_eq!(r.status, 200);
    assert!(
        start.elapsed() < Duration::from_secs(5),
        "{:?}",
        start.elapsed()
    );
    let seen = &origin.requests()[0];
    assert_eq!(seen.header("x-second"), Some("ran"));
    assert_eq!(seen.header("x-never"), None);
    assert!(proxy.wait_stderr("hook timeout", Duration::from_secs(5)));
}

#[test]
fn lifecycle_hooks_wait_and_their_connection_waits_with_them() {
    let origin = Origin::start(fixed(200, &[], b"ok"));
    let dir = TempDir::new("hookio-lifecycle");
    // on_connect waits, then decides: the request hook of the same connection runs
    // only after the wait (it sees the note), and a DROP after a wait still drops
    let p = plugin(
        &dir,
        "n.lua",
        r#"
local note = {}
register_hook("connection", "on_connect", function(msg, ctx)
  luring.sleep(0.05)
  note[ctx.conn_id] = "slept"
  if drop_next then drop_next = false; return action.DROP end
end)
register_hook("http", "on_request", function(msg, ctx)
  msg.headers:set("x-connect", note[ctx.conn_id] or "not yet")
  if msg.path == "/drop-next" then drop_next = true end
end)
"#,
    );
    let proxy = Proxy::start(&["--workers", "1", "--plugin", &p]);
    let mut c = Client::connect(proxy.addr);
    assert_eq!(c.request(&get(&origin, "/drop-next", "")).status, 200);
    assert_eq!(origin.requests()[0].header("x-connect"), Some("slept"));
    // the next connection is dropped by on_connect after its wait
    let mut s = std::net::TcpStream::connect(proxy.addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let _ = s.write_all(get(&origin, "/", "").as_bytes());
    let mut buf = [0u8; 64];
    assert!(
        matches!(s.read(&mut buf), Ok(0) | Err(_)),
        "dropped after the wait"
    );
    let mut c = Client::connect(proxy.addr);
    assert_eq!(c.request(&get(&origin, "/again", "")).status, 200);
    assert_eq!(origin.requests().len(), 2);
}

#[test]
fn waiting_at_load_time_is_a_clear_error() {
    let dir = TempDir::new("hookio-nowait");
    let top = plugin(&dir, "top.lua", "luring.sleep(1)\n");
    let err = Proxy::try_start(&["--workers", "1", "--plugin", &top])
        .err()
        .expect("a plugin that waits at load time is rejected");
    assert!(
        err.stderr.contains("top-level plugin code cannot wait"),
        "{}",
        err.stderr
    );
}

#[test]
fn client_gone_mid_wait_leaks_no_fd() {
    let origin = Origin::start(fixed(200, &[], b"ok"));
    let silent = Origin::start(never_respond());
    let dir = TempDir::new("hookio-fd");
    let p = plugin(
        &dir,
        "fd.lua",
        &format!(
            r#"
register_hook("http", "on_request", function(msg)
  if msg.path ~= "/wait" then return end
  local s = luring.tcp_connect("127.0.0.1", {port})
  s:send("GET / HTTP/1.1\r\nHost: x\r\n\r\n")
  s:receive("*l")
end)
"#,
            port = silent.port()
        ),
    );
    let proxy = Proxy::start(&["--workers", "1", "--hook-timeout", "1", "--plugin", &p]);
    let mut c = Client::connect(proxy.addr);
    assert_eq!(c.request(&get(&origin, "/", "")).status, 200);
    drop(c);
    thread::sleep(Duration::from_millis(200));
    let base = fd_count(proxy.pid());
    // the clients stay until every hook holds its cosocket (a client already gone when
    // a wait ends abandons the hook there), then all go away mid-wait
    let mut clients = Vec::new();
    for _ in 0..20 {
        let mut s = TcpStream::connect(proxy.addr).unwrap();
        s.write_all(get(&origin, "/wait", "").as_bytes()).unwrap();
        clients.push(s);
    }
    assert!(silent.wait_requests(20, Duration::from_secs(5)));
    assert!(
        fd_count(proxy.pid()) > base,
        "the waits hold their cosockets"
    );
    drop(clients);
    let back = wait_until(Duration::from_secs(10), || fd_count(proxy.pid()) <= base);
    assert!(back, "fds: {} after, {base} before", fd_count(proxy.pid()));
}

#[test]
fn cosockets_are_pooled() {
    let origin = Origin::start(fixed(200, &[], b"ok"));
    let (svc, accepted) = line_service();
    let dir = TempDir::new("hookio-pool");
    let p = plugin(
        &dir,
        "pool.lua",
        &format!(
            r#"
register_hook("http", "on_request", function(msg)
  local s, err = luring.tcp_connect("127.0.0.1", {port}, {{ timeout = 1 }})
  if not s then return action.RESPOND{{ status = 502, body = err }} end
  s:send("ping\n")
  local line, rerr = s:receive("*l")
  if line ~= "pong" then return action.RESPOND{{ status = 500, body = tostring(rerr) }} end
  s:keepalive()
end)
"#,
            port = svc.port()
        ),
    );
    let proxy = Proxy::start(&["--workers", "1", "--plugin", &p]);
    let workers: Vec<_> = (0..4)
        .map(|_| {
            let (addr, req) = (proxy.addr, get(&origin, "/", ""));
            thread::spawn(move || {
                let mut c = Client::connect(addr);
                (0..250).filter(|_| c.request(&req).status == 200).count()
            })
        })
        .collect();
    let ok: usize = workers.into_iter().map(|t| t.join().unwrap()).sum();
    assert_eq!(ok, 1000);
    let opened = accepted.load(Ordering::SeqCst);
    eprintln!("1000 requests opened {opened} cosocket connections");
    assert!(opened <= 8, "{opened} connections");
}

/// A redis-server on a free port, stopped on drop.
struct Redis(Child, u16);

impl Redis {
    fn start() -> Option<Redis> {
        let port = closed_port();
        let child = Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .ok()?;
        let addr: SocketAddr = ([127, 0, 0, 1], port).into();
        let up = wait_until(Duration::from_secs(5), || TcpStream::connect(addr).is_ok());
        up.then_some(Redis(child, port))
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn redis_rate_limit_holds_across_two_instances() {
    let Some(redis) = Redis::start() else {
        eprintln!("SKIPPED: redis-server is not installed (Debian package redis-server)");
        return;
    };
    let origin = Origin::start(fixed(200, &[], b"ok"));
    let dir = TempDir::new("hookio-redis");
    let code = std::fs::read_to_string("lua/examples/rate-limit-redis.lua")
        .unwrap()
        .replace("or \"6379\"", &format!("or \"{}\"", redis.1))
        .replace("or \"100\"", "or \"10\"")
        .replace("or \"60\"", "or \"3600\"");
    let p = plugin(&dir, "rl.lua", &code);
    let a = Proxy::start(&["--workers", "1", "--plugin", &p]);
    let b = Proxy::start(&["--workers", "1", "--plugin", &p]);
    let (mut ca, mut cb) = (Client::connect(a.addr), Client::connect(b.addr));
    let mut statuses = Vec::new();
    for i in 0..30 {
        let c = if i % 2 == 0 { &mut ca } else { &mut cb };
        statuses.push(c.request(&get(&origin, "/", "")).status);
    }
    let ok = statuses.iter().filter(|&&s| s == 200).count();
    let limited = statuses.iter().filter(|&&s| s == 429).count();
    assert_eq!((ok, limited), (10, 20), "{statuses:?}");
}

#[test]
fn http_request_speaks_h2_to_an_https_server_that_offers_it() {
    // nghttpd speaks only h2 over TLS: a subrequest that works there went over h2, and
    // later ones reuse the worker's session to it
    let pki = TestPki::new();
    let root = TempDir::new("hookio-h2root");
    std::fs::write(root.path("check"), "allowed-by-h2").unwrap();
    let port = closed_port();
    let mut nghttpd = Command::new("nghttpd")
        .args(["-a", "127.0.0.1", "--echo-upload", "-d"])
        .arg(&root.0)
        .arg(port.to_string())
        .arg(&pki.server_key)
        .arg(&pki.server_pem)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("nghttpd (apt nghttp2-server)");
    assert!(wait_until(Duration::from_secs(10), || {
        TcpStream::connect(("127.0.0.1", port)).is_ok()
    }));
    let origin = Origin::start(fixed(200, &[], b"ok"));
    let dir = TempDir::new("hookio-h2");
    let p = plugin(
        &dir,
        "h2.lua",
        &format!(
            r#"
register_hook("http", "on_request", function(msg)
  local r, err = luring.http_request{{ url = "https://localhost:{port}/check", timeout = 3 }}
  if not r then return action.RESPOND{{ status = 503, body = err }} end
  local p, perr = luring.http_request{{ method = "POST", url = "https://localhost:{port}/echo", body = "up" }}
  msg.headers:set("x-sub", r.status .. ":" .. r.body .. ":" .. (p and p.body or perr))
end)
"#
        ),
    );
    let ca = pki.ca_pem.to_str().unwrap();
    let proxy = Proxy::start(&["--workers", "1", "--upstream-ca", ca, "--plugin", &p]);
    let mut c = Client::connect(proxy.addr);
    for i in 0..3 {
        let r = c.request(&get(&origin, &format!("/{i}"), ""));
        assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    }
    let _ = nghttpd.kill();
    let _ = nghttpd.wait();
    for seen in origin.requests() {
        assert_eq!(seen.header("x-sub"), Some("200:allowed-by-h2:up"));
    }
    assert_eq!(origin.requests().len(), 3);
}
