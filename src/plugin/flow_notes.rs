//! `luring.flow_note(key, value)` and `luring.skip_recording()`: what a plugin tells
//! the flow recorder about the flow its hook runs for. Without `--record` both do
//! nothing, so plugins can call them unconditionally.

use super::{Engine, Rt};
use mlua::{Lua, Table};
use rustc_hash::FxHashMap;
use std::cell::{Cell, RefCell};
use std::rc::Rc;

/// Flows with notes waiting for their end; a plugin noting flows that never end (a
/// CONNECT, a connection-level hook) cannot grow this past the cap.
const MAX_OPEN: usize = 4096;

/// What plugins said about one flow.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct FlowNotes {
    /// Key/value notes, in the order written.
    pub notes: Vec<(String, String)>,
    /// Leave this flow out of the recording.
    pub skip: bool,
}

/// The notes of flows in progress on this worker.
#[derive(Default)]
pub(super) struct NoteBook {
    /// The proxy records flows: notes are kept.
    pub(super) on: bool,
    /// The flow of the hook running now (ctx.flow_id).
    pub(super) flow: Cell<Option<u64>>,
    open: RefCell<FxHashMap<u64, FlowNotes>>,
}

impl NoteBook {
    /// A note book that keeps notes only when `on` (the proxy records).
    pub(super) fn new(on: bool) -> Self {
        NoteBook {
            on,
            ..Default::default()
        }
    }

    fn with(&self, f: impl FnOnce(&mut FlowNotes)) -> mlua::Result<()> {
        if !self.on {
            return Ok(());
        }
        let Some(id) = self.flow.get() else {
            return Err(mlua::Error::runtime(
                "no flow: this hook runs for a connection, not an exchange",
            ));
        };
        let mut open = self.open.borrow_mut();
        if open.len() >= MAX_OPEN && !open.contains_key(&id) {
            tracing::warn!(
                "flow notes: {MAX_OPEN} flows with notes are open; this note is not kept"
            );
            return Ok(());
        }
        f(open.entry(id).or_default());
        Ok(())
    }
}

/// Adds the two functions to the `luring` table.
pub(super) fn install(lua: &Lua, luring: &Table, rt: &Rc<Rt>) -> mlua::Result<()> {
    let r = rt.clone();
    luring.raw_set(
        "flow_note",
        lua.create_function(move |_, (k, v): (mlua::String, mlua::Value)| {
            let value = match &v {
                mlua::Value::String(s) => s.to_string_lossy(),
                other => other.to_string()?,
            };
            let key = k.to_string_lossy();
            r.notes.with(|n| n.notes.push((key, value)))
        })?,
    )?;
    let r = rt.clone();
    luring.raw_set(
        "skip_recording",
        lua.create_function(move |_, ()| r.notes.with(|n| n.skip = true))?,
    )?;
    Ok(())
}

impl Engine {
    /// Takes what plugins noted about flow `id`, once, when the flow ends.
    pub fn take_flow_notes(&self, id: u64) -> Option<FlowNotes> {
        let mut open = self.rt.notes.open.borrow_mut();
        if open.is_empty() {
            return None;
        }
        open.remove(&id)
    }
}
