"""Load time: `luring check` and `luring run` on good and bad plugins (spec section 1).

Every load-time error of the spec table is checked twice: `luring check FILE` must exit 1
and print the exact phrase plus the file name and the line of the mistake, and
`luring run --plugin FILE` must refuse to start (non-zero exit, same text, never the
"listening" line).  Registration of every one of the 17 rows must be accepted.
"""

import re

from harness import ROWS, CaseFail, Proxy, ProxyStartError, case, check, eq, run_cli

# Each bad plugin puts its mistake on a known line (comments pad the lines above it).
PAD = "-- conformance: load-time error\n-- (padding so the mistake is on a known line)\n"

BAD = [
    # (case label, file name, source, line of the mistake, phrases that must appear)
    ("pair not in table", "bad_pair.lua",
     PAD + "local ok = true\nregister_hook(\"http\", \"on_frobnicate\", function(msg, ctx) end)\n",
     4, ["(http, on_frobnicate) not in RFC §9.3 hook surface"]),
    ("phase on lifecycle event", "bad_lifecycle_phase.lua",
     PAD + "local ok = true\nregister_hook(\"connection\", \"on_connect\", function(msg, ctx) end, { phase = \"post_pipeline\" })\n",
     4, ["lifecycle event connection.on_connect takes no phase"]),
    ("unknown phase", "bad_phase.lua",
     PAD + "local ok = true\nregister_hook(\"http\", \"on_request\", function(msg, ctx) end, { phase = \"middle_pipeline\" })\n",
     4, ["unknown phase 'middle_pipeline'"]),
    ("unknown on_error", "bad_on_error.lua",
     PAD + "local ok = true\nregister_hook(\"http\", \"on_request\", function(msg, ctx) end, { on_error = \"retry\" })\n",
     4, ["unknown on_error 'retry'"]),
    ("handler not a function", "bad_handler.lua",
     PAD + "local ok = true\nregister_hook(\"http\", \"on_request\", 42)\n",
     4, ["register_hook: handler must be a function"]),
    ("syntax error", "bad_syntax.lua",
     PAD + "local a = 1\nlocal b = = 2\n",
     4, ["unexpected symbol"]),
    ("top-level runtime error", "bad_runtime.lua",
     PAD + "local a = 1\nerror(\"conf-top-level-boom\")\n",
     4, ["conf-top-level-boom"]),
]


def location_re(fname, line):
    # "bad.lua:4:", "[string \"bad.lua\"]:4:", "bad.lua line 4", "bad.lua (line 4)"
    return re.compile(re.escape(fname) + r"\D{0,12}" + str(line) + r"\b")


def assert_error_text(out, fname, line, phrases, how):
    for ph in phrases:
        check(ph in out, f"{how}: output lacks {ph!r}: {out.strip()[:400]!r}")
    check(location_re(fname, line).search(out),
          f"{how}: output does not name {fname} line {line}: {out.strip()[:400]!r}")


def make_check_case(label, fname, src, line, phrases):
    @case(f"load error via check: {label}", proxy=False)
    def _c(t):
        p = t.write(fname, src)
        rc, out = t.check_cli(p)
        check(rc is not None, "luring check did not exit within 15s")
        eq(rc, 1, f"exit code of `luring check {fname}`")
        assert_error_text(out, fname, line, phrases, "luring check")


def make_run_case(label, fname, src, line, phrases):
    @case(f"load error via run: {label}", proxy=False)
    def _c(t):
        p = t.write(fname, src)
        try:
            prox = Proxy(t.bin, ["--plugin", str(p)], timeout=10)
        except ProxyStartError as e:
            text = str(e)
            check("exited with" in text, f"luring run neither started nor exited: {text[:300]}")
            m = re.search(r"exited with (-?\d+)", text)
            check(m and int(m.group(1)) != 0, f"luring run exited with code 0: {text[:300]}")
            assert_error_text(text, fname, line, phrases, "luring run")
            return
        t.extra_proxies.append(prox)
        raise CaseFail(f"luring run started listening with the bad plugin {fname}")


for _b in BAD:
    make_check_case(*_b)
    make_run_case(*_b)


LIFECYCLE = [(p, e) for (p, e, kind, _l) in ROWS if kind == "lifecycle"]


@case("load error via check: phase on every lifecycle row", proxy=False)
def _lifecycle_phase_all(t):
    eq(len(LIFECYCLE), 7, "lifecycle rows in the table")
    for proto, ev in LIFECYCLE:
        fname = f"lc_{proto.replace('-', '_')}_{ev}.lua"
        p = t.write(fname, f'register_hook("{proto}", "{ev}", function(msg, ctx) end, {{ phase = "pre_pipeline" }})\n')
        rc, out = t.check_cli(p)
        eq(rc, 1, f"exit code of `luring check` for a phase on {proto}.{ev}")
        want = f"lifecycle event {proto}.{ev} takes no phase"
        check(want in out, f"{proto}.{ev}: output lacks {want!r}: {out.strip()[:300]!r}")


