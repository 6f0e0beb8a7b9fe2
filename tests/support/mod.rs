//! Shared helpers for the integration tests: the real `luring` binary as a child
//! process, a configurable origin server, a raw TCP echo server, a raw HTTP/1
//! client and a `curl` wrapper. Everything listens on 127.0.0.1 only and every
//! wait is bounded.
#![allow(dead_code)]

use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, OnceLock};
use std::thread;
use std::time::{Duration, Instant};

/// Bound on waiting for the proxy's startup line.
pub const STARTUP_WAIT: Duration = Duration::from_secs(10);
/// Bound on any single socket read or write in the helpers.
pub const IO_WAIT: Duration = Duration::from_secs(10);

/// Path of the binary under test.
pub fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_luring")
}

/// Poll `f` every 20 ms until it returns true or `timeout` passes.
pub fn wait_until(timeout: Duration, mut f: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if f() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        thread::sleep(Duration::from_millis(20));
    }
}

fn strip_ansi(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\x1b' {
            if chars.peek() == Some(&'[') {
                chars.next();
                for c in chars.by_ref() {
                    if c.is_ascii_alphabetic() {
                        break;
                    }
                }
            }
            continue;
        }
        out.push(c);
    }
    out
}

// ---------------------------------------------------------------------------
// Output capture
// ---------------------------------------------------------------------------

/// A pipe drained by a background thread into a buffer tests can inspect.
struct Capture {
    state: Mutex<(Vec<u8>, bool)>,
    cv: Condvar,
}

impl Capture {
    fn spawn(mut pipe: impl Read + Send + 'static) -> Arc<Capture> {
        let cap = Arc::new(Capture {
            state: Mutex::new((Vec::new(), false)),
            cv: Condvar::new(),
        });
        let c = cap.clone();
        thread::spawn(move || {
            let mut buf = [0u8; 8192];
            loop {
                match pipe.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => {
                        c.state.lock().unwrap().0.extend_from_slice(&buf[..n]);
                        c.cv.notify_all();
                    }
                }
            }
            c.state.lock().unwrap().1 = true;
            c.cv.notify_all();
        });
        cap
    }

    fn text(&self) -> String {
        strip_ansi(&String::from_utf8_lossy(&self.state.lock().unwrap().0))
    }

    /// Wait until `pred(text)` is true or the pipe closed or `timeout` passed.
    fn wait(&self, timeout: Duration, pred: impl Fn(&str) -> bool) -> bool {
        let deadline = Instant::now() + timeout;
        let mut st = self.state.lock().unwrap();
        loop {
            let text = strip_ansi(&String::from_utf8_lossy(&st.0));
            if pred(&text) {
                return true;
            }
            let now = Instant::now();
            if st.1 || now >= deadline {
                return false;
            }
            st = self.cv.wait_timeout(st, deadline - now).unwrap().0;
        }
    }
}

// ---------------------------------------------------------------------------
// The proxy under test
// ---------------------------------------------------------------------------

/// Why the proxy did not reach its "listening" line.
#[derive(Debug)]
pub struct StartError {
    pub status: Option<ExitStatus>,
    pub stderr: String,
    pub reason: String,
}

/// A running `luring` child process. Killed (SIGKILL) on drop if still running.
pub struct Proxy {
    child: Child,
    pub addr: SocketAddr,
    /// The startup line, as printed.
    pub startup_line: String,
    stderr: Arc<Capture>,
    stdout: Arc<Capture>,
    exit: Option<ExitStatus>,
}

const LISTENING: &str = "luring listening on ";

fn parse_listening(text: &str) -> Option<(SocketAddr, String)> {
    // Only complete lines: the pipe may deliver a line in pieces.
    let complete = &text[..text.rfind('\n').map_or(0, |i| i + 1)];
    for line in complete.lines() {
        if let Some(i) = line.find(LISTENING) {
            let rest = &line[i + LISTENING.len()..];
            let addr = rest.split_whitespace().next()?;
            if let Ok(a) = addr.parse::<SocketAddr>() {
                return Some((a, line[i..].to_string()));
            }
        }
    }
    None
}

/// A scratch config home shared by the proxies of one test binary, so tests that do
/// not pass `--confdir` keep their CA out of the real ~/.luring (CA creation is
/// serialised by luring's own lock, so parallel tests may share it).
fn scratch_config_home() -> &'static std::path::Path {
    static HOME: std::sync::OnceLock<std::path::PathBuf> = std::sync::OnceLock::new();
    HOME.get_or_init(|| {
        let tmp = std::env::temp_dir();
        luring::scratch::sweep_stale(&tmp, "luring-test-config-");
        let d = tmp.join(format!("luring-test-config-{}", std::process::id()));
        std::fs::create_dir_all(&d).expect("scratch config home");
        d
    })
}

fn spawn_child(args: &[&str]) -> io::Result<Child> {
    Command::new(bin())
        .args(args)
        .env("XDG_CONFIG_HOME", scratch_config_home())
        .env_remove("RUST_LOG")
        .env("NO_COLOR", "1")
        .env("RUST_BACKTRACE", "1")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
}

impl Proxy {
    /// `luring run --listen 127.0.0.1:0 ARGS...`; panics if it does not start.
    pub fn start(args: &[&str]) -> Proxy {
        match Self::try_start(args) {
            Ok(p) => p,
            Err(e) => panic!(
                "luring did not start with {args:?}: {} (exit {:?})\n--- stderr ---\n{}",
                e.reason, e.status, e.stderr
            ),
        }
    }

    /// Like [`Proxy::start`] but returns the failure instead of panicking.
    pub fn try_start(args: &[&str]) -> Result<Proxy, StartError> {
        let mut full = vec!["run", "--listen", "127.0.0.1:0"];
        full.extend_from_slice(args);
        Self::spawn(&full)
    }

    /// `luring ARGS...` exactly as given (no implicit `run --listen`).
    pub fn spawn(args: &[&str]) -> Result<Proxy, StartError> {
        let mut child = spawn_child(args).map_err(|e| StartError {
            status: None,
            stderr: String::new(),
            reason: format!("spawn failed: {e}"),
        })?;
        let stderr = Capture::spawn(child.stderr.take().unwrap());
        let stdout = Capture::spawn(child.stdout.take().unwrap());
        stderr.wait(STARTUP_WAIT, |t| parse_listening(t).is_some());
        let text = stderr.text();
        match parse_listening(&text) {
            Some((addr, startup_line)) => Ok(Proxy {
                child,
                addr,
                startup_line,
                stderr,
                stdout,
                exit: None,
            }),
            None => {
                // Either it exited (stderr closed) or it is silent: give it a
                // moment to report its exit status, then make sure it is gone.
                let mut status = None;
                wait_until(Duration::from_secs(2), || {
                    status = child.try_wait().ok().flatten();
                    status.is_some()
                });
                let reason = if status.is_some() {
                    "exited before printing the listening line".to_string()
                } else {
                    let _ = child.kill();
                    status = child.wait().ok();
                    format!("no listening line on stderr within {STARTUP_WAIT:?}; killed")
                };
                stderr.wait(Duration::from_secs(1), |_| false);
                Err(StartError {
                    status,
                    stderr: stderr.text() + &stdout.text(),
                    reason,
                })
            }
        }
    }

    pub fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// `http://127.0.0.1:PORT`
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Everything the proxy wrote to stderr so far.
    pub fn stderr(&self) -> String {
        self.stderr.text()
    }

    /// Everything the proxy wrote to stdout so far.
    pub fn stdout(&self) -> String {
        self.stdout.text()
    }

    /// Wait (bounded) until stderr contains `needle`.
    pub fn wait_stderr(&self, needle: &str, timeout: Duration) -> bool {
        self.stderr.wait(timeout, |t| t.contains(needle))
    }

    pub fn signal(&self, sig: i32) {
        if self.exit.is_none() {
            unsafe {
                libc::kill(self.pid(), sig);
            }
        }
    }

