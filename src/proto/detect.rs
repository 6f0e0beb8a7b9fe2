//! Telling protocols apart from their first bytes, before any layer owns them.

/// The HTTP/2 connection preface (RFC 9113 section 3.4).
pub const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// Whether the bytes so far are the start of the HTTP/2 preface (at least its method).
pub fn starts_like_h2_preface(b: &[u8]) -> bool {
    let n = b.len().min(H2_PREFACE.len());
    n >= 4 && b[..n] == H2_PREFACE[..n]
}

/// Whether `b` starts with an HTTP/2 SETTINGS frame on stream 0 (what an h2c server
/// sends first, RFC 9113 section 3.4).
pub fn is_h2_settings_frame(b: &[u8]) -> bool {
    b.len() >= 9
        && b[3] == 0x4
        && b[5..9] == [0, 0, 0, 0]
        && (usize::from(b[0]) << 16 | usize::from(b[1]) << 8 | usize::from(b[2])) % 6 == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn preface_start_needs_at_least_the_method() {
        assert!(starts_like_h2_preface(H2_PREFACE));
        assert!(starts_like_h2_preface(b"PRI "));
        assert!(!starts_like_h2_preface(b"PRI"));
        assert!(!starts_like_h2_preface(b"PRIX * HTTP/2.0"));
        assert!(!starts_like_h2_preface(b"GET / HTTP/1.1\r\n"));
        let mut more = H2_PREFACE.to_vec();
        more.extend_from_slice(&[0, 0, 0, 4, 0, 0, 0, 0, 0]);
        assert!(starts_like_h2_preface(&more));
    }

    #[test]
    fn settings_frame_on_stream_zero_only() {
        // empty SETTINGS, and one with two parameters (12 bytes)
        assert!(is_h2_settings_frame(&[0, 0, 0, 4, 0, 0, 0, 0, 0]));
        assert!(is_h2_settings_frame(&[0, 0, 12, 4, 0, 0, 0, 0, 0, 0, 3]));
        assert!(
            !is_h2_settings_frame(&[0, 0, 7, 4, 0, 0, 0, 0, 0]),
            "not a multiple of 6"
        );
        assert!(
            !is_h2_settings_frame(&[0, 0, 0, 4, 0, 0, 0, 0, 1]),
            "stream 1"
        );
        assert!(
            !is_h2_settings_frame(&[0, 0, 0, 1, 0, 0, 0, 0, 0]),
            "HEADERS"
        );
        assert!(!is_h2_settings_frame(b"220 smtp.example ESMTP\r\n"));
        assert!(!is_h2_settings_frame(&[0, 0, 0, 4]));
    }
}
