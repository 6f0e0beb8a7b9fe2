//! The recorder: workers hand finished flows to a bounded queue, and one writer thread
//! turns them into records and appends them to the flow file. A full queue drops the
//! flow, never the traffic: the drop is counted, logged and written to the file.

use super::capture::{Capture, Redact};
use super::file::{self, FlowWriter, ReadError};
use super::record::{now_ns, Drops, Meta, Record, TunnelFlow};
use std::fs::{File, OpenOptions};
use std::io::{Seek, SeekFrom};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender, TryRecvError, TrySendError};
use std::sync::Arc;
use std::time::Duration;

/// Header names redacted unless `--record-redact none`.
pub const DEFAULT_REDACT: [&str; 4] = [
    "authorization",
    "proxy-authorization",
    "cookie",
    "set-cookie",
];

/// What the recorder is told by the config.
#[derive(Clone, Debug)]
pub struct Settings {
    /// The flow file.
    pub path: PathBuf,
    /// Largest body kept per message.
    pub max_body: usize,
    /// Lower-case header names whose values are redacted.
    pub redact: Vec<String>,
    /// Keep the bytes of opaque tunnels.
    pub raw: bool,
    /// Flows the queue holds before new ones are dropped.
    pub queue: usize,
}

/// The redaction list from `--record-redact` values: the defaults plus the names
/// given; "none" clears the list (names after it are still added).
pub fn redact_list(given: &[String]) -> Vec<String> {
    let mut out: Vec<String> = DEFAULT_REDACT.iter().map(|s| s.to_string()).collect();
    for g in given {
        for name in g.split(',').map(str::trim).filter(|n| !n.is_empty()) {
            if name.eq_ignore_ascii_case("none") {
                out.clear();
            } else if !out.iter().any(|o| o.eq_ignore_ascii_case(name)) {
                out.push(name.to_ascii_lowercase());
            }
        }
    }
    out
}

enum Item {
    Http(Box<Capture>),
    Tunnel(Box<TunnelFlow>),
}

/// A worker's handle on the recorder (cheap to clone).
#[derive(Clone)]
pub struct Recorder {
    tx: SyncSender<Item>,
    dropped: Arc<AtomicU64>,
    /// Largest body kept per message.
    pub max_body: usize,
    /// Keep the bytes of opaque tunnels.
    pub raw: bool,
    /// Lower-case header names whose values are redacted (the workers write the heads).
    pub redact: &'static Redact,
}

impl Recorder {
    /// Hands a finished HTTP flow to the writer; dropped (and counted) when it is behind.
    pub fn http(&self, c: Box<Capture>) {
        if !c.skip {
            self.send(Item::Http(c));
        }
    }

    /// Hands a finished tunnel to the writer.
    pub fn tunnel(&self, t: TunnelFlow) {
        self.send(Item::Tunnel(Box::new(t)));
    }

    /// The process-wide count of dropped flows, for the metrics thread (which must not
    /// hold a `Recorder`: the writer ends when the last one is gone).
    pub fn drop_count(&self) -> Arc<AtomicU64> {
        self.dropped.clone()
    }

    fn send(&self, item: Item) {
        match self.tx.try_send(item) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) => {
                self.dropped.fetch_add(1, Ordering::Relaxed);
            }
            // the writer stopped after a write error it already reported
            Err(TrySendError::Disconnected(_)) => {}
        }
    }
}

/// The writer thread, joined once every worker's handle is gone.
pub struct WriterThread(std::thread::JoinHandle<()>);

impl WriterThread {
    /// Waits for the writer to write what is queued and close the file.
    pub fn join(self) {
        let _ = self.0.join();
    }
}

/// Opens (or creates, mode 0600) the flow file and starts the writer thread.
pub fn start(s: Settings) -> Result<(Recorder, WriterThread), String> {
    let out = open_for_append(&s)?;
    let (tx, rx) = sync_channel(s.queue.max(1));
    let dropped = Arc::new(AtomicU64::new(0));
    let rec = Recorder {
        tx,
        dropped: dropped.clone(),
        max_body: s.max_body,
        raw: s.raw,
        // leaked once per recorder: a capture holds the list without a count to keep
        redact: Box::leak(Box::new(Redact::new(s.redact.clone()))),
    };
    let t = std::thread::Builder::new()
        .name("luring-recorder".into())
        .spawn(move || write_loop(out, rx, dropped, s))
        .map_err(|e| format!("cannot start the recorder thread: {e}"))?;
    Ok((rec, WriterThread(t)))
}

