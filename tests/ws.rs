//! The WebSocket layer through the real binary: a raw-socket client and an echoing
//! WebSocket origin (framing from `luring::proto::ws`), with ws.* plugins.

mod support;

use bytes::{Bytes, BytesMut};
use luring::proto::ws::{self, Frame, FrameDecoder};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use support::*;

/// What the origin saw: the upgrade request's headers and every frame it received.
#[derive(Default)]
struct Seen {
    headers: Vec<(String, String)>,
    frames: Vec<Frame>,
}

/// Accepts the upgrade, then echoes every frame (a close too, then it hangs up), and
/// drops the TCP connection on a text frame containing "drop".
fn ws_origin(seen: Arc<Mutex<Seen>>) -> Origin {
    Origin::start(handler(move |ex| {
        seen.lock().unwrap().headers = ex.req.headers.clone();
        ex.write(
            b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
              Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\r\n",
        )?;
        let s = ex.stream();
        s.set_read_timeout(Some(Duration::from_secs(10)))?;
        let dec = FrameDecoder::new(1 << 24);
        let mut buf = BytesMut::new();
        let mut tmp = vec![0u8; 65536];
        loop {
            while let Some(f) = dec.decode(&mut buf).expect("client frames are valid") {
                seen.lock().unwrap().frames.push(f.clone());
                if f.opcode == ws::TEXT && f.payload.windows(4).any(|w| w == b"drop") {
                    return Ok(Next::Close);
                }
                let mut out = BytesMut::new();
                ws::encode(
                    &Frame {
                        mask: None,
                        ..f.clone()
                    },
                    &mut out,
                );
                s.write_all(&out)?;
                if f.opcode == ws::CLOSE {
                    return Ok(Next::Close);
                }
            }
            let n = s.read(&mut tmp)?;
            if n == 0 {
                return Ok(Next::Close);
            }
            buf.extend_from_slice(&tmp[..n]);
        }
    }))
}

/// A client connection after a successful upgrade through `proxy`.
struct WsClient {
    s: TcpStream,
    buf: BytesMut,
}

impl WsClient {
    fn open(proxy: &Proxy, origin: &Origin) -> WsClient {
        let (s, status, _) = Self::try_open(proxy, origin);
        assert_eq!(status, 101, "{}", proxy.stderr());
        WsClient {
            s,
            buf: BytesMut::new(),
        }
    }

