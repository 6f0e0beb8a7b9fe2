//! Fuzz targets: one function per parser that reads untrusted bytes, shared by the
//! cargo-fuzz binaries in `fuzz/` and the property tests in `tests/fuzz_props.rs`, so
//! both exercise identical code. Each takes arbitrary bytes, must never panic, and
//! asserts the parser's invariants: the same result however the input is split,
//! consumed <= input, and parse -> serialize -> parse round trips where the module
//! serializes. The first input byte usually steers (where to split, which limit).

use bytes::{Bytes, BytesMut};
use std::io::Read;

use crate::flows::file::{self, FlowReader, FlowWriter, ReadError, FILE_HEADER_LEN, MAGIC};
use crate::flows::record::Record;
use crate::http::{Headers, ResponseHead};
use crate::proto::http1::{
    encode_chunk, encode_last_chunk, encode_request_head, encode_response_head, parse_request_head,
    parse_response_head, parse_response_wire, plain_request_agrees, plain_response_agrees,
    plain_scan_agrees, request_body_kind, response_body_kind, BodyDecoder, BodyError, BodyKind,
    HeadError, Limits, ParsedResponse,
};
use crate::proto::{client_hello, grpc, protobuf, socks5, sse, ws};

/// What an independent request-smuggling classifier says of a request head:
/// `Err(why)` when it rates the head unsafe.
pub type Classifier<'a> = &'a dyn Fn(&[u8], Side) -> Result<(), String>;

/// Which head a [`Classifier`] is shown.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Side {
    /// The bytes the client sent, as luring accepted them.
    Received,
    /// The head luring sends upstream.
    Forwarded,
}

/// Cut points for `len` bytes: `seed` picks a piece length, so every run explores
/// another split; pieces are 1..=16 bytes, then the rest.
fn pieces(seed: u8, len: usize) -> Vec<usize> {
    let step = usize::from(seed % 16) + 1;
    let mut out = Vec::new();
    let mut at = 0;
    while at < len {
        let n = step.min(len - at);
        out.push(n);
        at += n;
    }
    out
}

/// A few prefix lengths of `n` bytes worth checking: seed-derived, plus the edges.
fn prefixes(seed: u8, n: usize) -> Vec<usize> {
    let mut v = vec![0, n.saturating_sub(1), usize::from(seed).min(n), n / 2];
    v.sort_unstable();
    v.dedup();
    v
}

// ----- HTTP/1 heads ---------------------------------------------------------------

const HEAD_LIMITS: Limits = Limits {
    max_head_size: 4096,
    max_headers: 32,
};

/// The request head parser, framing rules and body decoder on arbitrary bytes, and a
/// differential check: every head luring accepts with a framing must be rated safe
/// by `classify` (an independent request-smuggling classifier), as received and as
/// luring re-encodes it to forward it.
pub fn http1_request(input: &[u8], classify: Classifier<'_>) {
    let Some((&seed, data)) = input.split_first() else {
        return;
    };
    let whole = parse_request_head(data, &HEAD_LIMITS);
    plain_request_agrees(data, &HEAD_LIMITS);
    // A prefix of the bytes says "need more" or fails the same way: no split makes a
    // head parse differently.
    match &whole {
        Ok(Some((_, n))) => {
            for k in prefixes(seed, *n) {
                let p = parse_request_head(&data[..k], &HEAD_LIMITS);
                assert_eq!(p, if k < *n { Ok(None) } else { whole.clone() });
            }
        }
        Ok(None) => assert!(data.len() < HEAD_LIMITS.max_head_size),
        Err(_) => {
            for k in prefixes(seed, data.len()) {
                let p = parse_request_head(&data[..k], &HEAD_LIMITS);
                assert!(
                    p == Ok(None) || p == whole,
                    "prefix {k}: {p:?} vs {whole:?}"
                );
            }
        }
    }
    let Ok(Some((head, n))) = whole else {
        return;
    };
    assert!(n <= data.len());
    let Ok(kind) = request_body_kind(&head) else {
        return;
    };
    if let Err(why) = classify(&data[..n], Side::Received) {
        panic!(
            "luring accepts a head ({kind:?}) the classifier rates unsafe: {why}\n{:?}",
            String::from_utf8_lossy(&data[..n])
        );
    }
    // Re-encoded, it parses to the same head and the same framing.
    let mut wire = BytesMut::new();
    encode_request_head(&head, &mut wire);
    let big = Limits {
        max_head_size: wire.len() + 1,
        max_headers: HEAD_LIMITS.max_headers,
    };
    let (again, m) = parse_request_head(&wire, &big)
        .expect("the re-encoded head parses")
        .expect("the re-encoded head is complete");
    assert_eq!(m, wire.len());
    assert_eq!(again, head);
    assert_eq!(request_body_kind(&again), Ok(kind));
    // The head as the proxy sends it upstream (route, then framing fields made true)
    // must be safe too, and framed as received.
    let intercept = crate::proxy::exchange::route::Intercept::new("https", "example.com");
    let route = crate::proxy::exchange::route::h1_request(
        head.clone(),
        &crate::config::Mode::Regular,
        Some(&intercept),
    );
    if let Ok(mut req) = route {
        let up = crate::proxy::h1_wire::upstream_request_head(&mut req, kind);
        if let Err(why) = classify(&up, Side::Forwarded) {
            panic!(
                "luring forwards a head ({kind:?}) the classifier rates unsafe: {why}\n{:?}",
                String::from_utf8_lossy(&up)
            );
        }
        let big = Limits {
            max_head_size: up.len() + 1,
            max_headers: HEAD_LIMITS.max_headers + 4,
        };
        let (sent, _) = parse_request_head(&up, &big)
            .expect("the forwarded head parses")
            .expect("the forwarded head is complete");
        assert_eq!(
            request_body_kind(&sent),
            Ok(kind),
            "framing changed on the way"
        );
    }
    body_splits(kind, seed, &data[n..]);
}

