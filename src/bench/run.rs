//! `luring bench run`: the recorded requests against each target, in interleaved
//! rounds with the same schedule, then the table and the report directory.

use super::dial::{connect_request, host_of, server_name, ClientTls, Dialer, Endpoint};
use super::driver::{drive, DriveConfig};
use super::prepared::Prepared;
use super::report::{table, write_dir, TargetReport};
use super::schedule::parse_duration;
use super::schedule::Plan;
use clap::Args;
use std::io::Write;
use std::net::{SocketAddr, ToSocketAddrs};
use std::path::PathBuf;
use std::rc::Rc;
use std::time::Duration;

/// `luring bench run` flags.
#[derive(Args, Debug, Clone)]
pub struct RunArgs {
    /// The recording: a flow file, HAR, .zhar or mitmdump file.
    pub file: PathBuf,
    /// A reverse proxy or direct target, [NAME=]URL, repeatable: http://HOST:PORT
    /// (HTTP/1.1), h2c://HOST:PORT (HTTP/2, prior knowledge), https://HOST:PORT
    /// (HTTP/1.1 over TLS) or h2://HOST:PORT (HTTP/2 over TLS); the recorded Host
    /// (authority) is kept and is the TLS server name.
    #[arg(long = "target", value_name = "[NAME=]URL")]
    pub targets: Vec<String>,
    /// A forward proxy target, [NAME=]http://HOST:PORT (repeatable): recorded http
    /// requests in absolute-form, https ones as CONNECT then TLS to the recorded host.
    #[arg(long = "proxy", value_name = "[NAME=]URL")]
    pub proxies: Vec<String>,
    /// A PEM CA file trusted for TLS targets and tunnels, besides the public roots
    /// (repeatable).
    #[arg(long, value_name = "FILE")]
    pub cacert: Vec<PathBuf>,
    /// Do not verify TLS certificates.
    #[arg(long, short = 'k')]
    pub insecure: bool,
    /// Compare every response body (framing removed) with the recorded one; a
    /// different body counts as error "body".
    #[arg(long)]
    pub check_bodies: bool,
    /// Open loop at R requests/s; A:B with --step ramps from A to B.
    #[arg(long, value_name = "R")]
    pub rate: Option<String>,
    /// With --rate A:B: the rate added and how often, e.g. 1000/10s.
    #[arg(long, value_name = "R/D")]
    pub step: Option<String>,
    /// With --rate: Poisson arrivals instead of even spacing.
    #[arg(long)]
    pub poisson: bool,
    /// Open loop at the recorded arrival times divided by X.
    #[arg(long, value_name = "X", conflicts_with = "rate")]
    pub speed: Option<f64>,
    /// With --speed: longest gap kept between recorded requests.
    #[arg(long, default_value = "1s", value_parser = parse_duration)]
    pub max_gap: Duration,
    /// Connections per target: the in-flight cap of an open loop, the concurrency of
    /// a closed loop (no --rate or --speed).
    #[arg(long, value_name = "N")]
    pub connections: Option<usize>,
    /// Measured time per target and round.
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    pub duration: Duration,
    /// Send each recorded request exactly once (no warm-up).
    #[arg(long)]
    pub once: bool,
    /// Warm-up before each measured window, not counted.
    #[arg(long, default_value = "2s", value_parser = parse_duration)]
    pub warmup: Duration,
    /// Rounds: targets run A B A B ... with the same schedule.
    #[arg(long, default_value_t = 1)]
    pub rounds: usize,
    /// Watch a process's CPU for a target: NAME=PID (repeatable).
    #[arg(long = "pid", value_name = "NAME=PID")]
    pub pids: Vec<String>,
    /// A header field set on every request, "Name: value" (repeatable): replaces the
    /// recorded field of that name (redacted values) or is added.
    #[arg(long = "header", short = 'H', value_name = "NAME: VALUE")]
    pub headers: Vec<String>,
    /// pool: requests go on a pool of --connections keep-alive connections; recorded:
    /// the requests of each recorded client connection go in order on one connection
    /// of their own, opened and closed where the recording's was (--connections caps
    /// how many are open at once).
    #[arg(long, default_value = "pool", value_parser = ["pool", "recorded"])]
    pub conn_mode: String,
    /// HTTP/2 (h2c:// and h2:// targets, h2 tunnels through --proxy): concurrent
    /// streams per connection.
    #[arg(long, default_value_t = 1, value_name = "M")]
    pub streams: usize,
    /// Seed of the Poisson arrivals.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Per-request timeout.
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    pub timeout: Duration,
    /// Write report.json and .hgrm files into DIR.
    #[arg(long, value_name = "DIR")]
    pub report: Option<PathBuf>,
}

