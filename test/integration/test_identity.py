"""Identity policies (issue 7): `from` selectors by namespace and pod labels,
fed by a fake Kubernetes API server (test/k8s/fake_apiserver.py) that runs
inside the gw namespace, so egressd reaches it on 127.0.0.1 there.

The pods of the API are the world's pod addresses: the fake server says
which namespace, labels and service account hold POD_IP and POD_IP2, and
the test changes that under the running gateway. Each case checks what the
client saw (curl's TLS alert, rc 35, for a deny), the flow record with its
`namespace`/`pod`/`service_account`, and the metrics (egressd_flows_total by
rule, egressd_kubernetes_*).

Waiting for egressd to see a pod change: `barrier()` adds or deletes
API-only pods (namespace `barrier`, addresses nobody uses) so that the
expected egressd_kubernetes_pods lies outside every count the index went
through since the last barrier; once the gauge shows it, the pods watch is
past every earlier event (they arrive in order on one stream).
"""

import json
import os
import signal
import subprocess
import sys
import time

import harness
import world as W

A = W.addr
K8S_DIR = os.path.join(os.path.dirname(W.HERE), "k8s")
sys.path.insert(0, K8S_DIR)
import fake_apiserver as FA  # noqa: E402  (make_certs, write_kubeconfig)

TOKEN = "identity-test-token"
POD_CIDR = "10.200.1.0/24"

# Pods that only exist in the API (barriers): never a source of traffic.
BARRIER_NS = "barrier"
BARRIER_IP_BASE = 200  # 10.200.1.200 and up

RULES = [
    {"name": "payments-api",
     "from": [{"namespace": "payments", "podSelector": {"matchLabels": {"app": "api"}}}],
     "to": [{"host": "allowed.test", "ports": [443]}]},
    {"name": "billing",
     "from": [{"namespaceSelector": {"matchLabels": {"team": "billing"}}}],
     "to": [{"host": "src.test", "ports": [443]}]},
    # CIDR-sourced: must work whatever the API server does.
    {"name": "pods-cidr", "from": [POD_CIDR], "to": [{"host": "other.test", "ports": [443]}]},
]

DST_OF = {"allowed.test": W.WEB_IP, "src.test": W.WEB_IP, "other.test": W.WEB2_IP}

# The config's own tests: (they gate the start, and `egressd test` runs them).
TESTS = [
    {"src": W.POD_IP, "dst": A(W.WEB_IP, 443), "host": "allowed.test", "namespace": "payments",
     "labels": {"app": "api"}, "expect": "allow", "rule": "payments-api"},
    {"src": W.POD_IP, "dst": A(W.WEB_IP, 443), "host": "allowed.test", "namespace": "payments",
     "labels": {"app": "web"}, "expect": "deny", "rule": "default"},
    {"src": W.POD_IP2, "dst": A(W.WEB_IP, 443), "host": "allowed.test", "namespace": "shop",
     "labels": {"app": "api"}, "expect": "deny", "rule": "default"},
    {"src": W.POD_IP2, "dst": A(W.WEB_IP, 443), "host": "allowed.test", "expect": "deny", "rule": "default"},
    {"src": W.POD_IP, "dst": A(W.WEB_IP, 443), "host": "src.test", "namespace": "payments",
     "namespace_labels": {"team": "billing"}, "expect": "allow", "rule": "billing"},
    {"src": W.POD_IP2, "dst": A(W.WEB2_IP, 443), "host": "other.test", "expect": "allow", "rule": "pods-cidr"},
]

NAMESPACES = {"payments": {"team": "billing"}, "shop": {"team": "retail"}, BARRIER_NS: {}}
# key -> put_pod arguments
BASE_PODS = {
    "payments/api-1": {"namespace": "payments", "name": "api-1", "ips": [W.POD_IP],
                       "labels": {"app": "api"}, "serviceAccount": "payments-api"},
    "shop/web-1": {"namespace": "shop", "name": "web-1", "ips": [W.POD_IP2],
                   "labels": {"app": "api"}, "serviceAccount": "shop-web"},
}


def setUpModule():
    harness.module_world("redirect")


def tearDownModule():
    harness.close_world()


def counts_in_index(cmd):
    """Whether egressd_kubernetes_pods counts this pod."""
    return bool(cmd.get("ips")) and cmd.get("phase", "Running") in ("Running", "Pending") \
        and not cmd.get("hostNetwork")


