"""Admin endpoints, live metrics (promtool), `open` records of long flows,
and the SIGTERM drain."""

import hashlib
import json
import os
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
    ("egressd_flows_total", "counter"), ("egressd_flows_active", "gauge"), ("egressd_flows_limit", "gauge"),
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


class ConfigMapTest(harness.ConfigMapGatewayTest):
    """The config mounted as a Kubernetes ConfigMap volume: the file is a
    symlink through `..data`, which the kubelet swaps atomically to a new
    timestamped directory. The swap changes the policy within a second."""

    rules = RULES

    def echo(self):
        return self.world.client("raw", "--dst", A(W.ECHO_IP, W.ECHO_PORT), "--send-hex", b"hi\n".hex(),
                                 "--shut-wr")

    def test_data_symlink_swap_reloads(self):
        self.assertEqual(self.echo()["recv"], "hi\n")
        without_echo = json.loads(json.dumps(self.gw.config))
        without_echo["policy"]["rules"] = [r for r in without_echo["policy"]["rules"] if r["name"] != "echo"]
        successes = self.gw.metrics().sum("egressd_config_reloads_total", result="success")
        t0 = time.monotonic()
        self.publish(without_echo)
        while self.echo()["recv"] != "" and time.monotonic() - t0 < 3:
            time.sleep(0.05)
        took = time.monotonic() - t0
        self.assertLess(took, 1.5, "the swap took effect within a second or so")
        self.assertEqual(self.gw.metrics().sum("egressd_config_reloads_total", result="success"),
                         successes + 1, "one burst of events, one reload")

        # A broken version is rejected; the good one keeps serving.
        failures = self.gw.metrics().sum("egressd_config_reloads_total", result="failure")
        self.publish("policy: [\n")
        deadline = time.monotonic() + 3
        while (self.gw.metrics().sum("egressd_config_reloads_total", result="failure") == failures
               and time.monotonic() < deadline):
            time.sleep(0.05)
        self.assertEqual(self.gw.metrics().sum("egressd_config_reloads_total", result="failure"), failures + 1)
        self.assertEqual(self.echo()["recv"], "")

        # And back.
        self.publish(self.gw.config)
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
        self.assertEqual(self.m0.sum("egressd_flows_limit"), 2)  # what saturation alerts divide by
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


# ---- listener changes on reload, and the reload thread ----------------------

# Connects to argv[1]:argv[2], prints {"local"}, then per stdin line: sends
# it, prints what came back ({"echo"}); "close": half-closes, reads to EOF,
# prints {"closed"}. Proves a flow still relays after a reload.
TALKER = r'''
import json, socket, sys
s = socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=10)
print(json.dumps({"local": "%s:%d" % s.getsockname()[:2]}), flush=True)
for line in sys.stdin:
    line = line.strip()
    if line == "close":
        s.shutdown(socket.SHUT_WR)
        rest = b""
        try:
            while True:
                c = s.recv(4096)
                if not c:
                    break
                rest += c
            how = "eof"
        except OSError:
            how = "reset"
        print(json.dumps({"closed": how, "rest": rest.decode("latin-1")}), flush=True)
        break
    msg = (line + "\n").encode()
    try:
        s.sendall(msg)
        got = b""
        while len(got) < len(msg):
            c = s.recv(4096)
            if not c:
                break
            got += c
    except OSError as e:
        got = ("error: %s" % e).encode()
    print(json.dumps({"echo": got.decode("latin-1")}), flush=True)
'''

# One echo exchange, or {"refused": true} when nothing listens.
ECHO_ONCE = r'''
import json, socket, sys
try:
    s = socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=5)
except ConnectionRefusedError:
    print(json.dumps({"refused": True}))
    sys.exit(0)
me = "%s:%d" % s.getsockname()[:2]
try:
    s.sendall(b"hi\n")
    s.shutdown(socket.SHUT_WR)
except OSError:
    pass  # denied: the gateway may have closed already; read what came
data = b""
try:
    while True:
        c = s.recv(4096)
        if not c:
            break
        data += c
except OSError:
    pass
print(json.dumps({"local": me, "recv": data.decode("latin-1"), "refused": False}))
'''

