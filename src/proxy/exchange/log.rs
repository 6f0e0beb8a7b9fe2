//! The access log: one line per exchange (target `luring::access`), the same layout
//! for every HTTP version and for tunnels: client, request line, status ("-" when none
//! was sent), bytes sent to the client, milliseconds, then where it went (or who), and
//! the connection.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

/// `--access-log-format json`: set once at start, before any worker runs, and only
/// read afterwards (no cache line bounces between cores).
static JSON: AtomicBool = AtomicBool::new(false);

/// Chooses the access-log layout for the process: JSON objects or text lines.
pub fn set_json(on: bool) {
    JSON.store(on, Ordering::Relaxed);
}

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
        self.finish_with(client, status, bytes, conn, None);
    }

    /// [`finish`](Self::finish) with the reason of an error answer, when known (shown
    /// by the JSON layout only: the text layout stays as it was for existing parsers).
    pub fn finish_with(
        &self,
        client: SocketAddr,
        status: Option<u16>,
        bytes: u64,
        conn: u64,
        error: Option<&str>,
    ) {
        if JSON.load(Ordering::Relaxed) {
            let line = self.json(client, status, bytes, conn, error);
            tracing::info!(target: "luring::access", "{line}");
            return;
        }
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

impl AccessRecord {
    /// The record as one JSON object: the text line's fields by name; `host` or `user`
    /// from the tail; `error` when known.
    fn json(
        &self,
        client: SocketAddr,
        status: Option<u16>,
        bytes: u64,
        conn: u64,
        error: Option<&str>,
    ) -> String {
        let mut o = serde_json::json!({
            "client": client.to_string(),
            "request": self.line,
            "status": status,
            "bytes": bytes,
            "duration_ms": (self.started.elapsed().as_secs_f64() * 1e4).round() / 10.0,
            "conn": conn,
        });
        if let Some((k, v)) = self.tail.split_once('=') {
            o[k] = v.into();
        }
        if let Some(e) = error {
            o["error"] = e.into();
        }
        o.to_string()
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