class FakeApi:
    """fake_apiserver.py in the gw namespace on a fixed loopback port.

    The CA and kubeconfig are made once (here), so the server can be killed
    and started again on the same port with the same certificate: the
    kubeconfig egressd loaded stays valid. A restarted server starts empty;
    `model` (what the test put) is put again by restart()."""

    def __init__(self, world, name, port):
        self.world = world
        self.name = name
        self.port = port
        self.dir = world.path(name)
        os.makedirs(self.dir)
        FA.make_certs(self.dir)
        self.kubeconfig = os.path.join(self.dir, "kubeconfig")
        FA.write_kubeconfig(self.kubeconfig, "https://127.0.0.1:%d" % port, os.path.join(self.dir, "ca.crt"), TOKEN)
        self.proc = None
        self.pid = None
        self.control_port = None
        self.starts = 0
        self.namespaces = {}  # name -> labels
        self.pods = {}        # "ns/name" -> put_pod arguments
        self.barriers = 0
        self.lo = self.hi = 0  # the range of index_count() since the last barrier

    # ---- process -------------------------------------------------------------

    def start(self, timeout=20):
        """Starts the server (reusing the certificates) and waits for its ready line."""
        self.starts += 1
        pname = "%s-%d" % (self.name, self.starts)
        code = ("import os, sys\n"
                "sys.path.insert(0, %r)\n"
                "import fake_apiserver as f\n"
                "make = f.make_certs\n"
                "f.make_certs = lambda d: None if os.path.exists(os.path.join(d, 'ca.crt')) else make(d)\n"
                "sys.argv = ['fake_apiserver.py'] + sys.argv[1:]\n"
                "f.main()\n" % K8S_DIR)
        self.proc = self.world._popen(pname, self.world.gw, [
            W.PYTHON, "-B", "-c", code, "--dir", self.dir, "--port", str(self.port), "--token", TOKEN])
        self.pid = self.proc.pid  # ip netns exec execs python: same pid
        self.out = self.world.path(pname + ".out")
        self.err_name = pname + ".err"
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError("fake_apiserver exited with %s:\n%s" % (
                    self.proc.returncode, self.world.tail(self.err_name)))
            try:
                with open(self.out) as f:
                    line = f.readline()
            except OSError:
                line = ""
            if line.endswith("\n"):
                info = json.loads(line)
                if info["port"] != self.port:
                    raise RuntimeError("fake_apiserver on port %s, want %s" % (info["port"], self.port))
                self.control_port = info["control_port"]
                return self
            time.sleep(0.05)
        raise RuntimeError("fake_apiserver not serving after %ss:\n%s" % (timeout, self.world.tail(self.err_name)))

    def stop(self, sig=signal.SIGKILL):
        """Ends the server process (by its pid) and waits for it."""
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=5)
        self.world.procs.pop("%s-%d" % (self.name, self.starts), None)
        self.proc = None
        self.control_port = None

    def alive(self):
        return self.proc is not None and self.proc.poll() is None

    def restart_with_model(self):
        """Starts the (killed) server again and puts the model back."""
        self.start()
        for name, labels in self.namespaces.items():
            self.op(op="put_namespace", name=name, labels=labels)
        for cmd in self.pods.values():
            self.op(op="put_pod", **cmd)

    def stderr_tail(self, lines=15):
        return self.world.tail(self.err_name, lines) if self.starts else ""

    # ---- control port ------------------------------------------------------------

    def op(self, **cmd):
        """One control operation (curl inside gw); returns the answer."""
        p = self.world.ns_run(self.world.gw, ["curl", "-sS", "--max-time", "5", "-d", json.dumps(cmd),
                                              "http://127.0.0.1:%d/" % self.control_port], timeout=15)
        if p.returncode != 0:
            raise AssertionError("control %s failed: %s" % (cmd, p.stderr.decode()))
        answer = json.loads(p.stdout)
        if "error" in answer:
            raise AssertionError("control %s: %s" % (cmd, answer["error"]))
        return answer

    def put_namespace(self, name, labels):
        self.namespaces[name] = dict(labels)
        self.op(op="put_namespace", name=name, labels=labels)

    def put_pod(self, namespace, name, ips, labels, serviceAccount="default", **more):
        cmd = dict(namespace=namespace, name=name, ips=list(ips), labels=dict(labels),
                   serviceAccount=serviceAccount, **more)
        self.pods["%s/%s" % (namespace, name)] = cmd
        self.op(op="put_pod", **cmd)
        self._track()

    def delete_pod(self, namespace, name, silent=False):
        self.pods.pop("%s/%s" % (namespace, name), None)
        self._track()
        return self.op(op="delete", resource="pods", namespace=namespace, name=name, silent=silent)["deleted"]

    def index_count(self):
        """What egressd_kubernetes_pods should say once it has seen everything."""
        return sum(1 for cmd in self.pods.values() if counts_in_index(cmd))

    def _track(self):
        n = self.index_count()
        self.lo, self.hi = min(self.lo, n), max(self.hi, n)

    def move_count_outside_range(self):
        """Adds or deletes API-only barrier pods (unused addresses, namespace
        `barrier`) so that index_count() leaves [lo, hi], the range of counts
        since the last barrier; returns the new count. Deleting is preferred,
        so the barrier pods do not pile up."""
        barriers = sorted((k for k in self.pods if k.startswith(BARRIER_NS + "/")),
                          key=lambda k: int(k.rsplit("-", 1)[1]))
        need_down = self.index_count() - (self.lo - 1)
        if 0 < need_down <= len(barriers):
            for key in barriers[:need_down]:
                self.delete_pod(BARRIER_NS, key.split("/", 1)[1])
        else:
            for _ in range(self.hi + 1 - self.index_count()):
                self.barriers += 1
                self.put_pod(BARRIER_NS, "b-%d" % self.barriers,
                             ["10.200.1.%d" % (BARRIER_IP_BASE + self.barriers % 50)], {"barrier": "yes"})
        return self.index_count()

    def barrier_reached(self, count):
        self.lo = self.hi = count

    def reset(self, pods):
        """The API holds exactly `pods` (and barrier pods)."""
        for key in list(self.pods):
            if key not in pods and not key.startswith(BARRIER_NS + "/"):
                ns, name = key.split("/", 1)
                self.delete_pod(ns, name)
        for ns, labels in NAMESPACES.items():
            if self.namespaces.get(ns) != labels:
                self.put_namespace(ns, labels)
        for cmd in pods.values():
            self.put_pod(**cmd)