/// One target to drive.
#[derive(Debug, Clone)]
pub struct Target {
    /// Name in the table.
    pub name: String,
    /// URL as given.
    pub url: String,
    /// Where to connect.
    pub addr: SocketAddr,
    /// Absolute-form requests (a forward proxy).
    pub absolute: bool,
    /// HTTP/2: h2c with prior knowledge (`h2c://`) or by ALPN over TLS (`h2://`).
    pub h2: bool,
    /// TLS to the target (`https://`, `h2://`).
    pub tls: bool,
    /// Process whose CPU is watched.
    pub pid: Option<u32>,
}

/// Parses `[NAME=]http://HOST:PORT[/...]`.
pub fn parse_target(s: &str, absolute: bool, n: usize) -> Result<Target, String> {
    let (name, url) = match s.split_once('=') {
        Some((n, u)) if !n.contains(':') => (n.to_string(), u),
        _ => (format!("target{}", n + 1), s),
    };
    let (scheme, rest) = url.split_once("://").unwrap_or(("", url));
    let (h2, tls, port) = match scheme {
        "http" => (false, false, 80),
        "h2c" if !absolute => (true, false, 80),
        "https" if !absolute => (false, true, 443),
        "h2" if !absolute => (true, true, 443),
        _ if absolute => return Err(format!("{url}: a forward proxy is an http:// URL")),
        _ => {
            return Err(format!(
                "{url}: want http://, h2c://, https:// or h2:// (HTTP/2 over TLS)"
            ))
        }
    };
    let hostport = rest.split('/').next().unwrap_or("");
    let hostport = if host_of(hostport) == hostport.trim_matches(['[', ']']) {
        format!("{hostport}:{port}")
    } else {
        hostport.to_string()
    };
    let addr = hostport
        .to_socket_addrs()
        .map_err(|e| format!("{url}: {e}"))?
        .next()
        .ok_or_else(|| format!("{url}: no address"))?;
    Ok(Target {
        name,
        url: url.to_string(),
        addr,
        absolute,
        h2,
        tls,
        pid: None,
    })
}

/// The drive settings the flags ask for.
fn drive_config(a: &RunArgs) -> Result<DriveConfig, String> {
    let plan = match (a.rate.as_deref(), a.speed) {
        (Some(r), _) => Some(rate_plan(r, a.step.as_deref(), a.poisson)?),
        (None, Some(x)) if x > 0.0 => Some(Plan::Recorded {
            speed: x,
            max_gap_ns: a.max_gap.as_nanos() as u64,
        }),
        (None, Some(_)) => return Err("--speed must be positive".into()),
        (None, None) => None,
    };
    if plan.is_none() && a.connections.is_none() {
        return Err("say --rate R, --speed X or --connections N (closed loop)".into());
    }
    Ok(DriveConfig {
        plan,
        // enough for 64 requests in flight; a full pool is reported, never hidden
        connections: a.connections.unwrap_or(64),
        duration_ns: a.duration.as_nanos() as u64,
        warmup_ns: a.warmup.as_nanos() as u64,
        once: a.once,
        seed: a.seed,
        timeout: a.timeout,
        h2: false,
        streams: a.streams.max(1),
        lanes: None,
    })
}

