//! SOCKS5 (RFC 1928) with username/password authentication (RFC 1929), sans-IO: each
//! parser takes the bytes received so far and says whether a whole message is there,
//! and the encoders give the bytes to send.
//!
//! Only CONNECT is served; BIND and UDP ASSOCIATE are answered "command not supported".

/// Method: no authentication.
pub const NO_AUTH: u8 = 0x00;
/// Method: username/password (RFC 1929).
pub const USER_PASS: u8 = 0x02;
/// Method reply: none of the client's methods is acceptable.
pub const NO_ACCEPTABLE: u8 = 0xff;

/// What a parser made of the bytes so far.
#[derive(Debug, PartialEq, Eq)]
pub enum Parsed<T> {
    /// More bytes are needed.
    Incomplete,
    /// A whole message, and how many bytes it took.
    Done(T, usize),
}

/// A malformed message; the text says what was wrong.
#[derive(Debug, PartialEq, Eq)]
pub struct Malformed(pub &'static str);

/// The authentication methods the client offers (its first message).
pub fn parse_greeting(b: &[u8]) -> Result<Parsed<Vec<u8>>, Malformed> {
    let Some(&ver) = b.first() else {
        return Ok(Parsed::Incomplete);
    };
    if ver != 5 {
        return Err(Malformed(if ver == 4 {
            "SOCKS4 is not supported (SOCKS5 only)"
        } else {
            "not a SOCKS5 greeting"
        }));
    }
    let Some(&n) = b.get(1) else {
        return Ok(Parsed::Incomplete);
    };
    if n == 0 {
        return Err(Malformed("SOCKS5 greeting offers no method"));
    }
    let end = 2 + n as usize;
    match b.get(2..end) {
        Some(m) => Ok(Parsed::Done(m.to_vec(), end)),
        None => Ok(Parsed::Incomplete),
    }
}

/// The server's choice of method.
pub fn method_reply(method: u8) -> [u8; 2] {
    [5, method]
}

/// Username and password from an RFC 1929 request.
#[derive(Debug, PartialEq, Eq)]
pub struct Credentials {
    /// Username bytes.
    pub username: Vec<u8>,
    /// Password bytes.
    pub password: Vec<u8>,
}

/// An RFC 1929 username/password request.
pub fn parse_credentials(b: &[u8]) -> Result<Parsed<Credentials>, Malformed> {
    let Some(&ver) = b.first() else {
        return Ok(Parsed::Incomplete);
    };
    if ver != 1 {
        return Err(Malformed("bad username/password version"));
    }
    let Some(&ulen) = b.get(1) else {
        return Ok(Parsed::Incomplete);
    };
    let u_end = 2 + ulen as usize;
    let Some(&plen) = b.get(u_end) else {
        return Ok(Parsed::Incomplete);
    };
    let p_end = u_end + 1 + plen as usize;
    if b.len() < p_end {
        return Ok(Parsed::Incomplete);
    }
    Ok(Parsed::Done(
        Credentials {
            username: b[2..u_end].to_vec(),
            password: b[u_end + 1..p_end].to_vec(),
        },
        p_end,
    ))
}

/// The answer to a username/password request.
pub fn auth_reply(ok: bool) -> [u8; 2] {
    [1, if ok { 0 } else { 1 }]
}

/// Where the client wants to go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Host {
    /// An IPv4 or IPv6 address.
    Ip(std::net::IpAddr),
    /// A name for the proxy to resolve (socks5h).
    Name(String),
}

/// A SOCKS5 request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    /// 1 CONNECT, 2 BIND, 3 UDP ASSOCIATE.
    pub command: u8,
    /// Destination host.
    pub host: Host,
    /// Destination port.
    pub port: u16,
}

/// Command: CONNECT.
pub const CONNECT: u8 = 1;

impl Request {
    /// "host:port", IPv6 in brackets: what hooks see as `target_addr`.
    pub fn target(&self) -> String {
        match &self.host {
            Host::Ip(std::net::IpAddr::V6(a)) => format!("[{a}]:{}", self.port),
            Host::Ip(a) => format!("{a}:{}", self.port),
            Host::Name(n) => format!("{n}:{}", self.port),
        }
    }

