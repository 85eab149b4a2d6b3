#!/usr/bin/env python3
"""The cost of inspecting plaintext HTTP/1 request by request.

  sudo bench/l7_cost.py --egressd build/release/gateway/egressd [--seconds 10] [--reps 3]

Builds the integration world (test/integration/world.py: a pod, the
gateway and an "internet" with nginx, in network namespaces) and drives
kept-alive small requests with wrk from the pod to nginx (`GET /`, a
~40-byte body) three ways:

  direct   no interception: the gateway namespace only routes;
  opaque   through egressd, the port allowed by a `cidr` rule: decided at
           once (rule 11), the first bytes classified as they pass, then
           spliced as bytes;
  l7       through egressd, the port allowed by a `host` rule: every
           request's head read, checked (rule 12) and judged, bodies and
           responses streamed through Beast.

egressd runs with `workers: 1`, pinned to CPU 1 with wrk on CPU 0, so its
CPU time per request is comparable. Prints requests/s, latency p50/p99 and
egressd's CPU microseconds per request (utime + stime from /proc), median
of --reps runs. Nothing leaves the namespaces the script creates.
"""

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "test", "integration"))
sys.dont_write_bytecode = True

import world as W  # noqa: E402

CLK_TCK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid):
    with open("/proc/%d/stat" % pid) as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK  # utime, stime


def to_ms(text):
    m = re.match(r"([\d.]+)(us|ms|s)", text)
    v, unit = float(m.group(1)), m.group(2)
    return v / 1000 if unit == "us" else v * 1000 if unit == "s" else v


def wrk(world, seconds, connections):
    p = world.pod_run(["taskset", "-c", "0", "wrk", "-t1", "-c%d" % connections, "-d%ds" % seconds, "--latency",
                       "-H", "Host: allowed.test", "http://%s/" % W.WEB_IP], timeout=seconds + 30)
    out = p.stdout.decode()
    reqs = int(re.search(r"(\d+) requests in", out).group(1))
    lat = dict(re.findall(r"^\s+(50|99)%\s+(\S+)", out, re.M))
    errors = re.search(r"Socket errors: (.*)", out)
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    return {"requests": reqs, "rps": reqs / seconds, "p50_ms": to_ms(lat["50"]), "p99_ms": to_ms(lat["99"]),
            "errors": (errors.group(1) if errors else "") + (" non2xx=%s" % non2xx.group(1) if non2xx else "")}


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--egressd", required=True)
    ap.add_argument("--seconds", type=int, default=10)
    ap.add_argument("--connections", type=int, default=16)
    ap.add_argument("--reps", type=int, default=3)
    a = ap.parse_args()
    if os.geteuid() != 0:
        sys.exit("needs root (network namespaces)")

    modes = {
        "opaque": [{"name": "web", "to": [{"cidr": W.WEB_IP + "/32", "ports": [80]}]}],
        "l7": [{"name": "web", "to": [{"host": "allowed.test", "ports": [80]}]}],
    }
    results = {}
    with W.World("redirect") as world:
        for rep in range(a.reps):
            world.set_interception(None)
            results.setdefault("direct", []).append(wrk(world, a.seconds, a.connections))
            world.set_interception("redirect")
            for mode, rules in modes.items():
                gw = W.Gateway(world, os.path.abspath(a.egressd),
                               lambda log, rules=rules: W.base_config(log, rules, workers=1))
                gw.start()
                try:
                    subprocess.run(["taskset", "-a", "-p", "-c", "1", str(gw.pid)], check=True,
                                   capture_output=True)
                    c0 = cpu_seconds(gw.pid)
                    m = wrk(world, a.seconds, a.connections)
                    m["cpu_us_per_req"] = (cpu_seconds(gw.pid) - c0) * 1e6 / max(1, m["requests"])
                    results.setdefault(mode, []).append(m)
                finally:
                    gw.stop()
            print("rep %d: %s" % (rep + 1, json.dumps({k: v[-1] for k, v in results.items()})), file=sys.stderr)

    print("| path | req/s | p50 ms | p99 ms | egressd CPU µs/req | errors |")
    print("|---|---:|---:|---:|---:|---|")
    for mode in ("direct", "opaque", "l7"):
        runs = results[mode]
        med = lambda k: statistics.median(r[k] for r in runs)  # noqa: E731
        cpu = "%.1f" % med("cpu_us_per_req") if "cpu_us_per_req" in runs[0] else "-"
        print("| %s | %.0f | %.3f | %.3f | %s | %s |" % (mode, med("rps"), med("p50_ms"), med("p99_ms"), cpu,
                                                        "; ".join(sorted({r["errors"] for r in runs if r["errors"]}))
                                                        or "none"))


if __name__ == "__main__":
    main()
