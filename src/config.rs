//! Run configuration: defaults embedded in the binary, an optional TOML file, CLI overrides.
//!
//! Every `luring run` flag has a key of the same name with `-` turned into `_`.

use crate::io::IoChoice;
use serde::Deserialize;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

/// Where requests go.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Mode {
    /// Forward proxy: absolute-form requests and CONNECT tunnels.
    Regular,
    /// Reverse proxy to one upstream.
    Reverse(Upstream),
    /// SOCKS5 proxy (RFC 1928, CONNECT): each connection then goes on as a CONNECT tunnel.
    Socks5,
    /// Connections redirected to luring by the kernel (iptables/nftables REDIRECT or
    /// TPROXY): each goes on as a tunnel to its original destination.
    Transparent,
    /// A forward proxy like `Regular` whose upstream connections all go through another
    /// HTTP proxy: plain requests in absolute-form, TLS through CONNECT.
    Upstream(Upstream),
}

/// A fixed upstream for reverse mode.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Upstream {
    /// "http" or "https".
    pub scheme: String,
    /// Host name or IP literal.
    pub host: String,
    /// Port.
    pub port: u16,
    /// Path prefix prepended to request paths ("" for none).
    pub path_prefix: String,
    /// "host:port", made once: every request in reverse mode carries it.
    authority: String,
}

impl Upstream {
    /// "host:port" with brackets for IPv6 literals.
    pub fn authority(&self) -> String {
        self.authority.clone()
    }
}

impl Mode {
    /// Parses `regular`, `reverse:URL`, `socks5` or `upstream:http://HOST:PORT`.
    pub fn parse(s: &str) -> Result<Mode, String> {
        match s {
            "regular" => return Ok(Mode::Regular),
            "socks5" => return Ok(Mode::Socks5),
            "transparent" => return Ok(Mode::Transparent),
            _ => {}
        }
        if let Some(url) = s.strip_prefix("upstream:") {
            let t = crate::http::Target::parse_absolute(url.as_bytes())
                .filter(|t| t.scheme == "http" && matches!(t.path.as_str(), "" | "/"))
                .ok_or_else(|| {
                    format!("bad upstream proxy URL '{url}' (expected http://HOST:PORT)")
                })?;
            return Ok(Mode::Upstream(Upstream {
                authority: crate::http::authority_of(&t.host, t.port),
                scheme: t.scheme,
                host: t.host,
                port: t.port,
                path_prefix: String::new(),
            }));
        }
        let Some(url) = s.strip_prefix("reverse:") else {
            return Err(format!(
                "unknown mode '{s}' (expected regular, reverse:URL, socks5, transparent or upstream:URL)"
            ));
        };
        let t = crate::http::Target::parse_absolute(url.as_bytes()).ok_or_else(|| {
            format!("bad reverse upstream URL '{url}' (expected http[s]://HOST[:PORT])")
        })?;
        if t.scheme != "http" && t.scheme != "https" {
            return Err(format!(
                "reverse upstream scheme '{}' is not supported (http or https)",
                t.scheme
            ));
        }
        let path_prefix = t.path.trim_end_matches('/').to_string();
        Ok(Mode::Reverse(Upstream {
            authority: crate::http::authority_of(&t.host, t.port),
            scheme: t.scheme,
            host: t.host,
            port: t.port,
            path_prefix,
        }))
    }

    /// Short name for logs.
    pub fn name(&self) -> &'static str {
        match self {
            Mode::Regular => "regular",
            Mode::Upstream(_) => "upstream",
            Mode::Transparent => "transparent",
            Mode::Reverse(_) => "reverse",
            Mode::Socks5 => "socks5",
        }
    }
}