/// The parse that keeps a final head as bytes agrees with the field-list parse: the
/// same outcome, the same fields when parsed again, the same framing.
fn wire_agrees(
    method: &[u8],
    data: &[u8],
    whole: &Result<Option<(ResponseHead, usize)>, HeadError>,
) {
    let wire = parse_response_wire(data, &HEAD_LIMITS);
    match (whole, wire) {
        (Ok(Some((head, n))), Ok(Some((parsed, m)))) => {
            assert_eq!(*n, m);
            if let ParsedResponse::Wire(w) = &parsed {
                let kind = response_body_kind(method, head);
                assert_eq!(w.kind(method), kind);
                if let Ok(k) = kind {
                    let keeps = crate::proxy::exchange::rules::upstream_keeps_alive(
                        head.version,
                        &head.headers,
                        k,
                    );
                    assert_eq!(w.keeps_alive(k), keeps);
                }
            }
            assert_eq!(parsed.into_head().as_ref(), Ok(head));
        }
        (Ok(None), Ok(None)) => {}
        (Err(a), Err(b)) => assert_eq!(*a, b),
        (a, b) => panic!("field list {a:?}, bytes {b:?}"),
    }
}

/// The response head parser and framing rules; the method (GET, HEAD, CONNECT) comes
/// from the second byte.
pub fn http1_response(input: &[u8]) {
    let Some((&[seed, m], data)) = input.split_first_chunk::<2>() else {
        return;
    };
    let method: &[u8] = match m % 4 {
        0 => b"HEAD",
        1 => b"CONNECT",
        _ => b"GET",
    };
    let whole = parse_response_head(data, &HEAD_LIMITS);
    plain_scan_agrees(data, &HEAD_LIMITS);
    plain_response_agrees(data, &HEAD_LIMITS);
    wire_agrees(method, data, &whole);
    match &whole {
        Ok(Some((_, n))) => {
            for k in prefixes(seed, *n) {
                let p = parse_response_head(&data[..k], &HEAD_LIMITS);
                assert_eq!(p, if k < *n { Ok(None) } else { whole.clone() });
            }
        }
        Ok(None) => assert!(data.len() < HEAD_LIMITS.max_head_size),
        Err(_) => {
            for k in prefixes(seed, data.len()) {
                let p = parse_response_head(&data[..k], &HEAD_LIMITS);
                assert!(
                    p == Ok(None) || p == whole,
                    "prefix {k}: {p:?} vs {whole:?}"
                );
            }
        }
    }
    let Ok(Some((head, n))) = whole else {
        return;
    };
    let Ok(kind) = response_body_kind(method, &head) else {
        return;
    };
    let mut wire = BytesMut::new();
    encode_response_head(&head, &mut wire);
    let big = Limits {
        max_head_size: wire.len() + 1,
        max_headers: HEAD_LIMITS.max_headers,
    };
    let (again, m) = parse_response_head(&wire, &big)
        .expect("the re-encoded head parses")
        .expect("the re-encoded head is complete");
    assert_eq!(m, wire.len());
    assert_eq!(again.status, head.status.min(999));
    assert_eq!(again.headers, head.headers);
    assert_eq!(response_body_kind(method, &again), Ok(kind));
    body_splits(kind, seed, &data[n..]);
}

