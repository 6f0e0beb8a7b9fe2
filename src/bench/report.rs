//! A run's results: per target, the rounds and their merge; printed as a table,
//! written as JSON and wrk2-style `.hgrm` files.

use super::stats::{hgrm, quantile, Stats};
use serde_json::json;
use std::io::Write;
use std::path::Path;

/// One target's results over all rounds.
#[derive(Debug, Clone)]
pub struct TargetReport {
    /// The target's name.
    pub name: String,
    /// Its URL as given.
    pub url: String,
    /// Each round's measurements.
    pub rounds: Vec<Stats>,
    /// The target process's CPU per round, µs (when watched).
    pub target_cpu_us: Vec<Option<u64>>,
    /// The driver's CPU per round, µs.
    pub driver_cpu_us: Vec<Option<u64>>,
}

/// The schedule lag p99 beyond which the driver did not keep its schedule (1 ms).
const LAG_LIMIT_NS: u64 = 1_000_000;

impl TargetReport {
    /// All rounds merged.
    pub fn merged(&self) -> Stats {
        let mut m = Stats::default();
        for r in &self.rounds {
            m.merge(r);
        }
        m
    }

    /// CPU µs per completed request of the process in `cpu`, over all rounds.
    fn per_request(&self, cpu: &[Option<u64>]) -> Option<f64> {
        let total: Option<u64> = cpu.iter().copied().sum();
        let n = self.merged().completed();
        total.filter(|_| n > 0).map(|t| t as f64 / n as f64)
    }

    /// The watched process's CPU µs per request.
    pub fn target_cpu_per_request(&self) -> Option<f64> {
        self.per_request(&self.target_cpu_us)
    }

    /// The driver's CPU µs per request.
    pub fn driver_cpu_per_request(&self) -> Option<f64> {
        self.per_request(&self.driver_cpu_us)
    }

    /// Why the driver did not keep the schedule, when it did not.
    pub fn driver_limited(&self) -> Vec<String> {
        let m = self.merged();
        let mut why = Vec::new();
        if m.cap_waits > 0 {
            why.push(format!(
                "in-flight cap hit: {} request(s) waited for a free connection",
                m.cap_waits
            ));
        }
        if !m.lag.is_empty() && m.lag.value_at_quantile(0.99) > LAG_LIMIT_NS {
            why.push(format!(
                "schedule lag p99 {} > 1ms",
                fmt_ns(m.lag.value_at_quantile(0.99))
            ));
        }
        if let Some((a, b)) = m.lag_growth() {
            why.push(format!(
                "schedule lag grew from {} to {} (mean, first and last second)",
                fmt_ns(a),
                fmt_ns(b)
            ));
        }
        why
    }
}

/// A duration in ns for a table cell: µs below 1 ms, ms below 1 s, else s.
pub fn fmt_ns(ns: u64) -> String {
    if ns < 1_000_000 {
        format!("{}us", ns / 1000)
    } else if ns < 1_000_000_000 {
        format!("{:.2}ms", ns as f64 / 1e6)
    } else {
        format!("{:.2}s", ns as f64 / 1e9)
    }
}

fn opt(v: Option<f64>) -> String {
    v.map_or("-".into(), |v| format!("{v:.1}"))
}

/// The terminal table: corrected latency percentiles, service and lag p99, counts.
pub fn table(targets: &[TargetReport], out: &mut dyn Write) -> std::io::Result<()> {
    writeln!(
        out,
        "{:<14} {:>8} {:>9} {:>8} {:>8} {:>8} {:>8} {:>8} {:>8} {:>8} {:>6} {:>17} {:>8} {:>8}",
        "target",
        "requests",
        "req/s",
        "p50",
        "p90",
        "p99",
        "p99.9",
        "max",
        "svc p99",
        "lag p99",
        "errors",
        "2xx/3xx/4xx/5xx",
        "cpu/req",
        "drv/req"
    )?;
    for t in targets {
        let m = t.merged();
        let q = |h: &hdrhistogram::Histogram<u64>, p: f64| {
            if h.is_empty() {
                "-".to_string()
            } else {
                fmt_ns(h.value_at_quantile(p))
            }
        };
        let c = m.classes;
        writeln!(
            out,
            "{:<14} {:>8} {:>9.1} {:>8} {:>8} {:>8} {:>8} {:>8} {:>8} {:>8} {:>6} {:>17} {:>8} {:>8}",
            t.name,
            m.completed(),
            m.throughput(),
            q(&m.corrected, 0.5),
            q(&m.corrected, 0.9),
            q(&m.corrected, 0.99),
            q(&m.corrected, 0.999),
            q(&m.corrected, 1.0),
            q(&m.service, 0.99),
            q(&m.lag, 0.99),
            m.failed(),
            format!("{}/{}/{}/{}", c[2], c[3], c[4], c[5]),
            opt(t.target_cpu_per_request()),
            opt(t.driver_cpu_per_request()),
        )?;
        if t.rounds.len() > 1 {
            let rs: Vec<f64> = t.rounds.iter().map(|r| r.throughput()).collect();
            let p99: Vec<u64> = t
                .rounds
                .iter()
                .map(|r| r.corrected.value_at_quantile(0.99))
                .collect();
            writeln!(
                out,
                "{:<14} rounds: req/s {:.1}..{:.1}, p99 {}..{}",
                "",
                rs.iter().copied().fold(f64::MAX, f64::min),
                rs.iter().copied().fold(0.0, f64::max),
                fmt_ns(p99.iter().copied().min().unwrap_or(0)),
                fmt_ns(p99.iter().copied().max().unwrap_or(0))
            )?;
        }
        for why in t.driver_limited() {
            writeln!(out, "{:<14} DRIVER-LIMITED: {why}", "")?;
        }
        for (k, v) in &m.errors {
            writeln!(out, "{:<14} error {k}: {v}", "")?;
        }
        let w = m.ws;
        if w.conversations > 0 || w.sent_msgs > 0 || w.recv_msgs > 0 {
            writeln!(
                out,
                "{:<14} websocket: {} conversations, messages {} sent / {} received, payload bytes {} / {}",
                "", w.conversations, w.sent_msgs, w.recv_msgs, w.sent_bytes, w.recv_bytes
            )?;
        }
    }
    writeln!(
        out,
        "latency from the intended send time (coordinated omission corrected); svc: from the actual send; lag: actual minus intended send; cpu/req, drv/req: CPU us per request of the watched process and of this driver"
    )
}