# Holds a plain listening socket (no SO_REUSEPORT) until stdin closes.
PORT_HOLDER = r'''
import socket, sys
s = socket.socket()
s.bind((sys.argv[1], int(sys.argv[2])))
s.listen(8)
print("ready", flush=True)
sys.stdin.read()
'''

# GETs http://argv[1]/healthz back to back for argv[2] seconds (inside gw,
# one process: the latency is the gateway's, not a process start's); prints
# {"count", "failures", "slowest_ms"}.
PROBER = r'''
import http.client, json, sys, time
host, port = sys.argv[1].rsplit(":", 1)
end = time.monotonic() + float(sys.argv[2])
count = failures = 0
slowest = 0.0
print("ready", flush=True)
while time.monotonic() < end:
    t = time.monotonic()
    try:
        c = http.client.HTTPConnection(host, int(port), timeout=5)
        c.request("GET", "/healthz")
        ok = c.getresponse().status == 200
        c.close()
    except OSError:
        ok = False
    slowest = max(slowest, time.monotonic() - t)
    count += 1
    failures += 0 if ok else 1
    time.sleep(0.02)
print(json.dumps({"count": count, "failures": failures, "slowest_ms": int(slowest * 1000)}), flush=True)
'''

EXTRA_PORT = 15011
EXTRA_PORT2 = 15012
HELD_PORT = 15013
FREE_PORT = 15014


