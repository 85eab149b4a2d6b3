"""Faults around the gateway: upstreams that reset, black-hole or never
answer, DNS servers that are down, slow or lying, a client stopped in the
middle of a 64 MiB download. Every case accounts for each connection its
clients opened (accounting.py: one `flow` record, an `open` record when let
through, byte counts within what the two ends saw), checks the close reason
and the metrics the contract names, and that egressd's fds, pipes and RSS
are back to where they were before the case.

The misbehaving peers are fault_peers.py, run in inet on 198.18.0.20
(TCP 7100-7102, DNS on 5300); ports 7103 (black-holed by iptables in gw)
and 7104 (nothing listens) have no server.
"""

import itertools
import json
import os
import signal
import subprocess
import time
import unittest

import accounting as ACC
import harness
import world as W

A = W.addr
HERE = os.path.dirname(os.path.abspath(__file__))
PEERS = os.path.join(HERE, "fault_peers.py")

FAULT_IP = W.ECHO_IP
RST_DOWN, RST_UP, SILENT, BLACKHOLE, CLOSED = 7100, 7101, 7102, 7103, 7104
FAULT_DNS = "%s:5300" % FAULT_IP

_names = itertools.count(1)


def setUpModule():
    w = harness.module_world("redirect")
    ready = w.path("fault-peers.ready")
    w._popen("fault-peers", w.inet, [W.PYTHON, PEERS, "serve", "--ip", FAULT_IP, "--log", w.path("fault-peers.log"),
                                     "--ready-file", ready])
    deadline = time.monotonic() + 15
    while not os.path.exists(ready):
        if w.procs["fault-peers"].poll() is not None or time.monotonic() > deadline:
            raise RuntimeError("fault_peers.py did not start:\n" + w.tail("fault-peers.err"))
        time.sleep(0.05)


def tearDownModule():
    harness.close_world()


# ---- the checker itself ----------------------------------------------------------

def _flow(src, decision="allow", up=10, down=20, close="eof", t="t1"):
    return {"event": "flow", "src": src, "decision": decision, "rule": "r", "bytes_up": up, "bytes_down": down,
            "close": close, "time": t}


def _open(src, decision="allow", t="t1"):
    return {"event": "open", "src": src, "decision": decision, "rule": "r", "time": t}


