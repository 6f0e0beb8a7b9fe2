//! A worker's counters copied out for a scrape, their merge across workers, and the
//! Prometheus text written from the merge (by prometheus-client's encoder).

use super::{
    HistSnap, Proto, FAILURE_REASONS, HOOK_BOUNDS, LOCAL, REQUEST_BOUNDS, STATUS_CLASSES, TLS_SIDES,
};
use prometheus_client::collector::Collector;
use prometheus_client::encoding::DescriptorEncoder;
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;

/// One hook's counters, copied.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct HookSnap {
    /// Plugin file name.
    pub plugin: String,
    /// Hook name.
    pub hook: String,
    /// "protocol.event".
    pub event: String,
    /// Calls, errors, budget interruptions, demoted actions.
    pub counts: [u64; 4],
    /// Time spent in the hook.
    pub time: HistSnap,
}

/// One worker's counters (or the merge of several), as plain data that can cross
/// threads.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Snapshot {
    /// Listener name (`--listener-name`).
    pub listener: String,
    /// Connections accepted, refused by max_connections, open now.
    pub accepted: u64,
    /// Connections refused by max_connections.
    pub refused: u64,
    /// Connections open now.
    pub open: u64,
    /// Requests by [`Proto`] then status class.
    pub requests: [[u64; 6]; 7],
    /// Request durations by [`Proto`].
    pub request_time: Vec<HistSnap>,
    /// Upstream connections opened.
    pub upstream_connects: u64,
    /// Upstream connections taken from the pool.
    pub upstream_reuses: u64,
    /// Upstream failures by reason.
    pub upstream_failures: [u64; 4],
    /// Upstream time to response head.
    pub upstream_ttfb: HistSnap,
    /// TLS handshakes completed, by side.
    pub tls_ok: [u64; 2],
    /// TLS handshakes failed, by side.
    pub tls_failed: [u64; 2],
    /// Leaf certificates asked for by client handshakes.
    pub leaf_lookups: u64,
    /// Leaf certificates minted.
    pub leaves_minted: u64,
    /// Bytes read from clients.
    pub bytes_in: u64,
    /// Bytes written to clients.
    pub bytes_out: u64,
    /// Hook counters.
    pub hooks: Vec<HookSnap>,
    /// Flows the recorder dropped (process-wide, filled in by the scraper).
    pub recorder_dropped: u64,
    /// Workers that answered the scrape.
    pub workers: u64,
}

impl Snapshot {
    /// This thread's counters (the worker's metrics task calls it); the connection and
    /// pool counters the worker keeps itself are filled in by the caller.
    pub fn local() -> Snapshot {
        LOCAL.with(|l| {
            let g =
                |c: &[std::cell::Cell<u64>]| -> Vec<u64> { c.iter().map(|c| c.get()).collect() };
            let arr4 = |c: &[std::cell::Cell<u64>; 4]| std::array::from_fn(|i| c[i].get());
            let arr2 = |c: &[std::cell::Cell<u64>; 2]| std::array::from_fn(|i| c[i].get());
            let mut requests = [[0; 6]; 7];
            for (row, cells) in requests.iter_mut().zip(&l.requests) {
                row.copy_from_slice(&g(cells));
            }
            Snapshot {
                requests,
                request_time: l
                    .request_time
                    .iter()
                    .map(|h| h.snap(&REQUEST_BOUNDS))
                    .collect(),
                upstream_failures: arr4(&l.upstream_failures),
                upstream_ttfb: l.upstream_ttfb.snap(&REQUEST_BOUNDS),
                tls_ok: arr2(&l.tls_ok),
                tls_failed: arr2(&l.tls_failed),
                leaf_lookups: l.leaf_lookups.get(),
                leaves_minted: l.leaves_minted.get(),
                bytes_in: l.bytes_in.get(),
                bytes_out: l.bytes_out.get(),
                hooks: l
                    .hooks
                    .borrow()
                    .iter()
                    .map(|h| HookSnap {
                        plugin: h.plugin.to_string(),
                        hook: h.hook.to_string(),
                        event: h.event.to_string(),
                        counts: [
                            h.calls.get(),
                            h.errors.get(),
                            h.budget_interrupts.get(),
                            h.demotions.get(),
                        ],
                        time: h.time.snap(&HOOK_BOUNDS),
                    })
                    .collect(),
                workers: 1,
                ..Snapshot::default()
            }
        })
    }

