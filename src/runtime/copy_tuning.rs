//! glibc's large copies, made fast on every CPU before the proxy starts.
//!
//! glibc (2.36, Debian 12) copies 8 KiB and more with `rep movsb`. On AMD Zen CPUs that
//! instruction runs about ten times slower when the destination lies 1 to 15 bytes
//! after the source modulo the page (3 GB/s against 38 on this project's VM,
//! docs/decisions.md "Large copies and glibc's rep movsb"). rustls copies each record's
//! plaintext to 5 bytes into a fresh buffer, so that case is common: it was 13% of the
//! proxy's CPU in an HTTP/2-over-TLS download. glibc's tunable
//! `glibc.cpu.x86_rep_movsb_threshold` moves those copies to its vector loop, which is
//! as fast for every alignment, but tunables are read only when a process starts: the
//! proxy starts itself again once with the tunable set.

/// The glibc tunable that decides from which size copies use `rep movsb`.
#[cfg(all(target_os = "linux", target_arch = "x86_64", target_env = "gnu"))]
const TUNABLE: &str = "glibc.cpu.x86_rep_movsb_threshold";

/// Starts this program again (same pid, arguments and environment) with the copy
/// tunable set, unless it is set already, the program runs under valgrind (its tool
/// would not follow), or the exec fails (the proxy then runs on with glibc's choice).
pub fn reexec_with_fast_copies() {
    #[cfg(all(target_os = "linux", target_arch = "x86_64", target_env = "gnu"))]
    {
        use std::os::unix::process::CommandExt;
        let current = std::env::var("GLIBC_TUNABLES").unwrap_or_default();
        if current.contains(TUNABLE) {
            return;
        }
        if std::env::var("LD_PRELOAD").is_ok_and(|p| p.contains("vgpreload")) {
            return;
        }
        let Ok(exe) = std::env::current_exe() else {
            return;
        };
        // larger than any single copy the proxy makes
        let setting = format!("{TUNABLE}=1073741824");
        let value = if current.is_empty() {
            setting
        } else {
            format!("{current}:{setting}")
        };
        let mut args = std::env::args_os();
        let mut cmd = std::process::Command::new(&exe);
        if let Some(arg0) = args.next() {
            cmd.arg0(arg0);
        }
        // returns only when the exec failed
        let _ = cmd.args(args).env("GLIBC_TUNABLES", value).exec();
    }
}