class IdentityCase(harness.GatewayTest):
    """A gateway with a `kubernetes:` section and the fake API server."""

    rules = RULES
    api_port = 16443
    sync_timeout = "10s"
    api = None

    @classmethod
    def make_config(cls, access_log):
        cfg = super().make_config(access_log)
        cfg["policy"]["tests"] = TESTS
        cfg["kubernetes"] = {"kubeconfig": cls.api.kubeconfig, "sync_timeout": cls.sync_timeout}
        return cfg

    @classmethod
    def setUpClass(cls):
        cls.world = harness.current_world()
        cls.api = FakeApi(cls.world, "apiserver-%s" % cls.__name__.lower(), cls.api_port)
        try:
            cls.api.start()
            for ns, labels in NAMESPACES.items():
                cls.api.put_namespace(ns, labels)
            for cmd in BASE_PODS.values():
                cls.api.put_pod(**cmd)
            super().setUpClass()
        except BaseException:
            cls.api.stop()
            raise

    @classmethod
    def tearDownClass(cls):
        try:
            super().tearDownClass()
        finally:
            cls.api.stop()

    def diagnostics(self):
        parts = [super().diagnostics()]
        if self.api is not None:
            parts.append("---- fake apiserver stderr ----\n" + self.api.stderr_tail())
        return "\n".join(parts)

    # ---- helpers -------------------------------------------------------------------

    def k8s(self):
        """(pods, synced, data_age or None, {(resource, reason): restarts}) from /metrics."""
        m = self.gw.metrics()
        restarts = {}
        for (name, labels), v in m.items():
            if name == "egressd_kubernetes_watch_restarts_total":
                d = dict(labels)
                restarts[(d["resource"], d["reason"])] = v
        age = m.sum("egressd_kubernetes_data_age_seconds") if m.has("egressd_kubernetes_data_age_seconds") else None
        return m.sum("egressd_kubernetes_pods"), m.sum("egressd_kubernetes_synced"), age, restarts

    def wait_metric(self, what, pred, timeout=10):
        """Polls /metrics (every 0.1 s, at most `timeout`) until pred(k8s()) holds; returns it."""
        deadline = time.monotonic() + timeout
        while True:
            st = self.k8s()
            if pred(st):
                return st
            if time.monotonic() > deadline:
                self.fail("kubernetes metrics: %s not reached after %ss: %s" % (what, timeout, st))
            time.sleep(0.1)

    def barrier(self, timeout=10):
        """Waits until egressd has applied every pod event put so far: API-only
        barrier pods move the count outside the range it went through since
        the last barrier, so seeing egressd_kubernetes_pods reach it means
        the pods watch is past every earlier event."""
        target = self.api.move_count_outside_range()
        self.wait_metric("egressd_kubernetes_pods == %d" % target, lambda st: st[0] == target, timeout)
        self.api.barrier_reached(target)
        time.sleep(0.1)  # the workers swap the snapshot in on their own threads

    def reset_pods(self, pods=None):
        self.api.reset(BASE_PODS if pods is None else pods)
        self.barrier()

    def go(self, src, host="allowed.test", timeout=10):
        """curl https://host/ from src; returns (response, its flow record, metrics before, log mark)."""
        m0 = self.gw.metrics()
        mark = self.log.mark()
        r = self.world.curl("https://%s/" % host, ip=DST_OF[host], src=src, timeout=timeout)
        rec = self.log.wait(lambda x: x.get("event") == "flow" and x.get("host") == host
                            and x.get("src", "").startswith(src + ":"), since=mark,
                            what="flow record from %s to %s" % (src, host))
        return r, rec, m0, mark

    def assertIdentity(self, rec, namespace, pod, service_account):
        self.assertRecord(rec, namespace=namespace, pod=pod, service_account=service_account)

    def assertAllowed(self, got, rule, identity):
        r, rec, m0, mark = got
        self.assertEqual((r.rc, r.status), (0, 200), r)
        self.assertDecision(rec, "allow", rule, close="eof", proto="tls", m0=m0)
        self.assertIdentity(rec, *identity)
        opened = self.log.find(W.match(event="open", src=rec["src"]), since=mark)
        self.assertEqual(len(opened), 1, opened)
        self.assertIdentity(opened[0], *identity)

    def assertDenied(self, got, identity, rule="default"):
        """identity: (namespace, pod, service_account), or (None, None, None) for a pod-less source."""
        r, rec, m0, _ = got
        self.assertEqual(r.rc, 35, r)  # the TLS alert
        self.assertDecision(rec, "deny", rule, close="denied", proto="tls", m0=m0)
        self.assertIdentity(rec, *identity)

    def setUp(self):
        super().setUp()
        if self.api.alive():
            self.reset_pods()


