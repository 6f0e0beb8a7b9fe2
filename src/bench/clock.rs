//! The driver's clock and its precise sleep. tokio's timers tick in whole
//! milliseconds, which would add up to 1 ms of schedule lag to every request; a
//! timerfd armed at an absolute CLOCK_MONOTONIC time wakes within microseconds.

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use tokio::io::unix::AsyncFd;

/// CLOCK_MONOTONIC now, in nanoseconds: the one time base of every measurement.
pub fn mono_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: ts is a valid timespec to write to
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// A sleep to an absolute monotonic time, on a timerfd in the runtime's poller.
pub struct Timer {
    fd: AsyncFd<OwnedFd>,
}

impl Timer {
    /// A new timer; it also narrows this thread's timer slack to 10 µs (from the
    /// default 50 µs), as the schedule's precision is the point of an open loop.
    pub fn new() -> std::io::Result<Timer> {
        // SAFETY: plain syscalls with valid constant arguments
        let raw = unsafe {
            libc::prctl(libc::PR_SET_TIMERSLACK, 10_000u64);
            libc::timerfd_create(
                libc::CLOCK_MONOTONIC,
                libc::TFD_NONBLOCK | libc::TFD_CLOEXEC,
            )
        };
        if raw < 0 {
            return Err(std::io::Error::last_os_error());
        }
        // SAFETY: raw is a fresh fd we own
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        // SAFETY: the OwnedFd is moved into the AsyncFd, which deregisters it before
        // closing it: the fd stays valid for as long as it is registered
        let fd = unsafe { AsyncFd::register(fd) }.map_err(|e| e.into_parts().1)?;
        Ok(Timer { fd })
    }

    /// Returns at `at_ns` (monotonic) or at once when it has passed.
    pub async fn sleep_until(&self, at_ns: u64) {
        if at_ns <= mono_ns() {
            return;
        }
        let spec = libc::itimerspec {
            it_interval: libc::timespec {
                tv_sec: 0,
                tv_nsec: 0,
            },
            it_value: libc::timespec {
                tv_sec: (at_ns / 1_000_000_000) as libc::time_t,
                tv_nsec: (at_ns % 1_000_000_000) as libc::c_long,
            },
        };
        let fd = self.fd.get_ref().as_raw_fd();
        // SAFETY: fd is our timerfd, spec is valid
        let rc = unsafe {
            libc::timerfd_settime(fd, libc::TFD_TIMER_ABSTIME, &spec, std::ptr::null_mut())
        };
        if rc < 0 {
            return;
        }
        while mono_ns() < at_ns {
            let Ok(mut guard) = self.fd.readable().await else {
                return;
            };
            let mut n = [0u8; 8];
            // SAFETY: reading 8 bytes into a valid buffer
            let r = unsafe { libc::read(fd, n.as_mut_ptr().cast(), 8) };
            if r < 0 {
                guard.clear_ready();
            }
        }
    }
}

/// User plus system CPU time of process `pid` (None: this process), in microseconds.
pub fn cpu_us(pid: Option<u32>) -> Option<u64> {
    let path = match pid {
        Some(p) => format!("/proc/{p}/stat"),
        None => "/proc/self/stat".to_string(),
    };
    let s = std::fs::read_to_string(path).ok()?;
    // fields after the command name, which may hold spaces, closed by the last ')'
    let rest = &s[s.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split(' ').collect();
    let ticks: u64 = f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?;
    // SAFETY: sysconf has no preconditions
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as u64;
    Some(ticks * 1_000_000 / hz)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn own_cpu_time_reads_and_grows() {
        let a = cpu_us(None).expect("/proc/self/stat");
        let t = mono_ns();
        let mut x = 0u64;
        while mono_ns() - t < 50_000_000 {
            x = x.wrapping_add(std::hint::black_box(1));
        }
        assert!(x > 0);
        assert!(cpu_us(None).unwrap() > a);
    }

    #[test]
    fn timer_wakes_at_the_time_not_before() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let t = Timer::new().unwrap();
            for _ in 0..5 {
                let at = mono_ns() + 2_000_000;
                t.sleep_until(at).await;
                assert!(mono_ns() >= at);
            }
        });
    }
}
