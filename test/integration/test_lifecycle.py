"""Admin endpoints, live metrics (promtool), `open` records of long flows,
and the SIGTERM drain."""

import hashlib
import json
import os
import shutil
import signal
import subprocess
import time

import harness
import world as W

A = W.addr

RULES = [
    {"name": "web", "to": [{"host": "allowed.test", "ports": [443, 80]}]},
    {"name": "echo", "to": [{"cidr": W.ECHO_IP + "/32", "ports": [W.ECHO_PORT]}]},
]

CONTRACT_METRICS = [
    ("egressd_flows_total", "counter"), ("egressd_flows_active", "gauge"),
    ("egressd_flow_bytes_total", "counter"), ("egressd_flow_duration_seconds", "histogram"),
    ("egressd_http_requests_total", "counter"), ("egressd_upstream_connect_failures_total", "counter"),
    ("egressd_dns_queries_total", "counter"), ("egressd_access_log_dropped_total", "counter"),
    ("egressd_config_reloads_total", "counter"),
    ("egressd_config_last_reload_success_timestamp_seconds", "gauge"),
    ("egressd_config_generation", "gauge"), ("egressd_build_info", "gauge"),
    ("process_cpu_seconds_total", "counter"), ("process_resident_memory_bytes", "gauge"),
    ("process_open_fds", "gauge"), ("process_max_fds", "gauge"), ("process_start_time_seconds", "gauge"),
]


def setUpModule():
    harness.module_world("redirect")


def tearDownModule():
    harness.close_world()


class HeldFlow:
    """An echo connection from the pod kept open until released."""

    def __init__(self, test, dst, defer=False, src=None):
        self.test = test
        self.defer = defer
        self.p = test.world.client_popen("hold", "--dst", dst, *(["--defer"] if defer else []),
                                         *(["--src", src] if src else []))
        test.addCleanup(lambda: self.p.poll() is None and self.p.kill())
        if defer:
            self._line()  # {"ready": true}: the interpreter is up
        else:
            self.connect()

    def _line(self):
        line = self.p.stdout.readline().decode()
        if not line:
            raise AssertionError("hold client died: %s" % self.p.stderr.read().decode())
        return json.loads(line)

    def connect(self):
        """For a deferred flow: connect now, and check the echo."""
        if self.defer:
            self.p.stdin.write(b"go\n")
            self.p.stdin.flush()
        first = self._line()
        self.test.assertTrue(first["echo_ok"], first)
        self.local = first["local"]

    def release(self, how="close", timeout=30):
        """"close": we close; "wait": wait for the gateway to close it."""
        out, err = self.p.communicate(("%s\n" % how).encode(), timeout=timeout)
        return json.loads(out.decode().strip().splitlines()[-1])


