//! Signal handling on a dedicated thread: SIGTERM/SIGINT drain then stop (a second one
//! stops at once), SIGHUP reloads plugins; `--watch` polls plugin files for changes.

use crate::config::Config;
use crate::proxy::worker::Control;
use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
use signal_hook::iterator::Signals;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};
use tokio::sync::watch;

/// Registers the handled signals; they queue until [`spawn`] serves them.
pub fn install() -> Result<Signals, String> {
    Signals::new([SIGTERM, SIGINT, SIGHUP])
        .map_err(|e| format!("cannot install signal handlers: {e}"))
}

/// Starts the signal thread (and the watcher thread with `--watch`).
pub fn spawn(
    mut signals: Signals,
    cfg: Arc<Config>,
    control: watch::Sender<Control>,
    drain: Duration,
) -> Result<(), String> {
    let control = Arc::new(control);
    if cfg.watch && !cfg.plugins.is_empty() {
        let cfg = cfg.clone();
        let control = control.clone();
        std::thread::Builder::new()
            .name("luring-watch".into())
            .spawn(move || watch_files(&cfg, &control))
            .map_err(|e| e.to_string())?;
    }
    std::thread::Builder::new()
        .name("luring-signals".into())
        .spawn(move || {
            let mut stopping = false;
            for sig in signals.forever() {
                match sig {
                    SIGHUP => reload(&cfg, &control, "SIGHUP"),
                    _ if stopping => {
                        tracing::warn!("second stop signal: stopping at once");
                        std::process::exit(1);
                    }
                    _ => {
                        stopping = true;
                        tracing::info!(
                            "stop signal: draining in-flight requests for up to {:?}",
                            drain
                        );
                        control.send_modify(|c| c.stopping = true);
                    }
                }
            }
        })
        .map_err(|e| e.to_string())?;
    Ok(())
}

/// Validates the plugin set in a scratch state, then tells every worker to rebuild.
fn reload(cfg: &Config, control: &watch::Sender<Control>, why: &str) {
    match crate::plugin::check(&cfg.plugins) {
        Ok(_) => {
            tracing::info!("{why}: reloading {} plugin file(s)", cfg.plugins.len());
            control.send_modify(|c| c.reload_generation += 1);
        }
        Err(e) => tracing::error!("{why}: plugin reload rejected, keeping the old set:\n{e}"),
    }
}

/// Polls the plugin files and the Lua modules beside them (what `require` finds
/// first), so editing a module a plugin requires reloads too.
fn watch_files(cfg: &Config, control: &watch::Sender<Control>) {
    let stamp = || -> Vec<(PathBuf, Option<SystemTime>)> {
        let mut files: Vec<PathBuf> = cfg.plugins.clone();
        let mut dirs: Vec<&Path> = cfg.plugins.iter().filter_map(|p| p.parent()).collect();
        dirs.sort();
        dirs.dedup();
        for d in dirs {
            let d = if d.as_os_str().is_empty() {
                Path::new(".")
            } else {
                d
            };
            if let Ok(rd) = std::fs::read_dir(d) {
                files.extend(
                    rd.flatten()
                        .map(|e| e.path())
                        .filter(|p| p.extension().is_some_and(|x| x == "lua")),
                );
            }
        }
        files.sort();
        files.dedup();
        files
            .into_iter()
            .map(|p| {
                let t = std::fs::metadata(&p).and_then(|m| m.modified()).ok();
                (p, t)
            })
            .collect()
    };
    let mut last = stamp();
    loop {
        std::thread::sleep(Duration::from_millis(500));
        let now = stamp();
        if now != last {
            last = now;
            reload(cfg, control, "plugin file changed");
        }
    }
}
