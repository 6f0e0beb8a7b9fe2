//! Slow and overloading clients against the running binary, on both io backends:
//! slowhttptest in slow-header, slow-body and slow-read modes with hundreds of
//! connections; a flood over `--max-connections`; and a process out of file
//! descriptors (its RLIMIT_NOFILE lowered with prlimit(2) while it runs).

mod h2raw;
mod procfs;
mod support;

use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};
use support::*;

const BACKENDS: [&str; 2] = ["uring", "epoll"];
/// The timeouts the attacks are run under, in seconds.
const TIMEOUT: &str = "2";
/// How long past a timeout a slow connection may still be open before the test fails:
/// the attack itself takes a second or two to open all its connections, and the
/// machine is shared.
const SLACK: Duration = Duration::from_secs(12);

/// An origin that answers `/big` with 1 MiB and echoes everything else.
fn origin() -> Origin {
    let big = stream_bytes(1 << 20);
    let echo = echo();
    Origin::start(handler(move |ex| {
        if ex.req.target.starts_with("/big") {
            big(ex)
        } else {
            echo(ex)
        }
    }))
}

fn reverse_proxy(origin: &Origin, io: &str, head_timeout: &str, extra: &[&str]) -> Proxy {
    let mode = format!("reverse:{}", origin.url());
    let mut args = vec![
        "--mode",
        &mode,
        "--io",
        io,
        "--workers",
        "1",
        "--head-timeout",
        head_timeout,
        "--body-timeout",
        TIMEOUT,
        "--send-timeout",
        TIMEOUT,
        "--pool-idle-timeout",
        "1",
    ];
    args.extend_from_slice(extra);
    Proxy::start(&args)
}

/// One request on a fresh connection: Ok(status) or why it failed.
fn one_request(addr: SocketAddr, path: &str, wait: Duration) -> Result<u16, String> {
    let mut c = Client::try_connect(addr).map_err(|e| format!("connect: {e}"))?;
    c.set_read_timeout(wait);
    let req = format!("GET {path} HTTP/1.1\r\nHost: front\r\nConnection: close\r\n\r\n");
    c.try_send(req.as_bytes())
        .map_err(|e| format!("send: {e}"))?;
    c.try_read_response_to("GET")
        .map(|r| r.status)
        .map_err(|e| format!("read: {e}"))
}

/// How long a probe request may take. The slow-read attack makes the kernel copy a
/// couple of MB into each attacker's socket buffer at the start; on the shared 2-core
/// machine (load average above 10) that has delayed one probe answer by up to 5 s.
const PROBE_WAIT: Duration = Duration::from_secs(10);

/// A well-behaved client asking every 200 ms while an attack runs; each request must
/// be answered 200 within [`PROBE_WAIT`].
struct Probe {
    stop: Arc<AtomicBool>,
    served: Arc<AtomicUsize>,
    /// The longest a probe request took, in ms.
    slowest: Arc<AtomicUsize>,
    failures: Arc<Mutex<Vec<String>>>,
    thread: Option<thread::JoinHandle<()>>,
}

impl Probe {
    fn start(addr: SocketAddr) -> Probe {
        let stop = Arc::new(AtomicBool::new(false));
        let served = Arc::new(AtomicUsize::new(0));
        let failures = Arc::new(Mutex::new(Vec::new()));
        let slowest = Arc::new(AtomicUsize::new(0));
        let (s, n, f) = (stop.clone(), served.clone(), failures.clone());
        let sl = slowest.clone();
        let thread = thread::spawn(move || {
            // bounded: at most 5 minutes of probing
            for _ in 0..1500 {
                if s.load(Ordering::SeqCst) {
                    break;
                }
                let t = Instant::now();
                match one_request(addr, "/probe", PROBE_WAIT) {
                    Ok(200) => {
                        n.fetch_add(1, Ordering::SeqCst);
                    }
                    Ok(other) => f.lock().unwrap().push(format!("status {other}")),
                    Err(e) => f
                        .lock()
                        .unwrap()
                        .push(format!("{e} after {:?}", t.elapsed())),
                }
                sl.fetch_max(t.elapsed().as_millis() as usize, Ordering::SeqCst);
                thread::sleep(Duration::from_millis(200));
            }
        });
        Probe {
            stop,
            served,
            slowest,
            failures,
            thread: Some(thread),
        }
    }

