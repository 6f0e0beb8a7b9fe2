//! Flows: what passes through the proxy, recorded to a file (docs/flows.md), and the
//! tools that read it back.

pub mod capture;
pub mod cli;
pub mod describe;
pub mod file;
pub mod filter;
pub mod har;
pub mod hist;
pub mod import;
pub mod import_out;
pub mod jsonl;
pub mod mitm;
pub mod record;
pub mod recorder;
pub mod scan;
pub mod show;
pub mod stats;
