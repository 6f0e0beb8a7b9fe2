//! What a run measured for one target: three HdrHistograms (corrected latency, service
//! time, schedule lag, all in nanoseconds at 3 significant digits), status classes,
//! errors, the in-flight cap, completions per second, and per second of the window
//! what happened to the requests due in it (small histograms, for the plots over time).

use hdrhistogram::Histogram;
use std::collections::BTreeMap;

/// Highest value the histograms hold: one hour in nanoseconds.
const MAX_NS: u64 = 3_600_000_000_000;

/// A histogram of nanosecond values from 1 ns to an hour at 3 significant digits.
pub fn new_hist() -> Histogram<u64> {
    Histogram::new_with_bounds(1, MAX_NS, 3).expect("valid histogram bounds")
}

/// A histogram for one second of the window: nanoseconds at microsecond resolution
/// and 2 significant digits, sized for 1 ms and growing only as far as the values do,
/// so that a second costs a few kilobytes (a long run keeps one per second).
pub fn second_hist() -> Histogram<u32> {
    let mut h = Histogram::new_with_bounds(1_000, 1_000_000, 2).expect("valid histogram bounds");
    h.auto(true);
    h
}

/// What happened to the requests due in one second of the measured window.
#[derive(Debug, Clone)]
pub struct Second {
    /// Requests due: the schedule's intended sends (open loop), the requests started
    /// (closed loop).
    pub scheduled: u64,
    /// Corrected latency of those that got a response.
    pub corrected: Histogram<u32>,
    /// Service time of those that got a response.
    pub service: Histogram<u32>,
    /// Those that failed (no usable response: counted in `errors`).
    pub failed: u64,
    /// Those answered with a status other than 2xx and 3xx.
    pub not_ok: u64,
}

impl Default for Second {
    fn default() -> Self {
        Second {
            scheduled: 0,
            corrected: second_hist(),
            service: second_hist(),
            failed: 0,
            not_ok: 0,
        }
    }
}

/// A percentile of `h` in ns, None when it is empty.
pub fn quantile<T: hdrhistogram::Counter>(h: &Histogram<T>, q: f64) -> Option<u64> {
    (!h.is_empty()).then(|| h.value_at_quantile(q))
}

/// The measurements of one target in one round (or several rounds merged).
#[derive(Debug, Clone)]
pub struct Stats {
    /// Completion time minus intended send time (coordinated omission corrected).
    pub corrected: Histogram<u64>,
    /// Completion time minus actual send time.
    pub service: Histogram<u64>,
    /// Actual send time minus intended send time.
    pub lag: Histogram<u64>,
    /// Requests scheduled in the measured window.
    pub scheduled: u64,
    /// Responses by status class: index 1..=5 for 1xx..5xx, 0 for anything else.
    pub classes: [u64; 6],
    /// Failed requests by kind (connect, io, parse, timeout).
    pub errors: BTreeMap<String, u64>,
    /// Requests that found every connection busy when they were due.
    pub cap_waits: u64,
    /// Response body bytes received.
    pub body_bytes: u64,
    /// Completions per second of the measured window (by the second they completed in).
    pub per_second: Vec<u64>,
    /// Per second of the window, the requests due in it (by intended send time).
    pub seconds: Vec<Second>,
    /// Driven on a schedule (open loop); false: closed loop, which has no target rate.
    pub open_loop: bool,
    /// Schedule lag per second of intended send time: (sum ns, requests).
    pub lag_per_second: Vec<(u64, u64)>,
    /// Requests of the window actually sent before its end.
    pub sent_in_window: u64,
    /// Length of the measured window, seconds.
    pub window_s: f64,
    /// WebSocket conversations: messages and bytes each way.
    pub ws: super::ws_client::WsCounts,
}

impl Default for Stats {
    fn default() -> Self {
        Stats {
            corrected: new_hist(),
            service: new_hist(),
            lag: new_hist(),
            scheduled: 0,
            classes: [0; 6],
            errors: BTreeMap::new(),
            cap_waits: 0,
            body_bytes: 0,
            per_second: Vec::new(),
            seconds: Vec::new(),
            open_loop: false,
            lag_per_second: Vec::new(),
            sent_in_window: 0,
            window_s: 0.0,
            ws: Default::default(),
        }
    }
}

