"""Safe policy rollout, end to end: audit -> learn -> enforce with real
clients, and policy swaps under load through every way the config file
changes (in-place write, rename-over, ConfigMap `..data` swap, SIGHUP)."""

import json
import os
import signal
import subprocess
import time

import harness
import world as W

A = W.addr


def setUpModule():
    harness.module_world("redirect")


def tearDownModule():
    harness.close_world()


def config_text(cfg, learned_rules_yaml):
    """The config as operators write it after `learn`: every section as is
    (JSON is YAML), then `policy:` in block style with the old rules and the
    suggestions pasted under `rules:` exactly as `learn` printed them."""
    lines = ["%s: %s" % (k, json.dumps(v)) for k, v in cfg.items() if k != "policy"]
    p = cfg["policy"]
    lines += ["policy:", "  mode: %s" % json.dumps(p["mode"]), "  default: %s" % json.dumps(p["default"]),
              "  rules:"]
    lines += ["    - " + json.dumps(r) for r in p["rules"]]
    return "\n".join(lines) + "\n" + learned_rules_yaml


class AuditLearnEnforceTest(harness.GatewayTest):
    """The rollout the README describes: run in audit, let real traffic
    through, ask `learn`, paste, `check`, enforce by reload; the same traffic
    then passes by the learned rules and anything else is denied. Port 443
    has a host entry (names are sniffed there); ports 80, 7000 and 2525 have
    none, so their flows are decided at once and still carry their names
    (contract rule 11)."""

    mode = "audit"
    rules = [{"name": "web-other", "to": [{"host": "other.test", "ports": [443]}]}]
    SIBLINGS = ("one.allowed.test", "two.allowed.test", "three.allowed.test")

    def traffic(self):
        """Every kind of flow once; returns a list of (what, ok, src-or-None)."""
        seen = []
        for name in self.SIBLINGS:
            r = self.world.curl("https://%s/" % name, ip=W.WEB_IP)
            seen.append((name, r.rc == 0 and r.status == 200, None))
        r = self.world.curl("https://other.test/", ip=W.WEB2_IP)
        seen.append(("other.test", r.rc == 0 and r.status == 200, None))
        r = self.world.curl("http://allowed.test/", ip=W.WEB_IP)
        seen.append(("http allowed.test", r.rc == 0 and r.status == 200, None))
        r = self.world.client("raw", "--dst", A(W.ECHO_IP, W.ECHO_PORT), "--send-hex", b"ping\n".hex(), "--shut-wr")
        seen.append(("echo", r["recv"] == "ping\n", r["local"]))
        r = self.world.client("banner", "--dst", A(W.BANNER_IP, W.BANNER_PORT))
        seen.append(("banner", r["banner"] == W.BANNER.decode() and r["reply"] == "221 bye\r\n", r["local"]))
        return seen

    def reloads(self, result):
        return self.gw.metrics().sum("egressd_config_reloads_total", result=result)

    def test_audit_then_learn_then_enforce(self):
        # 1. Audit: everything passes, the records say what enforce would deny.
        mark = self.log.mark()
        for what, ok, _ in self.traffic():
            self.assertTrue(ok, "audit lets %s through" % what)
        for name in self.SIBLINGS:
            rec = self.log.wait(W.match(event="flow", host=name), since=mark)
            self.assertRecord(rec, decision="audit_deny", rule="default", proto="tls")
        rec = self.log.wait(W.match(event="flow", host="other.test"), since=mark)
        self.assertRecord(rec, decision="allow", rule="web-other")
        rec = self.log.wait(W.match(event="flow", dst=A(W.WEB_IP, 80)), since=mark)
        self.assertRecord(rec, decision="audit_deny", proto="http", host="allowed.test")
        rec = self.log.wait(W.match(event="flow", dst=A(W.ECHO_IP, W.ECHO_PORT)), since=mark)
        self.assertRecord(rec, decision="audit_deny", proto="tcp", host=None)
        rec = self.log.wait(W.match(event="flow", dst=A(W.BANNER_IP, W.BANNER_PORT)), since=mark)
        self.assertRecord(rec, decision="audit_deny", proto="tcp", host=None)

        # 2. Learn from the access log.
        p = subprocess.run([harness.EGRESSD, "learn", "--config", self.gw.config_path, self.log.path],
                           capture_output=True, timeout=30)
        learned = p.stdout.decode()
        self.assertEqual(p.returncode, 0, p.stderr)
        self.assertIn('- host: "*.allowed.test"  # 3 names, 3 flows', learned)
        for want in ('- host: "allowed.test"  # 1 flow', '- cidr: "198.18.0.20/32"  # 1 flow',
                     '- cidr: "198.18.0.21/32"  # 1 flow', "seen 20", "ports: [443]", "ports: [80]",
                     "ports: [%d]" % W.ECHO_PORT, "ports: [%d]" % W.BANNER_PORT):
            self.assertIn(want, learned)
        self.assertNotIn("other.test", learned, "already allowed: not suggested")
        self.assertNotIn('"*.test"', learned, "never a wildcard on a public suffix")
        self.assertNotIn('"**.', learned)
        self.assertIn("6 allowed by", learned)

        # 3. Paste, check, enforce by reload (rename-over, as tools do).
        enforce = json.loads(json.dumps(self.gw.config))
        enforce["policy"]["mode"] = "enforce"
        text = config_text(enforce, learned)
        candidate = self.gw.config_path + ".new"
        with open(candidate, "w") as f:
            f.write(text)
        p = subprocess.run([harness.EGRESSD, "check", "--config", candidate], capture_output=True, timeout=30)
        self.assertEqual(p.returncode, 0, "egressd check: %s\n%s" % (p.stderr.decode(), text))
        successes = self.reloads("success")
        os.rename(candidate, self.gw.config_path)
        deadline = time.monotonic() + 5
        while self.reloads("success") == successes and time.monotonic() < deadline:
            time.sleep(0.05)
        self.assertEqual(self.reloads("success"), successes + 1, self.gw.stderr_tail())

        # 4. The same traffic passes by the learned rules...
        mark = self.log.mark()
        for what, ok, _ in self.traffic():
            self.assertTrue(ok, "enforce with the learned rules lets %s through" % what)
        for name in self.SIBLINGS:
            rec = self.log.wait(W.match(event="flow", host=name), since=mark)
            self.assertEqual(rec["decision"], "allow", rec)
            self.assertTrue(rec["rule"].startswith("learned-"), rec)
        for dst in (A(W.WEB_IP, 80), A(W.ECHO_IP, W.ECHO_PORT), A(W.BANNER_IP, W.BANNER_PORT)):
            rec = self.log.wait(W.match(event="flow", dst=dst), since=mark)
            self.assertEqual(rec["decision"], "allow", rec)
            self.assertTrue(rec["rule"].startswith("learned-"), rec)

        # 5. ... and anything else is denied.
        mark = self.log.mark()
        r = self.world.curl("https://denied.test/", ip=W.WEB3_IP)
        self.assertNotEqual(r.rc, 0, r)
        rec = self.log.wait(W.match(event="flow", host="denied.test"), since=mark)
        self.assertRecord(rec, decision="deny", rule="default")
        r = self.world.curl("http://four.allowed.test/", ip=W.WEB_IP)
        self.assertEqual(r.status, 403, "port 80 allows allowed.test itself, not its siblings: %s" % r)
        r = self.world.client("raw", "--dst", A(W.ECHO_IP, W.ECHO_PORT_DENIED), "--send-hex", b"ping\n".hex())
        self.assertEqual(r["recv"], "", r)
        rec = self.log.wait(W.match(event="flow", dst=A(W.ECHO_IP, W.ECHO_PORT_DENIED)), since=mark)
        self.assertRecord(rec, decision="deny", rule="default")


