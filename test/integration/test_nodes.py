"""Node agents and central replicas in a two-node world (nodes_world.py):
policy on each pod's own address and original destination at the centrals,
replicas spread, skipped and failed over, PROXY listeners refusing untrusted
peers and bad headers, and a pod that fails fast when no replica answers."""

import signal
import time

import harness
import nodes_world as N
import world as W

A = W.addr

_world = [None]

CENTRALS = [A(N.CENTRAL1_IP, N.CENTRAL_PORT), A(N.CENTRAL2_IP, N.CENTRAL_PORT)]
CONNECT_TIMEOUT = 2.0  # timeouts.connect in every config below

RULES = [
    {"name": "p1-web", "from": [N.POD1_IP + "/32"], "to": [{"host": "allowed.test", "ports": [443, 80]}]},
    {"name": "p2-web", "from": [N.POD2_IP + "/32"], "to": [{"host": "other.test", "ports": [443]}]},
    {"name": "block-denied", "action": "deny", "to": [{"host": "denied.test", "ports": [443, 80]}]},
]


def setUpModule():
    harness.close_world()
    w = N.NodesWorld()
    w.start()
    _world[0] = w


def tearDownModule():
    if _world[0] is not None:
        _world[0].stop()
        _world[0] = None


def central_config(access_log):
    cfg = W.base_config(access_log, RULES)
    cfg["listeners"] = [{"name": "from-nodes", "address": "0.0.0.0:%d" % N.CENTRAL_PORT, "mode": "redirect",
                         "proxy_protocol": {"trusted": [N.NODE1_IP + "/32", N.NODE2_IP + "/32"]}}]
    return cfg


def agent_config(access_log, forward="%s:%d" % (N.CENTRAL_NAME, N.CENTRAL_PORT)):
    cfg = W.base_config(access_log, [])
    cfg["listeners"] = [{"name": "node-agent", "address": "0.0.0.0:%d" % N.AGENT_PORT, "mode": "redirect",
                         "forward": forward}]
    cfg["upstream"] = {"mark": N.AGENT_MARK}
    return cfg


class NodesTest(harness.GatewayTest):
    """Two agents, two centrals; each class starts its own and stops them."""

    def setUp(self):
        for g in self.all():
            self.assertTrue(g.alive(), "egressd is not running:\n" + g.diagnostics())
        self.marks = {g.name: g.log.mark() for g in self.all()}

    @classmethod
    def setUpClass(cls):
        cls.world = _world[0]
        if cls.world is None:
            raise RuntimeError("no world: setUpModule did not run")
        cls.gw = None
        cls.started = []
        try:
            cls.c1 = cls.start("c1", central_config)
            cls.c2 = cls.start("c2", central_config)
            cls.a1 = cls.start("n1", agent_config)
            cls.a2 = cls.start("n2", agent_config)
        except BaseException:
            cls.tearDownClass()
            raise

    @classmethod
    def start(cls, suffix, config_fn, name=None):
        g = W.Gateway(cls.world.at(suffix), harness.EGRESSD, config_fn, name=name or ("egressd-" + suffix))
        cls.started.append(g)
        g.start()
        return g

    @classmethod
    def tearDownClass(cls):
        bad = []
        for g in getattr(cls, "started", []):
            if g.alive():
                rc = g.stop()
                if rc != 0:
                    bad.append("%s exited %s after SIGTERM:\n%s" % (g.name, rc, g.diagnostics()))
        if bad:
            raise AssertionError("\n".join(bad))

    def all(self):
        return [g for g in self.started]

    def diagnostics(self):
        return "\n".join(g.diagnostics() for g in self.all())

    def since(self, g):
        return self.marks.get(g.name, 0)

    def central_flow(self, timeout=10, **key):
        """The flow record matching `key` in either central's log."""
        deadline = time.monotonic() + timeout
        while True:
            for g in (self.c1, self.c2):
                found = g.log.find(W.match(event="flow", **key), self.since(g))
                if found:
                    return g, found[0]
            if time.monotonic() > deadline:
                self.fail("no central flow record with %s:\n%s\n%s" % (key, self.c1.log.tail(), self.c2.log.tail()))
            time.sleep(0.05)

    def agent_flows(self, agent, count, timeout=10):
        return agent.log.wait(W.match(event="flow"), since=self.since(agent), count=count, timeout=timeout,
                              what="agent flow record")

    def assertForwarded(self, rec, pod_ip, dst):
        self.assertEqual(rec.get("decision"), "forward", rec)
        self.assertEqual(rec.get("rule"), "forward", rec)
        self.assertEqual(rec.get("listener"), "node-agent", rec)
        self.assertTrue(rec["src"].startswith(pod_ip + ":"), rec)
        self.assertEqual(rec.get("dst"), dst, rec)


