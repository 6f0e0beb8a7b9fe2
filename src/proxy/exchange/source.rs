//! Where a body comes from when a hook asks to read it whole: an HTTP/1 socket (a
//! client's request, an upstream's response) or an HTTP/2 stream.

use crate::http::{Body, Headers};
use crate::proxy::body_relay::{self, Buffered, H1Body};
use crate::proxy::h2_stream::{self, Incoming};
use bytes::Bytes;

/// The body of the message a hook may read.
pub enum Source<'a> {
    /// An HTTP/1 body on a socket. `owe_continue` is set while an HTTP/1.1 client that
    /// sent `Expect: 100-continue` waits to be told to send its body.
    H1 {
        /// The body on the wire.
        body: H1Body<'a>,
        /// The client still waits for `100 Continue`.
        owe_continue: Option<&'a mut bool>,
    },
    /// The body of an h2 stream.
    H2(&'a mut Incoming),
    /// No body to read: a message luring made whole (an error answer).
    Whole,
}

impl Source<'_> {
    /// Reads the whole body for a hook: Full with its trailers, or TooLarge when it is
    /// over `limit` (what was read is then relayed first, unread by hooks).
    pub async fn buffer(&mut self, limit: usize) -> Result<(Body, Option<Headers>), String> {
        match self {
            Source::H1 { body, owe_continue } => {
                if let Some(owed) = owe_continue.as_deref_mut() {
                    if *owed && !body.dec.is_done() {
                        *owed = false;
                        let go_on = Bytes::from_static(super::reply::CONTINUE_100);
                        if body.stream.write_all(go_on).await.is_err() {
                            return Err("client went away".into());
                        }
                    }
                }
                match body_relay::buffer_body(body, limit).await? {
                    Buffered::Complete(b, t) => Ok((Body::Full(b), t)),
                    Buffered::TooLarge => Ok((Body::TooLarge, None)),
                }
            }
            Source::H2(body) => h2_stream::buffer(body, limit).await,
            Source::Whole => Ok((Body::Full(Bytes::new()), None)),
        }
    }

    /// Whether the body has been read to its end.
    pub fn is_done(&self) -> bool {
        match self {
            Source::H1 { body, .. } => body.dec.is_done(),
            Source::H2(body) => body.rx.is_end_stream(),
            Source::Whole => true,
        }
    }
}
