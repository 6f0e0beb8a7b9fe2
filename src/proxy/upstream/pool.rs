//! The per-worker keep-alive pool of upstream connections, keyed by (scheme, host, port).

use super::connect::Upstream;
use crate::io::{coarse_ms, Stream};
use bytes::BytesMut;
use rustc_hash::FxHashMap;
use std::cell::RefCell;
use std::net::{Shutdown, SocketAddr};
use std::rc::Rc;
use std::time::Duration;

/// Pool key. Cheap to clone (shared strings): a connection keeps the key of its last
/// request and reuses it while requests go to the same place.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Key {
    /// "http" or "https".
    pub scheme: Rc<str>,
    /// Host as named by the request.
    pub host: Rc<str>,
    /// Port.
    pub port: u16,
}

impl Key {
    /// The key of a request to `authority` ("host[:port]") with `scheme`.
    pub fn new(scheme: &str, authority: &str) -> Key {
        let (host, port) = crate::http::host_port_of(scheme, authority);
        Key {
            scheme: scheme.into(),
            host: host.into(),
            port,
        }
    }
}

struct Idle {
    stream: Stream,
    /// Kept so the next exchange reads into the spare capacity left by this one.
    buf: BytesMut,
    addr: SocketAddr,
    /// When it went idle, in [`coarse_ms`].
    since: u64,
    via_chain: bool,
    /// It carried an exchange: nothing may arrive on it until the next request.
    carried: bool,
}

/// Per-worker pool of idle upstream connections (no locks: one worker owns it).
pub struct Pool {
    idle: RefCell<FxHashMap<Key, Vec<Idle>>>,
    max_idle: usize,
    idle_timeout: Duration,
}

impl Pool {
    /// An empty pool.
    pub fn new(max_idle: usize, idle_timeout: Duration) -> Pool {
        Pool {
            idle: RefCell::new(FxHashMap::default()),
            max_idle,
            idle_timeout,
        }
    }

    /// Takes the most recently used idle connection for `key`, if one is fresh enough.
    /// Each candidate that carried an exchange is first checked with a non-blocking
    /// peek and skipped when the upstream has closed it meanwhile, or has sent bytes
    /// nobody asked for: those would be read as the response to the next request,
    /// another client's perhaps (response queue poisoning), so such a connection is
    /// closed, never reused. One made ahead of a client's handshake and not used yet
    /// is not probed: TLS records the upstream sends after its handshake (session
    /// tickets) may still be waiting there, unread.
    pub fn take(&self, key: &Key) -> Option<Upstream> {
        let mut map = self.idle.borrow_mut();
        let list = map.get_mut(key)?;
        while let Some(i) = list.pop() {
            if self.fresh(i.since) && (!i.carried || i.stream.is_idle_and_open()) {
                let base = i.stream.bytes_moved();
                return Some(Upstream {
                    stream: i.stream,
                    buf: i.buf,
                    addr: i.addr,
                    reused: true,
                    tls_info: None,
                    base,
                    via_chain: i.via_chain,
                });
            }
            i.stream.shutdown(Shutdown::Both);
        }
        None
    }

    /// Returns a connection whose last exchange completed cleanly.
    pub fn put(&self, key: Key, up: Upstream) {
        self.keep(key, up, true);
    }

    /// Pools a connection made ahead of a client's request, which carried none yet.
    pub fn put_unused(&self, key: Key, up: Upstream) {
        self.keep(key, up, false);
    }

    fn keep(&self, key: Key, up: Upstream, carried: bool) {
        if !up.buf.is_empty() || self.max_idle == 0 {
            // unsolicited bytes after a complete response: the connection is out of sync
            up.stream.shutdown(Shutdown::Both);
            return;
        }
        let mut map = self.idle.borrow_mut();
        let list = map.entry(key).or_default();
        if list.len() >= self.max_idle {
            let old = list.remove(0);
            old.stream.shutdown(Shutdown::Both);
        }
        list.push(Idle {
            stream: up.stream,
            buf: up.buf,
            addr: up.addr,
            since: coarse_ms(),
            via_chain: up.via_chain,
            carried,
        });
    }

    /// True when a connection idle since `since` has been so for less than the idle timeout.
    fn fresh(&self, since: u64) -> bool {
        u128::from(coarse_ms().saturating_sub(since)) < self.idle_timeout.as_millis()
    }

    /// Number of idle connections (all keys).
    pub fn idle_count(&self) -> usize {
        self.idle.borrow().values().map(Vec::len).sum()
    }

    /// Closes expired idle connections now and then, for the worker's lifetime.
    pub async fn reap_forever(&self) {
        let period =
            (self.idle_timeout / 2).clamp(Duration::from_millis(100), Duration::from_secs(5));
        loop {
            tokio::time::sleep(period).await;
            let mut map = self.idle.borrow_mut();
            for list in map.values_mut() {
                list.retain(|i| {
                    let keep = self.fresh(i.since);
                    if !keep {
                        i.stream.shutdown(Shutdown::Both);
                    }
                    keep
                });
            }
            map.retain(|_, l| !l.is_empty());
        }
    }
}
