use super::*;
use crate::flows::record::*;

fn sample(id: u64, body: usize) -> Record {
    Record::Http(Box::new(HttpFlow {
        id,
        conn: 7,
        client: "127.0.0.1:5000".into(),
        request: RequestRec {
            method: "POST".into(),
            scheme: "http".into(),
            authority: "example.test".into(),
            path: "/up".into(),
            version: "HTTP/1.1".into(),
            headers: vec![field("Host", "example.test"), field("X-A", [0u8, 255])],
            body: BodyRec {
                data: serde_bytes::ByteBuf::from(vec![b'x'; body]),
                size: body as u64,
                cut: false,
            },
            trailers: vec![],
        },
        response: Some(ResponseRec {
            status: 200,
            ..Default::default()
        }),
        ..Default::default()
    }))
}

fn file_of(recs: &[Record]) -> Vec<u8> {
    let meta = Meta {
        writer: "test".into(),
        ..Default::default()
    };
    let mut w = FlowWriter::new(Vec::new(), &meta).unwrap();
    for r in recs {
        w.write(r).unwrap();
    }
    w.into_inner()
}

fn read_all(bytes: &[u8]) -> (Vec<Record>, Option<ReadError>) {
    let mut out = Vec::new();
    let mut r = match FlowReader::new(bytes) {
        Ok(r) => r,
        Err(e) => return (out, Some(e)),
    };
    for rec in &mut r {
        match rec {
            Ok(x) => out.push(x),
            Err(e) => return (out, Some(e)),
        }
    }
    (out, None)
}

#[test]
fn round_trip_small_and_compressed() {
    let recs = vec![sample(1, 10), sample(2, 100_000)];
    let bytes = file_of(&recs);
    let (back, err) = read_all(&bytes);
    assert!(err.is_none());
    assert!(matches!(back[0], Record::Meta(_)));
    assert_eq!(&back[1..], &recs[..]);
    // the large body was compressed
    assert!(bytes.len() < 50_000);
}

#[test]
fn truncation_keeps_complete_records() {
    let recs = vec![sample(1, 10), sample(2, 3000), sample(3, 10)];
    let bytes = file_of(&recs);
    let whole = read_all(&bytes).0.len();
    assert_eq!(whole, 4);
    for cut in 0..bytes.len() {
        let (back, err) = read_all(&bytes[..cut]);
        if cut < bytes.len() {
            // a cut at a record boundary reads cleanly; anywhere else reports truncation
            if let Some(e) = err {
                assert!(
                    matches!(e, ReadError::Truncated(_) | ReadError::NotFlows),
                    "{e}"
                );
            }
        }
        assert!(back.len() <= whole);
    }
}

#[test]
fn byte_flips_never_panic_and_are_reported() {
    let bytes = file_of(&[sample(1, 10), sample(2, 2000)]);
    for i in FILE_HEADER_LEN..bytes.len() {
        for bit in [0x01u8, 0x80] {
            let mut b = bytes.clone();
            b[i] ^= bit;
            let (_, err) = read_all(&b);
            assert!(err.is_some(), "flip at {i} went unnoticed");
        }
    }
}

#[test]
fn newer_version_refused_with_a_clear_message() {
    let mut bytes = file_of(&[]);
    bytes[8] = 9;
    let e = FlowReader::new(&bytes[..]).err().unwrap();
    assert!(e.to_string().contains("version 9 is newer"), "{e}");
    let e = FlowReader::new(&b"GET / HTTP/1.1\r\n"[..]).err().unwrap();
    assert!(matches!(e, ReadError::NotFlows));
}

#[test]
fn unknown_kinds_are_skipped() {
    let mut bytes = file_of(&[sample(1, 1)]);
    // a record of kind 200 from some later version
    let payload = rmp_serde::to_vec_named(&Drops::default()).unwrap();
    bytes.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    bytes.extend_from_slice(&[200, 0, 0, 0]);
    bytes.extend_from_slice(&checksum([200, 0, 0, 0], &payload).to_le_bytes());
    bytes.extend_from_slice(&payload);
    let mut r = FlowReader::new(&bytes[..]).unwrap();
    let n = (&mut r).filter(|x| x.is_ok()).count();
    assert_eq!(n, 2);
    assert_eq!(r.skipped_unknown, 1);
}

/// Found by the flow_file fuzz target: a record of a thousand nested MessagePack arrays
/// (valid checksum) overflowed a 2 MiB thread stack while serde skipped it; it is now a
/// corrupt record, read on a thread with that little stack.
#[test]
fn deeply_nested_record_is_corrupt_not_a_stack_overflow() {
    // a map with one unknown field, whose value nests arrays (skipped by serde)
    let mut payload = vec![0x81, 0xa2, b'z', b'z'];
    payload.extend_from_slice(&[0x91; 5000]);
    payload.push(0xc0);
    let kind_flags = [2u8, 0, 0, 0];
    let mut file = file_header().to_vec();
    file.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    file.extend_from_slice(&kind_flags);
    file.extend_from_slice(&checksum(kind_flags, &payload).to_le_bytes());
    file.extend_from_slice(&payload);
    let read = std::thread::Builder::new()
        .stack_size(2 << 20)
        .spawn(move || {
            let mut r = FlowReader::new(&file[..]).unwrap();
            match r.next_record() {
                Some(Err(ReadError::Corrupt { why, .. })) => why,
                other => panic!("{other:?}"),
            }
        })
        .unwrap()
        .join()
        .expect("no stack overflow");
    assert!(read.contains("depth"), "{read}");
}