const QUANTILES: [f64; 9] = [0.0, 0.5, 0.75, 0.9, 0.99, 0.999, 0.9999, 0.99999, 1.0];

fn pct_json(h: &hdrhistogram::Histogram<u64>) -> serde_json::Value {
    let m: serde_json::Map<String, serde_json::Value> = QUANTILES
        .iter()
        .map(|&q| {
            let v = if h.is_empty() {
                0
            } else {
                h.value_at_quantile(q)
            };
            (format!("p{}", q * 100.0), json!(v as f64 / 1e3))
        })
        .collect();
    json!({"count": h.len(), "mean_us": h.mean() / 1e3, "percentiles_us": m})
}

fn stats_json(s: &Stats) -> serde_json::Value {
    json!({
        "scheduled": s.scheduled,
        "completed": s.completed(),
        "requests_per_s": s.throughput(),
        "send_rate": s.send_rate(),
        "window_s": s.window_s,
        "status_classes": {"1xx": s.classes[1], "2xx": s.classes[2], "3xx": s.classes[3],
                           "4xx": s.classes[4], "5xx": s.classes[5], "other": s.classes[0]},
        "errors": s.errors,
        "cap_waits": s.cap_waits,
        "body_bytes": s.body_bytes,
        "websocket": {"conversations": s.ws.conversations,
                      "messages_sent": s.ws.sent_msgs, "messages_received": s.ws.recv_msgs,
                      "bytes_sent": s.ws.sent_bytes, "bytes_received": s.ws.recv_bytes},
        "per_second": s.per_second,
        "seconds": seconds_json(s),
        "corrected": pct_json(&s.corrected),
        "service": pct_json(&s.service),
        "lag": pct_json(&s.lag),
    })
}

/// The per-second series as columns, one value a second of the window (rounds one
/// after the other in a merge): what happened to the requests due in that second
/// (scheduled, failed, not_2xx_3xx, latency percentiles in µs, null when none got a
/// response), and `completed` by the second responses arrived in.
fn seconds_json(s: &Stats) -> serde_json::Value {
    let col = |f: &dyn Fn(&super::stats::Second) -> serde_json::Value| {
        s.seconds.iter().map(f).collect::<Vec<_>>()
    };
    let us = |v: Option<u64>| json!(v.map(|v| v as f64 / 1e3));
    json!({
        "scheduled": col(&|x| json!(x.scheduled)),
        "completed": s.per_second,
        "failed": col(&|x| json!(x.failed)),
        "not_2xx_3xx": col(&|x| json!(x.not_ok)),
        "corrected_p50_us": col(&|x| us(quantile(&x.corrected, 0.5))),
        "corrected_p99_us": col(&|x| us(quantile(&x.corrected, 0.99))),
        "service_p99_us": col(&|x| us(quantile(&x.service, 0.99))),
    })
}

/// Writes `report.json` and `NAME.{corrected,service,lag}.hgrm` into `dir` (the run
/// writes `index.html` beside them).
pub fn write_dir(
    dir: &Path,
    config: serde_json::Value,
    targets: &[TargetReport],
) -> Result<(), String> {
    std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let mut ts = Vec::new();
    for t in targets {
        let m = t.merged();
        ts.push(json!({
            "name": t.name,
            "url": t.url,
            "merged": stats_json(&m),
            "rounds": t.rounds.iter().map(stats_json).collect::<Vec<_>>(),
            "target_cpu_us_per_request": t.target_cpu_per_request(),
            "driver_cpu_us_per_request": t.driver_cpu_per_request(),
            "driver_limited": t.driver_limited(),
        }));
        for (kind, h) in [
            ("corrected", &m.corrected),
            ("service", &m.service),
            ("lag", &m.lag),
        ] {
            let p = dir.join(format!("{}.{kind}.hgrm", file_safe(&t.name)));
            std::fs::write(&p, hgrm(h)).map_err(|e| format!("{}: {e}", p.display()))?;
        }
    }
    let doc = json!({"config": config, "targets": ts});
    let p = dir.join("report.json");
    let text = serde_json::to_string_pretty(&doc).map_err(|e| e.to_string())?;
    std::fs::write(&p, text).map_err(|e| format!("{}: {e}", p.display()))
}

fn file_safe(name: &str) -> String {
    name.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect()
}
