//! The interception CA: created once in the config directory, reused afterwards.
//!
//! The key file is created with mode 0600 from the first byte (never chmod-ed after
//! the fact), and a CA that cannot be read is an error naming the file: replacing a
//! CA silently would break every client that already trusts the old one.

use std::fs::{self, OpenOptions};
use std::io::Write as _;
use std::os::unix::fs::{DirBuilderExt as _, OpenOptionsExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};
use std::str::FromStr;

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, IsCa, KeyPair, KeyUsagePurpose,
    PKCS_ECDSA_P256_SHA256,
};
use rustls::pki_types::CertificateDer;
use sha2::{Digest as _, Sha256};
use time::{Duration, OffsetDateTime};

/// File name of the CA private key (PEM, PKCS#8).
pub const KEY_FILE: &str = "luring-ca.key";
/// File name of the CA certificate (PEM).
pub const CERT_PEM_FILE: &str = "luring-ca.pem";
/// File name of the CA certificate (DER).
pub const CERT_DER_FILE: &str = "luring-ca.der";
/// Common name of CAs created by luring.
pub const CA_COMMON_NAME: &str = "luring CA";
/// How long a new CA is valid (10 years, as mitmproxy does).
const CA_VALIDITY: Duration = Duration::days(3650);
/// Clock skew allowance: certificates start this long before "now".
pub(crate) const BACKDATE: Duration = Duration::days(2);

/// Errors from locating, loading or creating the CA.
#[derive(Debug, thiserror::Error)]
pub enum CaError {
    /// Neither an explicit directory, `$XDG_CONFIG_HOME` nor `$HOME` is usable.
    #[error("cannot find a config directory: pass one explicitly, or set XDG_CONFIG_HOME or HOME")]
    NoConfdir,
    /// A filesystem operation failed.
    #[error("{path}: {source}")]
    Io {
        /// The file or directory involved.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// A CA file exists but does not hold a usable key or certificate.
    #[error("{path}: corrupt CA file: {reason} (fix or remove it; `luring ca new --force` replaces the CA)")]
    Corrupt {
        /// The offending file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// The key file can be read by group or others.
    #[error(
        "{path}: CA key is accessible by group/others (mode {mode:o}); run `chmod 600 {path}`"
    )]
    KeyPermissions {
        /// The key file.
        path: PathBuf,
        /// Its permission bits.
        mode: u32,
    },
    /// Only some of the CA files exist.
    #[error("{present} exists but {missing} does not; restore it or run `luring ca new --force`")]
    Incomplete {
        /// A file that exists.
        present: PathBuf,
        /// A file that is missing.
        missing: PathBuf,
    },
    /// `create_new` without `force` found an existing CA.
    #[error("{0}: a CA already exists; use --force to replace it")]
    AlreadyExists(PathBuf),
    /// Generating a key pair failed.
    #[error("{0}")]
    KeyGen(String),
    /// rcgen failed to build or sign a certificate.
    #[error("certificate generation failed: {0}")]
    Generate(#[from] rcgen::Error),
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> CaError + '_ {
    move |source| CaError::Io {
        path: path.to_owned(),
        source,
    }
}

/// Key algorithm of a newly created CA.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum CaKeyType {
    /// ECDSA P-256 with SHA-256: small, fast, accepted everywhere that matters.
    #[default]
    EcdsaP256,
    /// RSA 2048 for old clients; generation is not available in this build.
    Rsa2048,
}

impl FromStr for CaKeyType {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().as_str() {
            "ecdsa" | "ecdsa-p256" | "p256" | "ec" => Ok(Self::EcdsaP256),
            "rsa" | "rsa2048" | "rsa-2048" => Ok(Self::Rsa2048),
            other => Err(format!(
                "unknown CA key type {other:?} (expected ecdsa-p256 or rsa2048)"
            )),
        }
    }
}

/// The configuration directory that holds the CA files.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Confdir(PathBuf);

impl Confdir {
    /// Picks the directory: `explicit`, else `$XDG_CONFIG_HOME/luring`, else `~/.luring`.
    pub fn resolve(explicit: Option<PathBuf>) -> Result<Confdir, CaError> {
        Self::resolve_with(
            explicit,
            std::env::var_os("XDG_CONFIG_HOME").map(PathBuf::from),
            std::env::var_os("HOME").map(PathBuf::from),
        )
    }

