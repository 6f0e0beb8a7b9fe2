//! TLS interception through the real binary, with real clients (curl, openssl
//! s_client) and a local HTTPS origin whose PKI is made by the openssl CLI.
//! Every proxy gets its own `--confdir`, so nothing touches ~/.luring.

mod support;

use std::io::Write;
use std::net::Shutdown;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use support::*;

const CMD_WAIT: Duration = Duration::from_secs(30);

fn start(conf: &Conf, extra: &[&str]) -> Proxy {
    let cd = conf.confdir();
    let mut args = vec!["--confdir", cd.as_str()];
    args.extend_from_slice(extra);
    Proxy::start(&args)
}

/// One curl transfer result: status and connections it opened.
#[derive(Debug, PartialEq)]
struct Transfer {
    status: u16,
    num_connects: u32,
}

const MARK: &str = "\n@@xfer ";

/// curl with `-w` giving per-transfer status and connection count; bodies in order.
fn curl_xfers(args: &[&str]) -> (CmdOutput, Vec<Transfer>, Vec<String>) {
    let mut full = vec!["-sS", "--max-time", "20", "-w"];
    let fmt = format!("{MARK}%{{http_code}} %{{num_connects}}\n");
    full.push(&fmt);
    full.extend_from_slice(args);
    let out = run_cmd("curl", &full, b"", CMD_WAIT);
    let mut xfers = Vec::new();
    let mut bodies = Vec::new();
    let mut rest = out.stdout.as_str();
    while let Some(i) = rest.find(MARK) {
        bodies.push(rest[..i].to_string());
        let after = &rest[i + MARK.len()..];
        let line_end = after.find('\n').unwrap_or(after.len());
        let mut it = after[..line_end].split_whitespace();
        let status = it.next().and_then(|s| s.parse().ok()).unwrap_or(0);
        let num_connects = it.next().and_then(|s| s.parse().ok()).unwrap_or(99);
        xfers.push(Transfer {
            status,
            num_connects,
        });
        rest = &after[(line_end + 1).min(after.len())..];
    }
    (out, xfers, bodies)
}

/// `openssl s_client -proxy ... -showcerts` with empty stdin (handshake, then EOF).
fn s_client(proxy: &Proxy, connect: &str, extra: &[&str]) -> CmdOutput {
    let p = proxy.addr.to_string();
    let mut args = vec!["s_client", "-proxy", &p, "-connect", connect, "-showcerts"];
    args.extend_from_slice(extra);
    run_cmd("openssl", &args, b"", CMD_WAIT)
}

/// `openssl x509 -noout ARGS` on a PEM text.
fn x509_text(pem: &str, args: &[&str]) -> String {
    let mut full = vec!["x509", "-noout"];
    full.extend_from_slice(args);
    let o = run_cmd("openssl", &full, pem.as_bytes(), CMD_WAIT);
    assert!(o.ok(), "openssl x509 {args:?}: {o:?}");
    o.stdout
}

fn leaf_of(o: &CmdOutput) -> String {
    first_pem_cert(&o.stdout).unwrap_or_else(|| panic!("no certificate in s_client output: {o:?}"))
}

/// A plain HTTP request through the proxy still works (the proxy is alive and serving).
fn assert_still_serving(proxy: &Proxy) {
    let origin = Origin::start(fixed(200, &[], b"still-serving"));
    let r = curl(&["-x", &proxy.url(), &format!("{}/x", origin.url())]);
    assert_eq!(
        (r.status, r.body_str()),
        (200, "still-serving".to_string()),
        "proxy no longer serves plain HTTP: {}\n{}",
        r.stderr,
        proxy.stderr()
    );
}

// ---------------------------------------------------------------------------
// (a) curl through an intercepted tunnel
// ---------------------------------------------------------------------------

#[test]
fn curl_through_interception_gets_origin_body_and_reuses_tunnel() {
    let pki = TestPki::new();
    let origin = TlsOrigin::start(&pki);
    let conf = Conf::new();
    let proxy = start(&conf, &["--upstream-ca", pki.ca_pem.to_str().unwrap()]);
    let base = format!("https://localhost:{}", origin.port());
    let (out, xfers, bodies) = curl_xfers(&[
        "-x",
        &proxy.url(),
        "--cacert",
        conf.ca(),
        &format!("{base}/first"),
        &format!("{base}/second"),
    ]);
    assert!(out.ok(), "curl failed: {out:?}\n{}", proxy.stderr());
    assert_eq!(
        xfers,
        vec![
            Transfer {
                status: 200,
                num_connects: 1
            },
            Transfer {
                status: 200,
                num_connects: 0
            }
        ],
        "second transfer must reuse the tunnel: {out:?}"
    );
    assert_eq!(
        bodies,
        vec!["tls-origin says: /first", "tls-origin says: /second"]
    );
    let reqs = origin.requests();
    assert_eq!(reqs.len(), 2, "{reqs:?}");
    assert!(reqs[0].line.starts_with("GET /first HTTP/1.1"), "{reqs:?}");
    // TLS to the origin ran over the connection the CONNECT opened: one TCP connection
    assert!(reqs.iter().all(|r| r.conn == 0), "{reqs:?}");
}

// ---------------------------------------------------------------------------
// (b) openssl s_client: the minted leaf
// ---------------------------------------------------------------------------

#[test]
fn s_client_sees_leaf_for_sni_signed_by_luring_ca_with_alpn() {
    let pki = TestPki::new();
    let origin = TlsOrigin::start(&pki);
    let conf = Conf::new();
    let proxy = start(&conf, &["--upstream-ca", pki.ca_pem.to_str().unwrap()]);
    let target = format!("localhost:{}", origin.port());
    let o = s_client(
        &proxy,
        &target,
        &[
            "-servername",
            "localhost",
            "-alpn",
            "http/1.1",
            "-CAfile",
            conf.ca(),
        ],
    );
    assert!(
        o.stdout.contains("Verify return code: 0 (ok)"),
        "{o:?}\n{}",
        proxy.stderr()
    );
    assert!(o.stdout.contains("ALPN protocol: http/1.1"), "{o:?}");
    let leaf = leaf_of(&o);
    let info = x509_text(&leaf, &["-subject", "-issuer", "-ext", "subjectAltName"]);
    assert!(info.contains("subject=CN = localhost"), "{info}");
    assert!(info.contains("issuer=CN = luring CA, O = luring"), "{info}");
    assert!(info.contains("DNS:localhost"), "{info}");
}

