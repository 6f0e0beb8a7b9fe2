//! A fixed-size log-linear histogram (HdrHistogram's idea, 8 significant bits): any
//! number of u64 values in 60 KiB, percentiles within 0.8% of the true value, so
//! `luring flows stats` keeps flat memory on files of any size.

/// Values below this are counted exactly; above it, 128 buckets per power of two.
const LINEAR: u64 = 256;
/// Sub-buckets per power of two above `LINEAR` (half of it: mantissa bits 7).
const SUB: usize = 128;
/// Powers of two above `LINEAR`: 2^8 .. 2^63.
const POWERS: usize = 56;
const BUCKETS: usize = LINEAR as usize + POWERS * SUB;

/// Counts of u64 values in log-linear buckets, plus the exact min, max and sum.
pub struct Histogram {
    counts: Box<[u64; BUCKETS]>,
    count: u64,
    min: u64,
    max: u64,
    sum: u128,
}

impl Default for Histogram {
    fn default() -> Self {
        Histogram {
            counts: Box::new([0; BUCKETS]),
            count: 0,
            min: u64::MAX,
            max: 0,
            sum: 0,
        }
    }
}

/// The bucket a value falls in.
fn index(v: u64) -> usize {
    if v < LINEAR {
        return v as usize;
    }
    let e = 63 - v.leading_zeros() as usize; // 8..=63
    let mantissa = (v >> (e - 7)) as usize; // 128..=255
    LINEAR as usize + (e - 8) * SUB + (mantissa - SUB)
}

/// The largest value that falls in bucket `i`.
fn highest(i: usize) -> u64 {
    if i < LINEAR as usize {
        return i as u64;
    }
    let k = i - LINEAR as usize;
    let (e, mantissa) = (k / SUB + 8, (k % SUB + SUB) as u64);
    let low = mantissa << (e - 7);
    low + ((1u64 << (e - 7)) - 1)
}

impl Histogram {
    /// Counts one value.
    pub fn record(&mut self, v: u64) {
        self.counts[index(v)] += 1;
        self.count += 1;
        self.min = self.min.min(v);
        self.max = self.max.max(v);
        self.sum += v as u128;
    }

    /// How many values were counted.
    pub fn count(&self) -> u64 {
        self.count
    }

    /// The largest value counted (0 when none).
    pub fn max(&self) -> u64 {
        self.max
    }

    /// The mean (0 when empty).
    pub fn mean(&self) -> f64 {
        if self.count == 0 {
            0.0
        } else {
            self.sum as f64 / self.count as f64
        }
    }

    /// The value below which `p` percent of the values fall (the top of its bucket,
    /// never above the true max); 0 when empty.
    pub fn percentile(&self, p: f64) -> u64 {
        if self.count == 0 {
            return 0;
        }
        let rank = ((p / 100.0 * self.count as f64).ceil() as u64).clamp(1, self.count);
        let mut seen = 0;
        for (i, &c) in self.counts.iter().enumerate() {
            seen += c;
            if seen >= rank {
                return highest(i).clamp(self.min, self.max);
            }
        }
        self.max
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_cover_every_value_in_order() {
        for v in [0, 1, 255, 256, 257, 511, 512, 1000, 1 << 40, u64::MAX] {
            let i = index(v);
            assert!(i < BUCKETS, "{v}");
            assert!(highest(i) >= v, "{v}: bucket top {}", highest(i));
            if i > 0 {
                assert!(highest(i - 1) < v, "{v} also fits bucket {}", i - 1);
            }
        }
        assert_eq!(index(u64::MAX), BUCKETS - 1);
    }

    #[test]
    fn percentiles_within_one_percent() {
        let mut h = Histogram::default();
        for v in 1..=100_000u64 {
            h.record(v);
        }
        for (p, want) in [(50.0, 50_000u64), (90.0, 90_000), (99.0, 99_000)] {
            let got = h.percentile(p);
            let err = got.abs_diff(want) as f64 / want as f64;
            assert!(err < 0.01, "p{p}: {got} vs {want}");
        }
        assert_eq!(h.percentile(100.0), 100_000);
        assert_eq!(h.max(), 100_000);
        assert_eq!(h.count(), 100_000);
        assert!((h.mean() - 50_000.5).abs() < 1e-6);
    }

    #[test]
    fn small_values_are_exact_and_empty_is_zero() {
        let mut h = Histogram::default();
        assert_eq!(h.percentile(50.0), 0);
        for v in [3, 3, 3, 7, 200] {
            h.record(v);
        }
        assert_eq!(h.percentile(50.0), 3);
        assert_eq!(h.percentile(80.0), 7);
        assert_eq!(h.percentile(99.0), 200);
    }
}
