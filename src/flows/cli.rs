//! `luring flows`: show, stats, export and import of flow files.

use clap::Subcommand;
use std::path::PathBuf;

/// `luring flows` subcommands.
#[derive(Subcommand, Debug)]
pub enum FlowsAction {
    /// One line per flow: time, client, method, URL, status, sizes, duration.
    Show {
        /// The flow file (a HAR or mitmproxy dump: `luring flows import` it first).
        file: PathBuf,
        /// Only flows matching this mitmproxy-style filter expression.
        #[arg(long, value_name = "EXPR")]
        filter: Option<String>,
    },
    /// Counts by host, method, status and protocol; size and duration percentiles.
    Stats {
        /// The flow file.
        file: PathBuf,
        /// Only flows matching this filter expression.
        #[arg(long, value_name = "EXPR")]
        filter: Option<String>,
    },
    /// Convert a flow file to HAR 1.2 or JSON lines.
    Export {
        /// The flow file.
        file: PathBuf,
        /// har or jsonl.
        #[arg(long, default_value = "har", value_name = "FORMAT")]
        format: String,
        /// Output file [default: stdout].
        #[arg(short = 'o', long = "out", value_name = "FILE")]
        out: Option<PathBuf>,
        /// Only flows matching this filter expression.
        #[arg(long, value_name = "EXPR")]
        filter: Option<String>,
    },
    /// Convert a HAR file (Chrome, Firefox, mitmproxy) or a `mitmdump -w` dump into a flow file.
    Import {
        /// The HAR or mitmproxy dump file.
        file: PathBuf,
        /// The flow file to write.
        #[arg(short = 'o', long = "out", value_name = "FILE", required = true)]
        out: PathBuf,
        /// Only flows matching this filter expression.
        #[arg(long, value_name = "EXPR")]
        filter: Option<String>,
    },
}

/// Runs a `luring flows` subcommand; the process exit code.
pub fn run(action: FlowsAction) -> i32 {
    let r = match action {
        FlowsAction::Show { file, filter } => {
            with_output(None, |out| super::show::run(&file, filter.as_deref(), out))
        }
        FlowsAction::Stats { file, filter } => {
            with_output(None, |out| super::stats::run(&file, filter.as_deref(), out))
        }
        FlowsAction::Export {
            file,
            format,
            out,
            filter,
        } => match format.as_str() {
            // A bad filter is reported before -o creates an empty file.
            "jsonl" => check_filter(filter.as_deref()).and_then(|()| {
                with_output(out.as_deref(), |w| {
                    super::jsonl::run(&file, filter.as_deref(), w)
                })
            }),
            "har" => parse(filter.as_deref()).and_then(|f| export_har(&file, out.as_deref(), f)),
            other => Err(format!("unknown export format {other:?} (har or jsonl)")),
        },
        FlowsAction::Import { file, out, filter } => parse(filter.as_deref()).and_then(|f| {
            super::import::run(&file, &out)?;
            match f {
                Some(f) => keep_matching(&out, &f),
                None => Ok(()),
            }
        }),
    };
    match r {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("luring flows: {e}");
            1
        }
    }
}

/// Runs a reader with stdout or the `-o` file as its output. A reader of stdout that
/// went away (`| head`) ends the command quietly.
fn with_output(
    out: Option<&std::path::Path>,
    f: impl FnOnce(&mut dyn std::io::Write) -> Result<(), super::scan::ScanError>,
) -> Result<(), String> {
    let mut w = super::scan::output(out).map_err(|e| format!("creating the output: {e}"))?;
    match f(&mut *w) {
        Err(e) if e.is_broken_pipe() => Ok(()),
        r => r.map_err(|e| e.to_string()),
    }
}

/// Parses a `--filter` only to report its error.
fn check_filter(expr: Option<&str>) -> Result<(), String> {
    super::scan::parse_filter(expr)
        .map(drop)
        .map_err(|e| e.to_string())
}

/// `luring flows export FILE --format har [-o OUT]` (FILE "-": stdin): what HAR could
/// not carry goes to stderr.
fn export_har(
    file: &std::path::Path,
    out: Option<&std::path::Path>,
    filter: Option<super::filter::Filter>,
) -> Result<(), String> {
    let input = super::import::open_input(file)
        .map_err(|e| format!("{}: {e}", file.display()))
        .and_then(|r| {
            super::file::FlowReader::new(r).map_err(|e| format!("{}: {e}", file.display()))
        })?;
    let mut w: Box<dyn std::io::Write> = match out {
        Some(p) => Box::new(std::io::BufWriter::new(
            std::fs::File::create(p).map_err(|e| format!("{}: {e}", p.display()))?,
        )),
        None => Box::new(std::io::BufWriter::new(std::io::stdout().lock())),
    };
    let mut keep = |f: &super::record::HttpFlow| {
        filter
            .as_ref()
            .is_none_or(|x| x.matches(super::describe::FlowRef::Http(f)))
    };
    let (rep, r) = super::har::export::export(input, &mut w, &mut keep);
    eprintln!("exported {} flow(s) to HAR", rep.entries);
    for l in rep.losses() {
        eprintln!("  lost: {l}");
    }
    r.map_err(|e| format!("{}: {e}", file.display()))
}

/// A `--filter` expression, parsed (None without one).
fn parse(expr: Option<&str>) -> Result<Option<super::filter::Filter>, String> {
    super::scan::parse_filter(expr).map_err(|e| e.to_string())
}

/// `import --filter`: rewrites the imported file with only the flows that match (a
/// second streaming pass, so memory stays flat).
fn keep_matching(path: &std::path::Path, f: &super::filter::Filter) -> Result<(), String> {
    use super::describe::FlowRef;
    use super::record::Record;
    let shown = path.display();
    let tmp = path.with_extension("filtering");
    let r = (|| -> Result<(u64, u64), String> {
        let mut input = super::file::open(path).map_err(|e| format!("{shown}: {e}"))?;
        let meta = match input.next_record() {
            Some(Ok(Record::Meta(m))) => m,
            _ => return Err(format!("{shown}: no Meta record")),
        };
        use std::os::unix::fs::OpenOptionsExt;
        let out = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)
            .map_err(|e| format!("{}: {e}", tmp.display()))?;
        let mut w = super::file::FlowWriter::new(std::io::BufWriter::new(out), &meta)
            .map_err(|e| e.to_string())?;
        let (mut kept, mut all) = (0, 0);
        for rec in input {
            let rec = rec.map_err(|e| format!("{shown}: {e}"))?;
            let matched = match &rec {
                Record::Http(h) => Some(f.matches(FlowRef::Http(h))),
                Record::Tunnel(t) => Some(f.matches(FlowRef::Tunnel(t))),
                _ => None,
            };
            all += matched.is_some() as u64;
            if matched != Some(false) {
                kept += matched.is_some() as u64;
                w.write(&rec).map_err(|e| e.to_string())?;
            }
        }
        w.flush().map_err(|e| e.to_string())?;
        Ok((kept, all))
    })();
    match r {
        Ok((kept, all)) => {
            eprintln!("--filter kept {kept} of {all} flow(s)");
            std::fs::rename(&tmp, path).map_err(|e| format!("{shown}: {e}"))
        }
        Err(e) => {
            let _ = std::fs::remove_file(&tmp);
            Err(e)
        }
    }
}
