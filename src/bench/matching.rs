//! Which recorded response answers a request: mitmproxy's server-replay key (method,
//! host, port, path, query, body, chosen headers), sans-IO.
//!
//! The origin listens on plain HTTP, so it cannot know the scheme the recorded client
//! used: the scheme is folded into the port (an authority without a port, or with 80 or
//! 443, matches either default), which keeps recorded https flows replayable over
//! plain HTTP behind a proxy that terminated TLS.

use rustc_hash::FxHashMap;

/// How requests are matched to recorded flows.
#[derive(Debug, Clone, Default)]
pub struct MatchOptions {
    /// Query parameters left out of the key (`--ignore-param`).
    pub ignore_params: Vec<String>,
    /// Form fields left out of the key (`--ignore-form-field`): of a urlencoded or
    /// multipart body, which is then keyed by its other fields instead of its bytes.
    pub ignore_form_fields: Vec<String>,
    /// Leave the body out of the key (`--ignore-body`).
    pub ignore_body: bool,
    /// Leave host and port out of the key (`--ignore-host`).
    pub ignore_host: bool,
    /// Header names whose values join the key (`--match-header`), lower case.
    pub match_headers: Vec<String>,
    /// Serve each recorded response once (`--pop`) instead of cycling through them.
    pub pop: bool,
}

/// The parts of a request the key is made of, borrowed.
#[derive(Debug, Clone, Copy)]
pub struct RequestView<'a> {
    /// Method token.
    pub method: &'a str,
    /// host[:port] (the Host header, or the authority).
    pub authority: &'a str,
    /// Path with query.
    pub target: &'a str,
    /// Header fields.
    pub headers: &'a [(&'a [u8], &'a [u8])],
    /// Body bytes.
    pub body: &'a [u8],
}

/// Pushes one key part, length-prefixed so that parts cannot run into each other.
fn part(key: &mut Vec<u8>, p: &[u8]) {
    key.extend_from_slice(&(p.len() as u32).to_le_bytes());
    key.extend_from_slice(p);
}

/// host (lower case) and port, with 80 and 443 folded to "no port" (see module doc).
fn host_port(authority: &str) -> (String, &str) {
    let (host, port) = match authority.rsplit_once(':') {
        // an IPv6 literal without port has ':' inside brackets only
        Some((h, p)) if !p.contains(']') && p.bytes().all(|c| c.is_ascii_digit()) => (h, p),
        _ => (authority, ""),
    };
    let port = if port == "80" || port == "443" {
        ""
    } else {
        port
    };
    (host.to_ascii_lowercase(), port)
}

/// The replay key of a request under `opts`.
pub fn key(req: &RequestView, opts: &MatchOptions) -> Vec<u8> {
    let mut k = Vec::with_capacity(64 + req.target.len());
    part(&mut k, req.method.as_bytes());
    if !opts.ignore_host {
        let (h, p) = host_port(req.authority);
        part(&mut k, h.as_bytes());
        part(&mut k, p.as_bytes());
    }
    let (path, query) = req.target.split_once('?').unwrap_or((req.target, ""));
    part(&mut k, path.as_bytes());
    // query parameters in their order, as mitmproxy's key keeps them, minus ignored ones
    for kv in query.split('&').filter(|s| !s.is_empty()) {
        let name = kv.split_once('=').map_or(kv, |(n, _)| n);
        if !opts.ignore_params.iter().any(|p| p == name) {
            part(&mut k, kv.as_bytes());
        }
    }
    k.push(0xff); // end of query
    if !opts.ignore_body {
        body_part(&mut k, req, &opts.ignore_form_fields);
    }
    for h in &opts.match_headers {
        let v = req
            .headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(h.as_bytes()))
            .map(|(_, v)| *v);
        match v {
            Some(v) => part(&mut k, v),
            None => k.push(0xfe),
        }
    }
    k
}

