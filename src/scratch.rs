//! Scratch directories for tests: one per test process, under the system temp
//! dir. Test processes cannot clean up at exit, so each one sweeps away the
//! directories of earlier test processes that are no longer running; without this,
//! every `cargo test` left hundreds of directories in /tmp.

use std::path::Path;
#[cfg(test)]
use std::{path::PathBuf, sync::OnceLock};

#[cfg(test)]
const PREFIX: &str = "luring-unit-";

/// This process's scratch root, created (and stale roots swept) on first use.
#[cfg(test)]
pub(crate) fn root() -> &'static Path {
    static ROOT: OnceLock<PathBuf> = OnceLock::new();
    ROOT.get_or_init(|| {
        let tmp = std::env::temp_dir();
        sweep_stale(&tmp, PREFIX);
        let dir = tmp.join(format!("{PREFIX}{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("scratch root");
        dir
    })
}

/// Removes `DIR/PREFIX<pid>` entries whose process is gone.
pub fn sweep_stale(dir: &Path, prefix: &str) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let name = e.file_name();
        let Some(pid) = name.to_str().and_then(|n| n.strip_prefix(prefix)) else {
            continue;
        };
        if pid.parse::<u32>().is_ok() && !Path::new("/proc").join(pid).exists() {
            let _ = std::fs::remove_dir_all(e.path());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sweeps_only_dead_processes() {
        let dir = root().join("sweep");
        let _ = std::fs::remove_dir_all(&dir);
        let live = dir.join(format!("x-{}", std::process::id()));
        // PIDs stop below 2^22 on Linux, so this one is never running.
        let dead = dir.join("x-4294967295");
        let other = dir.join("x-notapid");
        for d in [&live, &dead, &other] {
            std::fs::create_dir_all(d.join("inner")).unwrap();
        }
        sweep_stale(&dir, "x-");
        assert!(live.exists() && other.exists());
        assert!(!dead.exists());
    }
}
