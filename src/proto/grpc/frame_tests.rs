use super::*;

/// Events of `chunks` fed in order, and the decoder's verdict at the end.
fn run(max: usize, web: bool, chunks: &[&[u8]]) -> (Vec<Event>, Result<(), FrameError>) {
    let mut d = Decoder::new(max, web);
    let mut out = Vec::new();
    for c in chunks {
        if let Err(e) = d.feed(Bytes::copy_from_slice(c), &mut out) {
            return (out, Err(e));
        }
    }
    let end = d.finish();
    (out, end)
}

/// The events with passthrough pieces joined, so different chunkings compare equal.
fn joined(events: Vec<Event>) -> Vec<Event> {
    let mut out: Vec<Event> = Vec::new();
    for e in events {
        if let (
            Event::Passthrough { data, last },
            Some(Event::Passthrough {
                data: prev,
                last: prev_last,
            }),
        ) = (&e, out.last_mut())
        {
            if !*prev_last {
                let mut both = BytesMut::from(&prev[..]);
                both.extend_from_slice(data);
                *prev = both.freeze();
                *prev_last = *last;
                continue;
            }
        }
        out.push(e);
    }
    out
}

fn all_wire(events: &[Event]) -> Vec<u8> {
    events.iter().flat_map(|e| e.wire().to_vec()).collect()
}

fn web_stream() -> Vec<u8> {
    let mut s = Vec::new();
    s.extend_from_slice(&encode_message(b"hello", false));
    s.extend_from_slice(&encode_message(b"", false));
    s.extend_from_slice(&encode_message(&[0x1f, 0x8b, 7, 7], true));
    s.extend_from_slice(&encode_trailers(&[
        ("grpc-status", "0"),
        ("grpc-message", "fine"),
    ]));
    s
}

#[test]
fn messages_and_trailers() {
    let stream = web_stream();
    let (ev, end) = run(1024, true, &[&stream]);
    assert_eq!(end, Ok(()));
    assert_eq!(ev.len(), 4);
    let Event::Message(m) = &ev[0] else { panic!() };
    assert_eq!((m.compressed, &m.payload[..]), (false, &b"hello"[..]));
    assert_eq!(&m.wire[..], b"\x00\x00\x00\x00\x05hello");
    let Event::Message(m) = &ev[1] else { panic!() };
    assert!(m.payload.is_empty() && m.wire.len() == 5);
    let Event::Message(m) = &ev[2] else { panic!() };
    assert!(m.compressed);
    assert_eq!(&m.wire[..1], &[1]);
    let Event::Trailers(t) = &ev[3] else { panic!() };
    assert_eq!(
        t.fields,
        vec![
            ("grpc-status".to_string(), "0".to_string()),
            ("grpc-message".to_string(), "fine".to_string())
        ]
    );
    assert_eq!(all_wire(&ev), stream);
}

#[test]
fn every_split_gives_the_same_events() {
    let stream = web_stream();
    let (whole, end) = run(1024, true, &[&stream]);
    assert_eq!(end, Ok(()));
    for cut in 0..=stream.len() {
        let (ev, end) = run(1024, true, &[&stream[..cut], &stream[cut..]]);
        assert_eq!((&ev, &end), (&whole, &Ok(())), "cut at {cut}");
    }
    // every pair of cuts
    for a in 0..=stream.len() {
        for b in a..=stream.len() {
            let (ev, _) = run(1024, true, &[&stream[..a], &stream[a..b], &stream[b..]]);
            assert_eq!(ev, whole, "cuts at {a}, {b}");
        }
    }
    let bytes: Vec<&[u8]> = stream.chunks(1).collect();
    assert_eq!(run(1024, true, &bytes), (whole, Ok(())));
}

