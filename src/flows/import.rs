//! `luring flows import`: tells a HAR (plain or zlib'd `.zhar`) from a `mitmdump -w`
//! dump by its first bytes, converts it to a flow file, and reports what came across.

pub use super::import_out::{ImportReport, Output};
use std::io::{self, BufRead, Write};

/// The kinds of input import knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// HAR JSON.
    Har,
    /// HAR compressed with zlib (mitmproxy's `.zhar`).
    ZHar,
    /// tnetstring flows from `mitmdump -w`.
    MitmDump,
}

/// Tells the input's kind from its first bytes.
pub fn detect(head: &[u8]) -> Result<Kind, String> {
    let head = head.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(head);
    let first = head.iter().position(|c| !c.is_ascii_whitespace());
    match first.map(|i| &head[i..]) {
        None => Err("the input is empty".into()),
        Some(h) if h.starts_with(b"{") => Ok(Kind::Har),
        Some(h) if h.starts_with(super::file::MAGIC) => {
            Err("the input is already a luring flow file".into())
        }
        Some(h) if h[0].is_ascii_digit() && h.iter().take(12).any(|&c| c == b':') => {
            Ok(Kind::MitmDump)
        }
        Some(h)
            if h.len() >= 2
                && h[0] == 0x78
                && (u16::from(h[0]) << 8 | u16::from(h[1])) % 31 == 0 =>
        {
            Ok(Kind::ZHar)
        }
        _ => Err("not a HAR file or a mitmproxy dump (unknown first bytes)".into()),
    }
}

/// Converts `input` into a flow file written to `out`. The flows converted before an
/// error stay in `out`; the error says where reading stopped.
pub fn import<R: BufRead, W: Write>(mut input: R, out: W) -> (ImportReport, Result<(), String>) {
    let kind = match input.fill_buf().map_err(|e| e.to_string()).and_then(detect) {
        Ok(k) => k,
        Err(e) => return (ImportReport::default(), Err(e)),
    };
    // Windows tools start JSON with a byte order mark, which serde_json refuses.
    if input
        .fill_buf()
        .is_ok_and(|h| h.starts_with(b"\xEF\xBB\xBF"))
    {
        input.consume(3);
    }
    match kind {
        Kind::Har => super::har::import::import(input, out),
        Kind::ZHar => {
            let z = io::BufReader::new(flate2::read::ZlibDecoder::new(input));
            super::har::import::import(z, out)
        }
        Kind::MitmDump => super::mitm::import(input, out),
    }
}

/// Opens FILE for reading, buffered; "-" is stdin (a pipe from zcat, curl...).
pub fn open_input(file: &std::path::Path) -> io::Result<io::BufReader<Box<dyn io::Read>>> {
    let r: Box<dyn io::Read> = if file.as_os_str() == "-" {
        Box::new(io::stdin())
    } else {
        Box::new(std::fs::File::open(file)?)
    };
    Ok(io::BufReader::with_capacity(256 * 1024, r))
}

/// `luring flows import FILE -o OUT` (FILE "-": stdin): the report goes to stderr.
pub fn run(file: &std::path::Path, out: &std::path::Path) -> Result<(), String> {
    let input = open_input(file).map_err(|e| format!("{}: {e}", file.display()))?;
    let o = create_private(out).map_err(|e| format!("{}: {e}", out.display()))?;
    let (rep, r) = import(input, io::BufWriter::new(o));
    let mut err = io::stderr().lock();
    for l in rep.lines() {
        let _ = writeln!(err, "{l}");
    }
    r.map_err(|e| format!("{}: {e}", file.display()))
}

/// Creates `path` with mode 0600: flows hold whatever the traffic held.
fn create_private(path: &std::path::Path) -> io::Result<std::fs::File> {
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
}
