//! Sans-IO protocol code: bytes in, events and bytes out. No sockets, no clocks, no Lua.

pub mod http1;
