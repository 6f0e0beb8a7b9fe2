//! TLS hardening through the real binary: upstream certificates with each defect (made
//! here with rcgen, one weak RSA key with the openssl CLI) fail closed with a 502 that
//! names the reason, in reverse mode and inside an intercepted CONNECT tunnel, unless
//! `--insecure`; the leaves luring mints; a fresh CA per confdir; the warning of a
//! listener other hosts can reach. docs/security.md, "TLS".

mod support;

use rcgen::{
    BasicConstraints, Certificate, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose,
};
use std::io::{Read, Write};
use std::net::TcpListener;
use std::sync::Arc;
use std::time::Duration;
use support::*;
use time::OffsetDateTime;

const CMD_WAIT: Duration = Duration::from_secs(30);

/// A CA (root or intermediate) that can sign.
struct Issuer {
    cert: Certificate,
    key: KeyPair,
}

fn ca_params(cn: &str, path_len: Option<u8>) -> CertificateParams {
    let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
    p.distinguished_name.push(DnType::CommonName, cn);
    p.is_ca = IsCa::Ca(match path_len {
        Some(n) => BasicConstraints::Constrained(n),
        None => BasicConstraints::Unconstrained,
    });
    p.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    p
}

fn root(cn: &str) -> Issuer {
    let key = KeyPair::generate().unwrap();
    let cert = ca_params(cn, None).self_signed(&key).unwrap();
    Issuer { cert, key }
}

fn intermediate(cn: &str, by: &Issuer) -> Issuer {
    let key = KeyPair::generate().unwrap();
    let cert = ca_params(cn, Some(0))
        .signed_by(&key, &by.cert, &by.key)
        .unwrap();
    Issuer { cert, key }
}

/// Server-certificate parameters for `names`, valid from a day ago for 90 days.
fn leaf_params(names: &[&str]) -> CertificateParams {
    let mut p =
        CertificateParams::new(names.iter().map(|s| s.to_string()).collect::<Vec<_>>()).unwrap();
    p.distinguished_name.push(DnType::CommonName, names[0]);
    p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    let now = OffsetDateTime::now_utc();
    p.not_before = now - time::Duration::days(1);
    p.not_after = now + time::Duration::days(90);
    p
}

/// What an origin presents: its chain (leaf first) as PEM, and the leaf's key as PEM.
struct Served {
    chain: Vec<String>,
    key: String,
}

fn signed(p: CertificateParams, by: &Issuer, extra: &[&Issuer]) -> Served {
    let key = KeyPair::generate().unwrap();
    let cert = p.signed_by(&key, &by.cert, &by.key).unwrap();
    let mut chain = vec![cert.pem()];
    chain.extend(extra.iter().map(|i| i.cert.pem()));
    Served {
        chain,
        key: key.serialize_pem(),
    }
}

/// An HTTPS origin on 127.0.0.1 that answers every request with 200 "origin-ok".
struct Origin443 {
    port: u16,
}

fn serve(s: &Served) -> Origin443 {
    let certs = s
        .chain
        .iter()
        .flat_map(|pem| {
            rustls_pemfile::certs(&mut pem.as_bytes())
                .map(|c| c.unwrap())
                .collect::<Vec<_>>()
        })
        .collect::<Vec<_>>();
    let key = rustls_pemfile::private_key(&mut s.key.as_bytes())
        .unwrap()
        .unwrap();
    let cfg = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_no_client_auth()
    .with_single_cert(certs, key)
    .unwrap();
    let cfg = Arc::new(cfg);
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for s in listener.incoming().take(200) {
            let Ok(s) = s else { continue };
            let cfg = cfg.clone();
            std::thread::spawn(move || {
                let _ = s.set_read_timeout(Some(Duration::from_secs(10)));
                let conn = rustls::ServerConnection::new(cfg).unwrap();
                let mut tls = rustls::StreamOwned::new(conn, s);
                let mut head = Vec::new();
                let mut buf = [0u8; 4096];
                while find(&head, b"\r\n\r\n").is_none() && head.len() < 65536 {
                    match tls.read(&mut buf) {
                        Ok(0) | Err(_) => return,
                        Ok(n) => head.extend_from_slice(&buf[..n]),
                    }
                }
                let _ = tls.write_all(
                    b"HTTP/1.1 200 OK\r\nContent-Length: 9\r\nConnection: close\r\n\r\norigin-ok",
                );
                tls.conn.send_close_notify();
                let _ = tls.flush();
            });
        }
    });
    Origin443 { port }
}