    /// Wait (bounded) for the process to exit; `None` if still running.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        if self.exit.is_none() {
            let child = &mut self.child;
            let mut st = None;
            wait_until(timeout, || {
                st = child.try_wait().ok().flatten();
                st.is_some()
            });
            self.exit = st;
        }
        self.exit
    }

    /// SIGTERM, then wait up to `timeout`; SIGKILL if still running.
    /// Returns the exit status after SIGTERM, or `None` if it had to be killed.
    pub fn terminate(&mut self, timeout: Duration) -> Option<ExitStatus> {
        self.signal(libc::SIGTERM);
        let st = self.wait_exit(timeout);
        if st.is_none() {
            self.kill();
        }
        st
    }

    pub fn kill(&mut self) {
        if self.exit.is_none() {
            let _ = self.child.kill();
            self.exit = self.child.wait().ok();
        }
    }

    fn proc_status_kib(&self, key: &str) -> Option<u64> {
        let s = std::fs::read_to_string(format!("/proc/{}/status", self.pid())).ok()?;
        s.lines()
            .find(|l| l.starts_with(key))?
            .split_whitespace()
            .nth(1)?
            .parse()
            .ok()
    }

    /// Peak resident set size (VmHWM) in KiB.
    pub fn vm_hwm_kib(&self) -> Option<u64> {
        self.proc_status_kib("VmHWM:")
    }

    /// Current resident set size (VmRSS) in KiB.
    pub fn vm_rss_kib(&self) -> Option<u64> {
        self.proc_status_kib("VmRSS:")
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.kill();
        if thread::panicking() {
            eprintln!("--- luring stderr ---\n{}", self.stderr());
        }
    }
}

/// Run the binary to completion with a bounded wait (for `--help` and friends).
pub fn run_luring(args: &[&str], timeout: Duration) -> (Option<ExitStatus>, String, String) {
    let mut child = spawn_child(args).expect("spawn luring");
    let err = Capture::spawn(child.stderr.take().unwrap());
    let out = Capture::spawn(child.stdout.take().unwrap());
    let mut st = None;
    wait_until(timeout, || {
        st = child.try_wait().ok().flatten();
        st.is_some()
    });
    if st.is_none() {
        let _ = child.kill();
        let _ = child.wait();
    }
    out.wait(Duration::from_secs(2), |_| false);
    err.wait(Duration::from_secs(2), |_| false);
    (st, out.text(), err.text())
}

// ---------------------------------------------------------------------------
// Deterministic payload pattern (generated on the fly, checked on the fly)
// ---------------------------------------------------------------------------

const PERIOD: u64 = 251;
const PAT_CHUNK: usize = 64 * 1024;

fn pattern_buf() -> &'static [u8] {
    static P: OnceLock<Vec<u8>> = OnceLock::new();
    P.get_or_init(|| {
        (0..PAT_CHUNK as u64 + PERIOD)
            .map(|i| (i % PERIOD) as u8)
            .collect()
    })
}

/// The pattern bytes at stream offset `offset`, at most 64 KiB.
pub fn pattern_at(offset: u64, len: usize) -> &'static [u8] {
    let len = len.min(PAT_CHUNK);
    let start = (offset % PERIOD) as usize;
    &pattern_buf()[start..start + len]
}

/// `len` pattern bytes starting at offset 0, as an owned buffer.
pub fn pattern_vec(len: usize) -> Vec<u8> {
    let mut v = Vec::with_capacity(len);
    while v.len() < len {
        let n = (len - v.len()).min(PAT_CHUNK);
        v.extend_from_slice(pattern_at(v.len() as u64, n));
    }
    v
}

/// Write `n` pattern bytes to `w`.
pub fn write_pattern(w: &mut impl Write, n: u64) -> io::Result<()> {
    let mut off = 0u64;
    while off < n {
        let len = ((n - off) as usize).min(PAT_CHUNK);
        w.write_all(pattern_at(off, len))?;
        off += len as u64;
    }
    Ok(())
}

/// Counts bytes and checks that they follow the pattern.
#[derive(Debug, Default, Clone)]
pub struct PatternCheck {
    pub count: u64,
    /// Offset of the first byte that did not match, if any.
    pub first_mismatch: Option<u64>,
}

impl PatternCheck {
    pub fn feed(&mut self, mut data: &[u8]) {
        while !data.is_empty() {
            let n = data.len().min(PAT_CHUNK);
            if self.first_mismatch.is_none() && data[..n] != *pattern_at(self.count, n) {
                let expect = pattern_at(self.count, n);
                let i = data[..n].iter().zip(expect).position(|(a, b)| a != b);
                self.first_mismatch = Some(self.count + i.unwrap_or(0) as u64);
            }
            self.count += n as u64;
            data = &data[n..];
        }
    }

    pub fn ok(&self) -> bool {
        self.first_mismatch.is_none()
    }
}

// ---------------------------------------------------------------------------
// Buffered connection with HTTP/1 framing helpers (shared by origin and client)
// ---------------------------------------------------------------------------

fn timed_out(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
    )
}

/// A TCP stream with a read buffer.
pub struct BufConn {
    pub stream: TcpStream,
    buf: Vec<u8>,
    pos: usize,
}

impl BufConn {
    pub fn new(stream: TcpStream) -> BufConn {
        BufConn {
            stream,
            buf: Vec::new(),
            pos: 0,
        }
    }

    fn buffered(&self) -> &[u8] {
        &self.buf[self.pos..]
    }

    fn consume(&mut self, n: usize) {
        self.pos += n;
        if self.pos == self.buf.len() {
            self.buf.clear();
            self.pos = 0;
        }
    }

    /// Read more bytes into the buffer; Ok(0) at EOF.
    fn fill(&mut self) -> io::Result<usize> {
        if self.pos > 0 && self.pos > self.buf.len() / 2 {
            self.buf.drain(..self.pos);
            self.pos = 0;
        }
        let mut tmp = [0u8; 64 * 1024];
        let n = self.stream.read(&mut tmp)?;
        self.buf.extend_from_slice(&tmp[..n]);
        Ok(n)
    }

    /// Read a head (through the blank line). Ok(None) on clean EOF before any byte.
    pub fn read_head(&mut self) -> io::Result<Option<Vec<u8>>> {
        let mut scanned: usize = 0;
        loop {
            let b = self.buffered();
            if let Some(i) = find(&b[scanned.saturating_sub(3)..], b"\r\n\r\n") {
                let end = scanned.saturating_sub(3) + i + 4;
                let head = b[..end].to_vec();
                self.consume(end);
                return Ok(Some(head));
            }
            scanned = b.len();
            if scanned > 1 << 20 {
                return Err(io::Error::new(io::ErrorKind::InvalidData, "head > 1 MiB"));
            }
            if self.fill()? == 0 {
                return if self.buffered().is_empty() {
                    Ok(None)
                } else {
                    Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        format!(
                            "EOF inside a head: {:?}",
                            String::from_utf8_lossy(self.buffered())
                        ),
                    ))
                };
            }
        }
    }

    fn read_line(&mut self) -> io::Result<Vec<u8>> {
        loop {
            if let Some(i) = find(self.buffered(), b"\r\n") {
                let line = self.buffered()[..i].to_vec();
                self.consume(i + 2);
                return Ok(line);
            }
            if self.fill()? == 0 {
                return Err(io::ErrorKind::UnexpectedEof.into());
            }
        }
    }

    /// Read exactly `n` bytes, handing them to `sink` piecewise.
    pub fn read_exact_to(&mut self, mut n: u64, sink: &mut dyn FnMut(&[u8])) -> io::Result<()> {
        while n > 0 {
            if self.buffered().is_empty() && self.fill()? == 0 {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    format!("EOF with {n} body bytes missing"),
                ));
            }
            let take = (self.buffered().len() as u64).min(n) as usize;
            sink(&self.buffered()[..take]);
            self.consume(take);
            n -= take as u64;
        }
        Ok(())
    }

    /// Read until EOF (or a reset), handing bytes to `sink`.
    pub fn read_to_eof(&mut self, sink: &mut dyn FnMut(&[u8])) -> io::Result<()> {
        loop {
            if !self.buffered().is_empty() {
                let n = self.buffered().len();
                sink(self.buffered());
                self.consume(n);
            }
            match self.fill() {
                Ok(0) => return Ok(()),
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::ConnectionReset => return Ok(()),
                Err(e) => return Err(e),
            }
        }
    }

    /// Decode a chunked body; returns the trailer fields.
    pub fn read_chunked(
        &mut self,
        sink: &mut dyn FnMut(&[u8]),
    ) -> io::Result<Vec<(String, String)>> {
        loop {
            let line = self.read_line()?;
            let line = String::from_utf8_lossy(&line);
            let size_str = line.split(';').next().unwrap_or("").trim();
            let size = u64::from_str_radix(size_str, 16).map_err(|_| {
                io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("bad chunk size line {line:?}"),
                )
            })?;
            if size == 0 {
                let mut trailers = Vec::new();
                loop {
                    let l = self.read_line()?;
                    if l.is_empty() {
                        return Ok(trailers);
                    }
                    let l = String::from_utf8_lossy(&l);
                    if let Some((k, v)) = l.split_once(':') {
                        trailers.push((k.trim().to_string(), v.trim().to_string()));
                    }
                }
            }
            self.read_exact_to(size, sink)?;
            let crlf = self.read_line()?;
            if !crlf.is_empty() {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    "chunk data not followed by CRLF",
                ));
            }
        }
    }
}

