//! A worker's counters copied out for a scrape, and their merge across workers.

use super::{HistSnap, HOOK_BOUNDS, LOCAL, REQUEST_BOUNDS};

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
    pub counts: [u64; 5],
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
                            h.memory_interrupts.get(),
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
        super::expose::to_text(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hook(name: &str, calls: u64) -> HookSnap {
        HookSnap {
            plugin: "p.lua".into(),
            hook: name.into(),
            event: "http.on_request".into(),
            counts: [calls, 0, 0, 0, 0],
            time: HistSnap::default(),
        }
    }

    #[test]
    fn merge_adds_counters_and_joins_hooks_by_name() {
        let mut a = Snapshot {
            accepted: 2,
            workers: 1,
            hooks: vec![hook("x", 1)],
            ..Snapshot::default()
        };
        a.requests[0][2] = 3;
        let mut b = a.clone();
        b.hooks.push(hook("y", 5));
        a.merge(&b);
        assert_eq!((a.accepted, a.workers, a.requests[0][2]), (4, 2, 6));
        assert_eq!(a.hooks.len(), 2);
        assert_eq!((a.hooks[0].counts[0], a.hooks[1].counts[0]), (2, 5));
        let text = a.to_text();
        assert!(
            text.contains(
                "luring_hook_calls_total{plugin=\"p.lua\",hook=\"y\",event=\"http.on_request\"} 5"
            ),
            "{text}"
        );
        assert!(
            text.contains("luring_requests_total{protocol=\"http1\",status_class=\"2xx\"} 6"),
            "{text}"
        );
    }
}
