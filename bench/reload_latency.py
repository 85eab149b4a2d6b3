#!/usr/bin/env python3
"""Latency of small flows while the gateway reloads a huge policy.

  sudo bench/reload_latency.py --egressd build/release/gateway/egressd [--rules 1000000]

Builds the integration world (test/integration/world.py: a pod, the gateway
and an "internet" in network namespaces, REDIRECT interception), starts
egressd with a small policy, and runs one short echo flow every 10 ms from
the pod (connect, send a line, read it back, close). After a quiet baseline
the config file is replaced (rename-over) by one with --rules extra host
rules; the reload parses, validates, compiles and runs the config's tests
off the worker threads while flows keep coming. Prints p50/p99/max flow
latency before, during (from the rename until the reload is accepted) and
after, and the added p99. Nothing leaves the namespaces the script creates.
"""

import argparse
import json
import os
import subprocess
import sys
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "test", "integration"))
sys.dont_write_bytecode = True

import world as W  # noqa: E402


def percentile(values, p):
    if not values:
        return float("nan")
    v = sorted(values)
    return v[min(len(v) - 1, int(round(p / 100.0 * (len(v) - 1))))]


def summary(name, samples):
    ok = [ms for _, ms in samples if ms is not None]
    failed = sum(1 for _, ms in samples if ms is None)
    return {"window": name, "flows": len(samples), "failed": failed, "p50_ms": round(percentile(ok, 50), 3),
            "p99_ms": round(percentile(ok, 99), 3), "max_ms": round(max(ok), 3) if ok else None}


def big_config_text(cfg, rules):
    """The small config plus `rules` host rules, in compact YAML."""
    lines = ["%s: %s" % (k, json.dumps(v)) for k, v in cfg.items() if k != "policy"]
    p = cfg["policy"]
    lines += ["policy:", "  mode: %s" % json.dumps(p["mode"]), "  default: %s" % json.dumps(p["default"]),
              "  rules:"]
    lines += ["    - " + json.dumps(r) for r in p["rules"]]
    # Short lines: 1M rules must stay under the loader's 64 MiB file cap.
    lines += ["    - {name: b%d, to: [{host: h%d.s%d.example}]}" % (i, i, i % 997)
              for i in range(rules)]
    return "\n".join(lines) + "\n"


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--egressd", required=True)
    ap.add_argument("--rules", type=int, default=1_000_000)
    ap.add_argument("--baseline", type=float, default=5.0, help="seconds of flows before the reload")
    ap.add_argument("--after", type=float, default=5.0, help="seconds of flows after it")
    a = ap.parse_args()
    if os.geteuid() != 0:
        sys.exit("needs root (network namespaces)")

    rules = [{"name": "echo", "to": [{"cidr": W.ECHO_IP + "/32", "ports": [W.ECHO_PORT]}]}]
    with W.World("redirect") as world:
        gw = W.Gateway(world, os.path.abspath(a.egressd), lambda log: W.base_config(log, rules))
        gw.start()
        client = None
        try:
            big = gw.config_path + ".big"
            t = time.monotonic()
            with open(big, "w") as f:
                f.write(big_config_text(gw.config, a.rules))
            size_mb = os.path.getsize(big) / 1e6
            print("wrote %d rules (%.1f MB) in %.1f s" % (a.rules, size_mb, time.monotonic() - t), file=sys.stderr)
            successes = gw.metrics().sum("egressd_config_reloads_total", result="success")
            rss_before = gw.rss_kib()

            client = world.client_popen("latency", "--dst", W.addr(W.ECHO_IP, W.ECHO_PORT), "--seconds", 3600,
                                        "--interval", 0.01)
            # Read as it comes: a full pipe would stall the client.
            lines = []
            reader = threading.Thread(target=lambda: lines.extend(l.decode() for l in client.stdout), daemon=True)
            reader.start()
            time.sleep(a.baseline)
            t_rename = time.time()
            os.rename(big, gw.config_path)
            rss_peak, health_ok, health_total = 0, 0, 0
            while gw.metrics().sum("egressd_config_reloads_total", result="success") == successes:
                rss_peak = max(rss_peak, gw.rss_kib())
                health_total += 1
                try:
                    health_ok += gw.admin_get("/healthz", timeout=1)[0] == 200
                except Exception:
                    pass
                if time.time() - t_rename > 300:
                    raise SystemExit("the reload was not accepted within 300 s:\n" + gw.stderr_tail())
                if gw.metrics().sum("egressd_config_reloads_total", result="failure") > 0:
                    raise SystemExit("the reload was rejected:\n" + gw.stderr_tail())
                time.sleep(0.2)
            t_done = time.time()
            time.sleep(a.after)
        finally:
            if client is not None:
                client.kill()
                client.wait(timeout=30)
                reader.join(timeout=30)
            gw.stop()
    samples = [json.loads(l) for l in lines if l.startswith("[")]
    windows = [summary("before", [s for s in samples if s[0] < t_rename]),
               summary("during reload", [s for s in samples if t_rename <= s[0] < t_done]),
               summary("after", [s for s in samples if s[0] >= t_done])]
    result = {"rules": a.rules, "config_mb": round(size_mb, 1), "reload_s": round(t_done - t_rename, 2),
              "rss_before_mib": round(rss_before / 1024, 1), "rss_peak_mib": round(rss_peak / 1024, 1),
              "healthz_ok": "%d/%d" % (health_ok, health_total), "windows": windows,
              "added_p99_ms": round(windows[1]["p99_ms"] - windows[0]["p99_ms"], 3)}
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
