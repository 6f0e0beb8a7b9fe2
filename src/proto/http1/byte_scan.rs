//! Byte-class scans over head bytes, sixteen bytes at a time where the CPU has SSE2 (every
//! x86-64), eight at a time (or one) elsewhere and in the last few bytes of a slice.
//!
//! A response head's field names and values are most of its bytes, and scanning them one
//! byte (or one 8-byte word) per step was about half of the cost of taking in a plain
//! head (docs/perf.md). Each scan returns exactly what its byte-at-a-time definition
//! returns; `tests` checks them against those definitions on every offset and length.

use crate::http::is_tchar;

/// Length of the run of token characters (RFC 9110 5.6.2) at the start of `s`; None when
/// the whole slice is one (no byte ends the name).
#[inline]
pub(super) fn tchar_run(s: &[u8]) -> Option<usize> {
    let mut at = 0;
    #[cfg(target_arch = "x86_64")]
    while at + 16 <= s.len() {
        // SAFETY: `at + 16 <= s.len()`, so the 16 bytes read are in `s`.
        let common = unsafe { sse2::name_bytes(s.as_ptr().add(at)) };
        if common != 0xffff {
            // The first byte that is not a letter, digit or '-': usually the colon.
            // Other token characters ('_', '.', '!' ...) are rare in names and go on
            // byte by byte from there.
            at += (!common).trailing_zeros() as usize;
            break;
        }
        at += 16;
    }
    s[at..].iter().position(|&b| !is_tchar(b)).map(|i| at + i)
}

/// Index of the first byte of `s` below 0x20 or DEL (a control byte: what ends a value's
/// line, or makes the line not plain).
#[inline]
fn first_control(s: &[u8]) -> Option<usize> {
    let mut at = 0;
    #[cfg(target_arch = "x86_64")]
    while at + 16 <= s.len() {
        // SAFETY: as in `tchar_run`.
        let ctl = unsafe { sse2::controls(s.as_ptr().add(at)) };
        if ctl != 0 {
            return Some(at + ctl.trailing_zeros() as usize);
        }
        at += 16;
    }
    first_control_words(&s[at..]).map(|i| at + i)
}

/// The plain field line at `window[p..]`: where its colon and its value's end (its CR)
/// are, when the line is `Name: value` CRLF with a token name and a value that is not
/// empty, has no whitespace at either end, and holds only visible ASCII, spaces, tabs
/// and obs-text (httparse's field-value bytes); None for any other line, or when the
/// window ends before the line does.
#[inline]
pub(super) fn field_line(window: &[u8], p: usize) -> Option<(usize, usize)> {
    match plain_line(window, p) {
        Some(line) => Some(line),
        None => plain_line_bytewise(window, p),
    }
}

/// How far [`plain_line`] looks: names up to 31 bytes, values up to 47.
const LINE_LOOK: usize = 96;

/// The usual field line at `window[p..]`, taken in 16-byte steps: a name of letters,
/// digits and '-' of at most 31 bytes, then `: `, a value of at most 47 bytes with no
/// control byte that neither starts nor ends with a space, and CRLF. Returns where the
/// colon and the value's end (its CR) are, or None for any other line, which the caller
/// then takes byte class by byte class: a line this takes is taken the same way there,
/// and one it refuses may still be plain.
#[inline]
fn plain_line(window: &[u8], p: usize) -> Option<(usize, usize)> {
    #[cfg(target_arch = "x86_64")]
    {
        // Near the window's end (the last lines of a head with nothing behind it: most
        // requests) the look is taken over a zero-padded copy. Zero is a control byte
        // and none of the bytes a line is checked for, so the padding can only end a
        // scan, and a line is taken only if its CRLF is in the window.
        let mut padded: [u8; LINE_LOOK];
        let s: &[u8] = match window.get(p..p + LINE_LOOK) {
            Some(s) => s,
            None => {
                let rest = window.get(p..)?;
                padded = [0; LINE_LOOK];
                padded[..rest.len()].copy_from_slice(rest);
                &padded
            }
        };
        let at = |i: usize| s[i..i + 16].as_ptr();
        // SAFETY (each call below): `at(i)` points at 16 bytes of `s`, checked by the
        // slice index.
        let (mut colons, mut names) = unsafe { (sse2::colons(at(0)), sse2::name_bytes(at(0))) };
        if colons == 0 {
            unsafe {
                colons = sse2::colons(at(16)) << 16;
                names |= sse2::name_bytes(at(16)) << 16;
            }
        }
        let colon = colons.trailing_zeros() as usize;
        let name = (1u32 << (colon & 31)) - 1;
        if colon == 0 || colon >= 32 || names & name != name || s[colon + 1] != b' ' {
            return None;
        }
        let v = colon + 2;
        let mut stop = v;
        loop {
            let ctl = unsafe { sse2::controls(at(stop)) };
            if ctl != 0 {
                stop += ctl.trailing_zeros() as usize;
                break;
            }
            stop += 16;
            if stop >= v + 48 {
                return None;
            }
        }
        if stop == v || s[stop] != b'\r' || s[stop + 1] != b'\n' {
            return None;
        }
        if !visible_edge(s[v]) || !visible_edge(s[stop - 1]) {
            return None;
        }
        Some((p + colon, p + stop))
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        let _ = (window, p);
        None
    }
}