pub fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

fn header_value<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_str())
}

fn has_token(headers: &[(String, String)], name: &str, token: &str) -> bool {
    headers
        .iter()
        .filter(|(k, _)| k.eq_ignore_ascii_case(name))
        .flat_map(|(_, v)| v.split(','))
        .any(|t| t.trim().eq_ignore_ascii_case(token))
}

// ---------------------------------------------------------------------------
// Origin server
// ---------------------------------------------------------------------------

/// A request as the origin received it.
#[derive(Debug, Clone, Default)]
pub struct RequestRecord {
    pub conn_id: usize,
    pub method: String,
    pub target: String,
    /// 0 for HTTP/1.0, 1 for HTTP/1.1
    pub version: u8,
    pub headers: Vec<(String, String)>,
    pub raw_head: Vec<u8>,
    /// The body, when the handler buffered it (`read_body`).
    pub body: Vec<u8>,
    /// Body bytes received (buffered or counted); `None` until the body was read.
    pub body_len: Option<u64>,
    pub trailers: Vec<(String, String)>,
}

impl RequestRecord {
    pub fn header(&self, name: &str) -> Option<&str> {
        header_value(&self.headers, name)
    }
}

/// Per upstream connection statistics.
#[derive(Debug, Clone, Default)]
pub struct ConnStat {
    pub requests: usize,
    /// The peer (the proxy) closed the connection (EOF or reset seen by the origin).
    pub peer_closed: bool,
    /// The connection ended (either side).
    pub ended: bool,
}

#[derive(Default)]
struct OriginShared {
    stop: AtomicBool,
    accepted: AtomicUsize,
    requests: Mutex<Vec<RequestRecord>>,
    conns: Mutex<Vec<ConnStat>>,
    /// Clones of the connections still being served (by id), shut down on drop.
    open: Mutex<Vec<(usize, TcpStream)>>,
    idle_close: Option<Duration>,
}

/// What the connection does after a handler returns.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Next {
    KeepAlive,
    Close,
}

enum BodyFraming {
    None,
    Length(u64),
    Chunked,
}

/// One request/response exchange inside an origin handler.
pub struct Exchange<'a> {
    pub req: RequestRecord,
    index: usize,
    conn: &'a mut BufConn,
    shared: &'a OriginShared,
    framing: BodyFraming,
    body_done: bool,
    expect_continue: bool,
}

impl Exchange<'_> {
    pub fn is_head(&self) -> bool {
        self.req.method.eq_ignore_ascii_case("HEAD")
    }

    pub fn stop_requested(&self) -> bool {
        self.shared.stop.load(Ordering::SeqCst)
    }

    fn send_continue_if_expected(&mut self) -> io::Result<()> {
        if self.expect_continue {
            self.expect_continue = false;
            self.conn
                .stream
                .write_all(b"HTTP/1.1 100 Continue\r\n\r\n")?;
        }
        Ok(())
    }

    fn read_body_with(&mut self, sink: &mut dyn FnMut(&[u8])) -> io::Result<u64> {
        if self.body_done {
            return Ok(0);
        }
        self.body_done = true;
        let mut n = 0u64;
        let mut counting = |d: &[u8]| {
            n += d.len() as u64;
            sink(d)
        };
        let mut trailers = Vec::new();
        match self.framing {
            BodyFraming::None => {}
            BodyFraming::Length(len) => {
                if len > 0 {
                    self.send_continue_if_expected()?;
                }
                self.conn.read_exact_to(len, &mut counting)?;
            }
            BodyFraming::Chunked => {
                self.send_continue_if_expected()?;
                trailers = self.conn.read_chunked(&mut counting)?;
            }
        }
        let mut reqs = self.shared.requests.lock().unwrap();
        reqs[self.index].body_len = Some(n);
        reqs[self.index].trailers = trailers.clone();
        self.req.body_len = Some(n);
        self.req.trailers = trailers;
        Ok(n)
    }

    /// Read and keep the whole request body (sends 100 Continue if expected).
    pub fn read_body(&mut self) -> io::Result<Vec<u8>> {
        let mut body = Vec::new();
        self.read_body_with(&mut |d| body.extend_from_slice(d))?;
        self.shared.requests.lock().unwrap()[self.index].body = body.clone();
        self.req.body = body.clone();
        Ok(body)
    }

    /// Read the request body without keeping it, checking it against the pattern.
    pub fn count_body(&mut self) -> io::Result<PatternCheck> {
        let mut check = PatternCheck::default();
        self.read_body_with(&mut |d| check.feed(d))?;
        Ok(check)
    }

    /// Write response bytes (after this, no 100 Continue is sent any more).
    pub fn write(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.expect_continue = false;
        self.conn.stream.write_all(bytes)
    }

    pub fn stream(&mut self) -> &mut TcpStream {
        &mut self.conn.stream
    }

    /// Sleep up to `d`, returning early if the origin is being shut down.
    pub fn sleep(&self, d: Duration) {
        let deadline = Instant::now() + d;
        while Instant::now() < deadline && !self.stop_requested() {
            thread::sleep(Duration::from_millis(10));
        }
    }
}

pub type Handler = Arc<dyn Fn(&mut Exchange) -> io::Result<Next> + Send + Sync>;

pub fn handler(f: impl Fn(&mut Exchange) -> io::Result<Next> + Send + Sync + 'static) -> Handler {
    Arc::new(f)
}

fn head_bytes(status: u16, headers: &[(&str, &str)]) -> Vec<u8> {
    let mut h = format!("HTTP/1.1 {status} {}\r\n", reason(status));
    for (k, v) in headers {
        h.push_str(&format!("{k}: {v}\r\n"));
    }
    h.push_str("\r\n");
    h.into_bytes()
}

pub fn reason(status: u16) -> &'static str {
    match status {
        100 => "Continue",
        200 => "OK",
        204 => "No Content",
        304 => "Not Modified",
        400 => "Bad Request",
        404 => "Not Found",
        500 => "Internal Server Error",
        _ => "Whatever",
    }
}

/// 200 with body = the request head exactly as received, then the request body.
/// Headers `x-echo-method`, `x-echo-target`, `x-echo-body-len` summarize it.
pub fn echo() -> Handler {
    handler(|ex| {
        let body = ex.read_body()?;
        let mut out = ex.req.raw_head.clone();
        out.extend_from_slice(&body);
        let len = out.len().to_string();
        let blen = body.len().to_string();
        let method = ex.req.method.clone();
        let target = ex.req.target.clone();
        let head = head_bytes(
            200,
            &[
                ("Content-Type", "text/plain"),
                ("Content-Length", &len),
                ("X-Echo-Method", &method),
                ("X-Echo-Target", &target),
                ("X-Echo-Body-Len", &blen),
            ],
        );
        ex.write(&head)?;
        if !ex.is_head() {
            ex.write(&out)?;
        }
        Ok(Next::KeepAlive)
    })
}

