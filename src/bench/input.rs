//! Reads the recording a bench replays: a luring flow file, or a HAR / mitmdump file
//! converted in memory with `flows import` (so both kinds take one path).

use crate::flows::file::{FlowReader, MAGIC};
use crate::flows::record::{HttpFlow, Record};
use std::io::{BufRead, Cursor};
use std::path::Path;

/// The HTTP flows of a recording, in file order, and what was left out.
#[derive(Debug, Default)]
pub struct Recording {
    /// HTTP flows (CONNECT and tunnels left out).
    pub flows: Vec<HttpFlow>,
    /// Records left out (tunnels, CONNECT requests).
    pub skipped: u64,
}

/// Loads `path` (flow file, HAR, `.zhar` or mitmdump).
pub fn load(path: &Path) -> Result<Recording, String> {
    let mut input =
        crate::flows::import::open_input(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let head = input
        .fill_buf()
        .map_err(|e| format!("{}: {e}", path.display()))?;
    if head.starts_with(MAGIC) {
        let r = FlowReader::new(input).map_err(|e| format!("{}: {e}", path.display()))?;
        return collect(r, path);
    }
    let mut buf = Vec::new();
    let (_, res) = crate::flows::import::import(input, &mut buf);
    res.map_err(|e| format!("{}: {e}", path.display()))?;
    let r = FlowReader::new(Cursor::new(buf)).map_err(|e| format!("{}: {e}", path.display()))?;
    collect(r, path)
}

fn collect<R: std::io::Read>(r: FlowReader<R>, path: &Path) -> Result<Recording, String> {
    let mut rec = Recording::default();
    for item in r {
        match item.map_err(|e| format!("{}: {e}", path.display()))? {
            Record::Http(f) if f.request.method != "CONNECT" => rec.flows.push(*f),
            Record::Http(_) | Record::Tunnel(_) => rec.skipped += 1,
            Record::Meta(_) | Record::Drops(_) => {}
        }
    }
    if rec.flows.is_empty() {
        return Err(format!("{}: no HTTP flows to replay", path.display()));
    }
    Ok(rec)
}

/// Writes `flows` as a flow file at `path` (the bundled sample, tests).
pub fn write(path: &Path, flows: &[HttpFlow]) -> Result<(), String> {
    let f = std::fs::File::create(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let meta = crate::flows::record::Meta {
        writer: "luring bench".into(),
        started_ns: crate::flows::record::now_ns(),
        ..Default::default()
    };
    let mut w = crate::flows::file::FlowWriter::new(std::io::BufWriter::new(f), &meta)
        .map_err(|e| e.to_string())?;
    for fl in flows {
        w.write(&Record::Http(Box::new(fl.clone())))
            .map_err(|e| e.to_string())?;
    }
    w.flush().map_err(|e| e.to_string())
}
