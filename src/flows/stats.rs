//! `luring flows stats`: counts by host, method, status and protocol, and size and
//! duration percentiles, in bounded memory whatever the file's size: histograms are
//! fixed-size and the count tables stop taking new keys at a cap.

use super::describe::{self, FlowRef};
use super::hist::Histogram;
use super::scan::{self, Item, ScanError};
use std::collections::{BTreeMap, HashMap};
use std::io::{self, Write};
use std::path::Path;

/// Hosts listed by name; the rest are summed as "others".
const TOP_HOSTS: usize = 20;
/// Distinct keys a count table keeps; later new keys are counted as "others", so a
/// file of a million hosts cannot grow memory without bound.
const MAX_KEYS: usize = 10_000;

/// Counts with a cap on distinct keys.
#[derive(Default)]
struct Counts {
    by_key: HashMap<String, u64>,
    /// Counted under keys past the cap.
    overflow: u64,
}

impl Counts {
    fn add(&mut self, key: &str) {
        if let Some(n) = self.by_key.get_mut(key) {
            *n += 1;
        } else if self.by_key.len() < MAX_KEYS {
            self.by_key.insert(key.to_string(), 1);
        } else {
            self.overflow += 1;
        }
    }

    /// The `top` largest counts (ties by name), then the others' total and how many
    /// keys made it.
    fn top(&self, top: usize) -> (Vec<(&str, u64)>, u64, usize) {
        let mut v: Vec<(&str, u64)> = self.by_key.iter().map(|(k, n)| (k.as_str(), *n)).collect();
        v.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(b.0)));
        let rest = v.split_off(v.len().min(top));
        let others = rest.iter().map(|(_, n)| n).sum::<u64>() + self.overflow;
        (v, others, rest.len())
    }
}

/// Everything `stats` counts.
#[derive(Default)]
pub struct Stats {
    http: u64,
    tunnels: u64,
    dropped: u64,
    hosts: Counts,
    methods: Counts,
    statuses: BTreeMap<u16, u64>,
    classes: BTreeMap<&'static str, u64>,
    protocols: BTreeMap<&'static str, u64>,
    req_size: Histogram,
    resp_size: Histogram,
    duration_us: Histogram,
}

impl Stats {
    /// Counts one flow.
    pub fn add(&mut self, f: FlowRef<'_>) {
        *self.protocols.entry(describe::protocol(f)).or_default() += 1;
        match f {
            FlowRef::Http(h) => {
                self.http += 1;
                self.hosts.add(&describe::pretty_host(&h.request));
                self.methods.add(&h.request.method);
                self.req_size.record(h.request.body.size);
                let class = match &h.response {
                    Some(r) => {
                        *self.statuses.entry(r.status).or_default() += 1;
                        self.resp_size.record(r.body.size);
                        ["1xx", "2xx", "3xx", "4xx", "5xx"]
                            .get((r.status / 100).wrapping_sub(1) as usize)
                            .copied()
                            .unwrap_or("other")
                    }
                    None if h.error.is_some() => "error, no response",
                    None => "no response",
                };
                *self.classes.entry(class).or_default() += 1;
                if let Some(ms) = us(h.times.request_start, h.times.end) {
                    self.duration_us.record(ms);
                }
            }
            FlowRef::Tunnel(t) => {
                self.tunnels += 1;
                self.hosts.add(describe::split_authority(&t.target).0);
                if let Some(ms) = us(t.start, t.end) {
                    self.duration_us.record(ms);
                }
            }
        }
    }

    /// Writes the tables.
    pub fn write(&self, out: &mut dyn Write) -> io::Result<()> {
        writeln!(
            out,
            "flows: {} ({} http, {} tunnels); dropped by the recorder: {}",
            self.http + self.tunnels,
            self.http,
            self.tunnels,
            self.dropped
        )?;
        let (top, others, n_others) = self.hosts.top(TOP_HOSTS);
        let mut rows: Vec<(String, u64)> = top.iter().map(|(k, n)| (k.to_string(), *n)).collect();
        if others > 0 {
            let hosts = if self.hosts.overflow > 0 {
                "more hosts".to_string()
            } else {
                format!("{n_others} hosts")
            };
            rows.push((format!("others ({hosts})"), others));
        }
        table(out, "host", &rows)?;
        let (methods, m_others, _) = self.methods.top(usize::MAX);
        let mut rows: Vec<(String, u64)> =
            methods.iter().map(|(k, n)| (k.to_string(), *n)).collect();
        if m_others > 0 {
            rows.push(("others".into(), m_others));
        }
        table(out, "method", &rows)?;
        let rows: Vec<(String, u64)> = self
            .statuses
            .iter()
            .map(|(s, n)| (s.to_string(), *n))
            .chain(self.classes.iter().map(|(c, n)| (c.to_string(), *n)))
            .collect();
        table(out, "status", &rows)?;
        let rows: Vec<(String, u64)> = self
            .protocols
            .iter()
            .map(|(p, n)| (p.to_string(), *n))
            .collect();
        table(out, "protocol", &rows)?;
        self.percentiles(out)
    }