/// What a scan or decode of a body made of it: bytes of framing used (or the error),
/// whether the body ended, the payload.
type BodyRun = (Result<usize, BodyError>, bool, Vec<u8>);

/// Scans `body` fed in `cuts` pieces (a relay forwarding verbatim).
fn scan_body(kind: BodyKind, body: &[u8], cuts: &[usize]) -> (Result<usize, BodyError>, bool) {
    let mut d = BodyDecoder::new(kind);
    let mut pending: Vec<u8> = Vec::new();
    let mut used = 0usize;
    let mut at = 0;
    for &len in cuts {
        pending.extend_from_slice(&body[at..at + len]);
        at += len;
        match d.scan(&pending) {
            Ok(_) if d.fault().is_some() => break,
            Ok(s) => {
                assert!(s.consumed <= pending.len());
                assert!(s.done || s.consumed == pending.len(), "held back bytes");
                used += s.consumed;
                pending.drain(..s.consumed);
                if s.done {
                    break;
                }
            }
            Err(e) => return (Err(e), d.is_done()),
        }
    }
    // A scan that stopped at a fault reports it on the next call.
    if let Some(why) = d.fault() {
        return (Err(BodyError::BadChunk(why)), false);
    }
    (Ok(used), d.is_done())
}

/// Decodes `body` fed in `cuts` pieces (a plugin reading the payload).
fn decode_body(kind: BodyKind, body: &[u8], cuts: &[usize]) -> (BodyRun, Option<Headers>) {
    let mut d = BodyDecoder::new(kind);
    let mut buf = BytesMut::new();
    let mut used = 0usize;
    let mut payload = Vec::new();
    let mut trailers = None;
    let mut at = 0;
    for &len in cuts {
        buf.extend_from_slice(&body[at..at + len]);
        at += len;
        let before = buf.len();
        match d.decode(&mut buf) {
            Ok(_) if d.fault().is_some() => break,
            Ok(out) => {
                used += before - buf.len();
                for p in &out.data {
                    payload.extend_from_slice(p);
                }
                if out.trailers.is_some() {
                    assert!(trailers.is_none(), "trailers handed out twice");
                    trailers = out.trailers;
                }
                if out.done {
                    break;
                }
            }
            // how much payload came before a fault depends on the split
            Err(e) => return ((Err(e), d.is_done(), Vec::new()), trailers),
        }
    }
    if let Some(why) = d.fault() {
        return ((Err(BodyError::BadChunk(why)), false, Vec::new()), trailers);
    }
    ((Ok(used), d.is_done(), payload), trailers)
}

/// Checks a body decoder on `body`: whole, in seed-sized pieces and byte by byte,
/// scanning and decoding must agree on where the body ends and what it holds.
fn body_splits(kind: BodyKind, seed: u8, body: &[u8]) -> Option<(Vec<u8>, Option<Headers>)> {
    let whole = [body.len()];
    let cut = pieces(seed, body.len());
    let ones = vec![1; body.len()];
    let (reference, trailers) = decode_body(kind, body, &whole);
    for cuts in [&whole[..], &cut, &ones] {
        let (scan, done) = scan_body(kind, body, cuts);
        assert_eq!(scan, reference.0, "scan and decode disagree");
        assert_eq!(done, reference.1);
        let (dec, t) = decode_body(kind, body, cuts);
        assert_eq!(dec, reference, "decode differs with the split");
        assert_eq!(t, trailers);
    }
    let (used, done, payload) = reference;
    if let Ok(used) = used {
        assert!(used <= body.len());
        assert!(payload.len() <= used, "more payload than framed bytes");
        match kind {
            BodyKind::Length(n) => {
                assert_eq!(payload.len() as u64, n.min(body.len() as u64));
                assert_eq!(done, n <= body.len() as u64);
            }
            BodyKind::CloseDelimited => assert_eq!(payload, body),
            BodyKind::Empty => assert!(payload.is_empty() && used == 0 && done),
            BodyKind::Chunked => {}
        }
    }
    if !done && kind != BodyKind::CloseDelimited {
        let mut d = BodyDecoder::new(kind);
        let _ = d.scan(body);
        assert!(d.eof().is_err(), "an unfinished body must not end cleanly");
    }
    done.then_some((payload, trailers))
}