class ForwardingTest(NodesTest):

    def test_each_pod_reaches_its_allowed_name_with_its_own_address(self):
        for pod, pod_ip, agent, name, ip, rule in (("p1", N.POD1_IP, self.a1, "allowed.test", W.WEB_IP, "p1-web"),
                                                   ("p2", N.POD2_IP, self.a2, "other.test", W.WEB2_IP, "p2-web")):
            with self.subTest(pod=pod):
                r = self.world.curl_from(pod, "https://%s/" % name, ip)
                self.assertEqual((r.rc, r.status, r.body), (0, 200, ("server=%s host=%s\n" % (ip, name)).encode()), r)
                g, rec = self.central_flow(host=name)
                self.assertRecord(rec, listener="from-nodes", decision="allow", rule=rule, dst=A(ip, 443),
                                  upstream=A(ip, 443), close="eof", proto="tls")
                self.assertTrue(rec["src"].startswith(pod_ip + ":"), "the central sees the pod itself: %s" % rec)
                self.assertEqual(len(g.log.find(W.match(event="open", src=rec["src"]), self.since(g))), 1)
                fwd = self.agent_flows(agent, 1)
                self.assertForwarded(fwd, pod_ip, A(ip, 443))
                self.assertEqual(fwd["src"], rec["src"], "agent and central name the same pod connection")
                self.assertIn(fwd.get("upstream"), CENTRALS, fwd)
                self.assertEqual(fwd.get("close"), "eof", fwd)
                self.assertGreater(fwd["bytes_up"], 200, fwd)
                self.assertGreater(fwd["bytes_down"], 200, fwd)
                self.assertEqual(agent.log.find(W.match(event="open"), self.since(agent)), [],
                                 "node agents write no open records")
                self.assertCounted(agent, listener="node-agent", proto="tcp", decision="forward", rule="forward")
        self.assertGreater(self.world.mark_counter("n1"), 0, "the agent's upstream sockets carry upstream.mark")

    def assertCounted(self, g, **labels):
        """egressd_flows_total{labels} on `g` counts at least one flow."""
        deadline = time.monotonic() + 5
        while True:
            now = g.metrics().sum("egressd_flows_total", **labels)
            if now >= 1 or time.monotonic() > deadline:
                break
            time.sleep(0.05)
        self.assertGreaterEqual(now, 1, "egressd_flows_total%s on %s" % (labels, g.name))

    def test_policy_is_judged_on_the_real_source(self):
        # p2 may not reach allowed.test, p1 may not reach other.test: the
        # centrals see the pods, not the nodes.
        for pod, pod_ip, name, ip in (("p2", N.POD2_IP, "allowed.test", W.WEB_IP),
                                      ("p1", N.POD1_IP, "other.test", W.WEB2_IP)):
            with self.subTest(pod=pod):
                r = self.world.curl_from(pod, "https://%s/" % name, ip)
                self.assertEqual(r.rc, 35, r)  # the TLS alert
                _, rec = self.central_flow(host=name)
                self.assertRecord(rec, decision="deny", rule="default", close="denied", dst=A(ip, 443))
                self.assertTrue(rec["src"].startswith(pod_ip + ":"), rec)

    def test_denied_name_reaches_the_pod_as_a_tls_alert(self):
        reply = self.world.hello_from("p1", A(W.WEB3_IP, 443), "denied.test")
        self.assertEqual(reply.get("alert"), [2, 49], "want a fatal access_denied alert: %s" % reply)
        _, rec = self.central_flow(host="denied.test")
        self.assertRecord(rec, decision="deny", rule="block-denied", close="denied", dst=A(W.WEB3_IP, 443))
        self.assertTrue(rec["src"].startswith(N.POD1_IP + ":"), rec)
        fwd = self.agent_flows(self.a1, 1)
        self.assertForwarded(fwd, N.POD1_IP, A(W.WEB3_IP, 443))

    def test_connections_spread_over_both_replicas(self):
        for _ in range(6):
            r = self.world.curl_from("p1", "https://allowed.test/", W.WEB_IP)
            self.assertEqual((r.rc, r.status), (0, 200), r)
        recs = self.agent_flows(self.a1, 6)
        used = [r.get("upstream") for r in recs]
        self.assertEqual(set(used), set(CENTRALS), "round-robin over both answers: %s" % used)

    def test_forged_header_from_an_untrusted_peer_is_refused_before_reading(self):
        forged = _proxy_v2(N.POD1_IP, 40000, W.WEB_IP, 80) + b"GET / HTTP/1.1\r\nHost: allowed.test\r\n\r\n"
        before = self.world.nginx_requests()
        r = self.world.raw_from("inet", N.CENTRAL1_IP, N.CENTRAL_PORT, forged)
        self.assertIn(r["closed"], ("eof", "reset"), r)
        self.assertEqual(r["received"], b"", r)
        rec = self.c1.log.wait(W.match(event="flow", rule="builtin:untrusted-peer"), since=self.since(self.c1))
        self.assertRecord(rec, decision="deny", close="denied", dst=None, upstream=None)
        self.assertTrue(rec["src"].startswith("198.18.0."), "src is the peer, not the forged pod: %s" % rec)
        self.assertEqual(self.world.nginx_requests(), before, "nothing reached the upstream")

    def test_trusted_peer_without_a_valid_header_is_closed_malformed(self):
        cases = [
            ("no header", b"GET / HTTP/1.1\r\nHost: allowed.test\r\n\r\n", "no PROXY header"),
            ("bad version", b"\r\n\r\n\x00\r\nQUIT\n\x31\x11\x00\x0c" + bytes(12), "version"),
            ("LOCAL", b"\r\n\r\n\x00\r\nQUIT\n\x20\x00\x00\x00", "LOCAL"),
            ("v1 UNKNOWN", b"PROXY UNKNOWN\r\nGET / HTTP/1.1\r\n\r\n", "without TCP addresses"),
            ("silent", b"", "timeouts.sniff"),
        ]
        for what, payload, reason in cases:
            with self.subTest(what=what):
                mark = self.c1.log.mark()
                before = self.world.nginx_requests()
                r = self.world.raw_from("n1", N.CENTRAL1_IP, N.CENTRAL_PORT, payload, wait=5)
                self.assertIn(r["closed"], ("eof", "reset"), r)
                self.assertEqual(r["received"], b"", r)
                rec = self.c1.log.wait(W.match(event="flow", close="malformed"), since=mark,
                                       what="malformed record")
                self.assertRecord(rec, decision="deny", rule="builtin:malformed", dst=None, upstream=None)
                self.assertTrue(rec["src"].startswith(N.NODE1_IP + ":"), rec)
                self.assertIn(reason, rec.get("reason", ""), rec)
                self.assertEqual(self.world.nginx_requests(), before, "nothing reached the upstream")
                self.assertEqual(self.c1.log.find(W.match(event="open"), mark), [])

    def test_v1_header_and_request_in_one_write(self):
        # The bytes after the header, read with it, are sniffed and replayed.
        payload = (b"PROXY TCP4 %s %s 40000 80\r\n" % (N.POD1_IP.encode(), W.WEB_IP.encode()) +
                   b"GET / HTTP/1.1\r\nHost: allowed.test\r\nConnection: close\r\n\r\n")
        r = self.world.raw_from("n1", N.CENTRAL1_IP, N.CENTRAL_PORT, payload)
        self.assertTrue(r["received"].startswith(b"HTTP/1.1 200"), r)
        self.assertIn(b"server=198.18.0.10 host=allowed.test", r["received"])
        self.assertLess(r["seconds"], 1.5, "answered without waiting for the sniff deadline: %s" % r)
        rec = self.c1.log.wait(W.match(event="flow", src=A(N.POD1_IP, 40000)), since=self.since(self.c1))
        self.assertRecord(rec, decision="allow", rule="p1-web", proto="http", host="allowed.test",
                          dst=A(W.WEB_IP, 80))


