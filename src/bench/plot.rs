//! Line plots as inline SVG, sans-IO: data in, SVG text out. Written by hand rather
//! than with a plotting crate: a few line plots do not justify a dependency tree to
//! build on this 2-core machine, and the page must need no script.
//!
//! Layout, top to bottom: the plot area with its y axis (ticks and a vertical title)
//! on the left, the x ticks and title under it, notes, then the legend in rows, so
//! that no label is drawn over a line and nothing falls off the canvas.

use std::fmt::Write;

/// Width and height of the plot area, px.
const W: f64 = 720.0;
const H: f64 = 260.0;
/// Room left of the plot area (y tick labels and title), above, right, and under it
/// (x tick labels and title).
const LEFT: f64 = 78.0;
const TOP: f64 = 12.0;
const RIGHT: f64 = 40.0;
const UNDER: f64 = 44.0;
/// Height of a row of notes or legend.
const ROW: f64 = 17.0;
/// Most legend entries in a row.
const MAX_PER_ROW: usize = 4;

/// Line colours, one per target.
pub const COLORS: [&str; 6] = [
    "#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#17becf",
];

/// How a line is drawn.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Style {
    /// A solid line, 2 px.
    Solid,
    /// Dashes.
    Dashed,
    /// Dots, thinner.
    Dotted,
    /// A wide pale band, for a line others are drawn over and measured against (a
    /// target), which a dashed line in the same place would hide.
    Band,
}

/// One named line.
#[derive(Debug, Clone)]
pub struct Line {
    /// Its legend entry.
    pub name: String,
    /// Points in data units; a None y breaks the line there.
    pub points: Vec<(f64, Option<f64>)>,
    /// How it is drawn.
    pub style: Style,
    /// Index into [`COLORS`].
    pub color: usize,
}

/// One axis: its title, range, ticks and scale.
#[derive(Debug, Clone)]
pub struct Axis {
    /// What the axis shows, with its unit.
    pub title: String,
    /// Lowest and highest value shown.
    pub range: (f64, f64),
    /// Tick positions (data units) and labels.
    pub ticks: Vec<(f64, String)>,
    /// Logarithmic (the range must then be above zero).
    pub log: bool,
}

impl Axis {
    /// Where `v` falls between the ends, 0..1 (clamped).
    fn frac(&self, v: f64) -> f64 {
        let (lo, hi) = self.range;
        let f = if self.log {
            let l = |x: f64| x.max(lo).log10();
            (l(v) - l(lo)) / (l(hi) - l(lo))
        } else {
            (v - lo) / (hi - lo)
        };
        if f.is_finite() {
            f.clamp(0.0, 1.0)
        } else {
            0.0
        }
    }
}

/// A whole plot.
#[derive(Debug, Clone)]
pub struct Plot {
    /// The x axis.
    pub x: Axis,
    /// The y axis.
    pub y: Axis,
    /// The lines, drawn in order.
    pub lines: Vec<Line>,
    /// Vertical marks at these x values, with a label (the start of each round).
    pub marks: Vec<(f64, String)>,
    /// Sentences under the axis (what is missing, and why).
    pub notes: Vec<String>,
}

/// Escapes text for HTML and SVG.
pub fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('\'', "&#39;")
}

fn dash(style: Style) -> &'static str {
    match style {
        Style::Solid => " stroke-width='2'",
        Style::Dashed => " stroke-width='1.5' stroke-dasharray='6 4'",
        Style::Dotted => " stroke-width='1.5' stroke-dasharray='1.5 3'",
        Style::Band => " stroke-width='8' stroke-opacity='0.25' stroke-linecap='round'",
    }
}

impl Plot {
    /// The plot as an `<svg>` element.
    pub fn svg(&self) -> String {
        let places = self.legend_places();
        let legend_rows = places.last().map_or(0, |p| p.1 + 1);
        let height = TOP + H + UNDER + ROW * (self.notes.len() + legend_rows) as f64 + 6.0;
        let mut s = format!(
            "<svg xmlns='http://www.w3.org/2000/svg' width='{}' height='{height}' font-family='sans-serif' font-size='12'>",
            LEFT + W + RIGHT
        );
        self.axes(&mut s);
        // bands under the lines they are read against
        let (bands, others): (Vec<&Line>, Vec<&Line>) =
            self.lines.iter().partition(|l| l.style == Style::Band);
        for l in bands.into_iter().chain(others) {
            self.line(&mut s, l);
        }
        let mut y = TOP + H + UNDER;
        for n in &self.notes {
            y += ROW;
            let _ = write!(s, "<text x='{LEFT}' y='{y}' fill='#555'>{}</text>", esc(n));
        }
        let columns = places.iter().map(|p| p.0 + 1).max().unwrap_or(1);
        for (l, (col, row)) in self.lines.iter().zip(places) {
            let x = LEFT + col as f64 * (W / columns as f64);
            let y = TOP + H + UNDER + ROW * (self.notes.len() + row + 1) as f64;
            let c = COLORS[l.color % COLORS.len()];
            let _ = write!(
                s,
                "<line x1='{x}' y1='{}' x2='{}' y2='{}' stroke='{c}'{}/><text x='{}' y='{y}'>{}</text>",
                y - 4.0,
                x + 30.0,
                y - 4.0,
                dash(l.style),
                x + 36.0,
                esc(&l.name)
            );
        }
        s.push_str("</svg>");
        s
    }