PAY = ("payments", "api-1", "payments-api")
SHOP = ("shop", "web-1", "shop-web")
NOBODY = (None, None, None)


class IdentityTest(IdentityCase):
    """One gateway, synced with the fake API server, whose pods the tests change."""

    def test_1_selector_allows_and_denies_by_namespace_and_labels(self):
        pods, synced, age, _ = self.k8s()
        self.assertEqual((synced, age), (1, 0), "synced, watches open")
        self.assertEqual(pods, self.api.index_count())
        self.assertAllowed(self.go(W.POD_IP), "payments-api", PAY)
        # Same labels, another namespace.
        self.assertDenied(self.go(W.POD_IP2), SHOP)
        # The CIDR rule takes both, with their identity in the record.
        self.assertAllowed(self.go(W.POD_IP2, "other.test"), "pods-cidr", SHOP)
        # Relabelled: denied within a second or two of the event.
        t0 = time.monotonic()
        self.api.put_pod(**dict(BASE_PODS["payments/api-1"], labels={"app": "web"}))
        for attempt in range(30):
            got = self.go(W.POD_IP)
            if got[0].rc != 0:
                break
            self.assertIdentity(got[1], *PAY)
            self.assertLess(time.monotonic() - t0, 3.0, "still allowed 3 s after the relabel: %s" % (got[1],))
        took = time.monotonic() - t0
        self.assertDenied(got, PAY)
        self.assertLess(took, 3.0, "denied %.2fs after the relabel" % took)
        # Back to app=api: allowed again (the same pod object, MODIFIED).
        self.api.put_pod(**BASE_PODS["payments/api-1"])
        self.barrier()
        self.assertAllowed(self.go(W.POD_IP), "payments-api", PAY)

    def test_2_source_no_pod_holds(self):
        self.api.delete_pod("shop", "web-1")
        self.barrier()
        got = self.go(W.POD_IP2)
        self.assertDenied(got, NOBODY)
        # CIDR rules still apply to a pod-less source.
        self.assertAllowed(self.go(W.POD_IP2, "other.test"), "pods-cidr", NOBODY)
        # A pending pod with its IP lends its identity; a finished one does not.
        self.api.put_pod("payments", "api-2", [W.POD_IP2], {"app": "api"}, "payments-api", phase="Pending")
        self.barrier()
        self.assertAllowed(self.go(W.POD_IP2), "payments-api", ("payments", "api-2", "payments-api"))
        self.api.put_pod("payments", "api-2", [W.POD_IP2], {"app": "api"}, "payments-api", phase="Succeeded")
        self.barrier()
        self.assertDenied(self.go(W.POD_IP2), NOBODY)
        # hostNetwork pods never lend an identity to the node's address.
        self.api.put_pod("payments", "api-2", [W.POD_IP2], {"app": "api"}, "payments-api", hostNetwork=True)
        self.barrier()
        self.assertDenied(self.go(W.POD_IP2), NOBODY)

    def test_3_ip_reuse_never_moves_rights(self):
        self.assertAllowed(self.go(W.POD_IP), "payments-api", PAY)
        # payments/api-1 deleted, its IP taken by shop/other (labels app=api too).
        other = {"namespace": "shop", "name": "other", "ips": [W.POD_IP], "labels": {"app": "api"},
                 "serviceAccount": "shop-other"}
        self.api.delete_pod("payments", "api-1")
        self.api.put_pod(**other)
        self.barrier()
        got = self.go(W.POD_IP)
        self.assertDenied(got, ("shop", "other", "shop-other"))
        # While two live pods claim the IP, it matches no selector.
        self.api.put_pod(**BASE_PODS["payments/api-1"])
        self.barrier()
        self.assertDenied(self.go(W.POD_IP), NOBODY)
        # shop/other leaves: payments/api-1 alone holds it again.
        self.api.delete_pod("shop", "other")
        self.barrier()
        self.assertAllowed(self.go(W.POD_IP), "payments-api", PAY)

    def test_4_ip_reuse_under_traffic(self):
        """Flows run while the IP changes hands: a record names the pod that
        held the IP when the flow was judged, and only payments/api-1 is ever
        allowed — no flow of shop/other passes, not even the first."""
        other = {"namespace": "shop", "name": "other", "ips": [W.POD_IP], "labels": {"app": "api"},
                 "serviceAccount": "shop-other"}
        mark = self.log.mark()
        recs = []
        swapped = False
        deadline = time.monotonic() + 20
        for i in range(40):
            if time.monotonic() > deadline:
                break
            if i == 3:
                self.api.delete_pod("payments", "api-1")
                self.api.put_pod(**other)
                swapped = True
            got = self.go(W.POD_IP, timeout=5)
            recs.append(got)
            if swapped and got[1].get("pod") == "other" and len([g for g in recs if g[1].get("pod") == "other"]) >= 3:
                break
        self.assertTrue(swapped)
        for r, rec, _, _ in recs:
            if rec.get("decision") == "allow":
                self.assertEqual(r.rc, 0, r)
                self.assertIdentity(rec, *PAY)
            else:
                self.assertEqual(r.rc, 35, r)
                self.assertIn(rec.get("namespace"), (None, "shop"), rec)
                if rec.get("namespace") == "shop":
                    self.assertIdentity(rec, "shop", "other", "shop-other")
        self.assertEqual(recs[0][1].get("decision"), "allow")
        self.assertEqual(recs[-1][1].get("pod"), "other", "the new pod became known: %s" % (recs[-1][1],))
        self.assertEqual(self.log.find(lambda x: x.get("namespace") == "shop" and x.get("decision") == "allow",
                                       since=mark), [])

    def test_5_namespace_labels_follow_the_namespace_watch(self):
        got = self.go(W.POD_IP, "src.test")
        self.assertAllowed(got, "billing", PAY)
        self.assertDenied(self.go(W.POD_IP2, "src.test"), SHOP)
        try:
            self.api.put_namespace("payments", {"team": "finance"})
            for attempt in range(30):
                got = self.go(W.POD_IP, "src.test")
                if got[0].rc != 0:
                    break
                time.sleep(0.1)
            self.assertDenied(got, PAY)
            # `namespace: payments` does not care about team.
            self.assertAllowed(self.go(W.POD_IP), "payments-api", PAY)
            self.api.put_namespace("shop", {"team": "billing"})
            for attempt in range(30):
                got = self.go(W.POD_IP2, "src.test")
                if got[0].rc == 0:
                    break
                time.sleep(0.1)
            self.assertAllowed(got, "billing", SHOP)
        finally:
            for ns, labels in NAMESPACES.items():
                self.api.put_namespace(ns, labels)

    def test_6_relist_after_410_drops_a_silently_deleted_pod(self):
        self.assertAllowed(self.go(W.POD_IP), "payments-api", PAY)
        _, _, _, r0 = self.k8s()
        # Deleted without an event (as if the event was lost to compaction):
        # egressd still believes in the pod.
        self.assertTrue(self.api.delete_pod("payments", "api-1", silent=True))
        self.api.op(op="compact")
        self.api.op(op="gone", resource="pods", mode="event")
        time.sleep(0.3)
        self.assertAllowed(self.go(W.POD_IP), "payments-api", PAY)
        # The watch is cut; the re-watch gets 410 and egressd relists.
        self.api.op(op="drop")
        st = self.wait_metric("a pods relist after 410",
                              lambda st: st[3].get(("pods", "gone"), 0) > r0.get(("pods", "gone"), 0))
        target = self.api.index_count()
        self.wait_metric("pods == %d" % target, lambda st: st[0] == target)
        self.assertEqual(st[1], 1, "synced stays 1 across a relist")
        time.sleep(0.1)
        self.assertDenied(self.go(W.POD_IP), NOBODY)
        self.assertDenied(self.go(W.POD_IP2), SHOP)  # the rest of the index survived the relist
        _, synced, age, r1 = self.wait_metric("watches open again", lambda st: st[2] == 0)
        self.assertEqual(synced, 1)
        self.assertEqual(r1[("pods", "gone")], r0.get(("pods", "gone"), 0) + 1, r1)

    def test_7_live_metrics_pass_promtool(self):
        self.go(W.POD_IP)
        self.go(W.POD_IP2)
        text = self.gw.metrics_text()
        p = subprocess.run(["promtool", "check", "metrics"], input=text.encode(), capture_output=True, timeout=30)
        self.assertEqual(p.returncode, 0, "promtool check metrics: %s%s\n---- metrics ----\n%s" % (
            p.stdout.decode(), p.stderr.decode(), text[:4000]))
        types = dict(line.split()[2:4] for line in text.splitlines() if line.startswith("# TYPE "))
        for name, kind in (("egressd_kubernetes_pods", "gauge"), ("egressd_kubernetes_synced", "gauge"),
                           ("egressd_kubernetes_data_age_seconds", "gauge"),
                           ("egressd_kubernetes_watch_restarts_total", "counter")):
            self.assertEqual(types.get(name), kind, "metric %s (%s) missing or mistyped" % (name, kind))
        m = W.Metrics.parse(text)
        for resource in ("pods", "namespaces"):
            for reason in ("gone", "closed", "error", "timeout"):
                self.assertIn(("egressd_kubernetes_watch_restarts_total",
                               (("reason", reason), ("resource", resource))), m)
        for (name, labels), _ in m.items():
            for k, v in labels:
                self.assertNotIn(k, ("namespace", "pod", "service_account", "src"), (name, labels))
                self.assertNotIn(v, ("payments", "shop", "api-1", "web-1", "shop-web"),
                                 "no label carries a pod or namespace: %s %s" % (name, labels))
                self.assertNotIn("10.200.", v, "no label carries an IP: %s %s" % (name, labels))

    def test_8_explain_and_tests_agree_with_the_gateway(self):
        cfg = self.gw.config_path
        p = subprocess.run([harness.EGRESSD, "test", "--config", cfg], capture_output=True, timeout=30)
        self.assertEqual(p.returncode, 0, p.stdout + p.stderr)
        self.assertIn(b"%d passed, 0 failed" % len(TESTS), p.stdout)
        p = subprocess.run([harness.EGRESSD, "check", "--config", cfg], capture_output=True, timeout=30)
        self.assertEqual(p.returncode, 0, p.stdout + p.stderr)
        # (namespace, labels, service account) of the pod at POD_IP, host -> the live decision = explain's.
        cases = [
            ("payments", {"app": "api"}, "allowed.test"),
            ("payments", {"app": "web"}, "allowed.test"),
            ("shop", {"app": "api"}, "allowed.test"),
            ("payments", {"app": "web", "tier": "x"}, "src.test"),
            ("shop", {"app": "api"}, "src.test"),
            ("shop", {"app": "api"}, "other.test"),
            (None, None, "allowed.test"),
            (None, None, "other.test"),
        ]
        for namespace, labels, host in cases:
            with self.subTest(namespace=namespace, labels=labels, host=host):
                if namespace is None:
                    self.reset_pods({k: v for k, v in BASE_PODS.items() if k != "payments/api-1"})
                else:
                    pod = {"namespace": namespace, "name": "probe", "ips": [W.POD_IP], "labels": labels,
                           "serviceAccount": "probe"}
                    self.reset_pods({namespace + "/probe": pod, "shop/web-1": BASE_PODS["shop/web-1"]})
                r, rec, _, _ = self.go(W.POD_IP, host)
                cmd = [harness.EGRESSD, "explain", "--config", cfg, "--src", W.POD_IP,
                       "--dst", A(DST_OF[host], 443), "--host", host, "--proto", "tls"]
                if namespace is not None:
                    cmd += ["--namespace", namespace, "--labels", ",".join("%s=%s" % kv for kv in labels.items()),
                            "--namespace-labels", ",".join("%s=%s" % kv for kv in NAMESPACES[namespace].items())]
                p = subprocess.run(cmd, capture_output=True, timeout=10)
                self.assertEqual(p.returncode, 0, p.stderr)
                ex = json.loads(p.stdout)
                self.assertEqual((ex["decision"], ex["rule"]), (rec["decision"], rec["rule"]),
                                 "explain %s vs live %s" % (ex, rec))
                self.assertEqual(r.rc, 0 if rec["decision"] == "allow" else 35, r)
                self.assertRecord(rec, namespace=namespace, pod="probe" if namespace else None)