    /// The host as text (no brackets), for connecting and certificate names.
    pub fn host_text(&self) -> String {
        match &self.host {
            Host::Ip(a) => a.to_string(),
            Host::Name(n) => n.clone(),
        }
    }
}

/// A request whose address could not be read: answered with `Reply::AddressType`.
#[derive(Debug, PartialEq, Eq)]
pub enum BadRequest {
    /// Not SOCKS5, or a field out of range.
    Malformed(Malformed),
    /// An address type other than IPv4, name or IPv6.
    AddressType,
}

/// The request after the method negotiation.
pub fn parse_request(b: &[u8]) -> Result<Parsed<Request>, BadRequest> {
    if b.len() < 4 {
        if b.first().is_some_and(|&v| v != 5) {
            return Err(BadRequest::Malformed(Malformed("not a SOCKS5 request")));
        }
        return Ok(Parsed::Incomplete);
    }
    if b[0] != 5 {
        return Err(BadRequest::Malformed(Malformed("not a SOCKS5 request")));
    }
    let command = b[1];
    let (host, at) = match b[3] {
        1 => match b.get(4..8) {
            Some(a) => (
                Host::Ip(std::net::Ipv4Addr::new(a[0], a[1], a[2], a[3]).into()),
                8,
            ),
            None => return Ok(Parsed::Incomplete),
        },
        3 => {
            let Some(&n) = b.get(4) else {
                return Ok(Parsed::Incomplete);
            };
            let end = 5 + n as usize;
            let Some(name) = b.get(5..end) else {
                return Ok(Parsed::Incomplete);
            };
            if n == 0 {
                return Err(BadRequest::Malformed(Malformed("empty host name")));
            }
            let Ok(name) = std::str::from_utf8(name) else {
                return Err(BadRequest::Malformed(Malformed("host name is not UTF-8")));
            };
            (Host::Name(name.to_string()), end)
        }
        4 => match b.get(4..20) {
            Some(a) => {
                let mut o = [0u8; 16];
                o.copy_from_slice(a);
                (Host::Ip(std::net::Ipv6Addr::from(o).into()), 20)
            }
            None => return Ok(Parsed::Incomplete),
        },
        _ => return Err(BadRequest::AddressType),
    };
    let Some(p) = b.get(at..at + 2) else {
        return Ok(Parsed::Incomplete);
    };
    let port = u16::from_be_bytes([p[0], p[1]]);
    Ok(Parsed::Done(
        Request {
            command,
            host,
            port,
        },
        at + 2,
    ))
}

/// Reply codes (RFC 1928 section 6).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reply {
    /// 0x00.
    Succeeded,
    /// 0x01.
    GeneralFailure,
    /// 0x03.
    NetworkUnreachable,
    /// 0x04.
    HostUnreachable,
    /// 0x05.
    ConnectionRefused,
    /// 0x06.
    TtlExpired,
    /// 0x07.
    CommandNotSupported,
    /// 0x08.
    AddressType,
}

impl Reply {
    /// The code on the wire.
    pub fn code(self) -> u8 {
        match self {
            Reply::Succeeded => 0,
            Reply::GeneralFailure => 1,
            Reply::NetworkUnreachable => 3,
            Reply::HostUnreachable => 4,
            Reply::ConnectionRefused => 5,
            Reply::TtlExpired => 6,
            Reply::CommandNotSupported => 7,
            Reply::AddressType => 8,
        }
    }

    /// The reply for a failed connect.
    pub fn for_connect_error(e: &std::io::Error) -> Reply {
        use std::io::ErrorKind::*;
        match e.kind() {
            ConnectionRefused => Reply::ConnectionRefused,
            TimedOut => Reply::TtlExpired,
            HostUnreachable => Reply::HostUnreachable,
            NetworkUnreachable => Reply::NetworkUnreachable,
            _ => Reply::GeneralFailure,
        }
    }
}

