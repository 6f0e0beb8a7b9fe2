//! TLS interception building blocks: the CA, leaf certificates, rustls configs for
//! both sides, passthrough rules and handshake info for hooks.
//!
//! Everything here is sans-IO: the proxy owns sockets and feeds rustls itself.

pub mod ca;
pub mod cli;
pub mod config;
pub mod info;
pub mod leaf;
pub mod passthrough;

pub use ca::{Ca, CaError, CaInfo, CaKeyType, Confdir};
pub use config::{
    describe_tls_error, ClientTlsFactory, ServerTlsFactory, TlsConfigError, UpstreamTlsOptions,
};
pub use info::{TlsInfo, TlsSide};
pub use leaf::{sans_from_der, LeafCache, LeafError, LeafMinter, SharedLeafStore};
pub use passthrough::Passthrough;
