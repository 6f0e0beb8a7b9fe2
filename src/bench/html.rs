//! `index.html` of a report directory: the summary table and four inline SVG plots
//! (plot.rs), no script: the percentile spectrum of every target, and over the
//! measured window, second by second, latency, achieved against target rate, and
//! errors. Rounds are shown one after the other, with a mark where each starts.

use super::plot::{esc, linear_ticks, log_ticks, Axis, Line, Plot, Style};
use super::report::TargetReport;
use super::stats::{quantile, Stats};

/// A duration in ns as a short axis label: 500ns, 20us, 1.5ms, 2s.
fn short_ns(ns: f64) -> String {
    let (v, unit) = match ns {
        n if n < 1e3 => (n, "ns"),
        n if n < 1e6 => (n / 1e3, "us"),
        n if n < 1e9 => (n / 1e6, "ms"),
        n => (n / 1e9, "s"),
    };
    format!("{}{unit}", num(v))
}

/// A number as an axis label: at most 3 significant digits, no trailing zeros.
fn num(v: f64) -> String {
    let s = format!("{v:.2}");
    let s = s.trim_end_matches('0').trim_end_matches('.');
    if s.is_empty() || s == "-0" {
        "0".into()
    } else {
        s.into()
    }
}

/// A plot over the seconds of the window, with the start of each round marked.
fn over_time(
    targets: &[TargetReport],
    merged: &[Stats],
    y: Axis,
    lines: Vec<Line>,
    notes: Vec<String>,
) -> Plot {
    let n = merged.iter().map(|m| m.seconds.len()).max().unwrap_or(0);
    Plot {
        x: seconds_axis(n),
        y,
        lines,
        marks: round_marks(targets),
        notes,
    }
}

/// A y axis of requests per second up to `ymax`, with headroom so that a line at the
/// top is not drawn on the frame.
fn rate_axis(ymax: u64) -> Axis {
    let (top, ticks) = linear_ticks(ymax as f64 * 1.1, num);
    Axis {
        title: "requests per second".into(),
        range: (0.0, top),
        ticks,
        log: false,
    }
}

/// The x axis of the plots over time: `n` seconds.
fn seconds_axis(n: usize) -> Axis {
    let (top, ticks) = linear_ticks(n as f64, num);
    Axis {
        title: "seconds of the measured window (rounds one after the other)".into(),
        range: (0.0, top.max(1.0)),
        ticks,
        log: false,
    }
}

/// Where rounds 2, 3, ... start, in seconds, from the first target's rounds.
fn round_marks(targets: &[TargetReport]) -> Vec<(f64, String)> {
    let Some(t) = targets.first() else {
        return Vec::new();
    };
    let mut at = 0;
    let mut marks = Vec::new();
    for (i, r) in t.rounds.iter().enumerate() {
        if i > 0 {
            marks.push((at as f64, format!("round {}", i + 1)));
        }
        at += r.seconds.len();
    }
    marks
}

/// One point per second, at the middle of the second.
fn per_second(values: impl Iterator<Item = Option<f64>>) -> Vec<(f64, Option<f64>)> {
    values
        .enumerate()
        .map(|(i, v)| (i as f64 + 0.5, v))
        .collect()
}

/// The spectrum: corrected (solid) and service (dashed) latency per target, on a
/// 1/(1-p) axis up to 99.999%.
fn spectrum(targets: &[TargetReport], merged: &[Stats]) -> Plot {
    const DECADES: f64 = 5.0;
    let ymax = merged.iter().map(|m| m.corrected.max()).max().unwrap_or(1);
    let (top, ticks) = linear_ticks(ymax as f64, short_ns);
    let mut lines = Vec::new();
    for (k, (t, m)) in targets.iter().zip(merged).enumerate() {
        for (kind, h, style) in [
            ("corrected", &m.corrected, Style::Solid),
            ("service", &m.service, Style::Dashed),
        ] {
            let points = (0..=200)
                .map(|i| {
                    let x = i as f64 / 200.0 * DECADES;
                    let p = 1.0 - 10f64.powf(-x);
                    (x, quantile(h, p).map(|v| v as f64))
                })
                .collect();
            let name = format!("{} {kind}", t.name);
            lines.push(Line {
                name,
                points,
                style,
                color: k,
            });
        }
    }
    let xt = ["0%", "90%", "99%", "99.9%", "99.99%", "99.999%"];
    Plot {
        x: Axis {
            title: "percentile".into(),
            range: (0.0, DECADES),
            ticks: xt
                .iter()
                .enumerate()
                .map(|(i, l)| (i as f64, l.to_string()))
                .collect(),
            log: false,
        },
        y: Axis {
            title: "latency".into(),
            range: (0.0, top),
            ticks,
            log: false,
        },
        lines,
        marks: Vec::new(),
        notes: Vec::new(),
    }
}

