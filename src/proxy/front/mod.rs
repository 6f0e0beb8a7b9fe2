//! The client fronts: HTTP/1 and HTTP/2 as the client speaks them, both feeding the
//! version-agnostic exchange.

pub mod h1;
pub mod h2;
