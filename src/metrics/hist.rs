//! Fixed-bucket histograms in plain cells (one worker writes them), and their copies.

use std::cell::Cell;

/// Bucket upper bounds (seconds) of request and upstream times: 0.5 ms to 10 s.
pub const REQUEST_BOUNDS: [f64; 14] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// Bucket upper bounds (seconds) of hook times: 5 µs to 100 ms (the default budget).
pub const HOOK_BOUNDS: [f64; 14] = [
    0.000005, 0.00001, 0.000025, 0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01,
    0.025, 0.05, 0.1,
];

/// A histogram of `N` buckets plus +Inf; counts per bucket are not cumulative (one add
/// per observation): prometheus-client's encoder sums them when it writes them.
#[derive(Debug)]
pub struct Hist<const N: usize> {
    buckets: [Cell<u64>; N],
    over: Cell<u64>,
    sum: Cell<f64>,
}

impl<const N: usize> Default for Hist<N> {
    fn default() -> Self {
        Hist {
            buckets: std::array::from_fn(|_| Cell::new(0)),
            over: Cell::new(0),
            sum: Cell::new(0.0),
        }
    }
}

impl<const N: usize> Hist<N> {
    /// Adds one observation of `v` seconds.
    #[inline]
    pub fn observe(&self, bounds: &[f64; N], v: f64) {
        self.sum.set(self.sum.get() + v);
        // linear: 14 compares at most, cheaper than the Instant::now beside it
        match bounds.iter().position(|b| v <= *b) {
            Some(i) => self.buckets[i].set(self.buckets[i].get() + 1),
            None => self.over.set(self.over.get() + 1),
        }
    }

    /// A copy (counts per bucket, not cumulative).
    pub fn snap(&self, bounds: &[f64; N]) -> HistSnap {
        let mut buckets = Vec::with_capacity(N + 1);
        for (b, c) in bounds.iter().zip(&self.buckets) {
            buckets.push((*b, c.get()));
        }
        buckets.push((f64::INFINITY, self.over.get()));
        HistSnap {
            buckets,
            sum: self.sum.get(),
        }
    }
}

/// A histogram copied out of a worker: (upper bound, count in that bucket alone) pairs,
/// the last one +Inf, and the sum of observations.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct HistSnap {
    /// Buckets, +Inf last (not cumulative).
    pub buckets: Vec<(f64, u64)>,
    /// Sum of observed values.
    pub sum: f64,
}

impl HistSnap {
    /// Observations counted.
    pub fn count(&self) -> u64 {
        self.buckets.iter().map(|b| b.1).sum()
    }

    /// Adds another worker's copy (same bounds) to this one.
    pub fn merge(&mut self, o: &HistSnap) {
        if self.buckets.is_empty() {
            *self = o.clone();
            return;
        }
        for (a, b) in self.buckets.iter_mut().zip(&o.buckets) {
            a.1 += b.1;
        }
        self.sum += o.sum;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bucketed_and_merged() {
        let h: Hist<14> = Hist::default();
        h.observe(&REQUEST_BOUNDS, 0.0001);
        h.observe(&REQUEST_BOUNDS, 0.003);
        h.observe(&REQUEST_BOUNDS, 60.0);
        let mut s = h.snap(&REQUEST_BOUNDS);
        assert_eq!(s.buckets[0], (0.0005, 1));
        assert_eq!(s.buckets[3], (0.005, 1));
        assert_eq!(s.buckets[13], (10.0, 0));
        assert_eq!(s.buckets[14], (f64::INFINITY, 1));
        assert_eq!(s.count(), 3);
        let o = s.clone();
        s.merge(&o);
        assert_eq!(s.count(), 6);
        assert!((s.sum - 2.0 * 60.0031).abs() < 1e-9);
    }
}