/// A fixed response. Adds Content-Length unless the headers carry a length or
/// transfer-encoding (or the status forbids a body). No body for HEAD.
pub fn fixed(status: u16, headers: &[(&str, &str)], body: &[u8]) -> Handler {
    let mut hs: Vec<(String, String)> = headers
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    let framed = hs.iter().any(|(k, _)| {
        k.eq_ignore_ascii_case("content-length") || k.eq_ignore_ascii_case("transfer-encoding")
    });
    if !framed && status != 204 && status != 304 && status >= 200 {
        hs.push(("Content-Length".into(), body.len().to_string()));
    }
    let body = body.to_vec();
    handler(move |ex| {
        ex.read_body()?;
        let refs: Vec<(&str, &str)> = hs.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        let mut out = head_bytes(status, &refs);
        if !ex.is_head() {
            out.extend_from_slice(&body);
        }
        ex.write(&out)?;
        Ok(Next::KeepAlive)
    })
}

/// 200 with `Transfer-Encoding: chunked`, the given chunks, then trailers.
pub fn chunked(chunks: Vec<Vec<u8>>, trailers: Vec<(String, String)>) -> Handler {
    handler(move |ex| {
        ex.read_body()?;
        let names: Vec<&str> = trailers.iter().map(|(k, _)| k.as_str()).collect();
        let names = names.join(", ");
        let mut hs = vec![
            ("Content-Type", "application/octet-stream"),
            ("Transfer-Encoding", "chunked"),
        ];
        if !trailers.is_empty() {
            hs.push(("Trailer", &names));
        }
        ex.write(&head_bytes(200, &hs))?;
        if ex.is_head() {
            return Ok(Next::KeepAlive);
        }
        for c in &chunks {
            if c.is_empty() {
                continue;
            }
            ex.write(format!("{:x}\r\n", c.len()).as_bytes())?;
            ex.write(c)?;
            ex.write(b"\r\n")?;
            ex.stream().flush()?;
        }
        let mut end = b"0\r\n".to_vec();
        for (k, v) in &trailers {
            end.extend_from_slice(format!("{k}: {v}\r\n").as_bytes());
        }
        end.extend_from_slice(b"\r\n");
        ex.write(&end)?;
        Ok(Next::KeepAlive)
    })
}

/// Wait `delay` before running `inner` (so before the response head).
pub fn slow(delay: Duration, inner: Handler) -> Handler {
    handler(move |ex| {
        ex.sleep(delay);
        inner(ex)
    })
}

/// Read the request and never answer (holds the connection until the origin
/// is dropped, at most 120 s).
pub fn never_respond() -> Handler {
    handler(|ex| {
        ex.read_body()?;
        ex.sleep(Duration::from_secs(120));
        Ok(Next::Close)
    })
}

/// 200 without Content-Length or chunking: the body ends when the origin closes.
pub fn close_delimited(body: &[u8]) -> Handler {
    let body = body.to_vec();
    handler(move |ex| {
        ex.read_body()?;
        ex.write(&head_bytes(
            200,
            &[("Content-Type", "text/plain"), ("Connection", "close")],
        ))?;
        if !ex.is_head() {
            ex.write(&body)?;
        }
        Ok(Next::Close)
    })
}

/// 200 with Content-Length `n`, the body generated on the fly (pattern bytes).
pub fn stream_bytes(n: u64) -> Handler {
    handler(move |ex| {
        ex.read_body()?;
        let len = n.to_string();
        ex.write(&head_bytes(
            200,
            &[
                ("Content-Type", "application/octet-stream"),
                ("Content-Length", &len),
            ],
        ))?;
        if !ex.is_head() {
            write_pattern(ex.stream(), n)?;
        }
        Ok(Next::KeepAlive)
    })
}

/// Reads the request body without storing it; answers 200 with the byte count
/// as the body and `x-sink-pattern-ok: true|false`.
pub fn sink() -> Handler {
    handler(|ex| {
        let check = ex.count_body()?;
        let body = check.count.to_string();
        let len = body.len().to_string();
        let ok = if check.ok() { "true" } else { "false" };
        let mut out = head_bytes(
            200,
            &[
                ("Content-Type", "text/plain"),
                ("Content-Length", &len),
                ("X-Sink-Pattern-Ok", ok),
            ],
        );
        out.extend_from_slice(body.as_bytes());
        ex.write(&out)?;
        Ok(Next::KeepAlive)
    })
}

/// Write these raw bytes as the "response", then close.
pub fn raw_response(bytes: &[u8]) -> Handler {
    let bytes = bytes.to_vec();
    handler(move |ex| {
        ex.read_body()?;
        ex.write(&bytes)?;
        Ok(Next::Close)
    })
}

/// Options for [`Origin::start_with`].
#[derive(Debug, Clone, Default)]
pub struct OriginOptions {
    /// Close a keep-alive connection after it has been idle this long
    /// (a server-side keep-alive timeout).
    pub idle_close: Option<Duration>,
}

/// An HTTP/1.1 origin server on 127.0.0.1:0, one thread per connection.
pub struct Origin {
    pub addr: SocketAddr,
    shared: Arc<OriginShared>,
}

impl Origin {
    pub fn start(h: Handler) -> Origin {
        Self::start_with(h, OriginOptions::default())
    }

    pub fn start_with(h: Handler, opts: OriginOptions) -> Origin {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind origin");
        let addr = listener.local_addr().unwrap();
        let shared = Arc::new(OriginShared {
            idle_close: opts.idle_close,
            ..Default::default()
        });
        let sh = shared.clone();
        thread::spawn(move || {
            for stream in listener.incoming() {
                if sh.stop.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(stream) = stream else { continue };
                sh.accepted.fetch_add(1, Ordering::SeqCst);
                let id = {
                    let mut c = sh.conns.lock().unwrap();
                    c.push(ConnStat::default());
                    c.len() - 1
                };
                if let Ok(s) = stream.try_clone() {
                    sh.open.lock().unwrap().push((id, s));
                }
                let (sh2, h2) = (sh.clone(), h.clone());
                thread::spawn(move || serve_conn(stream, id, &sh2, &h2));
            }
        });
        Origin { addr, shared }
    }

    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// `http://127.0.0.1:PORT`
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Connections accepted so far.
    pub fn accepted(&self) -> usize {
        self.shared.accepted.load(Ordering::SeqCst)
    }

    pub fn requests(&self) -> Vec<RequestRecord> {
        self.shared.requests.lock().unwrap().clone()
    }

    pub fn conns(&self) -> Vec<ConnStat> {
        self.shared.conns.lock().unwrap().clone()
    }

    /// Requests served on each accepted connection, in accept order.
    pub fn requests_per_conn(&self) -> Vec<usize> {
        self.conns().iter().map(|c| c.requests).collect()
    }

    /// Wait (bounded) until the origin has received `n` request heads.
    pub fn wait_requests(&self, n: usize, timeout: Duration) -> bool {
        wait_until(timeout, || self.shared.requests.lock().unwrap().len() >= n)
    }
}

impl Drop for Origin {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect_timeout(&self.addr, Duration::from_secs(1));
        for (_, s) in self.shared.open.lock().unwrap().drain(..) {
            let _ = s.shutdown(Shutdown::Both);
        }
    }
}

