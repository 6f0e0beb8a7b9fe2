//! Command line: `luring run`, `luring check`, `luring ca`, `luring flows`, `luring bench`.

use crate::config::Config;
use crate::io::IoChoice;
use clap::{Args, Parser, Subcommand};
use std::net::SocketAddr;
use std::path::PathBuf;

/// luring: a thread-per-core io_uring intercepting proxy, scriptable in Lua.
#[derive(Parser, Debug)]
#[command(name = "luring", version, about, long_about = None)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Subcommands.
#[derive(Subcommand, Debug)]
pub enum Command {
    /// Run the proxy (forward proxy on 127.0.0.1:8080 by default).
    Run(Box<RunArgs>),
    /// Load plugin files in a scratch Lua state and list their hooks, or their errors (exit 1).
    Check {
        /// Plugin files, loaded in order.
        #[arg(required = true)]
        files: Vec<PathBuf>,
    },
    /// Manage the local CA used for TLS interception.
    Ca {
        /// Config directory [default: $XDG_CONFIG_HOME/luring, else ~/.luring].
        #[arg(long, value_name = "DIR", global = true)]
        confdir: Option<PathBuf>,
        /// What to do with the CA.
        #[command(subcommand)]
        action: CaAction,
    },
    /// Read, convert and summarise recorded flow files (see `luring run --record`).
    Flows {
        /// What to do with the flows.
        #[command(subcommand)]
        action: crate::flows::cli::FlowsAction,
    },
    /// Replay recorded traffic through proxies and measure them (docs/bench.md).
    Bench(crate::bench::cli::BenchArgs),
}

/// `luring ca` subcommands.
#[derive(Subcommand, Debug)]
pub enum CaAction {
    /// Print the config directory and the CA file paths.
    Path,
    /// Show subject, SHA-256 fingerprint, validity and how to trust the CA (creates it if missing).
    Show {
        /// Key type when the CA has to be created: ecdsa-p256 or rsa2048.
        #[arg(long, default_value = "ecdsa-p256", value_name = "TYPE")]
        ca_key_type: String,
    },
    /// Write the CA certificate (never the key) to stdout or a file.
    Export {
        /// pem or der.
        #[arg(long, default_value = "pem", value_name = "FORMAT")]
        format: String,
        /// Output file instead of stdout.
        #[arg(long, value_name = "FILE")]
        out: Option<PathBuf>,
    },
    /// Create a new CA, replacing the current one only with --force (rotation).
    New {
        /// Replace an existing CA.
        #[arg(long)]
        force: bool,
        /// ecdsa-p256 or rsa2048.
        #[arg(long, default_value = "ecdsa-p256", value_name = "TYPE")]
        ca_key_type: String,
    },
}

/// `luring ca ...`: returns the exit code.
pub fn ca_command(confdir: Option<PathBuf>, action: CaAction) -> i32 {
    use crate::tls::ca::{Ca, CaKeyType, Confdir};
    use crate::tls::cli as tc;
    use std::io::Write;
    let run = || -> Result<(), String> {
        let dir = Confdir::resolve(confdir).map_err(|e| e.to_string())?;
        match action {
            CaAction::Path => print!("{}", tc::ca_path(&dir)),
            CaAction::Show { ca_key_type } => {
                let kt: CaKeyType = ca_key_type.parse()?;
                let ca = Ca::load_or_create(&dir, kt).map_err(|e| e.to_string())?;
                print!("{}", tc::ca_show(&ca));
            }
            CaAction::Export { format, out } => {
                let f: tc::ExportFormat = format.parse()?;
                let ca =
                    Ca::load_or_create(&dir, CaKeyType::default()).map_err(|e| e.to_string())?;
                match out {
                    Some(p) => tc::ca_export_to(&ca, f, &p).map_err(|e| e.to_string())?,
                    None => std::io::stdout()
                        .write_all(&tc::ca_export(&ca, f))
                        .map_err(|e| e.to_string())?,
                }
            }
            CaAction::New { force, ca_key_type } => {
                let kt: CaKeyType = ca_key_type.parse()?;
                print!(
                    "{}",
                    tc::ca_new(&dir, kt, force).map_err(|e| e.to_string())?
                );
            }
        }
        Ok(())
    };
    match run() {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("luring ca: {e}");
            1
        }
    }
}