#[test]
fn ip_target_without_sni_gets_ip_san() {
    let pki = TestPki::new();
    let origin = TlsOrigin::start(&pki);
    let conf = Conf::new();
    let proxy = start(&conf, &["--upstream-ca", pki.ca_pem.to_str().unwrap()]);
    let target = format!("127.0.0.1:{}", origin.port());
    let o = s_client(&proxy, &target, &["-noservername", "-CAfile", conf.ca()]);
    assert!(
        o.stdout.contains("Verify return code: 0 (ok)"),
        "{o:?}\n{}",
        proxy.stderr()
    );
    let leaf = leaf_of(&o);
    let info = x509_text(&leaf, &["-issuer", "-ext", "subjectAltName"]);
    assert!(info.contains("IP Address:127.0.0.1"), "{info}");
    assert!(info.contains("issuer=CN = luring CA, O = luring"), "{info}");
    // and a request to the IP goes through (upstream verified against its IP SAN)
    let r = curl(&[
        "-x",
        &proxy.url(),
        "--cacert",
        conf.ca(),
        &format!("https://127.0.0.1:{}/by-ip", origin.port()),
    ]);
    assert_eq!(
        (r.status, r.body_str()),
        (200, "tls-origin says: /by-ip".to_string()),
        "{}\n{}",
        r.stderr,
        proxy.stderr()
    );
}

#[test]
fn upstream_cert_copies_the_origin_names_into_the_leaf() {
    let pki = TestPki::new();
    let origin = TlsOrigin::start(&pki);
    let conf = Conf::new();
    let target = format!("127.0.0.1:{}", origin.port());
    // without --upstream-cert an IP target without SNI gets only its IP
    let plain = start(&conf, &["--upstream-ca", pki.ca_pem.to_str().unwrap()]);
    let o = s_client(&plain, &target, &["-noservername", "-CAfile", conf.ca()]);
    let info = x509_text(&leaf_of(&o), &["-ext", "subjectAltName"]);
    assert!(!info.contains("DNS:localhost"), "{info}");
    drop(plain);
    let proxy = start(
        &conf,
        &[
            "--upstream-ca",
            pki.ca_pem.to_str().unwrap(),
            "--upstream-cert",
        ],
    );
    let o = s_client(&proxy, &target, &["-noservername", "-CAfile", conf.ca()]);
    assert!(o.stdout.contains("Verify return code: 0 (ok)"), "{o:?}");
    let info = x509_text(&leaf_of(&o), &["-ext", "subjectAltName"]);
    assert!(
        info.contains("DNS:localhost") && info.contains("IP Address:127.0.0.1"),
        "{info}\n{}",
        proxy.stderr()
    );
}

// ---------------------------------------------------------------------------
// (c) passthrough
// ---------------------------------------------------------------------------

fn assert_origin_cert_passed_through(flag: &str, regex: &str) {
    let pki = TestPki::new();
    let origin = TlsOrigin::start(&pki);
    let conf = Conf::new();
    let proxy = start(&conf, &[flag, regex]);
    let target = format!("localhost:{}", origin.port());
    let o = s_client(
        &proxy,
        &target,
        &[
            "-servername",
            "localhost",
            "-CAfile",
            pki.ca_pem.to_str().unwrap(),
        ],
    );
    assert!(
        o.stdout.contains("Verify return code: 0 (ok)"),
        "{flag} {regex}: {o:?}\n{}",
        proxy.stderr()
    );
    let info = x509_text(&leaf_of(&o), &["-subject", "-issuer"]);
    assert!(
        info.contains(&format!("issuer=CN = {TEST_CA_CN}")),
        "{flag} {regex}: {info}"
    );
    assert!(
        info.contains(&format!("subject=CN = {TEST_ORIGIN_CN}")),
        "{flag} {regex}: {info}"
    );
    // and a real request goes end to end with the origin's own certificate
    let r = curl(&[
        "-x",
        &proxy.url(),
        "--cacert",
        pki.ca_pem.to_str().unwrap(),
        &format!("https://localhost:{}/pass", origin.port()),
    ]);
    assert_eq!(
        (r.status, r.body_str()),
        (200, "tls-origin says: /pass".to_string()),
        "{}",
        r.stderr
    );
    assert!(origin.handshakes() >= 2, "origin saw the client handshakes");
}

#[test]
fn ignore_hosts_relays_tls_untouched() {
    assert_origin_cert_passed_through("--ignore-hosts", "localhost");
}

/// `openssl s_client -alpn h2` through the proxy to a [`TlsOrigin`] offering `alpn`.
fn h2_only_client(alpn: &[&[u8]], flags: &[&str]) -> (CmdOutput, Proxy) {
    let pki = TestPki::new();
    let conf = Conf::new();
    let ca = pki.ca_pem.to_str().unwrap();
    let origin = TlsOrigin::start_with_alpn(&pki, alpn);
    let mut all = vec!["--upstream-ca", ca];
    all.extend_from_slice(flags);
    let proxy = start(&conf, &all);
    let o = s_client(
        &proxy,
        &format!("localhost:{}", origin.port()),
        &["-servername", "localhost", "-alpn", "h2", "-CAfile", ca],
    );
    (o, proxy)
}

#[test]
fn client_offering_only_h2_is_passed_through_with_no_http2() {
    // a gRPC-style client (ALPN h2 only) is intercepted when the upstream chooses h2
    // (tests/http2.rs); with --no-http2 its handshake reaches the origin instead
    let (o, proxy) = h2_only_client(&[b"h2", b"http/1.1"], &["--no-http2"]);
    assert!(
        o.stdout.contains("Verify return code: 0 (ok)"),
        "{o:?}\n{}",
        proxy.stderr()
    );
    assert!(o.stdout.contains("ALPN protocol: h2"), "{o:?}");
    let info = x509_text(&leaf_of(&o), &["-issuer"]);
    assert!(
        info.contains(&format!("issuer=CN = {TEST_CA_CN}")),
        "{info}"
    );
    assert!(proxy.wait_stderr("without http/1.1", Duration::from_secs(5)));
}

#[test]
fn client_offering_only_h2_meets_an_upstream_without_h2_as_it_is() {
    // the upstream did not choose h2 when luring asked: the client's own handshake is
    // relayed, and the origin's refusal (no common ALPN) reaches it unchanged
    let (o, proxy) = h2_only_client(&[b"http/1.1"], &[]);
    assert!(o.stderr.contains("no application protocol"), "{o:?}");
    assert!(proxy.wait_stderr("did not choose h2", Duration::from_secs(5)));
}