fn serve_conn(stream: TcpStream, id: usize, sh: &OriginShared, h: &Handler) {
    let _ = stream.set_read_timeout(Some(Duration::from_secs(30)));
    let _ = stream.set_write_timeout(Some(Duration::from_secs(30)));
    let _ = stream.set_nodelay(true);
    let mut conn = BufConn::new(stream);
    let mut served = 0usize;
    loop {
        if served > 0 {
            if let Some(idle) = sh.idle_close {
                let _ = conn.stream.set_read_timeout(Some(idle));
            }
        }
        let head = match conn.read_head() {
            Ok(Some(h)) => h,
            Ok(None) => {
                sh.conns.lock().unwrap()[id].peer_closed = true;
                break;
            }
            Err(e) => {
                if !timed_out(&e) {
                    sh.conns.lock().unwrap()[id].peer_closed = true;
                }
                break;
            }
        };
        let _ = conn.stream.set_read_timeout(Some(Duration::from_secs(30)));
        let mut hbuf = [httparse::EMPTY_HEADER; 256];
        let mut req = httparse::Request::new(&mut hbuf);
        match req.parse(&head) {
            Ok(httparse::Status::Complete(_)) => {}
            _ => {
                let _ = conn.stream.write_all(
                    b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
                );
                break;
            }
        }
        let headers: Vec<(String, String)> = req
            .headers
            .iter()
            .map(|h| {
                (
                    h.name.to_string(),
                    String::from_utf8_lossy(h.value).to_string(),
                )
            })
            .collect();
        let rec = RequestRecord {
            conn_id: id,
            method: req.method.unwrap_or("").to_string(),
            target: req.path.unwrap_or("").to_string(),
            version: req.version.unwrap_or(1),
            headers,
            raw_head: head.clone(),
            ..Default::default()
        };
        let framing = if has_token(&rec.headers, "transfer-encoding", "chunked") {
            BodyFraming::Chunked
        } else if let Some(cl) = header_value(&rec.headers, "content-length") {
            BodyFraming::Length(cl.trim().parse().unwrap_or(0))
        } else {
            BodyFraming::None
        };
        let expect_continue = header_value(&rec.headers, "expect")
            .is_some_and(|v| v.eq_ignore_ascii_case("100-continue"));
        let close_requested = has_token(&rec.headers, "connection", "close")
            || (rec.version == 0 && !has_token(&rec.headers, "connection", "keep-alive"));
        let index = {
            let mut r = sh.requests.lock().unwrap();
            r.push(rec.clone());
            r.len() - 1
        };
        sh.conns.lock().unwrap()[id].requests += 1;
        served += 1;
        let mut ex = Exchange {
            req: rec,
            index,
            conn: &mut conn,
            shared: sh,
            framing,
            body_done: false,
            expect_continue,
        };
        let next = h(&mut ex);
        // Drain a body the handler did not read, to keep the framing in sync.
        let drained = match next {
            Ok(Next::KeepAlive) => ex.read_body_with(&mut |_| {}),
            _ => Ok(0),
        };
        let _ = conn.stream.flush();
        match (next, drained) {
            (Ok(Next::KeepAlive), Ok(_)) if !close_requested => {}
            _ => break,
        }
    }
    let _ = conn.stream.shutdown(Shutdown::Both);
    // the clone kept for shutting down on drop goes too: a long test must not run
    // out of descriptors
    sh.open.lock().unwrap().retain(|(i, _)| *i != id);
    sh.conns.lock().unwrap()[id].ended = true;
}

// ---------------------------------------------------------------------------
// Raw TCP echo server (for CONNECT tunnels)
// ---------------------------------------------------------------------------

pub const ECHO_BANNER: &[u8] = b"220 echo ready\r\n";
pub const ECHO_FAREWELL: &[u8] = b"221 bye after EOF\r\n";

/// On accept it sends [`ECHO_BANNER`], then echoes every byte; when the client
/// half-closes it sends [`ECHO_FAREWELL`] and closes.
pub struct EchoServer {
    pub addr: SocketAddr,
    accepted: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
}

impl EchoServer {
    pub fn start() -> EchoServer {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind echo");
        let addr = listener.local_addr().unwrap();
        let accepted = Arc::new(AtomicUsize::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let (acc, st) = (accepted.clone(), stop.clone());
        thread::spawn(move || {
            for s in listener.incoming() {
                if st.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(mut s) = s else { continue };
                acc.fetch_add(1, Ordering::SeqCst);
                thread::spawn(move || {
                    let _ = s.set_read_timeout(Some(Duration::from_secs(30)));
                    let _ = s.set_nodelay(true);
                    if s.write_all(ECHO_BANNER).is_err() {
                        return;
                    }
                    let mut buf = [0u8; 64 * 1024];
                    loop {
                        match s.read(&mut buf) {
                            Ok(0) => {
                                let _ = s.write_all(ECHO_FAREWELL);
                                break;
                            }
                            Ok(n) => {
                                if s.write_all(&buf[..n]).is_err() {
                                    break;
                                }
                            }
                            Err(_) => break,
                        }
                    }
                    let _ = s.shutdown(Shutdown::Both);
                });
            }
        });
        EchoServer {
            addr,
            accepted,
            stop,
        }
    }

    pub fn accepted(&self) -> usize {
        self.accepted.load(Ordering::SeqCst)
    }
}

impl Drop for EchoServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect_timeout(&self.addr, Duration::from_secs(1));
    }
}

// ---------------------------------------------------------------------------
// Upstream addresses that fail in specific ways
// ---------------------------------------------------------------------------

/// A loopback port with nothing listening (bound, then released).
pub fn closed_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}

/// A listener whose accept queue is full, so new connects hang in SYN_SENT
/// (the SYN is dropped) until the connecting side gives up.
pub struct Blackhole {
    pub addr: SocketAddr,
    _listener: socket2::Socket,
    _fillers: Vec<TcpStream>,
}

impl Blackhole {
    pub fn start() -> Blackhole {
        use socket2::{Domain, Socket, Type};
        let s = Socket::new(Domain::IPV4, Type::STREAM, None).unwrap();
        s.bind(&"127.0.0.1:0".parse::<SocketAddr>().unwrap().into())
            .unwrap();
        s.listen(0).unwrap();
        let addr = s.local_addr().unwrap().as_socket().unwrap();
        let mut fillers = Vec::new();
        for _ in 0..16 {
            match TcpStream::connect_timeout(&addr, Duration::from_millis(300)) {
                Ok(c) => fillers.push(c),
                Err(_) => {
                    return Blackhole {
                        addr,
                        _listener: s,
                        _fillers: fillers,
                    }
                }
            }
        }
        panic!("could not fill the accept queue of a backlog-0 listener");
    }
}

// ---------------------------------------------------------------------------
// Raw HTTP/1 client
// ---------------------------------------------------------------------------

/// A parsed HTTP/1 response.
#[derive(Debug, Clone, Default)]
pub struct Response {
    /// 0 for HTTP/1.0, 1 for HTTP/1.1
    pub version: u8,
    pub status: u16,
    pub reason: String,
    pub headers: Vec<(String, String)>,
    pub raw_head: Vec<u8>,
    pub body: Vec<u8>,
    pub trailers: Vec<(String, String)>,
}

impl Response {
    pub fn header(&self, name: &str) -> Option<&str> {
        header_value(&self.headers, name)
    }

    pub fn has_token(&self, name: &str, token: &str) -> bool {
        has_token(&self.headers, name, token)
    }

    pub fn body_str(&self) -> String {
        String::from_utf8_lossy(&self.body).to_string()
    }

    pub fn head_str(&self) -> String {
        String::from_utf8_lossy(&self.raw_head).to_string()
    }
}

/// Parse a response head (status line + fields).
pub fn parse_response_head(head: &[u8]) -> io::Result<Response> {
    let mut hbuf = [httparse::EMPTY_HEADER; 256];
    let mut r = httparse::Response::new(&mut hbuf);
    match r.parse(head) {
        Ok(httparse::Status::Complete(_)) => Ok(Response {
            version: r.version.unwrap_or(1),
            status: r.code.unwrap_or(0),
            reason: r.reason.unwrap_or("").to_string(),
            headers: r
                .headers
                .iter()
                .map(|h| {
                    (
                        h.name.to_string(),
                        String::from_utf8_lossy(h.value).to_string(),
                    )
                })
                .collect(),
            raw_head: head.to_vec(),
            ..Default::default()
        }),
        other => Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!(
                "unparsable response head ({other:?}): {:?}",
                String::from_utf8_lossy(head)
            ),
        )),
    }
}

