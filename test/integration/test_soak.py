"""The soak: mixed traffic through one egressd for EGRESSD_SOAK_SECONDS
(default 90; the documented run is 1800, see docs/hardening.md), in phases
of EGRESSD_SOAK_PHASE seconds (default 30; 60 in the documented run).

Each phase runs soak_client.py in the pod (TLS, HTTP/1.1 keep-alive, slow
downloads, h2c, raw TCP, two kinds of denial, two kinds of slowloris), and
half-way through it the policy is reloaded (the file rewritten, and every
other phase a SIGHUP as well). At the end of a phase the traffic stops, and
once every flow has ended:

- every connection the clients made has exactly one `flow` record (and an
  `open` record when let through), with byte counts that agree with what
  the clients saw (accounting.py); the h2c connections, which nghttp makes
  from the pod's default address, are counted;
- flows started (egressd_flows_total) == flow records written;
- the reload counters went up by the reloads made, with no failure;
- descriptors other than pipes are back to the first phase's, and RSS is
  read (the "quiet" reading).

At the end: RSS at the quiet points does not grow after the first phases,
descriptors are flat, and egressd's stderr has no error lines and no
warning that the soak did not cause. The timeline (one row per phase, and
load readings every 5 s) is printed, and written as JSON to
EGRESSD_SOAK_REPORT when set.
"""

import json
import os
import signal
import subprocess
import time

import accounting
import harness
import world as W

A = W.addr
SECONDS = float(os.environ.get("EGRESSD_SOAK_SECONDS", "90"))
PHASE = float(os.environ.get("EGRESSD_SOAK_PHASE", "30"))
REPORT = os.environ.get("EGRESSD_SOAK_REPORT")
SOAK_CLIENT = os.path.join(W.HERE, "soak_client.py")

# One pod address per kind of flow, so that a source port is never reused
# towards another destination while conntrack remembers it (see
# test_stress.py). h2c goes from the pod's default address (nghttp cannot
# bind one); nothing else does.
KINDS = {
    "echo": {"src": "10.200.1.30", "dst": A(W.ECHO_IP, W.ECHO_PORT), "threads": 2},
    "tls": {"src": "10.200.1.31", "dst": A(W.WEB_IP, 443), "threads": 2},
    "keepalive": {"src": "10.200.1.32", "dst": A(W.WEB_IP, 80), "threads": 2},
    "slow": {"src": "10.200.1.33", "dst": A(W.WEB_IP, 80), "threads": 2},
    "keepalive_deny": {"src": "10.200.1.38", "dst": A(W.WEB_IP, 80), "threads": 1, "pause": 0.1},
    "h2c": {"src": None, "dst": A(W.WEB_IP, W.H2C_PORT), "threads": 1, "pause": 0.05},
    "h2c_deny": {"src": None, "dst": A(W.WEB_IP, W.H2C_PORT), "threads": 1, "pause": 0.2},
    "deny_tls": {"src": "10.200.1.34", "dst": A(W.WEB3_IP, 443), "threads": 1},
    "deny_port": {"src": "10.200.1.35", "dst": A(W.ECHO_IP, W.ECHO_PORT_DENIED), "threads": 1},
    "slowloris": {"src": "10.200.1.36", "dst": A(W.WEB_IP, 443), "threads": 2},
    "slowhead": {"src": "10.200.1.37", "dst": A(W.WEB_IP, 80), "threads": 1},
}
ALLOWED = {"echo": True, "tls": True, "keepalive": True, "keepalive_deny": None, "slow": True, "deny_tls": False,
           "deny_port": False, "slowloris": None, "slowhead": None}
# Their request side is relayed request by request: bytes_up is not the
# client's count (accounting.py).
HTTP1 = ("keepalive", "keepalive_deny", "slow", "slowhead")

RULES_A = [
    {"name": "web", "to": [{"host": "allowed.test", "ports": [443, 80, W.H2C_PORT]}]},
    {"name": "echo", "to": [{"cidr": W.ECHO_IP + "/32", "ports": [W.ECHO_PORT]}]},
    {"name": "block-denied", "action": "deny", "to": [{"host": "denied.test", "ports": [80, W.H2C_PORT]}]},
]
# B differs by a rule no soak flow matches: every decision stays the same.
RULES_B = RULES_A + [{"name": "reloaded", "to": [{"host": "other.test", "ports": [443]}]}]


def setUpModule():
    harness.module_world("redirect")


def tearDownModule():
    harness.close_world()


class LogReader:
    """The access log's records read from a byte offset on, so that a
    long soak does not parse the whole file at every phase."""

    def __init__(self, path):
        self.path, self.offset = path, 0

    def skip_to_end(self):
        self.offset = os.path.getsize(self.path)

    def new_records(self):
        with open(self.path, "rb") as f:
            f.seek(self.offset)
            data = f.read()
        end = data.rfind(b"\n") + 1
        self.offset += end
        return [json.loads(line) for line in data[:end].split(b"\n") if line.strip()]