/// The body's part of the key: its bytes, or with form fields to ignore and a form
/// body, its other fields (decoded, in order), as mitmproxy's server replay does. A
/// form keyed by fields no longer depends on how it was encoded (the multipart
/// boundary, `+` or `%20`), only on its kind and fields.
fn body_part(k: &mut Vec<u8>, req: &RequestView, ignore: &[String]) {
    let ct = req
        .headers
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case(b"content-type"))
        .map(|(_, v)| *v);
    let form = match ct {
        Some(ct) if !ignore.is_empty() => super::form::fields(ct, req.body),
        _ => None,
    };
    let Some((kind, form)) = form else {
        part(k, req.body);
        return;
    };
    // fields, not bytes, follow; the kind of form stays in the key, as in mitmproxy
    k.push(match kind {
        super::form::FormKind::UrlEncoded => 0xfd,
        super::form::FormKind::Multipart => 0xfc,
    });
    for (name, value) in &form {
        if !ignore.iter().any(|i| i.as_bytes() == &name[..]) {
            part(k, name);
            part(k, value);
        }
    }
    k.push(0xff);
}

/// Recorded responses by key, each list served in recorded order.
#[derive(Debug, Default)]
pub struct ReplayTable {
    map: FxHashMap<Vec<u8>, Slot>,
    opts: MatchOptions,
}

#[derive(Debug, Default)]
struct Slot {
    flows: Vec<usize>,
    next: usize,
}

/// What a lookup found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lookup {
    /// Serve this flow (index given to `insert`).
    Hit(usize),
    /// No recorded request has this key.
    NoMatch,
    /// The key was recorded but every response was served already (`--pop`).
    Exhausted,
}

impl ReplayTable {
    /// An empty table matching with `opts`.
    pub fn new(opts: MatchOptions) -> Self {
        ReplayTable {
            map: FxHashMap::default(),
            opts,
        }
    }

    /// Adds recorded flow `idx` under its request's key.
    pub fn insert(&mut self, req: &RequestView, idx: usize) {
        let k = key(req, &self.opts);
        self.map.entry(k).or_default().flows.push(idx);
    }

    /// Number of distinct keys.
    pub fn keys(&self) -> usize {
        self.map.len()
    }

