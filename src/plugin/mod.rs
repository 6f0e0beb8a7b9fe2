//! Plugin engine: one LuaJIT state per worker running the register_hook surface.
//!
//! OWNED BY THE PLUGIN-ENGINE WORK. The proxy relies only on the API below
//! (see docs/rfc/001-plugin-engine.md once written).