/// Flags of `luring run`; each overrides the config key of the same name.
#[derive(Args, Debug, Default)]
pub struct RunArgs {
    /// TOML config file; its keys are the flag names with '-' as '_'.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Proxy mode: `regular` (forward proxy + CONNECT), `reverse:http[s]://HOST[:PORT]`,
    /// or `socks5` (SOCKS5 CONNECT; the tunnels are handled as CONNECT tunnels).
    #[arg(long, value_name = "MODE")]
    pub mode: Option<String>,
    /// Require clients to authenticate as USER:PASS: Basic Proxy-Authorization in regular
    /// mode (407 otherwise), username/password in socks5 mode.
    #[arg(long, value_name = "USER:PASS")]
    pub proxy_auth: Option<String>,
    /// Listening address [default: 127.0.0.1:8080]: ADDR:PORT, [V6]:PORT, HOST:PORT, or a
    /// bare PORT (on 127.0.0.1); port 0 picks a free port.
    #[arg(long, value_name = "ADDR:PORT", value_parser = crate::config::parse_listen)]
    pub listen: Option<SocketAddr>,
    /// Name given to plugins as ctx.listener_name [default: default].
    #[arg(long, value_name = "NAME")]
    pub listener_name: Option<String>,
    /// Worker threads, each with its own runtime and listening socket [default: one per core].
    #[arg(long, value_name = "N")]
    pub workers: Option<usize>,
    /// Log level: error, warn, info, debug, trace [default: info]; RUST_LOG-style filters work too.
    #[arg(long, value_name = "LEVEL")]
    pub log_level: Option<String>,
    /// io backend: auto (io_uring, else epoll with a warning), uring (or fail), epoll.
    #[arg(long, value_enum, value_name = "BACKEND")]
    pub io: Option<IoChoice>,
    /// Seconds in-flight requests may take to finish after SIGTERM/SIGINT [default: 10].
    #[arg(long, value_name = "SECS")]
    pub drain_timeout: Option<f64>,
    /// Reverse mode: send the client's Host header upstream instead of the upstream's.
    #[arg(long)]
    pub keep_host_header: bool,
    /// Largest request head in bytes; larger gets 431 [default: 65536].
    #[arg(long, value_name = "BYTES")]
    pub max_head_size: Option<usize>,
    /// Most header fields in a request head; more gets 431 [default: 100]. Upstream
    /// responses may carry max(N, 1000).
    #[arg(long, value_name = "N")]
    pub max_headers: Option<usize>,
    /// Seconds a client has to send a whole request head (slowloris guard) [default: 30].
    #[arg(long, value_name = "SECS")]
    pub head_timeout: Option<f64>,
    /// Seconds an idle client keep-alive connection is kept [default: 60].
    #[arg(long, value_name = "SECS")]
    pub idle_timeout: Option<f64>,
    /// Seconds a client may pause between two reads of a request body before the
    /// connection is closed (as nginx's client_body_timeout) [default: 60].
    #[arg(long, value_name = "SECS")]
    pub body_timeout: Option<f64>,
    /// Seconds to connect to an upstream; beyond it the client gets 504 [default: 10].
    #[arg(long, value_name = "SECS")]
    pub connect_timeout: Option<f64>,
    /// Seconds to wait for an upstream's response head; beyond it 504 [default: 60].
    #[arg(long, value_name = "SECS")]
    pub upstream_timeout: Option<f64>,
    /// Seconds a client may go without accepting any more of a response before the
    /// connection is closed (as nginx's send_timeout); over HTTP/2, a peer on either
    /// side that opens no window for this long gets the stream reset [default: 60].
    #[arg(long, value_name = "SECS")]
    pub send_timeout: Option<f64>,
    /// Seconds a tunnel (CONNECT, TLS passthrough, WebSocket or other upgrade) may pass
    /// no byte either way before both sides are closed; 0 = no limit [default: 3600].
    #[arg(long, value_name = "SECS")]
    pub tunnel_idle_timeout: Option<f64>,
    /// Seconds an idle upstream connection stays in the pool [default: 30].
    #[arg(long, value_name = "SECS")]
    pub pool_idle_timeout: Option<f64>,
    /// Idle upstream connections kept per host per worker [default: 64].
    #[arg(long, value_name = "N")]
    pub pool_max_idle: Option<usize>,
    /// Client connections per worker; further ones get a 503 and are closed [default: 10000].
    #[arg(long, value_name = "N")]
    pub max_connections: Option<usize>,
    /// Streams an HTTP/2 client may have open at once on one connection; it is also the
    /// most streams luring works on for one connection (streams the client reset whose
    /// work is still ending count too) [default: 128].
    #[arg(long, value_name = "N")]
    pub h2_max_concurrent_streams: Option<u32>,
    /// Control frames (SETTINGS, PING, PRIORITY, RST_STREAM) an HTTP/2 client may send
    /// in a burst, refilled at a tenth of it per second; beyond, GOAWAY
    /// ENHANCE_YOUR_CALM [default: 1000].
    #[arg(long, value_name = "N")]
    pub h2_control_frame_budget: Option<u32>,
    /// Lua plugin file (repeatable; loaded in order into every worker).
    #[arg(long = "plugin", value_name = "FILE")]
    pub plugins: Vec<PathBuf>,
    /// Largest body a plugin may read via msg.body, in bytes [default: 16777216].
    #[arg(long, value_name = "BYTES")]
    pub max_plugin_body: Option<usize>,
    /// Largest gRPC message grpc.on_data hooks see (decompressed); larger ones pass unhooked [default: 4194304].
    #[arg(long, value_name = "BYTES")]
    pub max_grpc_message: Option<usize>,
    /// Time budget of one hook call in milliseconds; a runaway hook becomes an error [default: 100].
    #[arg(long, value_name = "MS")]
    pub hook_budget_ms: Option<u64>,
    /// Bytes each worker's Lua state may hold; an allocation beyond it fails the hook [default: 268435456; 0 = no limit].
    #[arg(long, value_name = "BYTES")]
    pub plugin_memory_limit: Option<usize>,
    /// Seconds one hook call may wait on I/O (luring.sleep, http_request, cosockets); beyond, a hook error [default: 5].
    #[arg(long, value_name = "SECS")]
    pub hook_timeout: Option<f64>,
    /// Request header set by the rewrite pipeline step, NAME=VALUE (repeatable).
    #[arg(long, value_name = "NAME=VALUE")]
    pub set_request_header: Vec<String>,
    /// Response header set by the rewrite pipeline step, NAME=VALUE (repeatable).
    #[arg(long, value_name = "NAME=VALUE")]
    pub set_response_header: Vec<String>,
    /// Reload plugins when their files change (SIGHUP always reloads).
    #[arg(long)]
    pub watch: bool,
    /// Log one line per request: client, request line, status, bytes sent, duration.
    #[arg(long)]
    pub access_log: bool,
    /// Access-log line layout: text or json (json adds the error text when known) [default: text].
    #[arg(long, value_name = "FORMAT")]
    pub access_log_format: Option<String>,
    /// Serve Prometheus metrics (GET /metrics) and GET /healthz on ADDR:PORT; a bare port means 127.0.0.1.
    #[arg(long, value_name = "ADDR:PORT")]
    pub metrics: Option<String>,
    /// CA directory [default: $XDG_CONFIG_HOME/luring, else ~/.luring].
    #[arg(long, value_name = "DIR")]
    pub confdir: Option<PathBuf>,
    /// Key type of a CA created on first run: ecdsa-p256 or rsa2048 [default: ecdsa-p256].
    #[arg(long, value_name = "TYPE")]
    pub ca_key_type: Option<String>,
    /// Extra PEM CA file trusted for upstream certificates (repeatable).
    #[arg(long, value_name = "FILE")]
    pub upstream_ca: Vec<PathBuf>,
    /// Do not verify upstream TLS certificates.
    #[arg(long, short = 'k')]
    pub insecure: bool,
    /// Regex on host:port relayed as is, without TLS interception (repeatable).
    #[arg(long, value_name = "REGEX")]
    pub ignore_hosts: Vec<String>,
    /// Regex on host:port: only matching hosts are intercepted (repeatable).
    #[arg(long, value_name = "REGEX")]
    pub allow_hosts: Vec<String>,
    /// Copy the upstream certificate's subject alternative names into minted leaves.
    #[arg(long)]
    pub upstream_cert: bool,
    /// Never offer HTTP/2 to clients: intercepted TLS speaks HTTP/1.1 only.
    #[arg(long)]
    pub no_http2: bool,
    /// Reverse mode: accept gRPC-web calls (HTTP/1.1 or h2, binary or text) and translate
    /// them to native gRPC toward the upstream; answer their CORS preflights.
    #[arg(long)]
    pub grpc_web: bool,
    /// Client certificate (PEM chain + key) presented to HOST, as HOST=FILE (repeatable).
    #[arg(long, value_name = "HOST=FILE")]
    pub client_cert: Vec<String>,
    /// Leaf certificates kept in the cache [default: 10000].
    #[arg(long, value_name = "N")]
    pub cert_cache_size: Option<usize>,
    /// USER:PASS sent to the proxy of `--mode upstream:http://HOST:PORT`.
    #[arg(long, value_name = "USER:PASS")]
    pub upstream_auth: Option<String>,
    /// Append every flow passing through to FILE (created 0600; read it with `luring flows`).
    #[arg(long, value_name = "FILE")]
    pub record: Option<PathBuf>,
    /// Largest body kept per recorded message; longer ones are cut and marked [default: 1048576].
    #[arg(long, value_name = "BYTES")]
    pub record_max_body: Option<usize>,
    /// Header whose value is redacted in the recording (repeatable), besides Authorization,
    /// Proxy-Authorization, Cookie and Set-Cookie; `none` redacts nothing.
    #[arg(long, value_name = "NAME")]
    pub record_redact: Vec<String>,
    /// Also record the bytes of tunnels luring does not parse (TLS passthrough, raw relays).
    #[arg(long)]
    pub record_raw: bool,
    /// Flows queued for the recorder's writer before new ones are dropped [default: 4096].
    #[arg(long, value_name = "N")]
    pub record_queue: Option<usize>,
}