    /// [`Confdir::resolve`] with the environment passed in (testable without `set_var`).
    pub fn resolve_with(
        explicit: Option<PathBuf>,
        xdg_config_home: Option<PathBuf>,
        home: Option<PathBuf>,
    ) -> Result<Confdir, CaError> {
        if let Some(dir) = explicit {
            return Ok(Confdir(dir));
        }
        // The XDG spec says relative values are invalid and must be ignored.
        if let Some(xdg) = xdg_config_home.filter(|p| p.is_absolute()) {
            return Ok(Confdir(xdg.join("luring")));
        }
        match home.filter(|p| !p.as_os_str().is_empty()) {
            Some(home) => Ok(Confdir(home.join(".luring"))),
            None => Err(CaError::NoConfdir),
        }
    }

    /// The directory path.
    pub fn path(&self) -> &Path {
        &self.0
    }

    /// Path of the CA key file.
    pub fn key_path(&self) -> PathBuf {
        self.0.join(KEY_FILE)
    }

    /// Path of the PEM certificate.
    pub fn cert_pem_path(&self) -> PathBuf {
        self.0.join(CERT_PEM_FILE)
    }

    /// Path of the DER certificate.
    pub fn cert_der_path(&self) -> PathBuf {
        self.0.join(CERT_DER_FILE)
    }

    /// Creates the directory (mode 0700) if it is missing.
    fn ensure(&self) -> Result<(), CaError> {
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&self.0)
            .map_err(io_err(&self.0))
    }
}

/// A human-readable summary of the CA, for `luring ca show`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CaInfo {
    /// Subject distinguished name, e.g. `CN=luring CA, O=luring`.
    pub subject: String,
    /// SHA-256 of the DER certificate, uppercase hex separated by colons.
    pub sha256_fingerprint: String,
    /// Start of validity.
    pub not_before: OffsetDateTime,
    /// End of validity.
    pub not_after: OffsetDateTime,
    /// Key algorithm, e.g. `ECDSA P-256`.
    pub key_algorithm: String,
    /// Path of the key file.
    pub key_path: PathBuf,
    /// Path of the PEM certificate.
    pub cert_pem_path: PathBuf,
    /// Path of the DER certificate.
    pub cert_der_path: PathBuf,
}

/// A loaded CA: certificate, key and what leaf signing needs.
pub struct Ca {
    dir: Confdir,
    cert_der: CertificateDer<'static>,
    cert_pem: String,
    key: KeyPair,
    /// rcgen's view of the CA (subject DN and key identifier) used as the issuer of
    /// leaves; its own DER is never sent anywhere.
    issuer: rcgen::Certificate,
    info: CaInfo,
}

impl std::fmt::Debug for Ca {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print the key.
        f.debug_struct("Ca")
            .field("info", &self.info)
            .finish_non_exhaustive()
    }
}

impl Ca {
    /// Loads the CA from `dir`, creating it with `key_type` if no CA file exists.
    pub fn load_or_create(dir: &Confdir, key_type: CaKeyType) -> Result<Ca, CaError> {
        let key = dir.key_path();
        let pem = dir.cert_pem_path();
        match (exists(&key)?, exists(&pem)?) {
            (false, false) => Self::create_new(dir, key_type, false),
            (true, true) => Self::load(dir),
            (true, false) => Err(CaError::Incomplete {
                present: key,
                missing: pem,
            }),
            (false, true) => Err(CaError::Incomplete {
                present: pem,
                missing: key,
            }),
        }
    }