/// Latency over time: per second the requests were due, corrected p50 (dotted) and
/// p99 (solid) and service p99 (dashed), on a log axis so that a stall and the
/// microseconds around it both show.
fn latency_over_time(targets: &[TargetReport], merged: &[Stats]) -> Plot {
    let mut lines = Vec::new();
    let (mut lo, mut hi) = (f64::MAX, 0f64);
    for (k, (t, m)) in targets.iter().zip(merged).enumerate() {
        for (kind, q, style, service) in [
            ("p50", 0.5, Style::Dotted, false),
            ("p99", 0.99, Style::Solid, false),
            ("service p99", 0.99, Style::Dashed, true),
        ] {
            let vals = m.seconds.iter().map(|s| {
                let h = if service { &s.service } else { &s.corrected };
                quantile(h, q).map(|v| v as f64)
            });
            let points = per_second(vals);
            for v in points.iter().filter_map(|p| p.1) {
                (lo, hi) = (lo.min(v), hi.max(v));
            }
            let name = format!("{} {kind}", t.name);
            lines.push(Line {
                name,
                points,
                style,
                color: k,
            });
        }
    }
    if hi == 0.0 {
        (lo, hi) = (1e4, 1e6);
    }
    let (range, ticks) = log_ticks(lo, hi, short_ns);
    let mut notes = Vec::new();
    if merged
        .iter()
        .any(|m| m.seconds.iter().any(|s| s.corrected.is_empty()))
    {
        notes.push("a gap: no request due in that second got a response".into());
    }
    let y = Axis {
        title: "latency (log scale)".into(),
        range,
        ticks,
        log: true,
    };
    over_time(targets, merged, y, lines, notes)
}

/// Achieved against target rate: completions per second (solid) over the schedule's
/// intended sends per second (a pale band); a closed loop has no target rate.
fn rate_over_time(targets: &[TargetReport], merged: &[Stats]) -> Plot {
    let mut lines = Vec::new();
    let mut ymax = 0u64;
    let mut closed = Vec::new();
    for (k, (t, m)) in targets.iter().zip(merged).enumerate() {
        let done = m.per_second.iter().map(|&c| Some(c as f64));
        ymax = ymax.max(m.per_second.iter().copied().max().unwrap_or(0));
        lines.push(Line {
            name: format!("{} completed", t.name),
            points: per_second(done),
            style: Style::Solid,
            color: k,
        });
        if !m.open_loop {
            closed.push(t.name.as_str());
            continue;
        }
        let due = m.seconds.iter().map(|s| Some(s.scheduled as f64));
        ymax = ymax.max(m.seconds.iter().map(|s| s.scheduled).max().unwrap_or(0));
        lines.push(Line {
            name: format!("{} target (scheduled)", t.name),
            points: per_second(due),
            style: Style::Band,
            color: k,
        });
    }
    let mut notes = Vec::new();
    if !closed.is_empty() {
        notes.push(format!(
            "closed loop ({}): no target rate, each connection sends when its last request is done",
            closed.join(", ")
        ));
    }
    over_time(targets, merged, rate_axis(ymax), lines, notes)
}

/// Errors over time: per second the requests were due, failures (solid) and answers
/// outside 2xx/3xx (dotted).
fn errors_over_time(targets: &[TargetReport], merged: &[Stats]) -> Plot {
    let mut lines = Vec::new();
    let mut ymax = 0u64;
    for (k, (t, m)) in targets.iter().zip(merged).enumerate() {
        for (kind, style, f) in [
            (
                "failed",
                Style::Solid,
                (|s| s.failed) as fn(&super::stats::Second) -> u64,
            ),
            ("not 2xx/3xx", Style::Dotted, |s| s.not_ok),
        ] {
            ymax = ymax.max(m.seconds.iter().map(f).max().unwrap_or(0));
            let points = per_second(m.seconds.iter().map(|s| Some(f(s) as f64)));
            let name = format!("{} {kind}", t.name);
            lines.push(Line {
                name,
                points,
                style,
                color: k,
            });
        }
    }
    let mut notes = Vec::new();
    if ymax == 0 {
        notes.push("no request failed and every response was 2xx or 3xx".into());
    }
    over_time(targets, merged, rate_axis(ymax), lines, notes)
}