#[test]
fn a_whole_message_in_one_chunk_is_not_copied() {
    let mut chunk = encode_message(b"abc", false).to_vec();
    chunk.extend_from_slice(&encode_message(b"defgh", true));
    chunk.extend_from_slice(&[0, 0, 0]);
    let chunk = Bytes::from(chunk);
    let range = chunk.as_ptr_range();
    let mut d = Decoder::new(64, false);
    let mut out = Vec::new();
    d.feed(chunk.clone(), &mut out).unwrap();
    assert_eq!(out.len(), 2);
    for e in &out {
        let Event::Message(m) = e else { panic!() };
        assert!(range.contains(&m.wire.as_ptr()), "sliced from the chunk");
        assert!(range.contains(&m.payload.as_ptr()));
    }
    assert_eq!(d.pending(), 3);
    assert!(!d.at_boundary());
    assert_eq!(d.finish(), Err(FrameError::Truncated(3)));
}

#[test]
fn oversize_messages_are_relayed_not_buffered() {
    let big: Vec<u8> = (0..40u8).collect();
    let mut stream = encode_message(b"small", false).to_vec();
    stream.extend_from_slice(&encode_message(&big, true));
    stream.extend_from_slice(&encode_message(b"after", false));
    let (whole, end) = run(16, false, &[&stream]);
    assert_eq!(end, Ok(()));
    assert_eq!(whole.len(), 4, "{whole:?}");
    assert_eq!(
        whole[1],
        Event::Oversize {
            header: Bytes::from_static(&[1, 0, 0, 0, 40]),
            compressed: true,
            trailers: false,
            len: 40
        }
    );
    assert_eq!(
        whole[2],
        Event::Passthrough {
            data: Bytes::from(big.clone()),
            last: true
        }
    );
    let Event::Message(m) = &whole[3] else {
        panic!()
    };
    assert_eq!(&m.payload[..], b"after");
    for cut in 0..=stream.len() {
        let (ev, end) = run(16, false, &[&stream[..cut], &stream[cut..]]);
        assert_eq!(end, Ok(()));
        assert_eq!(all_wire(&ev), stream, "cut at {cut}");
        assert_eq!(joined(ev), whole, "cut at {cut}");
    }
    // byte by byte: nothing of the big payload is held back
    let mut d = Decoder::new(16, false);
    let mut out = Vec::new();
    for b in stream.chunks(1) {
        d.feed(Bytes::copy_from_slice(b), &mut out).unwrap();
        assert!(d.pending() <= HEADER_LEN + 16);
    }
    assert_eq!(
        out.iter()
            .filter(|e| matches!(e, Event::Passthrough { .. }))
            .count(),
        40
    );
    assert_eq!(joined(out), whole);
    // cut inside the big one
    let (_, end) = run(16, false, &[&stream[..20]]);
    assert_eq!(end, Err(FrameError::Truncated(10)));
}

#[test]
fn a_message_at_the_limit_is_not_oversize() {
    let stream = encode_message(&[7; 16], false);
    let (ev, _) = run(16, false, &[&stream]);
    assert!(matches!(&ev[..], [Event::Message(_)]));
    let (ev, _) = run(15, false, &[&stream]);
    assert!(matches!(
        &ev[..],
        [
            Event::Oversize { len: 16, .. },
            Event::Passthrough { last: true, .. }
        ]
    ));
}

#[test]
fn an_oversize_trailer_frame_still_ends_the_body() {
    let trailers = encode_trailers(&[("grpc-status", "0"), ("x-long", &"y".repeat(64))]);
    let (ev, end) = run(16, true, &[&trailers]);
    assert_eq!(end, Ok(()));
    assert!(matches!(ev[0], Event::Oversize { trailers: true, .. }));
    assert_eq!(all_wire(&ev), trailers.to_vec());
    let mut more = trailers.to_vec();
    more.extend_from_slice(&encode_message(b"x", false));
    let (_, end) = run(16, true, &[&more]);
    assert_eq!(end, Err(FrameError::DataAfterTrailers));
}