    /// Loads an existing CA from `dir`; missing files are an error.
    pub fn load(dir: &Confdir) -> Result<Ca, CaError> {
        let key_path = dir.key_path();
        let meta = fs::metadata(&key_path).map_err(io_err(&key_path))?;
        let mode = meta.permissions().mode() & 0o777;
        if mode & 0o077 != 0 {
            return Err(CaError::KeyPermissions {
                path: key_path,
                mode,
            });
        }
        let key_pem = fs::read_to_string(&key_path).map_err(io_err(&key_path))?;
        let key = KeyPair::from_pem(&key_pem).map_err(|e| CaError::Corrupt {
            path: key_path.clone(),
            reason: format!("cannot read private key: {e}"),
        })?;

        let pem_path = dir.cert_pem_path();
        let cert_pem = fs::read_to_string(&pem_path).map_err(io_err(&pem_path))?;
        let corrupt = |reason: String| CaError::Corrupt {
            path: pem_path.clone(),
            reason,
        };
        let cert_der = rustls_pemfile::certs(&mut cert_pem.as_bytes())
            .next()
            .ok_or_else(|| corrupt("no CERTIFICATE block".into()))?
            .map_err(|e| corrupt(format!("bad PEM: {e}")))?;
        let (_, parsed) = x509_parser::parse_x509_certificate(&cert_der)
            .map_err(|e| corrupt(format!("bad certificate: {e}")))?;
        if parsed.public_key().raw != key.public_key_der().as_slice() {
            return Err(corrupt(format!(
                "certificate does not match the key in {}",
                key_path.display()
            )));
        }
        if !parsed.is_ca() {
            return Err(corrupt(
                "certificate is not a CA (basicConstraints cA=false)".into(),
            ));
        }
        let params = CertificateParams::from_ca_cert_der(&cert_der)
            .map_err(|e| corrupt(format!("unusable as issuer: {e}")))?;
        let issuer = params.self_signed(&key)?;

        // The DER copy is derived data; restore it if someone deleted it.
        let der_path = dir.cert_der_path();
        if !exists(&der_path)? {
            write_file(&der_path, cert_der.as_ref(), 0o644)?;
        }
        let info = make_info(dir, &cert_der, &key)?;
        Ok(Ca {
            dir: dir.clone(),
            cert_der,
            cert_pem,
            key,
            issuer,
            info,
        })
    }

    /// Creates a new CA in `dir`; with `force`, replaces an existing one (rotation).
    pub fn create_new(dir: &Confdir, key_type: CaKeyType, force: bool) -> Result<Ca, CaError> {
        let key_path = dir.key_path();
        if !force {
            for p in [&key_path, &dir.cert_pem_path(), &dir.cert_der_path()] {
                if exists(p)? {
                    return Err(CaError::AlreadyExists(p.clone()));
                }
            }
        }
        let key = match key_type {
            CaKeyType::EcdsaP256 => KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256)?,
            CaKeyType::Rsa2048 => generate_rsa2048()?,
        };
        let mut params = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, CA_COMMON_NAME);
        dn.push(DnType::OrganizationName, "luring");
        params.distinguished_name = dn;
        params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let now = OffsetDateTime::now_utc();
        params.not_before = now - BACKDATE;
        params.not_after = now + CA_VALIDITY;
        params.serial_number = Some(random_serial());
        let cert = params.self_signed(&key)?;
        let cert_der = cert.der().clone();
        let cert_pem = cert.pem();

        dir.ensure()?;
        // Key first: a crash between the writes leaves "key without cert", which
        // load_or_create reports instead of silently generating a second CA.
        write_file(&key_path, key.serialize_pem().as_bytes(), 0o600)?;
        write_file(&dir.cert_pem_path(), cert_pem.as_bytes(), 0o644)?;
        write_file(&dir.cert_der_path(), cert_der.as_ref(), 0o644)?;
        let info = make_info(dir, &cert_der, &key)?;
        Ok(Ca {
            dir: dir.clone(),
            cert_der,
            cert_pem,
            key,
            issuer: cert,
            info,
        })
    }

    /// Subject, fingerprint, validity and file paths.
    pub fn info(&self) -> &CaInfo {
        &self.info
    }

    /// The CA certificate, DER.
    pub fn cert_der(&self) -> &CertificateDer<'static> {
        &self.cert_der
    }

    /// The CA certificate, PEM.
    pub fn cert_pem(&self) -> &str {
        &self.cert_pem
    }

    /// The directory the CA lives in.
    pub fn confdir(&self) -> &Confdir {
        &self.dir
    }

    /// Issuer view and key for signing leaves.
    pub(crate) fn issuer(&self) -> (&rcgen::Certificate, &KeyPair) {
        (&self.issuer, &self.key)
    }
}

fn exists(p: &Path) -> Result<bool, CaError> {
    p.try_exists().map_err(io_err(p))
}

