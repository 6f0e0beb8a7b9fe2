//! `luring flows`: show, stats, export and import of flow files.

use clap::Subcommand;
use std::path::PathBuf;

/// `luring flows` subcommands.
#[derive(Subcommand, Debug)]
pub enum FlowsAction {
    /// One line per flow: time, client, method, URL, status, sizes, duration.
    Show {
        /// The flow file (or a HAR file).
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
            "har" => Err("har: not built yet".to_string()),
            other => Err(format!("unknown export format {other:?} (har or jsonl)")),
        },
        FlowsAction::Import { .. } => Err("luring flows import: not built yet".to_string()),
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