/// Everything `luring run` needs; built from defaults, file and flags.
#[derive(Clone, Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// `regular`, `reverse:URL` or `socks5`.
    pub mode: String,
    /// `USER:PASS` a client must present: Proxy-Authorization (Basic) in regular mode,
    /// RFC 1929 username/password in socks5 mode. None: no authentication.
    pub proxy_auth: Option<String>,
    /// Listening address.
    #[serde(deserialize_with = "listen_from_toml")]
    pub listen: SocketAddr,
    /// Name given to plugins as ctx.listener_name.
    pub listener_name: String,
    /// Worker threads (0 = one per core).
    pub workers: usize,
    /// Log level filter.
    pub log_level: String,
    /// io backend choice.
    pub io: IoChoice,
    /// Seconds to let in-flight requests finish after SIGTERM/SIGINT.
    pub drain_timeout: f64,
    /// Reverse mode: keep the client's Host header.
    pub keep_host_header: bool,
    /// Largest request head in bytes.
    pub max_head_size: usize,
    /// Most header fields in a head.
    pub max_headers: usize,
    /// Seconds to receive a whole request head.
    pub head_timeout: f64,
    /// Seconds a client keep-alive connection may sit idle.
    pub idle_timeout: f64,
    /// Seconds a client may pause between two reads of a request body.
    pub body_timeout: f64,
    /// Seconds to connect upstream.
    pub connect_timeout: f64,
    /// Seconds to wait for the upstream's response head.
    pub upstream_timeout: f64,
    /// Seconds a client may take to accept more of a response before it is dropped.
    pub send_timeout: f64,
    /// Seconds a tunnel (CONNECT relay, TLS passthrough, upgraded connection) may carry
    /// no byte in either direction before both sides are closed; 0: no limit.
    pub tunnel_idle_timeout: f64,
    /// Seconds an idle upstream connection is kept in the pool.
    pub pool_idle_timeout: f64,
    /// Idle upstream connections kept per (scheme, host, port) per worker.
    pub pool_max_idle: usize,
    /// Client connections per worker.
    pub max_connections: usize,
    /// Streams an HTTP/2 client may open at once per connection (and streams luring
    /// works on at once for one connection).
    pub h2_max_concurrent_streams: u32,
    /// Control frames an HTTP/2 client may send in a burst (refilled at a tenth of it
    /// per second).
    pub h2_control_frame_budget: u32,
    /// Plugin files, loaded in order.
    pub plugins: Vec<PathBuf>,
    /// Largest body a plugin may read.
    pub max_plugin_body: usize,
    /// Largest gRPC message the grpc hooks see; a larger one passes unhooked.
    pub max_grpc_message: usize,
    /// Per hook call budget in milliseconds.
    pub hook_budget_ms: u64,
    /// Bytes each worker's Lua state may hold while plugin code runs; 0 = no limit.
    pub plugin_memory_limit: usize,
    /// Seconds a hook call may wait on I/O (`luring.sleep`, cosockets...) in total.
    pub hook_timeout: f64,
    /// `NAME=VALUE` request headers set by the rewrite step.
    pub set_request_header: Vec<String>,
    /// `NAME=VALUE` response headers set by the rewrite step.
    pub set_response_header: Vec<String>,
    /// Reload plugins when their files change.
    pub watch: bool,
    /// Log one line per request (target `luring::access`).
    pub access_log: bool,
    /// Access-log line layout: "text" or "json".
    pub access_log_format: String,
    /// Serve Prometheus metrics and /healthz on this ADDR:PORT (a bare port: 127.0.0.1).
    pub metrics: Option<String>,
    /// Directory of the CA (default $XDG_CONFIG_HOME/luring, else ~/.luring).
    pub confdir: Option<PathBuf>,
    /// Key type of a newly created CA: ecdsa-p256 or rsa2048.
    pub ca_key_type: String,
    /// Extra CA files trusted for upstream certificates.
    pub upstream_ca: Vec<PathBuf>,
    /// Do not verify upstream certificates.
    pub insecure: bool,
    /// host:port regexes relayed without interception.
    pub ignore_hosts: Vec<String>,
    /// host:port regexes that alone are intercepted.
    pub allow_hosts: Vec<String>,
    /// Copy the upstream certificate's names into minted leaves.
    pub upstream_cert: bool,
    /// Offer HTTP/2 to TLS clients when the upstream speaks it.
    pub http2: bool,
    /// Reverse mode: translate gRPC-web calls to native gRPC toward the upstream.
    pub grpc_web: bool,
    /// HOST=FILE client certificates presented to upstreams.
    pub client_cert: Vec<String>,
    /// Leaf certificate cache entries.
    pub cert_cache_size: usize,
    /// USER:PASS for the proxy of `--mode upstream:URL` (Basic Proxy-Authorization).
    pub upstream_auth: Option<String>,
    /// Append every flow to this flow file (docs/flows.md).
    pub record: Option<PathBuf>,
    /// Largest body kept per recorded message; the rest is counted, not kept.
    pub record_max_body: usize,
    /// Header names whose values are redacted in recordings, added to Authorization,
    /// Proxy-Authorization, Cookie and Set-Cookie; "none" clears the list.
    pub record_redact: Vec<String>,
    /// Record the bytes of opaque tunnels too.
    pub record_raw: bool,
    /// Flows waiting for the recorder's writer before new ones are dropped.
    pub record_queue: usize,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            mode: "regular".into(),
            proxy_auth: None,
            listen: "127.0.0.1:8080".parse().expect("static address"),
            listener_name: "default".into(),
            workers: 0,
            log_level: "info".into(),
            io: IoChoice::Auto,
            drain_timeout: 10.0,
            keep_host_header: false,
            max_head_size: 64 * 1024,
            max_headers: 100,
            head_timeout: 30.0,
            idle_timeout: 60.0,
            body_timeout: 60.0,
            connect_timeout: 10.0,
            upstream_timeout: 60.0,
            tunnel_idle_timeout: 3600.0,
            send_timeout: 60.0,
            pool_idle_timeout: 30.0,
            pool_max_idle: 64,
            max_connections: 10_000,
            // as nginx's http2_max_concurrent_streams
            h2_max_concurrent_streams: 128,
            h2_control_frame_budget: 1000,
            plugins: Vec::new(),
            max_plugin_body: 16 * 1024 * 1024,
            // grpc's own default receive limit
            max_grpc_message: 4 * 1024 * 1024,
            hook_budget_ms: 100,
            plugin_memory_limit: 256 * 1024 * 1024,
            hook_timeout: 5.0,
            set_request_header: Vec::new(),
            set_response_header: Vec::new(),
            watch: false,
            access_log: false,
            access_log_format: "text".into(),
            metrics: None,
            confdir: None,
            ca_key_type: "ecdsa-p256".into(),
            upstream_ca: Vec::new(),
            insecure: false,
            ignore_hosts: Vec::new(),
            allow_hosts: Vec::new(),
            upstream_cert: false,
            http2: true,
            grpc_web: false,
            client_cert: Vec::new(),
            cert_cache_size: 10_000,
            upstream_auth: None,
            record: None,
            record_max_body: 1024 * 1024,
            record_redact: Vec::new(),
            record_raw: false,
            record_queue: 4096,
        }
    }
}

