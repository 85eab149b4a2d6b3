"""Plaintext HTTP/1.1 through the REDIRECT listener, request by request
(contract rule 12, "checked per request"): every request on a kept-alive or
pipelined connection is judged on its own Host, a refused one gets the 403
and ends the connection, and nothing after it reaches any origin."""

import hashlib
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


RULES = [
    {"name": "web", "to": [{"host": "allowed.test", "ports": [80]}]},
    {"name": "siblings", "to": [{"host": "*.allowed.test", "ports": [80]}]},
    # other.test resolves to WEB2_IP: on a connection to WEB_IP its
    # integrity check fails.
    {"name": "other", "to": [{"host": "other.test", "ports": [80]}]},
    {"name": "ws", "to": [{"host": "ws.test", "ports": [W.UPGRADE_PORT]}]},
    {"name": "block-denied", "action": "deny", "to": [{"host": "denied.test", "ports": [80, W.UPGRADE_PORT]}]},
]


def origin_hosts(world):
    """Hosts of the requests nginx has logged so far, in order."""
    try:
        with open(world.path("nginx-access.log")) as f:
            return [line.split(" ", 1)[0] for line in f if line.strip()]
    except OSError:
        return []


class Http1PerRequestTest(harness.GatewayTest):
    rules = RULES

    def seq(self, *reqs, pipeline=False, dst=None, timeout=2):
        args = ["http-seq", "--dst", dst or A(W.WEB_IP, 80), "--read-timeout", timeout]
        if pipeline:
            args.append("--pipeline")
        for r in reqs:
            args += ["--req", r]
        return self.world.client(*args)

    def test_keep_alive_allowed_then_denied_host(self):
        before = len(origin_hosts(self.world))
        r = self.seq("GET|allowed.test|/", "GET|a.allowed.test|/", "GET|denied.test|/", "GET|allowed.test|/")
        statuses = [x.get("status") for x in r["responses"]]
        self.assertEqual(statuses, [200, 200, 403], r)
        self.assertEqual(r["responses"][0]["body"], "server=198.18.0.10 host=allowed.test\n")
        self.assertIn("denied by rule block-denied", r["responses"][2]["body"])
        self.assertEqual(r["responses"][2]["headers"].get("connection", "").lower(), "close")
        self.assertIn(r["closed"], ("eof", "reset"), r)
        self.assertEqual(origin_hosts(self.world)[before:], ["allowed.test", "a.allowed.test"],
                         "the denied vhost never saw a byte")
        rec = self.flow(src=r["local"])
        self.assertRecord(rec, decision="deny", rule="block-denied", close="denied", proto="http",
                          host="allowed.test")
        self.assertEqual(rec["hosts"], ["allowed.test", "a.allowed.test", "denied.test"], rec)
        self.assertEqual(self.gw.metrics().sum("egressd_http_requests_total") -
                         self.m0.sum("egressd_http_requests_total"), 3)

    def test_pipelined_requests_stop_at_the_denied_one(self):
        before = len(origin_hosts(self.world))
        r = self.seq("GET|allowed.test|/", "GET|denied.test|/", "GET|allowed.test|/second", pipeline=True)
        self.assertEqual([x.get("status") for x in r["responses"]], [200, 403], r)
        self.assertEqual(origin_hosts(self.world)[before:], ["allowed.test"],
                         "neither the denied request nor the one after it reached nginx")
        rec = self.flow(src=r["local"])
        self.assertRecord(rec, decision="deny", rule="block-denied", close="denied")

    def test_many_pipelined_allowed_requests_keep_their_order(self):
        names = ["n%d.allowed.test" % i for i in range(20)]
        r = self.seq(*["GET|%s|/" % n for n in names], pipeline=True)
        self.assertEqual([x["body"] for x in r["responses"]],
                         ["server=198.18.0.10 host=%s\n" % n for n in names], r)
        self.assertEqual(r["closed"], "timeout", "the connection stays open: %s" % r)

    def test_integrity_is_checked_for_each_new_name(self):
        r = self.seq("GET|allowed.test|/", "GET|other.test|/")
        self.assertEqual([x.get("status") for x in r["responses"]], [200, 403], r)
        rec = self.flow(src=r["local"])
        self.assertRecord(rec, decision="deny", rule="builtin:integrity", close="denied")

    def test_smuggling_shapes_on_a_later_request_get_400(self):
        shapes = {
            "cl+te": "POST|allowed.test|/|Content-Length: 5;;Transfer-Encoding: chunked",
            "two-cl": "POST|allowed.test|/|Content-Length: 0;;Content-Length: 0",
            "te-not-chunked": "POST|allowed.test|/|Transfer-Encoding: gzip",
            "obs-fold": "GET|allowed.test|/|X-A: 1;; folded",
            "two-hosts": "GET|allowed.test|/|Host: denied.test",
        }
        for name, shape in shapes.items():
            with self.subTest(shape=name):
                before = len(origin_hosts(self.world))
                mark = self.log.mark()
                r = self.seq("GET|allowed.test|/", shape, pipeline=True)
                self.assertEqual([x.get("status") for x in r["responses"]], [200, 400], r)
                self.assertEqual(len(origin_hosts(self.world)) - before, 1, "the bad request never reached nginx")
                rec = self.log.wait(W.match(event="flow", src=r["local"]), since=mark)
                self.assertRecord(rec, decision="deny", rule="builtin:malformed", close="malformed")

    def test_head_204_304_and_100_continue(self):
        etag = self.seq("HEAD|allowed.test|/slow/blob")["responses"][0]["headers"]["etag"]
        r = self.seq("HEAD|allowed.test|/slow/blob", "GET|allowed.test|/204",
                     "GET|allowed.test|/slow/blob|If-None-Match: " + etag, "GET|allowed.test|/")
        self.assertEqual([x.get("status") for x in r["responses"]], [200, 204, 304, 200], r)
        self.assertEqual(r["responses"][0]["headers"].get("content-length"), str(W.SLOW_SIZE))
        self.assertEqual(r["responses"][3]["body"], "server=198.18.0.10 host=allowed.test\n")
        # A client that waits for 100 Continue before its body.
        data = os.urandom(300_000)
        path = self.world.path("upload-100.bin")
        with open(path, "wb") as f:
            f.write(data)
        p = self.world.pod_run(["curl", "-sS", "--http1.1", "--max-time", "15", "--expect100-timeout", "10",
                                "-H", "Expect: 100-continue", "-T", path, "-o", "/dev/null", "-w", "%{http_code}",
                                "--resolve", "allowed.test:80:" + W.WEB_IP, "http://allowed.test/put/continue.bin"])
        self.assertEqual(p.stdout.decode(), "201", p.stderr)
        with open(self.world.path("www", "put", "continue.bin"), "rb") as f:
            self.assertEqual(hashlib.sha256(f.read()).hexdigest(), hashlib.sha256(data).hexdigest())

    def test_chunked_upload_and_large_download_keep_their_checksums(self):
        data = os.urandom(5 * 1024 * 1024 + 17)
        p = self.world.pod_run(["curl", "-sS", "--http1.1", "--max-time", "30", "-H", "Transfer-Encoding: chunked",
                                "-T", "-", "-o", "/dev/null", "-w", "%{http_code}", "--resolve",
                                "allowed.test:80:" + W.WEB_IP, "http://allowed.test/put/chunked.bin"], input=data)
        self.assertEqual(p.stdout.decode(), "201", p.stderr)
        with open(self.world.path("www", "put", "chunked.bin"), "rb") as f:
            self.assertEqual(hashlib.sha256(f.read()).hexdigest(), hashlib.sha256(data).hexdigest())
        want = self.world.ensure_big_file()
        p = self.world.pod_run(["sh", "-c", "curl -sS --http1.1 --max-time 60 --resolve allowed.test:80:%s "
                                "http://allowed.test/big.bin | sha256sum" % W.WEB_IP], timeout=90)
        self.assertEqual(p.stdout.decode().split()[0], want, p.stderr)

    def test_websocket_upgrade_allowed_then_relayed_as_bytes(self):
        r = self.world.client("raw", "--dst", A(W.ECHO_IP, W.UPGRADE_PORT), "--send-hex",
                              (b"GET /chat HTTP/1.1\r\nHost: ws.test\r\nUpgrade: websocket\r\n"
                               b"Connection: Upgrade\r\n\r\nframes after the upgrade").hex(),
                              "--shut-wr", "--read-timeout", "3")
        self.assertTrue(r["recv"].startswith("HTTP/1.1 101 "), r)
        self.assertTrue(r["recv"].endswith("\r\n\r\nframes after the upgrade"), r)
        rec = self.flow(src=r["local"])
        self.assertRecord(rec, decision="allow", rule="ws", proto="http", host="ws.test", close="eof")

    def test_websocket_upgrade_to_a_denied_name_on_a_later_request(self):
        r = self.seq("GET|ws.test|/", "GET|denied.test|/chat|Upgrade: websocket;;Connection: Upgrade",
                     dst=A(W.ECHO_IP, W.UPGRADE_PORT))
        self.assertEqual([x.get("status") for x in r["responses"]], [200, 403], r)
        self.assertEqual(r["responses"][0]["body"], "upgrade-server host=ws.test\n")

    def test_h2c_upgrade_is_served_over_http1(self):
        r = self.seq("GET|allowed.test|/|Upgrade: h2c;;HTTP2-Settings: AAMAAABkAAQAAP__;;"
                     "Connection: Upgrade, HTTP2-Settings", "GET|allowed.test|/")
        self.assertEqual([x.get("status") for x in r["responses"]], [200, 200], r)