/// Whether `b` may start or end a plain value: a byte above space that is not DEL.
#[inline]
fn visible_edge(b: u8) -> bool {
    b > b' ' && b != 0x7f
}

/// Length of the value at the start of `rest`, up to the CR that should end its line,
/// if the value is plain: not empty, no whitespace at either end, and only visible
/// ASCII, spaces, tabs and obs-text (httparse's field-value bytes) within.
fn plain_value_len(rest: &[u8]) -> Option<usize> {
    if !visible_edge(*rest.first()?) {
        return None;
    }
    let mut i = 1;
    loop {
        let stop = i + first_control(rest.get(i..)?)?;
        match rest[stop] {
            b'\r' => return visible_edge(rest[stop - 1]).then_some(stop),
            b'\t' => i = stop + 1,
            _ => return None,
        }
    }
}

/// The plain field line at `window[p..]` as [`plain_line`] takes it (where
/// its colon and its value's CR are), for any line that one leaves: a name of any token
/// characters, a value with tabs or obs-text, a line longer than its look.
fn plain_line_bytewise(window: &[u8], p: usize) -> Option<(usize, usize)> {
    let name_len = tchar_run(&window[p..])?;
    let colon = p + name_len;
    if name_len == 0 || window.get(colon..colon + 2)? != b": " {
        return None;
    }
    let value_at = colon + 2;
    let value_end = value_at + plain_value_len(&window[value_at..])?;
    if window.get(value_end..value_end + 2)? != b"\r\n" {
        return None;
    }
    Some((colon, value_end))
}

/// Length of the run of visible ASCII bytes (0x21-0x7e) at the start of `s`: a
/// request-target as clients send it. None when the whole slice is one.
#[inline]
pub(super) fn visible_run(s: &[u8]) -> Option<usize> {
    let mut at = 0;
    #[cfg(target_arch = "x86_64")]
    while at + 16 <= s.len() {
        // SAFETY: as in `tchar_run`.
        let visible = unsafe { sse2::visible(s.as_ptr().add(at)) };
        if visible != 0xffff {
            return Some(at + (!visible).trailing_zeros() as usize);
        }
        at += 16;
    }
    s[at..]
        .iter()
        .position(|&b| !(0x21..=0x7e).contains(&b))
        .map(|i| at + i)
}

/// [`first_control`] eight bytes at a time, for what the 16-byte steps leave.
fn first_control_words(s: &[u8]) -> Option<usize> {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGH: u64 = 0x8080_8080_8080_8080;
    let mut words = s.chunks_exact(8);
    let mut at = 0;
    for word in words.by_ref() {
        let x = u64::from_le_bytes(word.try_into().ok()?);
        let del = x ^ (ONES * 0x7f);
        // the classic has-less-than and has-zero tests: the lowest flagged byte is
        // always a true one (borrows only run upwards)
        let hit = (x.wrapping_sub(ONES * 0x20) & !x | del.wrapping_sub(ONES) & !del) & HIGH;
        if hit != 0 {
            return Some(at + hit.trailing_zeros() as usize / 8);
        }
        at += 8;
    }
    let tail = words.remainder();
    tail.iter()
        .position(|&b| b < 0x20 || b == 0x7f)
        .map(|i| at + i)
}