#[test]
fn allow_hosts_not_matching_relays_tls_untouched() {
    assert_origin_cert_passed_through("--allow-hosts", r"^nomatch\.example:");
}

// ---------------------------------------------------------------------------
// (d) upstream verification
// ---------------------------------------------------------------------------

#[test]
fn untrusted_upstream_gives_502_naming_the_reason() {
    let pki = TestPki::new();
    let origin = TlsOrigin::start(&pki);
    let conf = Conf::new();
    let proxy = start(&conf, &[]);
    let r = curl(&[
        "-x",
        &proxy.url(),
        "--cacert",
        conf.ca(),
        &format!("https://localhost:{}/x", origin.port()),
    ]);
    assert_eq!(r.status, 502, "{} {}", r.stderr, r.body_str());
    assert!(
        r.body_str().contains("not trusted") && r.body_str().contains("UnknownIssuer"),
        "502 body does not name the reason: {:?}",
        r.body_str()
    );
    assert!(origin.requests().is_empty(), "{:?}", origin.requests());
}

#[test]
fn insecure_accepts_untrusted_upstream() {
    let pki = TestPki::new();
    let origin = TlsOrigin::start(&pki);
    let conf = Conf::new();
    let proxy = start(&conf, &["--insecure"]);
    let r = curl(&[
        "-x",
        &proxy.url(),
        "--cacert",
        conf.ca(),
        &format!("https://localhost:{}/k", origin.port()),
    ]);
    assert_eq!(
        (r.status, r.body_str()),
        (200, "tls-origin says: /k".to_string()),
        "{}\n{}",
        r.stderr,
        proxy.stderr()
    );
}

// ---------------------------------------------------------------------------
// (e) hostile or broken clients inside the tunnel
// ---------------------------------------------------------------------------

fn connect(proxy: &Proxy, target: &str) -> Client {
    let mut c = Client::connect(proxy.addr);
    c.send(format!("CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n\r\n").as_bytes());
    let r = c.read_response_to("CONNECT");
    assert_eq!(r.status, 200, "{}", r.head_str());
    c
}

#[test]
fn garbage_after_connect_is_relayed_or_closed_and_proxy_survives() {
    let echo = QuietEcho::start();
    let conf = Conf::new();
    let proxy = start(&conf, &[]);
    let mut c = connect(&proxy, &echo.addr.to_string());
    let garbage: Vec<u8> = b"\x00\xffNOT-TLS-NOT-HTTP\x01\x02\x03".to_vec();
    c.send(&garbage);
    c.stream().shutdown(Shutdown::Write).unwrap();
    let back = c
        .read_until_close(Duration::from_secs(10))
        .expect("proxy neither relayed-and-closed nor closed");
    // Relayed raw (the echo sends the bytes back), or closed cleanly without bytes.
    assert!(
        back == garbage || back.is_empty(),
        "got {back:?} back for {garbage:?}"
    );
    if !back.is_empty() {
        assert_eq!(echo.received(), vec![garbage.clone()]);
    }
    assert_still_serving(&proxy);
}

#[test]
fn truncated_client_hello_then_close_neither_crashes_nor_hangs() {
    let pki = TestPki::new();
    let origin = TlsOrigin::start(&pki);
    let conf = Conf::new();
    let proxy = start(&conf, &["--upstream-ca", pki.ca_pem.to_str().unwrap()]);
    let hello = client_hello_bytes("localhost");
    assert!(hello.len() > 60);
    for cut in [3, 5, 40, hello.len() - 1] {
        let mut c = connect(&proxy, &format!("localhost:{}", origin.port()));
        c.send(&hello[..cut]);
        c.stream().shutdown(Shutdown::Write).unwrap();
        let t0 = Instant::now();
        assert!(
            c.closed_within(Duration::from_secs(5)),
            "proxy kept the connection open after a {cut}-byte ClientHello and EOF"
        );
        assert!(t0.elapsed() < Duration::from_secs(5));
    }
    assert_still_serving(&proxy);
    assert_eq!(origin.handshakes(), 0);
}

/// Sends `bytes` in a tunnel and expects the proxy to close it after about one
/// head timeout (1 s): not at once, not never.
fn assert_closed_by_head_timeout(bytes: &[u8], what: &str) {
    let pki = TestPki::new();
    let origin = TlsOrigin::start(&pki);
    let conf = Conf::new();
    let proxy = start(
        &conf,
        &[
            "--head-timeout",
            "1",
            "--upstream-ca",
            pki.ca_pem.to_str().unwrap(),
        ],
    );
    let mut c = connect(&proxy, &format!("localhost:{}", origin.port()));
    let t0 = Instant::now();
    c.send(bytes);
    let got = c.read_until_close(Duration::from_secs(6));
    let took = t0.elapsed();
    assert!(
        got.is_ok(),
        "{what}: not closed within 6 s with --head-timeout 1: {got:?}"
    );
    assert!(
        took >= Duration::from_millis(800),
        "{what}: closed after {took:?}, before the 1 s head timeout"
    );
    assert_still_serving(&proxy);
}

#[test]
fn client_hello_then_silence_times_out_within_head_timeout() {
    assert_closed_by_head_timeout(
        &client_hello_bytes("localhost"),
        "whole ClientHello, then nothing",
    );
}

#[test]
fn partial_client_hello_then_silence_times_out_within_head_timeout() {
    let hello = client_hello_bytes("localhost");
    assert_closed_by_head_timeout(
        &hello[..hello.len() / 2],
        "half a ClientHello, then nothing",
    );
}

// ---------------------------------------------------------------------------
// (f) CA files
// ---------------------------------------------------------------------------

fn mode_of(p: &Path) -> u32 {
    std::fs::metadata(p).unwrap().permissions().mode() & 0o777
}

#[test]
fn key_file_is_0600_after_first_run() {
    let dir = TempDir::new("firstrun");
    let cd = dir.path("conf");
    let proxy = Proxy::start(&["--confdir", cd.to_str().unwrap()]);
    let key = cd.join("luring-ca.key");
    assert!(key.exists(), "{}", proxy.stderr());
    assert_eq!(mode_of(&key), 0o600, "mode of {}", key.display());
    // the certificate is public
    assert_eq!(mode_of(&cd.join("luring-ca.pem")), 0o644);
}

