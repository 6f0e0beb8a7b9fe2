//! Plugin engine API placeholder; replaced by the real engine (src/plugin from wt-plugin).

use crate::http::{Request, Response};
use bytes::Bytes;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::rc::Rc;
use std::time::Duration;

/// Engine settings.
pub struct EngineConfig {
    /// Plugin files.
    pub files: Vec<PathBuf>,
    /// Largest body a plugin may read.
    pub max_plugin_body: usize,
    /// Per-call budget.
    pub hook_budget: Duration,
}
/// Connection context.
pub struct ConnInfo {
    /// id
    pub conn_id: u64,
    /// client
    pub client_addr: SocketAddr,
    /// upstream
    pub server_addr: Option<SocketAddr>,
    /// sni
    pub sni: Option<String>,
    /// listener
    pub listener_name: Rc<str>,
    /// worker
    pub worker: usize,
}
/// Connection stats.
pub struct ConnStats {
    /// ms
    pub duration_ms: f64,
    /// in
    pub bytes_in: u64,
    /// out
    pub bytes_out: u64,
}
/// Raw chunk.
pub struct RawChunk {
    /// dir
    pub from_client: bool,
    /// data
    pub data: Bytes,
    /// offset
    pub offset: u64,
}
/// Hook event.
#[derive(Clone, Copy)]
pub enum Event {
    /// a
    ConnectionOnConnect,
    /// b
    ConnectionOnDisconnect,
    /// c
    HttpOnRequest,
    /// d
    HttpOnResponse,
    /// e
    RawOnChunk,
}
/// Phase.
#[derive(Clone, Copy)]
pub enum Phase {
    /// pre
    Pre,
    /// post
    Post,
}
/// Suspended chain.
pub struct Suspended;
/// Dispatch result.
pub enum Step {
    /// go on
    Continue,
    /// drop
    Drop,
    /// respond
    Respond(Response),
    /// body needed
    NeedBody(Suspended),
}
/// Hook info.
pub struct HookInfo;
/// Engine.
pub struct Engine;
impl Engine {
    /// Loads.
    pub fn load(_cfg: &EngineConfig, _worker: usize) -> Result<Engine, String> {
        Err("plugin engine not built yet".into())
    }
    /// Has hooks.
    pub fn has(&self, _e: Event) -> bool {
        false
    }
    /// on_connect
    pub fn on_connect(&self, _c: &ConnInfo) -> Step {
        Step::Continue
    }
    /// on_disconnect
    pub fn on_disconnect(&self, _c: &ConnInfo, _s: &ConnStats) {}
    /// request
    pub fn http_request(&self, _p: Phase, _c: &ConnInfo, _f: u64, _r: &mut Request) -> Step {
        Step::Continue
    }
    /// response
    pub fn http_response(
        &self,
        _p: Phase,
        _c: &ConnInfo,
        _f: u64,
        _q: &Request,
        _r: &mut Response,
    ) -> Step {
        Step::Continue
    }
    /// resume
    pub fn resume_request(&self, _s: Suspended, _c: &ConnInfo, _f: u64, _r: &mut Request) -> Step {
        Step::Continue
    }
    /// resume
    pub fn resume_response(
        &self,
        _s: Suspended,
        _c: &ConnInfo,
        _f: u64,
        _q: &Request,
        _r: &mut Response,
    ) -> Step {
        Step::Continue
    }
    /// raw
    pub fn raw_chunk(&self, _p: Phase, _c: &ConnInfo, _ch: &mut RawChunk) {}
}
/// Check.
pub fn check(_files: &[PathBuf]) -> Result<Vec<HookInfo>, String> {
    Err("plugin engine not built yet".into())
}
/// Format.
pub fn format_hooks(_h: &[HookInfo]) -> String {
    String::new()
}
