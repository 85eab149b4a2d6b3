"""Hostile and heavy clients: byte-by-byte hellos, malformed and garbage
bytes, slowloris, a 64 MiB transfer, hundreds of concurrent flows."""

import hashlib
import json
import os
import time

import harness
import world as W

A = W.addr


def setUpModule():
    harness.module_world("redirect")


def tearDownModule():
    harness.close_world()


class RobustnessTest(harness.GatewayTest):
    rules = [
        {"name": "web", "to": [{"host": "allowed.test", "ports": [443, 80]}]},
        {"name": "echo", "to": [{"cidr": W.ECHO_IP + "/32", "ports": [W.ECHO_PORT]}]},
    ]

    def allowed_curl_works(self):
        r = self.world.curl("https://allowed.test/", ip=W.WEB_IP)
        self.assertEqual((r.rc, r.status), (0, 200), "an ordinary flow beside the hostile one: %s" % r)

    def start_client(self, *args):
        p = self.world.client_popen(*args)
        self.addCleanup(lambda: p.poll() is None and p.kill())
        return p

    def finish_client(self, p, timeout=30):
        out, err = p.communicate(timeout=timeout)
        self.assertEqual(p.returncode, 0, err)
        return json.loads(out.decode().strip().splitlines()[-1])

    def test_client_hello_byte_by_byte(self):
        # The first flight (Python's ClientHello, ~517 bytes) one byte per
        # segment, 1 ms apart (well inside the 2 s sniff timeout): the
        # sniffer must keep asking for more.
        r = self.world.client("tls", "--dst", A(W.WEB_IP, 443), "--sni", "allowed.test", "--ca", self.world.ca,
                              "--dribble", "0.001")
        self.assertEqual((r["status"], r["error"]), (200, None), r)
        self.assertEqual(r["body"], "server=198.18.0.10 host=allowed.test\n")
        rec = self.flow(src=r["local"])
        self.assertDecision(rec, "allow", "web", close="eof", proto="tls")
        self.assertRecord(rec, host="allowed.test")

    def test_malformed_client_hello_closed_others_unaffected(self):
        p = self.start_client("hello", "--dst", A(W.WEB_IP, 443), "--malformed", "--byte-delay", "0.01")
        self.allowed_curl_works()
        reply = self.finish_client(p)
        self.assertFalse(reply["handshake"], reply)
        self.assertIn(reply["closed"], ("eof", "reset"), reply)
        rec = self.flow(src=reply["local"])
        self.assertDecision(rec, "deny", "builtin:malformed", close="malformed")
        self.assertNotIn("upstream", rec)

    def test_garbage_is_raw_tcp_and_denied(self):
        # Bytes that are neither TLS nor HTTP: a `tcp` flow, judged by
        # policy; no cidr rule covers 198.18.0.10:443, so default denies.
        garbage = b"\x00\xffgarbage\x01\x02" + os.urandom(64)
        p = self.start_client("raw", "--dst", A(W.WEB_IP, 443), "--send-hex", garbage.hex())
        self.allowed_curl_works()
        r = self.finish_client(p)
        self.assertEqual(r["recv"], "", r)
        self.assertIn(r["closed"], ("eof", "reset"), r)
        rec = self.flow(src=r["local"])
        self.assertDecision(rec, "deny", "default", close="denied", proto="tcp")

    def test_malformed_http_gets_400(self):
        m0 = self.gw.metrics()
        for name, head in (
                ("two hosts", b"GET / HTTP/1.1\r\nHost: allowed.test\r\nHost: denied.test\r\n\r\n"),
                ("CL and TE", b"POST / HTTP/1.1\r\nHost: allowed.test\r\nContent-Length: 4\r\n"
                              b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n"),
                ("no host", b"GET / HTTP/1.1\r\nAccept: */*\r\n\r\n")):
            with self.subTest(case=name):
                r = self.world.client("raw", "--dst", A(W.WEB_IP, 80), "--send-hex", head.hex())
                self.assertTrue(r["recv"].startswith("HTTP/1.1 400"), r)
                self.assertIn(r["closed"], ("eof", "reset"), r)
                rec = self.flow(src=r["local"])
                self.assertRecord(rec, close="malformed", decision="deny", rule="builtin:malformed")
        self.assertFlowsDelta(3, m0=m0, listener="transparent", decision="deny", rule="builtin:malformed")

    def test_slowloris_and_silent_clients_hit_the_sniff_timeout(self):
        slow = self.start_client("slow", "--dst", A(W.WEB_IP, 443), "--interval", "0.4")
        silent = self.start_client("raw", "--dst", A(W.WEB_IP, 443), "--send-hex", "", "--read-timeout", "8")
        time.sleep(0.3)
        self.allowed_curl_works()
        for p in (slow, silent):
            r = self.finish_client(p)
            took = r.get("closed_after_ms", r.get("elapsed_ms"))
            self.assertIn(r["closed"], ("eof", "reset"), r)
            self.assertGreaterEqual(took, 1800, "sniff timeout is 2s: %s" % r)
            self.assertLess(took, 4500, "sniff timeout is 2s: %s" % r)
            rec = self.flow(src=r["local"])
            self.assertRecord(rec, decision="deny", rule="builtin:sniff_timeout", close="sniff_timeout")
        self.assertFlowsDelta(2, listener="transparent", decision="deny", rule="builtin:sniff_timeout")

    def test_large_transfer_keeps_its_checksum(self):
        sha = self.world.ensure_big_file()
        dest = self.world.path("big.through-gateway")
        self.addCleanup(lambda: os.path.exists(dest) and os.unlink(dest))
        r = self.world.curl("https://allowed.test/big.bin", ip=W.WEB_IP, output=dest, timeout=120)
        self.assertEqual((r.rc, r.status), (0, 200), r)
        h = hashlib.sha256()
        with open(dest, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                h.update(chunk)
        self.assertEqual(h.hexdigest(), sha, "64 MiB through the gateway arrived changed")
        rec = self.flow(host="allowed.test", timeout=20)
        self.assertDecision(rec, "allow", "web", close="eof", proto="tls")
        self.assertGreater(rec["bytes_down"], W.BIG_SIZE, rec)
        self.assertLess(rec["bytes_down"], W.BIG_SIZE + 256 * 1024, rec)

    def wait_idle(self, timeout=10):
        deadline = time.monotonic() + timeout
        while True:
            active = self.gw.metrics().sum("egressd_flows_active")
            if active == 0:
                return
            if time.monotonic() > deadline:
                self.fail("egressd_flows_active is %s, want 0" % active)
            time.sleep(0.1)

    def concurrent_round(self, n):
        p = self.start_client("many", "--dst", A(W.WEB_IP, 443), "--sni", "allowed.test", "--ca", self.world.ca,
                              "--n", n)
        held = json.loads(p.stdout.readline().decode() or "{}")
        self.assertEqual(held.get("ok"), n, held)
        p.stdin.write(b"close\n")
        p.stdin.flush()
        self.assertEqual(self.finish_client(p, timeout=60)["ok"], n)
        self.wait_idle()

    @harness.skip_under_sanitizer("RSS says nothing of egressd's own memory")
    def test_no_memory_growth_across_rounds_of_load(self):
        # Round 1 warms the allocator, the pools and the DNS cache; later
        # rounds of the same load must not keep growing the process.
        n = 200
        self.concurrent_round(n)
        after_first = self.gw.rss_kib()
        for _ in range(3):
            self.concurrent_round(n)
        growth = self.gw.rss_kib() - after_first
        self.assertLess(growth, 3 * 1024, "RSS grew %d KiB over 3 more rounds of %d flows" % (growth, n))

    def test_several_hundred_concurrent_flows(self):
        n = 300
        self.allowed_curl_works()  # warm: DNS cache, worker state
        self.wait_idle()
        baseline = self.gw.fd_count()
        m0 = self.gw.metrics()
        mark = self.log.mark()
        p = self.start_client("many", "--dst", A(W.WEB_IP, 443), "--sni", "allowed.test", "--ca", self.world.ca,
                              "--n", n)
        held = json.loads(p.stdout.readline().decode() or "{}")
        self.assertEqual(held.get("ok"), n, "every concurrent flow got its answer: %s" % held)
        self.assertEqual(held.get("held"), n, held)
        active = self.gw.metrics().sum("egressd_flows_active", listener="transparent")
        self.assertGreaterEqual(active, n, "all %d flows open at once" % n)
        self.assertGreaterEqual(self.gw.fd_count(), baseline + 2 * n, "two sockets per open flow")
        p.stdin.write(b"close\n")
        p.stdin.flush()
        final = self.finish_client(p, timeout=60)
        self.assertEqual(final["ok"], n, final)
        recs = self.log.wait(W.match(event="flow", host="allowed.test"), since=mark, count=n, timeout=30,
                             what="flow records of the concurrent flows")
        self.assertEqual({(r["decision"], r["rule"]) for r in recs}, {("allow", "web")})
        self.assertFlowsDelta(n, m0=m0, listener="transparent", decision="allow", rule="web")
        self.wait_idle()
        deadline = time.monotonic() + 10
        while self.gw.fd_count() > baseline and time.monotonic() < deadline:
            time.sleep(0.1)
        self.assertLessEqual(self.gw.fd_count(), baseline, "egressd's fds back to the baseline")