    /// Adds another worker's counters to these.
    pub fn merge(&mut self, o: &Snapshot) {
        fn add<const N: usize>(a: &mut [u64; N], b: &[u64; N]) {
            a.iter_mut().zip(b).for_each(|(a, b)| *a += b);
        }
        if self.listener.is_empty() {
            self.listener = o.listener.clone();
        }
        self.accepted += o.accepted;
        self.refused += o.refused;
        self.open += o.open;
        for (a, b) in self.requests.iter_mut().zip(&o.requests) {
            add(a, b);
        }
        if self.request_time.is_empty() {
            self.request_time = vec![HistSnap::default(); o.request_time.len()];
        }
        for (a, b) in self.request_time.iter_mut().zip(&o.request_time) {
            a.merge(b);
        }
        self.upstream_connects += o.upstream_connects;
        self.upstream_reuses += o.upstream_reuses;
        add(&mut self.upstream_failures, &o.upstream_failures);
        self.upstream_ttfb.merge(&o.upstream_ttfb);
        add(&mut self.tls_ok, &o.tls_ok);
        add(&mut self.tls_failed, &o.tls_failed);
        self.leaf_lookups += o.leaf_lookups;
        self.leaves_minted += o.leaves_minted;
        self.bytes_in += o.bytes_in;
        self.bytes_out += o.bytes_out;
        for h in &o.hooks {
            match self
                .hooks
                .iter_mut()
                .find(|m| m.plugin == h.plugin && m.hook == h.hook && m.event == h.event)
            {
                Some(m) => {
                    add(&mut m.counts, &h.counts);
                    m.time.merge(&h.time);
                }
                None => self.hooks.push(h.clone()),
            }
        }
        self.recorder_dropped += o.recorder_dropped;
        self.workers += o.workers;
    }

    /// The Prometheus text exposition (format 0.0.4) of these counters.
    pub fn to_text(&self) -> String {
        let mut reg = Registry::default();
        reg.register_collector(Box::new(Expose(self.clone())));
        let mut out = String::new();
        // writing into a String cannot fail
        let _ = prometheus_client::encoding::prometheus_text::encode(&mut out, &reg);
        out
    }
}

/// A merged snapshot as a prometheus-client collector: each scrape builds one.
#[derive(Debug)]
struct Expose(Snapshot);