impl Stats {
    /// Records one completed exchange; times are monotonic ns, `due` and `second` the
    /// indexes within the window of the seconds it was due and completed in.
    pub fn complete(
        &mut self,
        intended: u64,
        sent: u64,
        done: u64,
        status: u16,
        due: usize,
        second: usize,
    ) {
        let corrected = done.saturating_sub(intended).max(1);
        let service = done.saturating_sub(sent).max(1);
        let _ = self.corrected.record(corrected);
        let _ = self.service.record(service);
        let _ = self.lag.record(sent.saturating_sub(intended).max(1));
        let class = if (100..600).contains(&status) {
            status as usize / 100
        } else {
            0
        };
        self.classes[class] += 1;
        if self.per_second.len() <= second {
            self.per_second.resize(second + 1, 0);
        }
        self.per_second[second] += 1;
        let s = self.second(due);
        let _ = s.corrected.record(corrected);
        let _ = s.service.record(service);
        s.not_ok += u64::from(!(2..=3).contains(&class));
    }

    /// The record of second `i` of the window, made when new.
    fn second(&mut self, i: usize) -> &mut Second {
        if self.seconds.len() <= i {
            self.seconds.resize_with(i + 1, Second::default);
        }
        &mut self.seconds[i]
    }

    /// Counts a request of the window as due in second `due`.
    pub fn schedule(&mut self, due: usize) {
        self.scheduled += 1;
        self.second(due).scheduled += 1;
    }

    /// Counts one failed request of kind `kind`, due in second `due`.
    pub fn fail(&mut self, kind: &str, due: usize) {
        self.error(kind);
        self.second(due).failed += 1;
    }

    /// Makes both per-second series at least `n` seconds long, so that seconds with
    /// nothing in them at the end of a window still count when rounds are put one
    /// after the other.
    pub fn pad_to(&mut self, n: usize) {
        if self.per_second.len() < n {
            self.per_second.resize(n, 0);
        }
        if self.seconds.len() < n {
            self.seconds.resize_with(n, Second::default);
        }
    }

    /// Notes the schedule lag of a request due in second `second` of the window.
    pub fn lag_in(&mut self, second: usize, lag_ns: u64) {
        if self.lag_per_second.len() <= second {
            self.lag_per_second.resize(second + 1, (0, 0));
        }
        let e = &mut self.lag_per_second[second];
        *e = (e.0 + lag_ns, e.1 + 1);
    }

    /// Mean schedule lag of the first and the last second, when it grew by more than
    /// 1 ms over the window: the driver fell further behind as the run went on.
    pub fn lag_growth(&self) -> Option<(u64, u64)> {
        let mean = |&(s, n): &(u64, u64)| (n > 0).then(|| s / n);
        let first = self.lag_per_second.iter().find_map(mean)?;
        let last = self.lag_per_second.iter().rev().find_map(mean)?;
        (last > first + 1_000_000).then_some((first, last))
    }

    /// Counts one failed request.
    pub fn error(&mut self, kind: &str) {
        *self.errors.entry(kind.to_string()).or_default() += 1;
    }

    /// Responses received.
    pub fn completed(&self) -> u64 {
        self.classes.iter().sum()
    }

    /// Failed requests.
    pub fn failed(&self) -> u64 {
        self.errors.values().sum()
    }

    /// Completions per second over the window.
    pub fn throughput(&self) -> f64 {
        if self.window_s > 0.0 {
            self.completed() as f64 / self.window_s
        } else {
            0.0
        }
    }

    /// Requests per second actually sent within the window: the rate the schedule
    /// achieved, whatever the target did with them.
    pub fn send_rate(&self) -> Option<f64> {
        (self.window_s > 0.0).then(|| self.sent_in_window as f64 / self.window_s)
    }

    /// Adds another round's measurements. The per-second series of the rounds are put
    /// one after the other (the plots show rounds in turn, and a stall in one round
    /// stays visible instead of being averaged with the others); the mean lag per
    /// second adds up second by second, as `lag_growth` compares rounds from their
    /// own starts.
    pub fn merge(&mut self, o: &Stats) {
        let _ = self.corrected.add(&o.corrected);
        let _ = self.service.add(&o.service);
        let _ = self.lag.add(&o.lag);
        self.scheduled += o.scheduled;
        for (a, b) in self.classes.iter_mut().zip(o.classes) {
            *a += b;
        }
        for (k, v) in &o.errors {
            *self.errors.entry(k.clone()).or_default() += v;
        }
        self.cap_waits += o.cap_waits;
        self.body_bytes += o.body_bytes;
        self.per_second.extend_from_slice(&o.per_second);
        self.seconds.extend(o.seconds.iter().cloned());
        self.open_loop |= o.open_loop;
        // rounds are compared second by second from their own starts
        for (i, &(sum, n)) in o.lag_per_second.iter().enumerate() {
            if self.lag_per_second.len() <= i {
                self.lag_per_second.resize(i + 1, (0, 0));
            }
            self.lag_per_second[i].0 += sum;
            self.lag_per_second[i].1 += n;
        }
        self.window_s += o.window_s;
        self.sent_in_window += o.sent_in_window;
        self.ws.merge(&o.ws);
    }
}

