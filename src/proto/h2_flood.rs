//! A meter of the control frames an HTTP/2 client sends (SETTINGS, PING, PRIORITY,
//! RST_STREAM), for the floods the h2 crate answers frame by frame without a limit of
//! its own: each such frame costs the server work (and, for SETTINGS and PING, an ACK)
//! while carrying no request. Sans-IO: fed the client's bytes as read, and the time.
//!
//! The budget is a token bucket: `burst` frames at once, refilled at `burst / 10` per
//! second, so a client keeps the right to a steady trickle (keep-alive PINGs, a
//! cancelled stream now and then) but not to a flood.

use std::time::Instant;

/// The client connection preface, which comes before the first frame.
const PREFACE_LEN: usize = 24;
const FRAME_HEADER_LEN: usize = 9;

const PRIORITY: u8 = 0x2;
const RST_STREAM: u8 = 0x3;
const SETTINGS: u8 = 0x4;
const PING: u8 = 0x6;
const ACK: u8 = 0x1;

/// What the meter made of the bytes so far.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Within the budget.
    Ok,
    /// Over the budget: the connection should get GOAWAY ENHANCE_YOUR_CALM.
    Flood(&'static str),
}

/// Counts a client's control frames against a budget.
#[derive(Debug)]
pub struct FloodMeter {
    /// Preface bytes still to skip.
    preface_left: usize,
    header: [u8; FRAME_HEADER_LEN],
    header_len: usize,
    payload_left: usize,
    burst: f64,
    tokens: f64,
    last: Option<Instant>,
    verdict: Verdict,
}

impl FloodMeter {
    /// A meter allowing bursts of `burst` control frames, refilled at `burst / 10` a
    /// second; it starts after the connection preface.
    pub fn new(burst: u32) -> FloodMeter {
        FloodMeter {
            preface_left: PREFACE_LEN,
            header: [0; FRAME_HEADER_LEN],
            header_len: 0,
            payload_left: 0,
            burst: burst as f64,
            tokens: burst as f64,
            last: None,
            verdict: Verdict::Ok,
        }
    }

    /// Feeds bytes the client sent, read at `now`. Once over the budget the verdict
    /// stays [`Verdict::Flood`].
    pub fn feed(&mut self, mut bytes: &[u8], now: Instant) -> Verdict {
        while !bytes.is_empty() && self.verdict == Verdict::Ok {
            if self.preface_left > 0 {
                let n = self.preface_left.min(bytes.len());
                self.preface_left -= n;
                bytes = &bytes[n..];
            } else if self.payload_left > 0 {
                let n = self.payload_left.min(bytes.len());
                self.payload_left -= n;
                bytes = &bytes[n..];
            } else {
                let n = (FRAME_HEADER_LEN - self.header_len).min(bytes.len());
                self.header[self.header_len..self.header_len + n].copy_from_slice(&bytes[..n]);
                self.header_len += n;
                bytes = &bytes[n..];
                if self.header_len == FRAME_HEADER_LEN {
                    self.header_len = 0;
                    let h = self.header;
                    self.payload_left =
                        (h[0] as usize) << 16 | (h[1] as usize) << 8 | h[2] as usize;
                    self.frame(h[3], h[4], now);
                }
            }
        }
        self.verdict
    }

    /// Accounts one frame of type `kind` with `flags`.
    fn frame(&mut self, kind: u8, flags: u8, now: Instant) {
        let name = match kind {
            SETTINGS if flags & ACK == 0 => "SETTINGS",
            PING if flags & ACK == 0 => "PING",
            PRIORITY => "PRIORITY",
            RST_STREAM => "RST_STREAM",
            _ => return,
        };
        if let Some(last) = self.last {
            let secs = now.saturating_duration_since(last).as_secs_f64();
            self.tokens = (self.tokens + secs * self.burst / 10.0).min(self.burst);
        }
        self.last = Some(now);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
        } else {
            self.verdict = Verdict::Flood(name);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

    fn frame(kind: u8, flags: u8, payload: &[u8]) -> Vec<u8> {
        let n = payload.len();
        let mut f = vec![
            (n >> 16) as u8,
            (n >> 8) as u8,
            n as u8,
            kind,
            flags,
            0,
            0,
            0,
            0,
        ];
        f.extend_from_slice(payload);
        f
    }

    #[test]
    fn a_burst_within_the_budget_passes_and_one_more_is_a_flood() {
        let mut m = FloodMeter::new(10);
        let t = Instant::now();
        assert_eq!(m.feed(PREFACE, t), Verdict::Ok);
        let ping = frame(PING, 0, &[0; 8]);
        for _ in 0..10 {
            assert_eq!(m.feed(&ping, t), Verdict::Ok);
        }
        assert_eq!(m.feed(&ping, t), Verdict::Flood("PING"));
        // and it stays so
        assert_eq!(m.feed(&frame(0, 0, b"x"), t), Verdict::Flood("PING"));
    }

    #[test]
    fn the_budget_refills_over_time() {
        let mut m = FloodMeter::new(10);
        let t = Instant::now();
        m.feed(PREFACE, t);
        let s = frame(SETTINGS, 0, &[0, 1, 0, 0, 16, 0]);
        for i in 0..100u64 {
            // one a second: a tenth of the burst refills per second
            let at = t + Duration::from_secs(i);
            assert_eq!(m.feed(&s, at), Verdict::Ok, "frame {i}");
        }
    }

    #[test]
    fn acks_data_and_headers_are_free_and_frames_split_anywhere_are_parsed() {
        let mut m = FloodMeter::new(2);
        let t = Instant::now();
        let mut wire = PREFACE.to_vec();
        for _ in 0..50 {
            wire.extend(frame(SETTINGS, ACK, &[]));
            wire.extend(frame(PING, ACK, &[7; 8]));
            // a payload that looks like frame headers must not be read as frames
            wire.extend(frame(0, 0, &frame(PING, 0, &[0; 8])));
            wire.extend(frame(1, 4, &[0x82, 0x86, 0x84]));
        }
        wire.extend(frame(RST_STREAM, 0, &[0, 0, 0, 8]));
        wire.extend(frame(PRIORITY, 0, &[0, 0, 0, 0, 15]));
        for piece in wire.chunks(5) {
            assert_eq!(m.feed(piece, t), Verdict::Ok);
        }
        assert_eq!(
            m.feed(&frame(RST_STREAM, 0, &[0, 0, 0, 8]), t),
            Verdict::Flood("RST_STREAM")
        );
    }
}