/// `--rate R` or `--rate A:B --step R/D`.
fn rate_plan(rate: &str, step: Option<&str>, poisson: bool) -> Result<Plan, String> {
    let num = |s: &str| -> Result<f64, String> {
        s.trim()
            .parse::<f64>()
            .ok()
            .filter(|v| *v > 0.0 && v.is_finite())
            .ok_or_else(|| format!("not a positive rate: {s}"))
    };
    match (rate.split_once(':'), step) {
        (None, None) => Ok(Plan::Rate {
            rate: num(rate)?,
            poisson,
        }),
        (Some((from, to)), Some(step)) => {
            let (by, every) = step
                .split_once('/')
                .ok_or("--step wants R/D, e.g. 1000/10s")?;
            Ok(Plan::Ramp {
                from: num(from)?,
                to: num(to)?,
                step: num(by)?,
                every_ns: parse_duration(every)?.as_nanos().max(1) as u64,
            })
        }
        (None, Some(_)) => Err("--step goes with --rate A:B".into()),
        (Some(_), None) => Err("--rate A:B needs --step R/D".into()),
    }
}

/// Runs every target for every round; the reports, in target order.
pub fn measure(
    a: &RunArgs,
    flows: &[crate::flows::record::HttpFlow],
    targets: &[Target],
) -> Result<Vec<TargetReport>, String> {
    let mut cfg = drive_config(a)?;
    let flows = replayable(flows, targets.iter().any(|t| t.h2))?;
    let starts: Vec<u64> = flows.iter().map(|f| f.times.request_start).collect();
    if a.conn_mode == "recorded" {
        let conns: Vec<u64> = flows.iter().map(|f| f.conn).collect();
        cfg.lanes = Some(Rc::new(super::lanes::Lanes::new(&conns)));
    }
    let set: Vec<(String, String)> = a
        .headers
        .iter()
        .map(|h| {
            h.split_once(':')
                .map(|(n, v)| (n.trim().to_string(), v.trim().to_string()))
                .ok_or_else(|| format!("--header {h}: want \"Name: value\""))
        })
        .collect::<Result<_, _>>()?;
    let mut prepared: Vec<(Route, Rc<Vec<Prepared>>, Vec<Endpoint>)> = Vec::new();
    let mut dialers = Vec::new();
    for t in targets {
        let route = Route::of(t);
        if !prepared.iter().any(|p| p.0 == route) {
            let (reqs, eps) = prepare(&flows, &set, route, a.check_bodies)?;
            prepared.push((route, Rc::new(reqs), eps));
        }
        let (_, reqs, eps) = prepared.iter().find(|p| p.0 == route).expect("made above");
        let c = ClientTls {
            cacert: a.cacert.clone(),
            insecure: a.insecure,
        };
        let tls = match eps.iter().any(|e| e.tls.is_some() && !e.h2) {
            true if t.h2 => Some(c.connector(&[b"h2"])?),
            true => Some(c.connector(&[b"http/1.1"])?),
            false => None,
        };
        let tls_h2 = match eps.iter().any(|e| e.h2) {
            true => Some(c.connector(&[b"h2"])?),
            false => None,
        };
        let d = Dialer {
            addr: t.addr,
            endpoints: eps.clone(),
            tls,
            tls_h2,
        };
        dialers.push((reqs.clone(), Rc::new(d)));
    }
    let mut reports: Vec<TargetReport> = targets
        .iter()
        .map(|t| TargetReport {
            name: t.name.clone(),
            url: t.url.clone(),
            rounds: Vec::new(),
            target_cpu_us: Vec::new(),
            driver_cpu_us: Vec::new(),
        })
        .collect();
    let mut err = std::io::stderr();
    for round in 0..a.rounds.max(1) {
        for ((t, rep), (reqs, dialer)) in targets.iter().zip(reports.iter_mut()).zip(&dialers) {
            let cfg = DriveConfig {
                h2: t.h2,
                ..cfg.clone()
            };
            let bar = progress_bar(&format!("round {} {}", round + 1, t.name));
            let o = drive(reqs.clone(), &starts, dialer.clone(), t.pid, &cfg, bar)?;
            let _ = writeln!(
                err,
                "# round {} {}: {} requests, {:.1} req/s, {} errors",
                round + 1,
                t.name,
                o.stats.completed(),
                o.stats.throughput(),
                o.stats.failed()
            );
            rep.rounds.push(o.stats);
            rep.target_cpu_us.push(o.target_cpu_us);
            rep.driver_cpu_us.push(o.driver_cpu_us);
        }
    }
    Ok(reports)
}

