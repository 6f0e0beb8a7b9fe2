use super::*;
use crate::flows::record::*;
use serde_bytes::ByteBuf;
use std::io::Write;

fn body(b: &[u8]) -> BodyRec {
    BodyRec {
        data: ByteBuf::from(b.to_vec()),
        size: b.len() as u64,
        cut: false,
    }
}

fn get(authority: &str, path: &str) -> HttpFlow {
    HttpFlow {
        id: 1,
        client: "127.0.0.1:5000".into(),
        server: "10.0.0.2:443".into(),
        request: RequestRec {
            method: "GET".into(),
            scheme: "https".into(),
            authority: authority.into(),
            path: path.into(),
            version: "HTTP/1.1".into(),
            headers: vec![field("Host", authority), field("Accept", "*/*")],
            ..Default::default()
        },
        response: Some(ResponseRec {
            status: 200,
            reason: "OK".into(),
            version: "HTTP/1.1".into(),
            headers: vec![field("Content-Type", "text/html; charset=utf-8")],
            body: body(b"<html>Hello World</html>"),
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn m(expr: &str, f: &HttpFlow) -> bool {
    Filter::parse(expr)
        .unwrap_or_else(|e| panic!("{e}"))
        .matches(FlowRef::Http(f))
}

fn err(expr: &str) -> ParseError {
    match Filter::parse(expr) {
        Ok(f) => panic!("{expr:?} parsed as {f:?}"),
        Err(e) => e,
    }
}

#[test]
fn operators_on_a_plain_get() {
    let f = get("api.example.com", "/v1/items?x=1");
    assert!(m("~d example.com", &f));
    assert!(m("~d EXAMPLE", &f), "~d ignores case");
    assert!(!m("~d other.org", &f));
    assert!(m("~u https://api.example.com/v1", &f));
    assert!(m("items", &f), "a bare word is ~u");
    assert!(m("~m get", &f), "~m ignores case");
    assert!(!m("~m POST", &f));
    assert!(m("~c 200", &f));
    assert!(!m("~c 404", &f));
    assert!(m("~h \"Accept: \\*/\\*\"", &f));
    assert!(m("~hq ^Host:", &f));
    assert!(!m("~hs ^Host:", &f));
    assert!(m("~hs \"^Content-Type: text/html\"", &f));
    assert!(
        !m("~h content-type", &f),
        "~h is case-sensitive, like mitmproxy"
    );
    assert!(m("~b Hello", &f));
    assert!(m("~bs World", &f));
    assert!(!m("~bq Hello", &f));
    assert!(m("~t html", &f));
    assert!(m("~ts html", &f));
    assert!(!m("~tq html", &f));
    assert!(m("~s", &f) && !m("~q", &f) && m("~http", &f) && !m("~tcp", &f));
    assert!(!m("~e", &f) && !m("~websocket", &f) && !m("~a", &f) && m("~all", &f));
    assert!(m("~src 127.0.0.1:5000", &f) && m("~dst :443$", &f));
}

#[test]
fn boolean_operators_and_precedence() {
    let f = get("a.test", "/x");
    assert!(m("~d a.test & ~m GET", &f));
    assert!(!m("~d a.test & ~m POST", &f));
    assert!(m("~m POST | ~d a.test", &f));
    assert!(m("!~m POST", &f));
    assert!(m("! ~m POST & ~c 200", &f), "! binds tighter than &");
    assert!(!m("!(~m GET | ~m POST)", &f));
    assert!(m("!!~s", &f));
    // & binds tighter than |: (false & false) | true.
    assert!(m("~m POST & ~c 500 | ~d a.test", &f));
    // Side by side at the top level is an and, looser than |.
    assert!(m("~m POST | ~c 200 ~d a.test", &f));
    assert!(!m("~m GET ~c 500", &f));
    assert!(!m("(~q)", &f) && m("( ~s )", &f), "luring takes (~q) too");
}

#[test]
fn words_and_quotes_follow_pyparsing() {
    let f = get("a.test", "/x|y");
    // A bare word runs to a space, a parenthesis, a quote or ~: `|` is part of it.
    assert!(matches!(Filter::parse("foo|bar").unwrap(), Filter::Url(_)));
    // Escapes in quotes: \x is x, \t is a tab.
    match Filter::parse(r#"~u "a\.b\tc\"d""#).unwrap() {
        Filter::Url(r) => assert_eq!(r.as_str(), "a.b\tc\"d"),
        other => panic!("{other:?}"),
    }
    assert!(
        m("'x\\\\|y'", &f),
        "quoted \\\\ is a backslash: the regex x\\|y"
    );
    assert!(m("~u \"/x\" ~s", &f));
}

#[test]
fn parse_errors_say_where() {
    let e = err("~m GET & ~d");
    assert_eq!(e.pos, 11);
    assert!(e.msg.contains("~d needs a regex"), "{e}");
    assert!(e.to_string().contains("column 12"), "{e}");
    assert_eq!(err("~q&~s").pos, 2);
    assert!(err("~bogus x").msg.contains("unknown operator ~bogus"));
    assert!(err("~marked").msg.contains("do not support"));
    assert_eq!(err("(~q").msg, "expected ')'");
    assert_eq!(err("~q )").pos, 3);
    assert!(err("~c 20x").msg.contains("status code"));
    assert!(err("\"abc").msg.contains("unterminated"));
    assert!(err("~u (").msg.contains("needs a regex"));
    assert!(err("~u [").msg.contains("bad regex"));
    assert!(err("").msg.contains("empty"));
    assert!(err("~d a | ").msg.contains("expected an expression"));
    // The caret sits under the problem, counted in characters.
    let e = err("é ~zz");
    assert!(e.to_string().ends_with("\n  é ~zz\n    ^"), "{e}");
}

#[test]
fn hosts_urls_and_http2() {
    let mut f = get("10.0.0.1:8443", "/p");
    f.request.headers = vec![field("Host", "named.test:8443")];
    assert!(m("~d ^10\\.0\\.0\\.1$", &f), "the connection's host");
    assert!(m("~d ^named.test$", &f), "the Host header's host");
    assert!(m("~u ^https://named.test:8443/p$", &f));
    f.request.version = "HTTP/2".into();
    f.request.authority = "h2.test".into();
    f.request.headers.clear();
    assert!(m("~u ^https://h2.test/p$", &f));
}

#[test]
fn bodies_are_decoded_and_binary() {
    let mut f = get("a.test", "/");
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(b"secret token inside").unwrap();
    let resp = f.response.as_mut().unwrap();
    resp.headers.push(field("Content-Encoding", "gzip"));
    resp.body = body(&gz.finish().unwrap());
    assert!(m("~bs \"secret token\"", &f));
    f.request.body = body(&[0, 0xff, b'\n', 0xfe, b'z']);
    assert!(m("~bq \\xff.\\xfe", &f), "DOTALL, bytes");
    assert!(!m("~bq Z", &f), "~b is case-sensitive");
    f.request.body = body("naïve".as_bytes());
    assert!(
        m("~bq ï", &f),
        "a non-ASCII literal matches its UTF-8 bytes"
    );
}

#[test]
fn websocket_error_asset_and_tunnels() {
    let mut f = get("a.test", "/ws");
    f.request.headers.push(field("Upgrade", "websocket"));
    f.response.as_mut().unwrap().status = 101;
    assert!(m("~websocket", &f), "a 101 to Upgrade: websocket");
    f.websocket.push(WsMessageRec {
        from_client: false,
        opcode: 1,
        data: ByteBuf::from(b"tick 42".to_vec()),
        ..Default::default()
    });
    assert!(m("~bs tick", &f) && !m("~bq tick", &f) && m("~b 42", &f));

    let mut g = get("a.test", "/app.js");
    g.response.as_mut().unwrap().headers = vec![field("content-type", "application/javascript")];
    assert!(m("~a", &g));
    g.response = None;
    g.error = Some("connection refused".into());
    assert!(m("~e & ~q", &g) && !m("~c 200", &g) && !m("~a", &g));

    let t = TunnelFlow {
        client: "127.0.0.1:9".into(),
        server: "1.2.3.4:443".into(),
        target: "b.test:443".into(),
        chunks: vec![RawChunkRec {
            from_client: true,
            ts: 0,
            data: ByteBuf::from(b"\x16\x03\x01hello".to_vec()),
        }],
        ..Default::default()
    };
    let tm = |e: &str| Filter::parse(e).unwrap().matches(FlowRef::Tunnel(&t));
    assert!(tm("~tcp") && tm("~all") && !tm("~http") && !tm("~s") && !tm("~q"));
    assert!(tm("~bq hello") && !tm("~bs hello") && !tm("~e"));
    assert!(
        !tm("~d b.test") && !tm("b.test"),
        "URL operators are HTTP-only"
    );
    assert!(tm("~dst 1.2.3.4") && tm("!~src 10."));
}

#[test]
fn notes_are_meta() {
    let mut f = get("a.test", "/");
    f.notes = vec![
        ("plugin".into(), "auth".into()),
        ("user".into(), "bob".into()),
    ];
    assert!(m("~meta \"^user: bob$\"", &f));
    assert!(!m("~meta carol", &f));
}

#[test]
fn random_input_never_panics() {
    // Pieces that stress the tokenizer: operators, quotes, escapes, multibyte text.
    const PIECES: &[&str] = &[
        "~d",
        "~c",
        "~q",
        "~h",
        "~b",
        "~",
        "!",
        "&",
        "|",
        "(",
        ")",
        "\"",
        "'",
        "\\",
        " ",
        "a",
        "é",
        "200",
        "[",
        "~websocket",
        "\t",
        "~src",
        ".*",
    ];
    let f = get("a.test", "/");
    let mut seed: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut parsed = 0;
    for _ in 0..5000 {
        let mut s = String::new();
        for _ in 0..(seed % 9) {
            seed = seed
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            s.push_str(PIECES[(seed >> 33) as usize % PIECES.len()]);
        }
        match Filter::parse(&s) {
            Ok(x) => {
                parsed += 1;
                x.matches(FlowRef::Http(&f));
            }
            Err(e) => {
                assert!(
                    e.pos <= s.len() && s.is_char_boundary(e.pos),
                    "{s:?}: {e:?}"
                );
                let _ = e.to_string();
            }
        }
        seed = seed.rotate_left(7) ^ 0xdead_beef;
    }
    assert!(
        parsed > 100,
        "only {parsed} inputs parsed: the generator is too narrow"
    );
}