    /// Column and row of each line's legend entry: a row per colour (per target), at
    /// most [`MAX_PER_ROW`] entries in one.
    fn legend_places(&self) -> Vec<(usize, usize)> {
        let mut places: Vec<(usize, usize)> = Vec::new();
        let mut prev = None;
        for l in &self.lines {
            let place = match (places.last(), prev) {
                (Some(&(c, r)), Some(p)) if p == l.color && c + 1 < MAX_PER_ROW => (c + 1, r),
                (Some(&(_, r)), _) => (0, r + 1),
                (None, _) => (0, 0),
            };
            places.push(place);
            prev = Some(l.color);
        }
        places
    }

    fn px(&self, x: f64, y: f64) -> (f64, f64) {
        (LEFT + self.x.frac(x) * W, TOP + H - self.y.frac(y) * H)
    }

    /// Frame, grid, ticks, titles and marks.
    fn axes(&self, s: &mut String) {
        let _ = write!(
            s,
            "<rect x='{LEFT}' y='{TOP}' width='{W}' height='{H}' fill='none' stroke='#888'/>"
        );
        for (v, label) in &self.x.ticks {
            let (px, _) = self.px(*v, self.y.range.0);
            let _ = write!(
                s,
                "<line x1='{px:.1}' y1='{TOP}' x2='{px:.1}' y2='{}' stroke='#e4e4e4'/><text x='{px:.1}' y='{}' text-anchor='middle'>{}</text>",
                TOP + H,
                TOP + H + 16.0,
                esc(label)
            );
        }
        for (v, label) in &self.y.ticks {
            let (_, py) = self.px(self.x.range.0, *v);
            let _ = write!(
                s,
                "<line x1='{LEFT}' y1='{py:.1}' x2='{}' y2='{py:.1}' stroke='#e4e4e4'/><text x='{}' y='{:.1}' text-anchor='end'>{}</text>",
                LEFT + W,
                LEFT - 6.0,
                py + 4.0,
                esc(label)
            );
        }
        let _ = write!(
            s,
            "<text x='{}' y='{}' text-anchor='middle'>{}</text><text transform='translate(14 {}) rotate(-90)' text-anchor='middle'>{}</text>",
            LEFT + W / 2.0,
            TOP + H + 36.0,
            esc(&self.x.title),
            TOP + H / 2.0,
            esc(&self.y.title)
        );
        for (v, label) in &self.marks {
            let (px, _) = self.px(*v, self.y.range.0);
            let _ = write!(
                s,
                "<line x1='{px:.1}' y1='{TOP}' x2='{px:.1}' y2='{}' stroke='#999' stroke-dasharray='3 3'/><text x='{:.1}' y='{}' fill='#777'>{}</text>",
                TOP + H,
                px + 3.0,
                TOP + 12.0,
                esc(label)
            );
        }
    }

    /// One line: a polyline per run of points with a value, a dot for a lone one.
    fn line(&self, s: &mut String, l: &Line) {
        let c = COLORS[l.color % COLORS.len()];
        for run in l.points.split(|(_, y)| y.is_none()) {
            let pts: Vec<(f64, f64)> = run
                .iter()
                .filter_map(|&(x, y)| y.map(|y| self.px(x, y)))
                .collect();
            if let [(x, y)] = pts[..] {
                let _ = write!(s, "<circle cx='{x:.1}' cy='{y:.1}' r='2.5' fill='{c}'/>");
                continue;
            }
            if pts.is_empty() {
                continue;
            }
            let mut p = String::new();
            for (x, y) in pts {
                let _ = write!(p, "{x:.1},{y:.1} ");
            }
            let _ = write!(
                s,
                "<polyline points='{}' fill='none' stroke='{c}'{}/>",
                p.trim_end(),
                dash(l.style)
            );
        }
    }
}

/// Ticks for a linear axis from 0 to at least `max`: steps of 1, 2 or 5 times a power
/// of ten, at most 8 of them; the axis's top is the last tick.
pub fn linear_ticks(max: f64, label: impl Fn(f64) -> String) -> (f64, Vec<(f64, String)>) {
    let max = if max > 0.0 { max } else { 1.0 };
    let raw = max / 6.0;
    let mag = 10f64.powf(raw.log10().floor());
    let step = [1.0, 2.0, 5.0, 10.0]
        .iter()
        .map(|m| m * mag)
        .find(|&s| max / s <= 8.0)
        .unwrap_or(10.0 * mag);
    let n = (max / step).ceil() as usize;
    let ticks = (0..=n)
        .map(|i| {
            let v = i as f64 * step;
            (v, label(v))
        })
        .collect();
    (n as f64 * step, ticks)
}

