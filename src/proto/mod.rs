//! Sans-IO protocol code: bytes in, events and bytes out. No sockets, no clocks, no Lua.

pub mod client_hello;
pub mod detect;
pub mod grpc;
pub mod h2_fields;
pub mod h2_flood;
pub mod http1;
pub mod protobuf;
pub mod socks5;
pub mod sse;
pub mod ws;