/// The test PKI: a trusted root (written to a file for --upstream-ca), an intermediate
/// under it, and a root luring does not trust.
struct Pki {
    root: Issuer,
    inter: Issuer,
    other: Issuer,
    dir: TempDir,
}

impl Pki {
    fn new() -> Pki {
        let root = root("hardening root");
        let inter = intermediate("hardening intermediate", &root);
        let dir = TempDir::new("tlshard");
        std::fs::write(dir.path("root.pem"), root.cert.pem()).unwrap();
        Pki {
            root,
            inter,
            other: self::root("some other root"),
            dir,
        }
    }

    fn root_file(&self) -> String {
        self.dir.path("root.pem").to_string_lossy().into_owned()
    }

    /// An RSA-1024 leaf for localhost signed by the trusted root (rcgen's ring backend
    /// cannot make RSA keys, and rustls cannot serve with one this small: the openssl
    /// CLI makes it and `openssl s_server` serves it).
    fn weak_rsa_origin(&self) -> (Origin443, SServer) {
        let p = |n: &str| self.dir.path(n).to_string_lossy().into_owned();
        std::fs::write(p("root.key"), self.root.key.serialize_pem()).unwrap();
        std::fs::write(
            p("ext.cnf"),
            "subjectAltName=DNS:localhost\nextendedKeyUsage=serverAuth\n",
        )
        .unwrap();
        for args in [
            vec!["genrsa", "-out", &p("weak.key"), "1024"],
            vec![
                "req",
                "-new",
                "-key",
                &p("weak.key"),
                "-subj",
                "/CN=localhost",
                "-out",
                &p("weak.csr"),
            ],
            vec![
                "x509",
                "-req",
                "-in",
                &p("weak.csr"),
                "-CA",
                &p("root.pem"),
                "-CAkey",
                &p("root.key"),
                "-CAcreateserial",
                "-days",
                "30",
                "-sha256",
                "-extfile",
                &p("ext.cnf"),
                "-out",
                &p("weak.pem"),
            ],
        ] {
            let o = run_cmd("openssl", &args, b"", CMD_WAIT);
            assert!(o.ok(), "openssl {args:?}: {o:?}");
        }
        let port = free_port();
        let child = std::process::Command::new("openssl")
            .args(["s_server", "-quiet", "-www", "-accept"])
            .arg(port.to_string())
            .args(["-cert", &p("weak.pem"), "-key", &p("weak.key")])
            .args(["-cipher", "DEFAULT:@SECLEVEL=0"])
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("openssl s_server");
        assert!(
            wait_until(Duration::from_secs(10), || std::net::TcpStream::connect((
                "127.0.0.1",
                port
            ))
            .is_ok()),
            "s_server did not start"
        );
        (Origin443 { port }, SServer(child))
    }
}

struct SServer(std::process::Child);

