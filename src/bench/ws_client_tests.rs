//! The driver's WebSocket conversation against the replay origin's script, both
//! sans-IO: bytes handed from one to the other.

use super::*;
use crate::bench::ws_replay::WsScript;
use crate::flows::record::{field, ResponseRec, WsMessageRec};

const RECORDED_KEY: &str = "dGhlIHNhbXBsZSBub25jZQ==";

fn m(from_client: bool, opcode: u8, data: &[u8]) -> WsMessageRec {
    WsMessageRec {
        from_client,
        opcode,
        data: serde_bytes::ByteBuf::from(data.to_vec()),
        size: data.len() as u64,
        ts: 0,
    }
}

fn flow(msgs: Vec<WsMessageRec>) -> HttpFlow {
    HttpFlow {
        request: RequestRec {
            method: "GET".into(),
            scheme: "http".into(),
            authority: "ws.test".into(),
            path: "/chat".into(),
            headers: vec![
                field("Host", "ws.test"),
                field("Upgrade", "websocket"),
                field("Connection", "Upgrade"),
                field("Sec-WebSocket-Key", RECORDED_KEY),
                field("Sec-WebSocket-Version", "13"),
                field("Sec-WebSocket-Extensions", "permessage-deflate"),
                field("Sec-WebSocket-Protocol", "chat"),
            ],
            ..Default::default()
        },
        response: Some(ResponseRec {
            status: 101,
            ..Default::default()
        }),
        websocket: msgs,
        ..Default::default()
    }
}

fn conversation() -> Vec<WsMessageRec> {
    vec![
        m(false, ws::TEXT, b"welcome"),
        m(true, ws::TEXT, b"q1"),
        m(true, ws::PING, b"keepalive"),
        m(false, ws::TEXT, b"a1"),
        m(false, ws::BINARY, b"a1-bin"),
        m(true, ws::BINARY, b"q2"),
        m(false, ws::PONG, b"keepalive"),
        m(false, ws::TEXT, b"a2"),
        m(true, ws::CLOSE, b"\x03\xe8bye"),
        m(false, ws::CLOSE, b"\x03\xe8bye"),
    ]
}

/// What the server side saw: the upgrade head, the client's frames (opcode, payload,
/// masked), and the conversation's end.
struct Seen {
    head: String,
    frames: Vec<(u8, String, bool)>,
    result: Result<WsCounts, WsFail>,
}

/// Runs `plan` against a server answering 101 with `accept` (None: the right one for
/// the key it got) and playing `script`; the driver gets the server's bytes `step`
/// at a time. `cut_after`: the server drops the connection after that many of the
/// client's data messages.
fn converse(
    plan: &WsPlan,
    script: Vec<WsMessageRec>,
    accept: Option<&str>,
    step: usize,
    cut_after: Option<usize>,
) -> Seen {
    let mut script = WsScript::new(script);
    let (mut to_server, mut pending, mut inb) = (BytesMut::new(), BytesMut::new(), BytesMut::new());
    let mut conv = WsConversation::start(plan, [7; 16], &mut to_server);
    let end = to_server.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
    let head = String::from_utf8(to_server.split_to(end).to_vec()).unwrap();
    let key = head
        .lines()
        .find_map(|l| l.strip_prefix("Sec-WebSocket-Key: "))
        .unwrap();
    let accept = accept.map_or_else(|| ws::accept_for(key.as_bytes()), str::to_string);
    pending.extend_from_slice(
        format!("HTTP/1.1 101 Switching Protocols\r\nSec-WebSocket-Accept: {accept}\r\n\r\n")
            .as_bytes(),
    );
    script.due(&mut pending);
    let dec = ws::FrameDecoder::new(1 << 20);
    let mut frames = Vec::new();
    let mut server_open = true;
    for _ in 0..10_000 {
        let k = step.min(pending.len());
        inb.extend_from_slice(&pending.split_to(k));
        if let Err(e) = conv.feed(&mut inb, &mut to_server) {
            return Seen {
                head,
                frames,
                result: Err(e),
            };
        }
        if conv.done() {
            break;
        }
        while let Some(f) = dec.decode(&mut to_server).unwrap() {
            frames.push((
                f.opcode,
                String::from_utf8_lossy(&f.payload).into_owned(),
                f.mask.is_some(),
            ));
            match f.opcode {
                ws::CLOSE => {
                    ws::encode(&Frame { mask: None, ..f }, &mut pending);
                    server_open = false;
                }
                ws::PING => {}
                _ if server_open => {
                    let data = frames.iter().filter(|f| is_data(f.0)).count();
                    if cut_after == Some(data) {
                        server_open = false;
                    } else {
                        script.on_client(&mut pending);
                    }
                }
                _ => {}
            }
        }
        if pending.is_empty() && inb.is_empty() && !server_open {
            let r = conv.eof();
            return Seen {
                head,
                frames,
                result: r.map(|_| conv.counts),
            };
        }
    }
    assert!(conv.done(), "the conversation ends");
    Seen {
        head,
        frames,
        result: Ok(conv.counts),
    }
}

