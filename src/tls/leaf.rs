//! Leaf certificates minted on the fly for intercepted hosts, and their caches.
//!
//! One leaf key pair (ECDSA P-256) serves every leaf of the process, so minting a
//! leaf is one CA signature, not a key generation: ~50 µs instead of milliseconds
//! (RSA key generation would be far slower still). The key never leaves memory.
//!
//! Caching is two-level. Each worker owns a [`LeafCache`] (a plain `HashMap`, no
//! lock, no atomics beyond an `Arc` clone) in front of one [`SharedLeafStore`] that
//! all workers share behind a `Mutex`; the mutex is only taken on a worker-local
//! miss, and never while signing.

use std::collections::{HashMap, VecDeque};
use std::net::IpAddr;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration as StdDuration, SystemTime};

use rcgen::{
    CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair,
    KeyUsagePurpose, SanType, PKCS_ECDSA_P256_SHA256,
};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer};
use rustls::sign::{CertifiedKey, SigningKey};
use time::{Duration, OffsetDateTime};

use super::ca::{random_serial, Ca, BACKDATE};

/// Default number of leaves kept, shared level and per worker alike.
pub const DEFAULT_CAPACITY: usize = 10_000;
/// Longest total validity of a leaf, backdating included (CA/Browser Forum and
/// Apple's 398-day limit, with a day of margin).
pub const MAX_LEAF_VALIDITY: Duration = Duration::days(397);
/// Cached leaves are re-minted this long before they expire.
const RENEW_MARGIN: StdDuration = StdDuration::from_secs(7 * 24 * 3600);

/// Errors from minting a leaf.
#[derive(Debug, thiserror::Error)]
pub enum LeafError {
    /// The host cannot be put in a certificate.
    #[error("cannot mint a certificate for {host:?}: {reason}")]
    BadHost {
        /// The host as given.
        host: String,
        /// Why it was refused.
        reason: &'static str,
    },
    /// rcgen failed to build or sign the leaf.
    #[error("leaf certificate generation failed: {0}")]
    Generate(#[from] rcgen::Error),
    /// rustls refused the leaf key.
    #[error("leaf key unusable by rustls: {0}")]
    Key(#[from] rustls::Error),
    /// The leaf key pair could not be generated.
    #[error("{0}")]
    KeyGen(String),
}

/// The process-wide crypto provider the TLS code uses (ring).
pub(crate) fn provider() -> &'static Arc<CryptoProvider> {
    static P: OnceLock<Arc<CryptoProvider>> = OnceLock::new();
    P.get_or_init(|| Arc::new(rustls::crypto::ring::default_provider()))
}

/// Signs leaf certificates with the CA, all sharing one process-wide key pair.
pub struct LeafMinter {
    ca: Arc<Ca>,
    leaf_key: KeyPair,
    signing_key: Arc<dyn SigningKey>,
    ca_not_after: OffsetDateTime,
}

impl std::fmt::Debug for LeafMinter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LeafMinter")
            .field("ca", &self.ca.info().subject)
            .finish_non_exhaustive()
    }
}