/// The chunked decoder on arbitrary bytes: split-independence, scan = decode, and a
/// finished body re-encoded with `encode_chunk` decodes to the same payload and
/// trailers.
pub fn chunked(input: &[u8]) {
    let Some((&seed, body)) = input.split_first() else {
        return;
    };
    let Some((payload, trailers)) = body_splits(BodyKind::Chunked, seed, body) else {
        return;
    };
    let mut wire = BytesMut::new();
    for piece in payload.chunks(usize::from(seed) + 1) {
        encode_chunk(piece, &mut wire);
    }
    encode_last_chunk(trailers.as_ref(), &mut wire);
    let (again, t) = decode_body(BodyKind::Chunked, &wire, &[wire.len()]);
    assert_eq!(again, (Ok(wire.len()), true, payload));
    assert_eq!(t, trailers);
}

// ----- SOCKS5 ---------------------------------------------------------------------

/// A parser's answer on every prefix agrees with its answer on the whole: "need
/// more" before the message ends, the same message from its end on.
fn prefix_consistent<T: PartialEq + std::fmt::Debug, E: PartialEq + std::fmt::Debug>(
    data: &[u8],
    parse: impl Fn(&[u8]) -> Result<socks5::Parsed<T>, E>,
) -> Option<usize> {
    let whole = parse(data);
    for k in 0..data.len().min(300) {
        let p = parse(&data[..k]);
        match &whole {
            Ok(socks5::Parsed::Done(_, n)) if k >= *n => assert_eq!(p, whole),
            Ok(_) => assert_eq!(p, Ok(socks5::Parsed::Incomplete), "prefix {k}"),
            Err(_) => assert!(
                p == Ok(socks5::Parsed::Incomplete) || p == whole,
                "prefix {k}: {p:?} vs {whole:?}"
            ),
        }
    }
    match whole {
        Ok(socks5::Parsed::Done(_, n)) => {
            assert!(n <= data.len());
            Some(n)
        }
        _ => None,
    }
}

/// The SOCKS5 handshake as a server reads it: greeting, then (by the first byte)
/// credentials, then the request, each parser checked on every prefix.
pub fn socks5(input: &[u8]) {
    let Some((&mode, data)) = input.split_first() else {
        return;
    };
    let Some(n) = prefix_consistent(data, socks5::parse_greeting) else {
        return;
    };
    let mut rest = &data[n..];
    if mode & 1 == 1 {
        let Some(n) = prefix_consistent(rest, socks5::parse_credentials) else {
            return;
        };
        rest = &rest[n..];
    }
    if let Some(n) = prefix_consistent(rest, socks5::parse_request) {
        if let Ok(socks5::Parsed::Done(r, _)) = socks5::parse_request(rest) {
            let _ = (r.target(), r.host_text());
        }
        assert!(n <= rest.len());
    }
}

// ----- WebSocket ------------------------------------------------------------------

/// Frames taken off `data` fed in `cuts` pieces, and the error that stopped them.
fn ws_frames(max: u64, data: &[u8], cuts: &[usize]) -> (Vec<ws::Frame>, Option<ws::WsError>) {
    let dec = ws::FrameDecoder::new(max);
    let mut buf = BytesMut::new();
    let mut frames = Vec::new();
    let mut at = 0;
    for &len in cuts {
        buf.extend_from_slice(&data[at..at + len]);
        at += len;
        loop {
            let before = buf.len();
            match dec.decode(&mut buf) {
                Ok(Some(f)) => {
                    assert!(f.payload.len() as u64 <= max);
                    assert!(buf.len() < before, "a frame took no bytes");
                    frames.push(f);
                }
                Ok(None) => {
                    assert_eq!(buf.len(), before, "need-more consumed bytes");
                    break;
                }
                Err(e) => return (frames, Some(e)),
            }
        }
    }
    (frames, None)
}