/// A new file gets the header and a Meta record; an existing flow file is appended
/// to after its last complete record (a torn tail from a crash is cut off).
fn open_for_append(s: &Settings) -> Result<FlowWriter<File>, String> {
    let shown = s.path.display();
    let mut f = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .open(&s.path)
        .map_err(|e| format!("--record {shown}: {e}"))?;
    let len = f
        .metadata()
        .map_err(|e| format!("--record {shown}: {e}"))?
        .len();
    let meta = Meta {
        writer: format!("luring {}", env!("CARGO_PKG_VERSION")),
        started_ns: now_ns(),
        redacted: s.redact.clone(),
        max_body: s.max_body as u64,
    };
    if len == 0 {
        // flushed at once: a reader may open the file before the first flow
        let mut w = FlowWriter::new(f, &meta).map_err(|e| format!("--record {shown}: {e}"))?;
        w.flush().map_err(|e| format!("--record {shown}: {e}"))?;
        return Ok(w);
    }
    let end = complete_length(&s.path).map_err(|e| format!("--record {shown}: {e}"))?;
    if end < len {
        tracing::warn!(file = %shown, "cutting a torn record at offset {end} before appending");
        f.set_len(end)
            .map_err(|e| format!("--record {shown}: {e}"))?;
    }
    f.seek(SeekFrom::End(0))
        .map_err(|e| format!("--record {shown}: {e}"))?;
    let mut w = FlowWriter::appending(f).map_err(|e| format!("--record {shown}: {e}"))?;
    w.write(&Record::Meta(meta))
        .map_err(|e| format!("--record {shown}: {e}"))?;
    Ok(w)
}

/// The length of the file's prefix made of whole records; refuses a file that is not
/// a flow file (or is newer), so recording never damages something else.
fn complete_length(path: &Path) -> Result<u64, String> {
    let mut r = file::open(path).map_err(|e| match e {
        ReadError::NotFlows => "exists and is not a luring flow file; refusing to append".into(),
        e => e.to_string(),
    })?;
    loop {
        let at = r.offset();
        match r.next_record() {
            None => return Ok(r.offset()),
            Some(Ok(_)) => {}
            Some(Err(ReadError::Truncated(_) | ReadError::Corrupt { .. })) => return Ok(at),
            Some(Err(e)) => return Err(e.to_string()),
        }
    }
}

/// How often the writer wakes to drain the queue and flush: the file lags the traffic
/// by about this much. Waking on each flow instead would cost a worker a futex call and
/// its core a context switch per flow.
const TICK: Duration = Duration::from_millis(20);

fn write_loop(mut out: FlowWriter<File>, rx: Receiver<Item>, dropped: Arc<AtomicU64>, s: Settings) {
    let mut total_dropped = 0u64;
    loop {
        let mut r = Ok(());
        let mut wrote = false;
        let mut open = true;
        while r.is_ok() {
            match rx.try_recv() {
                Ok(Item::Http(mut c)) => {
                    r = out.write_capture(&mut c);
                    wrote = true;
                }
                Ok(Item::Tunnel(t)) => {
                    r = out.write(&Record::Tunnel(t));
                    wrote = true;
                }
                Err(TryRecvError::Empty) => break,
                Err(TryRecvError::Disconnected) => {
                    open = false;
                    break;
                }
            }
        }
        let n = dropped.swap(0, Ordering::Relaxed);
        if n > 0 {
            total_dropped += n;
            tracing::warn!("recorder fell behind: {n} flows dropped ({total_dropped} in all)");
            let d = Drops {
                dropped: n,
                total: total_dropped,
                ts: now_ns(),
            };
            r = r.and_then(|()| out.write(&Record::Drops(d)));
            wrote = true;
        }
        // what a tick wrote is flushed at its end: the file reads whole up to there
        if wrote {
            r = r.and_then(|()| out.flush());
        }
        if let Err(e) = r {
            tracing::error!(file = %s.path.display(), "recording stopped: {e}");
            return;
        }
        if !open {
            return;
        }
        std::thread::sleep(TICK);
    }
}
