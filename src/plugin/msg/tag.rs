//! Handle encoding: what a `msg` or headers handle designates, packed into the value of a
//! light userdata so a handle costs no allocation and a stale one is detectable.

use mlua::ffi;
use std::os::raw::{c_int, c_void};

// Handle kinds; a tag stores `kind - 1` in 2 bits.
pub(super) const K_REQ: u8 = 1;
pub(super) const K_RESP: u8 = 2;
pub(super) const K_HDR: u8 = 3;
pub(super) const K_TRL: u8 = 4;

// A message or headers handle is a light userdata whose pointer value is the tag:
//
//   bits 63..39  MAGIC_HI (25 bits)   bit 38  read-only   bits 37..36  kind - 1
//   bits 35..20  slot index (16 bits) bits 19..0  generation (20 bits)
//
// LuaJIT (64-bit, GC64 or not) keeps 47 bits of a light userdata: the low 39 bits as
// they are and the upper 25 bits through a per-state table of at most 254 "segments"
// (`lj_lightud_intern`, lj_udata.c; `LJ_LIGHTUD_BITS_LO` = 39 in lj_obj.h). Every
// 64-bit value round-trips exactly through `lua_pushlightuserdata`/`lua_touserdata`
// (tested in `light_userdata_round_trip`); a new upper-bits pattern costs a segment
// (an allocation the first time, an error once 254 are in use). All tags share one
// upper pattern, interned in `Core::install`, so pushing a tag later never allocates
// and never raises. MAGIC_HI has bit 62 set: no user-space pointer (what mlua or
// LuaJIT push as light userdata) can carry it.
const LO_BITS: u32 = 39;
pub(super) const LO_MASK: u64 = (1 << LO_BITS) - 1;
pub(super) const MAGIC_HI: u64 = 0x6c75_7200_0000_0000;
pub(super) const GEN_BITS: u32 = 20;
const SLOT_BITS: u32 = 16;
/// A slot whose generation reaches this is retired (see `Core::release`).
pub(super) const GEN_LIMIT: u32 = 1 << GEN_BITS;
pub(super) const MAX_SLOTS: usize = 1 << SLOT_BITS;
// The encoding needs 64-bit pointers (and LuaJIT's 64-bit light userdata).
const _: () = assert!(std::mem::size_of::<usize>() == 8);

/// What a message or headers handle designates (see the layout above).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Tag {
    pub(super) kind: u8,
    pub(super) ro: u8,
    pub(super) slot: u32,
    pub(super) gen: u32,
}

impl Tag {
    /// The light userdata value a handle of `self` is.
    pub(super) fn encode(self) -> *mut c_void {
        debug_assert!((K_REQ..=K_TRL).contains(&self.kind));
        debug_assert!(self.gen < GEN_LIMIT && (self.slot as usize) < MAX_SLOTS);
        let u = MAGIC_HI
            | (self.ro as u64 & 1) << 38
            | ((self.kind as u64 - 1) & 3) << 36
            | (self.slot as u64) << GEN_BITS
            | self.gen as u64;
        u as usize as *mut c_void
    }

    /// The tag a light userdata value carries, or None for any other pointer.
    pub(super) fn decode(p: *mut c_void) -> Option<Tag> {
        let u = p as usize as u64;
        if u & !LO_MASK != MAGIC_HI {
            return None;
        }
        Some(Tag {
            kind: ((u >> 36) & 3) as u8 + 1,
            ro: ((u >> 38) & 1) as u8,
            slot: ((u >> GEN_BITS) & ((1 << SLOT_BITS) - 1)) as u32,
            gen: (u & (GEN_LIMIT as u64 - 1)) as u32,
        })
    }
}

/// Pushes the light userdata handle of `t`.
///
/// # Safety
/// `l` must be a thread of the core's state with a free stack slot, and the tags'
/// segment interned (`Core::install`), so that the push neither allocates nor raises.
#[inline]
pub(super) unsafe fn push_tag(l: *mut ffi::lua_State, t: Tag) {
    ffi::lua_pushlightuserdata(l, t.encode());
}

/// Our tag at stack slot `idx`, or None for any other value (`lua_touserdata` gives
/// NULL for non-userdata and a real address for full userdata: neither has the magic).
///
/// # Safety
/// `l` must be a valid state and `idx` an acceptable index.
#[inline]
pub(super) unsafe fn tag_at(l: *mut ffi::lua_State, idx: c_int) -> Option<Tag> {
    Tag::decode(ffi::lua_touserdata(l, idx))
}