    /// Sends the upgrade request; returns the socket, the status and the head.
    fn try_open(proxy: &Proxy, origin: &Origin) -> (TcpStream, u16, String) {
        let mut s = TcpStream::connect(proxy.addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        write!(
            s,
            "GET {}/chat HTTP/1.1\r\nHost: 127.0.0.1:{}\r\nConnection: Upgrade\r\n\
             Upgrade: websocket\r\nSec-WebSocket-Version: 13\r\n\
             Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
             Sec-WebSocket-Extensions: permessage-deflate\r\n\r\n",
            origin.url(),
            origin.port()
        )
        .unwrap();
        let mut head = Vec::new();
        let mut b = [0u8; 1];
        while !head.ends_with(b"\r\n\r\n") {
            match s.read(&mut b) {
                Ok(1) => head.push(b[0]),
                _ => break,
            }
        }
        let head = String::from_utf8_lossy(&head).into_owned();
        let status = head
            .split(' ')
            .nth(1)
            .and_then(|x| x.parse().ok())
            .unwrap_or(0);
        (s, status, head)
    }

    fn send(&mut self, fin: bool, opcode: u8, payload: &[u8]) {
        let mut out = BytesMut::new();
        ws::encode(
            &Frame {
                fin,
                rsv1: false,
                opcode,
                mask: Some([0x11, 0x22, 0x33, 0x44]),
                payload: Bytes::copy_from_slice(payload),
            },
            &mut out,
        );
        self.s.write_all(&out).unwrap();
    }

    /// The next frame from the proxy; None when the connection closed.
    fn recv(&mut self) -> Option<Frame> {
        let dec = FrameDecoder::new(1 << 24);
        let mut tmp = vec![0u8; 65536];
        loop {
            if let Some(f) = dec.decode(&mut self.buf).expect("proxy frames are valid") {
                return Some(f);
            }
            match self.s.read(&mut tmp) {
                Ok(n) if n > 0 => self.buf.extend_from_slice(&tmp[..n]),
                _ => return None,
            }
        }
    }
}

fn plugin(dir: &TempDir, src: &str) -> String {
    let p = dir.path("ws.lua");
    std::fs::write(&p, src).unwrap();
    p.to_string_lossy().into_owned()
}

const HOOKS: &str = r#"
register_hook("ws", "on_upgrade", function(m) m.headers:set("x-upgrade-seen", m.path) end)
register_hook("ws", "on_upgrade", function(m)
  log.info("POSTUP ext=" .. tostring(m.headers["sec-websocket-extensions"]) ..
    " upgrade=" .. tostring(m.headers["upgrade"]) .. " connection=" .. tostring(m.headers["connection"]))
end, { phase = "post_pipeline" })
register_hook("ws", "on_message", function(m, ctx)
  log.info(string.format("WSMSG op=%d client=%s masked=%s fin=%s len=%d code=%s reason=%s",
    m.opcode, tostring(m.from_client), tostring(m.masked), tostring(m.fin), #m.payload,
    tostring(m.close_code), tostring(m.close_reason)))
  if m.opcode == 1 and m.from_client then m.payload = "<" .. m.payload .. ">" end
  if m.opcode == 1 and not m.from_client then m.payload = m.payload .. "!" end
end)
register_hook("ws", "on_close", function(d)
  log.info(string.format("WSCLOSE code=%d reason=%s masked=%s opcode=%d",
    d.close_code, d.close_reason, tostring(d.masked), d.opcode))
end)
"#;

#[test]
fn messages_run_the_hooks_both_ways_and_the_close_is_reported() {
    let seen = Arc::new(Mutex::new(Seen::default()));
    let origin = ws_origin(seen.clone());
    let dir = TempDir::new("ws");
    let proxy = Proxy::start(&["--plugin", &plugin(&dir, HOOKS)]);
    let mut c = WsClient::open(&proxy, &origin);

    c.send(true, ws::TEXT, b"hi");
    let f = c.recv().unwrap();
    assert_eq!(
        (f.opcode, f.mask, f.payload.as_ref()),
        (ws::TEXT, None, &b"<hi>!"[..])
    );

    // a fragmented message, with a ping between its fragments
    c.send(false, ws::TEXT, b"frag");
    c.send(true, ws::PING, b"p");
    c.send(true, ws::CONTINUATION, b"mented");
    let pong_or_ping = c.recv().unwrap();
    assert_eq!(
        (pong_or_ping.opcode, pong_or_ping.payload.as_ref()),
        (ws::PING, &b"p"[..])
    );
    let f = c.recv().unwrap();
    assert_eq!(f.payload.as_ref(), b"<fragmented>!");

    // binary payloads pass as they are, large ones too
    let big: Vec<u8> = (0..300_000u32).map(|i| (i * 7) as u8).collect();
    c.send(true, ws::BINARY, &big);
    let f = c.recv().unwrap();
    assert!(f.opcode == ws::BINARY && f.payload.as_ref() == big.as_slice());

    c.send(true, ws::CLOSE, &ws::close_payload(1000, "bye"));
    let f = c.recv().unwrap();
    assert_eq!(ws::parse_close(&f.payload), (Some(1000), "bye".into()));
    assert!(c.recv().is_none(), "closed after the close handshake");

    let want = "WSCLOSE code=1000 reason=bye masked=true opcode=8";
    assert!(
        proxy.wait_stderr(want, Duration::from_secs(5)),
        "{}",
        proxy.stderr()
    );
    let log = proxy.stderr();
    // post_pipeline sees the handshake as it is sent
    assert!(
        log.contains("POSTUP ext=nil upgrade=websocket connection=upgrade"),
        "{log}"
    );
    assert!(
        log.contains("WSMSG op=1 client=true masked=true fin=true len=2"),
        "{log}"
    );
    assert!(
        log.contains("WSMSG op=1 client=false masked=false fin=true len=4"),
        "{log}"
    );
    assert!(log.contains("WSMSG op=9 client=true"), "{log}");
    assert!(
        log.contains("WSMSG op=8 client=true masked=true fin=true len=5 code=1000 reason=bye"),
        "{log}"
    );

    // the origin got the client's frames masked, the fragments as one frame
    let s = seen.lock().unwrap();
    let header = |n: &str| {
        s.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(n))
            .map(|(_, v)| v.clone())
    };
    assert_eq!(header("x-upgrade-seen").as_deref(), Some("/chat"));
    assert_eq!(
        header("sec-websocket-extensions"),
        None,
        "compression is not offered"
    );
    let texts: Vec<&[u8]> = s
        .frames
        .iter()
        .filter(|f| f.opcode == ws::TEXT)
        .map(|f| f.payload.as_ref())
        .collect();
    assert_eq!(texts, [&b"<hi>"[..], &b"<fragmented>"[..]]);
    assert!(s.frames.iter().all(|f| f.mask.is_some() && f.fin));
}

