//! `--mode upstream:http://HOST:PORT`: every upstream connection through another HTTP
//! proxy (plain requests in absolute-form, TLS through CONNECT), with `--upstream-auth`.
//! Chained to a second luring, and to tinyproxy when it is installed.

mod support;

use std::time::Duration;
use support::*;

fn chained(to: &Proxy, extra: &[&str]) -> Proxy {
    let mode = format!("upstream:http://127.0.0.1:{}", to.port());
    let mut args = vec!["--mode", mode.as_str()];
    args.extend_from_slice(extra);
    Proxy::start(&args)
}

#[test]
fn plain_http_goes_through_the_next_proxy_in_absolute_form() {
    let origin = Origin::start(echo());
    let next = Proxy::start(&["--access-log"]);
    let first = chained(&next, &[]);
    let url = format!("{}/via?x=1", origin.url());
    for _ in 0..2 {
        let out = curl(&["-x", &first.url(), &url]);
        assert_eq!(out.status, 200, "{}\n{}", out.stderr, first.stderr());
    }
    // the next proxy got absolute-form requests (it is a forward proxy)
    let line = format!("\"GET {url} HTTP/1.1\" 200");
    assert!(
        next.wait_stderr(&line, Duration::from_secs(5)),
        "{}",
        next.stderr()
    );
    assert_eq!(origin.requests().len(), 2);
    assert_eq!(origin.requests()[0].target, "/via?x=1");
}

#[test]
fn tls_goes_through_a_connect_of_the_next_proxy() {
    let pki = TestPki::new();
    let origin = TlsOrigin::start(&pki);
    // the next proxy passes TLS through untouched; the first one intercepts
    let next = Proxy::start(&["--ignore-hosts", ".*", "--access-log"]);
    let conf = Conf::new();
    let cd = conf.confdir();
    let ca = pki.ca_pem.to_str().unwrap().to_string();
    let first = chained(&next, &["--confdir", &cd, "--upstream-ca", &ca]);
    let url = format!("https://localhost:{}/secure", origin.addr.port());
    let out = run_cmd(
        "curl",
        &[
            "-sS",
            "--max-time",
            "20",
            "-x",
            &first.url(),
            "--cacert",
            conf.ca(),
            &url,
        ],
        b"",
        Duration::from_secs(30),
    );
    assert!(out.ok(), "{out:?}\n{}", first.stderr());
    // a tunnel's access-log line is written when it ends: stopping the first proxy
    // closes the connection it kept in its pool
    drop(first);
    let line = format!("CONNECT localhost:{}", origin.addr.port());
    assert!(
        next.wait_stderr(&line, Duration::from_secs(10)),
        "{}",
        next.stderr()
    );
}

#[test]
fn upstream_auth_is_sent_and_its_absence_is_reported() {
    let origin = Origin::start(echo());
    let next = Proxy::start(&["--proxy-auth", "u:p"]);
    let url = format!("{}/x", origin.url());
    let with = chained(&next, &["--upstream-auth", "u:p"]);
    assert_eq!(
        curl(&["-x", &with.url(), &url]).status,
        200,
        "{}",
        with.stderr()
    );
    let without = chained(&next, &[]);
    let out = curl(&["-x", &without.url(), &url]);
    assert_eq!(out.status, 407, "the next proxy's answer passes on");
    // a CONNECT the next proxy refuses: 502 naming the 407
    let tunnel = run_cmd(
        "curl",
        &["-sS", "--max-time", "10", "-p", "-x", &without.url(), &url],
        b"",
        Duration::from_secs(20),
    );
    assert!(!tunnel.ok());
    assert!(
        without.wait_stderr("--upstream-auth", Duration::from_secs(5)),
        "{}",
        without.stderr()
    );
}

#[test]
fn chained_to_tinyproxy() {
    if std::process::Command::new("tinyproxy")
        .arg("-h")
        .output()
        .is_err()
    {
        eprintln!("SKIPPED: tinyproxy is not installed (apt install tinyproxy)");
        return;
    }
    let origin = Origin::start(echo());
    let dir = TempDir::new("tinyproxy");
    let port = closed_port();
    let conf = dir.path("tinyproxy.conf");
    std::fs::write(
        &conf,
        format!(
            "Port {port}\nListen 127.0.0.1\nTimeout 30\nAllow 127.0.0.1\nMaxClients 20\n\
             LogLevel Error\nPidFile \"{}\"\n",
            dir.path("tp.pid").display()
        ),
    )
    .unwrap();
    let mut tp = std::process::Command::new("tinyproxy")
        .args(["-d", "-c", conf.to_str().unwrap()])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("tinyproxy");
    let up = wait_until(Duration::from_secs(10), || {
        std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
    });
    assert!(up, "tinyproxy did not listen");
    let mode = format!("upstream:http://127.0.0.1:{port}");
    let first = Proxy::start(&["--mode", &mode]);
    let out = curl(&["-x", &first.url(), &format!("{}/tp", origin.url())]);
    let _ = tp.kill();
    let _ = tp.wait();
    assert_eq!(out.status, 200, "{}\n{}", out.stderr, first.stderr());
    assert_eq!(origin.requests()[0].target, "/tp");
    assert!(origin.requests()[0]
        .header("via")
        .is_some_and(|v| v.contains("tinyproxy")));
}