class AdminTest(harness.GatewayTest):
    rules = RULES

    def test_healthz_and_readyz(self):
        self.assertEqual(self.gw.admin_get("/healthz")[0], 200)
        self.assertEqual(self.gw.admin_get("/readyz")[0], 200)

    def test_live_metrics_pass_promtool(self):
        # Traffic first, so labelled series exist.
        self.world.curl("https://allowed.test/", ip=W.WEB_IP)
        self.world.curl("https://denied.test/", ip=W.WEB3_IP)
        self.world.curl("http://allowed.test/", ip=W.WEB_IP)
        self.flow(host="denied.test")
        text = self.gw.metrics_text()
        p = subprocess.run(["promtool", "check", "metrics"], input=text.encode(), capture_output=True, timeout=30)
        self.assertEqual(p.returncode, 0, "promtool check metrics: %s%s\n---- metrics ----\n%s" % (
            p.stdout.decode(), p.stderr.decode(), text[:4000]))
        types = dict(line.split()[2:4] for line in text.splitlines() if line.startswith("# TYPE "))
        for name, kind in CONTRACT_METRICS:
            self.assertEqual(types.get(name), kind, "metric %s (%s) missing or mistyped" % (name, kind))
        m = W.Metrics.parse(text)
        self.assertGreater(m.sum("egressd_flow_duration_seconds_count", listener="transparent"), 0)
        self.assertGreater(m.sum("process_open_fds"), 0)
        for (name, labels), _ in m.items():
            for k, v in labels:
                self.assertNotIn("allowed.test", v, "no label carries a host name: %s %s" % (name, labels))
                self.assertNotIn("198.18.", v, "no label carries an IP: %s %s" % (name, labels))

    def test_http_requests_metric(self):
        r = self.world.curl("http://allowed.test/", ip=W.WEB_IP)
        self.assertEqual(r.status, 200, r)
        r = self.world.curl("http://nope.test/", ip=W.WEB_IP)
        self.assertEqual(r.status, 403, r)
        self.flow(host="nope.test")
        m1 = self.gw.metrics()
        for decision in ("allow", "deny"):
            delta = (m1.sum("egressd_http_requests_total", proto="http", decision=decision)
                     - self.m0.sum("egressd_http_requests_total", proto="http", decision=decision))
            self.assertEqual(delta, 1, "egressd_http_requests_total{proto=http,decision=%s}" % decision)

    def test_flow_bytes_metric(self):
        data = b"x" * 10000
        r = self.world.client("raw", "--dst", A(W.ECHO_IP, W.ECHO_PORT), "--send-hex", data.hex(), "--shut-wr")
        self.assertEqual(len(r["recv"]), len(data), r)
        rec = self.flow(src=r["local"])
        self.assertDecision(rec, "allow", "echo", close="eof", proto="tcp")
        self.assertRecord(rec, bytes_up=len(data), bytes_down=len(data))
        m1 = self.gw.metrics()
        for d in ("up", "down"):
            delta = (m1.sum("egressd_flow_bytes_total", listener="transparent", direction=d)
                     - self.m0.sum("egressd_flow_bytes_total", listener="transparent", direction=d))
            self.assertEqual(delta, len(data), "egressd_flow_bytes_total{direction=%s}" % d)

    def test_open_record_before_the_flow_ends(self):
        held = HeldFlow(self, A(W.ECHO_IP, W.ECHO_PORT))
        opened = self.log.wait(W.match(event="open", src=held.local), since=self.mark, what="open record")
        self.assertRecord(opened, decision="allow", rule="echo", dst=A(W.ECHO_IP, W.ECHO_PORT),
                          upstream=A(W.ECHO_IP, W.ECHO_PORT), proto="tcp", close=None, bytes_up=None)
        active = self.gw.metrics().sum("egressd_flows_active", listener="transparent")
        self.assertGreaterEqual(active, 1)
        time.sleep(0.3)
        self.assertEqual(self.log.find(W.match(event="flow", src=held.local), self.mark), [],
                         "no flow record while the flow is open")
        end = held.release("close")
        self.assertEqual(end["closed"], "eof", end)
        rec = self.flow(src=held.local)
        self.assertRecord(rec, time=opened["time"], close="eof", bytes_up=6, bytes_down=6)
        self.assertDecision(rec, "allow", "echo")