class FailoverTest(NodesTest):

    def test_killing_a_replica_moves_new_flows_to_the_other(self):
        # Warm both up, then kill c1 outright (no drain: like a lost pod).
        for _ in range(2):
            self.assertEqual(self.world.curl_from("p1", "https://allowed.test/", W.WEB_IP).rc, 0)
        warm = self.agent_flows(self.a1, 2)
        self.assertEqual({r.get("upstream") for r in warm}, set(CENTRALS), warm)
        self.c1.proc.send_signal(signal.SIGKILL)
        self.c1.proc.wait(timeout=10)
        mark = self.a1.log.mark()
        m0 = self.a1.metrics()
        for i in range(6):
            r = self.world.curl_from("p1", "https://allowed.test/", W.WEB_IP)
            self.assertEqual((r.rc, r.status), (0, 200), "connection %d after the kill: %s" % (i, r))
        recs = self.a1.log.wait(W.match(event="flow"), since=mark, count=6)
        self.assertEqual({r.get("upstream") for r in recs}, {CENTRALS[1]}, recs)
        self.assertTrue(all(r.get("close") == "eof" for r in recs), recs)
        # The first one found c1 refusing and moved on within the same pod
        # connection; later ones skipped it.
        refused = self.a1.metrics().sum("egressd_upstream_connect_failures_total", reason="refused") - \
            m0.sum("egressd_upstream_connect_failures_total", reason="refused")
        self.assertGreaterEqual(refused, 1)
        self.assertLessEqual(refused, 2, "a refusing replica is skipped for new connections")