impl Drop for SServer {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Each defective upstream: its name, what it serves, and a word the 502 must contain.
fn defects(pki: &Pki) -> Vec<(&'static str, Served, &'static str)> {
    let now = OffsetDateTime::now_utc();
    let mut expired = leaf_params(&["localhost"]);
    expired.not_before = now - time::Duration::days(60);
    expired.not_after = now - time::Duration::days(1);
    let mut not_yet = leaf_params(&["localhost"]);
    not_yet.not_before = now + time::Duration::days(2);
    not_yet.not_after = now + time::Duration::days(60);
    let self_signed = {
        let key = KeyPair::generate().unwrap();
        let cert = leaf_params(&["localhost"]).self_signed(&key).unwrap();
        Served {
            chain: vec![cert.pem()],
            key: key.serialize_pem(),
        }
    };
    let mut ca_leaf = ca_params("localhost", None);
    ca_leaf.subject_alt_names = vec![rcgen::SanType::DnsName("localhost".try_into().unwrap())];
    let now2 = OffsetDateTime::now_utc();
    ca_leaf.not_before = now2 - time::Duration::days(1);
    ca_leaf.not_after = now2 + time::Duration::days(30);
    vec![
        ("expired", signed(expired, &pki.root, &[]), "expired"),
        (
            "not yet valid",
            signed(not_yet, &pki.root, &[]),
            "not yet valid",
        ),
        (
            "wrong host",
            signed(leaf_params(&["other.example"]), &pki.root, &[]),
            "not valid for host localhost",
        ),
        ("self-signed", self_signed, "unknown issuer"),
        (
            "untrusted root",
            signed(leaf_params(&["localhost"]), &pki.other, &[]),
            "unknown issuer",
        ),
        (
            "missing intermediate",
            signed(leaf_params(&["localhost"]), &pki.inter, &[]),
            "unknown issuer",
        ),
        (
            "CA as leaf",
            signed(ca_leaf, &pki.root, &[]),
            "is a CA certificate",
        ),
    ]
}

fn assert_502_naming(r: &CurlOutput, case: &str, word: &str, proxy: &Proxy) {
    assert_eq!(
        r.status,
        502,
        "{case}: {} {}\n{}",
        r.stderr,
        r.body_str(),
        proxy.stderr()
    );
    assert!(
        r.body_str().contains(word),
        "{case}: the 502 does not say {word:?}: {:?}",
        r.body_str()
    );
}

fn reverse_proxy(conf: &Conf, port: u16, extra: &[&str]) -> Proxy {
    let mode = format!("reverse:https://localhost:{port}");
    let cd = conf.confdir();
    let mut args = vec!["--confdir", cd.as_str(), "--mode", &mode];
    args.extend_from_slice(extra);
    Proxy::start(&args)
}

#[test]
fn defective_upstream_certificates_fail_closed_in_reverse_mode() {
    let pki = Pki::new();
    let conf = Conf::new();
    let ca = pki.root_file();
    for (case, served, word) in defects(&pki) {
        let origin = serve(&served);
        let proxy = reverse_proxy(&conf, origin.port, &["--upstream-ca", &ca]);
        let r = curl(&[&format!("{}/x", proxy.url())]);
        assert_502_naming(&r, case, word, &proxy);
    }
    let (weak, _server) = pki.weak_rsa_origin();
    let proxy = reverse_proxy(&conf, weak.port, &["--upstream-ca", &ca]);
    let r = curl(&[&format!("{}/x", proxy.url())]);
    assert_502_naming(&r, "RSA-1024 key", "RSA key", &proxy);
}

#[test]
fn defective_upstream_certificates_fail_closed_in_an_intercepted_tunnel() {
    let pki = Pki::new();
    let conf = Conf::new();
    let cd = conf.confdir();
    let ca = pki.root_file();
    let proxy = Proxy::start(&["--confdir", &cd, "--upstream-ca", &ca]);
    let mut origins = Vec::new();
    for (case, served, word) in defects(&pki) {
        let origin = serve(&served);
        // luring finishes the client's handshake with its own leaf, then answers the
        // request with the 502: the client learns why
        let r = curl(&[
            "-x",
            &proxy.url(),
            "--cacert",
            conf.ca(),
            &format!("https://localhost:{}/x", origin.port),
        ]);
        assert_502_naming(&r, case, word, &proxy);
        origins.push(origin);
    }
    let (weak, _server) = pki.weak_rsa_origin();
    let r = curl(&[
        "-x",
        &proxy.url(),
        "--cacert",
        conf.ca(),
        &format!("https://localhost:{}/x", weak.port),
    ]);
    assert_502_naming(&r, "RSA-1024 key", "RSA key", &proxy);
}

#[test]
fn only_valid_chains_pass_and_insecure_passes_all() {
    let pki = Pki::new();
    let conf = Conf::new();
    let cd = conf.confdir();
    let ca = pki.root_file();
    let direct = serve(&signed(leaf_params(&["localhost"]), &pki.root, &[]));
    let via_inter = serve(&signed(
        leaf_params(&["localhost"]),
        &pki.inter,
        &[&pki.inter],
    ));
    let ip = serve(&signed(leaf_params(&["127.0.0.1"]), &pki.root, &[]));
    let proxy = Proxy::start(&["--confdir", &cd, "--upstream-ca", &ca]);
    for (case, url) in [
        (
            "leaf under the root",
            format!("https://localhost:{}/", direct.port),
        ),
        (
            "leaf under an intermediate",
            format!("https://localhost:{}/", via_inter.port),
        ),
        ("IP SAN", format!("https://127.0.0.1:{}/", ip.port)),
    ] {
        let r = curl(&["-x", &proxy.url(), "--cacert", conf.ca(), &url]);
        assert_eq!(
            (r.status, r.body_str()),
            (200, "origin-ok".to_string()),
            "{case}: {}\n{}",
            r.stderr,
            proxy.stderr()
        );
        // and in reverse mode
        let port = url.rsplit(':').next().unwrap().trim_end_matches('/');
        let host = if case == "IP SAN" {
            "127.0.0.1"
        } else {
            "localhost"
        };
        let mode = format!("reverse:https://{host}:{port}");
        let rev = Proxy::start(&["--confdir", &cd, "--mode", &mode, "--upstream-ca", &ca]);
        let r = curl(&[&format!("{}/", rev.url())]);
        assert_eq!(
            (r.status, r.body_str()),
            (200, "origin-ok".to_string()),
            "{case} reverse"
        );
    }

    let insecure = Proxy::start(&["--confdir", &cd, "--insecure"]);
    let mut origins = Vec::new();
    for (case, served, _) in defects(&pki) {
        let origin = serve(&served);
        let r = curl(&[
            "-x",
            &insecure.url(),
            "--cacert",
            conf.ca(),
            &format!("https://localhost:{}/x", origin.port),
        ]);
        assert_eq!(
            (r.status, r.body_str()),
            (200, "origin-ok".to_string()),
            "--insecure, {case}: {}\n{}",
            r.stderr,
            insecure.stderr()
        );
        origins.push(origin);
    }
    // the handshake signature is checked even so, and ring refuses RSA keys under 2048
    let (weak, _server) = pki.weak_rsa_origin();
    let r = curl(&[
        "-x",
        &insecure.url(),
        "--cacert",
        conf.ca(),
        &format!("https://localhost:{}/x", weak.port),
    ]);
    assert_502_naming(&r, "--insecure, RSA-1024 key", "RSA key", &insecure);
}

/// `openssl x509 -noout -text` of the leaf luring presents for `host` through CONNECT.
fn minted_leaf_text(proxy: &Proxy, host: &str, port: u16) -> (String, String) {
    let p = proxy.addr.to_string();
    let target = format!("{host}:{port}");
    let mut args = vec!["s_client", "-proxy", &p, "-connect", &target, "-showcerts"];
    if host.parse::<std::net::IpAddr>().is_err() {
        args.extend_from_slice(&["-servername", host]);
    }
    let o = run_cmd("openssl", &args, b"", CMD_WAIT);
    let pem = first_pem_cert(&o.stdout).unwrap_or_else(|| panic!("no leaf: {o:?}"));
    let t = run_cmd(
        "openssl",
        &["x509", "-noout", "-text"],
        pem.as_bytes(),
        CMD_WAIT,
    );
    assert!(t.ok(), "{t:?}");
    let d = run_cmd(
        "openssl",
        &[
            "x509",
            "-noout",
            "-startdate",
            "-enddate",
            "-dateopt",
            "iso_8601",
        ],
        pem.as_bytes(),
        CMD_WAIT,
    );
    assert!(d.ok(), "{d:?}");
    (t.stdout, d.stdout)
}

/// "2026-01-02 03:04:05Z" (openssl's iso_8601 date) as a Unix time.
fn iso_to_unix(s: &str) -> i64 {
    let n: Vec<i64> = s
        .split(|c: char| !c.is_ascii_digit())
        .filter(|p| !p.is_empty())
        .map(|p| p.parse().unwrap())
        .collect();
    assert!(n.len() >= 6, "{s}");
    let month = time::Month::try_from(n[1] as u8).unwrap();
    let date = time::Date::from_calendar_date(n[0] as i32, month, n[2] as u8).unwrap();
    let t = time::Time::from_hms(n[3] as u8, n[4] as u8, n[5] as u8).unwrap();
    time::PrimitiveDateTime::new(date, t)
        .assume_utc()
        .unix_timestamp()
}

#[test]
fn minted_leaves_are_end_entity_server_certificates_for_the_name_only() {
    let conf = Conf::new();
    let proxy = Proxy::start(&["--confdir", &conf.confdir(), "--insecure"]);
    let origin = serve(&signed(leaf_params(&["localhost"]), &root("r"), &[]));
    for (host, san) in [
        ("localhost", "DNS:localhost"),
        ("127.0.0.1", "IP Address:127.0.0.1"),
    ] {
        let (text, dates) = minted_leaf_text(&proxy, host, origin.port);
        assert!(text.contains("CA:FALSE"), "{host}: {text}");
        assert!(
            text.contains("TLS Web Server Authentication"),
            "{host}: {text}"
        );
        let sans = text
            .split("X509v3 Subject Alternative Name:")
            .nth(1)
            .and_then(|t| t.lines().nth(1))
            .unwrap_or_else(|| panic!("no SAN: {text}"))
            .trim()
            .to_string();
        assert_eq!(
            sans, san,
            "{host}: the SAN is the requested name and nothing else"
        );
        let mut start = 0;
        let mut end = 0;
        for line in dates.lines() {
            if let Some(v) = line.strip_prefix("notBefore=") {
                start = iso_to_unix(v);
            }
            if let Some(v) = line.strip_prefix("notAfter=") {
                end = iso_to_unix(v);
            }
        }
        let now = OffsetDateTime::now_utc().unix_timestamp();
        assert!(start < now - 60, "{host}: not backdated: {dates}");
        assert!(
            start > now - 7 * 86400,
            "{host}: backdated too far: {dates}"
        );
        assert!(
            end - start <= 398 * 86400,
            "{host}: valid too long: {dates}"
        );
    }
}

#[test]
fn each_fresh_confdir_gets_its_own_ca() {
    let (a, b) = (Conf::new(), Conf::new());
    let pa = std::fs::read_to_string(&a.ca).unwrap();
    let pb = std::fs::read_to_string(&b.ca).unwrap();
    assert!(pa.contains("BEGIN CERTIFICATE"));
    assert_ne!(pa, pb, "two fresh installs share a CA");
    use std::os::unix::fs::PermissionsExt;
    for c in [&a, &b] {
        let dir = std::path::PathBuf::from(c.confdir());
        let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&dir), 0o700, "{dir:?}");
        let key = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .find(|p| p.to_string_lossy().ends_with(".key") || p.to_string_lossy().contains("key"))
            .expect("a key file");
        assert_eq!(mode(&key), 0o600, "{key:?}");
    }
}