/// The whole page.
pub fn page(targets: &[TargetReport]) -> String {
    let mut table = Vec::new();
    let _ = super::report::table(targets, &mut table);
    let merged: Vec<Stats> = targets.iter().map(|t| t.merged()).collect();
    let sections = [
        (
            "Latency by percentile",
            "Solid: corrected (from the intended send time); dashed: service time (from the actual send).",
            spectrum(targets, &merged),
        ),
        (
            "Latency over time",
            "Per second of the window, the requests due in it: corrected p50 (dotted) and p99 (solid), service p99 (dashed).",
            latency_over_time(targets, &merged),
        ),
        (
            "Achieved against target rate",
            "Responses per second (solid line) over the sends the schedule intended per second (pale band): a line under its band is a target falling behind.",
            rate_over_time(targets, &merged),
        ),
        (
            "Errors over time",
            "Per second the requests were due: failed (no response: connect, io, parse, timeout, body) solid, answered outside 2xx/3xx dotted.",
            errors_over_time(targets, &merged),
        ),
    ];
    let mut body = String::new();
    for (title, what, plot) in sections {
        body.push_str(&format!(
            "<h2>{}</h2><p>{}</p>{}",
            esc(title),
            esc(what),
            plot.svg()
        ));
    }
    format!(
        "<!doctype html><meta charset='utf-8'><title>luring bench</title><body style='font-family:sans-serif'><h1>luring bench</h1><pre style='font-size:11px;overflow-x:auto'>{}</pre>{body}</body>",
        esc(&String::from_utf8_lossy(&table)),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A target of two rounds of `n` seconds at 100 requests a second, 1 ms each, but
    /// for a stall of 800 ms in the first round's second 1, and failures in its last.
    fn target(name: &str, open_loop: bool, n: usize) -> TargetReport {
        let round = || {
            let mut s = Stats {
                open_loop,
                ..Stats::default()
            };
            for sec in 0..n {
                for i in 0..100u64 {
                    let t = sec as u64 * 1_000_000_000 + i * 10_000_000;
                    let wait = if sec == 1 { 800_000_000 } else { 1_000_000 };
                    s.schedule(sec);
                    s.complete(t, t, t + wait, 200, sec, sec);
                }
            }
            s.fail("timeout", n - 1);
            s.pad_to(n);
            s
        };
        TargetReport {
            name: name.into(),
            url: "http://127.0.0.1:1".into(),
            rounds: vec![round(), round()],
            target_cpu_us: vec![None, None],
            driver_cpu_us: vec![None, None],
        }
    }

    #[test]
    fn the_page_has_four_plots_with_marks_notes_and_no_nan() {
        let html = page(&[target("open<1>", true, 4), target("closed", false, 4)]);
        assert_eq!(html.matches("<svg").count(), 4);
        assert!(html.contains("open&lt;1&gt; p99") && html.contains("closed service p99"));
        assert!(html.contains("open&lt;1&gt; target (scheduled)"));
        assert!(
            !html.contains("closed target"),
            "a closed loop has no target rate"
        );
        assert!(html.contains("closed loop (closed): no target rate"));
        assert_eq!(html.matches("round 2").count(), 3, "on each plot over time");
        assert!(!html.contains("NaN") && !html.contains("inf"), "{html}");
        // the stall's second is on the log axis, up to 1 s
        assert!(html.contains(">1s</text>"));
    }

    #[test]
    fn an_empty_run_still_draws_axes() {
        let t = TargetReport {
            name: "none".into(),
            url: String::new(),
            rounds: vec![Stats::default()],
            target_cpu_us: vec![None],
            driver_cpu_us: vec![None],
        };
        let html = page(&[t]);
        assert_eq!(html.matches("<svg").count(), 4);
        assert!(!html.contains("NaN"), "{html}");
        assert!(html.contains("no request failed"));
    }

    #[test]
    fn labels_are_short() {
        assert_eq!(short_ns(500.0), "500ns");
        assert_eq!(short_ns(20_000.0), "20us");
        assert_eq!(short_ns(1_500_000.0), "1.5ms");
        assert_eq!(short_ns(2e9), "2s");
        assert_eq!(num(0.6000000000000001), "0.6");
        assert_eq!(num(0.0), "0");
        assert_eq!(num(1200.0), "1200");
    }
}
