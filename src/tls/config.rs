//! rustls configurations for both sides of an intercepted connection.
//!
//! Server side (proxy facing the client): a template `ServerConfig` is cloned per
//! connection, which costs a few small allocations and lets each connection carry
//! its own certificate resolver and ALPN list. rustls resolvers are shared,
//! `Send + Sync` objects that only see the ClientHello, so per-connection facts (the
//! CONNECT host to fall back on without SNI, the ALPN the upstream accepted) travel
//! inside the per-connection config rather than through global state.
//!
//! Client side (proxy facing the upstream): roots from webpki-roots, plus optional
//! native roots and `--upstream-ca` files; `--client-cert HOST=FILE` is honoured by
//! giving that host's connections a config whose resolver returns that certificate
//! (rustls' `ResolvesClientCert` is not told the server name).

use std::collections::HashMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::ResolvesClientCert;
use rustls::client::WebPkiServerVerifier;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::server::{ClientHello as RustlsClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls::{
    CertificateError, ClientConfig, DigitallySignedStruct, Error as RustlsError, RootCertStore,
    ServerConfig, SignatureScheme,
};

use super::leaf::{provider, SharedLeafStore};

/// Errors building a TLS configuration from user options.
#[derive(Debug, thiserror::Error)]
pub enum TlsConfigError {
    /// A file could not be read.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// A PEM file has no usable content.
    #[error("{path}: {reason}")]
    BadPem {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// A `--client-cert` argument is not `HOST=FILE`.
    #[error("--client-cert {0:?}: expected HOST=FILE")]
    BadClientCertArg(String),
    /// rustls rejected the configuration.
    #[error("TLS configuration: {0}")]
    Rustls(#[from] RustlsError),
    /// The certificate verifier could not be built from the roots.
    #[error("upstream certificate verifier: {0}")]
    Verifier(String),
}

/// Always presents one certificate: the leaf picked by the proxy before the
/// handshake (from its own ClientHello parse), so the hit path takes no lock.
#[derive(Debug)]
pub struct FixedLeafResolver(pub Arc<CertifiedKey>);

impl ResolvesServerCert for FixedLeafResolver {
    fn resolve(&self, _hello: RustlsClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.0.clone())
    }
}

/// Mints or looks up the leaf from the SNI rustls saw, falling back to the host
/// the connection was created for (CONNECT target or transparent destination).
#[derive(Debug)]
pub struct SniLeafResolver {
    store: Arc<SharedLeafStore>,
    fallback_host: Option<String>,
    upstream_sans: Option<Vec<String>>,
}

impl SniLeafResolver {
    /// A resolver over the shared store, with this connection's fallback host.
    pub fn new(
        store: Arc<SharedLeafStore>,
        fallback_host: Option<String>,
        upstream_sans: Option<Vec<String>>,
    ) -> Self {
        Self {
            store,
            fallback_host,
            upstream_sans,
        }
    }
}

impl ResolvesServerCert for SniLeafResolver {
    fn resolve(&self, hello: RustlsClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let host = hello.server_name().or(self.fallback_host.as_deref())?;
        // Returning None makes rustls abort the handshake with an alert, which is
        // the only sensible outcome when no certificate can be produced.
        self.store
            .get_or_mint(host, self.upstream_sans.as_deref())
            .ok()
    }
}

/// Builds per-connection server configs from one template.
#[derive(Debug, Clone)]
pub struct ServerTlsFactory {
    template: ServerConfig,
}

impl ServerTlsFactory {
    /// TLS 1.2 and 1.3, ring, no client auth; `SSLKEYLOGFILE` honoured when set.
    pub fn new() -> Result<Self, TlsConfigError> {
        let mut template = ServerConfig::builder_with_provider(provider().clone())
            .with_safe_default_protocol_versions()?
            .with_no_client_auth()
            .with_cert_resolver(Arc::new(NoCert));
        template.key_log = Arc::new(rustls::KeyLogFile::new());
        Ok(Self { template })
    }

    /// Config presenting `cert`, offering `alpn` (what the upstream accepted; empty
    /// for no ALPN). The fast path: the caller resolved the leaf from its own
    /// ClientHello parse and a worker-local [`super::leaf::LeafCache`].
    pub fn config_for_cert(&self, cert: Arc<CertifiedKey>, alpn: &[Vec<u8>]) -> Arc<ServerConfig> {
        self.with_resolver(Arc::new(FixedLeafResolver(cert)), alpn)
    }

    /// Config resolving the leaf from the SNI rustls parses, falling back to
    /// `fallback_host`; for callers that did not parse the ClientHello themselves.
    pub fn config_for_sni(
        &self,
        store: Arc<SharedLeafStore>,
        fallback_host: Option<&str>,
        upstream_sans: Option<&[String]>,
        alpn: &[Vec<u8>],
    ) -> Arc<ServerConfig> {
        let resolver = SniLeafResolver::new(
            store,
            fallback_host.map(str::to_owned),
            upstream_sans.map(<[String]>::to_vec),
        );
        self.with_resolver(Arc::new(resolver), alpn)
    }

    fn with_resolver(
        &self,
        resolver: Arc<dyn ResolvesServerCert>,
        alpn: &[Vec<u8>],
    ) -> Arc<ServerConfig> {
        let mut cfg = self.template.clone();
        cfg.cert_resolver = resolver;
        cfg.alpn_protocols = alpn.to_vec();
        Arc::new(cfg)
    }
}

/// Placeholder resolver of the template; every real config replaces it.
#[derive(Debug)]
struct NoCert;

impl ResolvesServerCert for NoCert {
    fn resolve(&self, _hello: RustlsClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        None
    }
}

/// Options for connections to upstream servers.
#[derive(Debug, Clone, Default)]
pub struct UpstreamTlsOptions {
    /// Accept any upstream certificate (`--insecure`/`-k`). Handshake signatures are
    /// still checked against the presented certificate, which costs nothing and
    /// catches broken peers, but gives no security: anyone can present any cert.
    pub insecure: bool,
    /// Extra trusted CA files (`--upstream-ca FILE`, PEM, several certs allowed).
    pub extra_ca_files: Vec<PathBuf>,
    /// Also trust the system store (rustls-native-certs; reads local files only).
    pub native_roots: bool,
    /// Client certificates per host (`--client-cert HOST=FILE`); `*` matches any host.
    pub client_certs: Vec<(String, PathBuf)>,
}

/// Parses a `--client-cert HOST=FILE` argument.
pub fn parse_client_cert_arg(arg: &str) -> Result<(String, PathBuf), TlsConfigError> {
    match arg.split_once('=') {
        Some((host, file)) if !host.is_empty() && !file.is_empty() => {
            Ok((host.to_ascii_lowercase(), PathBuf::from(file)))
        }
        _ => Err(TlsConfigError::BadClientCertArg(arg.to_owned())),
    }
}

/// Builds per-connection client configs for upstream connections.
#[derive(Debug, Clone)]
pub struct ClientTlsFactory {
    base: ClientConfig,
    client_certs: HashMap<String, Arc<CertifiedKey>>,
    roots: Arc<RootCertStore>,
}

impl ClientTlsFactory {
    /// Loads roots, extra CAs and client certificates; file problems are errors
    /// naming the file.
    pub fn new(opts: &UpstreamTlsOptions) -> Result<Self, TlsConfigError> {
        let mut roots = RootCertStore::empty();
        roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
        if opts.native_roots {
            // Unreadable system bundles are skipped: native roots only add trust.
            let native = rustls_native_certs::load_native_certs();
            roots.add_parsable_certificates(native.certs);
        }
        for path in &opts.extra_ca_files {
            let certs = read_certs(path)?;
            let (added, _) = roots.add_parsable_certificates(certs);
            if added == 0 {
                return Err(TlsConfigError::BadPem {
                    path: path.clone(),
                    reason: "no usable CA certificate".into(),
                });
            }
        }
        let roots = Arc::new(roots);
        let builder = ClientConfig::builder_with_provider(provider().clone())
            .with_safe_default_protocol_versions()?;
        let webpki = WebPkiServerVerifier::builder_with_provider(roots.clone(), provider().clone())
            .build()
            .map_err(|e| TlsConfigError::Verifier(e.to_string()))?;
        let mut pinned = Vec::new();
        for path in &opts.extra_ca_files {
            pinned.extend(read_certs(path)?);
        }
        let verifier = Arc::new(UpstreamVerifier {
            webpki,
            pinned,
            insecure: opts.insecure,
        });
        let mut base = builder
            .dangerous()
            .with_custom_certificate_verifier(verifier)
            .with_no_client_auth();
        base.key_log = Arc::new(rustls::KeyLogFile::new());
        let mut client_certs = HashMap::new();
        for (host, path) in &opts.client_certs {
            client_certs.insert(
                host.to_ascii_lowercase(),
                Arc::new(read_cert_and_key(path)?),
            );
        }
        Ok(Self {
            base,
            client_certs,
            roots,
        })
    }

    /// The trust anchors used when verification is on.
    pub fn roots(&self) -> &Arc<RootCertStore> {
        &self.roots
    }

    /// Config for a connection to `host` offering `alpn` (usually the client's list).
    pub fn config_for(&self, host: &str, alpn: &[Vec<u8>]) -> Arc<ClientConfig> {
        let mut cfg = self.base.clone();
        cfg.alpn_protocols = alpn.to_vec();
        let host = host.trim_end_matches('.').to_ascii_lowercase();
        if let Some(ck) = self
            .client_certs
            .get(&host)
            .or_else(|| self.client_certs.get("*"))
        {
            cfg.client_auth_cert_resolver = Arc::new(HostClientCert(ck.clone()));
        }
        Arc::new(cfg)
    }
}

/// Presents the one client certificate configured for this connection's host.
#[derive(Debug)]
struct HostClientCert(Arc<CertifiedKey>);

impl ResolvesClientCert for HostClientCert {
    fn resolve(
        &self,
        _root_hint_subjects: &[&[u8]],
        _sigschemes: &[SignatureScheme],
    ) -> Option<Arc<CertifiedKey>> {
        Some(self.0.clone())
    }

    fn has_certs(&self) -> bool {
        true
    }
}

/// Verifies upstream certificates with webpki against the roots, and also accepts a
/// server certificate that is itself one of the `--upstream-ca` certificates: a
/// self-signed certificate trusted directly, as OpenSSL-based clients do. webpki alone
/// refuses those when they carry `CA:TRUE` (what `openssl req -x509` makes by default).
/// Such a certificate must still be valid now and name the host.
///
/// With `insecure` any certificate is accepted: chain and name are not checked, but the
/// handshake signature still is, against the presented certificate's key (free, and it
/// catches broken peers). That gives no security.
#[derive(Debug)]
struct UpstreamVerifier {
    webpki: Arc<WebPkiServerVerifier>,
    pinned: Vec<CertificateDer<'static>>,
    insecure: bool,
}

impl ServerCertVerifier for UpstreamVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, RustlsError> {
        if self.insecure {
            return Ok(ServerCertVerified::assertion());
        }
        let err = match self.webpki.verify_server_cert(
            end_entity,
            intermediates,
            server_name,
            ocsp_response,
            now,
        ) {
            Ok(v) => return Ok(v),
            Err(e) => e,
        };
        if !self
            .pinned
            .iter()
            .any(|p| p.as_ref() == end_entity.as_ref())
        {
            return Err(err);
        }
        check_pinned(end_entity, server_name, now)?;
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, RustlsError> {
        self.webpki.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, RustlsError> {
        self.webpki.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.webpki.supported_verify_schemes()
    }
}

/// Validity period and names of a directly trusted certificate.
fn check_pinned(
    der: &CertificateDer<'_>,
    server_name: &ServerName<'_>,
    now: UnixTime,
) -> Result<(), RustlsError> {
    let bad = |e| Err(RustlsError::InvalidCertificate(e));
    let Ok((_, cert)) = x509_parser::parse_x509_certificate(der) else {
        return bad(CertificateError::BadEncoding);
    };
    let now = now.as_secs() as i64;
    let validity = cert.validity();
    if now < validity.not_before.timestamp() {
        return bad(CertificateError::NotValidYet);
    }
    if now > validity.not_after.timestamp() {
        return bad(CertificateError::Expired);
    }
    let sans = crate::tls::sans_from_der(der);
    let matches = match server_name {
        ServerName::DnsName(d) => sans.iter().any(|san| dns_matches(san, d.as_ref())),
        ServerName::IpAddress(ip) => {
            let ip = std::net::IpAddr::from(*ip);
            sans.iter()
                .any(|san| san.parse::<std::net::IpAddr>() == Ok(ip))
        }
        _ => false,
    };
    if matches {
        Ok(())
    } else {
        bad(CertificateError::NotValidForName)
    }
}

/// RFC 6125 matching: case-insensitive, a wildcard only as the whole leftmost label.
fn dns_matches(pattern: &str, host: &str) -> bool {
    let pattern = pattern.trim_end_matches('.');
    let host = host.trim_end_matches('.');
    match pattern.strip_prefix("*.") {
        Some(rest) => host
            .split_once('.')
            .is_some_and(|(first, tail)| !first.is_empty() && tail.eq_ignore_ascii_case(rest)),
        None => pattern.eq_ignore_ascii_case(host),
    }
}

fn read_pem(path: &Path) -> Result<Vec<u8>, TlsConfigError> {
    fs::read(path).map_err(|source| TlsConfigError::Io {
        path: path.to_owned(),
        source,
    })
}

/// All certificates of a PEM file; none is an error.
pub fn read_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsConfigError> {
    let data = read_pem(path)?;
    let certs = rustls_pemfile::certs(&mut data.as_slice())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| TlsConfigError::BadPem {
            path: path.to_owned(),
            reason: e.to_string(),
        })?;
    if certs.is_empty() {
        return Err(TlsConfigError::BadPem {
            path: path.to_owned(),
            reason: "no CERTIFICATE block".into(),
        });
    }
    Ok(certs)
}

/// A PEM file holding a certificate chain and its private key, as a rustls key.
pub fn read_cert_and_key(path: &Path) -> Result<CertifiedKey, TlsConfigError> {
    let data = read_pem(path)?;
    let bad = |reason: String| TlsConfigError::BadPem {
        path: path.to_owned(),
        reason,
    };
    let certs = rustls_pemfile::certs(&mut data.as_slice())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| bad(e.to_string()))?;
    if certs.is_empty() {
        return Err(bad("no CERTIFICATE block".into()));
    }
    let key = rustls_pemfile::private_key(&mut data.as_slice())
        .map_err(|e| bad(e.to_string()))?
        .ok_or_else(|| bad("no PRIVATE KEY block".into()))?;
    CertifiedKey::from_der(certs, key, provider())
        .map_err(|e| bad(format!("key does not fit: {e}")))
}

/// A short reason for a failed upstream handshake, for the proxy's 502 body.
pub fn describe_tls_error(err: &RustlsError, host: &str) -> String {
    use CertificateError as C;
    match err {
        RustlsError::InvalidCertificate(cert) => match cert {
            // self-signed, an untrusted root, a missing intermediate
            C::UnknownIssuer => {
                "upstream certificate not trusted: unknown issuer (UnknownIssuer)".to_owned()
            }
            C::NotValidForName | C::NotValidForNameContext { .. } => {
                format!("upstream certificate is not valid for host {host}")
            }
            C::Expired | C::ExpiredContext { .. } => "upstream certificate expired".to_owned(),
            C::NotValidYet | C::NotValidYetContext { .. } => {
                "upstream certificate not yet valid".to_owned()
            }
            C::Revoked => "upstream certificate revoked".to_owned(),
            // ring verifies RSA signatures from 2048-bit keys only: a weak key lands here
            C::BadSignature
            | C::UnsupportedSignatureAlgorithmContext { .. }
            | C::UnsupportedSignatureAlgorithmForPublicKeyContext { .. } => {
                "upstream certificate has a bad or unsupported signature or key (an RSA key \
                 under 2048 bits is refused)"
                    .to_owned()
            }
            C::Other(e) if format!("{e:?}").contains("CaUsedAsEndEntity") => {
                "upstream certificate is a CA certificate, not a server certificate".to_owned()
            }
            C::InvalidPurpose | C::InvalidPurposeContext { .. } => {
                "upstream certificate is not valid for server authentication".to_owned()
            }
            other => format!("upstream certificate rejected: {other:?}"),
        },
        RustlsError::AlertReceived(alert) => format!("upstream sent TLS alert: {alert:?}"),
        RustlsError::NoApplicationProtocol => "no ALPN protocol in common with upstream".to_owned(),
        RustlsError::PeerIncompatible(why) => format!("upstream TLS incompatible: {why:?}"),
        RustlsError::PeerMisbehaved(why) => format!("upstream TLS misbehaved: {why:?}"),
        RustlsError::InvalidMessage(why) => {
            format!("upstream sent an invalid TLS message: {why:?}")
        }
        RustlsError::NoCertificatesPresented => "upstream presented no certificate".to_owned(),
        other => format!("upstream TLS error: {other}"),
    }
}

#[cfg(test)]
mod tests;