#[test]
fn malformed_frames() {
    let cases: [(&[u8], bool, FrameError); 5] = [
        (&[0x02, 0, 0, 0, 0], false, FrameError::BadFlags(0x02)),
        (&[0x40, 0, 0, 0, 0], true, FrameError::BadFlags(0x40)),
        (&[0x80, 0, 0, 0, 0], false, FrameError::TrailersNotAllowed),
        (&[0x81, 0, 0, 0, 0], true, FrameError::CompressedTrailers),
        (
            b"\x80\x00\x00\x00\x04ab\r\n",
            true,
            FrameError::BadTrailerLine("ab".into()),
        ),
    ];
    for (bytes, web, err) in cases {
        for cut in 0..=bytes.len() {
            let (ev, end) = run(64, web, &[&bytes[..cut], &bytes[cut..]]);
            assert!(ev.is_empty());
            assert_eq!(end, Err(err.clone()), "{bytes:?} cut at {cut}");
        }
    }
}

#[test]
fn data_after_the_trailer_frame_is_an_error() {
    let mut stream = encode_message(b"a", false).to_vec();
    stream.extend_from_slice(&encode_trailers(&[("grpc-status", "0")]));
    let end_of_trailers = stream.len();
    stream.extend_from_slice(&encode_message(b"b", false));
    for cut in 0..=stream.len() {
        let (ev, end) = run(64, true, &[&stream[..cut], &stream[cut..]]);
        assert_eq!(end, Err(FrameError::DataAfterTrailers), "cut at {cut}");
        assert_eq!(ev.len(), 2, "the message and trailers before the fault");
    }
    // the trailers alone end the body cleanly
    let (_, end) = run(64, true, &[&stream[..end_of_trailers]]);
    assert_eq!(end, Ok(()));
    // and a failed decoder stays failed
    let mut d = Decoder::new(64, true);
    let mut out = Vec::new();
    assert!(d.feed(Bytes::from(stream), &mut out).is_err());
    assert_eq!(
        d.feed(Bytes::from_static(b"\0"), &mut out),
        Err(FrameError::DataAfterTrailers)
    );
    assert_eq!(d.finish(), Err(FrameError::DataAfterTrailers));
}

#[test]
fn trailer_blocks() {
    let fields = parse_trailers(b"Grpc-Status:0\nX-A:  spaced value \t\r\n\r\nx-b:\r\n").unwrap();
    assert_eq!(
        fields,
        vec![
            ("grpc-status".into(), "0".into()),
            ("x-a".into(), "spaced value".into()),
            ("x-b".into(), String::new()),
        ]
    );
    assert_eq!(parse_trailers(b"").unwrap(), vec![]);
    assert!(parse_trailers(b": v\r\n").is_err());
    assert!(parse_trailers(b"bad name: v\r\n").is_err());
}

#[test]
fn encoders() {
    assert_eq!(&encode_message(b"hi", true)[..], b"\x01\x00\x00\x00\x02hi");
    let mut out = BytesMut::from(&b"x"[..]);
    encode_message_into(b"", false, &mut out);
    assert_eq!(&out[..], b"x\x00\x00\x00\x00\x00");
    let t = encode_trailers(&[("grpc-status", "13"), ("x-evil", "a\r\ngrpc-status: 0")]);
    assert_eq!(t[0], 0x80);
    assert_eq!(
        u32::from_be_bytes([t[1], t[2], t[3], t[4]]) as usize,
        t.len() - 5
    );
    assert_eq!(
        parse_trailers(&t[5..]).unwrap(),
        vec![
            ("grpc-status".into(), "13".into()),
            ("x-evil".into(), "a  grpc-status: 0".into())
        ]
    );
}

/// Found by the grpc_frames fuzz target: a bare CR inside a trailer value was kept, so
/// the parsed trailers held a value no encoder writes (and no h2 or HTTP/1 trailer may
/// carry); it becomes SP, and parse -> encode -> parse gives the same fields.
#[test]
fn trailer_value_cr_and_nul_become_space() {
    let fields = parse_trailers(b"grpc-status: 0\r\xff\r\ngrpc-message: a\0b\r\n").unwrap();
    assert_eq!(
        fields,
        vec![
            ("grpc-status".to_string(), "0 \u{fffd}".to_string()),
            ("grpc-message".to_string(), "a b".to_string()),
        ]
    );
    let block = encode_trailers(&fields);
    assert_eq!(parse_trailers(&block[HEADER_LEN..]).unwrap(), fields);
}
