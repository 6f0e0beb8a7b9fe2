//! `shared.*`: the one cross-worker store plugins get, a process-wide concurrent map.
//!
//! Deliberately outside the per-worker Lua states: it is the explicit, rare path for
//! data that must be seen by every core (rate-limit counters, feature flags).

use dashmap::DashMap;
use mlua::{Lua, Result, Table, Value};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

#[derive(Clone, Debug)]
enum Val {
    Str(Vec<u8>),
    Num(f64),
    Bool(bool),
}

struct Entry {
    val: Val,
    expires: Option<Instant>,
}

fn map() -> &'static DashMap<String, Entry> {
    static MAP: OnceLock<DashMap<String, Entry>> = OnceLock::new();
    MAP.get_or_init(DashMap::new)
}

fn ttl(secs: Option<f64>) -> Option<Instant> {
    secs.filter(|s| *s > 0.0 && s.is_finite())
        .map(|s| Instant::now() + Duration::from_secs_f64(s))
}

fn live(e: &Entry) -> bool {
    e.expires.is_none_or(|t| Instant::now() < t)
}

fn to_val(v: Value) -> Result<Option<Val>> {
    Ok(match v {
        Value::Nil => None,
        Value::String(s) => Some(Val::Str(s.as_bytes().to_vec())),
        Value::Integer(i) => Some(Val::Num(i as f64)),
        Value::Number(n) => Some(Val::Num(n)),
        Value::Boolean(b) => Some(Val::Bool(b)),
        other => {
            return Err(mlua::Error::runtime(format!(
                "shared: values must be string, number or boolean, got {}",
                other.type_name()
            )))
        }
    })
}

fn to_lua(lua: &Lua, v: &Val) -> Result<Value> {
    Ok(match v {
        Val::Str(s) => Value::String(lua.create_string(s)?),
        Val::Num(n) => Value::Number(*n),
        Val::Bool(b) => Value::Boolean(*b),
    })
}

/// Builds the `shared` table for one state.
pub(crate) fn table(lua: &Lua) -> Result<Table> {
    let t = lua.create_table()?;
    t.set(
        "get",
        lua.create_function(|lua, key: String| {
            let m = map();
            match m.get(&key) {
                Some(e) if live(&e) => to_lua(lua, &e.val),
                Some(e) => {
                    drop(e);
                    m.remove_if(&key, |_, e| !live(e));
                    Ok(Value::Nil)
                }
                None => Ok(Value::Nil),
            }
        })?,
    )?;
    t.set(
        "set",
        lua.create_function(|_, (key, v, secs): (String, Value, Option<f64>)| {
            match to_val(v)? {
                Some(val) => {
                    map().insert(
                        key,
                        Entry {
                            val,
                            expires: ttl(secs),
                        },
                    );
                }
                None => {
                    map().remove(&key);
                }
            }
            Ok(())
        })?,
    )?;
    t.set(
        "incr",
        lua.create_function(
            |_, (key, delta, secs): (String, Option<f64>, Option<f64>)| {
                let delta = delta.unwrap_or(1.0);
                let mut e = map().entry(key).or_insert(Entry {
                    val: Val::Num(0.0),
                    expires: ttl(secs),
                });
                let cur = match (&e.val, live(&e)) {
                    (Val::Num(n), true) => *n,
                    (_, false) => {
                        e.expires = ttl(secs);
                        0.0
                    }
                    (_, true) => {
                        return Err(mlua::Error::runtime("shared.incr: value is not a number"));
                    }
                };
                e.val = Val::Num(cur + delta);
                Ok(cur + delta)
            },
        )?,
    )?;
    t.set(
        "delete",
        lua.create_function(|_, key: String| {
            map().remove(&key);
            Ok(())
        })?,
    )?;
    Ok(t)
}