class ApiDownAtStartTest(IdentityCase):
    """The API server is down when egressd starts: not ready until
    kubernetes.sync_timeout, then serving with CIDR rules only; the
    identity rules start to allow once the server comes up."""

    api_port = 16444
    sync_timeout = "3s"  # 2 s in the brief; 3 s leaves room for a busy machine's start-up

    @classmethod
    def setUpClass(cls):
        cls.world = harness.current_world()
        cls.api = FakeApi(cls.world, "apiserver-%s" % cls.__name__.lower(), cls.api_port)  # not started
        cls.gw = W.Gateway(cls.world, harness.EGRESSD, cls.make_config)
        cls.log = cls.gw.log

    def setUp(self):
        pass  # the test starts the gateway itself

    def test_down_at_start_then_up(self):
        gw = self.gw
        t0 = time.monotonic()
        gw.proc = self.world._popen(gw.name, self.world.gw, [harness.EGRESSD, "--config", gw.config_path])
        statuses = []
        ready_at = None
        for _ in range(300):  # 0.05 s apart: at most ~15 s
            if gw.proc.poll() is not None:
                self.fail("egressd exited with %s:\n%s" % (gw.proc.returncode, gw.stderr_tail()))
            try:
                code = gw.admin_get("/readyz", timeout=2)[0]
            except Exception:
                code = 0
            if code:
                statuses.append((round(time.monotonic() - t0, 2), code))
            if code == 200:
                ready_at = time.monotonic() - t0
                break
            time.sleep(0.05)
        self.assertIsNotNone(ready_at, "never ready: %s\n%s" % (statuses, gw.stderr_tail()))
        self.assertEqual(statuses[0][1], 503, "not ready before the sync timeout: %s" % statuses)
        self.assertGreaterEqual(ready_at, 2.5, "ready only after kubernetes.sync_timeout (3s): %s" % statuses)
        self.assertIn("not synced after kubernetes.sync_timeout", gw.stderr_tail())
        # Serving: CIDR rules allow, identity rules match nothing.
        self.mark = self.log.mark()
        pods, synced, age, restarts = self.k8s()
        self.assertEqual((pods, synced, age), (0, 0, None), "not synced: no data age yet")
        self.assertGreater(restarts.get(("pods", "error"), 0), 0, restarts)
        self.assertAllowed(self.go(W.POD_IP, "other.test"), "pods-cidr", NOBODY)
        self.assertDenied(self.go(W.POD_IP), NOBODY)
        self.assertDenied(self.go(W.POD_IP, "src.test"), NOBODY)
        self.assertEqual(gw.admin_get("/readyz")[0], 200)
        # The API server comes up on the kubeconfig's port.
        self.api.start()
        for ns, labels in NAMESPACES.items():
            self.api.put_namespace(ns, labels)
        for cmd in BASE_PODS.values():
            self.api.put_pod(**cmd)
        up = time.monotonic()
        # The watcher's backoff doubles from 200 ms (capped at 30 s); it has
        # been failing for a few seconds, so its next try is < ~13 s away.
        self.wait_metric("synced", lambda st: st[1] == 1 and st[0] == self.api.index_count(), timeout=40)
        took = time.monotonic() - up
        time.sleep(0.1)
        self.assertAllowed(self.go(W.POD_IP), "payments-api", PAY)
        self.assertDenied(self.go(W.POD_IP2), SHOP)
        self.assertAllowed(self.go(W.POD_IP, "src.test"), "billing", PAY)
        self.assertAllowed(self.go(W.POD_IP, "other.test"), "pods-cidr", PAY)
        _, synced, age, _ = self.wait_metric("watches open", lambda st: st[2] == 0)
        self.assertEqual(synced, 1)
        print("(synced %.1fs after the API server came up) " % took, end="", file=sys.stderr)


