#!/usr/bin/env python3
"""luring conformance runner.

    python3 conformance/run.py --bin PATH [-k FILTER] [-v]

Discovers conformance/cases/*.py (each module registers cases with harness.case),
starts a loopback origin, a second origin and a TCP echo server, then for every
selected case: writes its Lua plugin(s) to a temp dir, starts
`luring run --listen 127.0.0.1:0 --workers 1 --plugin ... FLAGS`, drives real traffic
(curl, raw sockets), asserts on both sides of the proxy, and stops the proxy.

Prints one line per case (PASS name / FAIL name: reason / PENDING name: reason) and
a closing line `N passed, N failed, N pending`.  Exit code 1 if any case failed.
Every wait is bounded: a hung proxy fails its case, it never hangs the runner.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import shutil
import sys
import tempfile
import threading
import traceback
from pathlib import Path

sys.dont_write_bytecode = True
HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import harness  # noqa: E402
from harness import CASES, CaseFail, Ctx, EchoServer, Origin, Pending, Proxy, ProxyStartError  # noqa: E402

CASE_DEADLINE = 60.0   # seconds for one case, proxy start included


def discover():
    for path in sorted((HERE / "cases").glob("*.py")):
        if path.name.startswith("_"):
            continue
        before = len(CASES)
        spec = importlib.util.spec_from_file_location(f"cases_{path.stem}", path)
        mod = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(mod)
        for c in CASES[before:]:
            c.group = path.stem


def run_case(c, binary, servers, verbose):
    """Returns (verdict, reason)."""
    if c.pending:
        return "PENDING", c.pending
    origin, origin2, echo = servers
    for s in servers:
        s.reset()
    tmp = tempfile.mkdtemp(prefix="luring-conf-")
    ctx = Ctx(binary, tmp, origin, origin2, echo)
    ctx.extra_proxies = []
    result = {}

    def body():
        try:
            args = []
            for name, src in c.plugins.items():
                p = ctx.write(name, ctx.template(src))
                ctx.plugin_paths[name] = p
                args += ["--plugin", str(p)]
            args += [ctx.template(f) for f in c.flags]
            if c.proxy:
                ctx.proxy = Proxy(binary, args)
            c.fn(ctx)
            result["v"] = ("PASS", "")
        except Pending as e:
            result["v"] = ("PENDING", str(e))
        except CaseFail as e:
            result["v"] = ("FAIL", str(e))
        except ProxyStartError as e:
            result["v"] = ("FAIL", f"proxy did not start: {e}")
        except Exception as e:  # a socket error, timeout, parse error...: the case failed
            tb = traceback.format_exc(limit=3) if verbose else ""
            result["v"] = ("FAIL", f"{type(e).__name__}: {e}" + (f"\n{tb}" if tb else ""))

    t = threading.Thread(target=body, daemon=True)
    t.start()
    t.join(CASE_DEADLINE)
    if t.is_alive():
        result["v"] = ("FAIL", f"case did not finish within {CASE_DEADLINE:.0f}s")
    verdict, reason = result.get("v", ("FAIL", "no result"))
    logs = []
    for p in [ctx.proxy, *ctx.extra_proxies]:
        if p is None:
            continue
        if verdict == "PASS" and not p.alive():
            verdict, reason = "FAIL", f"proxy exited during the case (rc {p.p.returncode}): {p.log_tail()}"
        p.stop()
        logs.append(p)
    if verbose and verdict == "FAIL":
        for p in logs:
            for ln in p.lines("stderr")[-40:]:
                print(f"    | {ln}")
            for ln in p.lines("stdout")[-10:]:
                print(f"    |(stdout) {ln}")
    shutil.rmtree(tmp, ignore_errors=True)
    return verdict, reason


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bin", required=True, help="path to the luring binary")
    ap.add_argument("-k", dest="filter", default=None, help="run cases whose name or group contains this")
    ap.add_argument("-v", dest="verbose", action="store_true", help="show proxy logs of failed cases")
    ap.add_argument("--list", action="store_true", help="list the cases and exit")
    a = ap.parse_args(argv)

    discover()
    selected = [c for c in CASES if not a.filter or a.filter in c.name or a.filter == c.group]
    if a.list:
        for c in selected:
            print(f"{c.group}: {c.name}")
        return 0
    binary = os.path.abspath(a.bin)
    if not os.access(binary, os.X_OK):
        print(f"not an executable: {binary}", file=sys.stderr)
        return 2
    if shutil.which("curl") is None:
        print("curl not found in PATH", file=sys.stderr)
        return 2

    # the proxy keeps its CA under $XDG_CONFIG_HOME/luring: a scratch one per suite run
    confhome = tempfile.mkdtemp(prefix="luring-conf-home-")
    os.environ["XDG_CONFIG_HOME"] = confhome
    servers = (Origin("origin"), Origin("origin2"), EchoServer())
    counts = {"PASS": 0, "FAIL": 0, "PENDING": 0}
    for c in selected:
        verdict, reason = run_case(c, binary, servers, a.verbose)
        counts[verdict] += 1
        reason = reason.replace("\n", "\n    ") if a.verbose else reason.replace("\n", " ")
        print(f"{verdict} {c.name}" + (f": {reason}" if reason else ""), flush=True)
    for s in servers:
        s.stop()
    shutil.rmtree(confhome, ignore_errors=True)
    print(f"{counts['PASS']} passed, {counts['FAIL']} failed, {counts['PENDING']} pending", flush=True)
    return 1 if counts["FAIL"] else 0


if __name__ == "__main__":
    sys.exit(main())
