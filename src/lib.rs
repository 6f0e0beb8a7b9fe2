//! luring: a thread-per-core io_uring intercepting proxy, scriptable in Lua.

pub mod bench;
pub mod cli;
pub mod config;
pub mod flows;
#[doc(hidden)]
pub mod fuzzing;
pub mod http;
pub mod io;
pub mod logging;
pub mod metrics;
pub mod plugin;
pub mod proto;
pub mod proxy;
pub mod runtime;
#[doc(hidden)]
pub mod scratch;
pub mod tls;
