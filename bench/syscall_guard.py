#!/usr/bin/env python3
"""System calls per proxied connection and per kept-alive request: a figure
that noise cannot move, compared with a committed baseline.

Wall-clock and CPU figures swing by tens of percent on these shared
machines; the number of system calls egressd makes for a fixed workload does
not. This runs egressd (one worker, the production path: redirect listener,
SNI allow-list with destination checks, access log to a file) under
`strace -f -c` in the integration world (pod -> gateway -> internet network
namespaces, real iptables REDIRECT, nginx over TLS), once per workload size,
and takes the difference between two sizes so start-up and shutdown cancel:

  conn     one TLS connection through the SNI check: handshake, one GET,
           close (`client.py tls-seq --n N`)
  request  one more kept-alive GET on an open TLS connection (opaque relay)

Usage (root; a release build):
  bench/syscall_guard.py --egressd build/release/gateway/egressd            # check
  bench/syscall_guard.py --egressd build/release/gateway/egressd --update   # new baseline

Figures, per connection or request (the median of --reps repetitions):

  tls_connection_fixed     every system call of a connection except those
                           whose count depends on timing (epoll_wait, futex,
                           splice, read, write: how bytes and wake-ups happen
                           to bunch up): accept, socket, connect, setsockopt,
                           epoll_ctl, close, ... Spread between runs ~0.1.
  kept_alive_request       all system calls of one more request/response on
                           an open connection. Spread ~0.05.
  tls_connection_all       all of them. Spread ~1 (timing), so its margin is
                           relative.

The check fails when a figure exceeds its baseline by more than its margin:
0.5 system calls for the first two (one more system call per connection or
per request always fails it, scheduling jitter does not), 5 % for the last.
A figure well below its baseline is reported so the baseline can be
tightened with --update.
"""

import argparse
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, os.path.join(ROOT, "test", "integration"))

import world as W  # noqa: E402

BASELINE = os.path.join(HERE, "syscall-baseline.json")

# (workload, client arguments for the small run, for the large run, units between them)
WORKLOADS = [
    ("tls_connection", ["--n", "20"], ["--n", "220"], 200),
    ("kept_alive_request", ["--n", "1", "--requests", "20"], ["--n", "1", "--requests", "420"], 400),
]
# System calls whose count per connection depends on timing.
TIMING = {"epoll_wait", "futex", "splice", "read", "write"}
# figure -> (workload, only the fixed calls?, margin: absolute, or relative when < 0)
FIGURES = {
    "tls_connection_fixed": ("tls_connection", True, 0.5),
    "kept_alive_request": ("kept_alive_request", False, 0.5),
    "tls_connection_all": ("tls_connection", False, -0.05),
}

SUMMARY_LINE = re.compile(r"^\s*[\d.]+\s+[\d.]+\s+\d+\s+(\d+)\s+(?:(\d+)\s+)?(\w+)\s*$")


def config(access_log):
    rules = [{"name": "allowed-tls", "to": [{"host": "allowed.test", "ports": [443]}]}]
    return W.base_config(access_log, rules, workers=1,
                         timeouts={"sniff": "2s", "connect": "2s", "idle": "60s", "drain_delay": "0s",
                                   "drain": "1s"})


def parse_summary(path):
    """strace -c's table -> {syscall: calls}."""
    calls = {}
    with open(path) as f:
        for line in f:
            m = SUMMARY_LINE.match(line)
            if m and m.group(3) != "total":
                calls[m.group(3)] = int(m.group(1))
    return calls


