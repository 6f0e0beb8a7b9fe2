//! Process lifecycle: startup line, signals and drain, bind errors, io
//! backends, --help, config file.

mod support;

use std::io;
use std::net::{TcpListener, TcpStream};
use std::thread;
use std::time::Duration;
use support::*;

fn connect_refused(addr: std::net::SocketAddr) -> bool {
    matches!(
        TcpStream::connect_timeout(&addr, Duration::from_secs(1)),
        Err(e) if e.kind() == io::ErrorKind::ConnectionRefused
    )
}

#[test]
fn startup_line_format() {
    let proxy = Proxy::start(&["--workers", "1"]);
    let line = &proxy.startup_line;
    assert_ne!(proxy.port(), 0);
    assert!(
        line.starts_with(&format!(
            "luring listening on 127.0.0.1:{} (mode regular, 1 worker",
            proxy.port()
        )),
        "{line}"
    );
    assert!(
        line.trim_end().ends_with("io uring)") || line.trim_end().ends_with("io epoll)"),
        "{line}"
    );
}

#[test]
fn default_workers_is_number_of_cores() {
    let cores = thread::available_parallelism().unwrap().get();
    let proxy = Proxy::start(&[]);
    assert!(
        proxy.startup_line.contains(&format!(", {cores} workers,")),
        "{} (cores: {cores})",
        proxy.startup_line
    );
}

#[test]
fn all_workers_share_the_ephemeral_port() {
    // With several workers on port 0, every worker must listen on the one
    // port printed: many connections all get served.
    let origin = Origin::start(fixed(200, &[], b"w"));
    let proxy = Proxy::start(&["--workers", "2"]);
    for _ in 0..20 {
        let mut c = Client::connect(proxy.addr);
        let r = c.request(&format!(
            "GET {}/ HTTP/1.1\r\nHost: 127.0.0.1:{}\r\nConnection: close\r\n\r\n",
            origin.url(),
            origin.port()
        ));
        assert_eq!(r.status, 200);
    }
}

#[test]
fn sigterm_drains_in_flight_request_and_exits_zero() {
    let origin = Origin::start(slow(
        Duration::from_secs(2),
        fixed(200, &[], b"finished during drain"),
    ));
    let mut proxy = Proxy::start(&["--drain-timeout", "10"]);
    let addr = proxy.addr;
    let req = format!(
        "GET {}/slow HTTP/1.1\r\nHost: 127.0.0.1:{}\r\n\r\n",
        origin.url(),
        origin.port()
    );
    let inflight = thread::spawn(move || {
        let mut c = Client::connect(addr);
        c.request(&req)
    });
    assert!(origin.wait_requests(1, Duration::from_secs(10)));
    proxy.signal(libc::SIGTERM);
    // New connections are refused while the in-flight request drains.
    assert!(
        wait_until(Duration::from_secs(5), || connect_refused(addr)),
        "still accepting connections after SIGTERM"
    );
    let r = inflight.join().unwrap();
    assert_eq!(r.status, 200);
    assert_eq!(r.body, b"finished during drain");
    let st = proxy.wait_exit(Duration::from_secs(12));
    assert!(st.is_some(), "did not exit within the drain timeout");
    assert!(st.unwrap().success(), "exit status {st:?}");
}

#[test]
fn sigterm_with_idle_keepalive_clients_exits_promptly() {
    let origin = Origin::start(echo());
    let mut proxy = Proxy::start(&["--drain-timeout", "30"]);
    let mut c = Client::connect(proxy.addr);
    let r = c.request(&format!(
        "GET {}/ HTTP/1.1\r\nHost: 127.0.0.1:{}\r\n\r\n",
        origin.url(),
        origin.port()
    ));
    assert_eq!(r.status, 200);
    proxy.signal(libc::SIGTERM);
    // An idle keep-alive connection has nothing in flight: it must not hold the
    // drain for the whole 30 s.
    let st = proxy.wait_exit(Duration::from_secs(10));
    assert!(st.is_some(), "idle keep-alive connection held the drain");
    assert!(st.unwrap().success(), "{st:?}");
    assert!(c.closed_within(Duration::from_secs(2)));
}