    /// Stops probing; (requests served, failures, the slowest in ms).
    fn finish(mut self) -> (usize, Vec<String>, usize) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        let failures = self.failures.lock().unwrap().clone();
        let slowest = self.slowest.load(Ordering::SeqCst);
        (self.served.load(Ordering::SeqCst), failures, slowest)
    }
}

/// Samples the proxy's open descriptors every 50 ms; keeps the peak.
struct FdWatch {
    stop: Arc<AtomicBool>,
    peak: Arc<AtomicUsize>,
    thread: Option<thread::JoinHandle<()>>,
}

impl FdWatch {
    fn start(pid: i32) -> FdWatch {
        let stop = Arc::new(AtomicBool::new(false));
        let peak = Arc::new(AtomicUsize::new(0));
        let (s, p) = (stop.clone(), peak.clone());
        let thread = thread::spawn(move || {
            for _ in 0..6000 {
                if s.load(Ordering::SeqCst) {
                    break;
                }
                p.fetch_max(procfs::fd_count(pid), Ordering::SeqCst);
                thread::sleep(Duration::from_millis(50));
            }
        });
        FdWatch {
            stop,
            peak,
            thread: Some(thread),
        }
    }

    fn finish(mut self) -> usize {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        self.peak.load(Ordering::SeqCst)
    }
}