#[cfg(target_arch = "x86_64")]
mod sse2 {
    //! SSE2 is part of x86-64 itself, so these need no run-time feature check.
    use std::arch::x86_64::{
        __m128i, _mm_cmpeq_epi8, _mm_loadu_si128, _mm_max_epu8, _mm_min_epu8, _mm_movemask_epi8,
        _mm_or_si128, _mm_set1_epi8, _mm_sub_epi8,
    };

    /// Bit i set when byte i of `v` is at most `max` (unsigned).
    #[inline(always)]
    fn at_most(v: __m128i, max: u8) -> __m128i {
        // SAFETY: SSE2 intrinsics on register values; SSE2 is always present on x86-64.
        unsafe { _mm_cmpeq_epi8(_mm_min_epu8(v, _mm_set1_epi8(max as i8)), v) }
    }

    /// Bit i set when byte `p[i]` is an ASCII letter, digit or '-', for i in 0..16.
    ///
    /// # Safety
    /// `p..p + 16` must be readable.
    #[inline(always)]
    pub(super) unsafe fn name_bytes(p: *const u8) -> u32 {
        let x = _mm_loadu_si128(p.cast());
        // letters: (x | 0x20) - 'a' <= 25 takes exactly A-Z and a-z
        let lower = _mm_or_si128(x, _mm_set1_epi8(0x20));
        let alpha = at_most(_mm_sub_epi8(lower, _mm_set1_epi8(b'a' as i8)), 25);
        let digit = at_most(_mm_sub_epi8(x, _mm_set1_epi8(b'0' as i8)), 9);
        let dash = _mm_cmpeq_epi8(x, _mm_set1_epi8(b'-' as i8));
        _mm_movemask_epi8(_mm_or_si128(_mm_or_si128(alpha, digit), dash)) as u32
    }

    /// Bit i set when byte `p[i]` is visible ASCII (0x21-0x7e), for i in 0..16.
    ///
    /// # Safety
    /// `p..p + 16` must be readable.
    #[inline(always)]
    pub(super) unsafe fn visible(p: *const u8) -> u32 {
        let x = _mm_loadu_si128(p.cast());
        _mm_movemask_epi8(at_most(_mm_sub_epi8(x, _mm_set1_epi8(0x21)), 0x7e - 0x21)) as u32
    }

    /// Bit i set when byte `p[i]` is ':', for i in 0..16.
    ///
    /// # Safety
    /// `p..p + 16` must be readable.
    #[inline(always)]
    pub(super) unsafe fn colons(p: *const u8) -> u32 {
        let x = _mm_loadu_si128(p.cast());
        _mm_movemask_epi8(_mm_cmpeq_epi8(x, _mm_set1_epi8(b':' as i8))) as u32
    }

