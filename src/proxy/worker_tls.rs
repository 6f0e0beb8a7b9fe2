//! The TLS layer of the stack: intercepting the client side (leaf certificate for
//! the SNI, JA4 of the ClientHello) and speaking TLS to upstreams.

use crate::config::Config;
use crate::io::tls_stream::as_tls_error;
use crate::io::{Deadline, Stream};
use crate::proto::client_hello::{is_tls_client_hello_start, parse_client_hello, ClientHello};
use crate::tls::{
    describe_tls_error, Ca, CaKeyType, ClientTlsFactory, Confdir, LeafCache, LeafMinter,
    Passthrough, ServerTlsFactory, SharedLeafStore, TlsInfo, UpstreamTlsOptions,
};
use bytes::BytesMut;
use rustls::pki_types::ServerName;
use std::cell::RefCell;
use std::sync::Arc;
use std::time::Duration;

/// Room made for the rest of a ClientHello larger than the read buffer: a TLS record
/// (16 KiB and its header).
const HELLO_ROOM: usize = 16 * 1024 + 5;

/// The HTTP versions luring offers in a TLS handshake.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Alpn {
    /// http/1.1 only.
    Http1,
    /// h2 first, then http/1.1.
    H2OrHttp1,
}

impl Alpn {
    fn protocols(self) -> Vec<Vec<u8>> {
        match self {
            Alpn::Http1 => vec![b"http/1.1".to_vec()],
            Alpn::H2OrHttp1 => vec![b"h2".to_vec(), b"http/1.1".to_vec()],
        }
    }
}

/// Whether a TLS stream negotiated h2.
pub fn chose_h2(stream: &Stream) -> bool {
    stream
        .tls()
        .is_some_and(|t| t.connection().alpn_protocol() == Some(b"h2"))
}

/// Process-wide TLS material, built once at start.
pub struct TlsSetup {
    store: Arc<SharedLeafStore>,
    server: ServerTlsFactory,
    client: ClientTlsFactory,
    /// Which CONNECT targets are intercepted.
    pub passthrough: Passthrough,
    cache_size: usize,
}

impl TlsSetup {
    /// Loads (or on first run creates) the CA and builds both sides' configs.
    pub fn from_config(cfg: &Config) -> Result<TlsSetup, String> {
        let dir = Confdir::resolve(cfg.confdir.clone()).map_err(|e| e.to_string())?;
        let key_type: CaKeyType = cfg.ca_key_type.parse()?;
        let ca = with_dir_lock(&dir, || Ca::load_or_create(&dir, key_type))
            .map_err(|e| format!("CA: {e}"))?;
        let minter = LeafMinter::new(Arc::new(ca)).map_err(|e| format!("CA: {e}"))?;
        let client_certs = cfg
            .client_cert
            .iter()
            .map(|a| crate::tls::config::parse_client_cert_arg(a).map_err(|e| e.to_string()))
            .collect::<Result<Vec<_>, _>>()?;
        let client = ClientTlsFactory::new(&UpstreamTlsOptions {
            insecure: cfg.insecure,
            extra_ca_files: cfg.upstream_ca.clone(),
            native_roots: false,
            client_certs,
        })
        .map_err(|e| e.to_string())?;
        Ok(TlsSetup {
            store: SharedLeafStore::new(minter, cfg.cert_cache_size),
            server: ServerTlsFactory::new().map_err(|e| e.to_string())?,
            client,
            passthrough: Passthrough::new(&cfg.ignore_hosts, &cfg.allow_hosts)
                .map_err(|e| e.to_string())?,
            cache_size: cfg.cert_cache_size,
        })
    }
}

/// Serializes CA creation between processes started at once (test suites, systemd
/// templates): the loser of the race then loads what the winner wrote.
pub(crate) fn with_dir_lock<T>(dir: &Confdir, f: impl FnOnce() -> T) -> T {
    use std::os::unix::fs::DirBuilderExt;
    // same mode as the CA code would use: the directory holds the CA key
    let _ = std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir.path());
    let lock = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(dir.path().join(".lock"));
    if let Ok(l) = &lock {
        crate::io::os::lock_exclusive(l);
    }
    f()
}

/// Subject alternative names of the certificate an upstream TLS stream presented.
pub fn peer_sans(stream: &Stream) -> Vec<String> {
    let Some(tls) = stream.tls() else {
        return Vec::new();
    };
    let conn = tls.connection();
    match conn.peer_certificates().and_then(|c| c.first()) {
        Some(der) => crate::tls::sans_from_der(der),
        None => Vec::new(),
    }
}

/// One worker's view: the shared setup plus a lock-free local leaf cache.
pub struct WorkerTls {
    setup: Arc<TlsSetup>,
    leaves: RefCell<LeafCache>,
}

/// What the proxy's side of a client handshake offers.
pub struct Offer<'a> {
    /// Names copied into the leaf from the upstream's certificate (`--upstream-cert`).
    pub upstream_sans: Option<&'a [String]>,
    /// Protocols offered in ALPN.
    pub alpn: Alpn,
}

/// A completed client-side interception.
pub struct Accepted {
    /// Handshake details for tls.on_handshake.
    pub info: TlsInfo,
    /// The name the client asked for (SNI, else the fallback host).
    pub server_name: String,
}

impl WorkerTls {
    /// The worker's TLS state over the process-wide setup.
    pub fn new(setup: Arc<TlsSetup>) -> WorkerTls {
        let leaves = LeafCache::new(setup.store.clone(), setup.cache_size);
        WorkerTls {
            setup,
            leaves: RefCell::new(leaves),
        }
    }