class ApiDownLaterTest(IdentityCase):
    """The API server goes away after the first sync: the last snapshot
    keeps deciding, its age is exposed, and a restarted server is relisted."""

    api_port = 16445

    def test_down_later_keeps_the_snapshot(self):
        self.assertAllowed(self.go(W.POD_IP), "payments-api", PAY)
        _, synced, age, r0 = self.k8s()
        self.assertEqual((synced, age), (1, 0))
        self.api.stop(signal.SIGKILL)
        # Stale but kept: the same decisions, with identities.
        st = self.wait_metric("data age > 1 s", lambda st: st[2] is not None and st[2] > 1.0, timeout=15)
        self.assertEqual(st[1], 1, "synced stays 1 while the API server is down")
        self.assertEqual(st[0], self.api.index_count(), "the index is kept")
        self.assertAllowed(self.go(W.POD_IP), "payments-api", PAY)
        self.assertDenied(self.go(W.POD_IP2), SHOP)
        self.assertAllowed(self.go(W.POD_IP2, "other.test"), "pods-cidr", SHOP)
        self.assertEqual(self.gw.admin_get("/readyz")[0], 200, "still ready")
        age1 = self.k8s()[2]
        time.sleep(1.0)
        st = self.k8s()
        self.assertGreater(st[2], age1, "the age grows")
        r1 = st[3]
        for resource in ("pods", "namespaces"):
            self.assertGreater(sum(v for (res, _), v in r1.items() if res == resource),
                               sum(v for (res, _), v in r0.items() if res == resource),
                               "%s restarts counted: %s -> %s" % (resource, r0, r1))
        # Back, with a change made while egressd was away (payments/api-1
        # relabelled). A new server's resourceVersions start again, so the
        # test makes it answer 410 to the old ones: egressd relists.
        self.api.pods["payments/api-1"] = dict(BASE_PODS["payments/api-1"], labels={"app": "web"})
        self.api.restart_with_model()
        self.api.op(op="gone", resource="pods", mode="event")
        self.api.op(op="gone", resource="namespaces", mode="event")
        self.api.op(op="drop")  # a watch that reconnected before the `gone` is re-opened
        st = self.wait_metric("relisted, watches open",
                              lambda st: st[2] == 0 and st[3].get(("pods", "gone"), 0) > r0.get(("pods", "gone"), 0)
                              and st[3].get(("namespaces", "gone"), 0) > r0.get(("namespaces", "gone"), 0),
                              timeout=40)
        self.assertEqual(st[1], 1)
        self.barrier()
        self.assertDenied(self.go(W.POD_IP), PAY)
        self.api.put_pod(**BASE_PODS["payments/api-1"])
        self.barrier()
        self.assertAllowed(self.go(W.POD_IP), "payments-api", PAY)

    def test_stalled_server_is_not_yet_stale(self):
        """SIGSTOP: the connections stay open, so egressd cannot tell before
        its stall timeout; decisions go on from the snapshot meanwhile."""
        self.api.proc.send_signal(signal.SIGSTOP)
        try:
            time.sleep(1.0)
            self.assertAllowed(self.go(W.POD_IP), "payments-api", PAY)
            self.assertDenied(self.go(W.POD_IP2), SHOP)
            _, synced, age, _ = self.k8s()
            self.assertEqual(synced, 1)
        finally:
            self.api.proc.send_signal(signal.SIGCONT)