#[test]
fn second_signal_stops_immediately() {
    let origin = Origin::start(never_respond());
    let mut proxy = Proxy::start(&["--drain-timeout", "60"]);
    let mut c = Client::connect(proxy.addr);
    c.send(
        format!(
            "GET {}/ HTTP/1.1\r\nHost: 127.0.0.1:{}\r\n\r\n",
            origin.url(),
            origin.port()
        )
        .as_bytes(),
    );
    assert!(origin.wait_requests(1, Duration::from_secs(10)));
    proxy.signal(libc::SIGTERM);
    assert!(
        wait_until(Duration::from_secs(5), || connect_refused(proxy.addr)),
        "drain did not start"
    );
    assert!(
        proxy.wait_exit(Duration::from_millis(300)).is_none(),
        "did not drain at all"
    );
    proxy.signal(libc::SIGTERM);
    assert!(
        proxy.wait_exit(Duration::from_secs(5)).is_some(),
        "second SIGTERM did not stop the process"
    );
    assert!(c.closed_within(Duration::from_secs(2)));
}

#[test]
fn drain_timeout_bounds_shutdown() {
    let origin = Origin::start(never_respond());
    let mut proxy = Proxy::start(&["--drain-timeout", "1"]);
    let mut c = Client::connect(proxy.addr);
    c.send(
        format!(
            "GET {}/ HTTP/1.1\r\nHost: 127.0.0.1:{}\r\n\r\n",
            origin.url(),
            origin.port()
        )
        .as_bytes(),
    );
    assert!(origin.wait_requests(1, Duration::from_secs(10)));
    proxy.signal(libc::SIGTERM);
    assert!(
        proxy.wait_exit(Duration::from_secs(10)).is_some(),
        "still running 10 s after SIGTERM with --drain-timeout 1"
    );
    assert!(c.closed_within(Duration::from_secs(2)));
}

#[test]
fn sigint_also_drains() {
    let mut proxy = Proxy::start(&[]);
    proxy.signal(libc::SIGINT);
    let st = proxy.wait_exit(Duration::from_secs(10));
    assert!(st.is_some_and(|s| s.success()), "{st:?}");
}

#[test]
fn port_in_use_fails_with_clear_error() {
    let holder = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = holder.local_addr().unwrap().to_string();
    match Proxy::spawn(&["run", "--listen", &addr]) {
        Ok(p) => panic!(
            "luring started on a port held by another socket: {}",
            p.startup_line
        ),
        Err(e) => {
            let st = e.status.expect("luring must exit, not hang");
            assert!(!st.success(), "exit status {st:?}");
            assert!(
                e.stderr.contains(&addr),
                "error does not mention {addr}:\n{}",
                e.stderr
            );
            let lower = e.stderr.to_ascii_lowercase();
            assert!(
                lower.contains("in use") || lower.contains("bind"),
                "error does not say what failed:\n{}",
                e.stderr
            );
        }
    }
    drop(holder);
}

fn forward_smoke(proxy: &Proxy) {
    let origin = Origin::start(echo());
    let out = curl(&["-x", &proxy.url(), &format!("{}/smoke", origin.url())]);
    assert_eq!(out.status, 200, "{}", out.stderr);
    assert_eq!(origin.requests()[0].target, "/smoke");
    let mut c = Client::connect(proxy.addr);
    let body = pattern_vec(1 << 20);
    c.send(
        format!(
            "POST {}/big HTTP/1.1\r\nHost: 127.0.0.1:{}\r\nContent-Length: {}\r\n\r\n",
            origin.url(),
            origin.port(),
            body.len()
        )
        .as_bytes(),
    );
    c.send(&body);
    let r = c.read_response();
    assert!(r.body.ends_with(&body));
}

#[test]
fn io_epoll_backend_works() {
    let proxy = Proxy::start(&["--io", "epoll"]);
    assert!(
        proxy.startup_line.contains("io epoll"),
        "{}",
        proxy.startup_line
    );
    forward_smoke(&proxy);
}