/// Writes through a temporary file created with the final mode, then renames, so
/// the target is never partially written nor (for the key) briefly world-readable.
fn write_file(path: &Path, data: &[u8], mode: u32) -> Result<(), CaError> {
    let tmp = path.with_extension(format!("tmp.{}", std::process::id()));
    let _ = fs::remove_file(&tmp);
    let mut f = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(&tmp)
        .map_err(io_err(&tmp))?;
    f.write_all(data)
        .and_then(|_| f.sync_all())
        .map_err(io_err(&tmp))?;
    drop(f);
    fs::rename(&tmp, path).map_err(io_err(path))
}

/// 16 random bytes with the top bit clear so the DER INTEGER stays positive.
pub(crate) fn random_serial() -> rcgen::SerialNumber {
    let mut bytes = [0u8; 16];
    // Leaves share one key pair, so a key-derived serial would repeat; Firefox rejects
    // two certificates with the same issuer and serial. Failure here means the OS has
    // no entropy source at all, where a clock-based serial is still unique enough.
    let rng = rustls::crypto::ring::default_provider().secure_random;
    if rng.fill(&mut bytes).is_err() {
        let nanos = OffsetDateTime::now_utc().unix_timestamp_nanos();
        bytes = nanos.to_be_bytes();
    }
    bytes[0] &= 0x7f;
    bytes[0] |= 0x01;
    rcgen::SerialNumber::from_slice(&bytes)
}

/// Uppercase colon-separated hex, the form browsers and openssl display.
pub fn colon_hex(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len() * 3);
    for (i, b) in bytes.iter().enumerate() {
        if i > 0 {
            out.push(':');
        }
        out.push_str(&format!("{b:02X}"));
    }
    out
}

/// A fresh RSA-2048 key pair (ring can sign with RSA keys but not make them).
pub fn generate_rsa2048() -> Result<KeyPair, CaError> {
    use rsa::pkcs8::EncodePrivateKey;
    let fail = |e: String| CaError::KeyGen(format!("rsa2048 key generation failed: {e}"));
    let key = rsa::RsaPrivateKey::new(&mut rsa::rand_core::OsRng, 2048)
        .map_err(|e| fail(e.to_string()))?;
    let der = key.to_pkcs8_der().map_err(|e| fail(e.to_string()))?;
    KeyPair::from_pkcs8_der_and_sign_algo(
        &rustls::pki_types::PrivatePkcs8KeyDer::from(der.as_bytes()),
        &rcgen::PKCS_RSA_SHA256,
    )
    .map_err(|e| fail(e.to_string()))
}

fn make_info(dir: &Confdir, der: &CertificateDer<'_>, key: &KeyPair) -> Result<CaInfo, CaError> {
    let pem_path = dir.cert_pem_path();
    let (_, parsed) = x509_parser::parse_x509_certificate(der).map_err(|e| CaError::Corrupt {
        path: pem_path,
        reason: format!("bad certificate: {e}"),
    })?;
    let validity = parsed.validity();
    let key_algorithm = if key.algorithm() == &PKCS_ECDSA_P256_SHA256 {
        "ECDSA P-256".to_owned()
    } else if key.algorithm() == &rcgen::PKCS_RSA_SHA256 {
        "RSA 2048 (SHA-256)".to_owned()
    } else {
        format!("{:?}", key.algorithm())
    };
    Ok(CaInfo {
        subject: parsed.subject().to_string(),
        sha256_fingerprint: colon_hex(&Sha256::digest(der.as_ref())),
        not_before: validity.not_before.to_datetime(),
        not_after: validity.not_after.to_datetime(),
        key_algorithm,
        key_path: dir.key_path(),
        cert_pem_path: dir.cert_pem_path(),
        cert_der_path: dir.cert_der_path(),
    })
}

/// A fresh, empty directory for tests, under this test process's scratch root.
#[cfg(test)]
pub(crate) fn test_dir(name: &str) -> Confdir {
    let dir = crate::scratch::root().join(format!("tls-{name}"));
    let _ = fs::remove_dir_all(&dir);
    Confdir(dir)
}