    /// Whether a tunnel to host:port whose ClientHello named `sni` is intercepted.
    pub fn intercepts_any(&self, host: &str, sni: Option<&str>, port: u16) -> bool {
        match sni {
            Some(name) if name != host => self
                .setup
                .passthrough
                .should_intercept_any(&[host, name], port),
            _ => self.setup.passthrough.should_intercept(host, port),
        }
    }

    /// Reads a whole ClientHello from `stream` into `buf` (which may already hold its
    /// start) by `deadline` (the connection's read deadline, armed by the caller: a
    /// timer of its own would be put in the wheel and taken out again on every
    /// connection). Ok(None): the bytes are not TLS.
    pub async fn read_client_hello(
        stream: &Stream,
        buf: &mut BytesMut,
        deadline: &Deadline,
    ) -> Result<Option<ClientHello>, String> {
        loop {
            match is_tls_client_hello_start(buf) {
                Some(false) => return Ok(None),
                Some(true) => match parse_client_hello(buf) {
                    Ok(Some(h)) => return Ok(Some(h)),
                    Ok(None) => {}
                    Err(e) => return Err(format!("bad ClientHello: {e}")),
                },
                None => {}
            }
            // A new connection's first read goes into the buffer it came with (the
            // 2 KiB a request head is read into: most heads fit, and most
            // ClientHellos); making room for 4 KiB, as other reads do, would swap it
            // for a 64 KiB one on every connection. A ClientHello that outgrows it
            // gets room for a whole TLS record.
            if buf.capacity() - buf.len() < 512 {
                buf.reserve(HELLO_ROOM);
            }
            match crate::proxy::body_relay::read_spare_by(stream, buf, deadline, usize::MAX).await {
                Ok(0) => return Err("client closed before its ClientHello was complete".into()),
                Ok(_) => {}
                Err(e) => return Err(format!("reading the ClientHello: {e}")),
            }
        }
    }

    /// Terminates the client's TLS on `stream` (whose first bytes, the ClientHello,
    /// are in `buf`) with a leaf for its SNI or `fallback_host`, as `offer` says.
    pub async fn accept(
        &self,
        stream: &mut Stream,
        buf: &mut BytesMut,
        hello: &ClientHello,
        fallback_host: &str,
        offer: Offer<'_>,
        timeout: Duration,
    ) -> Result<Accepted, String> {
        let Offer {
            upstream_sans,
            alpn,
        } = offer;
        let name = hello
            .sni
            .clone()
            .unwrap_or_else(|| fallback_host.to_string());
        crate::metrics::leaf_lookup();
        let leaf = self
            .leaves
            .borrow_mut()
            .get(&name, upstream_sans)
            .map_err(|e| format!("cannot mint a certificate for {name}: {e}"))?;
        let config = self.setup.server.config_for_cert(leaf, &alpn.protocols());
        let conn = rustls::ServerConnection::new(config).map_err(|e| e.to_string())?;
        stream.wrap_tls(conn, std::mem::take(buf));
        let Some(tls) = stream.tls() else {
            return Err("TLS wrap failed".into());
        };
        let done = tokio::time::timeout(timeout, tls.handshake()).await;
        crate::metrics::tls_handshake(false, matches!(done, Ok(Ok(()))));
        match done {
            Ok(Ok(())) => {}
            Ok(Err(e)) => return Err(format!("client TLS handshake failed: {e}")),
            Err(_) => {
                tls.inner().shutdown(std::net::Shutdown::Both);
                return Err("client TLS handshake timed out".into());
            }
        }
        let info = match &*tls.connection() {
            rustls::Connection::Server(s) => TlsInfo::from_server(s, Some(hello)),
            rustls::Connection::Client(_) => return Err("unexpected client session".into()),
        };
        Ok(Accepted {
            info,
            server_name: name,
        })
    }

    /// Starts TLS to an upstream on `stream`, verifying its certificate for `host`
    /// unless `--insecure`. The error text is what the client's 502 says.
    pub async fn connect(
        &self,
        stream: &mut Stream,
        host: &str,
        alpn: Alpn,
        timeout: Duration,
    ) -> Result<TlsInfo, String> {
        let name = ServerName::try_from(host.to_string())
            .map_err(|_| format!("'{host}' is not a valid TLS server name"))?;
        let config = self.setup.client.config_for(host, &alpn.protocols());
        let conn = rustls::ClientConnection::new(config, name).map_err(|e| e.to_string())?;
        stream.wrap_tls(conn, BytesMut::new());
        let Some(tls) = stream.tls() else {
            return Err("TLS wrap failed".into());
        };
        let done = tokio::time::timeout(timeout, tls.handshake()).await;
        crate::metrics::tls_handshake(true, matches!(done, Ok(Ok(()))));
        match done {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                return Err(match as_tls_error(&e) {
                    Some(te) => describe_tls_error(te, host),
                    None => format!("TLS handshake with upstream {host} failed: {e}"),
                })
            }
            Err(_) => {
                tls.inner().shutdown(std::net::Shutdown::Both);
                return Err(format!("TLS handshake with upstream {host} timed out"));
            }
        }
        match &*tls.connection() {
            rustls::Connection::Client(c) => Ok(TlsInfo::from_client(c, Some(host))),
            rustls::Connection::Server(_) => Err("unexpected server session".into()),
        }
    }
}
