//! HTTP/1 codec hot paths: head parsing and encoding, chunked body scanning.

use bytes::BytesMut;
use criterion::{black_box, criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use luring::proto::http1::{
    encode_chunk, encode_last_chunk, encode_request_head, parse_request_head, parse_response_head,
    BodyDecoder, BodyKind, Limits,
};

/// A browser-like navigation request with 10 header fields.
const REQUEST: &[u8] = b"GET /wiki/Special:Search?search=io_uring&go=Go HTTP/1.1\r\n\
Host: en.wikipedia.org\r\n\
User-Agent: Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0\r\n\
Accept: text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8\r\n\
Accept-Language: en-US,en;q=0.5\r\n\
Accept-Encoding: gzip, deflate, br, zstd\r\n\
Referer: https://en.wikipedia.org/wiki/Main_Page\r\n\
Connection: keep-alive\r\n\
Cookie: WMF-Last-Access=21-Nov-2026; GeoIP=DE:BE:Berlin:52.52:13.40:v4\r\n\
Upgrade-Insecure-Requests: 1\r\n\
Sec-Fetch-Dest: document\r\n\
\r\n";

const RESPONSE: &[u8] = b"HTTP/1.1 200 OK\r\n\
Date: Sat, 21 Nov 2026 22:50:00 GMT\r\n\
Content-Type: text/html; charset=UTF-8\r\n\
Content-Length: 48213\r\n\
Connection: keep-alive\r\n\
Cache-Control: private, s-maxage=0, max-age=0, must-revalidate\r\n\
Content-Encoding: gzip\r\n\
Vary: Accept-Encoding,Cookie\r\n\
Server: ATS/9.2.5\r\n\
\r\n";

fn heads(c: &mut Criterion) {
    let limits = Limits::default();
    let mut g = c.benchmark_group("http1_head");
    g.throughput(Throughput::Bytes(REQUEST.len() as u64));
    g.bench_function("parse_request_10_headers", |b| {
        b.iter(|| parse_request_head(black_box(REQUEST), &limits))
    });
    g.throughput(Throughput::Bytes(RESPONSE.len() as u64));
    g.bench_function("parse_response_8_headers", |b| {
        b.iter(|| parse_response_head(black_box(RESPONSE), &limits))
    });
    let (head, _) = parse_request_head(REQUEST, &limits).unwrap().unwrap();
    g.throughput(Throughput::Bytes(REQUEST.len() as u64));
    let mut out = BytesMut::with_capacity(4096);
    g.bench_function("encode_request_10_headers", |b| {
        b.iter(|| {
            out.clear();
            encode_request_head(black_box(&head), &mut out);
        })
    });
    g.finish();
}

fn chunked_body(c: &mut Criterion) {
    // 64 KiB of payload in 4 KiB chunks, as a typical streaming server writes it.
    let payload = vec![b'x'; 64 * 1024];
    let mut wire = BytesMut::new();
    for chunk in payload.chunks(4096) {
        encode_chunk(chunk, &mut wire);
    }
    encode_last_chunk(None, &mut wire);
    let wire = wire.freeze();
    let mut g = c.benchmark_group("http1_body");
    g.throughput(Throughput::Bytes(wire.len() as u64));
    g.bench_function("scan_64k_chunked_16k_reads", |b| {
        b.iter(|| {
            let mut dec = BodyDecoder::new(BodyKind::Chunked);
            let mut total = 0;
            for read in wire.chunks(16 * 1024) {
                total += dec.scan(black_box(read)).unwrap().consumed;
            }
            assert!(dec.is_done());
            total
        })
    });
    // The reads are copied into buffers outside the timed part, as the socket layer would.
    g.bench_function("decode_64k_chunked_16k_reads", |b| {
        b.iter_batched(
            || {
                wire.chunks(16 * 1024)
                    .map(BytesMut::from)
                    .collect::<Vec<_>>()
            },
            |reads| {
                let mut dec = BodyDecoder::new(BodyKind::Chunked);
                let mut pieces = 0;
                for mut buf in reads {
                    pieces += dec.decode(black_box(&mut buf)).unwrap().data.len();
                }
                assert!(dec.is_done());
                pieces
            },
            BatchSize::SmallInput,
        )
    });
    g.finish();
}

criterion_group!(benches, heads, chunked_body);
criterion_main!(benches);
