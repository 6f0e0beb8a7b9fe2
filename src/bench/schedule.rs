//! When each request is meant to be sent, sans-IO: offsets in nanoseconds from the
//! run's start, and which recorded flow goes. The same plan and seed give the same
//! sequence for every target, which is what makes side-by-side runs comparable.

/// How arrivals are spaced.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Plan {
    /// Open loop at `rate` requests/s, evenly spaced or Poisson arrivals.
    Rate {
        /// Requests per second.
        rate: f64,
        /// Exponential gaps (a Poisson process) instead of even ones.
        poisson: bool,
    },
    /// Open loop, evenly spaced, the rate going from `from` up by `step` every
    /// `every_ns` until `to` (a ramp, to find where a target stops keeping up).
    Ramp {
        /// First rate, requests/s.
        from: f64,
        /// Last rate, requests/s.
        to: f64,
        /// Added at each step, requests/s.
        step: f64,
        /// Length of one step, ns.
        every_ns: u64,
    },
    /// The recorded arrival times divided by `speed`, gaps capped at `max_gap_ns`.
    Recorded {
        /// Speed factor (2: twice as fast).
        speed: f64,
        /// Longest gap kept between two recorded requests.
        max_gap_ns: u64,
    },
}

/// A deterministic 64-bit generator (splitmix64): tiny, fast, and the same everywhere.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    /// A generator from `seed`.
    pub fn new(seed: u64) -> Self {
        Rng(seed)
    }

    /// The next value.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in (0, 1].
    pub fn unit(&mut self) -> f64 {
        ((self.next_u64() >> 11) + 1) as f64 / (1u64 << 53) as f64
    }
}

/// The sequence of (offset ns, flow index) a run follows.
#[derive(Debug, Clone)]
pub struct Schedule {
    plan: Plan,
    /// Recorded plan: offsets of one pass and the flow each one sends.
    pass: Vec<(u64, usize)>,
    /// Recorded plan: length of one pass, after which the recording starts over.
    pass_ns: u64,
    n_flows: usize,
    i: u64,
    poisson_t: f64,
    rng: Rng,
    once: bool,
    end_ns: u64,
}

impl Schedule {
    /// A schedule over `starts` (each flow's recorded request start, Unix ns; 0 when
    /// unknown) that ends at `end_ns`, or after one pass when `once`.
    pub fn new(plan: Plan, starts: &[u64], seed: u64, once: bool, end_ns: u64) -> Self {
        let (pass, pass_ns) = match plan {
            Plan::Recorded { speed, max_gap_ns } => recorded_pass(starts, speed, max_gap_ns),
            Plan::Rate { .. } | Plan::Ramp { .. } => (Vec::new(), 0),
        };
        Schedule {
            plan,
            pass,
            pass_ns,
            n_flows: starts.len(),
            i: 0,
            poisson_t: 0.0,
            rng: Rng::new(seed),
            once,
            end_ns,
        }
    }
}

/// One pass of recorded arrivals: sorted by start, gaps capped then scaled. Flows
/// without a start time keep their place in file order, right after the previous one.
fn recorded_pass(starts: &[u64], speed: f64, max_gap_ns: u64) -> (Vec<(u64, usize)>, u64) {
    let mut known = 0;
    let mut order: Vec<(u64, usize)> = starts
        .iter()
        .enumerate()
        .map(|(i, &s)| {
            if s != 0 {
                known = s;
            }
            (known, i)
        })
        .collect();
    order.sort_by_key(|&(s, i)| (s, i));
    let base = order.iter().map(|&(s, _)| s).find(|&s| s != 0).unwrap_or(0);
    let mut out = Vec::with_capacity(order.len());
    let mut prev = base;
    let mut t = 0f64;
    for (s, i) in order {
        let s = s.max(base);
        t += (s - prev).min(max_gap_ns) as f64 / speed;
        prev = s;
        out.push((t as u64, i));
    }
    // the next pass starts one mean gap after the last request of this one
    let n = out.len() as u64;
    let last = out.last().map_or(0, |&(t, _)| t);
    let gap = if n > 1 { last / (n - 1) } else { 1_000_000 };
    (out, last + gap.max(1))
}

impl Iterator for Schedule {
    type Item = (u64, usize);