impl LeafMinter {
    /// Generates the process's leaf key pair, of the CA's kind (RSA leaves under an
    /// RSA CA, for the old clients that CA type is for).
    pub fn new(ca: Arc<Ca>) -> Result<Self, LeafError> {
        let leaf_key = if ca.info().key_algorithm.starts_with("RSA") {
            super::ca::generate_rsa2048().map_err(|e| LeafError::KeyGen(e.to_string()))?
        } else {
            KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256)?
        };
        let der = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(leaf_key.serialize_der()));
        let signing_key = provider().key_provider.load_private_key(der)?;
        let ca_not_after = ca.info().not_after;
        Ok(Self {
            ca,
            leaf_key,
            signing_key,
            ca_not_after,
        })
    }

    /// The CA leaves are signed by.
    pub fn ca(&self) -> &Arc<Ca> {
        &self.ca
    }

    /// Mints a leaf for `host` (DNS name or IP address), adding `upstream_sans`
    /// (copied from the real server's certificate) as extra subject alt names.
    pub fn mint(
        &self,
        host: &str,
        upstream_sans: Option<&[String]>,
    ) -> Result<Arc<CertifiedKey>, LeafError> {
        crate::metrics::leaf_minted();
        let host = normalize_host(host);
        let primary = san_for(&host).ok_or_else(|| LeafError::BadHost {
            host: host.clone(),
            reason: "not an IP address nor an ASCII DNS name (IDNA A-label expected)",
        })?;
        let mut params = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        // CN is capped at 64 characters by RFC 5280; clients match on the SAN anyway.
        dn.push(
            DnType::CommonName,
            host.chars().take(64).collect::<String>(),
        );
        params.distinguished_name = dn;
        params.subject_alt_names.push(primary);
        for san in upstream_sans.unwrap_or_default() {
            // A SAN rcgen cannot encode is dropped rather than failing the handshake.
            if let Some(s) = san_for(&normalize_host(san)) {
                if !params.subject_alt_names.contains(&s) {
                    params.subject_alt_names.push(s);
                }
            }
        }
        params.is_ca = IsCa::ExplicitNoCa;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        params.use_authority_key_identifier_extension = true;
        let now = OffsetDateTime::now_utc();
        params.not_before = now - BACKDATE;
        params.not_after = (params.not_before + MAX_LEAF_VALIDITY).min(self.ca_not_after);
        params.serial_number = Some(random_serial());
        let (issuer, ca_key) = self.ca.issuer();
        let cert = params.signed_by(&self.leaf_key, issuer, ca_key)?;
        let chain = vec![cert.der().clone(), self.ca.cert_der().clone()];
        Ok(Arc::new(CertifiedKey::new(chain, self.signing_key.clone())))
    }

    /// When a leaf minted now should be replaced.
    fn renew_at(&self) -> SystemTime {
        let validity =
            (MAX_LEAF_VALIDITY - BACKDATE).min(self.ca_not_after - OffsetDateTime::now_utc());
        let secs = u64::try_from(validity.whole_seconds()).unwrap_or(0);
        SystemTime::now() + StdDuration::from_secs(secs).saturating_sub(RENEW_MARGIN)
    }
}

/// Lowercases and strips IPv6 brackets and a trailing dot.
fn normalize_host(host: &str) -> String {
    let h = host.trim_start_matches('[').trim_end_matches(']');
    let h = h.strip_suffix('.').unwrap_or(h);
    h.to_ascii_lowercase()
}

fn san_for(host: &str) -> Option<SanType> {
    if host.is_empty() {
        return None;
    }
    if let Ok(ip) = host.parse::<IpAddr>() {
        return Some(SanType::IpAddress(ip));
    }
    if !host
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'*'))
    {
        return None;
    }
    host.try_into().ok().map(SanType::DnsName)
}

/// Cache key: the host alone, or host plus upstream SANs (they change the leaf).
fn cache_key(host: &str, upstream_sans: Option<&[String]>) -> String {
    let mut key = normalize_host(host);
    for san in upstream_sans.unwrap_or_default() {
        key.push('\n');
        key.push_str(san);
    }
    key
}

#[derive(Clone)]
struct Entry {
    cert: Arc<CertifiedKey>,
    renew_at: SystemTime,
}

/// A bounded map evicting in insertion order (FIFO). LRU would need the hit path to
/// write, and hits at the shared level are rare by design (workers hit locally), so
/// recency there would be noise.
struct BoundedMap {
    map: HashMap<String, Entry>,
    order: VecDeque<String>,
    capacity: usize,
}

impl BoundedMap {
    fn new(capacity: usize) -> Self {
        Self {
            map: HashMap::new(),
            order: VecDeque::new(),
            capacity: capacity.max(1),
        }
    }

    fn get(&self, key: &str) -> Option<&Entry> {
        self.map.get(key)
    }

    fn insert(&mut self, key: String, entry: Entry) {
        if self.map.insert(key.clone(), entry).is_some() {
            return;
        }
        self.order.push_back(key);
        while self.map.len() > self.capacity {
            match self.order.pop_front() {
                Some(old) => {
                    self.map.remove(&old);
                }
                None => break,
            }
        }
    }
}

/// The leaf store shared by all workers: second cache level plus the minter.
pub struct SharedLeafStore {
    minter: LeafMinter,
    map: Mutex<BoundedMap>,
}

impl std::fmt::Debug for SharedLeafStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SharedLeafStore")
            .field("minter", &self.minter)
            .finish_non_exhaustive()
    }
}