/// docs/tls.md: "The directory is created with mode 0700" (as `luring ca` does).
#[test]
fn confdir_created_by_run_is_0700() {
    let dir = TempDir::new("firstrun-dir");
    let cd = dir.path("conf");
    let proxy = Proxy::start(&["--confdir", cd.to_str().unwrap()]);
    assert!(cd.join("luring-ca.key").exists(), "{}", proxy.stderr());
    assert_eq!(
        format!("{:o}", mode_of(&cd)),
        "700",
        "mode of the confdir {} created by `luring run`",
        cd.display()
    );
}

#[test]
fn confdir_created_by_ca_command_is_0700() {
    let dir = TempDir::new("ca-dir");
    let cd = dir.path("conf");
    let (st, out, err) = run_luring(&["ca", "show", "--confdir", cd.to_str().unwrap()], CMD_WAIT);
    assert!(st.is_some_and(|s| s.success()), "{st:?} {out} {err}");
    assert_eq!(
        format!("{:o}", mode_of(&cd)),
        "700",
        "mode of {}",
        cd.display()
    );
    assert_eq!(mode_of(&cd.join("luring-ca.key")), 0o600);
}

#[test]
fn world_readable_key_is_refused_naming_the_file() {
    let conf = Conf::new();
    let key = conf.file("luring-ca.key");
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).unwrap();
    let cd = conf.confdir();
    let e = match Proxy::try_start(&["--confdir", &cd]) {
        Ok(p) => panic!("started with a 0644 key: {}", p.stderr()),
        Err(e) => e,
    };
    assert!(
        e.status.is_some_and(|s| !s.success()),
        "exit status {:?}: {}",
        e.status,
        e.stderr
    );
    assert!(e.stderr.contains("luring-ca.key"), "{}", e.stderr);
}

#[test]
fn corrupt_cert_file_is_refused_naming_the_file() {
    let conf = Conf::new();
    let pem = conf.file("luring-ca.pem");
    let mut f = std::fs::File::create(&pem).unwrap();
    f.write_all(b"-----BEGIN CERTIFICATE-----\nnot base64 at all!!\n-----END CERTIFICATE-----\n")
        .unwrap();
    drop(f);
    let cd = conf.confdir();
    let e = match Proxy::try_start(&["--confdir", &cd]) {
        Ok(p) => panic!("started with a corrupt certificate: {}", p.stderr()),
        Err(e) => e,
    };
    assert!(
        e.status.is_some_and(|s| !s.success()),
        "exit status {:?}: {}",
        e.status,
        e.stderr
    );
    assert!(e.stderr.contains("luring-ca.pem"), "{}", e.stderr);
}

#[test]
fn ca_export_der_parses_with_openssl() {
    let conf = Conf::new();
    let der = conf.dir.path("export.der");
    let (st, out, err) = run_luring(
        &[
            "ca",
            "export",
            "--confdir",
            &conf.confdir(),
            "--format",
            "der",
            "--out",
            der.to_str().unwrap(),
        ],
        CMD_WAIT,
    );
    assert!(st.is_some_and(|s| s.success()), "{st:?} {out} {err}");
    let o = run_cmd(
        "openssl",
        &[
            "x509",
            "-inform",
            "der",
            "-in",
            der.to_str().unwrap(),
            "-noout",
            "-subject",
            "-fingerprint",
            "-sha256",
        ],
        b"",
        CMD_WAIT,
    );
    assert!(o.ok(), "{o:?}");
    assert!(o.stdout.contains("CN = luring CA"), "{o:?}");
    // same certificate as the PEM export
    let pem_fp = x509_text(
        &std::fs::read_to_string(conf.ca()).unwrap(),
        &["-fingerprint", "-sha256"],
    );
    let der_fp = o
        .stdout
        .lines()
        .find(|l| l.contains("Fingerprint"))
        .unwrap();
    assert!(pem_fp.contains(der_fp), "{pem_fp} vs {der_fp}");
}

#[test]
fn ca_show_fingerprint_matches_openssl() {
    let conf = Conf::new();
    let (st, out, err) = run_luring(&["ca", "show", "--confdir", &conf.confdir()], CMD_WAIT);
    assert!(st.is_some_and(|s| s.success()), "{st:?} {out} {err}");
    let fp = x509_text(
        &std::fs::read_to_string(conf.file("luring-ca.pem")).unwrap(),
        &["-fingerprint", "-sha256"],
    );
    let hex = fp.trim().rsplit('=').next().unwrap().to_string();
    assert_eq!(hex.len(), 95, "{fp}");
    let norm = |s: &str| s.replace(':', "").to_ascii_uppercase();
    let line = out
        .lines()
        .find(|l| l.contains("SHA-256"))
        .unwrap_or_else(|| panic!("no SHA-256 line in {out}"));
    assert!(
        norm(line).contains(&norm(&hex)),
        "ca show: {line:?}, openssl: {hex}"
    );
}

// ---------------------------------------------------------------------------
// (g) reverse mode to an https upstream
// ---------------------------------------------------------------------------

#[test]
fn reverse_https_serves_plain_and_tls_clients_on_one_port() {
    let pki = TestPki::new();
    let origin = TlsOrigin::start(&pki);
    let conf = Conf::new();
    let mode = format!("reverse:https://localhost:{}", origin.port());
    let proxy = start(
        &conf,
        &[
            "--mode",
            &mode,
            "--upstream-ca",
            pki.ca_pem.to_str().unwrap(),
        ],
    );
    let plain = curl(&[&format!("{}/plain", proxy.url())]);
    assert_eq!(
        (plain.status, plain.body_str()),
        (200, "tls-origin says: /plain".to_string()),
        "{}\n{}",
        plain.stderr,
        proxy.stderr()
    );
    let resolve = format!("localhost:{}:127.0.0.1", proxy.port());
    let tls = curl(&[
        "--cacert",
        conf.ca(),
        "--resolve",
        &resolve,
        &format!("https://localhost:{}/secure", proxy.port()),
    ]);
    assert_eq!(
        (tls.status, tls.body_str()),
        (200, "tls-origin says: /secure".to_string()),
        "{}\n{}",
        tls.stderr,
        proxy.stderr()
    );
}