/// Seconds (possibly fractional) as a Duration; negative or NaN become zero.
pub fn secs(s: f64) -> Duration {
    Duration::try_from_secs_f64(s).unwrap_or(Duration::ZERO)
}

impl Config {
    /// Reads a TOML file over the defaults.
    pub fn from_file(path: &std::path::Path) -> Result<Config, String> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("cannot read config {}: {e}", path.display()))?;
        toml::from_str(&text).map_err(|e| format!("bad config {}: {e}", path.display()))
    }

    /// Checks values that serde cannot; returns the parsed mode.
    pub fn validate(&self) -> Result<Mode, String> {
        let mode = Mode::parse(&self.mode)?;
        if self.max_head_size < 256 {
            return Err("max_head_size must be at least 256 bytes".into());
        }
        if self.max_headers == 0 {
            return Err("max_headers must be at least 1".into());
        }
        if !matches!(self.access_log_format.as_str(), "text" | "json") {
            return Err(format!(
                "access_log_format must be text or json, not '{}'",
                self.access_log_format
            ));
        }
        if let Some(m) = &self.metrics {
            crate::metrics::server::parse_addr(m)?;
        }
        if self.record.is_some() && self.record_queue == 0 {
            return Err("record_queue must be at least 1".into());
        }
        if self.max_connections == 0 {
            return Err("max_connections must be at least 1".into());
        }
        if self.h2_max_concurrent_streams == 0 {
            return Err("h2_max_concurrent_streams must be at least 1".into());
        }
        if self.h2_control_frame_budget < 10 {
            return Err("h2_control_frame_budget must be at least 10".into());
        }
        for kv in self
            .set_request_header
            .iter()
            .chain(&self.set_response_header)
        {
            parse_header_assignment(kv)?;
        }
        if let Some(a) = &self.proxy_auth {
            match a.split_once(':') {
                Some((u, p)) if !u.is_empty() && u.len() <= 255 && p.len() <= 255 => {}
                _ => {
                    return Err(
                        "proxy_auth must be USER:PASS (user not empty, each at most \
                         255 bytes)"
                            .into(),
                    )
                }
            }
            if matches!(mode, Mode::Reverse(_)) {
                return Err("proxy_auth applies to regular and socks5 modes, not reverse".into());
            }
        }
        Ok(mode)
    }

    /// Worker count with 0 resolved to the number of cores.
    pub fn worker_count(&self) -> usize {
        if self.workers > 0 {
            self.workers
        } else {
            std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(1)
        }
    }
}

