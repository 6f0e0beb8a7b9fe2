//! Byte-class scans over head bytes, sixteen bytes at a time where the CPU has SSE2 (every
//! x86-64), eight at a time (or one) elsewhere and in the last few bytes of a slice.
//!
//! A response head's field names and values are most of its bytes, and scanning them one
//! byte (or one 8-byte word) per step was about half of the cost of taking in a plain
//! head (docs/perf.md). Both scans return exactly what their byte-at-a-time definitions
//! return; `tests` checks them against those definitions on every offset and length.

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
pub(super) fn first_control(s: &[u8]) -> Option<usize> {
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

/// How far [`plain_line`] looks: names up to 31 bytes, values up to 47.
const LINE_LOOK: usize = 96;

/// The usual field line at `window[p..]`, taken in 16-byte steps: a name of letters,
/// digits and '-' of at most 31 bytes, then `: `, a value of at most 47 bytes with no
/// control byte that neither starts nor ends with a space, and CRLF. Returns where the
/// colon and the value's end (its CR) are, or None for any other line (or when fewer
/// than `LINE_LOOK` bytes are left), which the caller then takes byte class by byte
/// class: a line this takes is taken the same way there, and one it refuses may still
/// be plain.
#[inline]
pub(super) fn plain_line(window: &[u8], p: usize) -> Option<(usize, usize)> {
    #[cfg(target_arch = "x86_64")]
    {
        let s = window.get(p..p + LINE_LOOK)?;
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
        let visible_edge = |b: u8| b > b' ' && b != 0x7f;
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