/// A reply carrying `bound` (the proxy's address toward the target; 0.0.0.0:0 on failure).
pub fn reply(r: Reply, bound: std::net::SocketAddr) -> Vec<u8> {
    let mut out = vec![5, r.code(), 0];
    match bound.ip() {
        std::net::IpAddr::V4(a) => {
            out.push(1);
            out.extend_from_slice(&a.octets());
        }
        std::net::IpAddr::V6(a) => {
            out.push(4);
            out.extend_from_slice(&a.octets());
        }
    }
    out.extend_from_slice(&bound.port().to_be_bytes());
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn greeting_in_pieces() {
        let g = [5, 2, NO_AUTH, USER_PASS];
        for cut in 0..g.len() {
            assert_eq!(parse_greeting(&g[..cut]), Ok(Parsed::Incomplete), "{cut}");
        }
        assert_eq!(
            parse_greeting(&[5, 2, 0, 2, 9]),
            Ok(Parsed::Done(vec![0, 2], 4))
        );
        assert!(parse_greeting(&[4, 1, 0]).unwrap_err().0.contains("SOCKS4"));
        assert!(parse_greeting(b"GET / HTTP/1.1").is_err());
        assert!(parse_greeting(&[5, 0]).is_err());
    }

    #[test]
    fn credentials() {
        let c = [1, 3, b'b', b'o', b'b', 2, b'p', b'w'];
        for cut in 0..c.len() {
            assert_eq!(
                parse_credentials(&c[..cut]),
                Ok(Parsed::Incomplete),
                "{cut}"
            );
        }
        assert_eq!(
            parse_credentials(&c),
            Ok(Parsed::Done(
                Credentials {
                    username: b"bob".to_vec(),
                    password: b"pw".to_vec()
                },
                8
            ))
        );
        // empty username and password are well-formed (and then refused by the check)
        assert_eq!(
            parse_credentials(&[1, 0, 0]),
            Ok(Parsed::Done(
                Credentials {
                    username: vec![],
                    password: vec![]
                },
                3
            ))
        );
        assert!(parse_credentials(&[5, 0, 0]).is_err());
        assert_eq!(auth_reply(true), [1, 0]);
        assert_eq!(auth_reply(false), [1, 1]);
    }

    #[test]
    fn requests_of_each_address_type() {
        let v4 = [5, 1, 0, 1, 127, 0, 0, 1, 0x1f, 0x90];
        for cut in 0..v4.len() {
            assert_eq!(parse_request(&v4[..cut]), Ok(Parsed::Incomplete), "{cut}");
        }
        let Ok(Parsed::Done(r, 10)) = parse_request(&v4) else {
            panic!()
        };
        assert_eq!((r.command, r.target()), (CONNECT, "127.0.0.1:8080".into()));

        let mut name = vec![5, 1, 0, 3, 9];
        name.extend_from_slice(b"localhost");
        name.extend_from_slice(&443u16.to_be_bytes());
        let Ok(Parsed::Done(r, n)) = parse_request(&name) else {
            panic!()
        };
        assert_eq!(
            (n, r.target(), r.host_text()),
            (16, "localhost:443".into(), "localhost".into())
        );

        let mut v6 = vec![5, 1, 0, 4];
        v6.extend_from_slice(&std::net::Ipv6Addr::LOCALHOST.octets());
        v6.extend_from_slice(&80u16.to_be_bytes());
        let Ok(Parsed::Done(r, 22)) = parse_request(&v6) else {
            panic!()
        };
        assert_eq!(
            (r.target(), r.host_text()),
            ("[::1]:80".into(), "::1".into())
        );

        assert_eq!(
            parse_request(&[5, 1, 0, 9, 0, 0]),
            Err(BadRequest::AddressType)
        );
        assert!(matches!(
            parse_request(&[5, 1, 0, 3, 0, 0, 80]),
            Err(BadRequest::Malformed(_))
        ));
        assert!(matches!(
            parse_request(&[4, 1]),
            Err(BadRequest::Malformed(_))
        ));
    }

    #[test]
    fn replies() {
        let a: std::net::SocketAddr = "127.0.0.1:4242".parse().unwrap();
        assert_eq!(
            reply(Reply::Succeeded, a),
            vec![5, 0, 0, 1, 127, 0, 0, 1, 0x10, 0x92]
        );
        let z: std::net::SocketAddr = "[::]:0".parse().unwrap();
        let r = reply(Reply::ConnectionRefused, z);
        assert_eq!((r.len(), r[1], r[3]), (22, 5, 4));
        let refused = std::io::Error::from(std::io::ErrorKind::ConnectionRefused);
        assert_eq!(Reply::for_connect_error(&refused), Reply::ConnectionRefused);
        assert_eq!(method_reply(NO_ACCEPTABLE), [5, 0xff]);
    }
}