#[test]
fn the_upgrade_has_a_fresh_key_and_no_extension() {
    let plan = WsPlan::new(&flow(vec![]), &flow(vec![]).request, false);
    let seen = converse(&plan, vec![], None, 1 << 20, None);
    let h = &seen.head;
    assert!(
        h.starts_with("GET /chat HTTP/1.1\r\nHost: ws.test\r\n"),
        "{h}"
    );
    assert!(
        !h.contains(RECORDED_KEY) && !h.contains("permessage-deflate"),
        "{h}"
    );
    for f in [
        "Sec-WebSocket-Version: 13\r\n",
        "Sec-WebSocket-Protocol: chat\r\n",
        "Connection: Upgrade\r\n",
        "Upgrade: websocket\r\n",
        "Sec-WebSocket-Key: BwcHBwcHBwcHBwcHBwcHBw==\r\n\r\n",
    ] {
        assert_eq!(h.matches(f).count(), 1, "{f} in {h}");
    }
    // nothing recorded: the close goes at once, and the server's answer ends it
    assert_eq!(seen.frames, [(ws::CLOSE, "\u{3}\u{fffd}".into(), true)]);
    let c = seen.result.unwrap();
    assert_eq!((c.conversations, c.sent_msgs, c.recv_msgs), (1, 0, 0));
}

#[test]
fn client_messages_go_masked_in_their_turns_whatever_the_split() {
    let f = flow(conversation());
    let plan = WsPlan::new(&f, &f.request, false);
    assert_eq!(plan.expected(), 4);
    for step in [1, 3, 1 << 20] {
        let seen = converse(&plan, conversation(), None, step, None);
        let c = seen.result.unwrap();
        assert_eq!(
            c,
            WsCounts {
                conversations: 1,
                sent_msgs: 2,
                recv_msgs: 4,
                sent_bytes: 4,
                recv_bytes: 7 + 2 + 6 + 2,
            },
            "step {step}"
        );
        // the recorded ping is left out; the recorded close goes last
        let sent: Vec<(u8, &str)> = seen.frames.iter().map(|f| (f.0, f.1.as_str())).collect();
        assert_eq!(
            sent,
            [
                (ws::TEXT, "q1"),
                (ws::BINARY, "q2"),
                (ws::CLOSE, "\u{3}\u{fffd}bye")
            ]
        );
        assert!(seen.frames.iter().all(|f| f.2), "client frames are masked");
    }
}

#[test]
fn a_wrong_accept_or_a_refusal_fails_the_upgrade() {
    let f = flow(conversation());
    let plan = WsPlan::new(&f, &f.request, false);
    let seen = converse(
        &plan,
        conversation(),
        Some("s3pPLMBiTxaQ9kYGzzhZRbK+xOo="),
        7,
        None,
    );
    assert_eq!(seen.result, Err("ws-accept"));
    assert!(
        seen.frames.is_empty(),
        "nothing sent before the accept is checked"
    );
    let mut out = BytesMut::new();
    let mut conv = WsConversation::start(&plan, [1; 16], &mut out);
    let mut inb = BytesMut::from(&b"HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\n\r\n"[..]);
    assert_eq!(conv.feed(&mut inb, &mut out), Err("ws-upgrade"));
    let mut conv = WsConversation::start(&plan, [1; 16], &mut out);
    assert_eq!(conv.eof(), Err("io"), "closed before any answer");
}

#[test]
fn fewer_server_messages_than_recorded_is_short() {
    let f = flow(conversation());
    let plan = WsPlan::new(&f, &f.request, false);
    // the server drops the connection after the first client message
    let seen = converse(&plan, conversation(), None, 1 << 20, Some(1));
    assert_eq!(seen.result, Err("ws-short"));
    // a server close before the last expected message
    let mut short = conversation();
    short.retain(|m| m.data.as_slice() != b"a2");
    short.insert(4, m(false, ws::CLOSE, b"\x03\xe8"));
    let seen = converse(&plan, short, None, 1 << 20, None);
    assert_eq!(seen.result, Err("ws-short"));
}

#[test]
fn a_server_ping_gets_a_pong_and_is_not_a_message() {
    let msgs = vec![m(false, ws::PING, b"p"), m(false, ws::TEXT, b"hi")];
    let f = flow(msgs.clone());
    let plan = WsPlan::new(&f, &f.request, false);
    let seen = converse(&plan, msgs, None, 1 << 20, None);
    assert_eq!(seen.frames[0], (ws::PONG, "p".into(), true));
    assert_eq!(seen.result.unwrap().recv_msgs, 1);
}

#[test]
fn only_accepted_websocket_upgrades_are_conversations() {
    let mut f = flow(vec![]);
    assert!(is_websocket(&f));
    f.response.as_mut().unwrap().status = 200;
    assert!(!is_websocket(&f));
    let mut f = flow(vec![]);
    f.request.headers[1] = field("Upgrade", "h2c");
    assert!(!is_websocket(&f));
}