/// Runs slowhttptest with `attack` (its mode flag and options) and `conns`
/// connections against a proxy on `io`, and checks that the slow connections are
/// closed within the configured timeout while a probe keeps being served and the
/// descriptors stay bounded. Returns slowhttptest's output.
fn slowhttptest(io: &str, attack: &[&str], url_path: &str, conns: usize) -> String {
    let origin = origin();
    let proxy = reverse_proxy(&origin, io, TIMEOUT, &[]);
    let pid = proxy.pid();
    assert_eq!(one_request(proxy.addr, "/warm", IO_WAIT), Ok(200));
    let base = procfs::fd_count(pid);
    let base_fds = procfs::fds(pid);
    let port = proxy.port();

    let fds = FdWatch::start(pid);
    let probe = Probe::start(proxy.addr);
    // reverse mode takes TLS and plain HTTP on the same port
    let (scheme, path) = url_path.split_once("://").unwrap_or(("http", url_path));
    let url = format!("{scheme}://{}{path}", proxy.addr);
    let c = conns.to_string();
    let mut args: Vec<String> = attack.iter().map(|s| s.to_string()).collect();
    // -l bounds the attack; -p is slowhttptest's own probe (ours is stricter)
    let common = ["-c", &c, "-r", &c, "-l", "40", "-p", "3", "-u", &url];
    args.extend(common.iter().map(|s| s.to_string()));
    let dir = TempDir::new("slowhttptest");
    let log = std::fs::File::create(dir.path("out")).unwrap();
    let mut attacker = std::process::Command::new("slowhttptest")
        .args(&args)
        .stdin(std::process::Stdio::null())
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .expect("slowhttptest (Debian package slowhttptest) is needed");
    let started = Instant::now();
    // the attack is under way once most of its connections are open at the proxy
    let mut peak = 0;
    let opened = wait_until(Duration::from_secs(15), || {
        peak = peak.max(procfs::held_on_port(port));
        peak >= conns / 2
    });
    assert!(
        opened,
        "--io {io} {attack:?}: only {peak} of {conns} slow connections reached the proxy"
    );
    let since = Instant::now();
    let mut held = usize::MAX;
    // the probe's own connection may be open at any moment
    let cut = wait_until(secs(TIMEOUT) + SLACK, || {
        held = procfs::held_on_port(port);
        peak = peak.max(held);
        held <= 2
    });
    let took = since.elapsed();
    let (served, failures, slowest) = probe.finish();
    // slowhttptest ends by itself once the proxy closed all its connections, except in
    // slow-read mode, where it does not notice the resets
    let mut exited = false;
    wait_until(Duration::from_secs(5), || {
        exited = matches!(attacker.try_wait(), Ok(Some(_)));
        exited
    });
    if !exited {
        let _ = attacker.kill();
        let _ = attacker.wait();
    }
    let out = std::fs::read_to_string(dir.path("out")).unwrap_or_default();
    let peak_fds = fds.finish();
    eprintln!(
        "--io {io} {attack:?} {url_path}: {peak} slow connections at the peak, all closed {took:?} \
         later ({:?} into the attack); probe served {served} times (slowest {slowest} ms); \
         peak {peak_fds} fds \
         (baseline {base})",
        started.elapsed()
    );
    assert!(
        cut,
        "--io {io} {attack:?}: {held} connections still open {took:?} after the attack \
         peaked (timeouts {TIMEOUT} s)\n{out}"
    );
    assert!(
        failures.is_empty(),
        "--io {io} {attack:?}: the probe failed during the attack ({} served): {failures:?}",
        served
    );
    assert!(served >= 1, "--io {io} {attack:?}: the probe never ran");
    // a slow connection holds its client socket, at most one upstream socket, and a
    // pipe (two ends) while bytes move by splice; up to 64 empty pipes are kept
    let bound = base + 4 * conns + 128 + 16;
    assert!(
        peak_fds <= bound,
        "--io {io} {attack:?}: {peak_fds} descriptors open at the peak (baseline {base}, \
         bound {bound})"
    );
    let mut now = procfs::Fds::default();
    let settled = wait_until(Duration::from_secs(10), || {
        now = procfs::fds(pid);
        now.sockets <= base_fds.sockets && now.other <= base_fds.other
    });
    assert!(
        settled,
        "--io {io} {attack:?}: {now:?} open after the attack, {base_fds:?} before"
    );
    // empty pipes are kept for reuse, at most 64 per worker
    assert!(
        now.pipes <= base_fds.pipes + 128,
        "--io {io} {attack:?}: {now:?}"
    );
    out
}

fn secs(s: &str) -> Duration {
    Duration::from_secs_f64(s.parse().unwrap())
}

/// Slow headers (slowloris): a header line every second never completes the head;
/// `--head-timeout` cuts every connection.
#[test]
fn slowhttptest_slow_headers_are_cut_by_head_timeout() {
    for io in BACKENDS {
        let out = slowhttptest(io, &["-H", "-i", "1"], "/", 300);
        assert!(
            out.contains("No open connections left"),
            "--io {io}: slowhttptest still had connections open at its time limit:\n{out}"
        );
    }
}

/// Slow body (R-U-Dead-Yet): a POST announcing 64 KiB sends a few bytes every 4 s;
/// `--body-timeout 2` cuts every connection at its first pause.
#[test]
fn slowhttptest_slow_bodies_are_cut_by_body_timeout() {
    for io in BACKENDS {
        let out = slowhttptest(io, &["-B", "-i", "4", "-s", "65536"], "/", 300);
        assert!(
            out.contains("No open connections left"),
            "--io {io}: slowhttptest still had connections open at its time limit:\n{out}"
        );
    }
}

/// Slow read: four pipelined requests for 1 MiB each, read 32 bytes every 3 s through a
/// window of at most 1 KiB; `--send-timeout 2` drops every connection (and resets it,
/// so the kernel does not keep megabytes of unsent response per socket).
/// slowhttptest itself does not notice the resets, so only the proxy's side is checked.
/// On epoll the attack comes over TLS (luring terminates it in reverse mode), whose
/// handshakes make it slow enough in a debug build that 60 connections are used.
#[test]
fn slowhttptest_slow_readers_are_cut_by_send_timeout() {
    let attack = [
        "-X", "-w", "512", "-y", "1024", "-n", "3", "-z", "32", "-k", "4",
    ];
    slowhttptest("uring", &attack, "/big", 150);
    slowhttptest("epoll", &attack, "https:///big", 60);
}

