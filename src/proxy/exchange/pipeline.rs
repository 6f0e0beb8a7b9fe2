//! Built-in pipeline steps: the proxy's own processing that runs between pre_pipeline
//! and post_pipeline hooks (spec section 3).

use crate::config::{parse_header_assignment, Config};
use crate::http::{known_bit, known_names, Headers, Request, Response, SafeValue};
use bytes::Bytes;

/// One built-in processing step of a message event.
pub trait PipelineStep {
    /// Name for logs.
    fn name(&self) -> &'static str;
    /// Processes a request before it goes upstream.
    fn on_request(&self, _req: &mut Request) {}
    /// Processes a response before it goes to the client.
    fn on_response(&self, _req: &Request, _resp: &mut Response) {}
}

/// The ordered step chain.
pub struct Pipeline {
    steps: Vec<Box<dyn PipelineStep>>,
    /// A step other than [`HopByHop`] changes responses (`--set-response-header`).
    rewrites_responses: bool,
}

impl Pipeline {
    /// Hop-by-hop normalisation, Host, then the configured header rewrites.
    pub fn from_config(cfg: &Config) -> Result<Pipeline, String> {
        // a redirected connection's target is an address: the client's Host names the site
        let keep_client_host = match crate::config::Mode::parse(&cfg.mode) {
            Ok(crate::config::Mode::Reverse(_)) => cfg.keep_host_header,
            Ok(crate::config::Mode::Transparent) => true,
            _ => false,
        };
        let mut steps: Vec<Box<dyn PipelineStep>> = vec![
            Box::new(HopByHop),
            Box::new(HostHeader::new(keep_client_host)),
        ];
        let parse = |list: &[String]| -> Result<Vec<(String, String)>, String> {
            list.iter().map(|kv| parse_header_assignment(kv)).collect()
        };
        let request = parse(&cfg.set_request_header)?;
        let response = parse(&cfg.set_response_header)?;
        let rewrites_responses = !response.is_empty();
        if !request.is_empty() || rewrites_responses {
            steps.push(Box::new(SetHeaders { request, response }));
        }
        Ok(Pipeline {
            steps,
            rewrites_responses,
        })
    }

    /// Runs every step on a request.
    pub fn on_request(&self, req: &mut Request) {
        for s in &self.steps {
            s.on_request(req);
        }
    }

    /// Whether a step does more to responses than strip hop-by-hop fields (which a
    /// head relayed as bytes does itself).
    pub fn rewrites_responses(&self) -> bool {
        self.rewrites_responses
    }

    /// Runs every step on a response.
    pub fn on_response(&self, req: &Request, resp: &mut Response) {
        for s in &self.steps {
            s.on_response(req, resp);
        }
    }
}

/// Removes hop-by-hop fields (RFC 9110 section 7.6.1).
///
/// Transfer-Encoding and Content-Length are left alone: framing is decided when the
/// message is committed to the wire, from what the body then is.
pub struct HopByHop;

/// Strips the fixed hop-by-hop names and every name listed in Connection.
pub fn strip_hop_by_hop(h: &mut Headers) {
    if !h.may_have(known_names::HOP_BY_HOP) {
        return;
    }
    // Names listed in Connection that are not fixed hop-by-hop names already; usually
    // none (keep-alive traffic lists "keep-alive"), so most messages allocate nothing.
    // Runs for every message that has a Connection field: one plain loop, no
    // iterator chain over two lookups.
    let mut listed: Vec<Bytes> = Vec::new();
    if h.may_have(known_names::CONNECTION | known_names::PROXY_CONNECTION) {
        // "connection" and "proxy-connection": the length rules out the other fields
        for f in h.iter().filter(|f| matches!(f.name.len(), 10 | 16)) {
            let bit = known_bit(&f.name);
            if bit & (known_names::CONNECTION | known_names::PROXY_CONNECTION) == 0 {
                continue;
            }
            for t in f.value.split(|&b| b == b',') {
                let t = t.trim_ascii();
                let framing = known_names::TRANSFER_ENCODING | known_names::CONTENT_LENGTH;
                if !t.is_empty() && known_bit(t) & (known_names::HOP_BY_HOP | framing) == 0 {
                    listed.push(f.value.slice_ref(t));
                }
            }
        }
    }
    h.retain_known(|f, bit| {
        bit & known_names::HOP_BY_HOP == 0 && !listed.iter().any(|n| f.name.eq_ignore_ascii_case(n))
    });
}

