//! The `luring` binary.

use clap::Parser;
use luring::cli::{Cli, Command};
use std::io::Write;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() {
    let cli = Cli::parse();
    // the commands that move bulk data; the others stay one quick process
    if matches!(cli.command, Command::Run(_) | Command::Bench(_)) {
        luring::runtime::copy_tuning::reexec_with_fast_copies();
    }
    let code = match cli.command {
        Command::Run(args) => match args.to_config() {
            Ok(cfg) => {
                luring::logging::init(&cfg.log_level);
                match luring::runtime::run(cfg) {
                    Ok(()) => 0,
                    Err(e) => {
                        let _ = writeln!(std::io::stderr(), "luring: {e}");
                        1
                    }
                }
            }
            Err(e) => {
                let _ = writeln!(std::io::stderr(), "luring: {e}");
                2
            }
        },
        Command::Check { files } => luring::cli::check_command(&files),
        Command::Ca { confdir, action } => luring::cli::ca_command(confdir, action),
        Command::Flows { action } => luring::flows::cli::run(action),
        Command::Bench(args) => luring::bench::cli::run(args),
    };
    std::process::exit(code);
}