    /// Bit i set when byte `p[i]` is below 0x20 or DEL, for i in 0..16.
    ///
    /// # Safety
    /// `p..p + 16` must be readable.
    #[inline(always)]
    pub(super) unsafe fn controls(p: *const u8) -> u32 {
        let x = _mm_loadu_si128(p.cast());
        // x >= 0x20 exactly when max(x, 0x20) == x
        let visible = _mm_cmpeq_epi8(_mm_max_epu8(x, _mm_set1_epi8(0x20)), x);
        let del = _mm_cmpeq_epi8(x, _mm_set1_epi8(0x7f));
        let ok = _mm_movemask_epi8(visible) as u32 & !(_mm_movemask_epi8(del) as u32);
        !ok & 0xffff
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tchar_run_bytewise(s: &[u8]) -> Option<usize> {
        s.iter().position(|&b| !is_tchar(b))
    }

    fn first_control_bytewise(s: &[u8]) -> Option<usize> {
        s.iter().position(|&b| b < 0x20 || b == 0x7f)
    }

    /// Every byte value at every position of slices of every length up to 40, over a
    /// background of name bytes (so the stop is the planted byte) and of value bytes.
    #[test]
    fn scans_agree_with_their_bytewise_definitions() {
        for len in 0..40 {
            for at in 0..len {
                for b in 0..=255u8 {
                    let mut name = vec![b'a'; len];
                    name[at] = b;
                    assert_eq!(tchar_run(&name), tchar_run_bytewise(&name), "{name:?}");
                    assert_eq!(
                        visible_run(&name),
                        name.iter().position(|&b| !(0x21..=0x7e).contains(&b)),
                        "{name:?}"
                    );
                    let mut value = vec![b'v'; len];
                    value[at] = b;
                    assert_eq!(
                        first_control(&value),
                        first_control_bytewise(&value),
                        "{value:?}"
                    );
                }
            }
        }
    }

    #[test]
    fn first_control_finds_the_first_in_every_position() {
        let naive = |s: &[u8]| s.iter().position(|&b| b < 0x20 || b == 0x7f);
        for len in 0..20 {
            for at in 0..len {
                for b in 0..=255u8 {
                    // a byte before it that borrows (0x00, 0x20, 0x80) must not hide it
                    for before in [b'a', 0x20, 0x80, 0xff] {
                        let mut s = vec![b'a'; len];
                        s[..at].fill(before);
                        s[at] = b;
                        assert_eq!(first_control(&s), naive(&s), "{s:?}");
                    }
                }
            }
        }
    }

    /// What follows a head in the read buffer, in the tests that want bytes there.
    const BODY: &[u8] = b"0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef!";

    /// `plain_line` takes a line only as `plain_line_bytewise` does: every byte value at
    /// each of the first 48 places of field lines of several shapes.
    #[test]
    fn plain_line_takes_lines_as_the_bytewise_walk_does() {
        let lines: [&[u8]; 5] = [
            b"Content-Type: application/octet-stream\r\n",
            b"Date: Tue, 08 Dec 2026 00:00:00 GMT\r\n",
            b"X-A: b\r\n",
            b"ETag: \"6938a1c2-400\"\r\nServer: nginx\r\n",
            b"Access-Control-Allow-Credentials: true\r\n",
        ];
        let mut taken = 0;
        for line in lines {
            for at in 0..48.min(line.len() + 8) {
                for b in 0..=255u8 {
                    let mut w = [line, BODY].concat();
                    w[at] = b;
                    // with bytes behind the line, with none (the look's zero-padded
                    // copy), and cut short
                    let alone = line.len().max(at + 1);
                    for w in [&w[..], &w[..alone], &w[..alone / 2], &w[..alone - 1]] {
                        if let Some(fast) = plain_line(w, 0) {
                            taken += 1;
                            assert_eq!(Some(fast), plain_line_bytewise(w, 0), "{w:?}");
                        }
                    }
                }
            }
        }
        // the look must take the usual lines, or the test above proves nothing
        #[cfg(target_arch = "x86_64")]
        assert!(taken > 10_000, "{taken}");
        let _ = taken;
    }

    /// Names whose other token characters come after a run of letters, and values with
    /// high bytes (obs-text) before their end, over 16-byte boundaries.
    #[test]
    fn rare_token_bytes_and_high_bytes() {
        for s in [
            &b"X-Forwarded_For-Something.Else!: v"[..],
            b"abcdefghijklmnop_qrstuvwxyz0123456789:",
            b"Content-Type-With-A-Long-Name~x",
            b"0123456789abcdef0123456789abcdef",
            b"\x80\xff\xc3\xa9 caf\xc3\xa9 \xe2\x82\xac 16 bytes and more\r\n",
            b"\t tabbed value with a DEL \x7f here and more bytes",
        ] {
            assert_eq!(tchar_run(s), tchar_run_bytewise(s), "{s:?}");
            assert_eq!(first_control(s), first_control_bytewise(s), "{s:?}");
            for start in 0..s.len() {
                let s = &s[start..];
                assert_eq!(tchar_run(s), tchar_run_bytewise(s), "{s:?}");
                assert_eq!(first_control(s), first_control_bytewise(s), "{s:?}");
            }
        }
    }
}