impl RunArgs {
    /// Builds the effective config: defaults, then the file, then these flags.
    pub fn to_config(&self) -> Result<Config, String> {
        let mut c = match &self.config {
            Some(p) => Config::from_file(p)?,
            None => Config::default(),
        };
        macro_rules! over {
            ($($f:ident),*) => { $( if let Some(v) = &self.$f { c.$f = v.clone(); } )* };
        }
        over!(
            mode,
            listen,
            listener_name,
            workers,
            log_level,
            io,
            drain_timeout,
            max_head_size,
            max_headers,
            head_timeout,
            idle_timeout,
            body_timeout,
            connect_timeout,
            upstream_timeout,
            tunnel_idle_timeout,
            send_timeout,
            pool_idle_timeout,
            pool_max_idle,
            max_connections,
            h2_max_concurrent_streams,
            h2_control_frame_budget,
            max_plugin_body,
            max_grpc_message,
            hook_budget_ms,
            plugin_memory_limit,
            hook_timeout,
            ca_key_type,
            cert_cache_size,
            record_max_body,
            record_queue,
            access_log_format
        );
        if self.metrics.is_some() {
            c.metrics = self.metrics.clone();
        }
        if self.record.is_some() {
            c.record = self.record.clone();
        }
        if self.upstream_auth.is_some() {
            c.upstream_auth = self.upstream_auth.clone();
        }
        c.record_raw |= self.record_raw;
        c.record_redact.extend(self.record_redact.iter().cloned());
        if self.confdir.is_some() {
            c.confdir = self.confdir.clone();
        }
        if self.proxy_auth.is_some() {
            c.proxy_auth = self.proxy_auth.clone();
        }
        c.insecure |= self.insecure;
        c.access_log |= self.access_log;
        c.upstream_cert |= self.upstream_cert;
        c.http2 &= !self.no_http2;
        c.grpc_web |= self.grpc_web;
        c.upstream_ca.extend(self.upstream_ca.iter().cloned());
        c.ignore_hosts.extend(self.ignore_hosts.iter().cloned());
        c.allow_hosts.extend(self.allow_hosts.iter().cloned());
        c.client_cert.extend(self.client_cert.iter().cloned());
        c.keep_host_header |= self.keep_host_header;
        c.watch |= self.watch;
        if !self.plugins.is_empty() {
            c.plugins = self.plugins.clone();
        }
        c.set_request_header
            .extend(self.set_request_header.iter().cloned());
        c.set_response_header
            .extend(self.set_response_header.iter().cloned());
        Ok(c)
    }
}

/// `luring check`: prints the registered hooks (exit 0) or the load errors (exit 1).
pub fn check_command(files: &[PathBuf]) -> i32 {
    match crate::plugin::check(files) {
        Ok(hooks) => {
            print!("{}", crate::plugin::format_hooks(&hooks));
            0
        }
        Err(e) => {
            eprintln!("{e}");
            1
        }
    }
}
