//! The client side of one stream: what was answered (for the access log), its
//! recording, and the answers luring makes itself.

use crate::flows::capture::{BodyTap, Capture};
use crate::http::{Body, Headers, Response};
use crate::proxy::exchange::reply;
use crate::proxy::grpc;
use crate::proxy::grpc_web;
use crate::proxy::h2_stream;
use bytes::Bytes;
use h2::SendStream;

/// The client side of one stream, remembering what was answered (for the access log).
pub(super) struct Reply {
    pub(super) tx: h2::server::SendResponse<Bytes>,
    /// Status sent (0: none, e.g. the stream was reset).
    pub(super) status: u16,
    /// The response head sent was an event stream (kept only with metrics).
    pub(super) event_stream: bool,
    /// Body bytes sent.
    pub(super) bytes: u64,
    /// The recording of this stream's exchange, with `--record`.
    pub(super) rec: Option<Box<Capture>>,
}

impl Reply {
    /// Runs `work` (the upstream's part of the exchange) unless the client resets the
    /// stream first: then `work` is dropped, with the upstream request it was making,
    /// and None comes back. So a stream the client cancelled (rapid reset) or that h2
    /// reset for the client's errors (MadeYouReset) stops costing the upstream, as hyper
    /// drops the service future of a reset stream. Only before the response is sent.
    pub(super) async fn unless_reset<F: std::future::Future>(
        &mut self,
        work: F,
    ) -> Option<F::Output> {
        let tx = &mut self.tx;
        let reset = std::future::poll_fn(|cx| tx.poll_reset(cx).map(|_| ()));
        tokio::select! {
            biased;
            _ = reset => {
                self.status = 0;
                None
            }
            r = work => Some(r),
        }
    }

    pub(super) fn send_response(
        &mut self,
        head: http::Response<()>,
        end: bool,
    ) -> Result<SendStream<Bytes>, h2::Error> {
        let status = head.status().as_u16();
        let ctype = || head.headers().get(http::header::CONTENT_TYPE);
        self.event_stream = crate::metrics::event_stream(|| ctype().map(|v| v.as_bytes()));
        let tx = self.tx.send_response(head, end)?;
        self.status = status;
        Ok(tx)
    }

    /// Answers a gRPC call with only a status (a hook's cancel before any response).
    pub(super) fn grpc_status(&mut self, call: Option<&grpc::Call>, status: u32, message: &str) {
        if let Some(c) = call {
            return self.answer(grpc_web::cancelled_reply(c, status, message), false);
        }
        let st = crate::proto::grpc::Status::new(status, message);
        let mut headers = Headers::new();
        for (name, value) in crate::proto::grpc::trailers_only::<&str, &str>(&st, &[]) {
            headers.add(name, value);
        }
        if let Some(c) = call {
            c.end(st, Vec::new());
        }
        let r = Response {
            status: 200,
            reason: String::new(),
            version: crate::http::Version::Http2,
            headers,
            body: Body::Full(Bytes::new()),
            trailers: None,
            error: None,
        };
        self.answer(r, false);
    }

    /// Updates the recording of this stream, when there is one.
    pub(super) fn record(&mut self, f: impl FnOnce(&mut Capture)) {
        if let Some(c) = self.rec.as_mut() {
            f(c);
        }
    }

    /// Hands back a body tap to the recording.
    pub(super) fn put_tap(&mut self, resp: bool, tap: Option<BodyTap>) {
        if let (Some(c), Some(t)) = (self.rec.as_mut(), tap) {
            c.put_tap(resp, t);
        }
    }

    /// Answers the stream with a response luring makes (a plugin's, an error).
    pub(super) fn answer(&mut self, mut r: Response, is_head: bool) {
        let body = reply::prepare(&mut r, is_head);
        if let Some(c) = self.rec.as_mut() {
            let mut shown = r.clone();
            shown.body = Body::Full(body.clone());
            c.response(&shown, true);
        }
        // a trailers-only gRPC answer carries no content-length (it has no DATA)
        if body.is_empty() && r.headers.contains("grpc-status") {
            r.headers.remove("content-length");
        }
        let trailers = r
            .trailers
            .take()
            .filter(|_| !is_head && !reply::bodiless(r.status));
        let end = body.is_empty() && trailers.is_none();
        let Ok(mut tx) = self.send_response(h2_stream::response_head(&mut r), end) else {
            return;
        };
        if end {
            return;
        }
        self.bytes += body.len() as u64;
        // a plugin's body is small; it is queued at once and flows as the window allows
        crate::io::spawn(async move {
            let _ = h2_stream::send_full(&mut tx, body, trailers.as_ref()).await;
        });
    }

    /// Answers the stream with an error naming the reason, as the HTTP/1 front does.
    pub(super) fn fail(&mut self, status: u16, text: &str) {
        tracing::info!("HTTP/2 stream answered {status}: {text}");
        self.record(|c| c.error(text));
        self.answer(reply::error(status, text), false);
    }
}