/// A raw client connection with bounded reads.
pub struct Client {
    conn: BufConn,
}

impl Client {
    pub fn connect(addr: SocketAddr) -> Client {
        Self::try_connect(addr).unwrap_or_else(|e| panic!("connect {addr}: {e}"))
    }

    pub fn try_connect(addr: SocketAddr) -> io::Result<Client> {
        let s = TcpStream::connect_timeout(&addr, IO_WAIT)?;
        s.set_read_timeout(Some(IO_WAIT))?;
        s.set_write_timeout(Some(IO_WAIT))?;
        s.set_nodelay(true)?;
        Ok(Client {
            conn: BufConn::new(s),
        })
    }

    pub fn stream(&mut self) -> &mut TcpStream {
        &mut self.conn.stream
    }

    pub fn set_read_timeout(&mut self, d: Duration) {
        self.conn.stream.set_read_timeout(Some(d)).unwrap();
    }

    pub fn send(&mut self, bytes: &[u8]) {
        self.conn
            .stream
            .write_all(bytes)
            .unwrap_or_else(|e| panic!("send: {e}"));
    }

    pub fn try_send(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.conn.stream.write_all(bytes)
    }

    /// Read the next response (1xx included), framing the body as a response to
    /// `method`. Bodies delimited by close are read to EOF.
    pub fn try_read_response_to(&mut self, method: &str) -> io::Result<Response> {
        let head = self.conn.read_head()?.ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "connection closed before any response byte",
            )
        })?;
        let mut resp = parse_response_head(&head)?;
        let no_body = method.eq_ignore_ascii_case("HEAD")
            || (100..200).contains(&resp.status)
            || resp.status == 204
            || resp.status == 304
            || (method.eq_ignore_ascii_case("CONNECT") && (200..300).contains(&resp.status));
        if no_body {
            return Ok(resp);
        }
        let mut body = Vec::new();
        if resp.has_token("transfer-encoding", "chunked") {
            resp.trailers = self.conn.read_chunked(&mut |d| body.extend_from_slice(d))?;
        } else if let Some(cl) = resp.header("content-length") {
            let n: u64 = cl
                .trim()
                .parse()
                .map_err(|_| io::Error::new(io::ErrorKind::InvalidData, "bad content-length"))?;
            self.conn
                .read_exact_to(n, &mut |d| body.extend_from_slice(d))?;
        } else {
            self.conn.read_to_eof(&mut |d| body.extend_from_slice(d))?;
        }
        resp.body = body;
        Ok(resp)
    }

    pub fn read_response_to(&mut self, method: &str) -> Response {
        self.try_read_response_to(method)
            .unwrap_or_else(|e| panic!("reading response to {method}: {e}"))
    }

    /// Read the next response to a GET-like request.
    pub fn read_response(&mut self) -> Response {
        self.read_response_to("GET")
    }

    /// Read a response head only (body left unread).
    pub fn read_response_head(&mut self) -> Response {
        let head = self
            .conn
            .read_head()
            .and_then(|h| h.ok_or_else(|| io::ErrorKind::UnexpectedEof.into()))
            .unwrap_or_else(|e| panic!("reading response head: {e}"));
        parse_response_head(&head).unwrap()
    }

    /// Read exactly `n` body bytes into `sink` (after `read_response_head`).
    pub fn read_exact_to(&mut self, n: u64, sink: &mut dyn FnMut(&[u8])) -> io::Result<()> {
        self.conn.read_exact_to(n, sink)
    }

    /// Send a request and read its response.
    pub fn request(&mut self, raw: &str) -> Response {
        self.send(raw.as_bytes());
        let method = raw.split(' ').next().unwrap_or("GET").to_string();
        self.read_response_to(&method)
    }

    /// Read whatever arrives until the peer closes. `Err(TimedOut)` (with the
    /// bytes so far in the message) if it is still open after `timeout`.
    pub fn read_until_close(&mut self, timeout: Duration) -> io::Result<Vec<u8>> {
        let deadline = Instant::now() + timeout;
        let mut out = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!(
                        "still open after {timeout:?}; got {:?}",
                        String::from_utf8_lossy(&out)
                    ),
                ));
            }
            self.conn.stream.set_read_timeout(Some(left))?;
            if !self.conn.buffered().is_empty() {
                out.extend_from_slice(self.conn.buffered());
                let n = self.conn.buffered().len();
                self.conn.consume(n);
            }
            match self.conn.fill() {
                Ok(0) => return Ok(out),
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::ConnectionReset => return Ok(out),
                Err(e) if timed_out(&e) => {}
                Err(e) => return Err(e),
            }
        }
    }

    /// True if the peer closes the connection within `timeout` (any bytes
    /// received before the close are ignored).
    pub fn closed_within(&mut self, timeout: Duration) -> bool {
        self.read_until_close(timeout).is_ok()
    }
}

// ---------------------------------------------------------------------------
// curl
// ---------------------------------------------------------------------------

#[derive(Debug)]
pub struct CurlOutput {
    /// curl's exit code (0 = success; 22 = HTTP error with -f, 28 = timeout, ...)
    pub code: i32,
    /// HTTP status of the last response (0 if none).
    pub status: u16,
    pub body: Vec<u8>,
    pub stderr: String,
}

impl CurlOutput {
    pub fn body_str(&self) -> String {
        String::from_utf8_lossy(&self.body).to_string()
    }
}

const STATUS_MARK: &str = "\n@@curl-status=";

/// Run `curl -sS --max-time 30 ARGS`, with proxy environment variables removed.
/// The body goes to `body`; the HTTP status of the last transfer to `status`.
pub fn curl(args: &[&str]) -> CurlOutput {
    let out = Command::new("curl")
        .args(["-sS", "--max-time", "30", "-w"])
        .arg(format!("{STATUS_MARK}%{{http_code}}"))
        .args(args)
        .env_remove("http_proxy")
        .env_remove("https_proxy")
        .env_remove("HTTP_PROXY")
        .env_remove("HTTPS_PROXY")
        .env_remove("all_proxy")
        .env_remove("ALL_PROXY")
        .env_remove("no_proxy")
        .env_remove("NO_PROXY")
        .stdin(Stdio::null())
        .output()
        .expect("run curl (is it installed?)");
    let mut body = out.stdout;
    let mut status = 0;
    if let Some(i) = find_last(&body, STATUS_MARK.as_bytes()) {
        status = String::from_utf8_lossy(&body[i + STATUS_MARK.len()..])
            .trim()
            .parse()
            .unwrap_or(0);
        body.truncate(i);
    }
    CurlOutput {
        code: out.status.code().unwrap_or(-1),
        status,
        body,
        stderr: String::from_utf8_lossy(&out.stderr).to_string(),
    }
}

fn find_last(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).rposition(|w| w == needle)
}

