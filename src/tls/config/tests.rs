//! In-memory handshakes: rustls client <-> rustls server through byte buffers.

use super::*;
use crate::proto::client_hello::{ja4, parse_client_hello};
use crate::tls::ca::{test_ca, test_dir};
use crate::tls::info::{TlsInfo, TlsSide};
use crate::tls::leaf::{sans_from_der, LeafCache, LeafMinter, SharedLeafStore};
use rustls::{ClientConnection, ServerConnection};

/// Moves bytes both ways until both handshakes finish or one side fails. Returns
/// the client's first flight (its ClientHello records).
fn pump(
    client: &mut ClientConnection,
    server: &mut ServerConnection,
) -> Result<Vec<u8>, (TlsSide, RustlsError)> {
    let mut first_flight = Vec::new();
    for _ in 0..20 {
        let mut buf = Vec::new();
        while client.wants_write() {
            client.write_tls(&mut buf).unwrap();
        }
        if first_flight.is_empty() {
            first_flight = buf.clone();
        }
        if !buf.is_empty() {
            server.read_tls(&mut buf.as_slice()).unwrap();
            if let Err(e) = server.process_new_packets() {
                // Let the client see the server's alert, as on a real wire.
                let mut alert = Vec::new();
                let _ = server.write_tls(&mut alert);
                let _ = client.read_tls(&mut alert.as_slice());
                let _ = client.process_new_packets();
                return Err((TlsSide::Server, e));
            }
        }
        let mut buf = Vec::new();
        while server.wants_write() {
            server.write_tls(&mut buf).unwrap();
        }
        if !buf.is_empty() {
            client.read_tls(&mut buf.as_slice()).unwrap();
            client
                .process_new_packets()
                .map_err(|e| (TlsSide::Client, e))?;
        }
        if !client.is_handshaking()
            && !server.is_handshaking()
            && !client.wants_write()
            && !server.wants_write()
        {
            return Ok(first_flight);
        }
    }
    panic!("handshake did not finish");
}

fn alpn(list: &[&str]) -> Vec<Vec<u8>> {
    list.iter().map(|p| p.as_bytes().to_vec()).collect()
}

fn name(host: &str) -> ServerName<'static> {
    ServerName::try_from(host.to_owned()).unwrap()
}

/// A client config trusting only `ca_pem_file`, via the factory under test.
fn trusting_factory(ca_pem: &Path) -> ClientTlsFactory {
    ClientTlsFactory::new(&UpstreamTlsOptions {
        extra_ca_files: vec![ca_pem.to_owned()],
        ..UpstreamTlsOptions::default()
    })
    .unwrap()
}

#[test]
fn sni_chosen_leaf_verifies_and_negotiates_alpn() {
    let ca = test_ca("hs-main");
    let shared = SharedLeafStore::new(LeafMinter::new(ca.clone()).unwrap(), 100);
    let mut worker = LeafCache::new(shared, 100);
    let server_factory = ServerTlsFactory::new().unwrap();
    let clients = trusting_factory(&ca.info().cert_pem_path);

    let ccfg = clients.config_for("example.com", &alpn(&["h2", "http/1.1"]));
    let mut client = ClientConnection::new(ccfg, name("example.com")).unwrap();

    // What the proxy does: peek the ClientHello, pick the leaf, then start rustls.
    let mut hello_bytes = Vec::new();
    client.write_tls(&mut hello_bytes).unwrap();
    let hello = parse_client_hello(&hello_bytes).unwrap().unwrap();
    assert_eq!(hello.sni.as_deref(), Some("example.com"));
    let leaf = worker.get(hello.sni.as_deref().unwrap(), None).unwrap();
    // Upstream accepted only http/1.1, so that is all the client is offered.
    let scfg = server_factory.config_for_cert(leaf, &alpn(&["http/1.1"]));
    let mut server = ServerConnection::new(scfg).unwrap();
    server.read_tls(&mut hello_bytes.as_slice()).unwrap();
    server.process_new_packets().unwrap();
    pump(&mut client, &mut server).unwrap();

    assert_eq!(client.alpn_protocol(), Some(&b"http/1.1"[..]));
    assert_eq!(server.server_name(), Some("example.com"));
    let presented = client.peer_certificates().unwrap();
    assert_eq!(sans_from_der(&presented[0]), vec!["example.com".to_owned()]);

    let s_info = TlsInfo::from_server(&server, Some(&hello));
    assert_eq!(s_info.side.as_str(), "server");
    assert_eq!(s_info.sni.as_deref(), Some("example.com"));
    assert_eq!(s_info.alpn.as_deref(), Some("http/1.1"));
    assert_eq!(s_info.version_name, Some("TLSv1.3"));
    assert!(
        s_info
            .cipher_name
            .as_deref()
            .unwrap()
            .starts_with("TLS_AES_")
            || s_info.cipher_name.as_deref() == Some("TLS_CHACHA20_POLY1305_SHA256")
    );
    assert_eq!(s_info.peer_cert_subject, None, "client sent no certificate");
    let fp = s_info.client_fingerprint.clone().unwrap();
    assert_eq!(fp, ja4(&hello));
    assert!(fp.starts_with("t13d") && fp[6..10].ends_with("h2"), "{fp}");
    assert_eq!(s_info.ja3.as_ref().map(String::len), Some(32));

    let c_info = TlsInfo::from_client(&client, Some("example.com"));
    assert_eq!(c_info.side, TlsSide::Client);
    assert_eq!(c_info.peer_cert_subject.as_deref(), Some("CN=example.com"));
    assert_eq!(c_info.client_fingerprint, None);
    assert_eq!(c_info.cipher_name, s_info.cipher_name);
}