class AccountingCheckerTest(unittest.TestCase):
    """accounting.check() on synthetic ledgers and records: it must fail."""

    def ledger(self, *entries):
        led = ACC.Ledger()
        for e in entries:
            led.add(**e)
        return led

    def one(self, problems, fragment):
        self.assertEqual(len(problems), 1, problems)
        self.assertIn(fragment, problems[0])

    def test_all_accounted(self):
        led = self.ledger(dict(local="10.0.0.1:1000", sent=10, received=20, allowed=True),
                          dict(local="[FD00::2]:2000", sent=5, received=0, allowed=False),
                          dict(local="[::ffff:10.0.0.3]:3000", sent=10, received=20))
        recs = [_open("10.0.0.1:1000"), _flow("10.0.0.1:1000"), _flow("[fd00::2]:2000", "deny", 0, 0, "denied"),
                _open("10.0.0.3:3000", t="t3"), _flow("10.0.0.3:3000", t="t3"), {"event": "request"}]
        self.assertEqual(ACC.check(led, recs), [])
        self.assertEqual(len(led), 3)

    def test_missing_flow(self):
        led = self.ledger(dict(local="10.0.0.1:1000", sent=10, received=20))
        self.one(ACC.check(led, [_open("10.0.0.1:1000")]), "no flow record")

    def test_duplicate_flow(self):
        led = self.ledger(dict(local="10.0.0.1:1000", sent=10, received=20))
        recs = [_open("10.0.0.1:1000"), _flow("10.0.0.1:1000"), _flow("10.0.0.1:1000")]
        self.one(ACC.check(led, recs), "2 flow records")

    def test_extra_flow(self):
        led = self.ledger(dict(local="10.0.0.1:1000", sent=10, received=20))
        recs = [_open("10.0.0.1:1000"), _flow("10.0.0.1:1000"), _flow("10.0.0.9:9")]
        self.one(ACC.check(led, recs), "no client connection explains")
        self.assertEqual(ACC.check(led, recs, allow_extra=True), [])

    def test_missing_or_late_open(self):
        led = self.ledger(dict(local="10.0.0.1:1000", sent=10, received=20, allowed=True))
        self.one(ACC.check(led, [_flow("10.0.0.1:1000")]), "0 open record(s)")
        self.assertTrue(ACC.check(led, [_flow("10.0.0.1:1000"), _open("10.0.0.1:1000")]))
        self.one(ACC.check(led, [_open("10.0.0.1:1000", t="t0"), _flow("10.0.0.1:1000")]), "disagrees")
        # None is due when the upstream connect failed.
        self.assertEqual(ACC.check(led, [_flow("10.0.0.1:1000", close="upstream_connect_failed")]), [])

    def test_denied_with_open_or_bytes(self):
        led = self.ledger(dict(local="10.0.0.1:1000", sent=10, received=0, allowed=False))
        self.one(ACC.check(led, [_open("10.0.0.1:1000", "deny"), _flow("10.0.0.1:1000", "deny", 0, 0)]),
                 "1 open record(s) before the flow record, want 0")
        self.one(ACC.check(led, [_flow("10.0.0.1:1000", "deny", 10, 0)]), "denied flow relayed bytes")
        problems = ACC.check(led, [_open("10.0.0.1:1000"), _flow("10.0.0.1:1000")])
        self.assertIn("expected denied", problems[0])

    def test_http1_closed_by_a_later_denied_request(self):
        # Let through at first (open, allow), ended by a denied request:
        # the flow record says deny/denied and has an upstream.
        led = self.ledger(dict(local="10.0.0.1:1000", sent=None, received=None))
        later = dict(_flow("10.0.0.1:1000", "deny", 40, 90, "denied"), proto="http", upstream="10.9.9.9:80")
        self.assertEqual(ACC.check(led, [_open("10.0.0.1:1000"), later]), [])
        self.one(ACC.check(led, [later]), "0 open record(s) before the flow record, want 1")
        self.one(ACC.check(led, [_open("10.0.0.1:1000", "deny"), later]), "disagrees")
        # Denied at its first request: no upstream, no open record due.
        first = dict(_flow("10.0.0.1:1000", "deny", 0, 0, "denied"), proto="http")
        self.assertEqual(ACC.check(led, [first]), [])
        self.assertIn("want 0", ACC.check(led, [_open("10.0.0.1:1000"), first])[0])

    def test_byte_mismatch(self):
        led = self.ledger(dict(local="10.0.0.1:1000", sent=10, received=21))
        self.one(ACC.check(led, [_open("10.0.0.1:1000"), _flow("10.0.0.1:1000")]), "bytes_down 20, client read 21")
        cut = self.ledger(dict(local="10.0.0.1:1000", sent=9, received=5, exact=False, upstream_sent=19))
        problems = ACC.check(cut, [_open("10.0.0.1:1000"), _flow("10.0.0.1:1000")])
        self.assertEqual(len(problems), 2, problems)
        self.assertIn("more than the client wrote", problems[0])
        self.assertIn("more than the server wrote", problems[1])
        ok = self.ledger(dict(local="10.0.0.1:1000", sent=10, received=20, exact=False, upstream_sent=20))
        self.assertEqual(ACC.check(ok, [_open("10.0.0.1:1000"), _flow("10.0.0.1:1000")]), [])

    def test_assert_accounted_lists_every_problem(self):
        led = self.ledger(dict(local="10.0.0.1:1000", sent=1, received=2), dict(local="10.0.0.2:1000", sent=1,
                                                                                received=2))
        with self.assertRaises(AssertionError) as cm:
            ACC.assert_accounted(self, led, [])
        self.assertIn("2 accounting problem(s)", str(cm.exception))


# ---- fault cases -------------------------------------------------------------------