#[test]
fn large_bodies_both_ways_through_tls_termination() {
    let big = pattern_vec(700_000);
    let download = Origin::start(fixed(200, &[], &big));
    let echo_origin = Origin::start(echo());
    let conf = Conf::new();
    let file = conf.dir.path("upload.bin");
    std::fs::write(&file, &big).unwrap();
    for origin in [&download, &echo_origin] {
        let mode = format!("reverse:http://127.0.0.1:{}", origin.port());
        let proxy = start(&conf, &["--mode", &mode]);
        let resolve = format!("localhost:{}:127.0.0.1", proxy.port());
        let url = format!("https://localhost:{}/big", proxy.port());
        let upload = format!("@{}", file.display());
        let mut args = vec!["--cacert", conf.ca(), "--resolve", &resolve, &url];
        if std::ptr::eq(origin, &echo_origin) {
            args.extend_from_slice(&["--data-binary", &upload]);
        }
        let r = curl(&args);
        assert_eq!(r.status, 200, "{}\n{}", r.stderr, proxy.stderr());
        assert!(
            r.body.ends_with(&big),
            "body through TLS differs ({} bytes)",
            r.body.len()
        );
    }
}

/// `openssl s_server -www` with a self-signed certificate made by `openssl req -x509`,
/// which carries CA:TRUE as OpenSSL's defaults have it.
struct SelfSignedOrigin {
    child: std::process::Child,
    port: u16,
    cert: PathBuf,
    _dir: TempDir,
}

impl SelfSignedOrigin {
    fn start() -> SelfSignedOrigin {
        let dir = TempDir::new("selfsigned");
        let (cert, key) = (dir.path("c.pem"), dir.path("k.pem"));
        let made = run_cmd(
            "openssl",
            &[
                "req",
                "-x509",
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:P-256",
                "-nodes",
                "-days",
                "2",
                "-subj",
                "/CN=localhost",
                "-addext",
                "subjectAltName=DNS:localhost",
                "-keyout",
                key.to_str().unwrap(),
                "-out",
                cert.to_str().unwrap(),
            ],
            b"",
            CMD_WAIT,
        );
        assert!(made.ok(), "openssl req: {}", made.stderr);
        let port = closed_port();
        let child = std::process::Command::new("openssl")
            .args(["s_server", "-quiet", "-www", "-accept"])
            .arg(format!("127.0.0.1:{port}"))
            .args([
                "-cert",
                cert.to_str().unwrap(),
                "-key",
                key.to_str().unwrap(),
            ])
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("openssl s_server");
        assert!(
            wait_until(Duration::from_secs(10), || {
                std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
            }),
            "s_server did not listen"
        );
        SelfSignedOrigin {
            child,
            port,
            cert,
            _dir: dir,
        }
    }
}

impl Drop for SelfSignedOrigin {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn self_signed_upstream_trusted_through_upstream_ca() {
    let origin = SelfSignedOrigin::start();
    let conf = Conf::new();
    let ca = origin.cert.to_str().unwrap();
    for (host, want) in [("localhost", 200), ("127.0.0.1", 502)] {
        let mode = format!("reverse:https://{host}:{}", origin.port);
        let proxy = start(&conf, &["--mode", &mode, "--upstream-ca", ca]);
        let r = curl(&[&format!("{}/", proxy.url())]);
        assert_eq!(
            r.status,
            want,
            "{host}: the certificate names localhost only\n{}\n{}",
            r.body_str(),
            proxy.stderr()
        );
    }
}

/// Reads a response to EOF with python's ssl, which reports a close without
/// close_notify as an error when ragged EOFs are not suppressed.
const STRICT_EOF_PY: &str = r#"
import socket, ssl, sys
port, ca, host = int(sys.argv[1]), sys.argv[2], sys.argv[3]
ctx = ssl.create_default_context(cafile=ca)
raw = socket.create_connection(("127.0.0.1", port), timeout=10)
s = ctx.wrap_socket(raw, server_hostname=host, suppress_ragged_eofs=False)
s.sendall(b"GET /close HTTP/1.1\r\nHost: " + host.encode() + b"\r\nConnection: close\r\n\r\n")
data = b""
while True:
    chunk = s.recv(65536)
    if not chunk:
        break
    data += chunk
print(len(data.split(b"\r\n\r\n", 1)[1]))
"#;

#[test]
fn tls_close_sends_close_notify_after_a_close_delimited_body() {
    let origin = Origin::start(close_delimited(&pattern_vec(50_000)));
    let conf = Conf::new();
    let mode = format!("reverse:http://127.0.0.1:{}", origin.port());
    let proxy = start(&conf, &["--mode", &mode]);
    let port = proxy.port().to_string();
    let out = run_cmd(
        "python3",
        &["-c", STRICT_EOF_PY, &port, conf.ca(), "localhost"],
        b"",
        CMD_WAIT,
    );
    assert!(
        out.ok() && out.stdout.trim() == "50000",
        "the body must end with close_notify, not a bare TCP close: {} {}",
        out.stdout,
        out.stderr
    );
}

// ---------------------------------------------------------------------------
// (h) tls.on_handshake
// ---------------------------------------------------------------------------

const HOOK: &str = r#"
register_hook("tls", "on_handshake", function(msg, ctx)
  log.info(string.format(
    "TLSHOOK side=%s sni=%s alpn=%s version_name=%s cipher_name=%s client_fingerprint=%s peer_cert_subject=[%s]",
    tostring(msg.side), tostring(msg.sni), tostring(msg.alpn), tostring(msg.version_name),
    tostring(msg.cipher_name), tostring(msg.client_fingerprint), tostring(msg.peer_cert_subject)))
end)
"#;

fn field<'a>(line: &'a str, key: &str) -> &'a str {
    let pat = format!(" {key}=");
    let i = line
        .find(&pat)
        .unwrap_or_else(|| panic!("no {key} in {line}"));
    let rest = &line[i + pat.len()..];
    if key == "peer_cert_subject" {
        let rest = rest.strip_prefix('[').expect("peer_cert_subject=[...]");
        &rest[..rest.find(']').expect("peer_cert_subject=[...]")]
    } else {
        rest.split(' ').next().unwrap()
    }
}

