//! One worker's state: its upstream pool, plugin engine, TLS state, counters and
//! limits. Nothing here is shared with other workers; the accept loop that runs on it
//! is in [`crate::proxy::accept`].

use crate::config::{secs, Config, Mode};
use crate::io::{Backend, Listener};
use crate::plugin::{Engine, EngineConfig};
use crate::proto::http1::Limits;
use crate::proxy::exchange::pipeline::Pipeline;
use crate::proxy::upstream::pool::{Key, Pool};
use std::cell::{Cell, RefCell};
use std::os::fd::AsRawFd;
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::watch;

/// Fewest header fields accepted in an upstream response. `--max-headers` guards
/// against clients; an upstream is trusted more, and a response with many Set-Cookie
/// lines is legitimate (nginx sets no count limit on upstream responses).
pub const UPSTREAM_MIN_HEADERS: usize = 1000;

/// Process-wide orders to the workers (rare path: a watch channel).
#[derive(Clone, Debug, Default)]
pub struct Control {
    /// Stop accepting and drain.
    pub stopping: bool,
    /// Bumped for every validated plugin reload.
    pub reload_generation: u64,
}

/// What a worker thread starts from.
pub struct Setup {
    /// Worker index (ctx.worker).
    pub index: usize,
    /// Effective config.
    pub cfg: Arc<Config>,
    /// Parsed mode.
    pub mode: Mode,
    /// io backend.
    pub backend: Backend,
    /// This worker's socket of the SO_REUSEPORT group.
    pub listener: std::net::TcpListener,
    /// Orders from the signal thread.
    pub control: watch::Receiver<Control>,
    /// Reports start-up success or failure to the main thread.
    pub ready: std::sync::mpsc::Sender<Result<(), String>>,
    /// Process-wide TLS material (CA, configs).
    pub tls: Arc<crate::proxy::worker_tls::TlsSetup>,
    /// The flow recorder, with `--record`.
    pub recorder: Option<crate::flows::recorder::Recorder>,
    /// Scrape requests, with `--metrics`.
    pub metrics: Option<MetricsRx>,
}

/// Where a worker receives scrape requests.
pub type MetricsRx = tokio::sync::mpsc::UnboundedReceiver<crate::metrics::server::Ask>;

/// Per-worker counters; plain cells, merged by readers (no shared atomics on the hot path).
#[derive(Default, Debug)]
pub struct Counters {
    /// Accepted client connections.
    pub accepted: Cell<u64>,
    /// Connections refused by max_connections or a full fd table.
    pub refused: Cell<u64>,
    /// Requests answered (any status).
    pub requests: Cell<u64>,
    /// Upstream connections opened.
    pub upstream_connects: Cell<u64>,
    /// Upstream connections taken from the pool.
    pub upstream_reuses: Cell<u64>,
}

impl Counters {
    /// Adds one to a counter.
    pub fn bump(c: &Cell<u64>) {
        c.set(c.get() + 1);
    }
}

