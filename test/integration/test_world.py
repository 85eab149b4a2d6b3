"""The world itself, without egressd: routing, servers, DNS, crafted clients,
interception rules, teardown. If these fail, no gateway test means anything."""

import hashlib
import json
import os
import subprocess
import unittest

import harness
import world as W


def setUpModule():
    harness.module_world(interception=None)


def tearDownModule():
    harness.close_world()


class WorldTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.world = harness.current_world()

    def diagnostics(self):
        return "---- nginx error log ----\n%s\n---- dnsmasq log ----\n%s\n---- servers ----\n%s" % (
            self.world.tail("nginx-error.log"), self.world.tail("dnsmasq.log"), self.world.tail("servers.err"))

    def test_https_names_and_addresses(self):
        for ip in (W.WEB_IP, W.WEB2_IP, W.WEB_IP6):
            r = self.world.curl("https://allowed.test/", ip=ip)
            self.assertEqual((r.rc, r.status), (0, 200), r)
            self.assertEqual(r.body, ("server=%s host=allowed.test\n" % ip).encode(), r)
            self.assertEqual(r.headers.get("x-server-addr"), ip, r)
        for name in ("x.star.test", "a.b.deep.test", "www.allowed.test", "denied.test"):
            r = self.world.curl("https://%s/" % name, ip=W.WEB_IP)
            self.assertEqual((r.rc, r.status), (0, 200), r)

    def test_plain_http(self):
        r = self.world.curl("http://allowed.test/", ip=W.WEB3_IP)
        self.assertEqual((r.rc, r.status), (0, 200), r)
        self.assertEqual(r.body, b"server=198.18.0.12 host=allowed.test\n")

    def test_big_file_checksum(self):
        sha = self.world.ensure_big_file()
        dest = self.world.path("big.download")
        r = self.world.curl("https://allowed.test/big.bin", ip=W.WEB_IP, output=dest, timeout=60)
        self.assertEqual((r.rc, r.status), (0, 200), r)
        with open(dest, "rb") as f:
            self.assertEqual(hashlib.sha256(f.read()).hexdigest(), sha)
        os.unlink(dest)

    def test_slow_file_is_slow(self):
        r = self.world.client("tls", "--dst", W.addr(W.WEB_IP, 443), "--sni", "allowed.test", "--ca",
                              self.world.ca, "--path", "/slow/blob")
        self.assertEqual(r["status"], 200, r)
        self.assertEqual(r["sha256"], self.world.slow_sha256)
        self.assertGreater(r["elapsed_ms"], 1500, "limit_rate must make /slow/ take seconds: %s" % r)

    def test_dns_answers(self):
        cases = [("allowed.test", "A", 0, [W.WEB_IP]), ("allowed.test", "AAAA", 0, [W.WEB_IP6]),
                 ("a.b.deep.test", "A", 0, [W.WEB_IP]),
                 ("www.allowed.test", "AAAA", 0, [W.WEB_IP6]), ("z.deep.test", "A", 3, []), ("private.test", "A", 0, [W.PRIVATE_IP]),
                 ("metadata.test", "A", 0, [W.METADATA_IP]), ("res.test", "AAAA", 0, []),
                 ("nope.test", "A", 3, [])]
        # From gw, where egressd resolves.
        args = ["dns", "--server", W.DNS_IP]
        for name, qtype, _, _ in cases:
            args += ["--query", "%s:%s" % (name, qtype)]
        results = self.world.client(*args, ns=self.world.gw)["results"]
        for (name, qtype, rcode, answers), r in zip(cases, results):
            with self.subTest(name=name, qtype=qtype):
                self.assertTrue(r["id_ok"])
                self.assertEqual((r["rcode"], r["answers"]), (rcode, answers), r)

    def test_echo_and_banner(self):
        for ip in (W.ECHO_IP, W.ECHO_IP6):
            r = self.world.client("raw", "--dst", W.addr(ip, W.ECHO_PORT), "--send-hex", b"ping\n".hex(), "--shut-wr")
            self.assertEqual((r["recv"], r["closed"]), ("ping\n", "eof"), r)
        r = self.world.client("banner", "--dst", W.addr(W.BANNER_IP, W.BANNER_PORT))
        self.assertEqual(r["banner"], W.BANNER.decode(), r)
        self.assertLess(r["latency_ms"], 200, r)
        self.assertEqual(r["reply"], "221 bye\r\n", r)

    def test_crafted_hellos_reach_a_real_server(self):
        # The builder's hellos are acceptable to OpenSSL, so a gateway test
        # that sees no ServerHello through egressd blames egressd, not them.
        for extra in ([], ["--ech"], ["--alpn", "h2,http/1.1"], ["--byte-delay", "0.001"]):
            with self.subTest(extra=extra):
                r = self.world.client("hello", "--dst", W.addr(W.WEB_IP, 443), "--sni", "allowed.test",
                                      "--first-record", *extra)
                self.assertTrue(r["handshake"], r)
        for extra in (["--no-sni"], ["--sni", "AlLoWeD.TeSt."]):
            with self.subTest(extra=extra):
                r = self.world.client("hello", "--dst", W.addr(W.WEB_IP, 443), "--first-record", *extra)
                self.assertTrue(r["handshake"], r)
        r = self.world.client("tls", "--dst", W.addr(W.WEB_IP, 443), "--sni", "allowed.test", "--ca", self.world.ca,
                              "--dribble", "0.001")
        self.assertEqual(r["status"], 200, r)

    def test_held_and_concurrent_clients(self):
        p = self.world.client_popen("hold", "--dst", W.addr(W.ECHO_IP, W.ECHO_PORT), "--defer")
        self.assertEqual(json.loads(p.stdout.readline()), {"ready": True})
        p.stdin.write(b"go\n")
        p.stdin.flush()
        first = json.loads(p.stdout.readline())
        self.assertTrue(first["echo_ok"], first)
        out, _ = p.communicate(b"close\n", timeout=20)
        self.assertEqual(json.loads(out)["closed"], "eof")

        p = self.world.client_popen("many", "--dst", W.addr(W.WEB_IP, 443), "--sni", "allowed.test",
                                    "--ca", self.world.ca, "--n", "50")
        held = json.loads(p.stdout.readline())
        self.assertEqual((held["ok"], held["held"]), (50, 50), held)
        out, _ = p.communicate(b"close\n", timeout=30)
        self.assertEqual(json.loads(out.decode().strip().splitlines()[-1])["ok"], 50)

    def test_source_addresses(self):
        r = self.world.client("raw", "--src", W.POD_IP2, "--dst", W.addr(W.ECHO_IP, W.ECHO_PORT),
                              "--send-hex", b"x".hex(), "--shut-wr")
        self.assertTrue(r["local"].startswith(W.POD_IP2 + ":"), r)

    def test_interception_rules_catch_pod_traffic(self):
        # Nothing listens on 15001/15002 in gw: an intercepted connection is
        # refused, so curl fails with 7 where it succeeded without the rules.
        try:
            for mode in ("redirect", "tproxy"):
                with self.subTest(mode=mode):
                    self.world.set_interception(mode)
                    # REDIRECT to a closed port is refused (7); TPROXY
                    # without a listening socket drops the SYN (28).
                    for ip in (W.WEB_IP, W.WEB_IP6):
                        r = self.world.curl("http://allowed.test/", ip=ip, timeout=2)
                        self.assertEqual(r.rc, 7 if mode == "redirect" else 28, r)
        finally:
            self.world.set_interception(None)
        r = self.world.curl("http://allowed.test/", ip=W.WEB_IP)
        self.assertEqual(r.status, 200, r)