#[test]
fn on_handshake_fires_for_both_sides_with_every_key() {
    let pki = TestPki::new();
    let origin = TlsOrigin::start(&pki);
    let conf = Conf::new();
    let plugin = conf.dir.path("hook.lua");
    std::fs::write(&plugin, HOOK).unwrap();
    let proxy = start(
        &conf,
        &[
            "--upstream-ca",
            pki.ca_pem.to_str().unwrap(),
            "--plugin",
            plugin.to_str().unwrap(),
        ],
    );
    let r = curl(&[
        "-x",
        &proxy.url(),
        "--cacert",
        conf.ca(),
        &format!("https://localhost:{}/hook", origin.port()),
    ]);
    assert_eq!(r.status, 200, "{}\n{}", r.stderr, proxy.stderr());
    assert!(
        wait_until(Duration::from_secs(5), || proxy
            .stderr()
            .matches("TLSHOOK ")
            .count()
            >= 2),
        "two hook lines expected: {}",
        proxy.stderr()
    );
    let log = proxy.stderr();
    let lines: Vec<&str> = log.lines().filter(|l| l.contains("TLSHOOK ")).collect();
    assert_eq!(lines.len(), 2, "once per side: {lines:#?}");
    let server = *lines
        .iter()
        .find(|l| l.contains("side=server"))
        .unwrap_or_else(|| panic!("no side=server: {lines:#?}"));
    let client = *lines
        .iter()
        .find(|l| l.contains("side=client"))
        .unwrap_or_else(|| panic!("no side=client: {lines:#?}"));
    let ja4 = regex::Regex::new(r"^t1[23]d\d{4}[0-9a-z]{2}_[0-9a-f]{12}_[0-9a-f]{12}$").unwrap();
    let fp = field(server, "client_fingerprint");
    assert!(ja4.is_match(fp), "client_fingerprint {fp:?} is not JA4");
    for (line, side) in [(server, "server"), (client, "client")] {
        assert_eq!(field(line, "sni"), "localhost", "{side}: {line}");
        assert_eq!(field(line, "alpn"), "http/1.1", "{side}: {line}");
        assert!(
            field(line, "version_name").starts_with("TLSv1."),
            "{side}: {line}"
        );
        assert!(
            field(line, "cipher_name").starts_with("TLS_"),
            "{side}: {line}"
        );
    }
    assert!(
        field(client, "peer_cert_subject").contains(&format!("CN={TEST_ORIGIN_CN}")),
        "{client}"
    );
    assert_eq!(field(client, "client_fingerprint"), "nil", "{client}");
}

// ---------------------------------------------------------------------------
// bulk data and concurrency through the intercepting TLS streams
// ---------------------------------------------------------------------------

#[test]
fn large_bodies_both_ways_through_interception() {
    let pki = TestPki::new();
    let origin = TlsOrigin::start(&pki);
    let conf = Conf::new();
    let proxy = start(&conf, &["--upstream-ca", pki.ca_pem.to_str().unwrap()]);
    let up_len: u64 = 3 * 1024 * 1024 + 17;
    let upload = conf.dir.path("upload.bin");
    let mut f = std::fs::File::create(&upload).unwrap();
    write_pattern(&mut f, up_len).unwrap();
    drop(f);
    let base = format!("https://localhost:{}", origin.port());
    let r = curl(&[
        "-x",
        &proxy.url(),
        "--cacert",
        conf.ca(),
        "--data-binary",
        &format!("@{}", upload.display()),
        &format!("{base}/upload"),
    ]);
    assert_eq!(
        (r.status, r.body_str()),
        (200, "tls-origin says: /upload".to_string()),
        "{}\n{}",
        r.stderr,
        proxy.stderr()
    );
    let reqs = origin.requests();
    assert_eq!(reqs.len(), 1, "{reqs:?}");
    assert_eq!(
        (reqs[0].body_len, reqs[0].body_is_pattern),
        (up_len, true),
        "upload as the origin got it"
    );
    let down_len: u64 = 5 * 1024 * 1024 + 3;
    let r = curl(&[
        "-x",
        &proxy.url(),
        "--cacert",
        conf.ca(),
        &format!("{base}/big/{down_len}"),
    ]);
    assert_eq!(r.status, 200, "{}\n{}", r.stderr, proxy.stderr());
    let mut check = PatternCheck::default();
    check.feed(&r.body);
    assert_eq!(
        (check.count, check.ok()),
        (down_len, true),
        "download as the client got it ({:?})",
        check.first_mismatch
    );
}

#[test]
fn parallel_intercepted_clients() {
    let pki = TestPki::new();
    let origin = TlsOrigin::start(&pki);
    let conf = Conf::new();
    let proxy = start(&conf, &["--upstream-ca", pki.ca_pem.to_str().unwrap()]);
    let url = proxy.url();
    let threads: Vec<_> = (0..8)
        .map(|i| {
            let (url, ca) = (url.clone(), conf.ca().to_string());
            let target = format!("https://localhost:{}/p{i}", origin.port());
            std::thread::spawn(move || curl(&["-x", &url, "--cacert", &ca, &target]))
        })
        .collect();
    for (i, t) in threads.into_iter().enumerate() {
        let r = t.join().unwrap();
        assert_eq!(
            (r.status, r.body_str()),
            (200, format!("tls-origin says: /p{i}")),
            "client {i}: {}\n{}",
            r.stderr,
            proxy.stderr()
        );
    }
    assert_eq!(origin.requests().len(), 8);
}

// ---------------------------------------------------------------------------
// CA file states documented in docs/tls.md
// ---------------------------------------------------------------------------

fn refused(conf: &Conf, file: &str, why: &str) {
    let cd = conf.confdir();
    let e = match Proxy::try_start(&["--confdir", &cd]) {
        Ok(p) => panic!("started with {why}: {}", p.stderr()),
        Err(e) => e,
    };
    assert!(
        e.status.is_some_and(|s| !s.success()),
        "{why}: exit status {:?}: {}",
        e.status,
        e.stderr
    );
    assert!(
        e.stderr.contains(file),
        "{why}: error must name {file}: {}",
        e.stderr
    );
}

#[test]
fn key_not_matching_cert_is_refused() {
    let conf = Conf::new();
    let key = conf.file("luring-ca.key");
    let other = conf.dir.path("other.key");
    let o = run_cmd(
        "openssl",
        &[
            "genpkey",
            "-algorithm",
            "EC",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-out",
            other.to_str().unwrap(),
        ],
        b"",
        CMD_WAIT,
    );
    assert!(o.ok(), "{o:?}");
    std::fs::copy(&other, &key).unwrap();
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();
    refused(
        &conf,
        "luring-ca.key",
        "a key that does not match the certificate",
    );
}

#[test]
fn missing_cert_with_key_present_is_refused_not_replaced() {
    let conf = Conf::new();
    let key_before = std::fs::read(conf.file("luring-ca.key")).unwrap();
    std::fs::remove_file(conf.file("luring-ca.pem")).unwrap();
    refused(&conf, "luring-ca.pem", "the key but no certificate");
    assert_eq!(
        std::fs::read(conf.file("luring-ca.key")).unwrap(),
        key_before,
        "the CA key was replaced"
    );
}

