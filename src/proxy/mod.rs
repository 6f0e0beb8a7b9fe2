//! The layer stack per connection: drives the sans-IO codecs in proto/ over io/ streams
//! and calls the plugin engine at the hook points.
//!
//! From the top: [`accept`] runs a worker's accept loop; [`conn`] drives one client
//! connection through its layers (SOCKS5, tunnels, TLS, HTTP/1, HTTP/2); the client
//! fronts in [`front`] feed [`exchange`], which is written once for every HTTP
//! version; [`upstream`] holds the upstream legs and the pool. Every hook point is
//! guarded by `Engine::has`, so with no plugin (or none on that event) nothing is
//! built and no Lua runs. docs/architecture.md follows one request through them.

pub mod accept;
pub mod body_relay;
pub mod byte_tunnel;
pub mod conn;
pub mod exchange;
pub mod front;
pub mod grpc;
pub mod grpc_web;
pub mod grpc_web_h2;
pub mod h1_wire;
pub mod h2_relay;
pub mod h2_stream;
pub mod hook_io;
pub mod hooks;
pub mod recycled;
pub mod sse;
pub mod upstream;
pub mod worker;
pub mod worker_tls;
pub mod ws;
