//! `luring bench` command line: `origin`, `run`, and no subcommand (the bundled demo).

use super::matching::MatchOptions;
use super::origin::{Origin, OriginConfig};
use clap::{Args, Subcommand};
use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

/// `luring bench`: with no subcommand, replays the bundled sample recording through a
/// luring it starts and directly against a replay origin, and prints one table.
#[derive(Args, Debug)]
#[command(args_conflicts_with_subcommands = true)]
pub struct BenchArgs {
    /// What to do (none: the bundled demo).
    #[command(subcommand)]
    pub action: Option<BenchAction>,
    /// Demo: requests per second.
    #[arg(long, default_value_t = 1000.0)]
    pub rate: f64,
    /// Demo: measured seconds per target.
    #[arg(long, default_value = "3s", value_parser = super::schedule::parse_duration)]
    pub duration: std::time::Duration,
    /// Write the bundled sample recording to FILE (a flow file) and exit.
    #[arg(long, value_name = "FILE")]
    pub save_sample: Option<PathBuf>,
}

/// `luring bench` subcommands.
#[derive(Subcommand, Debug)]
pub enum BenchAction {
    /// Serve the recorded responses for matching requests (HTTP/1.1, h2c, WebSocket;
    /// with --tls also h2 and HTTP/1.1 over TLS).
    Origin(OriginArgs),
    /// Replay the recorded requests against targets on a schedule and measure them.
    Run(Box<super::run::RunArgs>),
}

/// `luring bench origin` flags.
#[derive(Args, Debug)]
pub struct OriginArgs {
    /// The recording: a flow file, HAR, .zhar or mitmdump file.
    pub file: PathBuf,
    /// Listening address (port 0: any free port; the chosen one is printed).
    #[arg(long, default_value = "127.0.0.1:9000")]
    pub listen: SocketAddr,
    /// Threads serving (each with its own SO_REUSEPORT socket).
    #[arg(long, default_value_t = 1)]
    pub threads: usize,
    /// A query parameter left out of matching (repeatable).
    #[arg(long = "ignore-param", value_name = "NAME")]
    pub ignore_params: Vec<String>,
    /// A field of a urlencoded or multipart form body left out of matching
    /// (repeatable); such a body is then matched by its other fields.
    #[arg(long = "ignore-form-field", value_name = "NAME")]
    pub ignore_form_fields: Vec<String>,
    /// Match requests whatever their body.
    #[arg(long)]
    pub ignore_body: bool,
    /// Match requests whatever their host and port.
    #[arg(long)]
    pub ignore_host: bool,
    /// A header whose value must match too (repeatable).
    #[arg(long = "match-header", value_name = "NAME")]
    pub match_headers: Vec<String>,
    /// Serve each recorded response once (default: cycle through them).
    #[arg(long)]
    pub pop: bool,
    /// Status of the answer to an unmatched request.
    #[arg(long, default_value_t = 404)]
    pub unmatched_status: u16,
    /// none (answer at once, to isolate the proxy) or recorded (wait the recorded
    /// server time: response head minus request start).
    #[arg(long, default_value = "none", value_parser = ["none", "recorded"])]
    pub origin_delay: String,
    /// Also serve TLS on the port (told by the first byte): a leaf from luring's CA
    /// for any name asked for, h2 or http/1.1 by ALPN.
    #[arg(long)]
    pub tls: bool,
    /// With --tls: the CA directory [default: $XDG_CONFIG_HOME/luring, else ~/.luring].
    #[arg(long, value_name = "DIR")]
    pub confdir: Option<PathBuf>,
}

/// Runs `luring bench ...`; the process exit code.
pub fn run(args: BenchArgs) -> i32 {
    let r = match args.action {
        Some(BenchAction::Origin(o)) => origin(o),
        Some(BenchAction::Run(r)) => super::run::run(*r),
        None => match args.save_sample {
            Some(p) => super::input::write(&p, &super::sample::flows()),
            None => super::sample::demo(args.rate, args.duration),
        },
    };
    match r {
        Ok(()) => 0,
        Err(e) => {
            let _ = writeln!(std::io::stderr(), "luring bench: {e}");
            1
        }
    }
}

/// `luring bench origin`: serves until SIGINT or SIGTERM, then prints its counters.
fn origin(a: OriginArgs) -> Result<(), String> {
    let rec = super::input::load(&a.file)?;
    let cfg = OriginConfig {
        listen: a.listen,
        threads: a.threads.max(1),
        matching: MatchOptions {
            ignore_params: a.ignore_params,
            ignore_form_fields: a.ignore_form_fields,
            ignore_body: a.ignore_body,
            ignore_host: a.ignore_host,
            match_headers: a.match_headers.iter().map(|h| h.to_lowercase()).collect(),
            pop: a.pop,
        },
        unmatched_status: a.unmatched_status,
        recorded_delay: a.origin_delay == "recorded",
    };
    let tls = match a.tls {
        true => Some(Arc::new(super::origin_tls::OriginTls::new(a.confdir)?)),
        false => None,
    };
    let tls_note = tls
        .as_ref()
        .map(|t| format!(", tls with CA {}", t.ca_pem.display()))
        .unwrap_or_default();
    let origin = Arc::new(Origin::new(&rec.flows, &cfg));
    let listeners = super::origin_net::bind(cfg.listen, cfg.threads)?;
    let addr = listeners[0].local_addr().map_err(|e| e.to_string())?;
    let mut signals = signal_hook::iterator::Signals::new([libc::SIGINT, libc::SIGTERM])
        .map_err(|e| e.to_string())?;
    super::origin_net::start(origin.clone(), listeners, tls)?;
    let (responses, keys) = origin.size();
    let mut out = std::io::stdout().lock();
    let _ = writeln!(
        out,
        "luring bench origin listening on {addr} ({responses} responses, {keys} keys, {} threads{tls_note})",
        cfg.threads
    );
    let _ = out.flush();
    drop(out);
    let _ = signals.forever().next();
    let _ = writeln!(std::io::stderr(), "{}", origin.counters.json());
    Ok(())
}