    fn next(&mut self) -> Option<(u64, usize)> {
        if self.n_flows == 0 || (self.once && self.i >= self.n_flows as u64) {
            return None;
        }
        let i = self.i;
        let (at, flow) = match self.plan {
            Plan::Rate {
                rate,
                poisson: false,
            } => (
                (i as f64 * 1e9 / rate) as u64,
                (i % self.n_flows as u64) as usize,
            ),
            Plan::Rate {
                rate,
                poisson: true,
            } => {
                // the first arrival at 0, then exponential gaps with mean 1/rate
                if i > 0 {
                    self.poisson_t += -self.rng.unit().ln() / rate * 1e9;
                }
                (self.poisson_t as u64, (i % self.n_flows as u64) as usize)
            }
            Plan::Ramp {
                from,
                to,
                step,
                every_ns,
            } => {
                // the gap after each request follows the rate of the step it is in
                let at = self.poisson_t;
                let k = (at / every_ns.max(1) as f64).floor();
                let rate = (from + step * k).min(to).max(f64::MIN_POSITIVE);
                self.poisson_t += 1e9 / rate;
                (at as u64, (i % self.n_flows as u64) as usize)
            }
            Plan::Recorded { .. } => {
                let k = (i / self.pass.len() as u64) as usize;
                let (t, f) = self.pass[(i % self.pass.len() as u64) as usize];
                (t + k as u64 * self.pass_ns, f)
            }
        };
        if !self.once && at >= self.end_ns {
            return None;
        }
        self.i += 1;
        Some((at, flow))
    }
}

/// Parses "30s", "500ms", "2m", "1.5" (seconds).
pub fn parse_duration(s: &str) -> Result<std::time::Duration, String> {
    let (num, mult) = if let Some(n) = s.strip_suffix("ms") {
        (n, 1e-3)
    } else if let Some(n) = s.strip_suffix('s') {
        (n, 1.0)
    } else if let Some(n) = s.strip_suffix('m') {
        (n, 60.0)
    } else {
        (s, 1.0)
    };
    let v: f64 = num
        .trim()
        .parse()
        .map_err(|_| format!("not a duration: {s} (try 30s, 500ms, 2m)"))?;
    if !(v >= 0.0 && v.is_finite()) {
        return Err(format!("not a duration: {s}"));
    }
    Ok(std::time::Duration::from_secs_f64(v * mult))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn constant_rate_has_exact_count_and_even_gaps() {
        let plan = Plan::Rate {
            rate: 1000.0,
            poisson: false,
        };
        let s: Vec<_> = Schedule::new(plan, &[0; 3], 1, false, 2_000_000_000).collect();
        assert_eq!(s.len(), 2000);
        assert_eq!(s[1], (1_000_000, 1));
        assert_eq!(s[3], (3_000_000, 0), "the recording starts over");
        let once: Vec<_> = Schedule::new(plan, &[0; 3], 1, true, 0).collect();
        assert_eq!(once.len(), 3);
    }

    #[test]
    fn poisson_mean_rate_and_same_seed_same_sequence() {
        let plan = Plan::Rate {
            rate: 10_000.0,
            poisson: true,
        };
        let a: Vec<_> = Schedule::new(plan, &[0], 42, false, 10_000_000_000).collect();
        let b: Vec<_> = Schedule::new(plan, &[0], 42, false, 10_000_000_000).collect();
        let c: Vec<_> = Schedule::new(plan, &[0], 43, false, 10_000_000_000).collect();
        assert_eq!(a, b);
        assert_ne!(a, c);
        // 100 000 expected; the standard deviation is about 316
        assert!((98_500..101_500).contains(&a.len()), "{}", a.len());
    }

    #[test]
    fn a_ramp_steps_its_rate_up_to_the_top() {
        let plan = Plan::Ramp {
            from: 100.0,
            to: 300.0,
            step: 100.0,
            every_ns: 1_000_000_000,
        };
        let s: Vec<_> = Schedule::new(plan, &[0], 0, false, 4_000_000_000).collect();
        let per_second = |k: u64| s.iter().filter(|&&(t, _)| t / 1_000_000_000 == k).count();
        assert_eq!(
            [per_second(0), per_second(1), per_second(2), per_second(3)],
            [100, 200, 300, 300]
        );
    }

    #[test]
    fn recorded_offsets_scale_sort_and_cap() {
        let s0 = 1_000_000_000_000u64;
        // out of order, one unknown start (it follows flow 1, before it in the file),
        // a long gap capped at 1 s
        let starts = [s0 + 500_000_000, s0, 0, s0 + 10_000_000_000];
        let plan = |speed| Plan::Recorded {
            speed,
            max_gap_ns: 1_000_000_000,
        };
        let one: Vec<_> = Schedule::new(plan(1.0), &starts, 0, true, 0).collect();
        assert_eq!(
            one,
            vec![(0, 1), (0, 2), (500_000_000, 0), (1_500_000_000, 3)]
        );
        let two: Vec<_> = Schedule::new(plan(2.0), &starts, 0, true, 0).collect();
        assert_eq!(two[3], (750_000_000, 3));
        // looping: the second pass starts one mean gap after the first one's end
        let looped: Vec<_> = Schedule::new(plan(1.0), &starts, 0, false, 3_000_000_000).collect();
        assert_eq!(looped[4], (2_000_000_000, 1));
        assert_eq!(looped.len(), 7);
    }
}