/// WebSocket frames: the same frames however the bytes arrive, every frame encodes
/// to bytes that decode to it again, and the assembler never grows a message past
/// its limit.
pub fn ws(input: &[u8]) {
    let Some((&[seed, lim], data)) = input.split_first_chunk::<2>() else {
        return;
    };
    // Small limits make the size checks fire; the largest is the proxy's sort of limit.
    let max: u64 = match lim % 4 {
        0 => u64::from(lim),
        1 => 1 << 16,
        2 => 16 << 20,
        _ => u64::MAX >> 1,
    };
    let whole = ws_frames(max, data, &[data.len()]);
    assert_eq!(ws_frames(max, data, &pieces(seed, data.len())), whole);
    assert_eq!(ws_frames(max, data, &vec![1; data.len()]), whole);
    let mut asm = ws::Assembler::new(usize::try_from(max).unwrap_or(usize::MAX));
    for f in &whole.0 {
        let mut wire = BytesMut::new();
        ws::encode(f, &mut wire);
        let wire_len = wire.len();
        let again = ws::FrameDecoder::new(max).decode(&mut wire);
        assert_eq!(again, Ok(Some(f.clone())));
        assert!(wire.is_empty(), "{wire_len} encoded bytes not all decoded");
        match asm.push(f.clone()) {
            Ok(Some(m)) => {
                assert!(m.payload.len() as u64 <= max);
                if f.opcode == ws::CLOSE {
                    let _ = ws::parse_close(&m.payload);
                }
            }
            Ok(None) => {}
            Err(_) => break,
        }
    }
}

// ----- SSE ------------------------------------------------------------------------

/// The blocks of `data` fed in `cuts` pieces, and what was left at the end.
fn sse_blocks(data: &[u8], cuts: &[usize]) -> (Vec<sse::Block>, Bytes) {
    let mut p = sse::Parser::new();
    let mut out = Vec::new();
    let mut at = 0;
    for &len in cuts {
        out.extend(p.feed(&data[at..at + len]));
        at += len;
        assert!(p.pending() <= at);
    }
    let rest = p.finish();
    (out, rest)
}

/// Server-sent events: no byte lost or added (the blocks and the rest are the input),
/// the same blocks however the body arrives, and a re-serialized event parses back to
/// the same event.
pub fn sse(input: &[u8]) {
    let Some((&seed, data)) = input.split_first() else {
        return;
    };
    let whole = sse_blocks(data, &[data.len()]);
    let mut joined: Vec<u8> = whole.0.iter().flat_map(|b| b.raw.to_vec()).collect();
    joined.extend_from_slice(&whole.1);
    assert_eq!(joined, data, "the parser lost or added bytes");
    assert_eq!(sse_blocks(data, &pieces(seed, data.len())), whole);
    assert_eq!(sse_blocks(data, &vec![1; data.len()]), whole);
    for ev in whole.0.iter().filter_map(|b| b.event.as_ref()) {
        let wire = ev.serialize();
        let mut p = sse::Parser::new();
        // A block first, so the stream's start (where a BOM is skipped) is behind us.
        assert_eq!(p.feed(b"\n").len(), 1);
        let blocks = p.feed(&wire);
        assert_eq!(blocks.len(), 1, "one event serializes to one block");
        assert_eq!(blocks[0].event.as_ref(), Some(ev));
        assert!(p.finish().is_empty());
    }
}

// ----- TLS ClientHello ------------------------------------------------------------

/// The ClientHello parser and JA3/JA4: consumed <= input, a prefix of a complete
/// hello is "need more", the hello's own bytes give the same hello, and the
/// fingerprints are computed without panicking.
pub fn client_hello(input: &[u8]) {
    let Some((&seed, data)) = input.split_first() else {
        return;
    };
    let whole = client_hello::parse_client_hello(data);
    if client_hello::is_tls_client_hello_start(data) == Some(false) {
        // (the parser may still ask for the rest of the record before it says so)
        assert!(
            !matches!(whole, Ok(Some(_))),
            "not TLS by its first bytes, yet parsed"
        );
    }
    match &whole {
        Ok(Some(h)) => {
            assert!(h.consumed <= data.len() && h.consumed > 0);
            for k in prefixes(seed, h.consumed) {
                let p = client_hello::parse_client_hello(&data[..k]);
                if k < h.consumed {
                    assert_eq!(p, Ok(None), "prefix {k}");
                } else {
                    assert_eq!(p, whole);
                }
            }
            let j4 = client_hello::ja4(h);
            assert!(j4.is_ascii());
            let _ = client_hello::ja3(h);
        }
        Ok(None) => {}
        Err(_) => {
            for k in prefixes(seed, data.len()) {
                let p = client_hello::parse_client_hello(&data[..k]);
                assert!(p.is_err() || p == Ok(None), "prefix {k}: {p:?}");
            }
        }
    }
}

