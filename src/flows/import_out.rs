//! What an import writes to: the flow file it makes (started on the first record) and
//! the report of what it imported, skipped and noticed. Shared by the HAR and the
//! mitmproxy dump readers.

use super::file::FlowWriter;
use super::record::{now_ns, Meta, Record};
use std::collections::BTreeMap;
use std::io::{self, Write};

/// What an import wrote, skipped and noticed.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct ImportReport {
    /// Records written (HTTP and tunnel flows).
    pub imported: u64,
    /// Flows not imported, by reason.
    pub skipped: BTreeMap<String, u64>,
    /// Changes made on the way, by kind (counts).
    pub changed: BTreeMap<String, u64>,
    /// Warnings about the input as a whole (a sanitized HAR...).
    pub warnings: Vec<String>,
}

impl ImportReport {
    /// Counts one skipped flow.
    pub fn skip(&mut self, why: &str) {
        *self.skipped.entry(why.to_string()).or_default() += 1;
    }

    /// Counts one change made to a flow.
    pub fn change(&mut self, what: &str) {
        *self.changed.entry(what.to_string()).or_default() += 1;
    }

    /// The report as lines for stderr.
    pub fn lines(&self) -> Vec<String> {
        let mut v = vec![format!(
            "imported {} flow(s), skipped {}",
            self.imported,
            self.skipped.values().sum::<u64>()
        )];
        v.extend(
            self.skipped
                .iter()
                .map(|(w, n)| format!("  skipped {n}: {w}")),
        );
        v.extend(
            self.changed
                .iter()
                .map(|(w, n)| format!("  {n} flow(s): {w}")),
        );
        v.extend(self.warnings.iter().map(|w| format!("warning: {w}")));
        v
    }
}

/// A flow file being written, started on the first record so that facts read before
/// it (a HAR's `_luringMeta`) can still go into its Meta record.
pub struct Output<W: Write> {
    out: Option<W>,
    w: Option<FlowWriter<W>>,
    /// The Meta record to write first.
    pub meta: Meta,
}

impl<W: Write> Output<W> {
    /// An output whose Meta names `writer`.
    pub fn new(out: W, writer: &str) -> Self {
        Output {
            out: Some(out),
            w: None,
            meta: Meta {
                writer: writer.to_string(),
                started_ns: now_ns(),
                ..Default::default()
            },
        }
    }

    fn start(&mut self) -> io::Result<&mut FlowWriter<W>> {
        if self.w.is_none() {
            let out = self.out.take().expect("output taken once");
            self.w = Some(FlowWriter::new(out, &self.meta)?);
        }
        Ok(self.w.as_mut().expect("started"))
    }

    /// Appends a record.
    pub fn write(&mut self, rec: &Record) -> io::Result<()> {
        self.start()?.write(rec)
    }

    /// Writes the Meta record if nothing was written yet, and flushes.
    pub fn finish(&mut self) -> io::Result<()> {
        self.start()?.flush()
    }
}
