//! The gRPC and gRPC-web rows: the values the proxy hands over for a call and the entry
//! points that run their chains. One set of functions serves both protocols; `GrpcRows`
//! picks the row.

use super::chain::{Arg, Outcome};
use super::msg::{LGrpcData, LGrpcStart};
use super::{ConnInfo, Engine, Event, Phase, Step};
use crate::http::Request;
use bytes::Bytes;
use mlua::Value;

/// Which of the two protocol rows a call fires: grpc.* or grpc-web.*.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GrpcRows {
    /// grpc.on_start, grpc.on_data, grpc.on_end.
    Grpc,
    /// grpc-web.on_start, grpc-web.on_data, grpc-web.on_end.
    GrpcWeb,
}

impl GrpcRows {
    /// The row's on_start event.
    pub fn start(self) -> Event {
        match self {
            GrpcRows::Grpc => Event::GrpcStart,
            GrpcRows::GrpcWeb => Event::GrpcWebStart,
        }
    }
    /// The row's on_data event.
    pub fn data(self) -> Event {
        match self {
            GrpcRows::Grpc => Event::GrpcData,
            GrpcRows::GrpcWeb => Event::GrpcWebData,
        }
    }
    /// The row's on_end event.
    pub fn end(self) -> Event {
        match self {
            GrpcRows::Grpc => Event::GrpcEnd,
            GrpcRows::GrpcWeb => Event::GrpcWebEnd,
        }
    }
}

/// What a gRPC call is, besides its request (for GRPCStartMessage).
#[derive(Clone, Debug)]
pub struct GrpcCall {
    /// The rows the call fires.
    pub rows: GrpcRows,
    /// "grpc" | "grpc-web" | "grpc-web-text"
    pub protocol: &'static str,
    /// grpc-encoding of the call, or None
    pub encoding: Option<String>,
}

/// One length-prefixed message of a call (GRPCDataMessage).
#[derive(Clone, Debug, Default)]
pub struct GrpcData {
    /// Direction.
    pub from_client: bool,
    /// 0-based position among the messages of that direction.
    pub index: u64,
    /// The compressed flag of the length-prefixed frame.
    pub compressed: bool,
    /// decompressed payload, rw
    pub payload: Bytes,
    /// set when a hook called msg:cancel(status, message)
    pub cancel: Option<(u32, String)>,
}

/// The end of a call (GRPCEndMessage dict).
#[derive(Clone, Debug, Default)]
pub struct GrpcEnd {
    /// grpc-status (2, UNKNOWN, for a call that ended without one).
    pub status: u32,
    /// grpc-message, percent-decoded.
    pub message: String,
    /// grpc-status-details-bin, base64-decoded.
    pub status_details: Option<Bytes>,
    /// Every trailer, in wire order (the status ones included).
    pub trailers: Vec<(String, String)>,
}

impl Engine {
    /// Whether any hook of the rows is registered (for the proxy's "no hook: today's
    /// path" check); `has(Event::GrpcStart)` and the like answer per event.
    #[inline]
    pub fn has_grpc(&self, rows: GrpcRows) -> bool {
        self.has(rows.start()) || self.has(rows.data()) || self.has(rows.end())
    }

    /// grpc.on_start or grpc-web.on_start for one phase; `req` carries the hooks'
    /// changes (headers, path) afterwards. `Step::Respond` comes from RESPOND and from
    /// RESPOND_GRPC (a trailers-only response: see `reply::build_grpc`).
    pub fn grpc_start(
        &self,
        rows: GrpcRows,
        phase: Phase,
        conn: &ConnInfo,
        flow_id: u64,
        req: &mut Request,
        call: &GrpcCall,
    ) -> Step {
        let ev = rows.start();
        if self.chain_len(ev, phase.idx()) == 0 {
            return Step::Continue;
        }
        let Some(id) = self.open_request(req) else {
            return Step::Continue;
        };
        let ud = self.lua.create_userdata(LGrpcStart {
            core: self.core.clone(),
            id,
            protocol: call.protocol,
            encoding: call.encoding.clone(),
        });
        let (out, val) = match ud {
            Ok(u) => {
                self.ctx(conn, Some(flow_id));
                let v = Value::UserData(u);
                (self.run(ev, phase.idx(), 0, None, Arg::Val(&v)), Some(v))
            }
            Err(e) => {
                tracing::error!(target: "luring::plugin", "cannot build hook arguments: {e}");
                (Outcome::Done(Step::Continue), None)
            }
        };
        // The start message has no body getter, so only I/O can suspend this chain;
        // a body wait (impossible) would end it.
        let out = match out {
            Outcome::Suspend(_, _, None) => Outcome::Done(Step::Continue),
            o => o,
        };
        self.finish_req(out, ev, phase.idx(), id, req, val)
    }

    /// grpc.on_data or grpc-web.on_data for one phase: hooks may replace `m.payload`
    /// and set `m.cancel`.
    pub fn grpc_data(
        &self,
        rows: GrpcRows,
        phase: Phase,
        conn: &ConnInfo,
        flow_id: u64,
        m: &mut GrpcData,
    ) -> Step {
        self.value_event(rows.data(), phase, conn, Some(flow_id), m, |env| {
            LGrpcData { env }
        })
    }

    /// grpc.on_end or grpc-web.on_end (lifecycle): every hook runs over a frozen dict.
    pub fn grpc_end(&self, rows: GrpcRows, conn: &ConnInfo, flow_id: u64, end: &GrpcEnd) -> Step {
        self.lifecycle_flow(rows.end(), conn, Some(flow_id), true, |lua, t| {
            t.raw_set("status", end.status)?;
            t.raw_set("message", end.message.as_str())?;
            match &end.status_details {
                Some(d) => t.raw_set("status_details", lua.create_string(d)?)?,
                None => t.raw_set("status_details", Value::Nil)?,
            }
            let list = lua.create_table_with_capacity(end.trailers.len(), 0)?;
            for (i, (n, v)) in end.trailers.iter().enumerate() {
                let pair = lua.create_table_with_capacity(2, 0)?;
                pair.raw_set(1, n.as_str())?;
                pair.raw_set(2, v.as_str())?;
                list.raw_set(i + 1, pair)?;
            }
            t.raw_set("trailers", list)
        })
    }
}
