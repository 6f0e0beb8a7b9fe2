//! The reading loop every `luring flows` reader shares: open the file, stream its
//! records one at a time (flat memory), keep those the filter selects, and stop at the
//! first damaged record after everything before it was handed on.

use super::describe::FlowRef;
use super::file::{self, ReadError};
use super::filter::{Filter, ParseError};
use super::record::{Drops, Meta, Record};
use std::io;
use std::path::Path;

/// A record handed to a reader.
pub enum Item<'a> {
    /// The file's metadata (first).
    Meta(&'a Meta),
    /// A flow the filter selected.
    Flow(FlowRef<'a>),
    /// A drop count (never filtered: it is about the file, not a flow).
    Drops(&'a Drops),
}

/// Why a command stopped.
#[derive(Debug, thiserror::Error)]
pub enum ScanError {
    /// The filter did not parse.
    #[error("{0}")]
    Filter(#[from] ParseError),
    /// The flow file could not be read past some point.
    #[error("{}: {err}", path.display())]
    Read {
        /// The file.
        path: std::path::PathBuf,
        /// Where and why reading stopped.
        err: ReadError,
    },
    /// Writing the output failed.
    #[error("writing the output: {0}")]
    Output(#[from] io::Error),
}

impl ScanError {
    /// The reader of our output went away (`| head`): not worth a message.
    pub fn is_broken_pipe(&self) -> bool {
        matches!(self, ScanError::Output(e) if e.kind() == io::ErrorKind::BrokenPipe)
    }
}

/// Parses an optional `--filter`.
pub fn parse_filter(expr: Option<&str>) -> Result<Option<Filter>, ScanError> {
    Ok(expr.map(Filter::parse).transpose()?)
}

/// Streams `path`, calling `on` for the meta record, each selected flow and each drop
/// count, in file order. A read error is returned after every record before it went
/// to `on`.
pub fn scan(
    path: &Path,
    filter: Option<&Filter>,
    mut on: impl FnMut(Item<'_>) -> io::Result<()>,
) -> Result<(), ScanError> {
    let read_err = |err| ScanError::Read {
        path: path.to_path_buf(),
        err,
    };
    let mut reader = file::open(path).map_err(read_err)?;
    while let Some(rec) = reader.next_record() {
        let rec = rec.map_err(read_err)?;
        let flow = match &rec {
            Record::Meta(m) => {
                on(Item::Meta(m))?;
                continue;
            }
            Record::Drops(d) => {
                on(Item::Drops(d))?;
                continue;
            }
            Record::Http(h) => FlowRef::Http(h),
            Record::Tunnel(t) => FlowRef::Tunnel(t),
        };
        if filter.is_none_or(|f| f.matches(flow)) {
            on(Item::Flow(flow))?;
        }
    }
    if reader.skipped_unknown > 0 {
        // Said on stderr, not in the output: a newer luring wrote records this one
        // cannot show, and the user should know the output is not the whole file.
        eprintln!(
            "luring flows: skipped {} records of kinds this luring does not know \
             (written by a newer luring)",
            reader.skipped_unknown
        );
    }
    Ok(())
}

/// Where a command writes: a buffered stdout or a created file.
pub fn output(out: Option<&Path>) -> io::Result<Box<dyn io::Write>> {
    Ok(match out {
        Some(p) => Box::new(io::BufWriter::with_capacity(
            256 * 1024,
            std::fs::File::create(p)?,
        )),
        None => Box::new(io::BufWriter::with_capacity(64 * 1024, io::stdout().lock())),
    })
}
