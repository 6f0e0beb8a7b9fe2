//! WebSocket conversations replayed by `luring bench run`, directly against a replay
//! origin and through luring in reverse mode (docs/bench.md, "WebSocket").

use super::*;

/// Replays `file` once at 20 requests/s (and `more` flags) against a replay origin of
/// it and through a luring in reverse mode in front of that origin; the two targets.
fn replay_direct_and_through_luring(
    file: &Path,
    dir: &TempDir,
    more: &[&str],
) -> Vec<serde_json::Value> {
    let o = BenchOrigin::start(file, &[]);
    let mode = format!("reverse:{}", o.url());
    let proxy = Proxy::start(&["--mode", &mode, "--keep-host-header"]);
    let direct = format!("direct={}", o.url());
    let through = format!("luring={}", proxy.url());
    let f = file.to_str().unwrap();
    let mut args = vec![f, "--target", &direct, "--target", &through];
    args.extend_from_slice(&["--once", "--rate", "20"]);
    args.extend_from_slice(more);
    bench_run_all(&args, dir, Duration::from_secs(30))
}

/// A recording with a page and two WebSocket conversations, as `luring run --record`
/// keeps them: the upgrade, its 101, and the messages both ways in order.
fn ws_recording(dir: &TempDir) -> std::path::PathBuf {
    use luring::flows::record::{ResponseRec, WsMessageRec};
    let msg = |from_client, opcode, data: &[u8]| WsMessageRec {
        from_client,
        opcode,
        data: serde_bytes::ByteBuf::from(data.to_vec()),
        size: data.len() as u64,
        ts: 0,
    };
    let upgrade = |conn, path: &str, msgs| HttpFlow {
        conn,
        request: RequestRec {
            method: "GET".into(),
            scheme: "http".into(),
            authority: "ws.test".into(),
            path: path.into(),
            version: "HTTP/1.1".into(),
            headers: vec![
                field("Host", "ws.test"),
                field("Upgrade", "websocket"),
                field("Connection", "Upgrade"),
                field("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ=="),
                field("Sec-WebSocket-Version", "13"),
            ],
            ..Default::default()
        },
        response: Some(ResponseRec {
            status: 101,
            reason: "Switching Protocols".into(),
            headers: vec![
                field("Upgrade", "websocket"),
                field("Connection", "Upgrade"),
                field("Sec-WebSocket-Accept", "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="),
            ],
            ..Default::default()
        }),
        websocket: msgs,
        ..Default::default()
    };
    let page = HttpFlow {
        conn: 1,
        request: RequestRec {
            method: "GET".into(),
            scheme: "http".into(),
            authority: "ws.test".into(),
            path: "/".into(),
            headers: vec![field("Host", "ws.test")],
            ..Default::default()
        },
        response: Some(ResponseRec {
            status: 200,
            headers: vec![field("Content-Length", "2")],
            body: luring::flows::record::BodyRec {
                data: serde_bytes::ByteBuf::from(b"hi".to_vec()),
                size: 2,
                cut: false,
            },
            ..Default::default()
        }),
        ..Default::default()
    };
    let chat = vec![
        msg(false, 1, b"welcome"),
        msg(true, 1, b"q1"),
        msg(true, 9, b"keepalive"),
        msg(false, 1, b"a1"),
        msg(false, 2, &[0u8, 1, 2, 3, 4, 5]),
        msg(true, 2, b"q2"),
        msg(false, 10, b"keepalive"),
        msg(false, 1, &vec![b'x'; 70_000]),
        msg(true, 8, b"\x03\xe8"),
        msg(false, 8, b"\x03\xe8"),
    ];
    let echo = vec![msg(true, 1, b"hello"), msg(false, 1, b"hello")];
    let flows = [page, upgrade(2, "/chat", chat), upgrade(3, "/echo", echo)];
    flows_file(dir, "ws.flows", &flows)
}