class SwapsUnderLoad:
    """Mixin: short echo flows back to back and one long download run while
    the policy is swapped again and again; no flow is dropped, every flow is
    recorded, and each swap is in force for new flows within a second. The
    swaps toggle a rule for the echo server's second port (the probe)."""

    rules = [
        {"name": "web", "to": [{"host": "allowed.test", "ports": [80, 443]}]},
        {"name": "echo", "to": [{"cidr": W.ECHO_IP + "/32", "ports": [W.ECHO_PORT]}]},
        {"name": "probe", "to": [{"cidr": W.ECHO_IP + "/32", "ports": [W.ECHO_PORT_DENIED]}]},
    ]

    def probe_open(self):
        r = self.world.client("raw", "--dst", A(W.ECHO_IP, W.ECHO_PORT_DENIED), "--send-hex", b"p\n".hex(),
                              "--shut-wr", "--read-timeout", "3")
        return r["recv"] == "p\n"

    def config_with_probe(self, on):
        cfg = json.loads(json.dumps(self.gw.config))
        if not on:
            cfg["policy"]["rules"] = [r for r in cfg["policy"]["rules"] if r["name"] != "probe"]
        return json.dumps(cfg, indent=2)

    def reloads(self, result):
        return self.gw.metrics().sum("egressd_config_reloads_total", result=result)

    def run_swaps(self, swaps):
        """swaps: [(style, apply(text))] applied in turn, each toggling the
        probe (style "sighup" reloads the unchanged file)."""
        self.world.ensure_big_file()
        self.assertTrue(self.probe_open())
        mark = self.log.mark()
        failures0, successes0 = self.reloads("failure"), self.reloads("success")
        load = self.world.client_popen("echo-loop", "--dst", A(W.ECHO_IP, W.ECHO_PORT), "--seconds", 10,
                                       "--concurrency", 4)
        download = self.world.pod_popen(
            ["curl", "-sS", "--max-time", "60", "--limit-rate", "5M", "--resolve",
             "allowed.test:80:%s" % W.WEB_IP, "-o", "/dev/null", "-w", "%{http_code} %{size_download}",
             "http://allowed.test/big.bin"], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        try:
            time.sleep(1)  # both under way
            probe = True
            for style, apply in swaps:
                if style != "sighup":
                    probe = not probe
                t0 = time.monotonic()
                apply(self.config_with_probe(probe))
                while self.probe_open() != probe and time.monotonic() - t0 < 5:
                    time.sleep(0.02)
                took = time.monotonic() - t0
                self.assertEqual(self.probe_open(), probe, "%s: the swap took effect" % style)
                # The probe itself is a process start in the pod (~0.1 s).
                self.assertLess(took, 1.5, "%s: new flows saw the new policy within a second" % style)
                time.sleep(0.3)
            out, err = load.communicate(timeout=60)
            result = json.loads(out.decode().strip().splitlines()[-1])
            dl_out, dl_err = download.communicate(timeout=70)
        finally:
            for p in (load, download):
                if p.poll() is None:
                    p.kill()
                    p.wait()
        self.assertEqual(result["failures"], [], "no short flow dropped")
        self.assertGreaterEqual(result["flows"], 100, result["flows"])
        self.assertEqual(dl_out.decode(), "200 %d" % W.BIG_SIZE, "the long download survived: %s" % dl_err)
        self.assertEqual(self.reloads("failure"), failures0)
        self.assertGreaterEqual(self.reloads("success"), successes0 + len(swaps))
        # Every flow recorded, as allowed by the rule it was admitted by.
        # Counted, not matched by source: the probe and the load share the
        # pod's ports, and conntrack remaps a source port whose redirected
        # tuple would clash, so the gateway may see another one.
        def echo_flow(r):
            return r.get("event") == "flow" and r.get("dst") == A(W.ECHO_IP, W.ECHO_PORT)
        deadline = time.monotonic() + 15
        while True:
            recs = self.log.find(echo_flow, mark)
            if len(recs) >= len(result["ok"]) or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        self.assertEqual(len(recs), len(result["ok"]), "one record per flow")
        odd = [r for r in recs if (r["decision"], r["rule"], r["close"], r["proto"]) != ("allow", "echo", "eof", "tcp")]
        self.assertEqual(odd[:3], [], "every echo flow allowed by `echo`, ended by eof")
        rec = self.log.wait(W.match(event="flow", dst=A(W.WEB_IP, 80)), since=mark)
        self.assertRecord(rec, decision="allow", rule="web", close="eof", proto="http", host="allowed.test")
        self.assertGreater(rec["bytes_down"], W.BIG_SIZE)


class ReloadUnderLoadTest(SwapsUnderLoad, harness.GatewayTest):
    """In-place writes, rename-over and SIGHUP on a plain config file."""

    def write_in_place(self, text):
        with open(self.gw.config_path, "w") as f:
            f.write(text)

    def rename_over(self, text):
        tmp = self.gw.config_path + ".tmp"
        with open(tmp, "w") as f:
            f.write(text)
        os.rename(tmp, self.gw.config_path)

    def sighup(self, _text):
        self.gw.signal(signal.SIGHUP)

    def test_swaps_under_load(self):
        self.run_swaps([("in-place", self.write_in_place), ("rename-over", self.rename_over),
                        ("sighup", self.sighup), ("in-place", self.write_in_place),
                        ("rename-over", self.rename_over), ("sighup", self.sighup)])


class ConfigMapUnderLoadTest(SwapsUnderLoad, harness.ConfigMapGatewayTest):
    """The config as a mounted ConfigMap: the kubelet's `..data` swaps."""

    def test_data_swaps_under_load(self):
        self.run_swaps([("..data swap", self.publish)] * 4)