/// The flows a run replays: request/response exchanges, and WebSocket conversations
/// unless a target speaks HTTP/2 (the driver does not speak RFC 8441's WebSocket over
/// h2, and every target gets the same schedule). Other upgrades stay out, with a note.
fn replayable(
    flows: &[crate::flows::record::HttpFlow],
    some_h2: bool,
) -> Result<Vec<&crate::flows::record::HttpFlow>, String> {
    let all = flows.len();
    let upgrade = |f: &crate::flows::record::HttpFlow| {
        f.request
            .headers
            .iter()
            .any(|h| h.0.eq_ignore_ascii_case(b"upgrade"))
    };
    let ws = |f| super::ws_client::is_websocket(f);
    let kept: Vec<_> = flows
        .iter()
        .filter(|f| !upgrade(f) || (ws(f) && !some_h2))
        .collect();
    if kept.is_empty() {
        return Err("no flow to replay (only upgrades the driver does not replay)".into());
    }
    let left = all - kept.len();
    if left > 0 {
        let why = match some_h2 {
            true => "WebSocket is replayed on HTTP/1.1 targets only, and others are not",
            false => "only WebSocket upgrades answered 101 are replayed",
        };
        let _ = writeln!(
            std::io::stderr(),
            "# {left} upgrade request(s) left out: {why}"
        );
    }
    Ok(kept)
}

/// How a target's requests travel: the form of the request and its connections.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Route {
    /// Origin-form on plain connections (http://, h2c://).
    Direct,
    /// Origin-form over TLS, one server name per recorded host (https://, h2://).
    DirectTls,
    /// A forward proxy: absolute-form on a plain connection for http, CONNECT then
    /// TLS and origin-form for https (HTTP/2 in the tunnel when recorded so).
    Proxy,
}

impl Route {
    fn of(t: &Target) -> Route {
        match (t.absolute, t.tls) {
            (true, _) => Route::Proxy,
            (false, true) => Route::DirectTls,
            (false, false) => Route::Direct,
        }
    }
}

/// The recorded requests made ready for `route`, and the endpoints they use (index 0
/// is always the plain connection to the target).
fn prepare(
    flows: &[&crate::flows::record::HttpFlow],
    set: &[(String, String)],
    route: Route,
    check_bodies: bool,
) -> Result<(Vec<Prepared>, Vec<Endpoint>), String> {
    let mut eps = vec![Endpoint::plain()];
    let mut index: std::collections::HashMap<String, u32> = Default::default();
    let mut out = Vec::with_capacity(flows.len());
    for f in flows {
        let mut req = f.request.clone();
        super::h1::set_headers(&mut req, set);
        let secure = matches!(req.scheme.as_str(), "https" | "wss");
        let (endpoint, absolute) = match route {
            Route::Direct => (0, false),
            Route::Proxy if !secure => (0, true),
            Route::DirectTls | Route::Proxy => {
                let proxy = route == Route::Proxy;
                // through a proxy, a request recorded over HTTP/2 goes over h2 as its
                // client's did; a direct target's scheme says the protocol instead
                let h2 = proxy && req.version.starts_with("HTTP/2");
                let key = match (proxy, h2) {
                    (true, true) => format!("h2 {}", req.authority.to_ascii_lowercase()),
                    (true, false) => req.authority.to_ascii_lowercase(),
                    (false, _) => host_of(&req.authority).to_ascii_lowercase(),
                };
                let ep = match index.get(&key) {
                    Some(&i) => i,
                    None => {
                        let name = server_name(&req.authority)
                            .map_err(|e| format!("flow {}: {e}", f.id))?;
                        let tunnel = proxy.then(|| connect_request(&req.authority));
                        eps.push(Endpoint {
                            tls: Some(name),
                            tunnel,
                            h2,
                        });
                        let i = eps.len() as u32 - 1;
                        index.insert(key, i);
                        i
                    }
                };
                (ep, false)
            }
        };
        let ws = super::ws_client::is_websocket(f)
            .then(|| Rc::new(super::ws_client::WsPlan::new(f, &req, absolute)));
        let expect =
            (check_bodies && ws.is_none()).then(|| match (&f.response, req.method == "HEAD") {
                (Some(r), false) => bytes::Bytes::copy_from_slice(&r.body.data),
                _ => bytes::Bytes::new(),
            });
        out.push(Prepared {
            wire: super::h1::encode_request(&req, absolute).into(),
            head: req.method == "HEAD",
            h2: super::prepared::H2Request::new(&req),
            endpoint,
            expect,
            ws,
        });
    }
    Ok((out, eps))
}