#[test]
fn deleted_der_is_recreated() {
    let conf = Conf::new();
    std::fs::remove_file(conf.file("luring-ca.der")).unwrap();
    let proxy = start(&conf, &[]);
    assert!(
        conf.file("luring-ca.der").exists(),
        "luring-ca.der not recreated: {}",
        proxy.stderr()
    );
    let o = run_cmd(
        "openssl",
        &[
            "x509",
            "-inform",
            "der",
            "-in",
            conf.file("luring-ca.der").to_str().unwrap(),
            "-noout",
            "-fingerprint",
            "-sha256",
        ],
        b"",
        CMD_WAIT,
    );
    let pem_fp = x509_text(
        &std::fs::read_to_string(conf.ca()).unwrap(),
        &["-fingerprint", "-sha256"],
    );
    assert!(o.ok() && o.stdout == pem_fp, "{o:?} vs {pem_fp}");
}

// ---------------------------------------------------------------------------
// passthrough by SNI (docs/tls.md: a connection is known by its CONNECT host and
// its SNI; ignored if any name matches an ignore pattern, intercepted under allow
// rules if any name matches)
// ---------------------------------------------------------------------------

/// CONNECT to 127.0.0.1:ORIGIN with SNI `localhost`; returns the leaf's issuer line.
fn issuer_seen_for_sni_only_rule(flag: &str, regex: &str) -> String {
    let pki = TestPki::new();
    let origin = TlsOrigin::start(&pki);
    let conf = Conf::new();
    let proxy = start(
        &conf,
        &[flag, regex, "--upstream-ca", pki.ca_pem.to_str().unwrap()],
    );
    let o = s_client(
        &proxy,
        &format!("127.0.0.1:{}", origin.port()),
        &["-servername", "localhost"],
    );
    let leaf = leaf_of(&o);
    x509_text(&leaf, &["-issuer"]).trim().to_string()
}

#[test]
fn ignore_hosts_matching_only_the_sni_relays() {
    let issuer = issuer_seen_for_sni_only_rule("--ignore-hosts", "^localhost:");
    assert_eq!(
        issuer,
        format!("issuer=CN = {TEST_CA_CN}"),
        "CONNECT 127.0.0.1 with SNI localhost under --ignore-hosts ^localhost: \
         must be relayed (the client must see the origin's certificate)"
    );
}

#[test]
fn allow_hosts_matching_only_the_sni_intercepts() {
    let issuer = issuer_seen_for_sni_only_rule("--allow-hosts", "^localhost:");
    assert_eq!(
        issuer, "issuer=CN = luring CA, O = luring",
        "CONNECT 127.0.0.1 with SNI localhost under --allow-hosts ^localhost: \
         must be intercepted (the client must see a luring leaf)"
    );
}

#[test]
fn on_handshake_fires_for_both_sides_in_reverse_mode() {
    let pki = TestPki::new();
    let origin = TlsOrigin::start(&pki);
    let conf = Conf::new();
    let plugin = conf.dir.path("hook.lua");
    std::fs::write(&plugin, HOOK).unwrap();
    let mode = format!("reverse:https://localhost:{}", origin.port());
    let proxy = start(
        &conf,
        &[
            "--mode",
            &mode,
            "--upstream-ca",
            pki.ca_pem.to_str().unwrap(),
            "--plugin",
            plugin.to_str().unwrap(),
        ],
    );
    let resolve = format!("localhost:{}:127.0.0.1", proxy.port());
    let r = curl(&[
        "--cacert",
        conf.ca(),
        "--resolve",
        &resolve,
        &format!("https://localhost:{}/rev", proxy.port()),
    ]);
    assert_eq!(r.status, 200, "{}\n{}", r.stderr, proxy.stderr());
    let both = || {
        let log = proxy.stderr();
        log.contains("TLSHOOK side=server") && log.contains("TLSHOOK side=client")
    };
    assert!(
        wait_until(Duration::from_secs(5), both),
        "both sides expected: {}",
        proxy.stderr()
    );
    let log = proxy.stderr();
    let server = log
        .lines()
        .find(|l| l.contains("TLSHOOK side=server"))
        .unwrap();
    let client = log
        .lines()
        .find(|l| l.contains("TLSHOOK side=client"))
        .unwrap();
    assert_eq!(field(server, "sni"), "localhost", "{server}");
    assert!(
        field(client, "peer_cert_subject").contains(&format!("CN={TEST_ORIGIN_CN}")),
        "{client}"
    );
}

#[test]
fn two_requests_in_one_tunnel_one_handshake_per_side() {
    let pki = TestPki::new();
    let origin = TlsOrigin::start(&pki);
    let conf = Conf::new();
    let plugin = conf.dir.path("hook.lua");
    std::fs::write(&plugin, HOOK).unwrap();
    let proxy = start(
        &conf,
        &[
            "--upstream-ca",
            pki.ca_pem.to_str().unwrap(),
            "--plugin",
            plugin.to_str().unwrap(),
        ],
    );
    let base = format!("https://localhost:{}", origin.port());
    let (out, xfers, _) = curl_xfers(&[
        "-x",
        &proxy.url(),
        "--cacert",
        conf.ca(),
        &format!("{base}/one"),
        &format!("{base}/two"),
    ]);
    assert!(out.ok(), "{out:?}");
    assert_eq!(
        xfers.iter().map(|x| x.status).collect::<Vec<_>>(),
        [200, 200]
    );
    assert_eq!(origin.requests().len(), 2);
    // the upstream keeps its connection alive: the proxy reuses it
    assert_eq!(origin.handshakes(), 1, "upstream TLS handshakes");
    let count = |side: &str| {
        proxy
            .stderr()
            .matches(&format!("TLSHOOK side={side}"))
            .count()
    };
    assert!(wait_until(Duration::from_secs(5), || count("client") >= 1));
    std::thread::sleep(Duration::from_millis(300)); // lines that must not appear
    assert_eq!(
        (count("server"), count("client")),
        (1, 1),
        "{}",
        proxy.stderr()
    );
}

// ---------------------------------------------------------------------------
// gRPC clients (python grpcio): through a CONNECT tunnel and through reverse mode
// ---------------------------------------------------------------------------

/// A grpcio server (plaintext or TLS); prints its port, then reads "TARGET PROXY" on
/// stdin (PROXY "-" for none), calls TARGET through PROXY (grpc.http_proxy, which
/// uses CONNECT) and prints the echoed reply.
const GRPC_PY: &str = r#"
import sys
from concurrent import futures
import grpc
mode, pem, key, ca = sys.argv[1:5]
def echo(req, ctx):
    md = dict(ctx.invocation_metadata())
    return b"echo:" + req + (b" via " + md["x-luring"].encode() if "x-luring" in md else b"")