/// A temporary directory removed on drop.
pub struct TempDir(pub std::path::PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> TempDir {
        static N: AtomicUsize = AtomicUsize::new(0);
        let p = std::env::temp_dir().join(format!(
            "luring-test-{tag}-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::SeqCst)
        ));
        std::fs::create_dir_all(&p).unwrap();
        TempDir(p)
    }

    pub fn path(&self, name: &str) -> std::path::PathBuf {
        self.0.join(name)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

// ---------------------------------------------------------------------------
// TLS: a test PKI made with the openssl CLI, an HTTPS origin, bounded commands
// ---------------------------------------------------------------------------

/// Output of [`run_cmd`]. `code` is None when the command was killed at the bound.
#[derive(Debug)]
pub struct CmdOutput {
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

impl CmdOutput {
    pub fn ok(&self) -> bool {
        self.code == Some(0)
    }
}

/// Fails the test unless python3 imports `module` (scripts/test.sh installs the
/// python packages the tests use).
pub fn need_python_module(module: &str) {
    let probe = run_cmd(
        "python3",
        &["-c", &format!("import {module}")],
        b"",
        Duration::from_secs(30),
    );
    assert!(
        probe.ok(),
        "python {module} is needed (scripts/test.sh installs it): {}",
        probe.stderr
    );
}

/// Run `program ARGS` with `stdin` as its input; killed after `timeout`.
pub fn run_cmd(program: &str, args: &[&str], stdin: &[u8], timeout: Duration) -> CmdOutput {
    let mut child = Command::new(program)
        .args(args)
        .env_remove("http_proxy")
        .env_remove("https_proxy")
        .env_remove("HTTP_PROXY")
        .env_remove("HTTPS_PROXY")
        .env_remove("all_proxy")
        .env_remove("ALL_PROXY")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("spawn {program}: {e} (is it installed?)"));
    let mut input = child.stdin.take().unwrap();
    let data = stdin.to_vec();
    let writer = thread::spawn(move || {
        let _ = input.write_all(&data);
    });
    let out = Capture::spawn(child.stdout.take().unwrap());
    let err = Capture::spawn(child.stderr.take().unwrap());
    let mut st = None;
    wait_until(timeout, || {
        st = child.try_wait().ok().flatten();
        st.is_some()
    });
    if st.is_none() {
        let _ = child.kill();
        let _ = child.wait();
    }
    let _ = writer.join();
    out.wait(Duration::from_secs(2), |_| false);
    err.wait(Duration::from_secs(2), |_| false);
    CmdOutput {
        code: st.and_then(|s| s.code()),
        stdout: out.text(),
        stderr: err.text(),
    }
}

/// A throwaway PKI: a CA and a server certificate for `localhost` / 127.0.0.1
/// (subject `CN=luring-test-origin`), made with the openssl command line.
pub struct TestPki {
    pub dir: TempDir,
    pub ca_pem: std::path::PathBuf,
    pub server_pem: std::path::PathBuf,
    pub server_key: std::path::PathBuf,
}

/// Subject CN of the [`TestPki`] server certificate.
pub const TEST_ORIGIN_CN: &str = "luring-test-origin";
/// Subject CN of the [`TestPki`] CA.
pub const TEST_CA_CN: &str = "luring test CA";

impl TestPki {
    pub fn new() -> TestPki {
        let dir = TempDir::new("pki");
        let p = |n: &str| dir.path(n).to_string_lossy().to_string();
        let (ca_key, ca_pem, key, csr, pem, ext) = (
            p("ca.key"),
            p("ca.pem"),
            p("server.key"),
            p("server.csr"),
            p("server.pem"),
            p("ext.cnf"),
        );
        std::fs::write(
            &ext,
            "basicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature\n\
             extendedKeyUsage=serverAuth\nsubjectAltName=DNS:localhost,IP:127.0.0.1\n",
        )
        .unwrap();
        let ca_subj = format!("/CN={TEST_CA_CN}");
        let srv_subj = format!("/CN={TEST_ORIGIN_CN}");
        let steps: Vec<Vec<&str>> = vec![
            vec![
                "req",
                "-x509",
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:P-256",
                "-nodes",
                "-keyout",
                &ca_key,
                "-out",
                &ca_pem,
                "-days",
                "30",
                "-subj",
                &ca_subj,
                "-addext",
                "basicConstraints=critical,CA:TRUE",
                "-addext",
                "keyUsage=critical,keyCertSign,cRLSign",
            ],
            vec![
                "req",
                "-new",
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:P-256",
                "-nodes",
                "-keyout",
                &key,
                "-out",
                &csr,
                "-subj",
                &srv_subj,
            ],
            vec![
                "x509",
                "-req",
                "-in",
                &csr,
                "-CA",
                &ca_pem,
                "-CAkey",
                &ca_key,
                "-CAcreateserial",
                "-out",
                &pem,
                "-days",
                "30",
                "-extfile",
                &ext,
            ],
        ];
        for args in steps {
            let o = run_cmd("openssl", &args, b"", Duration::from_secs(30));
            assert!(o.ok(), "openssl {args:?}: {o:?}");
        }
        TestPki {
            ca_pem: dir.path("ca.pem"),
            server_pem: dir.path("server.pem"),
            server_key: dir.path("server.key"),
            dir,
        }
    }

    /// The rustls server config of the test origin, offering `alpn`.
    pub fn server_config(&self, alpn: &[&[u8]]) -> Arc<rustls::ServerConfig> {
        let certs: Vec<_> = rustls_pemfile::certs(&mut io::BufReader::new(
            std::fs::File::open(&self.server_pem).unwrap(),
        ))
        .collect::<Result<_, _>>()
        .unwrap();
        let key = rustls_pemfile::private_key(&mut io::BufReader::new(
            std::fs::File::open(&self.server_key).unwrap(),
        ))
        .unwrap()
        .expect("a private key in server.key");
        let mut cfg = rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .unwrap();
        cfg.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
        Arc::new(cfg)
    }
}

/// What [`TlsOrigin`] received: request line, and the connection number it came on.
#[derive(Debug, Clone)]
pub struct TlsRequest {
    pub line: String,
    pub conn: usize,
    /// Content-Length bytes read after the head.
    pub body_len: u64,
    /// The body was the deterministic pattern ([`write_pattern`]).
    pub body_is_pattern: bool,
}

/// An HTTPS/1.1 origin on 127.0.0.1:0 (rustls, thread per connection, keep-alive).
/// Answers every request with 200 and the body `tls-origin says: <request target>`,
/// except `GET /big/N`: N bytes of the deterministic pattern. Request bodies
/// (Content-Length) are read and checked against the pattern.
pub struct TlsOrigin {
    pub addr: SocketAddr,
    requests: Arc<Mutex<Vec<TlsRequest>>>,
    handshakes: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
}

impl TlsOrigin {
    pub fn start(pki: &TestPki) -> TlsOrigin {
        TlsOrigin::start_with_alpn(pki, &[b"http/1.1"])
    }

    /// An origin that offers `alpn` (it still answers in HTTP/1.1).
    pub fn start_with_alpn(pki: &TestPki, alpn: &[&[u8]]) -> TlsOrigin {
        let cfg = pki.server_config(alpn);
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind tls origin");
        let addr = listener.local_addr().unwrap();
        let requests = Arc::new(Mutex::new(Vec::new()));
        let handshakes = Arc::new(AtomicUsize::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let (rq, hs, st) = (requests.clone(), handshakes.clone(), stop.clone());
        thread::spawn(move || {
            for (n, s) in listener.incoming().enumerate() {
                if st.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(s) = s else { continue };
                let (cfg, rq, hs) = (cfg.clone(), rq.clone(), hs.clone());
                thread::spawn(move || {
                    let _ = serve_tls_conn(s, cfg, n, &rq, &hs);
                });
            }
        });
        TlsOrigin {
            addr,
            requests,
            handshakes,
            stop,
        }
    }

    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    pub fn requests(&self) -> Vec<TlsRequest> {
        self.requests.lock().unwrap().clone()
    }

    /// Completed TLS handshakes.
    pub fn handshakes(&self) -> usize {
        self.handshakes.load(Ordering::SeqCst)
    }
}

impl Drop for TlsOrigin {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect_timeout(&self.addr, Duration::from_secs(1));
    }
}

fn serve_tls_conn(
    s: TcpStream,
    cfg: Arc<rustls::ServerConfig>,
    n: usize,
    rq: &Mutex<Vec<TlsRequest>>,
    hs: &AtomicUsize,
) -> io::Result<()> {
    s.set_read_timeout(Some(Duration::from_secs(30)))?;
    let conn = rustls::ServerConnection::new(cfg).map_err(io::Error::other)?;
    let mut tls = rustls::StreamOwned::new(conn, s);
    let mut buf = Vec::new();
    let mut chunk = [0u8; 16 * 1024];
    let mut counted = false;
    loop {
        while find(&buf, b"\r\n\r\n").is_none() {
            let got = tls.read(&mut chunk)?;
            if !counted && !tls.conn.is_handshaking() {
                counted = true;
                hs.fetch_add(1, Ordering::SeqCst);
            }
            if got == 0 {
                return Ok(());
            }
            buf.extend_from_slice(&chunk[..got]);
        }
        let end = find(&buf, b"\r\n\r\n").unwrap() + 4;
        let head = String::from_utf8_lossy(&buf[..end]).to_string();
        buf.drain(..end);
        let line = head.lines().next().unwrap_or("").to_string();
        let target = line.split(' ').nth(1).unwrap_or("").to_string();
        let content_length: u64 = head
            .lines()
            .find_map(|l| {
                let (k, v) = l.split_once(':')?;
                k.trim()
                    .eq_ignore_ascii_case("content-length")
                    .then(|| v.trim().parse().ok())?
            })
            .unwrap_or(0);
        // request body: counted and checked against the pattern
        let mut check = PatternCheck::default();
        let from_buf = (content_length as usize).min(buf.len());
        check.feed(&buf[..from_buf]);
        buf.drain(..from_buf);
        while check.count < content_length {
            let want = ((content_length - check.count) as usize).min(chunk.len());
            let got = tls.read(&mut chunk[..want])?;
            if got == 0 {
                return Ok(());
            }
            check.feed(&chunk[..got]);
        }
        rq.lock().unwrap().push(TlsRequest {
            line,
            conn: n,
            body_len: check.count,
            body_is_pattern: check.ok(),
        });
        // GET /big/N answers N pattern bytes; anything else a short text
        if let Some(n) = target
            .strip_prefix("/big/")
            .and_then(|v| v.parse::<u64>().ok())
        {
            let head = format!("HTTP/1.1 200 OK\r\nContent-Length: {n}\r\n\r\n");
            tls.write_all(head.as_bytes())?;
            write_pattern(&mut tls, n)?;
        } else {
            let body = format!("tls-origin says: {target}");
            let resp = format!(
                "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: {}\r\n\r\n{body}",
                body.len()
            );
            tls.write_all(resp.as_bytes())?;
        }
        tls.flush()?;
    }
}

/// Raw TCP echo on 127.0.0.1:0 that never speaks first (unlike [`EchoServer`]);
/// records the bytes each connection received.
pub struct QuietEcho {
    pub addr: SocketAddr,
    received: Arc<Mutex<Vec<Vec<u8>>>>,
    stop: Arc<AtomicBool>,
}

impl QuietEcho {
    pub fn start() -> QuietEcho {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind quiet echo");
        let addr = listener.local_addr().unwrap();
        let received = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let (rc, st) = (received.clone(), stop.clone());
        thread::spawn(move || {
            for s in listener.incoming() {
                if st.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(mut s) = s else { continue };
                let idx = {
                    let mut r = rc.lock().unwrap();
                    r.push(Vec::new());
                    r.len() - 1
                };
                let rc = rc.clone();
                thread::spawn(move || {
                    let _ = s.set_read_timeout(Some(Duration::from_secs(30)));
                    let mut buf = [0u8; 16 * 1024];
                    while let Ok(n) = s.read(&mut buf) {
                        if n == 0 {
                            break;
                        }
                        rc.lock().unwrap()[idx].extend_from_slice(&buf[..n]);
                        if s.write_all(&buf[..n]).is_err() {
                            break;
                        }
                    }
                    let _ = s.shutdown(Shutdown::Both);
                });
            }
        });
        QuietEcho {
            addr,
            received,
            stop,
        }
    }

    /// Bytes received, one entry per accepted connection.
    pub fn received(&self) -> Vec<Vec<u8>> {
        self.received.lock().unwrap().clone()
    }
}

impl Drop for QuietEcho {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect_timeout(&self.addr, Duration::from_secs(1));
    }
}

/// A genuine ClientHello (rustls client, SNI `sni`, ALPN http/1.1) as wire bytes.
pub fn client_hello_bytes(sni: &str) -> Vec<u8> {
    let mut cfg = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(rustls::RootCertStore::empty())
    .with_no_client_auth();
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    let name = rustls::pki_types::ServerName::try_from(sni.to_string()).unwrap();
    let mut conn = rustls::ClientConnection::new(Arc::new(cfg), name).unwrap();
    let mut out = Vec::new();
    while conn.wants_write() {
        conn.write_tls(&mut out).unwrap();
    }
    out
}

/// First PEM certificate block in `text` (e.g. `openssl s_client -showcerts` output).
pub fn first_pem_cert(text: &str) -> Option<String> {
    let start = text.find("-----BEGIN CERTIFICATE-----")?;
    let end_mark = "-----END CERTIFICATE-----";
    let end = text[start..].find(end_mark)? + start + end_mark.len();
    Some(text[start..end].to_string() + "\n")
}

/// A confdir with the luring CA exported as PEM (`luring ca export`).
pub struct Conf {
    pub dir: TempDir,
    pub ca: std::path::PathBuf,
}

impl Conf {
    pub fn new() -> Conf {
        let dir = TempDir::new("tlsconf");
        let ca = dir.path("exported-ca.pem");
        let conf = dir.path("conf");
        let (st, out, err) = run_luring(
            &[
                "ca",
                "export",
                "--confdir",
                conf.to_str().unwrap(),
                "--format",
                "pem",
                "--out",
                ca.to_str().unwrap(),
            ],
            Duration::from_secs(30),
        );
        assert!(
            st.is_some_and(|s| s.success()),
            "luring ca export: {st:?} {out} {err}"
        );
        Conf { dir, ca }
    }

    pub fn confdir(&self) -> String {
        self.dir.path("conf").to_string_lossy().to_string()
    }

    pub fn ca(&self) -> &str {
        self.ca.to_str().unwrap()
    }

    pub fn file(&self, name: &str) -> std::path::PathBuf {
        self.dir.path("conf").join(name)
    }
}

/// A python `websockets` server echoing every message, on 127.0.0.1 for 30 s at most.
const WS_ECHO_PY: &str = r#"
import asyncio
import websockets

async def echo(ws):
    async for m in ws:
        await ws.send(m)

async def main():
    async with websockets.serve(echo, "127.0.0.1", 0) as server:
        print(server.sockets[0].getsockname()[1], flush=True)
        await asyncio.sleep(30)

asyncio.run(main())
"#;

/// Starts a python `websockets` echo server (scripts/test.sh installs the package):
/// the child, to kill, and its port.
pub fn python_ws_echo() -> (Child, u16) {
    let mut server = Command::new("python3")
        .args(["-c", WS_ECHO_PY])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("start the websockets server");
    let mut line = String::new();
    let out = server.stdout.take().expect("server stdout");
    io::BufRead::read_line(&mut io::BufReader::new(out), &mut line).unwrap();
    let port = line.trim().parse().expect("server port");
    (server, port)
}

/// A python helper process whose first stdout line is the port it listens on; the
/// lines after it are kept (and the pipe drained, so the process never blocks on it).
/// Killed on drop.
pub struct Py {
    child: Child,
    /// The port the helper printed.
    pub port: u16,
    lines: Arc<Mutex<Vec<String>>>,
}

impl Py {
    /// Runs `python3 -c script args...` and waits for its port line.
    pub fn start(script: &str, args: &[&str]) -> Py {
        use std::io::{BufRead, BufReader};
        let mut child = Command::new("python3")
            .args(["-c", script])
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("python3 (scripts/test.sh installs the modules the tests use)");
        let mut out = BufReader::new(child.stdout.take().unwrap());
        let mut line = String::new();
        out.read_line(&mut line).unwrap();
        let port = line.trim().parse().expect("helper's port");
        let lines = Arc::new(Mutex::new(Vec::new()));
        let keep = lines.clone();
        thread::spawn(move || {
            for l in out.lines().map_while(Result::ok) {
                keep.lock().unwrap().push(l);
            }
        });
        Py { child, port, lines }
    }

    /// The lines printed after the port, so far.
    pub fn lines(&self) -> Vec<String> {
        self.lines.lock().unwrap().clone()
    }
}

impl Drop for Py {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
