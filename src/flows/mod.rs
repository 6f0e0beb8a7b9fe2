//! Flows: what passes through the proxy, recorded to a file (docs/flows.md), and the
//! tools that read it back.

pub mod cli;
pub mod file;
pub mod har;
pub mod import;
pub mod mitm;
pub mod record;