class DrainTest(harness.GatewayTest):
    """SIGTERM: readiness 503 at once; still accepting for drain_delay; an
    in-flight download finishes; a flow still open after drain is closed
    (`drained`); records flushed; exit 0."""

    rules = RULES
    config_overrides = {"timeouts": {"drain_delay": "2s", "drain": "4s"}}

    def test_sigterm_drain(self):
        slow_out = self.world.path("slow.download")
        slow = self.world.pod_popen(
            ["curl", "-sS", "--http1.1", "--max-time", "30", "--cacert", self.world.ca, "--resolve",
             "allowed.test:443:%s" % W.WEB_IP, "-o", slow_out, "https://allowed.test/slow/blob"],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        self.addCleanup(lambda: slow.poll() is None and slow.kill())
        held = HeldFlow(self, A(W.ECHO_IP, W.ECHO_PORT))
        late = HeldFlow(self, A(W.ECHO_IP, W.ECHO_PORT), defer=True)
        self.log.wait(W.match(event="open", host="allowed.test"), since=self.mark, what="open record of the download")
        self.log.wait(W.match(event="open", src=held.local), since=self.mark, what="open record of the echo")

        t0 = time.monotonic()
        self.gw.signal(signal.SIGTERM)
        status = None
        while time.monotonic() - t0 < 0.5:
            status = self.gw.admin_get("/readyz", timeout=1)[0]
            if status == 503:
                break
            time.sleep(0.02)
        self.assertEqual(status, 503, "readiness 503 at once after SIGTERM")
        self.assertEqual(self.gw.admin_get("/healthz", timeout=1)[0], 200, "still healthy while draining")

        late.connect()  # a new flow during drain_delay: accepted and relayed
        self.assertLess(time.monotonic() - t0, 2.0, "the new flow ran within drain_delay")
        late_end = late.release("close")
        self.assertEqual(late_end["closed"], "eof", late_end)

        time.sleep(max(0.0, 2.5 - (time.monotonic() - t0)))
        after = self.world.curl("https://allowed.test/", ip=W.WEB_IP, timeout=3)
        self.assertNotEqual(after.rc, 0, "listeners closed after drain_delay: %s" % after)

        end = held.release("wait", timeout=20)
        rc = self.gw.proc.wait(timeout=15)
        took = time.monotonic() - t0
        self.assertEqual(rc, 0, "exit code after drain")
        self.assertLess(took, 2 + 4 + 2, "drain_delay + drain bound the exit")
        self.assertGreater(took, 2 + 4 - 0.5, "the held flow kept the drain going until its end")
        self.assertIn(end["closed"], ("eof", "reset"), end)

        out, err = slow.communicate(timeout=20)
        self.assertEqual(slow.returncode, 0, err)
        with open(slow_out, "rb") as f:
            self.assertEqual(hashlib.sha256(f.read()).hexdigest(), self.world.slow_sha256,
                             "the in-flight download finished whole")

        recs = self.log.records()[self.mark:]

        def one(**k):
            found = [x for x in recs if all(x.get(a) == b for a, b in k.items())]
            self.assertEqual(len(found), 1, "records matching %s: %s" % (k, found))
            return found[0]
        self.assertRecord(one(event="flow", host="allowed.test"), close="eof", decision="allow")
        self.assertRecord(one(event="flow", src=held.local), close="drained", decision="allow")
        self.assertRecord(one(event="flow", src=late.local), close="eof", decision="allow")


class SecondSignalTest(harness.GatewayTest):
    """A second SIGTERM/SIGINT during a drain skips what is left of
    drain_delay and drain: open flows are closed (`drained`), records are
    flushed, exit 0."""

    rules = RULES
    config_overrides = {"timeouts": {"drain_delay": "10s", "drain": "30s"}}

    def test_second_signal_stops_at_once(self):
        held = HeldFlow(self, A(W.ECHO_IP, W.ECHO_PORT))
        self.log.wait(W.match(event="open", src=held.local), since=self.mark, what="open record of the echo")
        t0 = time.monotonic()
        self.gw.signal(signal.SIGINT)
        deadline = time.monotonic() + 2
        while self.gw.admin_get("/readyz", timeout=1)[0] != 503 and time.monotonic() < deadline:
            time.sleep(0.02)
        self.gw.signal(signal.SIGINT)
        rc = self.gw.proc.wait(timeout=10)
        took = time.monotonic() - t0
        self.assertEqual(rc, 0, "exit code after the second signal")
        self.assertLess(took, 5, "the second signal skipped drain_delay (10 s) and drain (30 s)")
        end = held.release("wait", timeout=10)
        self.assertIn(end["closed"], ("eof", "reset"), end)
        rec = self.log.wait(W.match(event="flow", src=held.local), since=self.mark)
        self.assertRecord(rec, close="drained", decision="allow")


class ConfigMapTest(harness.GatewayTest):
    """The config mounted as a Kubernetes ConfigMap volume: the file is a
    symlink through `..data`, which the kubelet swaps atomically to a new
    timestamped directory. The swap changes the policy within a second."""

    rules = RULES

    @classmethod
    def setUpClass(cls):
        cls.world = harness.current_world()
        cls.gw = W.Gateway(cls.world, harness.EGRESSD, cls.make_config)
        mount = cls.world.path("configmap-%d" % os.getpid())
        os.makedirs(os.path.join(mount, "..2026_12_05_v1"))
        shutil.move(cls.gw.config_path, os.path.join(mount, "..2026_12_05_v1", "egressd.yaml"))
        os.symlink("..2026_12_05_v1", os.path.join(mount, "..data"))
        os.symlink("..data/egressd.yaml", os.path.join(mount, "egressd.yaml"))
        cls.mount = mount
        cls.gw.config_path = os.path.join(mount, "egressd.yaml")
        try:
            cls.gw.start()
        except BaseException:
            cls.gw.stop()
            raise
        cls.log = cls.gw.log

    def publish(self, version, cfg):
        """What the kubelet does: a new directory, then ..data swapped to it."""
        d = os.path.join(self.mount, version)
        os.makedirs(d)
        with open(os.path.join(d, "egressd.yaml"), "w") as f:
            f.write(cfg if isinstance(cfg, str) else json.dumps(cfg, indent=2))
        tmp = os.path.join(self.mount, "..data_tmp")
        os.symlink(version, tmp)
        os.rename(tmp, os.path.join(self.mount, "..data"))

    def echo(self):
        return self.world.client("raw", "--dst", A(W.ECHO_IP, W.ECHO_PORT), "--send-hex", b"hi\n".hex(),
                                 "--shut-wr")

    def test_data_symlink_swap_reloads(self):
        self.assertEqual(self.echo()["recv"], "hi\n")
        without_echo = json.loads(json.dumps(self.gw.config))
        without_echo["policy"]["rules"] = [r for r in without_echo["policy"]["rules"] if r["name"] != "echo"]
        successes = self.gw.metrics().sum("egressd_config_reloads_total", result="success")
        t0 = time.monotonic()
        self.publish("..2026_12_05_v2", without_echo)
        while self.echo()["recv"] != "" and time.monotonic() - t0 < 3:
            time.sleep(0.05)
        took = time.monotonic() - t0
        self.assertLess(took, 1.5, "the swap took effect within a second or so")
        self.assertEqual(self.gw.metrics().sum("egressd_config_reloads_total", result="success"),
                         successes + 1, "one burst of events, one reload")

        # A broken version is rejected; the good one keeps serving.
        failures = self.gw.metrics().sum("egressd_config_reloads_total", result="failure")
        self.publish("..2026_12_05_v3", "policy: [\n")
        deadline = time.monotonic() + 3
        while (self.gw.metrics().sum("egressd_config_reloads_total", result="failure") == failures
               and time.monotonic() < deadline):
            time.sleep(0.05)
        self.assertEqual(self.gw.metrics().sum("egressd_config_reloads_total", result="failure"), failures + 1)
        self.assertEqual(self.echo()["recv"], "")

        # And back.
        self.publish("..2026_12_05_v4", self.gw.config)
        t0 = time.monotonic()
        while self.echo()["recv"] != "hi\n" and time.monotonic() - t0 < 3:
            time.sleep(0.05)
        self.assertEqual(self.echo()["recv"], "hi\n")


class RevokeTest(harness.GatewayTest):
    """policy.revoke_on_reload: true — after a reload, open flows the new
    policy denies are closed (`revoked`) and their records name the rule;
    flows it still allows go on untouched."""

    rules = RULES

    @classmethod
    def make_config(cls, access_log):
        cfg = super().make_config(access_log)
        cfg["policy"]["revoke_on_reload"] = True
        return cfg

    def test_reload_revokes_what_the_new_policy_denies(self):
        original = json.loads(json.dumps(self.gw.config))

        def restore():
            with open(self.gw.config_path, "w") as f:
                f.write(json.dumps(original, indent=2))
            self.gw.signal(signal.SIGHUP)
        self.addCleanup(restore)
        doomed = HeldFlow(self, A(W.ECHO_IP, W.ECHO_PORT), src=W.POD_IP)
        kept = HeldFlow(self, A(W.ECHO_IP, W.ECHO_PORT), src=W.POD_IP2)
        self.log.wait(W.match(event="open", src=doomed.local), since=self.mark)
        self.log.wait(W.match(event="open", src=kept.local), since=self.mark)

        # The new policy: echo only from POD_IP2, with a deny rule naming the
        # other pod's address.
        new = json.loads(json.dumps(original))
        for r in new["policy"]["rules"]:
            if r["name"] == "echo":
                r["from"] = [W.POD_IP2 + "/32"]
        new["policy"]["rules"].append({"name": "no-pod-a", "action": "deny", "from": [W.POD_IP + "/32"],
                                       "to": [{"cidr": W.ECHO_IP + "/32"}]})
        with open(self.gw.config_path, "w") as f:
            f.write(json.dumps(new, indent=2))
        self.gw.signal(signal.SIGHUP)

        end = doomed.release("wait", timeout=10)
        self.assertIn(end["closed"], ("eof", "reset"), end)
        rec = self.flow(src=doomed.local)
        self.assertRecord(rec, decision="deny", rule="no-pod-a", close="revoked")
        self.assertIn("revoked by a reload", rec["reason"])

        # The other flow still relays.
        last = kept.release("close", timeout=15)
        self.assertEqual(last["closed"], "eof", last)
        rec = self.flow(src=kept.local)
        self.assertRecord(rec, decision="allow", rule="echo", close="eof")


class IdleTimeoutTest(harness.GatewayTest):
    """timeouts.idle ends a relay that moved no byte for that long; a flow
    that keeps talking lives on."""
    rules = RULES
    config_overrides = {"timeouts": {"sniff": "2s", "connect": "2s", "idle": "2s",
                                     "drain_delay": "1s", "drain": "3s"}}

    def test_idle_flow_is_closed_with_idle_timeout(self):
        held = HeldFlow(self, A(W.ECHO_IP, W.ECHO_PORT))
        t0 = time.monotonic()
        reply = held.release("wait", timeout=20)
        waited = time.monotonic() - t0
        self.assertIn(reply["closed"], ("eof", "reset"), reply)
        # idle is 2 s; the sweep runs every second.
        self.assertGreater(waited, 1.5, reply)
        self.assertLess(waited, 6, reply)
        rec = self.flow(src=held.local)
        self.assertDecision(rec, "allow", "echo", close="idle_timeout", proto="tcp")
        self.assertRecord(rec, bytes_up=6, bytes_down=6)


class ConnectionLimitTest(harness.GatewayTest):
    """limits.max_connections holds across workers: over it, a new flow is
    closed at once (close=limit, rule builtin:limit)."""
    rules = RULES
    config_overrides = {"limits": {"max_connections": 2}}

    def test_over_the_limit_is_closed(self):
        held = [HeldFlow(self, A(W.ECHO_IP, W.ECHO_PORT)) for _ in range(2)]
        r = self.world.client("raw", "--dst", A(W.ECHO_IP, W.ECHO_PORT), "--send-hex", b"hi\n".hex(),
                              "--shut-wr")
        self.assertEqual(r["recv"], "", r)
        rec = self.flow(src=r["local"])
        self.assertDecision(rec, "deny", "builtin:limit", close="limit")
        for h in held:
            h.release()
        # Room again once they are gone.
        deadline = time.monotonic() + 5
        while True:
            r = self.world.client("raw", "--dst", A(W.ECHO_IP, W.ECHO_PORT), "--send-hex",
                                  b"hi\n".hex(), "--shut-wr")
            if r["recv"] == "hi\n" or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        self.assertEqual(r["recv"], "hi\n", r)


class SourceLimitTest(harness.GatewayTest):
    """limits.max_connections_per_source: one source's flows are capped."""
    rules = RULES
    config_overrides = {"limits": {"max_connections_per_source": 1}}

    def test_second_flow_from_one_source_is_closed(self):
        held = HeldFlow(self, A(W.ECHO_IP, W.ECHO_PORT))
        r = self.world.client("raw", "--dst", A(W.ECHO_IP, W.ECHO_PORT), "--send-hex", b"hi\n".hex(),
                              "--shut-wr")
        self.assertEqual(r["recv"], "", r)
        rec = self.flow(src=r["local"])
        self.assertDecision(rec, "deny", "builtin:limit", close="limit")
        held.release()


class ReloadTest(harness.GatewayTest):
    """SIGHUP: a valid config replaces the policy for new flows; one that
    fails validation or its own tests is rejected whole and the old policy
    keeps serving."""
    rules = RULES

    def write_config(self, cfg):
        with open(self.gw.config_path, "w") as f:
            f.write(cfg if isinstance(cfg, str) else json.dumps(cfg, indent=2))

    def reloads(self, result):
        return self.gw.metrics().sum("egressd_config_reloads_total", result=result)

    def wait_reloads(self, result, want, timeout=5):
        # The file is watched too: a write and a SIGHUP close together may
        # both reload, so at least `want`.
        deadline = time.monotonic() + timeout
        while self.reloads(result) < want and time.monotonic() < deadline:
            time.sleep(0.1)
        self.assertGreaterEqual(self.reloads(result), want,
                                "egressd_config_reloads_total{result=%s}" % result)

    def echo_becomes(self, want, timeout=1.5):
        """Polls the echo flow until it returns `want`; returns (result, seconds)."""
        t0 = time.monotonic()
        while True:
            r = self.echo()
            if r["recv"] == want or time.monotonic() - t0 > timeout:
                return r, time.monotonic() - t0
            time.sleep(0.05)

    def test_file_changes_reload_without_a_signal(self):
        """An in-place write and a rename-over each change the policy within
        a second, with no SIGHUP; a broken file never replaces a good one."""
        original = json.loads(json.dumps(self.gw.config))
        self.addCleanup(lambda: (self.write_config(original), self.gw.signal(signal.SIGHUP)))
        without_echo = json.loads(json.dumps(original))
        without_echo["policy"]["rules"] = [r for r in without_echo["policy"]["rules"] if r["name"] != "echo"]
        self.assertEqual(self.echo()["recv"], "hi\n")

        # In place.
        with open(self.gw.config_path, "w") as f:
            f.write(json.dumps(without_echo, indent=2))
        r, took = self.echo_becomes("")
        self.assertEqual(r["recv"], "", "an in-place write took effect: %s" % r)
        self.assertLess(took, 1.5)

        # Broken, written in place: rejected, the last good config stays.
        failures = self.reloads("failure")
        with open(self.gw.config_path, "w") as f:
            f.write("listeners: [\n")
        self.wait_reloads("failure", failures + 1)
        self.assertEqual(self.echo()["recv"], "")

        # Rename-over, as editors and config tools do.
        tmp = self.gw.config_path + ".tmp"
        with open(tmp, "w") as f:
            f.write(json.dumps(original, indent=2))
        os.rename(tmp, self.gw.config_path)
        r, took = self.echo_becomes("hi\n")
        self.assertEqual(r["recv"], "hi\n", "a rename-over took effect: %s" % r)
        self.assertLess(took, 1.5)

        # Touching the file without changing it reloads nothing.
        successes = self.reloads("success")
        os.utime(self.gw.config_path)
        time.sleep(0.6)
        self.assertEqual(self.reloads("success"), successes)

    def echo(self):
        return self.world.client("raw", "--dst", A(W.ECHO_IP, W.ECHO_PORT), "--send-hex", b"hi\n".hex(),
                                 "--shut-wr")

    def test_sighup_applies_a_good_config_and_rejects_a_bad_one(self):
        original = json.loads(json.dumps(self.gw.config))
        self.addCleanup(lambda: (self.write_config(original), self.gw.signal(signal.SIGHUP)))
        self.assertEqual(self.echo()["recv"], "hi\n")

        # A config whose own test fails: rejected, echo still allowed.
        bad = json.loads(json.dumps(original))
        bad["policy"]["rules"] = [r for r in bad["policy"]["rules"] if r["name"] != "echo"]
        bad["policy"]["tests"] = [{"src": "10.200.1.2", "dst": A(W.ECHO_IP, W.ECHO_PORT), "expect": "allow"}]
        failures = self.reloads("failure")
        self.write_config(bad)
        self.gw.signal(signal.SIGHUP)
        self.wait_reloads("failure", failures + 1)
        self.assertEqual(self.echo()["recv"], "hi\n", "the old policy keeps serving")

        # Broken YAML: rejected too.
        self.write_config("listeners: [\n")
        self.gw.signal(signal.SIGHUP)
        self.wait_reloads("failure", failures + 2)
        self.assertEqual(self.echo()["recv"], "hi\n")

        # A valid config without the echo rule: new flows are denied.
        good = json.loads(json.dumps(original))
        good["policy"]["rules"] = [r for r in good["policy"]["rules"] if r["name"] != "echo"]
        successes = self.reloads("success")
        generation = self.gw.metrics().sum("egressd_config_generation")
        self.write_config(good)
        self.gw.signal(signal.SIGHUP)
        self.wait_reloads("success", successes + 1)
        self.assertEqual(self.gw.metrics().sum("egressd_config_generation"), generation + 1)
        deadline = time.monotonic() + 5
        while True:
            r = self.echo()
            if r["recv"] == "" or time.monotonic() > deadline:
                break
            time.sleep(0.1)
        self.assertEqual(r["recv"], "", "the new policy denies the echo flow: %s" % r)
        rec = self.flow(src=r["local"])
        self.assertDecision(rec, "deny", "default", close="denied", proto="tcp")