#[test]
fn io_uring_backend_works_or_fails_clearly() {
    match Proxy::try_start(&["--io", "uring"]) {
        Ok(proxy) => {
            eprintln!("io_uring available: {}", proxy.startup_line);
            assert!(
                proxy.startup_line.contains("io uring"),
                "{}",
                proxy.startup_line
            );
            forward_smoke(&proxy);
        }
        Err(e) => {
            eprintln!("io_uring unavailable: {}", e.stderr);
            let st = e.status.expect("must exit, not hang");
            assert!(!st.success());
            assert!(
                e.stderr.to_ascii_lowercase().contains("io_uring"),
                "--io uring failed without naming io_uring:\n{}",
                e.stderr
            );
        }
    }
}

#[test]
fn io_auto_picks_a_backend() {
    let proxy = Proxy::start(&["--io", "auto"]);
    assert!(
        proxy.startup_line.contains("io uring") || proxy.startup_line.contains("io epoll"),
        "{}",
        proxy.startup_line
    );
    forward_smoke(&proxy);
}

#[test]
fn invalid_arguments_are_rejected() {
    for args in [
        vec!["run", "--io", "kqueue"],
        vec!["run", "--mode", "sideways"],
        vec!["run", "--listen", "not-an-address"],
        vec!["run", "--workers", "many"],
        vec!["run", "--no-such-flag"],
    ] {
        let (st, _out, err) = run_luring(&args, Duration::from_secs(10));
        let st = st.unwrap_or_else(|| panic!("{args:?}: still running"));
        assert!(!st.success(), "{args:?} accepted");
        assert!(!err.trim().is_empty(), "{args:?}: no error message");
    }
}

fn cli_flags() -> Vec<String> {
    let doc = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/cli.md"))
        .expect("docs/cli.md");
    // the flags of the `luring run` section: up to the next command's line
    let flags: Vec<String> = doc
        .lines()
        .skip_while(|l| !l.starts_with("luring run"))
        .skip(1)
        .take_while(|l| !l.starts_with("luring "))
        .filter_map(|l| l.trim_start().strip_prefix("--"))
        .map(|rest| {
            let name: String = rest
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '-')
                .collect();
            format!("--{name}")
        })
        .collect();
    assert!(
        flags.len() >= 20,
        "could not read the flags of docs/cli.md: {flags:?}"
    );
    flags
}

#[test]
fn run_help_mentions_every_documented_flag() {
    let (st, out, err) = run_luring(&["run", "--help"], Duration::from_secs(10));
    assert!(st.is_some_and(|s| s.success()), "{st:?} {err}");
    let missing: Vec<String> = cli_flags()
        .into_iter()
        .filter(|f| !out.contains(f.as_str()))
        .collect();
    assert!(
        missing.is_empty(),
        "`luring run --help` lacks {missing:?}:\n{out}"
    );
}

#[test]
fn top_level_help_lists_commands() {
    let (st, out, err) = run_luring(&["--help"], Duration::from_secs(10));
    assert!(st.is_some_and(|s| s.success()), "{st:?} {err}");
    for cmd in ["run", "check"] {
        assert!(
            out.lines().any(|l| l.trim_start().starts_with(cmd)),
            "`luring --help` does not list `{cmd}`:\n{out}"
        );
    }
}

#[test]
fn config_file_sets_listen_and_mode() {
    let origin = Origin::start(echo());
    let dir = TempDir::new("config");
    let cfg = dir.path("luring.toml");
    std::fs::write(
        &cfg,
        format!(
            "listen = \"127.0.0.1:0\"\nmode = \"reverse:{}\"\nworkers = 1\nmax_headers = 8\n",
            origin.url()
        ),
    )
    .unwrap();
    let proxy = Proxy::spawn(&["run", "--config", cfg.to_str().unwrap()])
        .unwrap_or_else(|e| panic!("{e:?}"));
    assert!(
        proxy.startup_line.contains("mode reverse"),
        "{}",
        proxy.startup_line
    );
    assert!(
        proxy.startup_line.contains("1 worker"),
        "{}",
        proxy.startup_line
    );
    let out = curl(&[&format!("{}/from-config", proxy.url())]);
    assert_eq!(out.status, 200, "{}", out.stderr);
    assert_eq!(origin.requests()[0].target, "/from-config");
    // max_headers (flag --max-headers) from the file applies too.
    let many: Vec<String> = (0..12).map(|i| format!("X-H{i}: v")).collect();
    let mut args = vec![];
    for h in &many {
        args.push("-H");
        args.push(h.as_str());
    }
    let url = format!("{}/many", proxy.url());
    args.push(&url);
    assert_eq!(curl(&args).status, 431);
}

