//! The replay origin's TLS (`luring bench origin --tls`): a leaf from luring's CA for
//! whatever name the client asks for (SNI; without one, the address it connected
//! to), ALPN h2 or http/1.1. The CA and the leaf cache are luring's own (src/tls).

use crate::tls::{Ca, CaKeyType, Confdir, LeafMinter, ServerTlsFactory, SharedLeafStore};
use std::path::PathBuf;
use std::sync::Arc;

/// Leaves kept in the origin's cache (one per name asked for).
const CACHE: usize = 4096;

/// The origin's TLS material, shared by its threads.
pub struct OriginTls {
    store: Arc<SharedLeafStore>,
    factory: ServerTlsFactory,
    /// The CA certificate file clients must trust.
    pub ca_pem: PathBuf,
}

impl OriginTls {
    /// Loads (or on first use creates) the CA in `confdir` (luring's default when
    /// None), as `luring run` does.
    pub fn new(confdir: Option<PathBuf>) -> Result<OriginTls, String> {
        let dir = Confdir::resolve(confdir).map_err(|e| e.to_string())?;
        let ca = crate::proxy::worker_tls::with_dir_lock(&dir, || {
            Ca::load_or_create(&dir, CaKeyType::default())
        })
        .map_err(|e| format!("CA: {e}"))?;
        let minter = LeafMinter::new(Arc::new(ca)).map_err(|e| format!("CA: {e}"))?;
        Ok(OriginTls {
            store: SharedLeafStore::new(minter, CACHE),
            factory: ServerTlsFactory::new().map_err(|e| e.to_string())?,
            ca_pem: dir.cert_pem_path(),
        })
    }

    /// An acceptor: the SNI picks the leaf; `fallback` (the address dialled, or the
    /// host of the CONNECT) stands in for a client that sent none (one that dialled an
    /// IP).
    pub fn acceptor(&self, fallback: &str) -> tokio_rustls::TlsAcceptor {
        let alpn = [b"h2".to_vec(), b"http/1.1".to_vec()];
        let cfg = self
            .factory
            .config_for_sni(self.store.clone(), Some(fallback), None, &alpn);
        tokio_rustls::TlsAcceptor::from(cfg)
    }
}

/// A TLS ClientHello starts with a handshake record (content type 22).
pub fn is_tls(first: u8) -> bool {
    first == 0x16
}