type Labels = Vec<(&'static str, String)>;

/// One metric family written from already-counted values.
enum Values<'a> {
    Counter(Vec<(Labels, u64)>),
    Gauge(Vec<(Labels, u64)>),
    Hist(Vec<(Labels, &'a HistSnap)>),
}

fn family(
    enc: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    values: Values<'_>,
) -> Result<(), std::fmt::Error> {
    let kind = match values {
        Values::Counter(_) => MetricType::Counter,
        Values::Gauge(_) => MetricType::Gauge,
        Values::Hist(_) => MetricType::Histogram,
    };
    let mut m = enc.encode_descriptor(name, help, None, kind)?;
    match values {
        Values::Counter(v) => {
            for (labels, n) in v {
                m.encode_family(&labels)?
                    .encode_counter::<Labels, u64, u64>(&n, None)?;
            }
        }
        Values::Gauge(v) => {
            for (labels, n) in v {
                m.encode_family(&labels)?.encode_gauge(&(n as i64))?;
            }
        }
        Values::Hist(v) => {
            for (labels, h) in v {
                m.encode_family(&labels)?.encode_histogram::<Labels>(
                    h.sum,
                    h.count(),
                    &h.buckets,
                    None,
                )?;
            }
        }
    }
    Ok(())
}

impl Collector for Expose {
    fn encode(&self, mut enc: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let s = &self.0;
        let l = || vec![("listener", s.listener.clone())];
        let one = |n| Values::Counter(vec![(vec![], n)]);
        family(
            &mut enc,
            "luring_connections_accepted",
            "Client connections accepted.",
            Values::Counter(vec![(l(), s.accepted)]),
        )?;
        family(
            &mut enc,
            "luring_connections_refused",
            "Client connections refused by max_connections.",
            Values::Counter(vec![(l(), s.refused)]),
        )?;
        family(
            &mut enc,
            "luring_connections_open",
            "Client connections open now.",
            Values::Gauge(vec![(l(), s.open)]),
        )?;
        let mut req = vec![];
        let mut times = vec![];
        for p in Proto::ALL {
            for (c, class) in STATUS_CLASSES.iter().enumerate() {
                let n = s.requests[p as usize][c];
                if n > 0 {
                    req.push((
                        vec![
                            ("protocol", p.label().into()),
                            ("status_class", class.to_string()),
                        ],
                        n,
                    ));
                }
            }
            if let Some(h) = s.request_time.get(p as usize).filter(|h| h.count() > 0) {
                times.push((vec![("protocol", p.label().to_string())], h));
            }
        }
        family(
            &mut enc,
            "luring_requests",
            "Requests finished, by protocol and status class (none: no answer sent).",
            Values::Counter(req),
        )?;
        family(
            &mut enc,
            "luring_request_duration_seconds",
            "Time from a request's head to its end, by protocol.",
            Values::Hist(times),
        )?;
        family(
            &mut enc,
            "luring_upstream_connects",
            "Upstream connections opened.",
            one(s.upstream_connects),
        )?;
        family(
            &mut enc,
            "luring_upstream_reuses",
            "Upstream connections taken from the keep-alive pool.",
            one(s.upstream_reuses),
        )?;
        let fails = FAILURE_REASONS
            .iter()
            .zip(s.upstream_failures)
            .map(|(r, n)| (vec![("reason", r.to_string())], n))
            .collect();
        family(
            &mut enc,
            "luring_upstream_failures",
            "Upstream connections that failed, by reason.",
            Values::Counter(fails),
        )?;
        family(
            &mut enc,
            "luring_upstream_ttfb_seconds",
            "Time from sending a request upstream to its response head (HTTP/1.1 upstreams).",
            Values::Hist(vec![(vec![], &s.upstream_ttfb)]),
        )?;
        let side = |v: [u64; 2]| {
            TLS_SIDES
                .iter()
                .zip(v)
                .map(|(sd, n)| (vec![("side", sd.to_string())], n))
                .collect()
        };
        family(
            &mut enc,
            "luring_tls_handshakes",
            "TLS handshakes completed, by side.",
            Values::Counter(side(s.tls_ok)),
        )?;
        family(
            &mut enc,
            "luring_tls_handshake_failures",
            "TLS handshakes failed, by side.",
            Values::Counter(side(s.tls_failed)),
        )?;
        family(
            &mut enc,
            "luring_leaf_certs_minted",
            "Leaf certificates minted.",
            one(s.leaves_minted),
        )?;
        family(
            &mut enc,
            "luring_leaf_certs_cached",
            "Leaf certificates served from a cache.",
            one(s.leaf_lookups.saturating_sub(s.leaves_minted)),
        )?;
        family(
            &mut enc,
            "luring_client_bytes_in",
            "Bytes read from clients (counted when a connection closes).",
            one(s.bytes_in),
        )?;
        family(
            &mut enc,
            "luring_client_bytes_out",
            "Bytes written to clients (counted when a connection closes).",
            one(s.bytes_out),
        )?;
        self.hooks(&mut enc)?;
        family(
            &mut enc,
            "luring_recorder_dropped_flows",
            "Flows the recorder dropped because its queue was full.",
            one(s.recorder_dropped),
        )?;
        family(
            &mut enc,
            "luring_metrics_workers",
            "Workers that answered this scrape.",
            Values::Gauge(vec![(vec![], s.workers)]),
        )
    }
}

impl Expose {
    fn hooks(&self, enc: &mut DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let hooks = &self.0.hooks;
        let labels = |h: &HookSnap| {
            vec![
                ("plugin", h.plugin.clone()),
                ("hook", h.hook.clone()),
                ("event", h.event.clone()),
            ]
        };
        let names = [
            ("luring_hook_calls", "Hook calls, by plugin and hook."),
            (
                "luring_hook_errors",
                "Hook calls that raised an error (budget interruptions included).",
            ),
            (
                "luring_hook_budget_interruptions",
                "Hook calls interrupted by --hook-budget-ms.",
            ),
            (
                "luring_hook_demoted_actions",
                "Hook actions not allowed by their row, demoted to CONTINUE.",
            ),
        ];
        for (i, (name, help)) in names.iter().enumerate() {
            let v = hooks.iter().map(|h| (labels(h), h.counts[i])).collect();
            family(enc, name, help, Values::Counter(v))?;
        }
        let t = hooks.iter().map(|h| (labels(h), &h.time)).collect();
        family(
            enc,
            "luring_hook_duration_seconds",
            "Time spent running each hook (each resume after a body wait timed apart).",
            Values::Hist(t),
        )
    }
}