/// A CA created in a fresh test directory.
#[cfg(test)]
pub(crate) fn test_ca(name: &str) -> std::sync::Arc<Ca> {
    std::sync::Arc::new(Ca::load_or_create(&test_dir(name), CaKeyType::EcdsaP256).expect("test CA"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn confdir_resolution_order() {
        let p = |s: &str| PathBuf::from(s);
        let r = |e: Option<&str>, x: Option<&str>, h: Option<&str>| {
            Confdir::resolve_with(e.map(p), x.map(p), h.map(p)).map(|c| c.path().to_owned())
        };
        assert_eq!(
            r(Some("/etc/l"), Some("/x"), Some("/h")).unwrap(),
            p("/etc/l")
        );
        assert_eq!(r(None, Some("/x"), Some("/h")).unwrap(), p("/x/luring"));
        assert_eq!(
            r(None, Some("rel"), Some("/h")).unwrap(),
            p("/h/.luring"),
            "relative XDG ignored"
        );
        assert_eq!(r(None, None, Some("/h")).unwrap(), p("/h/.luring"));
        assert!(matches!(r(None, None, None), Err(CaError::NoConfdir)));
    }

    #[test]
    fn create_then_reuse() {
        let dir = test_dir("reuse");
        let a = Ca::load_or_create(&dir, CaKeyType::EcdsaP256).unwrap();
        let mode = fs::metadata(dir.key_path()).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        assert!(dir.cert_der_path().exists() && dir.cert_pem_path().exists());
        let b = Ca::load_or_create(&dir, CaKeyType::EcdsaP256).unwrap();
        assert_eq!(a.info().sha256_fingerprint, b.info().sha256_fingerprint);
        assert_eq!(a.info().subject, "CN=luring CA, O=luring");
        assert_eq!(a.info().sha256_fingerprint.len(), 32 * 3 - 1);
        assert!(a.info().not_after - a.info().not_before > Duration::days(3000));
        // The DER copy is restored if deleted.
        fs::remove_file(dir.cert_der_path()).unwrap();
        Ca::load(&dir).unwrap();
        assert_eq!(
            fs::read(dir.cert_der_path()).unwrap(),
            a.cert_der().as_ref()
        );
    }

    #[test]
    fn rotate_needs_force() {
        let dir = test_dir("rotate");
        let a = Ca::create_new(&dir, CaKeyType::EcdsaP256, false).unwrap();
        assert!(matches!(
            Ca::create_new(&dir, CaKeyType::EcdsaP256, false),
            Err(CaError::AlreadyExists(_))
        ));
        let b = Ca::create_new(&dir, CaKeyType::EcdsaP256, true).unwrap();
        assert_ne!(a.info().sha256_fingerprint, b.info().sha256_fingerprint);
        let c = Ca::load(&dir).unwrap();
        assert_eq!(b.info().sha256_fingerprint, c.info().sha256_fingerprint);
    }

    #[test]
    fn broken_ca_is_an_error_naming_the_file() {
        let dir = test_dir("broken");
        Ca::create_new(&dir, CaKeyType::EcdsaP256, false).unwrap();
        let key = fs::read(dir.key_path()).unwrap();

        fs::set_permissions(dir.key_path(), fs::Permissions::from_mode(0o644)).unwrap();
        let err = Ca::load_or_create(&dir, CaKeyType::EcdsaP256).unwrap_err();
        assert!(
            matches!(err, CaError::KeyPermissions { mode: 0o644, .. }),
            "{err}"
        );
        assert!(err.to_string().contains(KEY_FILE));
        fs::set_permissions(dir.key_path(), fs::Permissions::from_mode(0o600)).unwrap();

        fs::write(dir.key_path(), b"-----BEGIN PRIVATE KEY-----\ngarbage\n").unwrap();
        let err = Ca::load_or_create(&dir, CaKeyType::EcdsaP256).unwrap_err();
        assert!(
            matches!(err, CaError::Corrupt { .. }) && err.to_string().contains(KEY_FILE),
            "{err}"
        );
        fs::write(dir.key_path(), &key).unwrap();

        fs::write(dir.cert_pem_path(), b"not a certificate").unwrap();
        let err = Ca::load_or_create(&dir, CaKeyType::EcdsaP256).unwrap_err();
        assert!(err.to_string().contains(CERT_PEM_FILE), "{err}");

        // A certificate that belongs to another key.
        let other = test_ca("broken-other");
        fs::write(dir.cert_pem_path(), other.cert_pem()).unwrap();
        let err = Ca::load(&dir).unwrap_err();
        assert!(err.to_string().contains("does not match"), "{err}");

        fs::remove_file(dir.cert_pem_path()).unwrap();
        let err = Ca::load_or_create(&dir, CaKeyType::EcdsaP256).unwrap_err();
        assert!(matches!(err, CaError::Incomplete { .. }), "{err}");
        // Nothing was silently replaced.
        assert_eq!(fs::read(dir.key_path()).unwrap(), key);
    }

    #[test]
    fn rsa2048_ca_is_created_and_reloaded() {
        let dir = test_dir("rsa");
        let ca = Ca::load_or_create(&dir, CaKeyType::Rsa2048).unwrap();
        assert!(
            ca.info().key_algorithm.starts_with("RSA"),
            "{}",
            ca.info().key_algorithm
        );
        let again = Ca::load_or_create(&dir, CaKeyType::EcdsaP256).unwrap();
        assert_eq!(
            ca.info().sha256_fingerprint,
            again.info().sha256_fingerprint
        );
        assert_eq!("rsa2048".parse::<CaKeyType>(), Ok(CaKeyType::Rsa2048));
        assert_eq!("ECDSA-P256".parse::<CaKeyType>(), Ok(CaKeyType::EcdsaP256));
        assert!("dsa".parse::<CaKeyType>().is_err());
    }

    #[test]
    fn rsa_ca_made_elsewhere_is_used() {
        let dir = test_dir("rsa-openssl");
        fs::create_dir_all(dir.path()).unwrap();
        let status = std::process::Command::new("openssl")
            .args([
                "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "30",
            ])
            .args([
                "-subj",
                "/CN=rsa test CA",
                "-addext",
                "basicConstraints=critical,CA:TRUE",
            ])
            .arg("-keyout")
            .arg(dir.key_path())
            .arg("-out")
            .arg(dir.cert_pem_path())
            .stderr(std::process::Stdio::null())
            .status();
        if !matches!(status, Ok(s) if s.success()) {
            eprintln!("openssl not available; skipping");
            return;
        }
        fs::set_permissions(dir.key_path(), fs::Permissions::from_mode(0o600)).unwrap();
        let ca = std::sync::Arc::new(Ca::load_or_create(&dir, CaKeyType::EcdsaP256).unwrap());
        assert_eq!(ca.info().subject, "CN=rsa test CA");
        let minter = crate::tls::leaf::LeafMinter::new(ca).unwrap();
        let leaf = minter.mint("rsa.test", None).unwrap();
        let (_, cert) = x509_parser::parse_x509_certificate(&leaf.cert[0]).unwrap();
        assert_eq!(cert.issuer().to_string(), "CN=rsa test CA");
    }

    #[test]
    fn cli_helpers() {
        use crate::tls::cli::*;
        let dir = test_dir("cli");
        let msg = ca_new(&dir, CaKeyType::EcdsaP256, false).unwrap();
        let ca = Ca::load(&dir).unwrap();
        assert!(msg.contains(&ca.info().sha256_fingerprint));
        let show = ca_show(&ca);
        for needle in [
            "CN=luring CA",
            ca.info().sha256_fingerprint.as_str(),
            "update-ca-certificates",
            "/usr/local/share/ca-certificates/luring.crt",
            "certutil -d sql:$HOME/.pki/nssdb -A -t C,, -n luring -i",
            "policies.json",
            " UTC",
        ] {
            assert!(show.contains(needle), "missing {needle:?} in\n{show}");
        }
        assert!(ca_path(&dir).contains(CERT_PEM_FILE));
        assert!(ca_export(&ca, ExportFormat::Pem).starts_with(b"-----BEGIN CERTIFICATE-----"));
        assert_eq!(ca_export(&ca, ExportFormat::Der), ca.cert_der().as_ref());
        let out = dir.path().join("export.der");
        ca_export_to(&ca, "der".parse().unwrap(), &out).unwrap();
        assert_eq!(fs::read(out).unwrap(), ca.cert_der().as_ref());
        assert!(ca_new(&dir, CaKeyType::EcdsaP256, false).is_err());
        assert!(ca_new(&dir, CaKeyType::EcdsaP256, true).is_ok());
    }
}
