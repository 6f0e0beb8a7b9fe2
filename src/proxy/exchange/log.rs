//! The access log: one line per exchange (target `luring::access`), the same layout
//! for every HTTP version and for tunnels: client, request line, status ("-" when none
//! was sent), bytes sent to the client, milliseconds, then where it went (or who), and
//! the connection.

use std::net::SocketAddr;
use std::time::Instant;

/// An exchange or tunnel being timed for its access-log line.
pub struct AccessRecord {
    started: Instant,
    /// "METHOD target VERSION", or "SOCKS5 CONNECT host:port".
    line: String,
    /// "host=scheme://host" or "user=name".
    tail: String,
}

impl AccessRecord {
    /// Starts the record of an HTTP request when its head is complete; `scheme` is
    /// empty when the request names its own.
    pub fn http(method: &[u8], target: &[u8], version: &str, scheme: &str, host: &[u8]) -> Self {
        let line = format!(
            "{} {} {version}",
            String::from_utf8_lossy(method),
            String::from_utf8_lossy(target)
        );
        let sep = if scheme.is_empty() { "" } else { "://" };
        let tail = format!("host={scheme}{sep}{}", String::from_utf8_lossy(host));
        Self::start(line, tail)
    }

    /// Starts a record with its request line and what follows the timing.
    pub fn start(line: String, tail: String) -> Self {
        AccessRecord {
            started: Instant::now(),
            line,
            tail,
        }
    }

    /// Writes the line: `status` None when no answer was sent; `bytes` sent to the
    /// client.
    pub fn finish(&self, client: SocketAddr, status: Option<u16>, bytes: u64, conn: u64) {
        let status = status.map_or("-".to_string(), |s| s.to_string());
        tracing::info!(
            target: "luring::access",
            "{client} \"{}\" {status} {bytes} {:.1}ms {} conn={conn}",
            self.line,
            self.started.elapsed().as_secs_f64() * 1e3,
            self.tail,
        );
    }
}

/// The status of an HTTP answer for the log: 0 means none was sent.
pub fn sent_status(status: u16) -> Option<u16> {
    (status != 0).then_some(status)
}

/// A tunnel's access-log line, written when the connection ends.
pub struct TunnelLog {
    /// The record, started with the CONNECT or SOCKS5 request.
    pub record: AccessRecord,
    /// The answer's status (SOCKS5: the reply code); None when none was sent.
    pub status: Option<u16>,
    /// Bytes written to the client before the request was answered.
    pub written_before: u64,
}