/// An HTTP/2 stream (h2c with prior knowledge) whose POST announces a body and never
/// sends it is answered 408 after `--body-timeout`, instead of holding the stream and
/// its upstream connection until the client goes away.
#[test]
fn h2_request_body_that_never_comes_is_cut_by_body_timeout() {
    use std::io::Write;
    for io in BACKENDS {
        let origin = origin();
        let proxy = reverse_proxy(&origin, io, TIMEOUT, &[]);
        let mut s = TcpStream::connect_timeout(&proxy.addr, IO_WAIT).unwrap();
        s.set_read_timeout(Some(secs(TIMEOUT) + SLACK)).unwrap();
        let mut out = h2raw::PREFACE.to_vec();
        out.extend(h2raw::frame(h2raw::SETTINGS, 0, 0, &[]));
        let post = h2raw::hpack(&[
            (":method", "POST"),
            (":scheme", "http"),
            (":path", "/stalled"),
            (":authority", "front"),
            ("content-length", "100"),
        ]);
        out.extend(h2raw::frame(h2raw::HEADERS, h2raw::END_HEADERS, 1, &post));
        s.write_all(&out).unwrap();
        let start = Instant::now();
        let mut seen = Vec::new();
        let ended = loop {
            match h2raw::read_frame(&mut s) {
                Ok((h2raw::HEADERS, _, 1, block)) => break format!("HEADERS {block:?}"),
                Ok((h2raw::RST_STREAM, _, 1, code)) => break format!("RST_STREAM {code:?}"),
                Ok((h2raw::GOAWAY, ..)) => break "GOAWAY".to_string(),
                Ok((kind, _, stream, _)) => seen.push((kind, stream)),
                Err(e) => panic!(
                    "--io {io}: the stalled stream was not ended {:?} after its head \
                     (--body-timeout {TIMEOUT}): {e}; frames seen {seen:?}",
                    start.elapsed()
                ),
            }
        };
        eprintln!(
            "--io {io}: stalled h2 body ended by {ended} after {:?}",
            start.elapsed()
        );
        // the response head is HPACK-coded; the log says which status it carried
        assert!(
            ended.starts_with("HEADERS") && proxy.wait_stderr("answered 408", IO_WAIT),
            "--io {io}: {ended}\n{}",
            proxy.stderr()
        );
    }
}

/// Opens `n` connections that send half a request head and stay open.
fn holders(addr: SocketAddr, n: usize) -> Vec<TcpStream> {
    use std::io::Write;
    (0..n)
        .filter_map(|_| {
            let mut s = TcpStream::connect_timeout(&addr, IO_WAIT).ok()?;
            let _ = s.write_all(b"GET /held HTTP/1.1\r\n");
            Some(s)
        })
        .collect()
}

/// How a connection the proxy cannot take ends for the client.
#[derive(Debug, PartialEq)]
enum Refusal {
    Status(u16),
    Closed,
    /// No answer and no close within the wait: the failure this file guards against.
    Hung,
}

fn refused(addr: SocketAddr) -> Refusal {
    use std::io::ErrorKind::{TimedOut, WouldBlock};
    let Ok(mut c) = Client::try_connect(addr) else {
        // a backlog so full that the SYN goes unanswered for IO_WAIT
        return Refusal::Hung;
    };
    c.set_read_timeout(Duration::from_secs(5));
    let req = b"GET /extra HTTP/1.1\r\nHost: front\r\nConnection: close\r\n\r\n";
    if c.try_send(req).is_err() {
        return Refusal::Closed;
    }
    match c.try_read_response_to("GET") {
        Ok(r) => Refusal::Status(r.status),
        Err(e) if matches!(e.kind(), TimedOut | WouldBlock) => Refusal::Hung,
        Err(_) => Refusal::Closed,
    }
}

