//! Process runtime: io backend choice, worker threads, the listening group, signals
//! (drain, stop, reload) and plugin file watching.

pub mod copy_tuning;
mod exposure;
mod listen;
mod signals;

use listen::bind_group;
pub use std::io::Write;

use crate::config::{secs, Config};
use crate::io::{self, Backend, IoChoice};
use crate::proxy::worker::{self, Control};
use std::sync::Arc;
use tokio::sync::watch;

/// Runs the proxy until it is stopped by a signal; returns after the drain.
pub fn run(cfg: Config) -> Result<(), String> {
    let mode = cfg.validate()?;
    // installed first so a signal that arrives during start-up is not lost
    let signals = signals::install()?;
    let backend = choose_backend(cfg.io)?;
    if !cfg.plugins.is_empty() {
        crate::plugin::check(&cfg.plugins).map_err(|e| format!("plugins rejected:\n{e}"))?;
    }
    let tls = Arc::new(crate::proxy::worker_tls::TlsSetup::from_config(&cfg)?);
    let (recorder, writer) = match &cfg.record {
        Some(path) => {
            let (r, w) = crate::flows::recorder::start(crate::flows::recorder::Settings {
                path: path.clone(),
                max_body: cfg.record_max_body,
                redact: crate::flows::recorder::redact_list(&cfg.record_redact),
                raw: cfg.record_raw,
                queue: cfg.record_queue,
            })?;
            (Some(r), Some(w))
        }
        None => (None, None),
    };
    crate::proxy::exchange::log::set_json(cfg.access_log_format == "json");
    let n = cfg.worker_count();
    warn_if_few_fds(io::os::raise_nofile(), n, cfg.max_connections);
    let transparent = crate::config::Mode::parse(&cfg.mode) == Ok(crate::config::Mode::Transparent);
    let listeners = bind_group(cfg.listen, n, transparent)?;
    let addr = listeners[0]
        .local_addr()
        .map_err(|e| format!("cannot read listening address: {e}"))?;

    let (control_tx, control_rx) = watch::channel(Control::default());
    let mut scrape_rx = start_metrics(&cfg, n, recorder.as_ref(), &control_rx)?;
    let cfg = Arc::new(cfg);
    let (ready_tx, ready_rx) = std::sync::mpsc::channel::<Result<(), String>>();
    let mut threads = Vec::with_capacity(n);
    for (index, listener) in listeners.into_iter().enumerate() {
        let cfg = cfg.clone();
        let mode = mode.clone();
        let control = control_rx.clone();
        let ready = ready_tx.clone();
        let tls = tls.clone();
        let recorder = recorder.clone();
        let metrics = scrape_rx.as_mut().and_then(|v| v.pop());
        let t = std::thread::Builder::new()
            .name(format!("luring-w{index}"))
            .spawn(move || {
                let ready2 = ready.clone();
                let r = io::run_on_current_thread(backend, move || {
                    crate::proxy::accept::main(worker::Setup {
                        index,
                        cfg,
                        mode,
                        backend,
                        listener,
                        control,
                        ready: ready2,
                        tls,
                        recorder,
                        metrics,
                    })
                });
                if let Err(e) = r {
                    let _ = ready.send(Err(format!("worker {index}: cannot start runtime: {e}")));
                }
            })
            .map_err(|e| format!("cannot spawn worker thread: {e}"))?;
        threads.push(t);
    }
    drop(ready_tx);
    // the workers hold the only senders now: the writer ends when the last one stops
    drop(recorder);
    for _ in 0..n {
        match ready_rx.recv() {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                let _ = control_tx.send(Control {
                    stopping: true,
                    ..Control::default()
                });
                return Err(e);
            }
            Err(_) => return Err("a worker died during start".into()),
        }
    }
    // before the listening line, which scripts wait for: once it is out, so is this
    if let Some(w) = exposure::listener_warning(addr, &mode, cfg.proxy_auth.is_some()) {
        let _ = writeln!(std::io::stderr(), "{w}");
    }
    // not eprintln!: it panics when stderr is closed
    let _ = writeln!(
        std::io::stderr(),
        "luring listening on {addr} (mode {}, {n} workers, io {backend})",
        mode.name()
    );
    tracing::info!(%addr, workers = n, io = %backend, "ready");

    signals::spawn(signals, cfg.clone(), control_tx, secs(cfg.drain_timeout))?;
    for t in threads {
        let _ = t.join();
    }
    if let Some(w) = writer {
        w.join();
    }
    tracing::info!("stopped");
    Ok(())
}

/// With `--metrics`: binds the metrics listener and starts its thread; returns each
/// worker's end of its scrape channel, in reverse order (workers pop them).
fn start_metrics(
    cfg: &Config,
    n: usize,
    recorder: Option<&crate::flows::recorder::Recorder>,
    control: &watch::Receiver<Control>,
) -> Result<Option<Vec<worker::MetricsRx>>, String> {
    use crate::metrics::server;
    let Some(spec) = &cfg.metrics else {
        return Ok(None);
    };
    let addr = server::parse_addr(spec)?;
    let (lines, mut rxs): (Vec<_>, Vec<_>) = (0..n)
        .map(|_| tokio::sync::mpsc::unbounded_channel())
        .unzip();
    rxs.reverse();
    let dropped = recorder.map(|r| r.drop_count());
    let control = control.clone();
    let sources = server::Sources {
        workers: lines,
        recorder_dropped: dropped.map(|d| {
            Box::new(move || d.load(std::sync::atomic::Ordering::Relaxed))
                as Box<dyn Fn() -> u64 + Send>
        }),
        draining: Box::new(move || control.borrow().stopping),
    };
    let bound = server::start(addr, sources)?;
    let _ = writeln!(
        std::io::stderr(),
        "luring metrics on http://{bound}/metrics"
    );
    if let Some(w) = exposure::metrics_warning(bound) {
        let _ = writeln!(std::io::stderr(), "{w}");
    }
    Ok(Some(rxs))
}

/// Warns when the open-file limit is below what the connection cap allows: past it,
/// accept fails with EMFILE and new connections are refused with a 503.
fn warn_if_few_fds(limit: Option<u64>, workers: usize, max_connections: usize) {
    // a proxied connection holds its client socket and an upstream socket
    let need = (workers as u64)
        .saturating_mul(max_connections as u64)
        .saturating_mul(2);
    if let Some(limit) = limit.filter(|l| *l < need) {
        tracing::warn!(
            "the open-file limit ({limit}) is below the {need} descriptors that \
             --max-connections {max_connections} on {workers} workers may need; beyond \
             it new connections get a 503 (raise it with ulimit -n or LimitNOFILE=, or \
             lower --max-connections)"
        );
    }
}

fn choose_backend(choice: IoChoice) -> Result<Backend, String> {
    match choice {
        IoChoice::Epoll => Ok(Backend::Epoll),
        IoChoice::Uring => io::probe_uring()
            .map(|_| Backend::Uring)
            .map_err(|why| format!("--io uring: io_uring unavailable: {why}")),
        IoChoice::Auto => match io::probe_uring() {
            Ok(()) => Ok(Backend::Uring),
            Err(why) => {
                tracing::warn!("io_uring unavailable ({why}); falling back to epoll");
                Ok(Backend::Epoll)
            }
        },
    }
}