/// A progress bar on stderr when both stdout and stderr are terminals; None (no
/// drawing at all) otherwise, as in tests and pipes.
fn progress_bar(prefix: &str) -> Option<indicatif::ProgressBar> {
    use std::io::IsTerminal;
    if !std::io::stdout().is_terminal() || !std::io::stderr().is_terminal() {
        return None;
    }
    let style = indicatif::ProgressStyle::with_template("{prefix} [{bar:30}] {msg}")
        .ok()?
        .progress_chars("=> ");
    let b = indicatif::ProgressBar::new(1).with_style(style);
    b.set_prefix(prefix.to_string());
    Some(b)
}

/// The flags as JSON, for the report.
fn config_json(a: &RunArgs, targets: &[Target]) -> serde_json::Value {
    serde_json::json!({
        "file": a.file.display().to_string(),
        "targets": targets.iter().map(|t| serde_json::json!({"name": t.name, "url": t.url,
            "forward_proxy": t.absolute, "tls": t.tls, "pid": t.pid})).collect::<Vec<_>>(),
        "insecure": a.insecure, "check_bodies": a.check_bodies,
        "rate": a.rate, "step": a.step, "poisson": a.poisson, "speed": a.speed,
        "max_gap_s": a.max_gap.as_secs_f64(), "connections": a.connections,
        "conn_mode": a.conn_mode,
        "duration_s": a.duration.as_secs_f64(), "warmup_s": a.warmup.as_secs_f64(),
        "once": a.once, "rounds": a.rounds, "seed": a.seed,
        // how many, not what: --header fills in secrets the recorder redacted
        "headers": a.headers.len(),
    })
}

/// Resolves the targets of `a`, with their watched pids.
pub fn targets_of(a: &RunArgs) -> Result<Vec<Target>, String> {
    let mut ts = Vec::new();
    for s in &a.targets {
        ts.push(parse_target(s, false, ts.len())?);
    }
    for s in &a.proxies {
        ts.push(parse_target(s, true, ts.len())?);
    }
    if ts.is_empty() {
        return Err("no target: give --target URL or --proxy URL".into());
    }
    for p in &a.pids {
        let (name, pid) = p.split_once('=').ok_or("--pid wants NAME=PID")?;
        let pid: u32 = pid.parse().map_err(|_| format!("--pid {p}: not a pid"))?;
        let t = ts
            .iter_mut()
            .find(|t| t.name == name)
            .ok_or_else(|| format!("--pid {p}: no target named {name}"))?;
        t.pid = Some(pid);
    }
    Ok(ts)
}

