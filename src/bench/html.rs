//! `index.html` of a report directory: inline SVG plots written by hand (no script, no
//! plotting dependency to build on this small machine): the percentile spectrum of
//! every target on a 1/(1-p) axis, completions per second, and the summary table.

use super::report::{fmt_ns, TargetReport};
use std::fmt::Write;

const W: f64 = 720.0;
const H: f64 = 300.0;
const PAD: f64 = 50.0;
const COLORS: [&str; 6] = [
    "#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#17becf",
];

/// A named line: points with x and y in 0..1, dashed or not, its colour's index.
type Series = (String, Vec<(f64, f64)>, bool, usize);

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// Axes, grid labels and a polyline per series; x and y already in 0..1.
fn svg(title: &str, xlabels: &[(f64, String)], ymax_label: &str, series: &[Series]) -> String {
    let mut s = format!(
        "<h2>{}</h2><svg xmlns='http://www.w3.org/2000/svg' width='{}' height='{}' font-family='sans-serif' font-size='11'>",
        esc(title),
        W + 2.0 * PAD,
        H + 2.0 * PAD
    );
    let _ = write!(
        s,
        "<rect x='{PAD}' y='{PAD}' width='{W}' height='{H}' fill='none' stroke='#888'/><text x='4' y='{}'>{}</text><text x='4' y='{}'>0</text>",
        PAD + 4.0,
        esc(ymax_label),
        PAD + H
    );
    for (x, l) in xlabels {
        let px = PAD + x * W;
        let _ = write!(
            s,
            "<line x1='{px}' y1='{PAD}' x2='{px}' y2='{}' stroke='#ddd'/><text x='{px}' y='{}' text-anchor='middle'>{}</text>",
            PAD + H,
            PAD + H + 16.0,
            esc(l)
        );
    }
    for (i, (name, pts, dashed, color)) in series.iter().enumerate() {
        let c = COLORS[color % COLORS.len()];
        let mut p = String::new();
        for (x, y) in pts {
            let _ = write!(p, "{:.1},{:.1} ", PAD + x * W, PAD + H - y.min(1.0) * H);
        }
        let dash = if *dashed {
            " stroke-dasharray='4 3'"
        } else {
            ""
        };
        let _ = write!(
            s,
            "<polyline points='{p}' fill='none' stroke='{c}' stroke-width='1.5'{dash}/><text x='{}' y='{}' fill='{c}'>{}</text>",
            PAD + W + 4.0 - 120.0,
            PAD + 14.0 + 14.0 * i as f64,
            esc(name)
        );
    }
    s.push_str("</svg>");
    s
}

/// The spectrum: corrected (solid) and service (dashed) latency per target.
fn spectrum(targets: &[TargetReport]) -> String {
    const DECADES: f64 = 5.0; // 1/(1-p) from 1 to 100 000: p up to 99.999%
    let merged: Vec<_> = targets.iter().map(|t| t.merged()).collect();
    let ymax = merged
        .iter()
        .map(|m| m.corrected.max())
        .max()
        .unwrap_or(1)
        .max(1) as f64;
    let mut series = Vec::new();
    for (k, (t, m)) in targets.iter().zip(&merged).enumerate() {
        for (kind, h, dashed) in [
            ("corrected", &m.corrected, false),
            ("service", &m.service, true),
        ] {
            let pts = (0..=200)
                .map(|i| {
                    let x = i as f64 / 200.0;
                    let p = 1.0 - 10f64.powf(-x * DECADES);
                    let v = if h.is_empty() {
                        0
                    } else {
                        h.value_at_quantile(p)
                    };
                    (x, v as f64 / ymax)
                })
                .collect();
            series.push((format!("{} {kind}", t.name), pts, dashed, k));
        }
    }
    let xl = ["0%", "90%", "99%", "99.9%", "99.99%", "99.999%"]
        .iter()
        .enumerate()
        .map(|(i, l)| (i as f64 / DECADES, l.to_string()))
        .collect::<Vec<_>>();
    svg(
        "Latency by percentile (solid: corrected, dashed: service)",
        &xl,
        &fmt_ns(ymax as u64),
        &series,
    )
}

/// Completions per second over the measured windows (rounds one after the other).
fn throughput(targets: &[TargetReport]) -> String {
    let merged: Vec<_> = targets.iter().map(|t| t.merged()).collect();
    let n = merged
        .iter()
        .map(|m| m.per_second.len())
        .max()
        .unwrap_or(1)
        .max(2);
    let ymax = merged
        .iter()
        .flat_map(|m| m.per_second.iter().copied())
        .max()
        .unwrap_or(1)
        .max(1) as f64;
    let series = targets
        .iter()
        .zip(&merged)
        .enumerate()
        .map(|(k, (t, m))| {
            let pts = m
                .per_second
                .iter()
                .enumerate()
                .map(|(i, &c)| (i as f64 / (n - 1) as f64, c as f64 / ymax))
                .collect();
            (t.name.clone(), pts, false, k)
        })
        .collect::<Vec<_>>();
    let xl = vec![(0.0, "0 s".to_string()), (1.0, format!("{} s", n - 1))];
    svg("Completions per second", &xl, &format!("{ymax}/s"), &series)
}

/// The whole page.
pub fn page(targets: &[TargetReport]) -> String {
    let mut table = Vec::new();
    let _ = super::report::table(targets, &mut table);
    format!(
        "<!doctype html><meta charset='utf-8'><title>luring bench</title><body style='font-family:sans-serif'><h1>luring bench</h1><pre>{}</pre>{}{}</body>",
        esc(&String::from_utf8_lossy(&table)),
        spectrum(targets),
        throughput(targets)
    )
}