impl SharedLeafStore {
    /// A store holding at most `capacity` leaves.
    pub fn new(minter: LeafMinter, capacity: usize) -> Arc<Self> {
        Arc::new(Self {
            minter,
            map: Mutex::new(BoundedMap::new(capacity)),
        })
    }

    /// The minter behind the store.
    pub fn minter(&self) -> &LeafMinter {
        &self.minter
    }

    /// Returns the cached leaf or mints one. The lock is not held while signing, so
    /// two workers missing on the same host at once may both mint; both results are
    /// valid and the second insert wins.
    pub fn get_or_mint(
        &self,
        host: &str,
        upstream_sans: Option<&[String]>,
    ) -> Result<Arc<CertifiedKey>, LeafError> {
        self.get_entry(&cache_key(host, upstream_sans), host, upstream_sans)
            .map(|e| e.cert)
    }

    fn get_entry(
        &self,
        key: &str,
        host: &str,
        upstream_sans: Option<&[String]>,
    ) -> Result<Entry, LeafError> {
        let now = SystemTime::now();
        if let Some(e) = self.lock().get(key) {
            if now < e.renew_at {
                return Ok(e.clone());
            }
        }
        let entry = Entry {
            cert: self.minter.mint(host, upstream_sans)?,
            renew_at: self.minter.renew_at(),
        };
        self.lock().insert(key.to_owned(), entry.clone());
        Ok(entry)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BoundedMap> {
        // A panic while holding this lock cannot leave the map inconsistent in a
        // way that matters for a cache, so poisoning is ignored.
        self.map.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// A worker's own leaf cache: lock-free hits, falls back to the shared store.
pub struct LeafCache {
    local: BoundedMap,
    shared: Arc<SharedLeafStore>,
}

impl LeafCache {
    /// A per-worker cache of at most `capacity` entries over `shared`.
    pub fn new(shared: Arc<SharedLeafStore>, capacity: usize) -> Self {
        Self {
            local: BoundedMap::new(capacity),
            shared,
        }
    }

    /// The shared store behind this cache.
    pub fn shared(&self) -> &Arc<SharedLeafStore> {
        &self.shared
    }

    /// The leaf for `host` (SNI, or the CONNECT host without SNI), with optional
    /// upstream SANs copied in.
    pub fn get(
        &mut self,
        host: &str,
        upstream_sans: Option<&[String]>,
    ) -> Result<Arc<CertifiedKey>, LeafError> {
        // The hit path must not allocate: the common host is already normalized.
        let is_plain = upstream_sans.is_none() && host_is_plain(host);
        let owned;
        let key: &str = if is_plain {
            host
        } else {
            owned = cache_key(host, upstream_sans);
            &owned
        };
        if let Some(e) = self.local.get(key) {
            if SystemTime::now() < e.renew_at {
                return Ok(e.cert.clone());
            }
        }
        let entry = self.shared.get_entry(key, host, upstream_sans)?;
        let cert = entry.cert.clone();
        self.local.insert(key.to_owned(), entry);
        Ok(cert)
    }
}

/// True when `normalize_host(host) == host`, checked without allocating.
fn host_is_plain(host: &str) -> bool {
    !host
        .bytes()
        .any(|b| b.is_ascii_uppercase() || matches!(b, b'[' | b']'))
        && !host.ends_with('.')
}

/// Subject alternative names (DNS names and IP addresses) of a DER certificate, for
/// `--upstream-cert`. Unparseable input yields an empty list.
pub fn sans_from_der(cert_der: &[u8]) -> Vec<String> {
    use x509_parser::extensions::GeneralName;
    let Ok((_, cert)) = x509_parser::parse_x509_certificate(cert_der) else {
        return Vec::new();
    };
    let Ok(Some(san)) = cert.subject_alternative_name() else {
        return Vec::new();
    };
    san.value
        .general_names
        .iter()
        .filter_map(|name| match name {
            GeneralName::DNSName(s) => Some((*s).to_owned()),
            GeneralName::IPAddress(b) => match b.len() {
                4 => <[u8; 4]>::try_from(*b)
                    .ok()
                    .map(|a| IpAddr::from(a).to_string()),
                16 => <[u8; 16]>::try_from(*b)
                    .ok()
                    .map(|a| IpAddr::from(a).to_string()),
                _ => None,
            },
            _ => None,
        })
        .collect()
}

#[cfg(test)]
mod tests;