    /// The flow that answers `req`: the next in recorded order, cycling unless popping.
    pub fn lookup(&mut self, req: &RequestView) -> Lookup {
        let k = key(req, &self.opts);
        let Some(slot) = self.map.get_mut(&k) else {
            return Lookup::NoMatch;
        };
        if slot.next >= slot.flows.len() {
            if self.opts.pop {
                return Lookup::Exhausted;
            }
            slot.next = 0;
        }
        let i = slot.flows[slot.next];
        slot.next += 1;
        Lookup::Hit(i)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req<'a>(m: &'a str, a: &'a str, t: &'a str, body: &'a [u8]) -> RequestView<'a> {
        RequestView {
            method: m,
            authority: a,
            target: t,
            headers: &[],
            body,
        }
    }

    #[test]
    fn key_parts_all_count() {
        let o = MatchOptions::default();
        let base = key(&req("GET", "a.test", "/p?x=1", b""), &o);
        assert_ne!(base, key(&req("POST", "a.test", "/p?x=1", b""), &o));
        assert_ne!(base, key(&req("GET", "b.test", "/p?x=1", b""), &o));
        assert_ne!(base, key(&req("GET", "a.test:8080", "/p?x=1", b""), &o));
        assert_ne!(base, key(&req("GET", "a.test", "/q?x=1", b""), &o));
        assert_ne!(base, key(&req("GET", "a.test", "/p?x=2", b""), &o));
        assert_ne!(base, key(&req("GET", "a.test", "/p?x=1", b"b"), &o));
        // default ports and host case fold; parts cannot run into each other
        assert_eq!(base, key(&req("GET", "A.test:443", "/p?x=1", b""), &o));
        assert_eq!(base, key(&req("GET", "a.test:80", "/p?x=1", b""), &o));
        assert_ne!(
            key(&req("GET", "a", "/p?x=1&y", b""), &o),
            key(&req("GET", "a", "/p?x=1y", b""), &o)
        );
    }

    #[test]
    fn options_drop_parts() {
        let o = MatchOptions {
            ignore_params: vec!["ts".into()],
            ignore_body: true,
            ignore_host: true,
            ..Default::default()
        };
        assert_eq!(
            key(&req("POST", "a.test", "/p?ts=1&x=2", b"one"), &o),
            key(&req("POST", "b.test:9", "/p?x=2&ts=9", b"two"), &o)
        );
        assert_ne!(
            key(&req("POST", "a.test", "/p?x=2", b""), &o),
            key(&req("POST", "a.test", "/p?x=3", b""), &o)
        );
    }

    #[test]
    fn ignored_form_fields_leave_the_key() {
        let o = MatchOptions {
            ignore_form_fields: vec!["csrf".into(), "ts".into()],
            ..Default::default()
        };
        // the key of a POST with this content-type and body
        let form = |ct: &[u8], body: &[u8], o: &MatchOptions| {
            let h: [(&[u8], &[u8]); 1] = [(b"Content-Type", ct)];
            let r = RequestView {
                headers: &h,
                ..req("POST", "a.test", "/login", body)
            };
            key(&r, o)
        };
        let url = &b"application/x-www-form-urlencoded"[..];
        let a = form(url, b"user=ann&csrf=1111&ts=5", &o);
        assert_eq!(a, form(url, b"csrf=2222&user=ann", &o));
        assert_eq!(a, form(url, b"us%65r=ann&csrf=", &o), "compared decoded");
        assert_ne!(a, form(url, b"user=bob&csrf=1111", &o));
        // multipart: by field, whatever the boundary a client chose
        let m1 = form(
            b"multipart/form-data; boundary=AAA",
            b"--AAA\r\nContent-Disposition: form-data; name=\"user\"\r\n\r\nann\r\n--AAA\r\nContent-Disposition: form-data; name=\"csrf\"\r\n\r\n1\r\n--AAA--\r\n",
            &o,
        );
        let m2 = form(
            b"multipart/form-data; boundary=BB",
            b"--BB\r\nContent-Disposition: form-data; name=\"user\"\r\n\r\nann\r\n--BB\r\nContent-Disposition: form-data; name=\"csrf\"\r\n\r\n2\r\n--BB--\r\n",
            &o,
        );
        assert_eq!(m1, m2);
        assert_ne!(m1, a, "the same fields urlencoded are another request");
        // not a form: the bytes count, ignored names or not
        let json = &b"application/json"[..];
        assert_ne!(
            form(json, b"{\"csrf\":1}", &o),
            form(json, b"{\"csrf\":2}", &o)
        );
        // without the flag, a form is its bytes, as before
        let plain = MatchOptions::default();
        assert_ne!(
            form(url, b"user=ann&csrf=1", &plain),
            form(url, b"user=ann&csrf=2", &plain)
        );
        // --ignore-body still wins
        let both = MatchOptions {
            ignore_body: true,
            ..o.clone()
        };
        assert_eq!(form(url, b"user=ann", &both), form(url, b"user=bob", &both));
    }

    #[test]
    fn match_headers_join_the_key() {
        let o = MatchOptions {
            match_headers: vec!["accept".into()],
            ..Default::default()
        };
        let h1: [(&[u8], &[u8]); 1] = [(b"Accept", b"text/html")];
        let h2: [(&[u8], &[u8]); 1] = [(b"accept", b"application/json")];
        let mut a = req("GET", "a", "/", b"");
        let mut b = a;
        a.headers = &h1;
        b.headers = &h2;
        assert_ne!(key(&a, &o), key(&b, &o));
        assert_ne!(key(&a, &o), key(&req("GET", "a", "/", b""), &o));
    }

    #[test]
    fn reuse_cycles_and_pop_exhausts() {
        for pop in [false, true] {
            let mut t = ReplayTable::new(MatchOptions {
                pop,
                ..Default::default()
            });
            let r = req("GET", "a", "/", b"");
            t.insert(&r, 7);
            t.insert(&r, 9);
            assert_eq!(t.lookup(&r), Lookup::Hit(7));
            assert_eq!(t.lookup(&r), Lookup::Hit(9));
            let third = if pop {
                Lookup::Exhausted
            } else {
                Lookup::Hit(7)
            };
            assert_eq!(t.lookup(&r), third);
            assert_eq!(t.lookup(&req("GET", "a", "/x", b"")), Lookup::NoMatch);
        }
    }
}
