"""Reload (spec section 1): SIGHUP or --watch loads the plugin files again; a set that
fails to load is rejected with its error logged and the previous set stays active."""

import os
import signal
import time

from harness import case, check, eq, hget

V = """
register_hook("http", "on_request", function(msg, ctx)
  msg.headers:set("x-version", "@V@")
end)
"""


def version_seen(t, want, timeout=6.0):
    """Requests until the origin sees x-version == want (bounded); returns the last value."""
    deadline = time.monotonic() + timeout
    last = None
    for _ in range(200):
        t.origin.reset()
        r = t.curl("/echo", timeout=5)
        check(r.status == 200, f"client status {r.status} during reload (curl: {r.err})")
        last = hget(t.one_request()["headers"], "x-version")
        if last == want or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    return last


def rewrite(path, text):
    path.write_text(text)
    st = path.stat()                  # make sure a watcher sees a new mtime
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 2_000_000_000))


@case("reload on SIGHUP; a bad set keeps the previous one", plugins={"ver.lua": V.replace("@V@", "1")})
def _sighup(t):
    eq(version_seen(t, "1"), "1", "x-version before reload")
    path = t.plugin_paths["ver.lua"]
    rewrite(path, V.replace("@V@", "2"))
    t.proxy.p.send_signal(signal.SIGHUP)
    eq(version_seen(t, "2"), "2", "x-version after SIGHUP")
    rewrite(path, 'register_hook("http", "on_request", 42)\n')
    t.proxy.p.send_signal(signal.SIGHUP)
    t.proxy.expect_log(r"register_hook: handler must be a function", timeout=5,
                       what="the reload error")
    eq(version_seen(t, "never", timeout=1.0), "2", "x-version after a rejected reload")


@case("reload with --watch when the file changes", flags=["--watch"], plugins={"ver.lua": V.replace("@V@", "1")})
def _watch(t):
    eq(version_seen(t, "1"), "1", "x-version before the change")
    rewrite(t.plugin_paths["ver.lua"], V.replace("@V@", "2"))
    eq(version_seen(t, "2", timeout=8.0), "2", "x-version after the file changed (--watch)")
