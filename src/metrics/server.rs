//! The metrics listener: one plain thread, apart from the workers, answering
//! `GET /metrics` (each worker asked for a snapshot, merged) and `GET /healthz`.
//!
//! Scrapes are rare (seconds apart) and small, so one blocking thread serving one
//! connection at a time is enough, and it never runs on a worker's core loop.

use super::Snapshot;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// What a scrape sends a worker: where to answer with its snapshot.
pub type Ask = mpsc::Sender<Snapshot>;

/// The scrape side of one worker's channel.
pub type WorkerLine = tokio::sync::mpsc::UnboundedSender<Ask>;

/// How long a scrape waits for the workers, all together.
const GATHER: Duration = Duration::from_secs(2);

/// What the listener thread reads besides the workers' snapshots.
pub struct Sources {
    /// One line per worker.
    pub workers: Vec<WorkerLine>,
    /// Flows dropped by the recorder (process-wide), when recording.
    pub recorder_dropped: Option<Box<dyn Fn() -> u64 + Send>>,
    /// True once the proxy is draining: /healthz answers 503 then.
    pub draining: Box<dyn Fn() -> bool + Send>,
}

/// Parses `--metrics`: `ADDR:PORT`, or a bare port meaning 127.0.0.1.
pub fn parse_addr(s: &str) -> Result<SocketAddr, String> {
    if let Ok(port) = s.parse::<u16>() {
        return Ok(SocketAddr::from(([127, 0, 0, 1], port)));
    }
    s.parse()
        .map_err(|_| format!("metrics: '{s}' is not ADDR:PORT or a port"))
}

/// Binds the metrics listener (so a taken port fails the start) and serves it on a
/// thread of its own; returns the bound address.
pub fn start(addr: SocketAddr, sources: Sources) -> Result<SocketAddr, String> {
    let l =
        TcpListener::bind(addr).map_err(|e| format!("metrics: cannot listen on {addr}: {e}"))?;
    let bound = l.local_addr().map_err(|e| e.to_string())?;
    std::thread::Builder::new()
        .name("luring-metrics".into())
        .spawn(move || {
            for conn in l.incoming() {
                match conn {
                    Ok(s) => serve(s, &sources),
                    Err(e) => {
                        tracing::warn!("metrics: accept failed: {e}");
                        std::thread::sleep(Duration::from_millis(50));
                    }
                }
            }
        })
        .map_err(|e| format!("metrics: cannot spawn thread: {e}"))?;
    Ok(bound)
}

/// Asks every worker for its counters and merges the answers; a worker that does not
/// answer within [`GATHER`] is left out (`luring_metrics_workers` says how many did).
pub fn gather(sources: &Sources) -> Snapshot {
    let (tx, rx) = mpsc::channel();
    let asked = sources
        .workers
        .iter()
        .filter(|w| w.send(tx.clone()).is_ok())
        .count();
    drop(tx);
    let deadline = Instant::now() + GATHER;
    let mut total = Snapshot::default();
    for _ in 0..asked {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(s) => total.merge(&s),
            Err(_) => break,
        }
    }
    total.recorder_dropped = sources.recorder_dropped.as_ref().map_or(0, |f| f());
    total
}

fn serve(mut s: TcpStream, sources: &Sources) {
    let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
    let _ = s.set_write_timeout(Some(Duration::from_secs(5)));
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 1024];
    // the request head only; a scraper sends no body
    while !buf.windows(4).any(|w| w == b"\r\n\r\n") && buf.len() < 8192 {
        match s.read(&mut chunk) {
            Ok(0) | Err(_) => return,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
    let line = buf.split(|b| *b == b'\r').next().unwrap_or_default();
    let mut parts = line.split(|b| *b == b' ');
    let (method, target) = (
        parts.next().unwrap_or_default(),
        parts.next().unwrap_or_default(),
    );
    let path = target.split(|b| *b == b'?').next().unwrap_or_default();
    let (status, ctype, body) = match (method, path) {
        (b"GET", b"/metrics") => (
            "200 OK",
            prometheus_client::encoding::prometheus_text::CONTENT_TYPE,
            gather(sources).to_text(),
        ),
        (b"GET", b"/healthz") if (sources.draining)() => {
            ("503 Service Unavailable", "text/plain", "draining\n".into())
        }
        (b"GET", b"/healthz") => ("200 OK", "text/plain", "ok\n".into()),
        (b"GET", _) => (
            "404 Not Found",
            "text/plain",
            "try /metrics or /healthz\n".into(),
        ),
        _ => ("405 Method Not Allowed", "text/plain", "GET only\n".into()),
    };
    let head = format!(
        "HTTP/1.1 {status}\r\ncontent-type: {ctype}\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
        body.len()
    );
    let _ = s
        .write_all(head.as_bytes())
        .and_then(|_| s.write_all(body.as_bytes()));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses() {
        assert_eq!(
            parse_addr("9100").unwrap(),
            "127.0.0.1:9100".parse().unwrap()
        );
        assert_eq!(
            parse_addr("0.0.0.0:9").unwrap(),
            "0.0.0.0:9".parse().unwrap()
        );
        assert!(parse_addr("localhost").is_err());
    }
}
