//! `luring bench run --conn-mode recorded` against a server that logs which client
//! port sent each request (docs/bench.md, "Connection reuse").

use super::*;

/// Two recorded client connections of three keep-alive requests each, interleaved in
/// the file as they were on the wire.
fn two_connections(dir: &TempDir) -> std::path::PathBuf {
    let mut flows = Vec::new();
    for i in 1..=3 {
        for (conn, name) in [(11u64, "a"), (22, "b")] {
            flows.push(HttpFlow {
                conn,
                request: RequestRec {
                    method: "GET".into(),
                    authority: "t.test".into(),
                    path: format!("/{name}{i}"),
                    headers: vec![field("Host", "t.test")],
                    ..Default::default()
                },
                ..Default::default()
            });
        }
    }
    flows_file(dir, "conns.flows", &flows)
}

#[test]
fn conn_mode_recorded_keeps_each_recorded_connection_and_its_order() {
    let dir = TempDir::new("bench-conns");
    let f = two_connections(&dir);
    let (addr, seen) = logging_server(Duration::from_millis(50));
    let url = format!("http://{addr}");
    // all six due within 5 ms, each answered after 50 ms: the requests of a recorded
    // connection wait for it, and say so
    let args = [
        f.to_str().unwrap(),
        "--target",
        &url,
        "--once",
        "--rate",
        "1000",
    ];
    let mut recorded = args.to_vec();
    recorded.extend_from_slice(&["--conn-mode", "recorded"]);
    let t = bench_run(&recorded, &dir, Duration::from_secs(20));
    assert_eq!(t["merged"]["completed"], 6, "{t}");
    assert_eq!(t["merged"]["cap_waits"], 4, "{t}");
    // the third request of a connection, due at 4 or 5 ms, waited for two answers
    assert!(pct(&t, "corrected", "p100") >= 140_000.0, "{t}");
    assert!(pct(&t, "service", "p100") < 100_000.0, "{t}");
    let log = std::mem::take(&mut *seen.lock().unwrap());
    let mut by_port: Vec<(u16, Vec<String>)> = Vec::new();
    for (path, _, port) in log {
        match by_port.iter_mut().find(|(p, _)| *p == port) {
            Some((_, v)) => v.push(path),
            None => by_port.push((port, vec![path])),
        }
    }
    let mut groups: Vec<Vec<String>> = by_port.into_iter().map(|(_, v)| v).collect();
    groups.sort();
    assert_eq!(groups, [["/a1", "/a2", "/a3"], ["/b1", "/b2", "/b3"]]);
    // the pool with one connection: every request on it, in release order
    let mut pool = args.to_vec();
    pool.extend_from_slice(&["--connections", "1"]);
    let t = bench_run(&pool, &dir, Duration::from_secs(20));
    assert_eq!(t["merged"]["completed"], 6, "{t}");
    let log = std::mem::take(&mut *seen.lock().unwrap());
    assert!(log.iter().all(|a| a.2 == log[0].2), "{log:?}");
    let paths: Vec<&str> = log.iter().map(|a| a.0.as_str()).collect();
    assert_eq!(paths, ["/a1", "/b1", "/a2", "/b2", "/a3", "/b3"]);
}

#[test]
fn conn_mode_recorded_in_a_closed_loop_replays_whole_connections() {
    let dir = TempDir::new("bench-conns-closed");
    let f = two_connections(&dir);
    let (addr, seen) = logging_server(Duration::ZERO);
    let url = format!("http://{addr}");
    let t = bench_run(
        &[
            f.to_str().unwrap(),
            "--target",
            &url,
            "--once",
            "--connections",
            "1",
            "--conn-mode",
            "recorded",
        ],
        &dir,
        Duration::from_secs(20),
    );
    assert_eq!(t["merged"]["completed"], 6, "{t}");
    let log = seen.lock().unwrap().clone();
    let paths: Vec<&str> = log.iter().map(|a| a.0.as_str()).collect();
    assert_eq!(paths, ["/a1", "/a2", "/a3", "/b1", "/b2", "/b3"]);
    assert_eq!(log[0].2, log[2].2);
    assert_eq!(log[3].2, log[5].2);
    assert_ne!(
        log[0].2, log[3].2,
        "a new connection where the recording opened one"
    );
}