class Http1DrainTest(harness.GatewayTest):
    """SIGTERM: a kept-alive connection's next response says
    `Connection: close` and the connection ends after it."""

    rules = RULES
    config_overrides = {"timeouts": {"sniff": "2s", "connect": "2s", "idle": "60s", "drain_delay": "2s",
                                     "drain": "3s"}}

    def test_keep_alive_response_during_drain_closes(self):
        # One connection, then a second request on it after SIGTERM.
        s = self.world.pod_popen([W.PYTHON, "-c", DRAIN_CLIENT % (W.WEB_IP,)], stdin=subprocess.PIPE,
                                 stdout=subprocess.PIPE)
        first = s.stdout.readline().decode()
        self.assertIn("200", first)
        self.gw.signal(signal.SIGTERM)
        time.sleep(0.3)
        s.stdin.write(b"go\n")
        s.stdin.flush()
        second, _ = s.communicate(timeout=20)
        self.assertIn("status=200", second.decode())
        self.assertIn("connection=close", second.decode())
        self.assertIn("closed=yes", second.decode())
        self.assertEqual(self.gw.proc.wait(timeout=15), 0)


# Runs in the pod: one request, waits for "go" on stdin, a second request on
# the same connection; prints what the second response said.
DRAIN_CLIENT = r"""
import socket, sys
s = socket.create_connection(("%s", 80), timeout=10)
def get():
    s.sendall(b"GET / HTTP/1.1\r\nHost: allowed.test\r\n\r\n")
    buf = b""
    while b"\r\n\r\n" not in buf:
        buf += s.recv(4096)
    head, _, body = buf.partition(b"\r\n\r\n")
    fields = dict(l.split(": ", 1) for l in head.decode().split("\r\n")[1:])
    n = int(fields.get("Content-Length", "0"))
    while len(body) < n:
        body += s.recv(4096)
    return head.decode().split()[1], fields.get("Connection", "")
print(*get(), flush=True)
sys.stdin.readline()
status, conn = get()
closed = s.recv(1) == b""
print("status=%%s connection=%%s closed=%%s" %% (status, conn.lower(), "yes" if closed else "no"), flush=True)
"""