#[test]
fn websocket_conversations_replay_directly_and_through_luring() {
    let dir = TempDir::new("bench-ws-drive");
    let f = ws_recording(&dir);
    for conn_mode in ["pool", "recorded"] {
        let more = ["--timeout", "5s", "--conn-mode", conn_mode];
        let ts = replay_direct_and_through_luring(&f, &dir, &more);
        for t in &ts {
            let m = &t["merged"];
            assert_eq!(m["errors"], serde_json::json!({}), "{conn_mode}: {t}");
            assert_eq!(m["status_classes"]["1xx"], 2, "{conn_mode}: {t}");
            assert_eq!(m["status_classes"]["2xx"], 1, "{conn_mode}: {t}");
            let ws = &m["websocket"];
            assert_eq!(ws["conversations"], 2, "{t}");
            assert_eq!(ws["messages_sent"], 3, "{t}");
            assert_eq!(ws["messages_received"], 5, "{t}");
            assert_eq!(ws["bytes_sent"], 2 + 2 + 5, "{t}");
            assert_eq!(ws["bytes_received"], 7 + 2 + 6 + 70_000 + 5, "{t}");
        }
    }
}

#[test]
fn a_websocket_answer_short_of_the_recording_is_an_error_of_its_own() {
    let dir = TempDir::new("bench-ws-short");
    let f = ws_recording(&dir);
    // the origin has a recording with the chat's last message missing
    let mut rec = luring::bench::input::load(&f).unwrap().flows;
    rec[1].websocket.retain(|m| m.data.len() < 70_000);
    let shorter = flows_file(&dir, "shorter.flows", &rec);
    let o = BenchOrigin::start(&shorter, &[]);
    let t = bench_run(
        &[
            f.to_str().unwrap(),
            "--target",
            &o.url(),
            "--once",
            "--rate",
            "20",
            "--timeout",
            "2s",
        ],
        &dir,
        Duration::from_secs(30),
    );
    let m = &t["merged"];
    assert_eq!(m["errors"], serde_json::json!({"ws-timeout": 1}), "{t}");
    assert_eq!(m["status_classes"]["1xx"], 1, "{t}");
    assert_eq!(m["websocket"]["messages_received"], 4, "{t}");
}

/// A python `websockets` client: three messages, each answered, then a close.
const WS_CLIENT_PY: &str = r#"
import asyncio, sys
import websockets

async def main():
    async with websockets.connect(sys.argv[1], open_timeout=10) as ws:
        for m in ["hello", b"\x00\x01binary" * 100, "x" * 100000]:
            await ws.send(m)
            assert await asyncio.wait_for(ws.recv(), 10) == m
    print("ok")

asyncio.run(main())
"#;

#[test]
fn luring_recording_of_a_websockets_client_replays_through_luring() {
    let probe = run_cmd(
        "python3",
        &["-c", "import websockets"],
        b"",
        Duration::from_secs(30),
    );
    assert!(
        probe.ok(),
        "python websockets is needed (scripts/test.sh installs it): {}",
        probe.stderr
    );
    let dir = TempDir::new("bench-ws-rec");
    let (mut server, port) = python_ws_echo();
    let file = dir.path("ws-rec.flows");
    let mut recorder = Proxy::start(&[
        "--mode",
        &format!("reverse:http://127.0.0.1:{port}"),
        "--record",
        file.to_str().unwrap(),
    ]);
    let url = format!("ws://127.0.0.1:{}/chat", recorder.port());
    let out = run_cmd(
        "python3",
        &["-c", WS_CLIENT_PY, &url],
        b"",
        Duration::from_secs(30),
    );
    let _ = server.kill();
    let _ = server.wait();
    assert!(out.ok(), "{} {}", out.stdout, out.stderr);
    recorder.terminate(Duration::from_secs(5));
    let rec = luring::bench::input::load(&file).unwrap();
    let ws = &rec
        .flows
        .iter()
        .find(|f| !f.websocket.is_empty())
        .unwrap()
        .websocket;
    let data = |client: bool| {
        ws.iter()
            .filter(move |m| m.from_client == client && m.opcode < 8)
    };
    let sent: u64 = data(true).map(|m| m.data.len() as u64).sum();
    let received: u64 = data(false).map(|m| m.data.len() as u64).sum();
    assert_eq!((data(true).count(), data(false).count()), (3, 3), "{ws:?}");
    let ts = replay_direct_and_through_luring(&file, &dir, &[]);
    for t in &ts {
        let w = &t["merged"]["websocket"];
        assert_eq!(t["merged"]["errors"], serde_json::json!({}), "{t}");
        assert_eq!(w["conversations"], 1, "{t}");
        assert_eq!(
            (w["messages_sent"].as_u64(), w["messages_received"].as_u64()),
            (Some(3), Some(3)),
            "{t}"
        );
        assert_eq!(
            (w["bytes_sent"].as_u64(), w["bytes_received"].as_u64()),
            (Some(sent), Some(received)),
            "{t}"
        );
    }
}
