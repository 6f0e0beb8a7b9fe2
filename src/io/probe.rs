//! Picks the io backend at start: io_uring when the kernel lets us, epoll otherwise.

use std::fmt;

/// The io backend a worker runs on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    /// io_uring through tokio-uring.
    Uring,
    /// epoll through tokio.
    Epoll,
}

impl fmt::Display for Backend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Backend::Uring => "uring",
            Backend::Epoll => "epoll",
        })
    }
}

/// What the user asked for with `--io`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum IoChoice {
    /// io_uring if available, else epoll with a warning.
    Auto,
    /// io_uring or fail.
    Uring,
    /// epoll.
    Epoll,
}

/// Checks that an io_uring instance can be created and says why not when it cannot.
pub fn probe_uring() -> Result<(), String> {
    match io_uring::IoUring::new(8) {
        Ok(ring) => {
            // the ops we rely on; an ancient kernel may create rings without them
            let mut probe = io_uring::Probe::new();
            if ring.submitter().register_probe(&mut probe).is_ok() {
                use io_uring::opcode;
                for (code, name) in [
                    (opcode::Accept::CODE, "accept"),
                    (opcode::Connect::CODE, "connect"),
                    (opcode::Recv::CODE, "recv"),
                    (opcode::Send::CODE, "send"),
                    (opcode::SendMsg::CODE, "sendmsg"),
                ] {
                    if !probe.is_supported(code) {
                        return Err(format!("kernel io_uring lacks the {name} operation"));
                    }
                }
            }
            Ok(())
        }
        Err(e) => Err(explain(e)),
    }
}

fn explain(e: std::io::Error) -> String {
    let disabled = std::fs::read_to_string("/proc/sys/kernel/io_uring_disabled")
        .ok()
        .and_then(|s| s.trim().parse::<u32>().ok())
        .unwrap_or(0);
    match e.raw_os_error() {
        Some(libc::ENOSYS) => {
            format!("io_uring_setup is not available (old kernel or blocked by seccomp): {e}")
        }
        Some(libc::EPERM) if disabled > 0 => {
            format!("io_uring is disabled by sysctl kernel.io_uring_disabled={disabled}: {e}")
        }
        Some(libc::EPERM) => format!("io_uring_setup not permitted (seccomp or policy): {e}"),
        Some(libc::ENOMEM) => format!("io_uring_setup failed: locked memory limit too low: {e}"),
        _ => format!("io_uring_setup failed: {e}"),
    }
}
