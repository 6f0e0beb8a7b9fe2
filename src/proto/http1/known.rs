//! Byte strings common enough in heads to be handed out as static `Bytes`.
//!
//! Every slice of a shared head buffer costs an atomic increment on creation and a
//! decrement on drop, which dominated head parsing; a static `Bytes` costs neither.
//! Matches are exact (case included), so the wire form is still kept byte for byte.

macro_rules! known {
    ($fn:ident, $doc:literal, $($lit:literal),* $(,)?) => {
        #[doc = $doc]
        pub(crate) fn $fn(s: &[u8]) -> Option<&'static [u8]> {
            match s {
                $($lit => Some(&$lit[..]),)*
                _ => None,
            }
        }
    };
}

known!(
    method,
    "The static copy of a common method.",
    b"GET",
    b"POST",
    b"PUT",
    b"HEAD",
    b"DELETE",
    b"OPTIONS",
    b"PATCH",
    b"CONNECT",
);

known!(
    name,
    "The static copy of a common field name, in the spellings browsers, servers and h2 use.",
    b"Host",
    b"User-Agent",
    b"Accept",
    b"Accept-Language",
    b"Accept-Encoding",
    b"Referer",
    b"Connection",
    b"Cookie",
    b"Upgrade-Insecure-Requests",
    b"Sec-Fetch-Dest",
    b"Sec-Fetch-Mode",
    b"Sec-Fetch-Site",
    b"Sec-Fetch-User",
    b"Priority",
    b"Origin",
    b"Pragma",
    b"Cache-Control",
    b"Content-Type",
    b"Content-Length",
    b"Transfer-Encoding",
    b"Content-Encoding",
    b"Date",
    b"Server",
    b"Vary",
    b"ETag",
    b"Last-Modified",
    b"Set-Cookie",
    b"Location",
    b"Expires",
    b"Age",
    b"Authorization",
    b"If-None-Match",
    b"If-Modified-Since",
    b"Upgrade",
    b"Keep-Alive",
    b"TE",
    b"Trailer",
    b"DNT",
    b"X-Requested-With",
    b"Access-Control-Allow-Origin",
    b"Strict-Transport-Security",
    b"X-Content-Type-Options",
    b"X-Frame-Options",
    b"Accept-Ranges",
    b"Content-Security-Policy",
    b"host",
    b"user-agent",
    b"accept",
    b"accept-language",
    b"accept-encoding",
    b"referer",
    b"connection",
    b"cookie",
    b"content-type",
    b"content-length",
    b"transfer-encoding",
    b"content-encoding",
    b"date",
    b"server",
    b"vary",
    b"etag",
    b"last-modified",
    b"set-cookie",
    b"location",
    b"cache-control",
    b"authorization",
    b"origin",
    b"priority",
    b"sec-fetch-dest",
    b"sec-fetch-mode",
    b"sec-fetch-site",
    b"sec-fetch-user",
    b"upgrade-insecure-requests",
    b"te",
    b"trailer",
    b"upgrade",
    b"keep-alive",
    b"accept-ranges",
    b"age",
    b"expires",
);

known!(
    value,
    "The static copy of a common short field value.",
    b"keep-alive",
    b"close",
    b"Keep-Alive",
    b"Upgrade",
    b"upgrade",
    b"websocket",
    b"chunked",
    b"gzip",
    b"br",
    b"identity",
    b"*/*",
    b"0",
    b"1",
    b"?0",
    b"?1",
    b"trailers",
    b"no-cache",
    b"document",
    b"navigate",
    b"none",
    b"same-origin",
    b"same-site",
    b"cross-site",
    b"cors",
    b"no-cors",
    b"empty",
    b"bytes",
    b"nosniff",
    b"DENY",
    b"SAMEORIGIN",
    b"Accept-Encoding",
    b"gzip, deflate",
    b"gzip, deflate, br",
    b"gzip, deflate, br, zstd",
    b"en-US,en;q=0.5",
    b"en-US,en;q=0.9",
    b"u=0, i",
    b"u=1",
    b"text/html",
    b"text/plain",
    b"application/json",
    b"text/html; charset=utf-8",
    b"text/html; charset=UTF-8",
    b"application/grpc",
    b"text/event-stream",
);

/// Token characters (RFC 9110 5.6.2) as a lookup table, since names are checked per byte.
pub(crate) static TCHAR: [bool; 256] = {
    let mut t = [false; 256];
    let mut i = 0;
    while i < 256 {
        let b = i as u8;
        t[i] = b.is_ascii_alphanumeric()
            || matches!(
                b,
                b'!' | b'#'
                    | b'$'
                    | b'%'
                    | b'&'
                    | b'\''
                    | b'*'
                    | b'+'
                    | b'-'
                    | b'.'
                    | b'^'
                    | b'_'
                    | b'`'
                    | b'|'
                    | b'~'
            );
        i += 1;
    }
    t
};
