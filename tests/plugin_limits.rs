//! Hostile plugins in a real luring process (docs/security.md, "Plugins"): hooks that
//! loop, allocate without bound, nest coroutines or callbacks without end, or fail in
//! their error handlers are stopped; the same worker keeps serving; the log names the
//! plugin file and line; the process's memory stays within the limit plus a margin.

mod support;

use std::time::Duration;
use support::*;

/// Each misbehaviour behind a path; any other path passes through untouched. Line
/// numbers matter: the tests look for them in the log.
const PLUGIN: &str = r#"local hogs = {}
register_hook("http", "on_request", function(m)
  local p = m.path
  if p == "/loop" then
    while true do end                                        -- line 5
  elseif p == "/rep" then
    local s = string.rep("x", 2^31 - 1024)                   -- line 7
  elseif p == "/grow" then
    local t = {} ; local i = 0
    while true do i = i + 1 ; t[i] = {i, i} end               -- line 10
  elseif p == "/keep" then
    hogs[#hogs + 1] = string.rep("k", 32 * 2^20) .. #hogs    -- line 12
  elseif p == "/xpcall" then
    xpcall(function() error("first") end, function() error("in handler") end)
    error("after xpcall")                                    -- line 15
  elseif p == "/nest" then
    local function bomb() coroutine.wrap(bomb)() end
    bomb()                                                   -- line 18
  elseif p == "/gsub" then
    local function f() ("x"):gsub(".", f) end
    f()                                                      -- line 21
  elseif p == "/pcall-rep" then
    for i = 1, 10 do pcall(string.rep, "y", 2^30) end
    m.headers:set("x-swallowed", "yes")                      -- line 24
  elseif p == "/free" then
    hogs = {}
    collectgarbage()
  end
end)
"#;

const LIMIT: u64 = 64 << 20;

fn start(dir: &TempDir) -> Proxy {
    let plugin = dir.path("limits.lua");
    std::fs::write(&plugin, PLUGIN).unwrap();
    let limit = LIMIT.to_string();
    Proxy::start(&[
        "--workers",
        "1",
        "--plugin",
        plugin.to_str().unwrap(),
        "--plugin-memory-limit",
        &limit,
        // long enough that the memory limit, not the clock, stops the allocating hooks
        "--hook-budget-ms",
        "3000",
        "--metrics",
        "127.0.0.1:0",
    ])
}

/// The value of the first sample of `name` for limits.lua on the proxy's /metrics.
fn metric(proxy: &Proxy, name: &str) -> f64 {
    let err = proxy.stderr();
    let url = err
        .lines()
        .find_map(|l| l.split("luring metrics on ").nth(1))
        .unwrap_or_else(|| panic!("no metrics line: {err}"))
        .trim()
        .to_string();
    let r = curl(&[&url]);
    let text = r.body_str();
    let prefix = format!("{name}{{plugin=\"limits.lua\"");
    text.lines()
        .find(|l| l.starts_with(&prefix))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no {name} for limits.lua:\n{text}"))
}

fn get(proxy: &Proxy, origin: &Origin, path: &str) -> CurlOutput {
    curl(&["-x", &proxy.url(), &format!("{}{path}", origin.url())])
}

/// The request passes (the failed hook is skipped) and the next one on the same, only
/// worker too.
fn assert_serves(proxy: &Proxy, origin: &Origin, path: &str) {
    let r = get(proxy, origin, path);
    assert_eq!(
        (r.status, r.body_str()),
        (200, "origin".to_string()),
        "{path}: {}\n{}",
        r.stderr,
        proxy.stderr()
    );
    let r = get(proxy, origin, "/fine");
    assert_eq!(
        r.status,
        200,
        "after {path}: {}\n{}",
        r.stderr,
        proxy.stderr()
    );
}

/// The log has a failure of limits.lua naming `line` and saying `what`.
fn assert_logged(proxy: &Proxy, what: &str, line: u32) {
    let at = format!("limits.lua:{line}");
    let ok = wait_until(Duration::from_secs(5), || {
        let e = proxy.stderr();
        e.contains(what) && e.contains(&at)
    });
    assert!(
        ok,
        "no log line with {what:?} and {at}:\n{}",
        proxy.stderr()
    );
}

#[test]
fn runaway_and_hostile_hooks_fail_and_the_worker_keeps_serving() {
    let dir = TempDir::new("plugin-limits");
    let origin = Origin::start(fixed(200, &[], b"origin"));
    let mut proxy = start(&dir);
    assert_serves(&proxy, &origin, "/fine");

    assert_serves(&proxy, &origin, "/loop");
    assert_logged(&proxy, "time budget", 5);

    assert_serves(&proxy, &origin, "/xpcall");
    assert_logged(&proxy, "after xpcall", 15);

    assert_serves(&proxy, &origin, "/nest");
    assert_logged(&proxy, "nested too deep", 18);

    assert_serves(&proxy, &origin, "/gsub");
    assert_logged(&proxy, "nested too deep", 21);
    assert!(
        proxy.wait_exit(Duration::from_millis(1)).is_none(),
        "luring died"
    );
}

#[test]
fn allocation_without_bound_stops_at_the_memory_limit() {
    let dir = TempDir::new("plugin-mem");
    let origin = Origin::start(fixed(200, &[], b"origin"));
    let mut proxy = start(&dir);
    for (path, line) in [("/rep", 7), ("/grow", 10)] {
        for _ in 0..3 {
            assert_serves(&proxy, &origin, path);
        }
        assert_logged(&proxy, "plugin memory limit exceeded", line);
    }
    // a plugin's pcall does not swallow the limit: the hook fails before its last line
    let r = get(&proxy, &origin, "/pcall-rep");
    assert_eq!(r.status, 200);
    assert!(
        !origin
            .requests()
            .iter()
            .any(|q| q.header("x-swallowed").is_some()),
        "the hook went on after the limit"
    );
    // memory a plugin keeps for good: once the state is full every such call fails,
    // other requests still pass, and freeing it brings the state back
    for _ in 0..4 {
        assert_serves(&proxy, &origin, "/keep");
    }
    assert_logged(&proxy, "plugin memory limit exceeded", 12);
    assert_serves(&proxy, &origin, "/free");
    assert_serves(&proxy, &origin, "/keep");

    let stopped = metric(&proxy, "luring_hook_memory_interruptions_total");
    assert!(stopped >= 7.0, "memory interruptions counted: {stopped}");
    assert!(metric(&proxy, "luring_hook_errors_total") >= stopped);

    let hwm = proxy.vm_hwm_kib().expect("VmHWM") * 1024;
    eprintln!("peak RSS {} MiB", hwm >> 20);
    assert!(
        hwm < LIMIT + (100 << 20),
        "peak RSS {} MiB with a {} MiB plugin limit",
        hwm >> 20,
        LIMIT >> 20
    );
    assert!(
        proxy.wait_exit(Duration::from_millis(1)).is_none(),
        "luring died"
    );
}
