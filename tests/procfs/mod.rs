//! What /proc says about a running proxy: open descriptors, its TCP sockets by
//! state, CPU time, and its RLIMIT_NOFILE (set from outside with prlimit(2)).
#![allow(dead_code)]

use std::collections::HashSet;

/// TCP states as /proc/net/tcp writes them (include/net/tcp_states.h).
pub const ESTABLISHED: u8 = 0x01;
pub const FIN_WAIT1: u8 = 0x04;
pub const TIME_WAIT: u8 = 0x06;
pub const CLOSE_WAIT: u8 = 0x08;
pub const LISTEN: u8 = 0x0A;

/// Open descriptors of `pid` (entries of /proc/PID/fd).
pub fn fd_count(pid: i32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| d.count())
        .unwrap_or(0)
}

/// Open descriptors of `pid` numbered below `n`: RLIMIT_NOFILE bounds the number a
/// new descriptor gets, so the table is full when all of 0..n are taken.
pub fn fds_below(pid: i32, n: usize) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| {
            d.flatten()
                .filter_map(|e| e.file_name().to_str()?.parse::<usize>().ok())
                .filter(|fd| *fd < n)
                .count()
        })
        .unwrap_or(0)
}

/// The descriptors of `pid` by kind.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Fds {
    pub sockets: usize,
    /// Pipe ends: luring keeps up to 64 empty pipes (128 ends) per worker for splice.
    pub pipes: usize,
    pub other: usize,
}

/// Counts the descriptors of `pid` by what they point at.
pub fn fds(pid: i32) -> Fds {
    let mut f = Fds::default();
    let Ok(dir) = std::fs::read_dir(format!("/proc/{pid}/fd")) else {
        return f;
    };
    for e in dir.flatten() {
        match std::fs::read_link(e.path()) {
            Ok(l) if l.to_string_lossy().starts_with("socket:") => f.sockets += 1,
            Ok(l) if l.to_string_lossy().starts_with("pipe:") => f.pipes += 1,
            _ => f.other += 1,
        }
    }
    f
}

/// What each descriptor of `pid` that is neither a socket nor a pipe points at.
pub fn other_fds(pid: i32) -> Vec<String> {
    let Ok(dir) = std::fs::read_dir(format!("/proc/{pid}/fd")) else {
        return Vec::new();
    };
    let mut v: Vec<String> = dir
        .flatten()
        .filter_map(|e| std::fs::read_link(e.path()).ok())
        .map(|l| l.to_string_lossy().into_owned())
        .filter(|l| !l.starts_with("socket:") && !l.starts_with("pipe:"))
        .collect();
    v.sort();
    v
}

/// Socket inodes among the descriptors of `pid`.
pub fn socket_inodes(pid: i32) -> HashSet<u64> {
    let Ok(dir) = std::fs::read_dir(format!("/proc/{pid}/fd")) else {
        return HashSet::new();
    };
    dir.filter_map(|e| {
        let link = std::fs::read_link(e.ok()?.path()).ok()?;
        let s = link.to_str()?;
        s.strip_prefix("socket:[")?.strip_suffix(']')?.parse().ok()
    })
    .collect()
}

/// One line of /proc/net/tcp or tcp6.
#[derive(Debug, Clone, Copy)]
pub struct TcpSocket {
    pub local_port: u16,
    pub remote_port: u16,
    pub state: u8,
    pub inode: u64,
}

/// Every TCP socket of this network namespace, IPv4 and IPv6.
pub fn tcp_sockets() -> Vec<TcpSocket> {
    let mut out = Vec::new();
    for file in ["/proc/net/tcp", "/proc/net/tcp6"] {
        let Ok(text) = std::fs::read_to_string(file) else {
            continue;
        };
        for line in text.lines().skip(1) {
            let f: Vec<&str> = line.split_whitespace().collect();
            if f.len() < 10 {
                continue;
            }
            let port = |addr: &str| {
                addr.rsplit(':')
                    .next()
                    .and_then(|p| u16::from_str_radix(p, 16).ok())
                    .unwrap_or(0)
            };
            out.push(TcpSocket {
                local_port: port(f[1]),
                remote_port: port(f[2]),
                state: u8::from_str_radix(f[3], 16).unwrap_or(0),
                inode: f[9].parse().unwrap_or(0),
            });
        }
    }
    out
}

/// Sockets `pid` holds in CLOSE_WAIT: the peer closed and the proxy never did.
pub fn close_wait_owned(pid: i32) -> usize {
    let mine = socket_inodes(pid);
    tcp_sockets()
        .iter()
        .filter(|s| s.state == CLOSE_WAIT && mine.contains(&s.inode))
        .count()
}

/// Connections on local port `port` that still hold the kernel's attention for the
/// proxy: established, closing with unsent data (FIN-WAIT-1), or half-closed by the
/// peer (CLOSE-WAIT). TIME-WAIT and the listening socket are not counted.
pub fn held_on_port(port: u16) -> usize {
    tcp_sockets()
        .iter()
        .filter(|s| s.local_port == port && matches!(s.state, ESTABLISHED | FIN_WAIT1 | CLOSE_WAIT))
        .count()
}

/// User plus system CPU time of `pid`, in clock ticks (/proc/PID/stat fields 14, 15).
pub fn cpu_ticks(pid: i32) -> u64 {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return 0;
    };
    // the command name may hold spaces: fields are counted after its closing paren
    let rest = &stat[stat.rfind(')').map_or(0, |i| i + 1)..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    let n = |i: usize| f.get(i).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
    n(11) + n(12)
}

/// Clock ticks per second (sysconf(_SC_CLK_TCK)).
pub fn ticks_per_sec() -> u64 {
    // SAFETY: sysconf takes no pointer.
    let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if t > 0 {
        t as u64
    } else {
        100
    }
}

/// Sets the soft RLIMIT_NOFILE of a running process to `n` (the hard limit stays).
pub fn set_nofile(pid: i32, n: u64) -> std::io::Result<()> {
    let mut old = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: prlimit writes the current limit into `old`, which outlives the call.
    if unsafe { libc::prlimit(pid, libc::RLIMIT_NOFILE, std::ptr::null(), &mut old) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    let lim = libc::rlimit {
        rlim_cur: n,
        rlim_max: old.rlim_max,
    };
    // SAFETY: prlimit reads `lim`, which outlives the call; no old limit is asked for.
    if unsafe { libc::prlimit(pid, libc::RLIMIT_NOFILE, &lim, std::ptr::null_mut()) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// Resident set size of `pid` in KiB (VmRSS).
pub fn rss_kib(pid: i32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(0)
}