// ----- gRPC -----------------------------------------------------------------------

/// gRPC message events of `body` fed in pieces of the given lengths.
fn grpc_run(
    max: usize,
    web: bool,
    body: &Bytes,
    cuts: &[usize],
) -> (Vec<grpc::Event>, Result<(), grpc::FrameError>) {
    let mut d = grpc::Decoder::new(max, web);
    let mut out = Vec::new();
    let mut at = 0;
    for &len in cuts {
        if let Err(e) = d.feed(body.slice(at..at + len), &mut out) {
            return (out, Err(e));
        }
        at += len;
    }
    let end = d.finish();
    (out, end)
}

/// The events with consecutive passthrough pieces merged, so splits compare equal.
fn grpc_joined(events: &[grpc::Event]) -> Vec<grpc::Event> {
    let mut out: Vec<grpc::Event> = Vec::new();
    for e in events {
        if let (
            grpc::Event::Passthrough { data, last },
            Some(grpc::Event::Passthrough {
                data: prev,
                last: prev_last,
            }),
        ) = (e, out.last_mut())
        {
            if !*prev_last {
                *prev = [&prev[..], &data[..]].concat().into();
                *prev_last = *last;
                continue;
            }
        }
        out.push(e.clone());
    }
    out
}

/// The gRPC (and gRPC-web) message decoder: the events' wire bytes are the body (up
/// to the fault), every message re-frames to its wire bytes, and whole, cut and
/// byte-by-byte feeding give the same events and verdict.
pub fn grpc_frames(input: &[u8]) {
    let Some((&[mode, max], body)) = input.split_first_chunk::<2>() else {
        return;
    };
    let web = mode & 1 != 0;
    let max = usize::from(max);
    let body = Bytes::copy_from_slice(body);
    let (whole, whole_end) = grpc_run(max, web, &body, &[body.len()]);
    let wire: Vec<u8> = whole.iter().flat_map(|e| e.wire().to_vec()).collect();
    if whole_end.is_ok() {
        assert_eq!(wire, &body[..]);
    } else {
        assert!(body.starts_with(&wire));
    }
    for e in &whole {
        match e {
            grpc::Event::Message(m) => {
                assert_eq!(grpc::encode_message(&m.payload, m.compressed), m.wire);
                assert!(m.payload.len() <= max);
            }
            grpc::Event::Trailers(t) => {
                // trailers re-encode to a block that parses to the same fields
                let block = grpc::encode_trailers(&t.fields);
                let mut d = grpc::Decoder::new(max.max(block.len()), true);
                let mut out = Vec::new();
                if d.feed(block, &mut out).is_ok() {
                    if let Some(grpc::Event::Trailers(again)) = out.first() {
                        assert_eq!(again.fields, t.fields);
                    }
                }
            }
            _ => {}
        }
    }
    let split = grpc_run(max, web, &body, &pieces(mode >> 1, body.len()));
    assert_eq!(grpc_joined(&split.0), grpc_joined(&whole));
    assert_eq!(split.1, whole_end);
    let bytewise = grpc_run(max, web, &body, &vec![1; body.len()]);
    assert_eq!(grpc_joined(&bytewise.0), grpc_joined(&whole));
    assert_eq!(bytewise.1, whole_end);
}

/// The grpc-web-text bytes of `text` cut at `cut`, or the first error.
fn text_decode(text: &[u8], cut: usize) -> Result<Vec<u8>, grpc::TextError> {
    let mut t = grpc::TextDecoder::new();
    let mut out = t.decode(&text[..cut])?.to_vec();
    out.extend_from_slice(&t.decode(&text[cut..])?);
    out.extend_from_slice(&t.finish()?);
    Ok(out)
}