@case("load error via check: unknown events of real protocols", proxy=False)
def _unknown_pairs(t):
    # real protocol names with events that belong to another protocol
    for proto, ev in [("http", "on_message"), ("ws", "on_request"), ("raw", "on_connect"),
                      ("connection", "on_chunk"), ("smtp", "on_request")]:
        p = t.write("pair.lua", f'register_hook("{proto}", "{ev}", function() end)\n')
        rc, out = t.check_cli(p)
        eq(rc, 1, f"exit code of `luring check` for ({proto}, {ev})")
        want = f"({proto}, {ev}) not in RFC §9.3 hook surface"
        check(want in out, f"output lacks {want!r}: {out.strip()[:300]!r}")


GOOD = """-- a valid plugin: three hooks with explicit and default options
register_hook("http", "on_request", function(msg, ctx) end,
  { phase = "post_pipeline", on_error = "abort", name = "auth-check" })
register_hook("http", "on_response", function(msg, ctx) end, { name = "resp-default" })
register_hook("connection", "on_disconnect", function(msg, ctx) end, { name = "bye-logger" })
"""


def hook_line(out, *tokens):
    for ln in out.splitlines():
        if all(tok in ln for tok in tokens):
            return ln
    return None


@case("check good plugin lists protocol, event, phase, on_error, name", proxy=False)
def _check_good(t):
    p = t.write("good.lua", GOOD)
    rc, out = t.check_cli(p)
    eq(rc, 0, f"exit code of `luring check good.lua` (output {out.strip()[:300]!r})")
    check(hook_line(out, "http", "on_request", "post_pipeline", "abort", "auth-check"),
          f"no line lists http on_request post_pipeline abort auth-check: {out.strip()[:500]!r}")
    check(hook_line(out, "http", "on_response", "pre_pipeline", "skip", "resp-default"),
          f"no line lists the defaults http on_response pre_pipeline skip resp-default: {out.strip()[:500]!r}")
    ln = hook_line(out, "connection", "on_disconnect", "skip", "bye-logger")
    check(ln, f"no line lists connection on_disconnect skip bye-logger: {out.strip()[:500]!r}")
    check("pre_pipeline" not in ln and "post_pipeline" not in ln,
          f"a lifecycle hook is listed with a pipeline phase: {ln!r}")


@case("check two files, one bad: exit 1 naming the bad one", proxy=False)
def _check_two(t):
    good = t.write("good.lua", GOOD)
    bad = t.write("bad_two.lua", 'register_hook("http", "on_request", "not a function")\n')
    rc, out = t.check_cli(good, bad)
    eq(rc, 1, "exit code of `luring check good.lua bad_two.lua`")
    check("register_hook: handler must be a function" in out and "bad_two.lua" in out,
          f"error text or file name missing: {out.strip()[:400]!r}")


def make_register_case(proto, ev, kind):
    opts = ', { phase = "post_pipeline", name = "reg-post" }' if kind == "pipeline" else ', { name = "reg-life" }'

    @case(f"register {proto}.{ev}", proxy=False)
    def _c(t):
        src = (f'register_hook("{proto}", "{ev}", function(msg, ctx) end{opts})\n'
               + (f'register_hook("{proto}", "{ev}", function(msg, ctx) end)\n' if kind == "pipeline" else ""))
        p = t.write("reg.lua", src)
        rc, out = t.check_cli(p)
        eq(rc, 0, f"exit code of `luring check` registering {proto}.{ev} (output {out.strip()[:300]!r})")
        check(hook_line(out, proto, ev), f"{proto} {ev} not listed: {out.strip()[:300]!r}")
        if kind == "pipeline":
            check(hook_line(out, proto, ev, "post_pipeline", "reg-post"),
                  f"post_pipeline hook of {proto}.{ev} not listed: {out.strip()[:300]!r}")
            check(hook_line(out, proto, ev, "pre_pipeline"),
                  f"default-phase hook of {proto}.{ev} not listed as pre_pipeline: {out.strip()[:300]!r}")


for _p, _e, _k, _l in ROWS:
    make_register_case(_p, _e, _k)


ALL_ROWS_SRC = "".join(
    f'register_hook("{p}", "{e}", function(msg, ctx) end)\n' for (p, e, _k, _l) in ROWS)


@case("run starts with all 17 rows registered", plugins={"all_rows.lua": ALL_ROWS_SRC})
def _run_all_rows(t):
    r = t.curl("/echo")
    eq(r.status, 200, f"status through a proxy with all rows registered (curl: {r.err})")
    eq(t.one_request()["target"], "/echo", "target at the origin")


@case("load error via check: phase 'none' is not a phase name", proxy=False)
def _phase_none(t):
    p = t.write("phase_none.lua", 'register_hook("http", "on_request", function() end, { phase = "none" })\n')
    rc, out = t.check_cli(p)
    eq(rc, 1, "exit code for phase 'none' on a pipeline event")
    check("unknown phase 'none'" in out, f"output lacks \"unknown phase 'none'\": {out.strip()[:300]!r}")
    p = t.write("phase_none_lc.lua", 'register_hook("connection", "on_connect", function() end, { phase = "none" })\n')
    rc, out = t.check_cli(p)
    eq(rc, 1, "exit code for phase 'none' on a lifecycle event")
    check("lifecycle event connection.on_connect takes no phase" in out,
          f"output lacks the lifecycle phase error: {out.strip()[:300]!r}")