/// The percentile distribution of `h` in wrk2's `.hgrm` format, values in ms.
pub fn hgrm(h: &Histogram<u64>) -> String {
    use std::fmt::Write;
    let mut s = String::from("       Value   Percentile   TotalCount 1/(1-Percentile)\n\n");
    for v in h.iter_quantiles(5) {
        let q = v.quantile_iterated_to();
        let inv = if q < 1.0 {
            format!("{:12.2}", 1.0 / (1.0 - q))
        } else {
            String::new()
        };
        let _ = writeln!(
            s,
            "{:12.3} {:12.6} {:12} {}",
            v.value_iterated_to() as f64 / 1e6,
            q,
            v.count_since_last_iteration(),
            inv
        );
    }
    let _ = writeln!(
        s,
        "#[Mean    = {:12.3}, StdDeviation   = {:12.3}]",
        h.mean() / 1e6,
        h.stdev() / 1e6
    );
    let _ = writeln!(
        s,
        "#[Max     = {:12.3}, Total count    = {:12}]",
        h.max() as f64 / 1e6,
        h.len()
    );
    let _ = writeln!(
        s,
        "#[Buckets = {:12}, SubBuckets     = {:12}]",
        h.buckets(),
        h.distinct_values()
    );
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn corrected_counts_the_queue_service_does_not() {
        let mut s = Stats::default();
        // a request due at 0 sent at 900 µs (the driver waited), done 100 µs later
        s.complete(0, 900_000, 1_000_000, 200, 0, 0);
        s.complete(1_000_000, 1_000_000, 1_050_000, 503, 0, 1);
        assert_eq!(s.corrected.max(), s.corrected.highest_equivalent(1_000_000));
        assert!(s.service.max() <= 100_100);
        assert_eq!((s.classes[2], s.classes[5]), (1, 1));
        assert_eq!(s.per_second, vec![1, 1]);
        let mut m = Stats::default();
        m.merge(&s);
        m.merge(&s);
        assert_eq!((m.completed(), m.corrected.len()), (4, 4));
    }

    #[test]
    fn seconds_hold_what_was_due_in_them_and_rounds_follow_each_other() {
        let mut r = Stats {
            open_loop: true,
            ..Stats::default()
        };
        // second 0: two due, one fast, one 503 after 2 ms; second 1: one due, failed
        r.schedule(0);
        r.schedule(0);
        r.schedule(1);
        r.complete(0, 0, 100_000, 200, 0, 0);
        r.complete(500_000, 500_000, 2_500_000, 503, 0, 0);
        r.fail("io", 1);
        r.pad_to(3);
        assert_eq!((r.per_second.len(), r.seconds.len()), (3, 3));
        let s0 = &r.seconds[0];
        assert_eq!((s0.scheduled, s0.failed, s0.not_ok), (2, 0, 1));
        assert_eq!(s0.corrected.len(), 2);
        // 2 significant digits: within 1%
        let p99 = quantile(&s0.corrected, 0.99).unwrap() as f64;
        assert!((p99 - 2_000_000.0).abs() < 20_000.0, "{p99}");
        assert_eq!((r.seconds[1].scheduled, r.seconds[1].failed), (1, 1));
        assert_eq!(quantile(&r.seconds[1].corrected, 0.5), None);
        assert_eq!((r.scheduled, r.failed()), (3, 1));
        // a value far past the first size: the histogram grows
        r.complete(0, 0, 40_000_000_000, 200, 2, 2);
        let big = quantile(&r.seconds[2].corrected, 1.0).unwrap();
        assert!((40_000_000_000..40_500_000_000).contains(&big), "{big}");
        let mut m = Stats::default();
        m.merge(&r);
        m.merge(&r);
        assert!(m.open_loop);
        assert_eq!((m.seconds.len(), m.per_second.len()), (6, 6));
        assert_eq!(m.seconds[3].scheduled, 2, "the second round starts at 3");
        assert_eq!(m.seconds[4].failed, 1);
    }

    #[test]
    fn lag_growth_needs_a_rising_lag() {
        let mut s = Stats::default();
        s.lag_in(0, 100_000);
        s.lag_in(2, 300_000);
        assert_eq!(s.lag_growth(), None);
        s.lag_in(3, 5_000_000);
        assert_eq!(s.lag_growth(), Some((100_000, 5_000_000)));
    }

    #[test]
    fn hgrm_ends_at_the_max_with_the_total() {
        let mut h = new_hist();
        for v in 1..=1000u64 {
            h.record(v * 1000).unwrap();
        }
        let s = hgrm(&h);
        assert!(s.starts_with("       Value   Percentile"));
        assert!(s.contains("Total count    =         1000]"), "{s}");
        let last = s.lines().rfind(|l| !l.starts_with('#')).unwrap();
        assert!(last.contains("1.000000"), "{last}");
    }
}