    fn percentiles(&self, out: &mut dyn Write) -> io::Result<()> {
        writeln!(out)?;
        writeln!(
            out,
            "{:<16} {:>8} {:>10} {:>10} {:>10} {:>10}",
            "", "count", "p50", "p90", "p99", "max"
        )?;
        let size = |v: u64| describe::human_size(v);
        let ms = |v: u64| format!("{:.1}ms", v as f64 / 1000.0);
        let rows: [(&str, &Histogram, &Fmt); 3] = [
            ("request body", &self.req_size, &size),
            ("response body", &self.resp_size, &size),
            ("duration", &self.duration_us, &ms),
        ];
        for (name, h, fmt) in rows {
            writeln!(
                out,
                "{name:<16} {:>8} {:>10} {:>10} {:>10} {:>10}",
                h.count(),
                fmt(h.percentile(50.0)),
                fmt(h.percentile(90.0)),
                fmt(h.percentile(99.0)),
                fmt(h.max())
            )?;
        }
        Ok(())
    }
}

/// How a percentile column prints its values.
type Fmt = dyn Fn(u64) -> String;

/// Microseconds between two Unix-nanosecond times; None when either is missing.
fn us(start: u64, end: u64) -> Option<u64> {
    (start != 0 && end >= start).then(|| (end - start) / 1000)
}

/// A titled two-column table with counts right-aligned.
fn table(out: &mut dyn Write, title: &str, rows: &[(String, u64)]) -> io::Result<()> {
    let width = rows
        .iter()
        .map(|(k, _)| k.chars().count())
        .chain([title.len()])
        .max()
        .unwrap_or(0);
    writeln!(out)?;
    writeln!(out, "{title:<width$} {:>10}", "flows")?;
    for (k, n) in rows {
        writeln!(out, "{k:<width$} {n:>10}")?;
    }
    Ok(())
}

/// Prints the statistics of the selected flows of `path`. A damaged file gets the
/// statistics of the flows before the damage, then the error.
pub fn run(path: &Path, filter: Option<&str>, out: &mut dyn Write) -> Result<(), ScanError> {
    let filter = scan::parse_filter(filter)?;
    let mut st = Stats::default();
    let r = scan::scan(path, filter.as_ref(), |item| {
        match item {
            Item::Meta(_) => {}
            Item::Flow(f) => st.add(f),
            Item::Drops(d) => st.dropped += d.dropped,
        }
        Ok(())
    });
    if matches!(r, Err(ScanError::Filter(_))) {
        return r;
    }
    st.write(out)?;
    out.flush()?;
    r
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::flows::record::*;

    fn flow(host: &str, method: &str, status: Option<u16>, size: u64) -> HttpFlow {
        HttpFlow {
            request: RequestRec {
                method: method.into(),
                scheme: "http".into(),
                authority: host.into(),
                version: "HTTP/1.1".into(),
                ..Default::default()
            },
            response: status.map(|s| ResponseRec {
                status: s,
                body: BodyRec {
                    size,
                    ..Default::default()
                },
                ..Default::default()
            }),
            times: Times {
                request_start: 1_000_000,
                end: 1_000_000 + size * 1_000_000,
                ..Default::default()
            },
            ..Default::default()
        }
    }

    fn text(st: &Stats) -> String {
        let mut v = Vec::new();
        st.write(&mut v).unwrap();
        String::from_utf8(v).unwrap()
    }

    #[test]
    fn tables_and_percentiles() {
        let mut st = Stats::default();
        for i in 1..=100u64 {
            let f = flow("a.test", "GET", Some(200), i);
            st.add(FlowRef::Http(&f));
        }
        st.add(FlowRef::Http(&flow("b.test", "POST", Some(503), 0)));
        st.add(FlowRef::Http(&flow("b.test", "POST", None, 0)));
        let t = TunnelFlow {
            target: "c.test:443".into(),
            ..Default::default()
        };
        st.add(FlowRef::Tunnel(&t));
        let s = text(&st);
        assert!(s.starts_with("flows: 103 (102 http, 1 tunnels)"), "{s}");
        for want in [
            "a.test        100",
            "b.test          2",
            "GET        100",
            "POST         2",
            "503          1",
            "2xx        100",
            "no response          1",
            "tunnel          1",
            "HTTP/1.1        102",
        ] {
            let squeezed: String = s.split_whitespace().collect::<Vec<_>>().join(" ");
            let w: String = want.split_whitespace().collect::<Vec<_>>().join(" ");
            assert!(squeezed.contains(&w), "{want:?} missing in\n{s}");
        }
        let dur = s.lines().find(|l| l.starts_with("duration")).unwrap();
        let cols: Vec<&str> = dur.split_whitespace().collect();
        assert_eq!(cols[1], "102", "{dur}"); // the two b.test flows last 0ms
        assert_eq!(cols[5], "100.0ms", "{dur}");
    }

    #[test]
    fn host_table_is_capped() {
        let mut st = Stats::default();
        for i in 0..30 {
            for _ in 0..=i {
                st.add(FlowRef::Http(&flow(
                    &format!("h{i:02}.test"),
                    "GET",
                    None,
                    0,
                )));
            }
        }
        let s = text(&st);
        assert!(s.contains("h29.test"), "{s}");
        assert!(s.contains("h10.test"), "{s}");
        assert!(!s.contains("h09.test"), "{s}");
        // h00..h09 have 1..=10 flows: 55 in others.
        let squeezed: String = s.split_whitespace().collect::<Vec<_>>().join(" ");
        assert!(squeezed.contains("others (10 hosts) 55"), "{s}");
    }

    #[test]
    fn key_cap_bounds_memory() {
        let mut c = Counts::default();
        for i in 0..MAX_KEYS + 5 {
            c.add(&i.to_string());
        }
        c.add("0");
        assert_eq!(c.by_key.len(), MAX_KEYS);
        assert_eq!(c.overflow, 5);
        assert_eq!(c.by_key["0"], 2);
    }
}