impl PipelineStep for HopByHop {
    fn name(&self) -> &'static str {
        "hop-by-hop"
    }
    fn on_request(&self, req: &mut Request) {
        strip_hop_by_hop(&mut req.headers);
    }
    fn on_response(&self, _req: &Request, resp: &mut Response) {
        strip_hop_by_hop(&mut resp.headers);
    }
}

/// `--set-request-header` / `--set-response-header`.
pub struct SetHeaders {
    request: Vec<(String, String)>,
    response: Vec<(String, String)>,
}

impl PipelineStep for SetHeaders {
    fn name(&self) -> &'static str {
        "set-headers"
    }
    fn on_request(&self, req: &mut Request) {
        for (n, v) in &self.request {
            req.headers.set(n.clone(), v.clone());
        }
    }
    fn on_response(&self, _req: &Request, resp: &mut Response) {
        for (n, v) in &self.response {
            resp.headers.set(n.clone(), v.clone());
        }
    }
}

/// Sets Host to the request's authority (RFC 9112 3.2.2 for absolute-form; the
/// upstream's name in reverse mode unless `--keep-host-header`).
pub struct HostHeader {
    /// Keep the client's Host when it sent one.
    pub keep_client_host: bool,
    /// The last authority set, shared by the next request that goes to the same place
    /// (nearly all of a worker's requests, in reverse mode): no copy per request.
    last: std::cell::RefCell<SafeValue>,
}

impl HostHeader {
    /// The step; `keep_client_host` as the field says.
    pub fn new(keep_client_host: bool) -> HostHeader {
        HostHeader {
            keep_client_host,
            last: Default::default(),
        }
    }
}

impl PipelineStep for HostHeader {
    fn name(&self) -> &'static str {
        "host-header"
    }
    fn on_request(&self, req: &mut Request) {
        if req.path.is_none() || (self.keep_client_host && req.headers.contains("host")) {
            return;
        }
        let mut last = self.last.borrow_mut();
        if last.as_bytes() != req.authority.as_bytes() {
            *last = SafeValue::new(Bytes::copy_from_slice(req.authority.as_bytes()));
        }
        req.headers.set_safe("Host", &last);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hop_by_hop_fields_and_listed_names_go() {
        let mut h = Headers::new();
        for (n, v) in [
            ("Host", "a"),
            ("Connection", "keep-alive, X-Hop"),
            ("X-Hop", "1"),
            ("Keep-Alive", "timeout=5"),
            ("TE", "trailers"),
            ("Transfer-Encoding", "chunked"),
            ("Proxy-Authorization", "Basic x"),
            ("X-End", "2"),
        ] {
            h.add(n, v);
        }
        strip_hop_by_hop(&mut h);
        let names: Vec<_> = h
            .iter()
            .map(|f| String::from_utf8_lossy(&f.name).into_owned())
            .collect();
        assert_eq!(names, ["Host", "Transfer-Encoding", "X-End"]);
    }

    #[test]
    fn every_listed_name_goes_however_many() {
        // several listed names, over two Connection fields, in any case
        let mut h = Headers::new();
        h.add("Connection", "close, A, b , C,D");
        h.add("connection", "E,,f");
        for n in ["a", "B", "c", "d", "e", "F", "G", "Close"] {
            h.add(n, "1");
        }
        strip_hop_by_hop(&mut h);
        let names: Vec<_> = h
            .iter()
            .map(|f| String::from_utf8_lossy(&f.name).into_owned())
            .collect();
        assert_eq!(names, ["G"]);
    }
}
