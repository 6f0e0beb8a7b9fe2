//! gRPC-web through the real binary: sonora (PyPI) as gRPC-web server and binary client,
//! a raw grpc-web-text client (sonora's client has no text mode), python grpcio as the
//! native server behind `--grpc-web`, curl for gRPC-web over h2. The grpc-web.* hooks
//! (metadata, payloads both ways, RESPOND_GRPC, msg:cancel, on_end once) in reverse and
//! forward mode, and the gateway with and without hooks.

mod support;

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use support::*;

const WEB_SERVER: &str = include_str!("grpc_web/web_server.py");
const GRPC_SERVER: &str = include_str!("grpc_web/grpc_server.py");
const CLIENT: &str = include_str!("grpc_web/web_client.py");

const PLUGIN: &str = r#"
register_hook("grpc-web", "on_start", function(m)
  log.info("START " .. tostring(m.service) .. " " .. tostring(m.method) .. " " .. m.protocol)
  if m.method == "Deny" then return action.RESPOND_GRPC{ status = 7, message = "no way" } end
  m.headers:set("x-hook", "yes")
end)
register_hook("grpc-web", "on_data", function(m)
  if m.payload == "cancel-me" then m:cancel(9, "cancelled by hook") return end
  m.payload = m.payload .. "!"
end)
register_hook("grpc-web", "on_end", function(m)
  log.info("END " .. m.status .. " " .. tostring(m.message))
end)
"#;

/// What the client prints through the plugin: requests and answers both get a "!",
/// Deny is refused by RESPOND_GRPC, "cancel-me" by msg:cancel.
const HOOKED: &str = "Say echo:hi! md=yes! OK \n\
Deny  PERMISSION_DENIED no way\n\
Stream part0:s!!,part1:s!!,part2:s!! OK \n\
Say  FAILED_PRECONDITION cancelled by hook\n";

struct Server {
    child: Child,
    port: u16,
}