def wait_until(pred, timeout, interval=0.1):
    deadline = time.monotonic() + timeout
    while True:
        if pred():
            return True
        if time.monotonic() > deadline:
            return False
        time.sleep(interval)


def rss_fds(gw):
    r = accounting.resources(gw)
    return {"rss_kib": r["rss_kib"], "fds": r["fds"], "pipes": r["pipes"]}


class SoakTest(harness.GatewayTest):
    rules = RULES_A

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        for k in KINDS.values():
            if k["src"]:
                W.run(["ip", "-n", cls.world.pod, "addr", "replace", k["src"] + "/24", "dev", "eth0"])

    def write_policy(self, rules):
        cfg = dict(self.gw.config)
        cfg["policy"] = dict(cfg["policy"], rules=rules)
        tmp = self.gw.config_path + ".tmp"
        with open(tmp, "w") as f:
            json.dump(cfg, f, indent=2)
        os.replace(tmp, self.gw.config_path)  # whole, at once: never a half-written file

    def reloads(self):
        m = self.gw.metrics()
        return (m.sum("egressd_config_reloads_total", result="success"),
                m.sum("egressd_config_reloads_total", result="failure"))

    def run_phase(self, n, log, samples):
        """One phase; returns its row for the timeline."""
        stop = self.world.path("soak-stop-%d" % n)
        flows_file = self.world.path("soak-flows-%d.jsonl" % n)
        spec = {"stop_file": stop, "ca": self.world.ca, "kinds": KINDS}
        m0 = self.gw.metrics()
        r0 = self.reloads()
        t0 = time.monotonic()
        p = self.world.pod_popen([W.PYTHON, SOAK_CLIENT, json.dumps(spec), flows_file], stdout=subprocess.PIPE,
                                 stderr=subprocess.PIPE)
        self.addCleanup(lambda: p.poll() is None and p.kill())
        if p.stdout.readline().strip() != b"started":
            self.fail("soak_client.py did not start: %s" % p.stderr.read().decode()[-2000:])

        reloaded = False
        peak = {"rss_kib": 0, "fds": 0, "active": 0}
        while time.monotonic() - t0 < PHASE:
            time.sleep(min(5.0, max(0.0, PHASE - (time.monotonic() - t0))))
            s = rss_fds(self.gw)
            s["active"] = self.gw.metrics().sum("egressd_flows_active")
            s["t"] = round(time.monotonic() - self.t_start, 1)
            samples.append(s)
            for k in peak:
                peak[k] = max(peak[k], s[k])
            if not reloaded and time.monotonic() - t0 >= PHASE / 2:
                self.write_policy(RULES_B if n % 2 == 0 else RULES_A)
                if n % 2 == 1:
                    os.kill(self.gw.pid, signal.SIGHUP)
                reloaded = True
        open(stop, "w").close()
        try:
            _, err = p.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            p.kill()
            self.fail("soak_client.py did not stop within 60 s of the stop file")
        self.assertEqual(p.returncode, 0, err.decode()[-2000:])
        self.assertTrue(wait_until(lambda: self.gw.metrics().sum("egressd_flows_active") == 0, 30),
                        "flows still open 30 s after the traffic stopped")

        with open(flows_file) as f:
            flows = [json.loads(line) for line in f]
        failed = [f for f in flows if not f["ok"]]
        self.assertEqual(failed[:5], [], "phase %d: %d of %d flows failed" % (n, len(failed), len(flows)))

        ledger = accounting.Ledger()
        h2c = h2c_denied = 0
        for f in flows:
            if f["kind"].startswith("h2c"):
                h2c += 1
                h2c_denied += f["kind"] == "h2c_deny"
                continue
            if not f["local"]:
                continue
            ledger.add(f["local"], None if f["kind"] in HTTP1 else f["sent"],
                       None if f["kind"] == "keepalive_deny" else f["received"],
                       allowed=ALLOWED[f["kind"]], exact=bool(f["clean"]), note=f["kind"])
        want = {e.local for e in ledger}
        h2c_dst = KINDS["h2c"]["dst"]
        recs = []

        def all_written():
            recs.extend(log.new_records())
            flow_recs = [r for r in recs if r.get("event") == "flow"]
            have = {accounting.norm_addr(r.get("src")) for r in flow_recs}
            return want <= have and sum(1 for r in flow_recs if r.get("dst") == h2c_dst) >= h2c
        self.assertTrue(wait_until(all_written, 30), "phase %d: flow records missing after 30 s" % n)
        h2c_flows = [r for r in recs if r.get("event") == "flow" and r.get("dst") == h2c_dst]
        accounting.assert_accounted(self, ledger, [r for r in recs if r.get("dst") != h2c_dst])
        self.assertEqual(len(h2c_flows), h2c, "phase %d: one flow record per h2c connection" % n)
        self.assertEqual([r for r in h2c_flows if r.get("close") != "eof"][:3], [], "h2c flows end eof")
        denied_streams = [r for r in recs if r.get("event") == "request" and r.get("dst") == h2c_dst]
        self.assertEqual(len(denied_streams), h2c_denied, "phase %d: one request record per denied stream" % n)
        for r in denied_streams[:20]:
            self.assertRecord(r, decision="deny", rule="block-denied", host="denied.test")

        m1 = self.gw.metrics()
        flow_recs = sum(1 for r in recs if r.get("event") == "flow")
        started = m1.sum("egressd_flows_total") - m0.sum("egressd_flows_total")
        self.assertEqual(started, flow_recs, "phase %d: flows started == flow records written" % n)
        self.assertEqual(m1.sum("egressd_access_log_dropped_total"), 0)
        r1 = self.reloads()
        self.assertGreaterEqual(r1[0] - r0[0], 1, "phase %d: the reload was applied" % n)
        self.assertEqual(r1[1], r0[1], "phase %d: no reload failed" % n)

        kinds = {}
        for f in flows:
            kinds[f["kind"]] = kinds.get(f["kind"], 0) + 1
        closes = {}
        for r in recs:
            if r.get("event") == "flow":
                closes[r.get("close")] = closes.get(r.get("close"), 0) + 1
        quiet = rss_fds(self.gw)
        return {"phase": n, "flows": len(flows), "records": flow_recs, "requests":
                sum(1 for r in recs if r.get("event") == "request"), "kinds": kinds, "closes": closes,
                "reloads": r1[0] - r0[0], "peak": peak, "quiet": quiet}

    def test_soak(self):
        self.t_start = time.monotonic()
        log = LogReader(self.log.path)
        log.skip_to_end()
        base = rss_fds(self.gw)
        phases = max(1, int(round(SECONDS / PHASE)))
        rows, samples = [], []
        print("\n  soak: %d phases of %g s" % (phases, PHASE), flush=True)
        for n in range(1, phases + 1):
            row = self.run_phase(n, log, samples)
            rows.append(row)
            print("  phase %2d: %6d flows, %6d records, %5d requests, reloads +%d; peak RSS %d KiB, fds %d, "
                  "active %d; quiet RSS %d KiB, fds %d (pipes %d)" % (
                      n, row["flows"], row["records"], row["requests"], row["reloads"], row["peak"]["rss_kib"],
                      row["peak"]["fds"], row["peak"]["active"], row["quiet"]["rss_kib"], row["quiet"]["fds"],
                      row["quiet"]["pipes"]), flush=True)

        # Descriptors: every socket closed at each quiet point (the relay's
        # pipe pool may grow to its bound; it holds only pipes).
        sockets = [r["quiet"]["fds"] - r["quiet"]["pipes"] for r in rows]
        self.assertEqual(set(sockets), {base["fds"] - base["pipes"]}, "non-pipe descriptors at each quiet point")
        # Memory: after the first phases (allocator caches, high-water
        # tables), RSS at the quiet points stays flat.
        settle = min(len(rows) - 1, max(1, len(rows) // 5))
        later = [r["quiet"]["rss_kib"] for r in rows[settle:]]
        if not harness.SANITIZER:
            self.assertLessEqual(max(later) - later[0], 4096,
                                 "quiet RSS grew after phase %d: %s" % (settle, later))

        err = open(self.world.path(self.gw.name + ".err"), errors="replace").read().splitlines()
        level = [(line.split(maxsplit=2) + ["", ""])[1] for line in err]  # "TIME LEVEL message"
        errors = [line for line, lv in zip(err, level) if lv in ("error", "critical")]
        warnings = [line for line, lv in zip(err, level) if lv == "warning"]
        self.assertEqual(errors[:5], [], "error lines in egressd's stderr")
        self.assertEqual(warnings[:5], [], "warnings in egressd's stderr")

        summary = {"seconds": SECONDS, "phase_seconds": PHASE, "phases": rows, "samples": samples,
                   "baseline": base, "flows": sum(r["flows"] for r in rows),
                   "records": sum(r["records"] for r in rows), "stderr_lines": len(err)}
        print("  soak: %d client flows, %d flow records, %d reloads; quiet RSS %d -> %d KiB (max %d), "
              "fds %d -> %d" % (summary["flows"], summary["records"], sum(r["reloads"] for r in rows),
                                rows[0]["quiet"]["rss_kib"], rows[-1]["quiet"]["rss_kib"],
                                max(r["quiet"]["rss_kib"] for r in rows), base["fds"], rows[-1]["quiet"]["fds"]),
              flush=True)
        if REPORT:
            with open(REPORT, "w") as f:
                json.dump(summary, f, indent=1)
