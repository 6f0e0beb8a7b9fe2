//! Byte identity of luring's own HTTP/2 recording: what `luring run --record` kept of
//! h2 streams is what `luring bench origin` serves again, over h2 as recorded.

use super::*;

#[test]
fn a_luring_recording_of_h2_streams_replays_byte_for_byte() {
    let dir = TempDir::new("bench-rec-h2");
    let body = pattern_vec(90_000);
    let origin = Origin::start(fixed(
        200,
        &[("Content-Type", "application/octet-stream")],
        &body,
    ));
    let file = dir.path("h2.flows");
    let mode = format!("reverse:{}", origin.url());
    let mut proxy = Proxy::start(&["--mode", &mode, "--record", file.to_str().unwrap()]);
    // two h2c requests, one of them an upload (one curl each: curl 7.88 cannot reuse
    // a prior-knowledge connection, against nghttpd either)
    let upload = dir.path("up.bin");
    std::fs::write(&upload, pattern_vec(20_000)).unwrap();
    let data = format!("@{}", upload.display());
    for args in [
        vec![format!("{}/a", proxy.url())],
        vec![
            "--data-binary".into(),
            data,
            format!("{}/b?x=1", proxy.url()),
        ],
    ] {
        let mut a = vec!["--http2-prior-knowledge"];
        a.extend(args.iter().map(String::as_str));
        let out = curl(&a);
        assert_eq!(out.status, 200, "{}", out.stderr);
        assert_eq!(sha(&out.body), sha(&body));
    }
    proxy.terminate(Duration::from_secs(5));

    let rec = luring::bench::input::load(&file).unwrap();
    assert_eq!(rec.flows.len(), 2, "{:#?}", rec.flows);
    let o = BenchOrigin::start(&file, &[]);
    for fl in &rec.flows {
        assert!(fl.request.version.starts_with("HTTP/2"), "{:?}", fl.request);
        let recorded = &fl.response.as_ref().expect("a response").body.data;
        assert_eq!(
            sha(recorded),
            sha(&body),
            "{}: recorded body",
            fl.request.path
        );
        let out = fetch(&o.url(), fl, &dir, &["--http2-prior-knowledge"]);
        assert_eq!(out.status, 200, "{}: {}", fl.request.path, out.stderr);
        assert_eq!(
            sha(&out.body),
            sha(&body),
            "{}: served body",
            fl.request.path
        );
    }
    assert!(
        origin_stats(&o).contains(r#""h2":2"#),
        "{}",
        origin_stats(&o)
    );
}
