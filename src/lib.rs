//! luring: a thread-per-core io_uring intercepting proxy, scriptable in Lua.

pub mod http;
pub mod proto;
pub mod plugin;