class Talker:
    def __init__(self, test, ns, ip, port):
        self.p = subprocess.Popen(["ip", "netns", "exec", ns, W.PYTHON, "-c", TALKER, ip, str(port)],
                                  stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        test.addCleanup(lambda: self.p.poll() is None and self.p.kill())
        self.local = self._line()["local"]

    def _line(self):
        line = self.p.stdout.readline().decode()
        if not line:
            raise AssertionError("talker died: %s" % self.p.stderr.read().decode())
        return json.loads(line)

    def say(self, text):
        self.p.stdin.write((text + "\n").encode())
        self.p.stdin.flush()
        return self._line()["echo"]

    def close(self):
        self.p.stdin.write(b"close\n")
        self.p.stdin.flush()
        return self._line()


class ReloadHelpers:
    """For classes whose tests reload their gateway's config."""

    def write_config(self, cfg):
        """Renamed over, whole: the watcher never sees a half-written file."""
        text = cfg if isinstance(cfg, str) else json.dumps(cfg, indent=2)
        tmp = self.gw.config_path + ".tmp"
        with open(tmp, "w") as f:
            f.write(text)
        os.rename(tmp, self.gw.config_path)

    def reloads(self, result):
        return self.gw.metrics().sum("egressd_config_reloads_total", result=result)

    def reload(self, cfg, result="success", timeout=10):
        """Writes cfg, sends SIGHUP, waits for the reload's result to be counted."""
        before = self.reloads(result)
        self.write_config(cfg)
        self.gw.signal(signal.SIGHUP)
        deadline = time.monotonic() + timeout
        while self.reloads(result) < before + 1 and time.monotonic() < deadline:
            time.sleep(0.05)
        self.assertGreaterEqual(self.reloads(result), before + 1,
                                "egressd_config_reloads_total{result=%s}:\n%s" % (result, self.gw.stderr_tail()))

    def restore_on_cleanup(self):
        original = json.loads(json.dumps(self.gw.config))
        self.addCleanup(lambda: self.alive_then(lambda: self.reload(original)))
        return original

    def alive_then(self, fn):
        if self.gw.alive():
            fn()

    def stderr(self):
        return self.world.tail(self.gw.name + ".err", 100000)

    def echo_once(self, ip=W.ECHO_IP, port=W.ECHO_PORT, ns=None):
        p = self.world.ns_run(ns or self.world.pod, [W.PYTHON, "-c", ECHO_ONCE, ip, str(port)], timeout=20)
        self.assertEqual(p.returncode, 0, p.stderr.decode())
        return json.loads(p.stdout.decode().strip().splitlines()[-1])


class ListenerReloadTest(ReloadHelpers, harness.GatewayTest):
    """Listener changes on reload: added listeners start on every worker,
    removed ones stop accepting while their open flows go on, a changed one
    is a remove plus an add (on the same address too, through SO_REUSEPORT),
    unchanged ones are left alone; a listener that cannot be bound rejects
    the whole reload; restart-only settings are named in a warning.

    The pod's echo traffic (ECHO_IP:7000) is redirected to EXTRA_PORT by a
    rule ahead of the world's catch-all REDIRECT to :15001, so a listener
    there is what serves it (or nothing: connection refused)."""

    rules = RULES

    def redirect_echo_to(self, port):
        rule = ["-t", "nat", "-I", "PREROUTING", "1", "-i", "gw-pod", "-p", "tcp", "-d", W.ECHO_IP,
                "--dport", str(W.ECHO_PORT), "-j", "REDIRECT", "--to-ports", str(port)]
        self.world._ns(self.world.gw, "iptables", *rule)
        delete = list(rule)
        delete[2:5] = ["-D", "PREROUTING"]
        self.addCleanup(lambda: self.world._ns(self.world.gw, "iptables", *delete, check=False))
        return lambda: self.world._ns(self.world.gw, "iptables", *delete, check=False)

    def listening(self, port):
        return self.world._listening(self.world.gw, port)

    def wait_listening(self, port, want, timeout=5):
        deadline = time.monotonic() + timeout
        while self.listening(port) != want and time.monotonic() < deadline:
            time.sleep(0.05)
        self.assertEqual(self.listening(port), want, "port %d listening" % port)

    def with_listener(self, base, name, port, mode="redirect", address="0.0.0.0"):
        cfg = json.loads(json.dumps(base))
        cfg["listeners"] = [l for l in cfg["listeners"] if l["name"] != name]
        cfg["listeners"].append({"name": name, "address": "%s:%d" % (address, port), "mode": mode})
        return cfg

    def test_added_listener_starts_removed_one_stops_its_flows_go_on(self):
        original = self.restore_on_cleanup()
        self.redirect_echo_to(EXTRA_PORT)
        self.assertTrue(self.echo_once()["refused"], "nothing listens on the extra port yet")

        generation = self.gw.metrics().sum("egressd_config_generation")
        self.reload(self.with_listener(original, "extra", EXTRA_PORT))
        self.assertEqual(self.gw.metrics().sum("egressd_config_generation"), generation + 1)
        self.assertIn("listener extra (redirect) on 0.0.0.0:%d" % EXTRA_PORT, self.stderr())
        r = self.echo_once()
        self.assertEqual(r.get("recv"), "hi\n", r)
        rec = self.flow(src=r["local"])
        self.assertRecord(rec, listener="extra", decision="allow", rule="echo", close="eof")
        self.assertFlowsDelta(1, listener="extra", decision="allow", rule="echo")

        # A flow on the new listener, held across its removal.
        talker = Talker(self, self.world.pod, W.ECHO_IP, W.ECHO_PORT)
        self.assertEqual(talker.say("before"), "before\n")
        self.log.wait(W.match(event="open", src=talker.local), since=self.mark)
        self.assertGreaterEqual(self.gw.metrics().sum("egressd_flows_active", listener="extra"), 1)

        self.reload(original)
        self.wait_listening(EXTRA_PORT, False)
        self.assertTrue(self.echo_once()["refused"], "the removed listener stopped accepting")
        self.assertEqual(talker.say("after removal"), "after removal\n", "its open flow still relays")
        end = talker.close()
        self.assertEqual(end["closed"], "eof", end)
        rec = self.flow(src=talker.local)
        self.assertRecord(rec, listener="extra", decision="allow", rule="echo", close="eof",
                          bytes_up=len("before\nafter removal\n"))
        # The unchanged listeners served throughout.
        r = self.world.curl("http://allowed.test/", ip=W.WEB_IP)
        self.assertEqual(r.status, 200, r)
        self.assertRecord(self.flow(host="allowed.test"), listener="transparent")

    def test_changed_address_moves_the_listener(self):
        original = self.restore_on_cleanup()
        self.reload(self.with_listener(original, "extra", EXTRA_PORT))
        undo = self.redirect_echo_to(EXTRA_PORT)
        talker = Talker(self, self.world.pod, W.ECHO_IP, W.ECHO_PORT)
        self.assertEqual(talker.say("one"), "one\n")

        self.reload(self.with_listener(original, "extra", EXTRA_PORT2))
        self.wait_listening(EXTRA_PORT2, True)
        self.wait_listening(EXTRA_PORT, False)
        self.assertTrue(self.echo_once()["refused"], "the old address stopped accepting")
        self.assertEqual(talker.say("two"), "two\n", "a flow from before the change still relays")
        undo()
        self.redirect_echo_to(EXTRA_PORT2)
        r = self.echo_once()
        self.assertEqual(r.get("recv"), "hi\n", r)
        self.assertRecord(self.flow(src=r["local"]), listener="extra", decision="allow", close="eof")
        self.assertEqual(talker.close()["closed"], "eof")
        self.assertRecord(self.flow(src=talker.local), listener="extra", close="eof", bytes_up=8)

    def test_changed_mode_on_the_same_address(self):
        """A same-address re-add: the new acceptors are bound (SO_REUSEPORT)
        before the old ones close; the port never stops listening."""
        original = self.restore_on_cleanup()
        self.reload(self.with_listener(original, "extra", EXTRA_PORT))
        self.redirect_echo_to(EXTRA_PORT)
        talker = Talker(self, self.world.pod, W.ECHO_IP, W.ECHO_PORT)
        self.assertEqual(talker.say("redirect"), "redirect\n")

        self.reload(self.with_listener(original, "extra", EXTRA_PORT, mode="explicit"))
        self.assertTrue(self.listening(EXTRA_PORT))
        self.assertIn("listener extra (explicit) on 0.0.0.0:%d (changed" % EXTRA_PORT, self.stderr())
        # Now an explicit proxy: CONNECT gets 200, and the tunnel relays.
        target = A(W.ECHO_IP, W.ECHO_PORT)
        deadline = time.monotonic() + 3
        while True:
            r = self.world.client("connect", "--dst", target, "--target", target)
            if r["status"] == 200 or time.monotonic() > deadline:
                break
            time.sleep(0.1)  # an acceptor of the old listener may still take one
        self.assertEqual(r["status"], 200, r)
        self.assertRecord(self.flow(src=r["local"]), listener="extra", proto="connect", decision="allow")
        self.assertEqual(talker.say("still"), "still\n", "the redirect flow from before goes on")
        self.assertEqual(talker.close()["closed"], "eof")
        self.assertRecord(self.flow(src=talker.local), listener="extra", proto="tcp", close="eof")

    def test_same_address_re_add_loses_no_connection(self):
        """Short flows back to back while the listener on their port is
        renamed (a remove plus an add on the same address) and renamed back:
        every connection is served, by one name or the other, none refused
        or reset (the new sockets listen before the old close, and the old
        ones' queued connections are taken first)."""
        original = self.restore_on_cleanup()
        first = self.with_listener(original, "extra", EXTRA_PORT)
        second = self.with_listener(original, "extra-renamed", EXTRA_PORT)
        self.reload(first)
        self.redirect_echo_to(EXTRA_PORT)
        loop = self.world.client_popen("echo-loop", "--dst", A(W.ECHO_IP, W.ECHO_PORT), "--seconds", "4",
                                       "--concurrency", "4")
        self.addCleanup(lambda: loop.poll() is None and loop.kill())
        time.sleep(0.5)
        for cfg in (second, first, second):
            self.reload(cfg)
            time.sleep(0.6)
        out, err = loop.communicate(timeout=60)
        result = json.loads(out.decode().strip().splitlines()[-1])
        self.assertEqual(result["failures"], [], err.decode())
        self.assertGreater(len(result["ok"]), 20, result["flows"])
        names = {r.get("listener") for r in self.log.records()[self.mark:] if r.get("event") == "flow"
                 and r.get("dst") == A(W.ECHO_IP, W.ECHO_PORT)}
        self.assertEqual(names, {"extra", "extra-renamed"})

    def test_listener_that_cannot_bind_rejects_the_whole_reload(self):
        original = self.restore_on_cleanup()
        holder = subprocess.Popen(["ip", "netns", "exec", self.world.gw, W.PYTHON, "-c", PORT_HOLDER,
                                   "127.0.0.1", str(HELD_PORT)],
                                  stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        self.addCleanup(lambda: holder.poll() is None and holder.kill())
        self.assertEqual(holder.stdout.readline().strip(), b"ready", holder.stderr.read() if holder.poll() else "")

        bad = self.with_listener(original, "fine", FREE_PORT)
        bad = self.with_listener(bad, "blocked", HELD_PORT, address="127.0.0.1")
        bad["policy"]["rules"] = [r for r in bad["policy"]["rules"] if r["name"] != "echo"]
        generation = self.gw.metrics().sum("egressd_config_generation")
        successes = self.reloads("success")
        self.reload(bad, result="failure")
        err = self.stderr()
        self.assertRegex(err, r"reload of .* rejected: cannot listen on 127\.0\.0\.1:%d for listener "
                              r"'blocked': Address already in use; the previous config keeps serving" % HELD_PORT)
        self.assertEqual(self.reloads("success"), successes)
        self.assertEqual(self.gw.metrics().sum("egressd_config_generation"), generation)
        self.assertFalse(self.listening(FREE_PORT), "what the rejected reload bound was closed")
        # The old policy (echo allowed) and the old listeners still serve.
        r = self.echo_once()
        self.assertEqual(r.get("recv"), "hi\n", r)
        self.assertRecord(self.flow(src=r["local"]), listener="transparent", rule="echo")
        self.assertEqual(self.world.curl("http://allowed.test/", ip=W.WEB_IP).status, 200)

        # Once the port is free, the same file applies.
        holder.stdin.close()
        holder.wait(timeout=5)
        self.reload(bad)
        self.wait_listening(HELD_PORT, True)
        self.assertTrue(self.listening(FREE_PORT))
        self.assertEqual(self.echo_once().get("recv"), "", "the new policy denies the echo")

    def test_restart_only_setting_is_named_and_the_rest_applies(self):
        original = self.restore_on_cleanup()
        cfg = json.loads(json.dumps(original))
        cfg["workers"] = original["workers"] + 1
        cfg["admin"] = {"address": "127.0.0.1:9911"}
        cfg["policy"]["rules"] = [r for r in cfg["policy"]["rules"] if r["name"] != "echo"]
        self.reload(cfg)
        err = self.stderr()
        self.assertIn("reload: workers (%d -> %d) takes a restart" % (original["workers"], cfg["workers"]), err)
        self.assertIn("reload: admin.address (%s -> 127.0.0.1:9911) takes a restart" % W.ADMIN, err)
        self.assertEqual(self.gw.admin_get("/healthz")[0], 200, "admin still on its address")
        deadline = time.monotonic() + 3
        while self.echo_once().get("recv") != "" and time.monotonic() < deadline:
            time.sleep(0.05)
        self.assertEqual(self.echo_once().get("recv"), "", "the policy change applied")


def big_policy_config(base, n):
    """`base` with n filler rules (one /32 each) ahead of its own: compiles for seconds."""
    cfg = json.loads(json.dumps(base))
    filler = [{"name": "f%d" % i, "to": [{"cidr": "10.%d.%d.%d/32" % ((i >> 16) & 255, (i >> 8) & 255, i & 255),
                                          "ports": [443]}]} for i in range(n)]
    cfg["policy"]["rules"] = filler + cfg["policy"]["rules"]
    return cfg


class SigtermDuringASlowCompileTest(ReloadHelpers, harness.GatewayTest):
    """SIGTERM right after SIGHUP with an 800k-rule config, whose reload is
    prepared for about a second: the drain (none here: open flows are
    closed at once) ends on time, and every record, the held flow's
    `drained` one included, is on disk by then, although the process still
    waits for the compile it cannot interrupt. A SIGKILL at that moment
    (the end of a grace period) loses nothing."""

    rules = RULES
    config_overrides = {"timeouts": {"drain_delay": "0s", "drain": "0s"}}

    @harness.skip_under_sanitizer("an 800k-rule compile", only=("tsan",))
    def test_records_are_on_disk_before_waiting_for_the_compile(self):
        held = HeldFlow(self, A(W.ECHO_IP, W.ECHO_PORT))
        done = self.echo_once()
        self.assertEqual(done.get("recv"), "hi\n")
        self.flow(src=done["local"])
        self.write_config(json.dumps(big_policy_config(self.gw.config, 800000), separators=(",", ":")))
        self.gw.signal(signal.SIGHUP)
        self.gw.signal(signal.SIGTERM)
        t0 = time.monotonic()
        drained = None
        while time.monotonic() - t0 < 5 and drained is None:
            recs = [r for r in self.log.records() if r.get("event") == "flow" and r.get("src") == held.local]
            drained = recs[0] if recs else None
            time.sleep(0.02)
        still_compiling = self.gw.alive()
        self.gw.proc.kill()  # the grace period ends
        self.gw.proc.wait(timeout=10)
        err = self.stderr()
        self.assertIsNotNone(drained, "the held flow's record is on disk at the end of the drain:\n" + err)
        self.assertRecord(drained, close="drained", decision="allow")
        self.assertIn("drained; exiting", err)
        self.assertNotRegex(err, r"reloaded .*generation 2", "the big policy was never applied")
        self.assertTrue(still_compiling, "the compile outlasted the drain (else this proves little):\n" + err)
        self.assertEqual(held.release("wait").get("closed"), "eof")


class SlowReloadTest(ReloadHelpers, harness.GatewayTest):
    """Reloads are prepared on their own thread: /healthz answers while a
    200k-rule policy compiles, and a config swapped in meanwhile is the one
    that ends up serving (the slow one is discarded, never applied)."""

    rules = RULES

    # Under TSan a 200k-rule compile takes minutes: longer than any drain.
    @harness.skip_under_sanitizer("a 200k-rule compile", only=("tsan",))
    def test_newest_config_wins_over_a_slow_compile(self):
        original = self.restore_on_cleanup()
        big = big_policy_config(original, 200000)
        big["policy"]["rules"] = [r for r in big["policy"]["rules"] if r["name"] != "echo"]
        big_text = json.dumps(big)
        small = json.loads(json.dumps(original))
        for r in small["policy"]["rules"]:
            if r["name"] == "echo":
                r["name"] = "echo-small"
        successes, failures = self.reloads("success"), self.reloads("failure")
        generation = self.gw.metrics().sum("egressd_config_generation")
        prober = subprocess.Popen(["ip", "netns", "exec", self.world.gw, W.PYTHON, "-c", PROBER, W.ADMIN, "4"],
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        self.addCleanup(lambda: prober.poll() is None and prober.kill())
        self.assertEqual(prober.stdout.readline().strip(), b"ready")

        self.write_config(big_text)
        self.gw.signal(signal.SIGHUP)
        t0 = time.monotonic()
        time.sleep(0.5)  # the big one is being parsed and compiled
        self.assertEqual(self.reloads("success"), successes, "the big policy is still being prepared")
        self.write_config(small)
        self.gw.signal(signal.SIGHUP)

        deadline = time.monotonic() + (180 if harness.SANITIZER else 60)
        while self.reloads("success") < successes + 1 and time.monotonic() < deadline:
            time.sleep(0.1)
        took = time.monotonic() - t0
        probes = json.loads(prober.communicate(timeout=30)[0].decode().strip().splitlines()[-1])
        time.sleep(1.0)  # nothing else is applied after it
        err = self.stderr()
        self.assertEqual(self.reloads("success"), successes + 1, err)
        self.assertEqual(self.reloads("failure"), failures, err)
        self.assertEqual(self.gw.metrics().sum("egressd_config_generation"), generation + 1)
        self.assertRegex(err, r"reload request \d+ superseded by a newer one")
        self.assertGreater(took, 1.0, "the big policy took a while to prepare (else this proves little)")
        r = self.echo_once()
        self.assertEqual(r.get("recv"), "hi\n", "the small config serves: %s" % r)
        self.assertRecord(self.flow(src=r["local"]), rule="echo-small")
        # /healthz answered all along (4 s of probes cover the compile).
        self.assertEqual(probes["failures"], 0, probes)
        if not harness.SANITIZER:  # a sanitizer's slowness is not a blocked control thread
            self.assertLess(probes["slowest_ms"], 1000, probes)  # a blocked control thread: seconds
        print("slow reload: newest config applied %.1f s after the big one was sent; /healthz %s"
              % (took, probes))
