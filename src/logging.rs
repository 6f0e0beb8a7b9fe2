//! Logger set-up: tracing to stderr, level from the CLI or RUST_LOG.

/// Installs the global subscriber; `level` is a level name or an env-filter expression.
pub fn init(level: &str) {
    let filter = std::env::var("RUST_LOG").unwrap_or_else(|_| level.to_string());
    let filter = tracing_subscriber::EnvFilter::try_new(&filter)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        // a failed write is reported with eprintln!, which panics when stderr is gone:
        // the logging thread (signals, a worker) would die with it
        .log_internal_errors(false)
        .try_init();
}