/// CPU the proxy burns (in ticks) over two seconds during which `load` runs.
fn cpu_during(pid: i32, mut load: impl FnMut()) -> (u64, Duration) {
    let t0 = procfs::cpu_ticks(pid);
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(2) {
        load();
        thread::sleep(Duration::from_millis(100));
    }
    (procfs::cpu_ticks(pid) - t0, start.elapsed())
}

/// A quarter of a core: far above an accept loop that waits, far below one that spins.
fn cpu_budget(elapsed: Duration) -> u64 {
    (procfs::ticks_per_sec() as f64 * elapsed.as_secs_f64() / 4.0) as u64
}

/// 200 connections against `--max-connections 20`: every extra one is answered 503
/// or closed at once, the proxy stays idle, and it serves again once the load stops.
#[test]
fn flood_over_max_connections_is_refused_fast_and_service_resumes() {
    for io in BACKENDS {
        let origin = origin();
        let proxy = reverse_proxy(&origin, io, "30", &["--max-connections", "20"]);
        let pid = proxy.pid();
        let held = holders(proxy.addr, 20);
        assert!(wait_until(
            Duration::from_secs(10),
            || procfs::held_on_port(proxy.port()) >= 20
        ));
        let flood: Vec<Refusal> = (0..180).map(|_| refused(proxy.addr)).collect();
        assert!(
            !flood.contains(&Refusal::Hung),
            "--io {io}: a connection over the limit got neither an answer nor a close: {flood:?}"
        );
        assert!(
            flood
                .iter()
                .all(|r| matches!(r, Refusal::Status(503) | Refusal::Closed)),
            "--io {io}: {flood:?}"
        );
        assert!(
            flood.contains(&Refusal::Status(503)),
            "--io {io}: no 503 at all: {flood:?}"
        );
        let (ticks, took) = cpu_during(pid, || {
            let _ = refused(proxy.addr);
        });
        let answered = flood.iter().filter(|r| **r == Refusal::Status(503)).count();
        eprintln!(
            "--io {io}: over --max-connections, {answered} of {} got a 503, the rest a \
             close; {ticks} CPU ticks in {took:?} while refusing",
            flood.len()
        );
        assert!(
            ticks <= cpu_budget(took),
            "--io {io}: {ticks} CPU ticks in {took:?} while refusing connections"
        );
        drop(held);
        let mut last = Err(String::new());
        let back = wait_until(Duration::from_secs(10), || {
            last = one_request(proxy.addr, "/after", Duration::from_secs(2));
            last == Ok(200)
        });
        assert!(back, "--io {io}: not served after the flood: {last:?}");
    }
}

