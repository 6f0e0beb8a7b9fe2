//! TLS interception costs: leaf minting (cache miss), cache hits, per-connection
//! config, ClientHello parsing and JA4/JA3.

use std::hint::black_box;
use std::sync::Arc;

use criterion::{criterion_group, criterion_main, Criterion};
use luring::proto::client_hello::{ja3, ja4, parse_client_hello};
use luring::tls::leaf::{LeafCache, LeafMinter, SharedLeafStore};
use luring::tls::{Ca, CaKeyType, ClientTlsFactory, Confdir, ServerTlsFactory, UpstreamTlsOptions};

fn setup() -> (Arc<SharedLeafStore>, Vec<u8>) {
    let dir = std::env::temp_dir().join(format!("luring-tls-bench-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let confdir = Confdir::resolve(Some(dir)).expect("confdir");
    let ca = Arc::new(Ca::load_or_create(&confdir, CaKeyType::EcdsaP256).expect("CA"));
    let store = SharedLeafStore::new(LeafMinter::new(ca).expect("minter"), 10_000);
    // A real rustls ClientHello (SNI, ALPN h2 + http/1.1).
    let clients = ClientTlsFactory::new(&UpstreamTlsOptions::default()).expect("client factory");
    let cfg = clients.config_for("www.example.com", &[b"h2".to_vec(), b"http/1.1".to_vec()]);
    let name = "www.example.com".try_into().expect("name");
    let mut conn = rustls::ClientConnection::new(cfg, name).expect("client");
    let mut hello = Vec::new();
    conn.write_tls(&mut hello).expect("hello");
    (store, hello)
}

fn benches(c: &mut Criterion) {
    let (store, hello) = setup();
    let mut n = 0u64;
    c.bench_function("leaf_mint_miss", |b| {
        b.iter(|| {
            n += 1;
            black_box(
                store
                    .minter()
                    .mint(&format!("h{n}.bench.test"), None)
                    .expect("mint"),
            )
        })
    });
    let mut worker = LeafCache::new(store.clone(), 10_000);
    worker.get("hit.bench.test", None).expect("warm");
    c.bench_function("leaf_cache_hit_local", |b| {
        b.iter(|| black_box(worker.get(black_box("hit.bench.test"), None).expect("hit")))
    });
    c.bench_function("leaf_cache_hit_shared", |b| {
        b.iter(|| {
            black_box(
                store
                    .get_or_mint(black_box("hit.bench.test"), None)
                    .expect("hit"),
            )
        })
    });
    let factory = ServerTlsFactory::new().expect("server factory");
    let leaf = worker.get("hit.bench.test", None).expect("leaf");
    let alpn = [b"h2".to_vec(), b"http/1.1".to_vec()];
    c.bench_function("server_config_per_connection", |b| {
        b.iter(|| black_box(factory.config_for_cert(leaf.clone(), &alpn)))
    });
    c.bench_function("client_hello_parse", |b| {
        b.iter(|| black_box(parse_client_hello(black_box(&hello)).expect("parse")))
    });
    let parsed = parse_client_hello(&hello)
        .expect("parse")
        .expect("complete");
    c.bench_function("ja4", |b| b.iter(|| black_box(ja4(black_box(&parsed)))));
    c.bench_function("ja3", |b| b.iter(|| black_box(ja3(black_box(&parsed)))));
}

criterion_group!(tls, benches);
criterion_main!(tls);