impl Server {
    fn start(script: &str) -> Server {
        let mut child = Command::new("python3")
            .args(["-c", script, "60"])
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("python3 with sonora and grpcio (scripts/test.sh installs them)");
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let port = line.trim().parse().expect("server port");
        Server { child, port }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs the client: `mode` "bin" (sonora) or "text" (raw), through `proxy` if given.
fn client(url: &str, mode: &str, proxy: Option<&str>) -> String {
    let mut args = vec!["-c", CLIENT, url, mode];
    args.extend(proxy);
    let out = run_cmd("python3", &args, b"", std::time::Duration::from_secs(60));
    out.stdout
}

fn proxy(conf: &Conf, plugin: Option<&str>, extra: &[&str]) -> Proxy {
    let cd = conf.confdir();
    let mut args = vec!["--confdir", cd.as_str()];
    if let Some(p) = plugin {
        args.extend(["--plugin", p]);
    }
    args.extend_from_slice(extra);
    Proxy::start(&args)
}

fn plugin(conf: &Conf) -> String {
    let p = conf.dir.path("grpc-web.lua");
    std::fs::write(&p, PLUGIN).unwrap();
    p.to_string_lossy().into_owned()
}

/// on_start and on_end once per call: `calls` so far, `of_protocol` of them made as
/// `protocol`; every fourth call is Deny and every fourth a cancel.
fn assert_ends(p: &Proxy, protocol: &str, of_protocol: usize, calls: usize) {
    let t = std::time::Duration::from_secs(5);
    wait_until(t, || p.stderr().matches("END ").count() >= calls);
    let err = p.stderr();
    let start = format!(" {protocol} plugin=");
    assert_eq!(err.matches(&start).count(), of_protocol, "{err}");
    assert_eq!(err.matches("START t.Echo").count(), calls, "{err}");
    assert_eq!(
        err.matches("END ").count(),
        calls,
        "on_end once per call: {err}"
    );
    if calls.is_multiple_of(4) {
        assert_eq!(err.matches("END 0 ").count(), calls / 2, "{err}");
        assert_eq!(err.matches("END 7 no way").count(), calls / 4, "{err}");
        assert_eq!(
            err.matches("END 9 cancelled by hook").count(),
            calls / 4,
            "{err}"
        );
    }
}

#[test]
fn hooks_on_http1_in_reverse_mode_binary_and_text() {
    let server = Server::start(WEB_SERVER);
    let conf = Conf::new();
    let plugin = plugin(&conf);
    let mode = format!("reverse:http://127.0.0.1:{}", server.port);
    let p = proxy(&conf, Some(&plugin), &["--mode", &mode]);
    let url = format!("http://127.0.0.1:{}", p.port());
    assert_eq!(client(&url, "bin", None), HOOKED, "{}", p.stderr());
    assert_ends(&p, "grpc-web", 4, 4);
    assert_eq!(client(&url, "text", None), HOOKED, "{}", p.stderr());
    assert_ends(&p, "grpc-web-text", 4, 8);
}

#[test]
fn hooks_on_http1_in_forward_mode() {
    let server = Server::start(WEB_SERVER);
    let conf = Conf::new();
    let plugin = plugin(&conf);
    let p = proxy(&conf, Some(&plugin), &[]);
    let url = format!("http://127.0.0.1:{}", server.port);
    assert_eq!(
        client(&url, "text", Some(&p.url())),
        HOOKED,
        "{}",
        p.stderr()
    );
    assert_ends(&p, "grpc-web-text", 4, 4);
}

#[test]
fn without_grpc_web_hooks_calls_pass_unchanged() {
    let server = Server::start(WEB_SERVER);
    let conf = Conf::new();
    let http = conf.dir.path("http.lua");
    std::fs::write(
        &http,
        "register_hook('http', 'on_request', function(m) end)",
    )
    .unwrap();
    let mode = format!("reverse:http://127.0.0.1:{}", server.port);
    let p = proxy(&conf, Some(&http.to_string_lossy()), &["--mode", &mode]);
    let direct = client(&format!("http://127.0.0.1:{}", server.port), "bin", None);
    assert!(direct.starts_with("Say echo:hi OK"), "{direct}");
    let url = format!("http://127.0.0.1:{}", p.port());
    assert_eq!(client(&url, "bin", None), direct, "{}", p.stderr());
    assert_eq!(client(&url, "text", None), direct);
}

/// What a grpcio server answers through the gateway, without hooks.
const TRANSLATED: &str = "Say echo:hi OK \n\
Deny  NOT_FOUND upstream says no\n\
Stream part0:s,part1:s,part2:s OK \n\
Say echo:cancel-me OK \n";

#[test]
fn gateway_translates_to_a_grpcio_server() {
    let server = Server::start(GRPC_SERVER);
    let conf = Conf::new();
    let mode = format!("reverse:http://127.0.0.1:{}", server.port);
    let p = proxy(&conf, None, &["--mode", &mode, "--grpc-web"]);
    let url = format!("http://127.0.0.1:{}", p.port());
    assert_eq!(client(&url, "bin", None), TRANSLATED, "{}", p.stderr());
    assert_eq!(client(&url, "text", None), TRANSLATED, "{}", p.stderr());
}

#[test]
fn gateway_with_hooks() {
    let server = Server::start(GRPC_SERVER);
    let conf = Conf::new();
    let plugin = plugin(&conf);
    let mode = format!("reverse:http://127.0.0.1:{}", server.port);
    let p = proxy(&conf, Some(&plugin), &["--mode", &mode, "--grpc-web"]);
    let url = format!("http://127.0.0.1:{}", p.port());
    assert_eq!(client(&url, "bin", None), HOOKED, "{}", p.stderr());
    assert_ends(&p, "grpc-web", 4, 4);
    assert_eq!(client(&url, "text", None), HOOKED, "{}", p.stderr());
    assert_ends(&p, "grpc-web-text", 4, 8);
}

#[test]
fn without_the_flag_the_gateway_is_off() {
    let server = Server::start(GRPC_SERVER);
    let conf = Conf::new();
    let mode = format!("reverse:http://127.0.0.1:{}", server.port);
    let p = proxy(&conf, None, &["--mode", &mode]);
    let url = format!("http://127.0.0.1:{}", p.port());
    // proxied as it came: a gRPC server does not answer gRPC-web over HTTP/1.1
    let got = client(&url, "text", None);
    assert!(!got.contains("echo:hi"), "{got}");
}

/// A gRPC-web call over h2 (curl, prior knowledge): the response body as bytes.
fn curl_h2(url: &str, content_type: &str, body: &[u8]) -> Vec<u8> {
    let ct = format!("content-type: {content_type}");
    let out = Command::new("curl")
        .args([
            "-s",
            "--http2-prior-knowledge",
            "-H",
            &ct,
            "--data-binary",
            "@-",
        ])
        .args(["--max-time", "20", url])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .and_then(|mut c| {
            use std::io::Write;
            c.stdin.take().unwrap().write_all(body)?;
            c.wait_with_output()
        })
        .expect("curl");
    out.stdout
}

#[test]
fn gateway_and_hooks_over_h2() {
    let server = Server::start(GRPC_SERVER);
    let conf = Conf::new();
    let plugin = plugin(&conf);
    let mode = format!("reverse:http://127.0.0.1:{}", server.port);
    let p = proxy(&conf, Some(&plugin), &["--mode", &mode, "--grpc-web"]);
    let url = format!("http://127.0.0.1:{}/t.Echo/Say", p.port());
    let frame = b"\x00\x00\x00\x00\x02hi";
    let got = curl_h2(&url, "application/grpc-web+proto", frame);
    let want = b"\x00\x00\x00\x00\x10echo:hi! md=yes!\x80";
    assert!(
        got.starts_with(want),
        "{:?}\n{}",
        String::from_utf8_lossy(&got),
        p.stderr()
    );
    assert!(find(&got, b"grpc-status: 0\r\n").is_some(), "{got:?}");
    let text = curl_h2(&url, "application/grpc-web-text", b"AAAAAAJoaQ==");
    // one base64 run for the messages, then the trailer frame's own segment
    assert!(
        text.starts_with(b"AAAAABBlY2hvOmhpISBtZD15ZXMh"),
        "{:?}",
        String::from_utf8_lossy(&text)
    );
    assert_ends(&p, "grpc-web-text", 1, 2);
    assert_eq!(p.stderr().matches("END 0 ").count(), 2);
}

#[test]
fn gateway_answers_cors_preflight() {
    let server = Server::start(GRPC_SERVER);
    let conf = Conf::new();
    let mode = format!("reverse:http://127.0.0.1:{}", server.port);
    let p = proxy(&conf, None, &["--mode", &mode, "--grpc-web"]);
    let out = run_cmd(
        "curl",
        &[
            "-s",
            "-i",
            "-X",
            "OPTIONS",
            "--max-time",
            "10",
            "-H",
            "origin: http://app.example",
            "-H",
            "access-control-request-method: POST",
            "-H",
            "access-control-request-headers: x-grpc-web,content-type",
            &format!("http://127.0.0.1:{}/t.Echo/Say", p.port()),
        ],
        b"",
        std::time::Duration::from_secs(20),
    );
    let head = out.stdout.to_ascii_lowercase();
    assert!(head.starts_with("http/1.1 204"), "{head}");
    assert!(
        head.contains("access-control-allow-origin: http://app.example"),
        "{head}"
    );
    assert!(head.contains("access-control-allow-headers: x-grpc-web,content-type, x-grpc-web"));
    assert!(head.contains("access-control-expose-headers: grpc-status, grpc-message"));
}
