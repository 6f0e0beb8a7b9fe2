//! The Prometheus text written from a merged [`Snapshot`], by prometheus-client's
//! encoder: the snapshot is a collector of already-counted values.

use super::{HistSnap, HookSnap, Proto, Snapshot, FAILURE_REASONS, STATUS_CLASSES, TLS_SIDES};
use prometheus_client::collector::Collector;
use prometheus_client::encoding::DescriptorEncoder;
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;

/// The exposition (format 0.0.4) of `s`.
pub fn to_text(s: &Snapshot) -> String {
    let mut reg = Registry::default();
    reg.register_collector(Box::new(Expose(s.clone())));
    let mut out = String::new();
    // writing into a String cannot fail
    let _ = prometheus_client::encoding::prometheus_text::encode(&mut out, &reg);
    out
}

/// A merged snapshot as a prometheus-client collector: each scrape builds one.
#[derive(Debug)]
struct Expose(Snapshot);

type Labels = Vec<(&'static str, String)>;

/// The values of one metric family.
enum Values<'a> {
    Counter(Vec<(Labels, u64)>),
    Gauge(Vec<(Labels, u64)>),
    Hist(Vec<(Labels, &'a HistSnap)>),
}

/// A family: name (without `_total`, which the encoder adds to counters), help, values.
type Family<'a> = (&'static str, &'static str, Values<'a>);

fn one<'a>(n: u64) -> Values<'a> {
    Values::Counter(vec![(vec![], n)])
}

fn write(enc: &mut DescriptorEncoder, (name, help, values): Family<'_>) -> std::fmt::Result {
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
                let mut f = m.encode_family(&labels)?;
                f.encode_histogram::<Labels>(h.sum, h.count(), &h.buckets, None)?;
            }
        }
    }
    Ok(())
}

impl Collector for Expose {
    fn encode(&self, mut enc: DescriptorEncoder) -> std::fmt::Result {
        let s = &self.0;
        let families = [traffic(s), upstream(s), hooks(&s.hooks), process(s)];
        for f in families.into_iter().flatten() {
            write(&mut enc, f)?;
        }
        Ok(())
    }
}

/// Connections, requests and bytes on the client side.
fn traffic(s: &Snapshot) -> Vec<Family<'_>> {
    let l = || vec![("listener", s.listener.clone())];
    let mut req = vec![];
    let mut times = vec![];
    for p in Proto::ALL {
        for (c, class) in STATUS_CLASSES.iter().enumerate() {
            let n = s.requests[p as usize][c];
            // a protocol never seen stays out rather than adding 42 zero series
            if n > 0 {
                let labels = vec![
                    ("protocol", p.label().into()),
                    ("status_class", class.to_string()),
                ];
                req.push((labels, n));
            }
        }
        if let Some(h) = s.request_time.get(p as usize).filter(|h| h.count() > 0) {
            times.push((vec![("protocol", p.label().to_string())], h));
        }
    }
    vec![
        (
            "luring_connections_accepted",
            "Client connections accepted.",
            Values::Counter(vec![(l(), s.accepted)]),
        ),
        (
            "luring_connections_refused",
            "Client connections refused by max_connections.",
            Values::Counter(vec![(l(), s.refused)]),
        ),
        (
            "luring_connections_open",
            "Client connections open now.",
            Values::Gauge(vec![(l(), s.open)]),
        ),
        (
            "luring_requests",
            "Requests finished, by protocol and status class (none: no answer sent).",
            Values::Counter(req),
        ),
        (
            "luring_request_duration_seconds",
            "Time from a request's head to its end, by protocol.",
            Values::Hist(times),
        ),
        (
            "luring_client_bytes_in",
            "Bytes read from clients (counted when a connection closes).",
            one(s.bytes_in),
        ),
        (
            "luring_client_bytes_out",
            "Bytes written to clients (counted when a connection closes).",
            one(s.bytes_out),
        ),
    ]
}

/// Upstream connections, TLS and leaf certificates.
fn upstream(s: &Snapshot) -> Vec<Family<'_>> {
    let fails = FAILURE_REASONS.iter().zip(s.upstream_failures);
    let fails = fails
        .map(|(r, n)| (vec![("reason", r.to_string())], n))
        .collect();
    let side = |v: [u64; 2]| {
        let v = TLS_SIDES.iter().zip(v);
        Values::Counter(
            v.map(|(sd, n)| (vec![("side", sd.to_string())], n))
                .collect(),
        )
    };
    let cached = s.leaf_lookups.saturating_sub(s.leaves_minted);
    vec![
        ("luring_upstream_connects", "Upstream connections opened (attempts).", one(s.upstream_connects)),
        ("luring_upstream_reuses", "Upstream connections taken from the keep-alive pool.", one(s.upstream_reuses)),
        ("luring_upstream_failures", "Upstream connections that failed, by reason.", Values::Counter(fails)),
        ("luring_upstream_ttfb_seconds", "Time from writing a request upstream to its response head (h2 upstreams, and HTTP/1.1 upstreams with bodies held whole).", Values::Hist(vec![(vec![], &s.upstream_ttfb)])),
        ("luring_tls_handshakes", "TLS handshakes completed, by side.", side(s.tls_ok)),
        ("luring_tls_handshake_failures", "TLS handshakes failed, by side.", side(s.tls_failed)),
        ("luring_leaf_certs_minted", "Leaf certificates minted.", one(s.leaves_minted)),
        ("luring_leaf_certs_cached", "Leaf certificates served from a cache.", one(cached)),
    ]
}

/// Hook counters and times, by plugin, hook name and event.
fn hooks(hooks: &[HookSnap]) -> Vec<Family<'_>> {
    let labels = |h: &HookSnap| {
        vec![
            ("plugin", h.plugin.clone()),
            ("hook", h.hook.clone()),
            ("event", h.event.clone()),
        ]
    };
    let counts =
        |i: usize| Values::Counter(hooks.iter().map(|h| (labels(h), h.counts[i])).collect());
    let times = hooks.iter().map(|h| (labels(h), &h.time)).collect();
    vec![
        (
            "luring_hook_calls",
            "Hook calls, by plugin and hook.",
            counts(0),
        ),
        (
            "luring_hook_errors",
            "Hook calls that raised an error (budget interruptions included).",
            counts(1),
        ),
        (
            "luring_hook_budget_interruptions",
            "Hook calls interrupted by --hook-budget-ms.",
            counts(2),
        ),
        (
            "luring_hook_demoted_actions",
            "Hook actions their row does not allow, demoted to CONTINUE.",
            counts(3),
        ),
        (
            "luring_hook_memory_interruptions",
            "Hook calls stopped by --plugin-memory-limit.",
            counts(4),
        ),
        (
            "luring_hook_duration_seconds",
            "Time spent running each hook (each resume after a body wait timed apart).",
            Values::Hist(times),
        ),
    ]
}

/// The recorder and the scrape itself.
fn process(s: &Snapshot) -> Vec<Family<'_>> {
    vec![
        (
            "luring_recorder_dropped_flows",
            "Flows the recorder dropped because its queue was full.",
            one(s.recorder_dropped),
        ),
        (
            "luring_metrics_workers",
            "Workers that answered this scrape.",
            Values::Gauge(vec![(vec![], s.workers)]),
        ),
    ]
}