/// The proxy's RLIMIT_NOFILE is lowered to a few descriptors above what it holds, and
/// connections are held open until accept fails with EMFILE: new connections are
/// refused at once (503 or a close), the accept loop does not spin, and once the
/// held connections close it serves again, still under the low limit.
#[test]
fn out_of_fds_refuses_fast_without_spinning_and_recovers() {
    for io in BACKENDS {
        let origin = origin();
        let proxy = reverse_proxy(&origin, io, "30", &[]);
        let pid = proxy.pid();
        assert_eq!(one_request(proxy.addr, "/warm", IO_WAIT), Ok(200));
        // the pooled upstream connection goes after --pool-idle-timeout 1
        thread::sleep(Duration::from_millis(1500));
        let limit = procfs::fd_count(pid) + 12;
        procfs::set_nofile(pid, limit as u64).expect("prlimit on the proxy");
        // held connections fill the table one by one (descriptors opened before the
        // limit was lowered may sit above it and leave slots below it free)
        let mut held = Vec::new();
        for _ in 0..40 {
            let before = procfs::fds_below(pid, limit);
            if before >= limit {
                break;
            }
            held.extend(holders(proxy.addr, 1));
            wait_until(Duration::from_secs(2), || {
                procfs::fds_below(pid, limit) > before
            });
        }
        let open = procfs::fds_below(pid, limit);
        assert_eq!(open, limit, "--io {io}: the descriptor table is not full");
        let tries: Vec<Refusal> = (0..10).map(|_| refused(proxy.addr)).collect();
        assert!(
            proxy.wait_stderr(
                "accept failed: Too many open files",
                Duration::from_secs(10)
            ),
            "--io {io}: accept never failed with EMFILE; new connections got {tries:?}"
        );
        assert!(
            !tries.contains(&Refusal::Hung),
            "--io {io}: with the fd table full a connection got neither an answer nor a \
             close: {tries:?}"
        );
        assert!(
            tries
                .iter()
                // 503 from the accept loop; 502 when the client socket took the last
                // free slot and the upstream socket found none
                .all(|r| matches!(r, Refusal::Status(502 | 503) | Refusal::Closed)),
            "--io {io}: with the fd table full: {tries:?}"
        );
        let (ticks, took) = cpu_during(pid, || {
            let _ = refused(proxy.addr);
        });
        eprintln!(
            "--io {io}: out of descriptors, new connections got {tries:?}; {ticks} CPU \
             ticks in {took:?}"
        );
        assert!(
            ticks <= cpu_budget(took),
            "--io {io}: {ticks} CPU ticks in {took:?} with the fd table full: a busy loop"
        );
        drop(held);
        let mut last = Err(String::new());
        let back = wait_until(Duration::from_secs(10), || {
            last = one_request(proxy.addr, "/after", Duration::from_secs(2));
            last == Ok(200)
        });
        assert!(
            back,
            "--io {io}: not served after the load stopped: {last:?}"
        );
        assert!(
            proxy.stderr().matches("accept failed").count() <= 20,
            "--io {io}: the accept failure is logged without a rate limit"
        );
    }
}

/// Started under a soft open-file limit of 256 (hard 4096), luring raises the soft
/// limit to the hard one, and warns that 4096 is below what `--max-connections`
/// allows.
#[test]
fn soft_open_file_limit_is_raised_and_a_low_one_is_warned_about() {
    use std::io::{BufRead, BufReader};
    use std::os::unix::process::CommandExt;
    let home = TempDir::new("nofile");
    let mut cmd = std::process::Command::new(bin());
    cmd.args(["run", "--listen", "127.0.0.1:0", "--workers", "2"])
        .env("XDG_CONFIG_HOME", &home.0)
        .env("NO_COLOR", "1")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped());
    // SAFETY: setrlimit is async-signal-safe and touches only the child's limits.
    unsafe {
        cmd.pre_exec(|| {
            let lim = libc::rlimit {
                rlim_cur: 256,
                rlim_max: 4096,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &lim) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let mut child = cmd.spawn().expect("spawn luring");
    let pid = child.id() as i32;
    let stderr = child.stderr.take().unwrap();
    let lines = Arc::new(Mutex::new(Vec::new()));
    let l = lines.clone();
    thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            l.lock().unwrap().push(line);
        }
    });
    let up = wait_until(STARTUP_WAIT, || {
        lines
            .lock()
            .unwrap()
            .iter()
            .any(|l| l.contains("luring listening on"))
    });
    let limits = std::fs::read_to_string(format!("/proc/{pid}/limits")).unwrap_or_default();
    let _ = child.kill();
    let _ = child.wait();
    let text = lines.lock().unwrap().join("\n");
    assert!(up, "luring did not start:\n{text}");
    let open_files = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .map(|l| l.split_whitespace().skip(3).take(2).collect::<Vec<_>>())
        .unwrap_or_default();
    assert_eq!(open_files, ["4096", "4096"], "{limits}");
    assert!(
        text.contains("the open-file limit (4096) is below the 40000 descriptors"),
        "{text}"
    );
}