class BlackholeTest(NodesTest):

    def test_no_replica_answering_fails_fast(self):
        # Black-hole the centrals' port in the core router: connects time out.
        core = self.world.core
        rule = ["FORWARD", "-p", "tcp", "--dport", str(N.CENTRAL_PORT), "-j", "DROP"]
        W.run(["ip", "netns", "exec", core, "iptables", "-I"] + rule)
        try:
            mark = self.a2.log.mark()
            t0 = time.monotonic()
            r = self.world.curl_from("p2", "https://other.test/", W.WEB2_IP, timeout=15)
            elapsed = time.monotonic() - t0
            self.assertNotEqual(r.rc, 0, r)
            self.assertLess(elapsed, CONNECT_TIMEOUT + 1.0, "the pod must not hang: %.2fs" % elapsed)
            rec = self.a2.log.wait(W.match(event="flow"), since=mark)
            self.assertRecord(rec, decision="forward", close="upstream_connect_failed")
            self.assertIn(rec.get("upstream"), CENTRALS, rec)
        finally:
            W.run(["ip", "netns", "exec", core, "iptables", "-D"] + rule)


class NodeRulesTest(NodesTest):
    """The shipped node-rule script (k8s/scripts/egressd-node-rules.sh), as
    the DaemonSet runs it: idempotent, cluster range exempt, QUIC refused,
    removed cleanly and reinstalled."""

    def rules(self, node):
        out = self.world._ns(self.world.ns[node], "sh", "-c", "iptables -t nat -S; iptables -t filter -S").stdout
        return sorted(line for line in out.splitlines() if "EGRESSD" in line)

    def test_install_again_changes_nothing(self):
        before = self.rules("n1")
        self.assertTrue(any("REDIRECT" in r and "--to-ports %d" % N.AGENT_PORT in r for r in before), before)
        self.assertEqual(sum(1 for r in before if r.startswith("-A PREROUTING")), 1, before)
        self.world.node_rules("n1", "install", "--pod-cidr", "10.200.101.0/24")
        self.world.node_rules("n1", "install", "--pod-cidr", "10.200.101.0/24")
        self.assertEqual(self.rules("n1"), before)
        self.assertEqual(self.world.node_rules("n1", "status").returncode, 0)
        r = self.world.curl_from("p1", "https://allowed.test/", W.WEB_IP)
        self.assertEqual((r.rc, r.status), (0, 200), r)
        self.assertForwarded(self.agent_flows(self.a1, 1), N.POD1_IP, A(W.WEB_IP, 443))

    def test_cluster_range_is_not_redirected(self):
        # A pod reaching a central directly stays direct (exempt range), so
        # the central sees the pod itself, which it does not trust.
        forged = _proxy_v2(N.POD1_IP, 40000, W.WEB_IP, 80) + b"GET / HTTP/1.1\r\nHost: allowed.test\r\n\r\n"
        r = self.world.raw_from("p1", N.CENTRAL1_IP, N.CENTRAL_PORT, forged)
        self.assertIn(r["closed"], ("eof", "reset"), r)
        self.assertEqual(r["received"], b"", r)
        rec = self.c1.log.wait(W.match(event="flow", rule="builtin:untrusted-peer"), since=self.since(self.c1))
        self.assertTrue(rec["src"].startswith(N.POD1_IP + ":"), "the pod's own address: %s" % rec)
        self.assertEqual(self.a1.log.find(W.match(event="flow"), self.since(self.a1)), [],
                         "the agent never saw it")

    def test_quic_is_refused_so_clients_fall_back_to_tcp(self):
        code = r"""
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.settimeout(3)
s.connect((sys.argv[1], int(sys.argv[2])))
s.send(b"\xc0quic-initial")
try:
    s.recv(100)
    print("answered")
except ConnectionRefusedError:
    print("refused")
except socket.timeout:
    print("timeout")
"""
        out = {}
        for port in (443, 53):
            p = self.world.run_in("p1", [W.PYTHON, "-c", code, W.WEB_IP, str(port)], timeout=15)
            out[port] = p.stdout.decode().strip()
        # 443: the node's REJECT; 53: passes the node (dnsmasq answers or
        # the inet host refuses: either way not our rule).
        self.assertEqual(out[443], "refused", out)
        counters = self.world._ns(self.world.ns["n1"], "iptables", "-t", "filter", "-L", "EGRESSD-QUIC", "-v",
                                  "-x", "-n").stdout
        hits = [int(line.split()[0]) for line in counters.splitlines() if "dpt:443" in line]
        self.assertEqual(hits, [1], counters)

    def test_remove_then_install_again(self):
        self.world.node_rules("n1", "remove")
        try:
            self.assertEqual(self.rules("n1"), [])
            self.assertNotEqual(self.world.node_rules("n1", "status", check=False).returncode, 0)
            # Without the rules the pod's connection goes straight out: the
            # agent records nothing (the router lets it through here).
            mark = self.a1.log.mark()
            r = self.world.curl_from("p1", "http://allowed.test/", W.WEB_IP)
            self.assertEqual((r.rc, r.status), (0, 200), r)
            time.sleep(0.3)
            self.assertEqual(self.a1.log.find(W.match(event="flow"), mark), [])
        finally:
            self.world.node_rules("n1", "install", "--pod-cidr", "10.200.101.0/24")
        r = self.world.curl_from("p1", "http://allowed.test/", W.WEB_IP)
        self.assertEqual((r.rc, r.status), (0, 200), r)
        self.assertForwarded(self.agent_flows(self.a1, 1), N.POD1_IP, A(W.WEB_IP, 80))

    def test_bad_arguments_are_refused_without_touching_the_rules(self):
        before = self.rules("n1")
        for args in (["install"], ["install", "--pod-cidr", "10.0.0.0/8", "--port", "x"], ["frobnicate"],
                     ["install", "--pod-cidr"]):
            with self.subTest(args=args):
                p = self.world._ns(self.world.ns["n1"], "sh", N.NODE_RULES, *args, check=False)
                self.assertEqual(p.returncode, 2, p)
        self.assertEqual(self.rules("n1"), before)


def _proxy_v2(src_ip, src_port, dst_ip, dst_port):
    """A PROXY v2 header (INET, STREAM), as a node agent writes it."""
    import socket
    import struct
    return (b"\r\n\r\n\x00\r\nQUIT\n\x21\x11\x00\x0c" + socket.inet_aton(src_ip) + socket.inet_aton(dst_ip) +
            struct.pack(">HH", src_port, dst_port))