/// The grpc-web-text base64 decoder, then gRPC-web request conversion: the same
/// bytes or the same error however the text is cut, agreement with a standard
/// base64 decoder on what that decoder accepts, and encode -> decode round trips.
pub fn grpc_web_text(input: &[u8]) {
    use base64::Engine;
    let Some((&cut, text)) = input.split_first() else {
        return;
    };
    let cut = usize::from(cut).min(text.len());
    let whole = text_decode(text, text.len());
    assert_eq!(text_decode(text, cut), whole);
    let mut bytewise = grpc::TextDecoder::new();
    let mut out = Vec::new();
    let mut err = None;
    for b in text.chunks(1) {
        match bytewise.decode(b) {
            Ok(d) => out.extend_from_slice(&d),
            Err(e) => {
                err = Some(e);
                break;
            }
        }
    }
    let bytewise = match err {
        Some(e) => Err(e),
        None => bytewise.finish().map(|d| {
            out.extend_from_slice(&d);
            out
        }),
    };
    assert_eq!(bytewise, whole);
    if let Ok(std) = base64::engine::general_purpose::STANDARD.decode(text) {
        assert_eq!(whole.as_deref(), Ok(&std[..]));
    }
    // Encoding what was sent gives text that decodes back to it.
    let enc = grpc::encode_text(text);
    assert_eq!(text_decode(&enc, enc.len() / 2).as_deref(), Ok(text));
    for protocol in [grpc::Protocol::GrpcWeb, grpc::Protocol::GrpcWebText] {
        let body = Bytes::copy_from_slice(text);
        if let Ok(b) = crate::proto::grpc::web::request_body(protocol, body) {
            let mut d = grpc::Decoder::new(64, false);
            let mut events = Vec::new();
            if d.feed(b, &mut events).is_ok() {
                let _ = d.finish();
            }
        }
    }
}

// ----- protobuf -------------------------------------------------------------------

/// Numbers and values of the fields, without their raw bytes.
fn pb_values(m: &protobuf::Message) -> Vec<(u32, protobuf::Value)> {
    m.fields
        .iter()
        .map(|f| (f.number, f.value.clone()))
        .collect()
}

/// The schema-less protobuf codec (it decodes gRPC payloads for plugins): what
/// decodes encodes back to the same bytes, and a canonical re-encoding decodes to
/// the same fields.
pub fn protobuf(input: &[u8]) {
    let data = Bytes::copy_from_slice(input);
    let Ok(m) = protobuf::Message::decode(&data) else {
        return;
    };
    assert_eq!(m.encode(), data);
    assert!(m.fields.iter().all(protobuf::Field::is_unchanged));
    let canonical = protobuf::Message {
        fields: m
            .fields
            .iter()
            .map(|f| protobuf::Field::new(f.number, f.value.clone()))
            .collect(),
    };
    let re = protobuf::Message::decode(&canonical.encode()).expect("canonical bytes decode");
    assert_eq!(pb_values(&re), pb_values(&m));
    for f in &m.fields {
        if let (Some(inner), protobuf::Value::Len(b) | protobuf::Value::Group(b)) =
            (f.value.as_message(), &f.value)
        {
            assert_eq!(&inner.encode(), b);
        }
    }
}

// ----- flow files and imports -------------------------------------------------------

/// A reader that hands out at most `step` bytes per read, to split the input.
struct Trickle<'a> {
    data: &'a [u8],
    step: usize,
}

impl Read for Trickle<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.step.min(buf.len()).min(self.data.len());
        buf[..n].copy_from_slice(&self.data[..n]);
        self.data = &self.data[n..];
        Ok(n)
    }
}

/// Every record of a flow file (and the error that stopped reading), as text, since
/// `ReadError` holds io errors that do not compare.
fn read_flows(r: impl Read) -> (Vec<Record>, Option<String>, u64) {
    let mut reader = match FlowReader::new(r) {
        Ok(r) => r,
        Err(e) => return (Vec::new(), Some(e.to_string()), 0),
    };
    let mut recs = Vec::new();
    let mut err = None;
    for (i, r) in reader.by_ref().enumerate() {
        match r {
            Ok(rec) if i < 10_000 => recs.push(rec),
            Ok(_) => break,
            Err(e) => {
                assert!(
                    !matches!(e, ReadError::Io(_)),
                    "in-memory reads cannot fail"
                );
                err = Some(e.to_string());
                break;
            }
        }
    }
    (recs, err, reader.offset())
}

