//! `luring flows show`: one line per flow, in the spirit of mitmdump's output.
//!
//! ```text
//! 14:02:11.304 127.0.0.1:51234 GET https://a.test/x << 200 OK 0b/1.2k 35ms
//! 14:02:11.350 127.0.0.1:51236 GET https://a.test/ws << 101 Switching Protocols 0b/0b 2040ms ws 12 msgs
//! 14:02:12.001 127.0.0.1:51240 TUNNEL tls-passthrough b.test:443 1.2k/34.0k 1200ms
//! # 12 flows dropped by the recorder
//! ```

use super::describe::{self, FlowRef};
use super::record::{HttpFlow, TunnelFlow};
use super::scan::{self, Item, ScanError};
use std::io::Write;
use std::path::Path;

/// Prints every selected flow of `path` to `out`, one line each.
pub fn run(path: &Path, filter: Option<&str>, out: &mut dyn Write) -> Result<(), ScanError> {
    let filter = scan::parse_filter(filter)?;
    let r = scan::scan(path, filter.as_ref(), |item| match item {
        Item::Meta(_) => Ok(()),
        Item::Flow(f) => writeln!(out, "{}", line(f)),
        Item::Drops(d) => writeln!(out, "# {} flows dropped by the recorder", d.dropped),
    });
    // The flows before a damaged record are printed before its error is.
    out.flush()?;
    r
}

/// The line for one flow.
pub fn line(f: FlowRef<'_>) -> String {
    match f {
        FlowRef::Http(h) => http_line(h),
        FlowRef::Tunnel(t) => tunnel_line(t),
    }
}

fn duration(start: u64, end: u64) -> String {
    describe::duration_ms(start, end).map_or("-".into(), |ms| format!("{ms}ms"))
}

fn http_line(h: &HttpFlow) -> String {
    let req = &h.request;
    let mut s = format!(
        "{} {} {} {} << ",
        describe::local_hms(h.times.request_start),
        or_dash(&h.client),
        req.method,
        describe::url(req)
    );
    match &h.response {
        Some(r) if r.reason.is_empty() => s.push_str(&r.status.to_string()),
        Some(r) => s.push_str(&format!("{} {}", r.status, r.reason)),
        None => s.push('-'),
    }
    let resp_size = h.response.as_ref().map_or(0, |r| r.body.size);
    s.push_str(&format!(
        " {}/{} {}",
        describe::human_size(req.body.size),
        describe::human_size(resp_size),
        duration(h.times.request_start, h.times.end)
    ));
    if describe::is_websocket(h) {
        let n = h.websocket.len() as u64 + h.websocket_dropped;
        s.push_str(&format!(" ws {n} msgs"));
    }
    if h.response.as_ref().is_some_and(|r| r.by_proxy) {
        s.push_str(" (answered by luring)");
    }
    if let Some(e) = &h.error {
        s.push_str(&format!(" error: {e}"));
    }
    s
}

fn tunnel_line(t: &TunnelFlow) -> String {
    let mut s = format!(
        "{} {} TUNNEL {} {} {}/{} {}",
        describe::local_hms(t.start),
        or_dash(&t.client),
        or_dash(&t.kind),
        or_dash(&t.target),
        describe::human_size(t.bytes_up),
        describe::human_size(t.bytes_down),
        duration(t.start, t.end)
    );
    if let Some(e) = &t.error {
        s.push_str(&format!(" error: {e}"));
    }
    s
}

fn or_dash(s: &str) -> &str {
    if s.is_empty() {
        "-"
    } else {
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::flows::record::*;

    fn strip_time(l: &str) -> &str {
        l.split_once(' ').unwrap().1
    }

    #[test]
    fn http_lines() {
        let mut h = HttpFlow {
            client: "127.0.0.1:5000".into(),
            request: RequestRec {
                method: "POST".into(),
                scheme: "http".into(),
                authority: "a.test:8080".into(),
                path: "/up".into(),
                version: "HTTP/1.1".into(),
                body: BodyRec {
                    size: 2048,
                    ..Default::default()
                },
                ..Default::default()
            },
            response: Some(ResponseRec {
                status: 201,
                reason: "Created".into(),
                body: BodyRec {
                    size: 10,
                    ..Default::default()
                },
                ..Default::default()
            }),
            times: Times {
                request_start: 1_000_000_000,
                end: 1_035_000_000,
                ..Default::default()
            },
            ..Default::default()
        };
        let l = line(FlowRef::Http(&h));
        assert_eq!(
            strip_time(&l),
            "127.0.0.1:5000 POST http://a.test:8080/up << 201 Created 2.0k/10b 35ms"
        );
        h.response = None;
        h.error = Some("connection refused".into());
        h.times.end = 0;
        assert!(
            line(FlowRef::Http(&h)).ends_with("<< - 2.0k/0b - error: connection refused"),
            "{}",
            line(FlowRef::Http(&h))
        );
    }

    #[test]
    fn websocket_and_tunnel_lines() {
        let h = HttpFlow {
            response: Some(ResponseRec {
                status: 101,
                ..Default::default()
            }),
            websocket: vec![WsMessageRec::default(); 3],
            websocket_dropped: 2,
            ..Default::default()
        };
        assert!(line(FlowRef::Http(&h)).ends_with(" ws 5 msgs"));
        let t = TunnelFlow {
            client: "127.0.0.1:9".into(),
            kind: "connect".into(),
            target: "b.test:443".into(),
            start: 2_000_000_000,
            end: 3_200_000_000,
            bytes_up: 1500,
            bytes_down: 34 * 1024,
            ..Default::default()
        };
        assert_eq!(
            strip_time(&line(FlowRef::Tunnel(&t))),
            "127.0.0.1:9 TUNNEL connect b.test:443 1.5k/34.0k 1200ms"
        );
    }
}