#[test]
fn flags_override_config_file() {
    let a = Origin::start(fixed(200, &[], b"origin a (config)"));
    let b = Origin::start(fixed(200, &[], b"origin b (flag)"));
    // The config's listen address is taken, so only the flag's can work.
    let holder = TcpListener::bind("127.0.0.1:0").unwrap();
    let dir = TempDir::new("config");
    let cfg = dir.path("luring.toml");
    std::fs::write(
        &cfg,
        format!(
            "listen = \"{}\"\nmode = \"reverse:{}\"\n",
            holder.local_addr().unwrap(),
            a.url()
        ),
    )
    .unwrap();
    let mode_b = format!("reverse:{}", b.url());
    let proxy = Proxy::spawn(&[
        "run",
        "--config",
        cfg.to_str().unwrap(),
        "--listen",
        "127.0.0.1:0",
        "--mode",
        &mode_b,
    ])
    .unwrap_or_else(|e| panic!("{e:?}"));
    assert_ne!(proxy.addr, holder.local_addr().unwrap());
    let out = curl(&[&format!("{}/", proxy.url())]);
    assert_eq!(out.body_str(), "origin b (flag)");
    assert!(a.requests().is_empty());
}

#[test]
fn broken_config_file_is_reported() {
    let dir = TempDir::new("config");
    let cfg = dir.path("broken.toml");
    std::fs::write(&cfg, "listen = \"127.0.0.1:0\nmode = [unclosed\n").unwrap();
    match Proxy::spawn(&["run", "--config", cfg.to_str().unwrap()]) {
        Ok(p) => panic!("started with a broken config: {}", p.startup_line),
        Err(e) => {
            assert!(e.status.is_some_and(|s| !s.success()), "{e:?}");
            assert!(
                e.stderr.contains("broken.toml"),
                "error does not name the file:\n{}",
                e.stderr
            );
        }
    }
}

#[test]
fn log_level_error_silences_info() {
    let origin = Origin::start(echo());
    let mut proxy = Proxy::start(&["--log-level", "error"]);
    let out = curl(&["-x", &proxy.url(), &origin.url()]);
    assert_eq!(out.status, 200, "{}", out.stderr);
    assert!(proxy.terminate(Duration::from_secs(10)).is_some());
    let noisy: Vec<String> = proxy
        .stderr()
        .lines()
        .filter(|l| !l.contains("luring listening on"))
        .filter(|l| {
            ["INFO", "DEBUG", "TRACE", "WARN"]
                .iter()
                .any(|lvl| l.contains(lvl))
        })
        .map(str::to_string)
        .collect();
    assert!(noisy.is_empty(), "--log-level error still logs: {noisy:?}");
}

#[test]
fn sigterm_stops_the_proxy_after_its_stderr_and_stdout_are_closed() {
    // a supervisor that went away leaves luring with closed pipes: a log line must not
    // kill the signal thread (eprintln! panics on a closed stderr)
    let port = closed_port();
    let listen = format!("127.0.0.1:{port}");
    let conf = Conf::new();
    let cd = conf.confdir();
    let mut child = std::process::Command::new(bin())
        .args([
            "run",
            "--listen",
            &listen,
            "--workers",
            "1",
            "--confdir",
            &cd,
        ])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    assert!(
        wait_until(Duration::from_secs(10), || TcpStream::connect(&listen)
            .is_ok()),
        "luring did not listen"
    );
    drop(child.stdout.take());
    drop(child.stderr.take());
    // a request makes the worker log too
    let _ = TcpStream::connect(&listen).map(|mut s| {
        use std::io::Write;
        let _ = s.write_all(b"garbage\r\n\r\n");
    });
    // SAFETY: kill(2) on our own child's pid
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let exited = wait_until(Duration::from_secs(10), || {
        matches!(child.try_wait(), Ok(Some(_)))
    });
    if !exited {
        let _ = child.kill();
    }
    assert!(
        exited,
        "SIGTERM did not stop luring once its pipes were closed"
    );
}