def run_once(world, egressd, client_args, workdir, tag):
    out = os.path.join(workdir, tag + ".strace")
    wrapper = os.path.join(workdir, "strace-egressd.sh")
    with open(wrapper, "w") as f:
        f.write("#!/bin/sh\nexec strace -f -c -o %s -- %s \"$@\"\n" % (out, egressd))
    os.chmod(wrapper, 0o755)
    gw = W.Gateway(world, wrapper, config, name="guard-" + tag)
    gw.start(ready_timeout=30)
    try:
        r = world.client("tls-seq", "--dst", "%s:443" % W.WEB_IP, "--sni", "allowed.test", "--ca", world.ca,
                         *client_args, timeout=300)
        if r["failed"] or not r["ok"]:
            raise RuntimeError("workload failed: %s\n%s" % (r, gw.stderr_tail()))
    finally:
        # Stop egressd itself (strace's child): strace then writes its
        # summary and exits with it. A signal to strace would detach it.
        children = subprocess.run(["pgrep", "-P", str(gw.proc.pid)], capture_output=True, text=True).stdout.split()
        for pid in children or [str(gw.proc.pid)]:
            os.kill(int(pid), signal.SIGTERM)
        try:
            gw.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            gw.proc.kill()
            gw.proc.wait()
    return parse_summary(out)


def measure(egressd, reps):
    """-> ({figure: value}, {workload: {syscall: calls per unit}})"""
    per_workload, breakdown = {}, {}
    with W.World("redirect") as world:
        with tempfile.TemporaryDirectory(prefix="egressd-guard.") as workdir:
            for name, small, large, units in WORKLOADS:
                values = []
                for rep in range(reps):
                    a = run_once(world, egressd, small, workdir, "%s-%d-small" % (name, rep))
                    b = run_once(world, egressd, large, workdir, "%s-%d-large" % (name, rep))
                    per = {k: (b.get(k, 0) - a.get(k, 0)) / units for k in set(a) | set(b)}
                    values.append((sum(per.values()), per, sum(v for k, v in per.items() if k not in TIMING)))
                    if os.environ.get("GUARD_VERBOSE"):
                        print("  rep %d: %s" % (rep, ", ".join("%s %.2f" % (k, v) for k, v in sorted(per.items()) if abs(v) >= 0.05)))
                values.sort(key=lambda v: v[0])
                total, per, _ = values[len(values) // 2]  # the median rep
                fixed = sorted(v[2] for v in values)[len(values) // 2]
                per_workload[name] = {"all": round(total, 2), "fixed": round(fixed, 2)}
                breakdown[name] = {k: round(v, 2) for k, v in sorted(per.items(), key=lambda kv: -kv[1])
                                   if abs(v) >= 0.05}
                print("%-20s all %6.2f (reps: %s)   fixed %6.2f (reps: %s)" % (
                    name, total, ", ".join("%.2f" % v[0] for v in values),
                    fixed, ", ".join("%.2f" % v[2] for v in values)))
                print("   " + ", ".join("%s %.2f" % kv for kv in breakdown[name].items()))
    figures = {f: per_workload[w]["fixed" if only_fixed else "all"] for f, (w, only_fixed, _) in FIGURES.items()}
    return figures, breakdown


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--egressd", required=True)
    ap.add_argument("--baseline", default=BASELINE)
    ap.add_argument("--reps", type=int, default=3, help="repetitions; the median counts")
    ap.add_argument("--update", action="store_true", help="write the measured figures as the baseline")
    a = ap.parse_args()
    if os.geteuid() != 0:
        print("syscall_guard: needs root (network namespaces, iptables): skipped")
        return 77
    egressd = os.path.abspath(a.egressd)
    figures, breakdown = measure(egressd, a.reps)
    if a.update:
        with open(a.baseline, "w") as f:
            json.dump({"measured": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "figures": figures,
                       "breakdown": breakdown}, f, indent=2, sort_keys=True)
            f.write("\n")
        print("baseline written: %s" % a.baseline)
        return 0
    with open(a.baseline) as f:
        baseline = json.load(f)["figures"]
    failed = False
    for name, value in figures.items():
        base = baseline.get(name)
        margin = FIGURES[name][2]
        if base is not None and margin < 0:
            margin = -margin * base
        if base is None:
            print("%s: no baseline (run with --update)" % name)
            failed = True
        elif value > base + margin:
            print("REGRESSION %s: %.2f system calls, baseline %.2f (margin %.2f)" % (name, value, base, margin))
            failed = True
        elif value < base - 2 * margin:
            print("%s: %.2f, below the baseline %.2f: tighten it with --update" % (name, value, base))
        else:
            print("%s: %.2f, baseline %.2f (margin %.2f): ok" % (name, value, base, margin))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