/// `luring bench run`.
pub fn run(a: RunArgs) -> Result<(), String> {
    let targets = targets_of(&a)?;
    let rec = super::input::load(&a.file)?;
    let reports = measure(&a, &rec.flows, &targets)?;
    table(&reports, &mut std::io::stdout().lock()).map_err(|e| e.to_string())?;
    if let Some(dir) = &a.report {
        write_dir(dir, config_json(&a, &targets), &reports)?;
        let p = dir.join("index.html");
        std::fs::write(&p, super::html::page(&reports))
            .map_err(|e| format!("{}: {e}", p.display()))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::flows::record::{HttpFlow, RequestRec};

    fn flow(scheme: &str, authority: &str, version: &str) -> HttpFlow {
        HttpFlow {
            request: RequestRec {
                method: "GET".into(),
                scheme: scheme.into(),
                authority: authority.into(),
                path: "/p".into(),
                version: version.into(),
                ..Default::default()
            },
            ..Default::default()
        }
    }

    #[test]
    fn websocket_upgrades_are_replayed_on_http1_targets_only() {
        let plain = flow("http", "a.example", "HTTP/1.1");
        let mut ws = plain.clone();
        ws.request.headers = vec![crate::flows::record::field("Upgrade", "websocket")];
        ws.response = Some(crate::flows::record::ResponseRec {
            status: 101,
            ..Default::default()
        });
        let mut h2c = ws.clone();
        h2c.request.headers = vec![crate::flows::record::field("Upgrade", "h2c")];
        let fs = [plain, ws, h2c];
        assert_eq!(replayable(&fs, false).unwrap().len(), 2);
        let kept = replayable(&fs, true).unwrap();
        assert!(kept.len() == 1 && kept[0].request.headers.is_empty());
        let (reqs, _) =
            prepare(&replayable(&fs, false).unwrap(), &[], Route::Direct, true).unwrap();
        assert!(reqs[1].ws.is_some() && reqs[1].expect.is_none());
        assert!(reqs[0].ws.is_none() && reqs[0].expect.is_some());
    }

    #[test]
    fn schemes_say_protocol_and_tls() {
        let t = parse_target("a=https://127.0.0.1:8443", false, 0).unwrap();
        assert_eq!(
            (t.name.as_str(), t.tls, t.h2, t.addr.port()),
            ("a", true, false, 8443)
        );
        let t = parse_target("h2://127.0.0.1", false, 1).unwrap();
        assert_eq!(
            (t.name.as_str(), t.tls, t.h2, t.addr.port()),
            ("target2", true, true, 443)
        );
        let t = parse_target("h2c://127.0.0.1:9", false, 0).unwrap();
        assert_eq!((t.tls, t.h2), (false, true));
        assert!(parse_target("https://127.0.0.1:1", true, 0).is_err());
        assert!(parse_target("ftp://127.0.0.1:1", false, 0).is_err());
    }

    #[test]
    fn endpoints_follow_the_recorded_hosts_and_versions() {
        let fs = [
            flow("http", "a.example:8080", "HTTP/1.1"),
            flow("https", "a.example", "HTTP/1.1"),
            flow("https", "A.example", "HTTP/1.1"),
            flow("https", "b.example:8443", "HTTP/1.1"),
            flow("https", "a.example", "HTTP/2"),
        ];
        let refs: Vec<&HttpFlow> = fs.iter().collect();
        let (reqs, eps) = prepare(&refs, &[], Route::Proxy, false).unwrap();
        let ep: Vec<u32> = reqs.iter().map(|r| r.endpoint).collect();
        assert_eq!(ep, [0, 1, 1, 2, 3]);
        assert!(reqs[0]
            .wire
            .starts_with(b"GET http://a.example:8080/p HTTP/1.1\r\n"));
        assert!(reqs[1].wire.starts_with(b"GET /p HTTP/1.1\r\n"));
        assert!(eps[0].tls.is_none() && eps[0].tunnel.is_none());
        assert_eq!(
            eps[2].tunnel.as_deref(),
            Some(&b"CONNECT b.example:8443 HTTP/1.1\r\nHost: b.example:8443\r\n\r\n"[..])
        );
        assert_eq!(
            eps.iter().map(|e| e.h2).collect::<Vec<_>>(),
            [false, false, false, true]
        );
        // a direct TLS target: one server name per host, no tunnels, no h2 by recording
        let (reqs, eps) = prepare(&refs, &[], Route::DirectTls, true).unwrap();
        let ep: Vec<u32> = reqs.iter().map(|r| r.endpoint).collect();
        assert_eq!(ep, [1, 1, 1, 2, 1]);
        assert!(eps.iter().all(|e| e.tunnel.is_none() && !e.h2));
        assert!(reqs.iter().all(|r| r.expect.as_deref() == Some(&b""[..])));
        let (reqs, _) = prepare(&refs, &[], Route::Direct, false).unwrap();
        assert!(reqs.iter().all(|r| r.endpoint == 0 && r.expect.is_none()));
    }
}