/// Builds a flow file from `data`: the file header, then frames whose payloads are
/// cut from `data` with valid checksums, so the fuzzer reaches record decoding
/// (MessagePack, zstd) instead of stopping at the checksum.
fn framed_file(data: &[u8]) -> Vec<u8> {
    let mut out = file::file_header().to_vec();
    let mut rest = data;
    // each frame: kind, flags, length (u16), payload
    while let [kind, flags, l0, l1, tail @ ..] = rest {
        let len = usize::from(u16::from_le_bytes([*l0, *l1])).min(tail.len());
        let (payload, next) = tail.split_at(len);
        let kind_flags = [*kind, flags & 1, 0, 0];
        let mut h = crc32fast::Hasher::new();
        h.update(&kind_flags);
        h.update(payload);
        out.extend_from_slice(&(len as u32).to_le_bytes());
        out.extend_from_slice(&kind_flags);
        out.extend_from_slice(&h.finalize().to_le_bytes());
        out.extend_from_slice(payload);
        rest = next;
    }
    out
}

/// The flow-file reader and record decoding: raw bytes (mode bit clear) or frames
/// with valid checksums around fuzzed payloads. Reading whole and in small reads
/// agree, the offset never passes the input, and every record read writes out and
/// reads back equal.
pub fn flow_file(input: &[u8]) {
    let Some((&mode, data)) = input.split_first() else {
        return;
    };
    let bytes = if mode & 1 == 1 {
        framed_file(data)
    } else {
        data.to_vec()
    };
    let whole = read_flows(&bytes[..]);
    assert!(whole.2 <= bytes.len() as u64);
    let step = usize::from(mode >> 1) % 7 + 1;
    let split = read_flows(Trickle { data: &bytes, step });
    assert_eq!(split.0, whole.0);
    assert_eq!(split.1, whole.1);
    if whole.0.is_empty() {
        return;
    }
    let mut w = FlowWriter::appending(Vec::new()).expect("an in-memory writer");
    let mut out = file::file_header().to_vec();
    for r in &whole.0 {
        w.write(r).expect("a record that was read writes out");
    }
    out.extend_from_slice(&w.into_inner());
    let again = read_flows(&out[..]);
    assert_eq!(again.1, None);
    assert_eq!(again.0, whole.0);
}

/// An import's output must be a flow file that reads back without error, holding as
/// many flows as the report says were imported.
fn check_import(report: &crate::flows::import::ImportReport, out: &[u8]) {
    if out.is_empty() {
        assert_eq!(report.imported, 0);
        return;
    }
    assert!(out.starts_with(MAGIC) && out.len() >= FILE_HEADER_LEN);
    let (recs, err, _) = read_flows(out);
    assert_eq!(
        err, None,
        "an import wrote a flow file that does not read back"
    );
    let flows = recs
        .iter()
        .filter(|r| matches!(r, Record::Http(_) | Record::Tunnel(_)))
        .count();
    assert_eq!(flows as u64, report.imported);
}

/// HAR import (plain JSON; `.zhar` when the first byte is odd and the rest is
/// deflated here first) on arbitrary bytes.
pub fn har_import(input: &[u8]) {
    let Some((&mode, data)) = input.split_first() else {
        return;
    };
    let mut out = Vec::new();
    let (report, _) = if mode & 1 == 1 {
        let mut z = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::fast());
        std::io::Write::write_all(&mut z, data).expect("in-memory deflate");
        let z = z.finish().expect("in-memory deflate");
        crate::flows::import::import(&z[..], &mut out)
    } else {
        crate::flows::har::import::import(data, &mut out)
    };
    check_import(&report, &out);
}

/// mitmproxy dump import (tnetstring) on arbitrary bytes, and the tnetstring parser
/// itself: consumed <= input, and its frame length matches what it parsed.
pub fn mitm_import(input: &[u8]) {
    use crate::flows::mitm::tnetstring;
    if let Ok((_, n)) = tnetstring::parse(input) {
        assert!(n <= input.len());
        assert_eq!(tnetstring::frame_len(input).ok().flatten(), Some(n));
    }
    let mut out = Vec::new();
    let (report, _) = crate::flows::mitm::import(input, &mut out);
    check_import(&report, &out);
}