server = grpc.server(futures.ThreadPoolExecutor(2))
server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(
    "t.Echo", {"Say": grpc.unary_unary_rpc_method_handler(echo)}),))
# "tls-client": the client speaks TLS to the proxy, the server is plaintext
if mode == "tls":
    port = server.add_secure_port("127.0.0.1:0", grpc.ssl_server_credentials(
        [(open(key, "rb").read(), open(pem, "rb").read())]))
else:
    port = server.add_insecure_port("127.0.0.1:0")
server.start()
print(port, flush=True)
target, proxy = sys.stdin.readline().split()
opts = [("grpc.http_proxy", proxy), ("grpc.enable_http_proxy", 1)] if proxy != "-" else []
if mode in ("tls", "tls-client"):
    ch = grpc.secure_channel(target, grpc.ssl_channel_credentials(open(ca, "rb").read()), options=opts)
else:
    ch = grpc.insecure_channel(target, options=opts)
print(ch.unary_unary("/t.Echo/Say")(b"hi", timeout=10).decode(), flush=True)
server.stop(0)
"#;

/// Runs [`GRPC_PY`] in `mode` ("plain" or "tls"; the client trusts `client_ca`);
/// `route` gets the gRPC server's port and returns the proxy to go through and the
/// "TARGET PROXY" line. Returns the reply.
fn grpc_echo(
    mode: &str,
    pki: &TestPki,
    client_ca: &str,
    route: impl FnOnce(u16) -> (Proxy, String),
) -> (String, Proxy) {
    use std::io::BufRead;
    let mut py = std::process::Command::new("python3")
        .args(["-c", GRPC_PY, mode])
        .args([&pki.server_pem, &pki.server_key])
        .arg(client_ca)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::inherit())
        .spawn()
        .expect("python3 with grpcio (scripts/test.sh installs it)");
    let mut out = std::io::BufReader::new(py.stdout.take().unwrap());
    let mut line = String::new();
    out.read_line(&mut line).unwrap();
    let port: u16 = line
        .trim()
        .parse()
        .expect("grpc server port (is grpcio installed?)");
    let (proxy, call) = route(port);
    writeln!(py.stdin.take().unwrap(), "{call}").unwrap();
    line.clear();
    out.read_line(&mut line).unwrap();
    let _ = py.kill();
    let _ = py.wait();
    (line.trim().to_string(), proxy)
}

/// A plugin that marks every request it sees, so the gRPC server's echo shows that
/// the call was intercepted (not relayed) and that the mutation went upstream.
const MARK_PLUGIN: &str = r#"
register_hook("http", "on_request", function(m)
  if m.method == "CONNECT" then return end
  m.headers:set("x-luring", m.http_version)
  log.info("grpc call " .. m.method .. " " .. m.path)
end)
"#;

fn mark_plugin(dir: &TempDir) -> String {
    let p = dir.path("mark.lua");
    std::fs::write(&p, MARK_PLUGIN).unwrap();
    p.to_string_lossy().into_owned()
}

#[test]
fn grpcio_calls_through_a_connect_tunnel_are_intercepted_as_http2() {
    let pki = TestPki::new();
    let conf = Conf::new();
    let plugin = mark_plugin(&conf.dir);
    let up_ca = pki.ca_pem.to_str().unwrap().to_string();
    for mode in ["plain", "tls"] {
        let (reply, proxy) = grpc_echo(mode, &pki, conf.ca(), |port| {
            let proxy = start(&conf, &["--upstream-ca", &up_ca, "--plugin", &plugin]);
            let call = format!("localhost:{port} {}", proxy.url());
            (proxy, call)
        });
        assert_eq!(
            reply,
            "echo:hi via HTTP/2.0",
            "{mode}: proxy: {}",
            proxy.stderr()
        );
        assert!(
            proxy.wait_stderr("grpc call POST /t.Echo/Say", Duration::from_secs(5)),
            "{mode}"
        );
    }
}

#[test]
fn grpcio_with_no_http2_is_relayed_through_a_connect_tunnel() {
    let pki = TestPki::new();
    let conf = Conf::new();
    let ca = pki.ca_pem.to_str().unwrap().to_string();
    for mode in ["plain", "tls"] {
        // the client trusts the real server's CA: its handshake reaches that server
        let (reply, proxy) = grpc_echo(mode, &pki, &ca, |port| {
            let proxy = start(&conf, &["--no-http2"]);
            let call = format!("localhost:{port} {}", proxy.url());
            (proxy, call)
        });
        assert_eq!(reply, "echo:hi", "{mode}: proxy: {}", proxy.stderr());
    }
}

#[test]
fn grpcio_through_reverse_mode_is_served_as_http2() {
    let pki = TestPki::new();
    let conf = Conf::new();
    let plugin = mark_plugin(&conf.dir);
    let ca = pki.ca_pem.to_str().unwrap().to_string();
    for (mode, scheme) in [("plain", "http"), ("tls", "https")] {
        let (reply, proxy) = grpc_echo(mode, &pki, conf.ca(), |port| {
            let upstream = format!("reverse:{scheme}://localhost:{port}");
            let proxy = start(
                &conf,
                &[
                    "--mode",
                    &upstream,
                    "--upstream-ca",
                    &ca,
                    "--plugin",
                    &plugin,
                ],
            );
            let call = format!("localhost:{} -", proxy.port());
            (proxy, call)
        });
        assert_eq!(
            reply,
            "echo:hi via HTTP/2.0",
            "{mode}: proxy: {}",
            proxy.stderr()
        );
    }
}

#[test]
fn grpcio_tls_client_in_front_of_a_plaintext_grpc_server() {
    // TLS termination for an h2-only client, h2c with prior knowledge to the upstream
    let pki = TestPki::new();
    let conf = Conf::new();
    let plugin = mark_plugin(&conf.dir);
    let (reply, proxy) = grpc_echo("tls-client", &pki, conf.ca(), |port| {
        let upstream = format!("reverse:http://localhost:{port}");
        let proxy = start(&conf, &["--mode", &upstream, "--plugin", &plugin]);
        let call = format!("localhost:{} -", proxy.port());
        (proxy, call)
    });
    assert_eq!(reply, "echo:hi via HTTP/2.0", "proxy: {}", proxy.stderr());
}
