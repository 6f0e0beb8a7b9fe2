//! Handshake facts handed to `tls.on_handshake` hooks (spec/hooks.md section 4,
//! "TLS handshake dict").

use rustls::{ClientConnection, CommonState, ProtocolVersion, ServerConnection};

use crate::proto::client_hello::{ja3, ja3_string, ja4, ClientHello};

/// Which side of the proxy a handshake was on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TlsSide {
    /// The proxy facing the client (proxy is the TLS server).
    Server,
    /// The proxy facing the upstream (proxy is the TLS client).
    Client,
}

impl TlsSide {
    /// The hook dict value: `"server"` or `"client"`.
    pub fn as_str(self) -> &'static str {
        match self {
            TlsSide::Server => "server",
            TlsSide::Client => "client",
        }
    }
}

/// One completed handshake, as the hook dict shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsInfo {
    /// Which side.
    pub side: TlsSide,
    /// Server name: what the client sent (server side) or what we sent (client side).
    pub sni: Option<String>,
    /// Negotiated ALPN protocol, lossily decoded.
    pub alpn: Option<String>,
    /// `"TLSv1.3"`, `"TLSv1.2"`, ...
    pub version_name: Option<&'static str>,
    /// IANA cipher suite name, e.g. `TLS_AES_128_GCM_SHA256`.
    pub cipher_name: Option<String>,
    /// Subject DN of the peer's end-entity certificate, if it sent one.
    pub peer_cert_subject: Option<String>,
    /// JA4 of the client's ClientHello (server side only).
    pub client_fingerprint: Option<String>,
    /// JA3 MD5 of the client's ClientHello (server side only).
    pub ja3: Option<String>,
    /// JA3 input string (server side only).
    pub ja3_string: Option<String>,
}

impl TlsInfo {
    /// From the proxy's server-side connection after the handshake, plus the
    /// ClientHello the proxy parsed before handing bytes to rustls.
    pub fn from_server(conn: &ServerConnection, hello: Option<&ClientHello>) -> Self {
        let sni = conn
            .server_name()
            .map(str::to_owned)
            .or_else(|| hello.and_then(|h| h.sni.clone()));
        let mut info = Self::common(TlsSide::Server, conn, sni);
        if let Some(h) = hello {
            info.client_fingerprint = Some(ja4(h));
            info.ja3 = Some(ja3(h));
            info.ja3_string = Some(ja3_string(h));
        }
        info
    }

    /// From the proxy's upstream connection after the handshake; `sni` is the name
    /// the proxy sent (rustls does not expose it back).
    pub fn from_client(conn: &ClientConnection, sni: Option<&str>) -> Self {
        Self::common(TlsSide::Client, conn, sni.map(str::to_owned))
    }

    fn common(side: TlsSide, conn: &CommonState, sni: Option<String>) -> Self {
        TlsInfo {
            side,
            sni,
            alpn: conn
                .alpn_protocol()
                .map(|p| String::from_utf8_lossy(p).into_owned()),
            version_name: conn.protocol_version().map(version_name),
            cipher_name: conn
                .negotiated_cipher_suite()
                .map(|s| iana_cipher_name(s.suite())),
            peer_cert_subject: conn
                .peer_certificates()
                .and_then(|certs| certs.first())
                .and_then(|der| x509_parser::parse_x509_certificate(der).ok())
                .map(|(_, cert)| cert.subject().to_string()),
            client_fingerprint: None,
            ja3: None,
            ja3_string: None,
        }
    }
}

/// Hook-facing protocol name, in the OpenSSL/mitmproxy spelling.
pub fn version_name(v: ProtocolVersion) -> &'static str {
    match v {
        ProtocolVersion::TLSv1_3 => "TLSv1.3",
        ProtocolVersion::TLSv1_2 => "TLSv1.2",
        ProtocolVersion::TLSv1_1 => "TLSv1.1",
        ProtocolVersion::TLSv1_0 => "TLSv1",
        ProtocolVersion::SSLv3 => "SSLv3",
        _ => "unknown",
    }
}

/// IANA name of a cipher suite; rustls spells TLS 1.3 suites `TLS13_*`.
pub fn iana_cipher_name(suite: rustls::CipherSuite) -> String {
    match suite.as_str() {
        Some(name) => match name.strip_prefix("TLS13_") {
            Some(rest) => format!("TLS_{rest}"),
            None => name.to_owned(),
        },
        None => format!("0x{:04x}", u16::from(suite)),
    }
}