/// A logarithmic range covering `lo..=hi` (both above zero) in whole decades, at
/// least two, with a tick at every decade, and at 2 and 5 times it when there are few.
pub fn log_ticks(
    lo: f64,
    hi: f64,
    label: impl Fn(f64) -> String,
) -> ((f64, f64), Vec<(f64, String)>) {
    let d0 = lo.max(f64::MIN_POSITIVE).log10().floor() as i32;
    let d1 = (hi.max(lo).log10().ceil() as i32).max(d0 + 2);
    let dense = d1 - d0 <= 3;
    let mut ticks = Vec::new();
    for d in d0..=d1 {
        for m in [1.0, 2.0, 5.0] {
            let v = m * 10f64.powi(d);
            if (m == 1.0 || dense) && d < d1 || (d == d1 && m == 1.0) {
                ticks.push((v, label(v)));
            }
        }
    }
    ((10f64.powi(d0), 10f64.powi(d1)), ticks)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plot(lines: Vec<Line>) -> Plot {
        let (top, yt) = linear_ticks(95.0, |v| format!("{v}"));
        Plot {
            x: Axis {
                title: "seconds".into(),
                range: (0.0, 4.0),
                ticks: vec![(0.0, "0".into()), (4.0, "4".into())],
                log: false,
            },
            y: Axis {
                title: "a <b>".into(),
                range: (0.0, top),
                ticks: yt,
                log: false,
            },
            lines,
            marks: vec![(2.0, "round 2".into())],
            notes: vec!["closed loop: no target rate".into()],
        }
    }

    #[test]
    fn linear_ticks_are_round_and_cover_the_max() {
        let (top, t) = linear_ticks(95.0, |v| format!("{v}"));
        assert_eq!(top, 100.0);
        assert_eq!(
            t.iter().map(|x| x.0).collect::<Vec<_>>(),
            [0.0, 20.0, 40.0, 60.0, 80.0, 100.0]
        );
        let (top, t) = linear_ticks(0.0, |v| format!("{v}"));
        assert_eq!((top, t.len()), (1.0, 6));
        let (top, t) = linear_ticks(5000.0, |v| format!("{v}"));
        assert!(top >= 5000.0 && t.len() <= 9, "{top} {t:?}");
    }

    #[test]
    fn log_ticks_cover_whole_decades() {
        let ((lo, hi), t) = log_ticks(150.0, 2_000_000.0, |v| format!("{v}"));
        assert_eq!((lo, hi), (100.0, 10_000_000.0));
        assert_eq!(t.first().unwrap().0, 100.0);
        assert_eq!(t.last().unwrap().0, 10_000_000.0);
        assert_eq!(t.len(), 6, "five decades: one tick each");
        let ((lo, hi), t) = log_ticks(300.0, 400.0, |v| format!("{v}"));
        assert_eq!((lo, hi), (100.0, 10_000.0), "at least two decades");
        assert_eq!(t.len(), 7, "few decades: 1, 2, 5 of each: {t:?}");
    }

    #[test]
    fn gaps_break_lines_and_text_is_escaped() {
        let l = Line {
            name: "a&b".into(),
            points: vec![
                (0.5, Some(10.0)),
                (1.5, Some(20.0)),
                (2.5, None),
                (3.5, Some(30.0)),
            ],
            style: Style::Dashed,
            color: 7,
        };
        let svg = plot(vec![l]).svg();
        assert_eq!(svg.matches("<polyline").count(), 1);
        assert_eq!(svg.matches("<circle").count(), 1, "the lone point");
        assert!(svg.contains("a&amp;b") && svg.contains("a &lt;b&gt;"));
        assert!(svg.contains("stroke-dasharray='6 4'"));
        assert!(svg.contains("round 2") && svg.contains("closed loop"));
        // every coordinate is on the canvas
        let width = LEFT + W + RIGHT;
        for cap in svg.split("points='").skip(1) {
            for xy in cap.split('\'').next().unwrap().split(' ') {
                let (x, y) = xy.split_once(',').unwrap();
                let (x, y): (f64, f64) = (x.parse().unwrap(), y.parse().unwrap());
                assert!((LEFT..=LEFT + W).contains(&x) && (TOP..=TOP + H).contains(&y));
                assert!(x < width);
            }
        }
    }

    #[test]
    fn each_target_gets_its_legend_row() {
        let line = |color| Line {
            name: String::new(),
            points: Vec::new(),
            style: Style::Solid,
            color,
        };
        let p = plot([0, 0, 0, 1, 2, 2, 2, 2, 2].map(line).to_vec());
        assert_eq!(
            p.legend_places(),
            [
                (0, 0),
                (1, 0),
                (2, 0),
                (0, 1),
                (0, 2),
                (1, 2),
                (2, 2),
                (3, 2),
                (0, 3)
            ]
        );
    }

    #[test]
    fn values_off_the_axis_are_clamped_to_its_ends() {
        let a = Axis {
            title: String::new(),
            range: (10.0, 1000.0),
            ticks: vec![],
            log: true,
        };
        assert_eq!(a.frac(100.0), 0.5);
        assert_eq!((a.frac(0.0), a.frac(1e9)), (0.0, 1.0));
    }
}
