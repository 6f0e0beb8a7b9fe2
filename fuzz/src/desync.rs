//! The independent request-smuggling classifier for the differential HTTP/1 target:
//! AWS's http_desync_guardian, on the raw head bytes. Shared (by `#[path]`) between
//! the cargo-fuzz target and the property test in `tests/fuzz_props.rs`.

use http_desync_guardian::request_analyzer::HttpRequestData;
use http_desync_guardian::{ClassificationReason, RequestSafetyTier};
use luring::fuzzing::Side;

/// `Err(why)` when http_desync_guardian rates the head Ambiguous or Severe: two HTTP
/// engines could read its boundaries differently. The disagreements RFC 9112 settles
/// for luring are let through, each with its reason below (docs/security.md lists them).
pub fn classify(head: &[u8], side: Side) -> Result<(), String> {
    // RFC 9112 2.2: a server SHOULD ignore empty lines before the request line, as
    // luring does (and it never forwards them); the classifier does not skip them.
    let mut head = head;
    while let Some(rest) = head.strip_prefix(b"\r\n").or(head.strip_prefix(b"\n")) {
        head = rest;
    }
    // The one rule where luring and the classifier part ways on purpose: a GET or HEAD
    // with a body is Ambiguous to it (the body has no defined semantics), while RFC 9112
    // 6.3 frames requests by Content-Length / Transfer-Encoding whatever the method,
    // and luring forwards such a body with its framing. So those heads are judged on
    // their framing alone, as PUT / POST (same length, so nothing else moves).
    let mut owned;
    if let Some(rest) = head.strip_prefix(b"GET ") {
        owned = b"PUT ".to_vec();
        owned.extend_from_slice(rest);
        head = &owned;
    } else if let Some(rest) = head.strip_prefix(b"HEAD ") {
        owned = b"POST ".to_vec();
        owned.extend_from_slice(rest);
        head = &owned;
    }
    let verdict = HttpRequestData::analyze_raw_request(head);
    match verdict.tier {
        RequestSafetyTier::Compliant | RequestSafetyTier::Acceptable => Ok(()),
        // RFC 9110 8.6: a recipient MAY take a list of identical Content-Length values
        // (or repeated identical fields) as that one value; luring does (it refuses
        // differing ones) and forwards a single value, so only the received side may
        // carry the list, and the forwarded head is still checked in full.
        _ if side == Side::Received
            && matches!(
                verdict.reason,
                ClassificationReason::BadContentLength
                    | ClassificationReason::MultipleContentLength
                    | ClassificationReason::DuplicateContentLength
            ) =>
        {
            Ok(())
        }
        // Names like framing fields with other delimiters are refused by luring (see
        // request_body_kind); what the classifier still takes for a framing field is a
        // truncated name with a symbol in place of its last letters ("Content-Lengt~"),
        // which no server folds into one: a field of its own (RFC 9110 5.1). Such a
        // verdict's message names that field right after the reason.
        _ if matches!(
            verdict.reason,
            ClassificationReason::SuspiciousHeader
                | ClassificationReason::BadContentLength
                | ClassificationReason::BadTransferEncoding
        ) && verdict
            .message
            .as_deref()
            .and_then(|m| m.split_once(&format!("{:?} \"", verdict.reason)))
            .and_then(|(_, rest)| rest.split('"').next())
            .map(str::trim)
            .is_some_and(|name| {
                !name.eq_ignore_ascii_case("content-length")
                    && !name.eq_ignore_ascii_case("transfer-encoding")
            }) =>
        {
            Ok(())
        }
        tier => Err(format!(
            "{tier:?} ({:?}): {}",
            verdict.reason,
            verdict.message.unwrap_or_default()
        )),
    }
}