class TeardownTest(unittest.TestCase):
    def netns(self):
        return subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout

    def test_world_removes_everything(self):
        w = W.World("redirect")
        with w:
            names = (w.pod, w.gw, w.inet)
            pids = [p.pid for p in w.procs.values()]
            for n in names:
                self.assertIn(n, self.netns())
        listing = self.netns()
        for n in names:
            self.assertNotIn(n, listing)
        for pid in pids:
            self.assertFalse(os.path.exists("/proc/%d" % pid) and
                             open("/proc/%d/stat" % pid).read().split()[2] != "Z", "pid %d survived" % pid)
        self.assertFalse(os.path.exists(w.dir))

    def test_failure_during_start_cleans_up(self):
        w = W.World("redirect")
        original = w._start_servers

        def boom():
            original()
            raise RuntimeError("injected")

        w._start_servers = boom
        with self.assertRaises(RuntimeError):
            with w:
                pass
        listing = self.netns()
        self.assertNotIn(w.pod, listing)
        self.assertNotIn(w.inet, listing)
        self.assertEqual(w.procs, {})

    def test_stale_namespaces_of_dead_runs_are_removed(self):
        p = subprocess.Popen(["true"])
        p.wait()
        stale = "%s%dx1-pod" % (W.PREFIX, p.pid)
        subprocess.run(["ip", "netns", "add", stale], check=True)
        try:
            W.remove_stale()
            self.assertNotIn(stale, self.netns())
        finally:
            subprocess.run(["ip", "netns", "del", stale], capture_output=True)