/// `luring run --listen LISTEN ARGS...`.
fn start_on(listen: &str, args: &[&str]) -> Proxy {
    let mut full = vec!["run", "--listen", listen];
    full.extend_from_slice(args);
    Proxy::spawn(&full).unwrap_or_else(|e| panic!("{args:?}: {} {}", e.reason, e.stderr))
}

#[test]
fn reachable_listener_without_auth_warns_of_an_open_proxy() {
    let conf = Conf::new();
    let cd = conf.confdir();
    // the warning is printed before the listening line, which start_on waits for
    let open = start_on("0.0.0.0:0", &["--confdir", &cd]);
    assert!(open.stderr().contains("open proxy"), "{}", open.stderr());
    assert!(open.stderr().contains("--proxy-auth"), "{}", open.stderr());
    drop(open);
    for (listen, extra) in [
        ("0.0.0.0:0", &["--proxy-auth", "u:p"][..]),
        ("127.0.0.1:0", &[][..]),
    ] {
        let mut args = vec!["--confdir", cd.as_str()];
        args.extend_from_slice(extra);
        let p = start_on(listen, &args);
        assert!(
            !p.stderr().contains("open proxy"),
            "{listen} {extra:?}: {}",
            p.stderr()
        );
    }
    let port = free_port().to_string();
    let m = start_on(
        "127.0.0.1:0",
        &["--confdir", &cd, "--metrics", &format!("0.0.0.0:{port}")],
    );
    assert!(m.stderr().contains("no authentication"), "{}", m.stderr());
}