#[test]
fn sni_resolver_and_fallback_host() {
    let ca = test_ca("hs-sni");
    let shared = SharedLeafStore::new(LeafMinter::new(ca.clone()).unwrap(), 100);
    let server_factory = ServerTlsFactory::new().unwrap();
    let clients = trusting_factory(&ca.info().cert_pem_path);

    // SNI present: the resolver uses it, not the fallback.
    let scfg = server_factory.config_for_sni(shared.clone(), Some("fallback.test"), None, &[]);
    let mut server = ServerConnection::new(scfg).unwrap();
    let mut client =
        ClientConnection::new(clients.config_for("sni.test", &[]), name("sni.test")).unwrap();
    pump(&mut client, &mut server).unwrap();
    assert_eq!(
        sans_from_der(&client.peer_certificates().unwrap()[0]),
        vec!["sni.test".to_owned()]
    );
    assert_eq!(client.alpn_protocol(), None);

    // No SNI (rustls sends none for an IP): the CONNECT host given at creation is used.
    let scfg = server_factory.config_for_sni(shared, Some("127.0.0.1"), None, &[]);
    let mut server = ServerConnection::new(scfg).unwrap();
    let mut client =
        ClientConnection::new(clients.config_for("127.0.0.1", &[]), name("127.0.0.1")).unwrap();
    pump(&mut client, &mut server).unwrap();
    assert_eq!(server.server_name(), None);
    assert_eq!(
        sans_from_der(&client.peer_certificates().unwrap()[0]),
        vec!["127.0.0.1".to_owned()]
    );
}

/// Runs a client built by `clients` for `host` against a server presenting a leaf
/// for `leaf_host`, returning the client's error description.
fn upstream_failure(
    clients: &ClientTlsFactory,
    store: &Arc<SharedLeafStore>,
    host: &str,
    leaf_host: &str,
) -> Option<String> {
    let leaf = store.get_or_mint(leaf_host, None).unwrap();
    let mut server =
        ServerConnection::new(ServerTlsFactory::new().unwrap().config_for_cert(leaf, &[])).unwrap();
    let mut client = ClientConnection::new(clients.config_for(host, &[]), name(host)).unwrap();
    match pump(&mut client, &mut server) {
        Ok(_) => None,
        Err((TlsSide::Client, e)) => Some(describe_tls_error(&e, host)),
        Err((TlsSide::Server, e)) => panic!("server failed first: {e}"),
    }
}