/// The state one worker's connections share.
pub struct Worker {
    /// Worker index.
    pub index: usize,
    /// Effective config.
    pub cfg: Arc<Config>,
    /// Parsed mode.
    pub mode: Mode,
    /// io backend.
    pub backend: Backend,
    /// Limits on request heads from clients.
    pub limits: Limits,
    /// Limits on response heads from upstreams: the same size, and at least
    /// [`UPSTREAM_MIN_HEADERS`] fields.
    pub upstream_limits: Limits,
    /// Timeouts from the config.
    pub timeouts: Timeouts,
    /// Listener name for plugins.
    pub listener_name: Rc<str>,
    /// Current plugin engine (None without plugins); connections hold an Rc per request
    /// so a reload never pulls a state from under a running request.
    pub engine: RefCell<Option<Rc<Engine>>>,
    /// Built-in pipeline steps.
    pub pipeline: Pipeline,
    /// Upstream connection pool.
    pub pool: Pool,
    /// h2 connections to upstreams that speak only h2, for HTTP/1 clients.
    pub h2_only: crate::proxy::upstream::h2::H2Only,
    /// TLS interception state.
    pub tls: crate::proxy::worker_tls::WorkerTls,
    /// Counters.
    pub counters: Counters,
    /// The flow recorder, with `--record`.
    pub recorder: Option<crate::flows::recorder::Recorder>,
    /// The proxy every upstream connection goes through (`--mode upstream:URL`).
    pub chain: Option<crate::proxy::upstream::connect::Chain>,
    /// The listening address (transparent mode refuses connections for it).
    pub listen_addr: Option<std::net::SocketAddr>,
    /// Open client connections.
    pub active: Cell<usize>,
    /// Connections over `max_connections` being answered 503 (bounded by [`REFUSING_MAX`]).
    pub refusing: Cell<usize>,
    /// When the last over-the-limit warning was logged (one a second at most).
    pub refused_logged: Cell<Option<Instant>>,
    /// Set once the worker drains; connections finish their request and close.
    pub draining: watch::Sender<bool>,
    /// The pool key of the last request, with the scheme and authority it was made
    /// for: requests nearly always go to the place the one before went to (in
    /// reverse mode, always), on the same connection or a new one.
    last_key: RefCell<Option<(String, String, Key)>>,
    next_conn: Cell<u64>,
    /// Workers in the group (at least `index + 1`): the step between this worker's ids.
    id_stride: u64,
}

/// Timeouts as Durations.
#[derive(Clone, Copy, Debug)]
pub struct Timeouts {
    /// Whole request head.
    pub head: Duration,
    /// Idle client keep-alive.
    pub idle: Duration,
    /// A pause between two reads of a client's request body.
    pub body: Duration,
    /// Upstream connect.
    pub connect: Duration,
    /// Upstream response head.
    pub upstream: Duration,
    /// A client accepting no more of a response.
    pub send: Duration,
    /// A tunnel with no byte either way; None: no limit.
    pub tunnel: Option<Duration>,
}

impl Worker {
    /// A connection (or flow) id unique across workers: worker k of W hands out
    /// k+1, k+1+W, k+1+2W... Ids stay small, so Lua (whose numbers are doubles, printed
    /// with 14 significant digits) shows them as plain integers.
    pub fn next_conn_id(&self) -> u64 {
        let n = self.next_conn.get();
        self.next_conn.set(n + 1);
        n * self.id_stride + self.index as u64 + 1
    }

    /// The pool key for a request to `scheme`://`authority`: the last one again
    /// while requests go to the same place.
    pub fn pool_key(&self, scheme: &str, authority: &str) -> Key {
        let mut last = self.last_key.borrow_mut();
        if let Some((s, a, key)) = &*last {
            if s == scheme && a == authority {
                return key.clone();
            }
        }
        let key = Key::new(scheme, authority);
        *last = Some((scheme.to_string(), authority.to_string(), key.clone()));
        key
    }

    /// The engine for a new request (cheap Rc clone; None without plugins).
    pub fn engine(&self) -> Option<Rc<Engine>> {
        self.engine.borrow().clone()
    }

    /// This worker's counters for a scrape: the thread's metrics plus the connection
    /// and pool counters kept here.
    pub fn snapshot(&self) -> crate::metrics::Snapshot {
        let mut s = crate::metrics::Snapshot::local();
        s.listener = self.listener_name.to_string();
        s.accepted = self.counters.accepted.get();
        s.refused = self.counters.refused.get();
        s.open = self.active.get() as u64;
        s.upstream_connects = self.counters.upstream_connects.get();
        s.upstream_reuses = self.counters.upstream_reuses.get();
        s
    }

    /// True once the worker is draining.
    pub fn is_draining(&self) -> bool {
        *self.draining.borrow()
    }
}