class FaultTest(harness.GatewayTest):
    """Each case: a Ledger, the records of the case checked against it, and
    the gateway's resources back to the baseline taken at its start."""

    rules = [
        {"name": "faults", "to": [{"cidr": FAULT_IP + "/32", "ports": [W.ECHO_PORT, "7100-7199"]}]},
        {"name": "web", "to": [{"host": "allowed.test", "ports": [80, 443]}]},
    ]
    rss_slack_kib = 4096

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        # Warm the per-worker pipe and buffer pools (kept after use) beyond
        # what one case needs, so the baseline is the steady state.
        p = cls.world.pod_run([W.PYTHON, PEERS, "pump", "--dst", A(FAULT_IP, W.ECHO_PORT), "--n", "8"], timeout=60)
        res = json.loads(p.stdout.decode().strip().splitlines()[-1])
        if res["ok"] != 8:
            raise AssertionError("warm-up echo flows failed: %s %s" % (res, p.stderr.decode()))

    def setUp(self):
        super().setUp()
        self.ledger = ACC.Ledger()
        self.wait_idle()
        self.baseline = ACC.resources(self.gw)

    def wait_idle(self, timeout=10):
        deadline = time.monotonic() + timeout
        while self.gw.metrics().sum("egressd_flows_active") != 0:
            if time.monotonic() > deadline:
                self.fail("egressd_flows_active is not 0")
            time.sleep(0.05)

    def records(self, timeout=10):
        """The case's records, once every ledger connection has its flow record."""
        want = {e.local for e in self.ledger}
        deadline = time.monotonic() + timeout
        while True:
            recs = self.log.records()[self.mark:]
            seen = {ACC.norm_addr(r.get("src")) for r in recs if r.get("event") == "flow"}
            if want <= seen or time.monotonic() > deadline:
                return recs
            time.sleep(0.05)

    def account(self, allow_extra=False):
        """Checks the ledger against the records and the resources against the
        baseline; returns {local: flow record}."""
        recs = self.records()
        ACC.assert_accounted(self, self.ledger, recs, allow_extra=allow_extra)
        self.wait_idle()
        ACC.assert_no_leak(self, self.gw, self.baseline, rss_slack_kib=self.rss_slack_kib)
        return {ACC.norm_addr(r["src"]): r for r in recs if r.get("event") == "flow"}

    def delta(self, name, **labels):
        return self.gw.metrics().sum(name, **labels) - self.m0.sum(name, **labels)

    def wait_delta(self, name, want, timeout=5, **labels):
        deadline = time.monotonic() + timeout
        while True:
            d = self.delta(name, **labels)
            if d == want or time.monotonic() > deadline:
                self.assertEqual(d, want, "%s%s moved by %s, want %s" % (name, labels, d, want))
                return
            time.sleep(0.05)

    def peer_log(self, port, count=1, timeout=5):
        """The fault server's last `count` lines for `port` (written as each
        connection ended)."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                with open(self.world.path("fault-peers.log")) as f:
                    lines = [json.loads(x) for x in f if x.strip()]
            except FileNotFoundError:
                lines = []
            mine = [x for x in lines if x["port"] == port][self._peer_mark.get(port, 0):]
            if len(mine) >= count:
                return mine[-1] if count == 1 else mine
            if time.monotonic() > deadline:
                self.fail("fault server logged %d of %d connections on :%d" % (len(mine), count, port))
            time.sleep(0.05)

    def mark_peers(self):
        try:
            with open(self.world.path("fault-peers.log")) as f:
                lines = [json.loads(x) for x in f if x.strip()]
        except FileNotFoundError:
            lines = []
        self._peer_mark = {}
        for x in lines:
            self._peer_mark[x["port"]] = self._peer_mark.get(x["port"], 0) + 1

    def raw(self, port, data, read_timeout=5.0, ip=FAULT_IP):
        return self.world.client("raw", "--dst", A(ip, port), "--send-hex", data.hex(), "--read-timeout",
                                 read_timeout, timeout=read_timeout + 30)

    def iptables_inet(self, *rule):
        """Inserts an iptables rule in inet for this case (removed on cleanup).
        Not in gw's OUTPUT: a packet dropped there fails the gateway's own
        send() at once (EPERM), which is no black hole."""
        self.world.ns_run(self.world.inet, ["iptables", "-I"] + list(rule), timeout=10).check_returncode()
        self.addCleanup(lambda: self.world.ns_run(self.world.inet, ["iptables", "-D"] + list(rule), timeout=10))


class UpstreamFaultTest(FaultTest):

    def setUp(self):
        super().setUp()
        self.mark_peers()

    def test_upstream_resets_mid_download(self):
        # The server sends 256 KiB of a body, waits until they are
        # acknowledged, then resets: the client sees the end promptly.
        n = 256 * 1024
        req = b"%d\n" % n
        r = self.raw(RST_DOWN, req, read_timeout=5)
        srv = self.peer_log(RST_DOWN)
        self.assertIn(r["closed"], ("eof", "reset"), {k: v for k, v in r.items() if k != "recv"})
        self.assertLess(r["elapsed_ms"], 2500, "the reset reached the client promptly")
        got = len(r["recv"].encode("latin-1"))
        self.assertEqual(srv["wrote"], n)
        self.ledger.add(r["local"], sent=len(req), received=got, allowed=True, exact=False,
                        upstream_received=srv["read"], upstream_sent=srv["wrote"], note="server reset after its body")
        rec = self.account()[r["local"]]
        self.assertDecision(rec, "allow", "faults", close="reset", proto="tcp")
        self.assertEqual(rec["bytes_up"], len(req), rec)

    def test_upstream_resets_mid_upload(self):
        # The client uploads; the server reads 64 KiB, then resets.
        p = self.world.pod_run([W.PYTHON, PEERS, "upload", "--dst", A(FAULT_IP, RST_UP), "--timeout", "8"],
                               timeout=30)
        r = json.loads(p.stdout.decode().strip().splitlines()[-1])
        srv = self.peer_log(RST_UP)
        self.assertIn(r["closed"], ("eof", "reset"), r)
        self.assertLess(r["elapsed_ms"], 3000, "the client saw the reset promptly: %s" % r)
        self.assertGreaterEqual(srv["read"], 64 * 1024, srv)
        self.ledger.add(r["local"], sent=r["sent"], received=r["received"], allowed=True, exact=False,
                        upstream_received=srv["read"], upstream_sent=0, note="server reset during the upload")
        rec = self.account()[r["local"]]
        self.assertDecision(rec, "allow", "faults", close="reset", proto="tcp")

    def test_upstream_black_holed_connect_times_out(self):
        # SYNs to :7103 dropped as they reach inet: timeouts.connect (2 s).
        self.iptables_inet("INPUT", "-p", "tcp", "-d", FAULT_IP, "--dport", str(BLACKHOLE), "-j", "DROP")
        r = self.raw(BLACKHOLE, b"hello\n", read_timeout=8)
        self.assertIn(r["closed"], ("eof", "reset"), r)
        self.assertGreaterEqual(r["elapsed_ms"], 1800, r)
        self.assertLess(r["elapsed_ms"], 4000, "closed within timeouts.connect: %s" % r)
        self.assertEqual(r["recv"], "", r)
        self.ledger.add(r["local"], sent=6, received=0, allowed=True, exact=False, upstream_received=0,
                        upstream_sent=0, note="upstream black-holed")
        rec = self.account()[r["local"]]
        self.assertDecision(rec, "allow", "faults", close="upstream_connect_failed")
        self.assertEqual(rec["bytes_up"], 0, rec)
        self.wait_delta("egressd_upstream_connect_failures_total", 1, reason="timeout")
        self.wait_delta("egressd_upstream_connect_failures_total", 1)

    def test_upstream_refuses(self):
        r = self.raw(CLOSED, b"hello\n", read_timeout=8)
        self.assertIn(r["closed"], ("eof", "reset"), r)
        self.assertLess(r["elapsed_ms"], 1500, "a refused connect ends the flow at once: %s" % r)
        self.ledger.add(r["local"], sent=6, received=0, allowed=True, exact=False, upstream_received=0,
                        upstream_sent=0, note="nothing listens")
        rec = self.account()[r["local"]]
        self.assertDecision(rec, "allow", "faults", close="upstream_connect_failed")
        self.wait_delta("egressd_upstream_connect_failures_total", 1, reason="refused")
        self.wait_delta("egressd_upstream_connect_failures_total", 1)

    def test_upstream_accepts_and_never_answers(self):
        # The client gives up after 1.5 s and closes; only then the flow
        # record is written (the open record came at once).
        r = self.raw(SILENT, b"hello\n", read_timeout=1.5)
        self.assertEqual((r["closed"], r["recv"]), ("timeout", ""), r)
        srv = self.peer_log(SILENT)
        self.assertEqual((srv["read"], srv["how"]), (6, "eof"), srv)
        self.ledger.add(r["local"], sent=6, received=0, allowed=True, upstream_received=6, upstream_sent=0,
                        note="silent server, the client closes")
        rec = self.account()[r["local"]]
        self.assertDecision(rec, "allow", "faults", close="eof", proto="tcp")
        self.assertGreaterEqual(rec["duration_ms"], 1400, rec)

    def test_client_stopped_mid_download_backpressures(self):
        # A client (HTTP/1.1 on :80, so its socket bytes are known exactly)
        # stops itself with SIGSTOP after 4 MiB of the 64 MiB body and stays
        # stopped 3 s: the gateway must stop reading from nginx, not buffer
        # the rest.
        sha = self.world.ensure_big_file()
        p = self.world.pod_popen([W.PYTHON, PEERS, "download", "--dst", A(W.WEB_IP, 80), "--host", "allowed.test",
                                  "--path", "/big.bin", "--stop-after", str(4 << 20)],
                                 stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        self.addCleanup(lambda: p.poll() is None and (p.send_signal(signal.SIGCONT), p.kill()))
        deadline = time.monotonic() + 20
        while _proc_state(p.pid) != "T":
            if p.poll() is not None:
                self.fail("the download ended before it stopped: %s" % (p.communicate(),))
            self.assertLess(time.monotonic(), deadline, "the download did not reach 4 MiB")
            time.sleep(0.01)
        down0 = self.m0.sum("egressd_flow_bytes_total", direction="down")
        peak, down = 0, []
        t0 = time.monotonic()
        while time.monotonic() - t0 < 3.0:
            peak = max(peak, ACC.resources(self.gw)["rss_kib"])
            down.append(self.gw.metrics().sum("egressd_flow_bytes_total", direction="down") - down0)
            time.sleep(0.1)
        self.assertEqual(_proc_state(p.pid), "T", "the client stayed stopped")
        p.send_signal(signal.SIGCONT)
        out, err = p.communicate(timeout=60)
        self.assertEqual(p.returncode, 0, err)
        r = json.loads(out.decode().strip().splitlines()[-1])
        self.assertEqual((r["status"], r["body"], r["sha256"]), (200, W.BIG_SIZE, sha),
                         "64 MiB after a SIGSTOP arrived whole")
        if not harness.SANITIZER:
            self.assertLess(peak, self.baseline["rss_kib"] + 16 * 1024,
                            "RSS while the client was stopped (baseline %d KiB)" % self.baseline["rss_kib"])
        # The relay stalls: the last 1.5 s of the stop moved (next to)
        # nothing, and what it relayed past the client's 4 MiB is what the
        # socket buffers hold, not the rest of the body.
        self.assertLess(down[-1] - down[len(down) // 2], 256 * 1024, "relayed while stopped: %s" % down)
        self.assertLess(down[-1], 32 << 20, "relayed during the stop (client had ~4 MiB): %s" % down)
        self.ledger.add(r["local"], sent=r["sent"], received=r["received"], allowed=True, note="client stopped 3 s")
        rec = self.account()[r["local"]]
        self.assertDecision(rec, "allow", "web", close="eof", proto="http")


def _proc_state(pid):
    try:
        with open("/proc/%d/stat" % pid) as f:
            return f.read().rsplit(")", 1)[1].split()[0]
    except OSError:
        return None


class IdleFaultTest(FaultTest):
    config_overrides = {"timeouts": {"idle": "2s"}}

    def test_silent_upstream_hits_the_idle_timeout(self):
        r = self.raw(SILENT, b"hello\n", read_timeout=8)
        self.assertIn(r["closed"], ("eof", "reset"), r)
        self.assertGreaterEqual(r["elapsed_ms"], 1800, r)
        self.assertLess(r["elapsed_ms"], 5000, "idle timeout is 2 s: %s" % r)
        self.ledger.add(r["local"], sent=6, received=0, allowed=True, note="idle timeout")
        rec = self.account()[r["local"]]
        self.assertDecision(rec, "allow", "faults", close="idle_timeout", proto="tcp")


KINDS = ("ok", "slow", "liar", "qliar", "tc", "tcbad", "ttl0", "flood")


class DnsFaultTest(FaultTest):
    """dns.servers is fault_peers.py's hostile server; every name is new to
    the cache. A flow to 198.18.0.10:80 with Host NAME under a `host` rule
    (destination: verify) is allowed only when an answer for NAME that
    egressd accepted holds 198.18.0.10."""

    rules = [{"name": "names", "to": [{"host": "**.%s.test" % k, "ports": [80]} for k in KINDS]}] + FaultTest.rules
    config_overrides = {"dns": {"servers": [FAULT_DNS], "timeout": "1s"}}

    def name(self, kind):
        return "n%d-%d.%s.test" % (os.getpid(), next(_names), kind)

    def get(self, name, ip=W.WEB_IP):
        req = ("GET / HTTP/1.1\r\nHost: %s\r\nConnection: close\r\n\r\n" % name).encode()
        r = self.raw(80, req, read_timeout=8, ip=ip)
        return req, r

    def expect(self, kind, allowed, result=None, ip=W.WEB_IP):
        """One GET for a fresh name of `kind`; checks the answer, the record,
        the accounting and egressd_dns_queries_total{result}."""
        name = self.name(kind)
        req, r = self.get(name, ip)
        got = r["recv"].encode("latin-1")
        if allowed:
            self.assertTrue(r["recv"].startswith("HTTP/1.1 200"), r)
            self.assertIn("host=%s" % name, r["recv"])
            self.ledger.add(r["local"], sent=len(req), received=len(got), allowed=True, note=name)
        else:
            self.assertTrue(r["recv"].startswith("HTTP/1.1 403"), r)
            self.ledger.add(r["local"], sent=len(req), received=len(got), allowed=False, note=name)
        rec = self.account()[r["local"]]
        self.assertRecord(rec, host=name, proto="http")
        if allowed:
            self.assertDecision(rec, "allow", "names", close="eof")
        else:
            self.assertDecision(rec, "deny", "builtin:integrity")
            self.assertNotIn("upstream", rec, "a denied flow connects nowhere")
        if result is not None:
            self.assertGreaterEqual(self.delta("egressd_dns_queries_total", result=result), 1,
                                    "egressd_dns_queries_total{result=%r}" % result)
        return r, rec

    def test_good_answer_allows(self):
        self.expect("ok", True, "success")

    def test_slow_answer_past_the_timeout_denies(self):
        r, _ = self.expect("slow", False, "timeout")
        self.assertGreaterEqual(r["elapsed_ms"], 900, r)
        self.assertLess(r["elapsed_ms"], 3000, r)

    def test_answer_owned_by_another_name_denies(self):
        self.expect("liar", False, "nodata")

    def test_answer_to_another_question_denies(self):
        self.expect("qliar", False, "timeout")

    def test_truncated_udp_answer_retried_over_tcp(self):
        self.expect("tc", True, "success")

    def test_truncated_answer_and_tcp_closed_denies(self):
        self.expect("tcbad", False, "error")

    def test_ttl_zero_answer_still_allows_its_flow(self):
        self.expect("ttl0", True, "success")

    def test_flood_of_answers(self):
        # 300 A records in one ~4.8 KB datagram, the destination first.
        self.expect("flood", True)
        self.assertTrue(self.gw.alive())

    def test_flood_of_answers_without_the_destination_denies(self):
        self.expect("flood", False, ip=W.WEB2_IP)

    def test_dns_server_unreachable_denies(self):
        # A server that is down: ICMP port unreachable (UDP), RST (TCP): an
        # error at once.
        for proto in ("udp", "tcp"):
            self.iptables_inet("INPUT", "-p", proto, "-d", FAULT_IP, "--dport", "5300", "-j", "REJECT")
        r, _ = self.expect("ok", False, "error")
        self.assertLess(r["elapsed_ms"], 3000, r)

    def test_dns_server_black_holed_denies_after_the_timeout(self):
        for proto in ("udp", "tcp"):
            self.iptables_inet("INPUT", "-p", proto, "-d", FAULT_IP, "--dport", "5300", "-j", "DROP")
        r, _ = self.expect("ok", False, "timeout")
        self.assertGreaterEqual(r["elapsed_ms"], 900, r)
        self.assertLess(r["elapsed_ms"], 3000, r)