/// Parses `NAME=VALUE` for the header rewrite step.
pub fn parse_header_assignment(kv: &str) -> Result<(String, String), String> {
    match kv.split_once('=') {
        Some((n, v))
            if !n.is_empty()
                && n.bytes().all(|b| b.is_ascii_graphic() && b != b':')
                && !v.bytes().any(|b| b == b'\r' || b == b'\n') =>
        {
            Ok((n.to_string(), v.to_string()))
        }
        _ => Err(format!(
            "bad header assignment '{kv}' (expected NAME=VALUE)"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn modes() {
        assert_eq!(Mode::parse("regular").unwrap(), Mode::Regular);
        let Mode::Reverse(u) = Mode::parse("reverse:http://127.0.0.1:9000").unwrap() else {
            panic!()
        };
        assert_eq!(
            (u.host.as_str(), u.port, u.path_prefix.as_str()),
            ("127.0.0.1", 9000, "")
        );
        let Mode::Reverse(u) = Mode::parse("reverse:http://h/api/").unwrap() else {
            panic!()
        };
        assert_eq!((u.port, u.path_prefix.as_str()), (80, "/api"));
        assert!(Mode::parse("reverse:ftp://x").is_err());
        assert_eq!(Mode::parse("socks5").unwrap(), Mode::Socks5);
        assert!(Mode::parse("socks4").unwrap_err().contains("socks5"));
    }

    #[test]
    fn file_keys_match_flags() {
        let c: Config = toml::from_str(
            "listen = \"127.0.0.1:9999\"\nmode = \"reverse:http://127.0.0.1:1\"\nmax_head_size = 1024\nplugins = [\"a.lua\"]\nio = \"epoll\"\ngrpc_web = true",
        )
        .unwrap();
        assert!(c.grpc_web && !Config::default().grpc_web);
        assert_eq!(c.listen.port(), 9999);
        assert_eq!(c.io, IoChoice::Epoll);
        assert!(toml::from_str::<Config>("nonsense = 1").is_err());
    }

    #[test]
    fn plugin_memory_limit_key() {
        assert_eq!(Config::default().plugin_memory_limit, 256 << 20);
        let c: Config = toml::from_str("plugin_memory_limit = 1048576").unwrap();
        assert_eq!(c.plugin_memory_limit, 1 << 20);
    }

    #[test]
    fn body_timeout_key() {
        let c: Config = toml::from_str("body_timeout = 5.5").unwrap();
        assert_eq!(c.body_timeout, 5.5);
        assert_eq!(Config::default().body_timeout, 60.0);
    }

    #[test]
    fn metrics_and_access_log_format_keys() {
        let c: Config = toml::from_str("metrics = \"9100\"\naccess_log_format = \"json\"").unwrap();
        assert_eq!(c.metrics.as_deref(), Some("9100"));
        assert!(c.validate().is_ok());
        let bad: Config = toml::from_str("access_log_format = \"xml\"").unwrap();
        assert!(bad.validate().unwrap_err().contains("text or json"));
        let bad: Config = toml::from_str("metrics = \"nowhere:x\"").unwrap();
        assert!(bad.validate().is_err());
        assert!(Config::default().metrics.is_none());
    }

    #[test]
    fn header_assignments() {
        assert_eq!(
            parse_header_assignment("x-a=1=2").unwrap(),
            ("x-a".into(), "1=2".into())
        );
        assert!(parse_header_assignment("=1").is_err());
        assert!(parse_header_assignment("a b=1").is_err());
    }
}

/// Parses a listening address: `ADDR:PORT`, `[V6]:PORT`, a bare `PORT` (on 127.0.0.1,
/// the safe default) or `HOST:PORT` with a name such as `localhost`.
pub fn parse_listen(s: &str) -> Result<SocketAddr, String> {
    let s = s.trim();
    if let Ok(a) = s.parse::<SocketAddr>() {
        return Ok(a);
    }
    let port_of = |p: &str| -> Result<u16, String> {
        p.parse::<u16>()
            .map_err(|_| format!("'{p}' is not a port (0-65535; 0 picks a free one)"))
    };
    if !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) {
        return Ok(SocketAddr::from(([127, 0, 0, 1], port_of(s)?)));
    }
    let Some((host, port)) = s.rsplit_once(':') else {
        return Err(format!("'{s}' is not ADDR:PORT (e.g. 127.0.0.1:8080)"));
    };
    let port = port_of(port)?;
    if host.is_empty() {
        return Err(format!(
            "'{s}' has no address: use 127.0.0.1:{port} (this machine only) or 0.0.0.0:{port} (every interface)"
        ));
    }
    if let Ok(ip) = host.trim_start_matches('[').trim_end_matches(']').parse() {
        return Ok(SocketAddr::new(ip, port));
    }
    use std::net::ToSocketAddrs;
    let addrs: Vec<SocketAddr> = (host, port)
        .to_socket_addrs()
        .map_err(|e| format!("cannot resolve '{host}': {e}"))?
        .collect();
    addrs
        .iter()
        .find(|a| a.is_ipv4())
        .or(addrs.first())
        .copied()
        .ok_or_else(|| format!("'{host}' has no address"))
}

fn listen_from_toml<'de, D: serde::Deserializer<'de>>(d: D) -> Result<SocketAddr, D::Error> {
    let s = String::deserialize(d)?;
    parse_listen(&s).map_err(serde::de::Error::custom)
}

#[cfg(test)]
mod listen_tests {
    use super::parse_listen;

    #[test]
    fn listen_forms() {
        let ok = |s: &str| parse_listen(s).unwrap().to_string();
        assert_eq!(ok("127.0.0.1:8080"), "127.0.0.1:8080");
        assert_eq!(ok("[::1]:8080"), "[::1]:8080");
        assert_eq!(ok("8080"), "127.0.0.1:8080");
        assert_eq!(ok("localhost:8080"), "127.0.0.1:8080");
        assert_eq!(ok("0"), "127.0.0.1:0");
        assert!(parse_listen(":8080").unwrap_err().contains("0.0.0.0:8080"));
        assert!(parse_listen("127.0.0.1:99999")
            .unwrap_err()
            .contains("not a port"));
        assert!(parse_listen("nonsense").is_err());
    }
}