fn engine_config(cfg: &Config) -> EngineConfig {
    EngineConfig {
        files: cfg.plugins.clone(),
        max_plugin_body: cfg.max_plugin_body,
        hook_budget: Duration::from_millis(cfg.hook_budget_ms),
        record: cfg.record.is_some(),
        memory_limit: cfg.plugin_memory_limit,
    }
}

/// Loads the configured plugins into a new engine for worker `index`.
pub fn load_engine(cfg: &Config, index: usize) -> Result<Option<Rc<Engine>>, String> {
    if cfg.plugins.is_empty() {
        return Ok(None);
    }
    Engine::load(&engine_config(cfg), index)
        .map(|e| Some(Rc::new(e)))
        .map_err(|e| e.to_string())
}

/// A worker's state, built from its setup. The parts of the setup the accept loop
/// needs are handed back: the listener, its descriptor, the control channel.
pub fn build(setup: Setup) -> Result<Built, String> {
    let Setup {
        index,
        cfg,
        mode,
        backend,
        listener,
        control,
        ready,
        tls,
        recorder,
        metrics,
    } = setup;
    let listen_fd = listener.as_raw_fd();
    let listen_addr = listener.local_addr().ok();
    let fail = |e: String| {
        let _ = ready.send(Err(e.clone()));
        e
    };
    let listener = Listener::from_std(backend, listener)
        .map_err(|e| fail(format!("worker {index}: cannot register listener: {e}")))?;
    let engine = load_engine(&cfg, index)
        .map_err(|e| fail(format!("worker {index}: plugins failed to load:\n{e}")))?;
    let pipeline = Pipeline::from_config(&cfg).map_err(fail)?;
    crate::proxy::h2_stream::set_send_stall(secs(cfg.send_timeout));
    let w = Rc::new(Worker {
        index,
        limits: Limits {
            max_head_size: cfg.max_head_size,
            max_headers: cfg.max_headers,
        },
        upstream_limits: Limits {
            max_head_size: cfg.max_head_size,
            max_headers: cfg.max_headers.max(UPSTREAM_MIN_HEADERS),
        },
        timeouts: Timeouts {
            head: secs(cfg.head_timeout),
            idle: secs(cfg.idle_timeout),
            body: secs(cfg.body_timeout),
            connect: secs(cfg.connect_timeout),
            upstream: secs(cfg.upstream_timeout),
            send: secs(cfg.send_timeout),
            tunnel: Some(secs(cfg.tunnel_idle_timeout)).filter(|d| !d.is_zero()),
        },
        listener_name: Rc::from(cfg.listener_name.as_str()),
        pool: Pool::new(cfg.pool_max_idle, secs(cfg.pool_idle_timeout)),
        h2_only: Default::default(),
        tls: crate::proxy::worker_tls::WorkerTls::new(tls),
        engine: RefCell::new(engine),
        pipeline,
        counters: Counters::default(),
        recorder,
        chain: crate::proxy::upstream::connect::Chain::of(&cfg, &mode),
        listen_addr,
        active: Cell::new(0),
        refusing: Cell::new(0),
        refused_logged: Cell::new(None),
        draining: watch::channel(false).0,
        last_key: RefCell::new(None),
        next_conn: Cell::new(0),
        id_stride: cfg.worker_count().max(index + 1) as u64,
        cfg,
        mode,
        backend,
    });
    let _ = ready.send(Ok(()));
    Ok(Built {
        w,
        listener,
        listen_fd,
        control,
        metrics,
    })
}

/// A built worker and what its accept loop runs on.
pub struct Built {
    /// The worker's state.
    pub w: Rc<Worker>,
    /// Its listening socket.
    pub listener: Listener,
    /// The listener's descriptor, to shut it down when stopping.
    pub listen_fd: std::os::fd::RawFd,
    /// Orders from the signal thread.
    pub control: watch::Receiver<Control>,
    /// Scrape requests, with `--metrics`.
    pub metrics: Option<MetricsRx>,
}