#[test]
fn upstream_verification_failures_are_readable() {
    let ca = test_ca("hs-fail");
    let store = SharedLeafStore::new(LeafMinter::new(ca.clone()).unwrap(), 100);

    // webpki-roots only: our CA is unknown, like a real upstream with a private CA.
    let public_only = ClientTlsFactory::new(&UpstreamTlsOptions::default()).unwrap();
    assert!(public_only.roots().len() > 50);
    assert_eq!(
        upstream_failure(&public_only, &store, "example.com", "example.com").as_deref(),
        Some("upstream certificate not trusted: unknown issuer (UnknownIssuer)")
    );

    let trusting = trusting_factory(&ca.info().cert_pem_path);
    assert_eq!(
        upstream_failure(&trusting, &store, "example.com", "example.com"),
        None
    );
    assert_eq!(
        upstream_failure(&trusting, &store, "example.com", "other.test").as_deref(),
        Some("upstream certificate is not valid for host example.com")
    );

    // insecure accepts anything, signatures still checked (the handshake completes).
    let insecure = ClientTlsFactory::new(&UpstreamTlsOptions {
        insecure: true,
        ..UpstreamTlsOptions::default()
    })
    .unwrap();
    assert_eq!(
        upstream_failure(&insecure, &store, "example.com", "other.test"),
        None
    );

    // Native roots only add trust; loading them works offline.
    let native = ClientTlsFactory::new(&UpstreamTlsOptions {
        native_roots: true,
        ..UpstreamTlsOptions::default()
    })
    .unwrap();
    assert!(native.roots().len() >= public_only.roots().len());

    let expired = RustlsError::InvalidCertificate(CertificateError::Expired);
    assert_eq!(
        describe_tls_error(&expired, "h"),
        "upstream certificate expired"
    );
}

#[test]
fn client_certificate_per_host() {
    use rcgen::{
        CertificateParams, DnType, ExtendedKeyUsagePurpose, KeyPair, PKCS_ECDSA_P256_SHA256,
    };
    use rustls::server::WebPkiClientVerifier;

    let ca = test_ca("hs-mtls");
    let dir = test_dir("hs-mtls-files");
    fs::create_dir_all(dir.path()).unwrap();
    let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).unwrap();
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params
        .distinguished_name
        .push(DnType::CommonName, "luring test client");
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    let (issuer, ca_key) = ca.issuer();
    let cert = params.signed_by(&key, issuer, ca_key).unwrap();
    let file = dir.path().join("client.pem");
    fs::write(&file, format!("{}{}", cert.pem(), key.serialize_pem())).unwrap();

    let clients = ClientTlsFactory::new(&UpstreamTlsOptions {
        extra_ca_files: vec![ca.info().cert_pem_path.clone()],
        client_certs: vec![
            parse_client_cert_arg(&format!("MTLS.test={}", file.display())).unwrap(),
        ],
        ..UpstreamTlsOptions::default()
    })
    .unwrap();
    let mut roots = RootCertStore::empty();
    roots.add(ca.cert_der().clone()).unwrap();
    let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider().clone())
        .build()
        .unwrap();
    let store = SharedLeafStore::new(LeafMinter::new(ca.clone()).unwrap(), 10);
    let run = |host: &str| {
        let mut scfg = ServerConfig::builder_with_provider(provider().clone())
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_client_cert_verifier(verifier.clone())
            .with_cert_resolver(Arc::new(FixedLeafResolver(
                store.get_or_mint(host, None).unwrap(),
            )));
        scfg.alpn_protocols.clear();
        let mut server = ServerConnection::new(Arc::new(scfg)).unwrap();
        let mut client = ClientConnection::new(clients.config_for(host, &[]), name(host)).unwrap();
        pump(&mut client, &mut server).map(|_| TlsInfo::from_server(&server, None))
    };
    let info = run("mtls.test").unwrap();
    assert_eq!(
        info.peer_cert_subject.as_deref(),
        Some("CN=luring test client")
    );
    assert!(run("other.test").is_err(), "no certificate for other hosts");

    assert!(parse_client_cert_arg("nofile").is_err());
    let missing = ClientTlsFactory::new(&UpstreamTlsOptions {
        client_certs: vec![("h".into(), dir.path().join("missing.pem"))],
        ..UpstreamTlsOptions::default()
    });
    assert!(missing.unwrap_err().to_string().contains("missing.pem"));
}

#[test]
fn dns_names_match_like_rfc_6125() {
    assert!(dns_matches("localhost", "LocalHost."));
    assert!(dns_matches("*.example.com", "a.example.com"));
    assert!(!dns_matches("*.example.com", "example.com"));
    assert!(!dns_matches("*.example.com", "a.b.example.com"));
    assert!(!dns_matches("a.example.com", "b.example.com"));
}