#[test]
fn an_upstream_that_drops_the_connection_is_an_abnormal_closure() {
    let seen = Arc::new(Mutex::new(Seen::default()));
    let origin = ws_origin(seen);
    let dir = TempDir::new("ws");
    let proxy = Proxy::start(&["--plugin", &plugin(&dir, HOOKS)]);
    let mut c = WsClient::open(&proxy, &origin);
    c.send(true, ws::TEXT, b"drop");
    assert!(c.recv().is_none());
    assert!(
        proxy.wait_stderr("WSCLOSE code=1006", Duration::from_secs(5)),
        "{}",
        proxy.stderr()
    );
}

#[test]
fn on_upgrade_drop_and_respond_keep_the_upgrade_from_the_upstream() {
    let seen = Arc::new(Mutex::new(Seen::default()));
    let origin = ws_origin(seen);
    let dir = TempDir::new("ws");
    let p = plugin(
        &dir,
        r#"register_hook("ws", "on_upgrade", function(m)
             if m.headers["x-mode"] == "drop" then return action.DROP end
             return action.RESPOND{ status = 403, body = "no sockets" }
           end)"#,
    );
    let proxy = Proxy::start(&["--plugin", &p]);
    let (_s, status, head) = WsClient::try_open(&proxy, &origin);
    assert_eq!(status, 403, "{head}");
    let mut c = Client::connect(proxy.addr);
    c.send(
        format!(
            "GET {}/ HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\
             x-mode: drop\r\n\r\n",
            origin.url()
        )
        .as_bytes(),
    );
    assert!(c.closed_within(Duration::from_secs(5)));
    assert_eq!(origin.accepted(), 0);
    // a plain request is not a WebSocket handshake: on_upgrade does not run
    let out = curl(&["-x", &proxy.url(), &format!("{}/plain", origin.url())]);
    assert_ne!(out.status, 403, "{out:?}");
}

#[test]
fn a_protocol_error_ends_both_sides() {
    let seen = Arc::new(Mutex::new(Seen::default()));
    let origin = ws_origin(seen);
    let dir = TempDir::new("ws");
    let proxy = Proxy::start(&["--plugin", &plugin(&dir, HOOKS)]);
    let mut c = WsClient::open(&proxy, &origin);
    c.s.write_all(&[0x83, 0x80, 1, 2, 3, 4]).unwrap(); // reserved opcode 3
    assert!(c.recv().is_none());
    assert!(proxy.wait_stderr("reserved opcode", Duration::from_secs(5)));
    assert!(proxy.wait_stderr("WSCLOSE code=1006", Duration::from_secs(5)));
}

/// `--record` without any ws hook: the messages are read as frames anyway, and kept in
/// the flow of the upgrade, in order, with their direction.
#[test]
fn messages_are_recorded_without_hooks() {
    use luring::flows::record::Record;
    let seen = Arc::new(Mutex::new(Seen::default()));
    let origin = ws_origin(seen);
    let dir = TempDir::new("ws-rec");
    let file = dir.path("t.flows");
    let proxy = Proxy::start(&["--record", file.to_str().unwrap()]);
    let mut c = WsClient::open(&proxy, &origin);
    c.send(true, 1, b"hello");
    assert_eq!(&c.recv().unwrap().payload[..], b"hello");
    c.send(true, 2, &[0, 1, 2, 255]);
    assert_eq!(&c.recv().unwrap().payload[..], &[0, 1, 2, 255]);
    c.send(true, 8, &[3, 232]);
    let _ = c.recv();
    drop(c);
    let mut flow = None;
    wait_until(Duration::from_secs(10), || {
        flow = luring::flows::file::open(&file)
            .unwrap()
            .find_map(|r| match r {
                Ok(Record::Http(f)) => Some(f),
                _ => None,
            });
        flow.is_some()
    });
    let f = flow.expect("a recorded flow");
    assert_eq!(f.response.as_ref().unwrap().status, 101);
    let msgs: Vec<(bool, u8, Vec<u8>)> = f
        .websocket
        .iter()
        .map(|m| (m.from_client, m.opcode, m.data.to_vec()))
        .collect();
    assert_eq!(
        &msgs[..4],
        &[
            (true, 1, b"hello".to_vec()),
            (false, 1, b"hello".to_vec()),
            (true, 2, vec![0, 1, 2, 255]),
            (false, 2, vec![0, 1, 2, 255]),
        ]
    );
    assert!(msgs.iter().any(|m| m.0 && m.1 == 8), "{msgs:?}");
}
