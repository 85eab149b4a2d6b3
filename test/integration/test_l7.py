"""Plaintext HTTP/1.1 through the REDIRECT listener, request by request
(contract rule 12, "checked per request"): every request on a kept-alive or
pipelined connection is judged on its own Host, a refused one gets the 403
and ends the connection, and nothing after it reaches any origin."""

import hashlib
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

    def test_requests_reach_the_origin_unchanged(self):
        """No header reordered, renamed or re-cased, duplicates kept; the
        origin (servers.py, GET /raw) answers with the head it received."""
        head = (b"GET /raw HTTP/1.1\r\nhost: ws.test\r\nX-MiXed-Case: a  b\r\nAccept: */*\r\n"
                b"x-dup: 1\r\nX-Dup: 2\r\nConnection: keep-alive\r\n\r\n")
        r = self.world.client("raw", "--dst", A(W.ECHO_IP, W.UPGRADE_PORT), "--send-hex", (head + head).hex(),
                              "--shut-wr", "--read-timeout", "3")
        got = r["recv"].encode("latin-1")
        self.assertEqual(got.count(b"200 OK"), 2, got)
        self.assertEqual(got.count(head), 2, "both requests arrived byte for byte: %r" % got)

    def test_chunked_request_keeps_its_trailers(self):
        """A chunked body is re-chunked on the way, but its trailer fields
        arrive; the data too."""
        head = b"POST /raw HTTP/1.1\r\nHost: ws.test\r\nTransfer-Encoding: chunked\r\n\r\n"
        body = b"5\r\nhello\r\n6\r\n world\r\n0\r\nX-Checksum: abc\r\nX-Other: 1\r\n\r\n"
        r = self.world.client("raw", "--dst", A(W.ECHO_IP, W.UPGRADE_PORT), "--send-hex", (head + body).hex(),
                              "--shut-wr", "--read-timeout", "3")
        got = r["recv"].encode("latin-1")
        self.assertIn(head, got)
        self.assertTrue(got.endswith(b"0\r\nX-Checksum: abc\r\nX-Other: 1\r\n\r\n"), got)
        data = got[got.index(head) + len(head):]
        chunks, rest = b"", data
        while True:
            size_line, _, rest = rest.partition(b"\r\n")
            n = int(size_line, 16)
            if n == 0:
                break
            chunks += rest[:n]
            rest = rest[n + 2:]
        self.assertEqual(chunks, b"hello world")

    def test_chunked_response_trailers_and_a_head_answer_without_body(self):
        reqs = (b"HEAD /chunked HTTP/1.1\r\nHost: ws.test\r\n\r\n"
                b"GET /chunked HTTP/1.1\r\nHost: ws.test\r\n\r\n"
                b"GET / HTTP/1.1\r\nHost: ws.test\r\n\r\n")
        r = self.world.client("raw", "--dst", A(W.ECHO_IP, W.UPGRADE_PORT), "--send-hex", reqs.hex(),
                              "--shut-wr", "--read-timeout", "3")
        got = r["recv"].encode("latin-1")
        head_answer = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
        self.assertTrue(got.startswith(head_answer + b"HTTP/1.1 200 OK\r\n"),
                        "the HEAD answer has no body, not even a last chunk: %r" % got)
        self.assertIn(b"5\r\nhello\r\n0\r\nX-T: 1\r\n\r\nHTTP/1.1 200 OK\r\n", got)
        self.assertTrue(got.endswith(b"upgrade-server host=ws.test\n"), got)

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


# ---- h2c: stream by stream ------------------------------------------------------

H2C_RULES = RULES + [
    {"name": "h2c-web", "to": [{"host": "allowed.test", "ports": [W.H2C_PORT]},
                               {"host": "*.allowed.test", "ports": [W.H2C_PORT]}]},
    {"name": "h2c-block", "action": "deny", "to": [{"host": "denied.test", "ports": [W.H2C_PORT]}]},
]


def h2c_authority(name):
    return "%s:%d" % (name, W.H2C_PORT)


class H2cPerStreamTest(harness.GatewayTest):
    """h2c (prior knowledge) to nghttpd through the REDIRECT listener: each
    stream's :authority is judged on its own; a denied stream gets 403 and
    a `request` record while the other streams go on."""

    rules = H2C_RULES

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.big = os.urandom(6 * 1024 * 1024 + 123)
        with open(cls.world.path("h2c-www", "big.bin"), "wb") as f:
            f.write(cls.big)

    def h2(self, *requests, timeout=20, stdin=None):
        """The mini client (H2_CLIENT) in the pod: one connection, every
        request at once; returns its JSON."""
        args = [W.PYTHON, "-c", H2_CLIENT, A(W.WEB_IP, W.H2C_PORT)]
        for r in requests:
            args += [json.dumps(r)]
        p = self.world.pod_run(args, timeout=timeout)
        self.assertEqual(p.returncode, 0, p.stderr.decode("utf-8", "replace"))
        return json.loads(p.stdout.decode().strip().splitlines()[-1])

    def test_curl_prior_knowledge_to_an_allowed_name(self):
        p = self.world.pod_run(["curl", "-sS", "--http2-prior-knowledge", "--max-time", "10", "-w", "\n%{http_code}",
                                "--resolve", "allowed.test:%d:%s" % (W.H2C_PORT, W.WEB_IP),
                                "http://allowed.test:%d/" % W.H2C_PORT])
        self.assertEqual(p.returncode, 0, p.stderr)
        self.assertEqual(p.stdout.decode(), "h2c origin\n\n200")
        rec = self.flow(dst=A(W.WEB_IP, W.H2C_PORT))
        self.assertRecord(rec, proto="h2c", host="allowed.test", decision="allow", rule="h2c-web", close="eof",
                          upstream=A(W.WEB_IP, W.H2C_PORT), hosts=None)
        opened = self.log.wait(W.match(event="open", src=rec["src"]), since=self.mark)
        self.assertRecord(opened, proto="h2c", host="allowed.test", decision="allow", rule="h2c-web")
        self.assertEqual(self.gw.metrics().sum("egressd_http_requests_total", proto="h2c") -
                         self.m0.sum("egressd_http_requests_total", proto="h2c"), 1)

    def test_concurrent_streams_one_denied(self):
        before = len(self.world.nghttpd_authorities())
        r = self.h2({"authority": h2c_authority("allowed.test")},
                    {"authority": h2c_authority("a.allowed.test")},
                    {"authority": h2c_authority("denied.test")},
                    {"authority": h2c_authority("b.allowed.test"), "path": "/big.bin"},
                    {"authority": h2c_authority("nope.test")})
        s = r["streams"]
        self.assertEqual([s[k]["status"] for k in ("1", "3", "5", "7", "9")], [200, 200, 403, 200, 403], r)
        self.assertEqual(s["1"]["body"], "h2c origin\n")
        self.assertEqual(s["7"]["sha256"], hashlib.sha256(self.big).hexdigest())
        self.assertIn("access to denied.test denied by rule h2c-block", s["5"]["body"])
        self.assertIn("access to nope.test denied by rule default", s["9"]["body"])
        seen = self.world.nghttpd_authorities()[before:]
        self.assertEqual(sorted(seen), sorted([h2c_authority(n) for n in ("allowed.test", "a.allowed.test",
                                                                           "b.allowed.test")]),
                         "the denied authorities never reached the origin")
        rec = self.flow(src=r["local"])
        self.assertRecord(rec, proto="h2c", host="allowed.test", close="eof")
        self.assertEqual(rec["hosts"], ["allowed.test", "a.allowed.test", "denied.test", "b.allowed.test",
                                        "nope.test"], rec)
        reqs = [x for x in self.log.records()[self.mark:] if x.get("event") == "request" and x["src"] == r["local"]]
        self.assertEqual(sorted((x["host"], x["decision"], x["rule"]) for x in reqs),
                         [("denied.test", "deny", "h2c-block"), ("nope.test", "deny", "default")], reqs)
        for x in reqs:
            self.assertRecord(x, proto="h2c", upstream=None, close=None, hosts=None)
        m = self.gw.metrics()
        self.assertEqual(m.sum("egressd_http_requests_total", proto="h2c", decision="deny") -
                         self.m0.sum("egressd_http_requests_total", proto="h2c", decision="deny"), 2)
        self.assertEqual(m.sum("egressd_http_requests_total", proto="h2c", decision="allow") -
                         self.m0.sum("egressd_http_requests_total", proto="h2c", decision="allow"), 3)

    def test_nghttp_streams_on_one_connection(self):
        p = self.world.pod_run(["nghttp", "-v", "-m", "8", "-H", ":authority: " + h2c_authority("allowed.test"),
                                "http://%s/" % A(W.WEB_IP, W.H2C_PORT)], timeout=20)
        self.assertEqual(p.returncode, 0, p.stdout[-2000:])
        self.assertEqual(p.stdout.decode().count(":status: 200"), 8, p.stdout[-2000:])
        p = self.world.pod_run(["nghttp", "-v", "-H", ":authority: " + h2c_authority("denied.test"),
                                "http://%s/" % A(W.WEB_IP, W.H2C_PORT)], timeout=20)
        self.assertIn(":status: 403", p.stdout.decode())
        self.assertIn("denied by rule h2c-block", p.stdout.decode())

    def test_large_download_with_small_windows(self):
        want = hashlib.sha256(self.big).hexdigest()
        p = self.world.pod_run(["sh", "-c", "nghttp -w 12 -W 16 -H ':authority: %s' http://%s/big.bin | sha256sum"
                                % (h2c_authority("allowed.test"), A(W.WEB_IP, W.H2C_PORT))], timeout=90)
        self.assertEqual(p.stdout.decode().split()[0], want, p.stderr)
        # And a request body going up, with trailers, beside a download.
        data = os.urandom(700_000)
        path = self.world.path("h2c-upload.bin")
        with open(path, "wb") as f:
            f.write(data)
        p = self.world.pod_run(["nghttp", "-v", "-w", "14", "-d", path, "--trailer", "x-trailer: yes",
                                "-H", ":authority: " + h2c_authority("allowed.test"),
                                "http://%s/" % A(W.WEB_IP, W.H2C_PORT)], timeout=30)
        self.assertIn(":status: 200", p.stdout.decode(), p.stdout[-2000:])

    def test_authority_and_host_disagreeing_is_refused_on_that_stream(self):
        before = len(self.world.nghttpd_authorities())
        r = self.h2({"authority": h2c_authority("allowed.test"), "host": h2c_authority("denied.test")},
                    {"authority": h2c_authority("allowed.test")},
                    {"authority": h2c_authority("allowed.test"), "host": h2c_authority("ALLOWED.test.")},
                    {"host": h2c_authority("a.allowed.test")},
                    {"authority": "bad_name!.test:%d" % W.H2C_PORT})
        s = r["streams"]
        self.assertEqual([s[k]["status"] for k in ("1", "3", "5", "7", "9")], [400, 200, 200, 200, 403], r)
        self.assertIn(":authority and Host disagree", s["1"]["body"])
        self.assertIn("builtin:invalid-name", s["9"]["body"])
        self.assertEqual(len(self.world.nghttpd_authorities()) - before, 2, "only the good streams reached nghttpd")
        rec = self.flow(src=r["local"])
        self.assertRecord(rec, proto="h2c", decision="deny", rule="builtin:invalid-name", close="eof")

    def test_a_connection_without_requests_is_an_undecided_flow(self):
        preface = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + b"\x00\x00\x00\x04\x00\x00\x00\x00\x00"
        r = self.world.client("raw", "--dst", A(W.WEB_IP, W.H2C_PORT), "--send-hex", preface.hex(),
                              "--shut-wr", "--read-timeout", "3")
        self.assertTrue(r["recv"].encode("latin-1").startswith(b"\x00\x00"), r)  # our SETTINGS
        rec = self.flow(src=r["local"])
        self.assertRecord(rec, proto="h2c", decision="deny", rule="builtin:eof", close="eof", host=None)


class H2cDrainTest(harness.GatewayTest):
    """SIGTERM: an h2c connection with a stream in flight gets GOAWAY naming
    that stream; the stream finishes; then the connection ends."""

    rules = H2C_RULES
    config_overrides = {"timeouts": {"sniff": "2s", "connect": "2s", "idle": "60s", "drain_delay": "1s",
                                     "drain": "15s"}}

    def test_goaway_and_the_stream_in_flight_finishes(self):
        data = os.urandom(1024 * 1024)
        with open(self.world.path("h2c-www", "drain.bin"), "wb") as f:
            f.write(data)
        # The client holds its window at 0 (its response cannot finish)
        # until it has seen GOAWAY, then opens it.
        req = {"authority": h2c_authority("allowed.test"), "path": "/drain.bin"}
        p = self.world.pod_popen([W.PYTHON, "-c", H2_CLIENT, A(W.WEB_IP, W.H2C_PORT), "--hold-until-goaway",
                                  json.dumps(req)], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        # The stream is open when its response head arrives.
        line = p.stdout.readline().decode()
        self.assertIn("headers", line, p.stderr.read() if not line else line)
        self.gw.signal(signal.SIGTERM)
        self.assertEqual(json.loads(p.stdout.readline())["goaway"], {"last_stream_id": 1, "error": 0})
        out, err = p.communicate(timeout=30)
        self.assertTrue(out.strip(), err)
        r = json.loads(out.decode().strip().splitlines()[-1])
        self.assertEqual(r["goaway"], {"last_stream_id": 1, "error": 0}, r)
        self.assertEqual(r["streams"]["1"]["status"], 200, r)
        self.assertEqual(r["streams"]["1"]["sha256"], hashlib.sha256(data).hexdigest(), r)
        self.assertEqual(r["closed"], True, r)
        self.assertEqual(self.gw.proc.wait(timeout=20), 0)
        rec = self.flow(src=r["local"])
        self.assertRecord(rec, proto="h2c", decision="allow", rule="h2c-web", close="eof")


def start_held_stream(test, file_name):
    """An h2c GET of a 512 KiB file through the gateway whose client never
    reads the body (the stream stays open); returns the client process once
    the response headers have arrived."""
    with open(test.world.path("h2c-www", file_name), "wb") as f:
        f.write(os.urandom(512 * 1024))
    req = {"authority": h2c_authority("allowed.test"), "path": "/" + file_name}
    p = test.world.pod_popen([W.PYTHON, "-c", H2_CLIENT, A(W.WEB_IP, W.H2C_PORT), "--hold-forever",
                              json.dumps(req)], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    line = p.stdout.readline().decode()
    if "headers" not in line:
        p.kill()
        test.fail("no response headers: %s" % (line or p.stderr.read()))
    return p


class H2cDrainDeadlineTest(harness.GatewayTest):
    """A stream that does not finish within timeouts.drain: the flow is
    stopped at the drain's end and recorded `drained`."""

    rules = H2C_RULES
    config_overrides = {"timeouts": {"sniff": "2s", "connect": "2s", "idle": "60s", "drain_delay": "1s",
                                     "drain": "2s"}}

    def test_a_stream_still_open_at_the_end_of_the_drain_is_drained(self):
        p = start_held_stream(self, "stuck.bin")
        started = time.monotonic()
        self.gw.signal(signal.SIGTERM)
        self.assertEqual(json.loads(p.stdout.readline())["goaway"], {"last_stream_id": 1, "error": 0})
        out, err = p.communicate(timeout=30)
        r = json.loads(out.decode().strip().splitlines()[-1])
        self.assertTrue(r["closed"], r)
        self.assertEqual(self.gw.proc.wait(timeout=20), 0)
        self.assertLess(time.monotonic() - started, 10)
        rec = self.flow(src=r["local"])
        self.assertRecord(rec, proto="h2c", decision="allow", rule="h2c-web", close="drained")


class H2cRevokeTest(harness.GatewayTest):
    """policy.revoke_on_reload: an h2c connection with a stream in flight to
    a name the new policy denies is closed `revoked`, naming the rule."""

    rules = H2C_RULES
    config_overrides = {"policy": {"revoke_on_reload": True}}

    def test_a_reload_that_denies_the_name_closes_the_connection(self):
        p = start_held_stream(self, "revoked.bin")
        try:
            cfg = json.loads(json.dumps(self.gw.config))
            cfg["policy"]["rules"].insert(0, {"name": "no-more-allowed", "action": "deny",
                                              "to": [{"host": "allowed.test", "ports": [W.H2C_PORT]}]})
            tmp = self.gw.config_path + ".tmp"
            with open(tmp, "w") as f:
                json.dump(cfg, f)
            os.rename(tmp, self.gw.config_path)
            out, err = p.communicate(timeout=15)
        finally:
            if p.poll() is None:
                p.kill()
                p.wait()
        r = json.loads(out.decode().strip().splitlines()[-1])
        self.assertTrue(r["closed"], r)
        rec = self.flow(src=r["local"])
        self.assertRecord(rec, proto="h2c", decision="deny", rule="no-more-allowed", close="revoked")
        self.assertTrue(rec["reason"].startswith("revoked by a reload"), rec)


def h2_frame(kind, flags, stream, payload=b""):
    return len(payload).to_bytes(3, "big") + bytes([kind, flags]) + stream.to_bytes(4, "big") + payload


def h2_literal(name, value):
    """An HPACK literal field without indexing, no Huffman (RFC 7541 §6.2.2)."""
    return b"\x00" + bytes([len(name)]) + name.encode() + bytes([len(value)]) + value.encode()


class H2cIdleTest(harness.GatewayTest):
    """timeouts.idle applies to an h2c connection as a whole: one that
    carried a stream and then stays silent is closed `idle_timeout`."""

    rules = H2C_RULES
    config_overrides = {"timeouts": {"sniff": "2s", "connect": "2s", "idle": "2s", "drain_delay": "1s",
                                     "drain": "3s"}}

    def test_a_silent_connection_is_closed_after_idle(self):
        head = (h2_literal(":method", "GET") + h2_literal(":scheme", "http") + h2_literal(":path", "/") +
                h2_literal(":authority", h2c_authority("allowed.test")))
        first = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + h2_frame(4, 0, 0) + h2_frame(1, 5, 1, head)
        r = self.world.client("raw", "--dst", A(W.WEB_IP, W.H2C_PORT), "--send-hex", first.hex(),
                              "--read-timeout", "10")
        self.assertIn(r["closed"], ("eof", "reset"), r)
        self.assertGreater(r["elapsed_ms"], 1500, r)
        self.assertLess(r["elapsed_ms"], 6000, r)
        self.assertIn("h2c origin", r["recv"])
        rec = self.flow(src=r["local"])
        self.assertRecord(rec, proto="h2c", host="allowed.test", decision="allow", rule="h2c-web",
                          close="idle_timeout")


# A minimal HTTP/2 client (RFC 9113, HPACK RFC 7541) run in the pod, because
# nghttp and curl open one connection per authority: one connection, every
# request on its own stream at once. Requests are JSON objects (authority,
# host, path). It advertises a header table size of 0 so responses use no
# dynamic table, and decodes only :status (Huffman digits included).
# Prints {"streams": {id: {status, body, sha256, rst}}, "goaway", "closed",
# "local"}. --hold-until-goaway: stream window 0 until a GOAWAY arrives
# (prints a line when the first response head is in).
H2_CLIENT = r"""
import hashlib, json, socket, struct, sys
args = sys.argv[1:]
hold = "--hold-until-goaway" in args or "--hold-forever" in args
forever = "--hold-forever" in args
args = [a for a in args if a not in ("--hold-until-goaway", "--hold-forever")]
host, port = args[0].rsplit(":", 1)
reqs = [json.loads(a) for a in args[1:]]
s = socket.create_connection((host, int(port)), timeout=15)
def frame(t, flags, sid, payload=b""):
    return struct.pack(">I", len(payload))[1:] + bytes([t, flags]) + struct.pack(">I", sid) + payload
def lit(name, value):
    n, v = name.encode(), value.encode()
    assert len(n) < 127 and len(v) < 127
    return b"\x00" + bytes([len(n)]) + n + bytes([len(v)]) + v
settings = struct.pack(">HI", 1, 0) + struct.pack(">HI", 4, 0 if hold else 1 << 20)
out = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + frame(4, 0, 0, settings)
out += frame(8, 0, 0, struct.pack(">I", 16 << 20))
streams = {}
for i, r in enumerate(reqs):
    sid = 1 + 2 * i
    block = lit(":method", "GET") + lit(":scheme", "http") + lit(":path", r.get("path", "/"))
    if "authority" in r:
        block += lit(":authority", r["authority"])
    if "host" in r:
        block += lit("host", r["host"])
    out += frame(1, 0x5, sid, block)
    streams[sid] = {"status": None, "body": b"", "rst": None, "done": False}
s.sendall(out)
HUFF = {"00000": "0", "00001": "1", "00010": "2", "011001": "3", "011010": "4", "011011": "5",
        "011100": "6", "011101": "7", "011110": "8", "011111": "9"}
STATIC_STATUS = {8: "200", 9: "204", 10: "206", 11: "304", 12: "400", 13: "404", 14: "500"}
def integer(b, i, prefix):
    v = b[i] & ((1 << prefix) - 1); i += 1
    if v < (1 << prefix) - 1:
        return v, i
    m = 0
    while True:
        v += (b[i] & 0x7f) << m; m += 7; i += 1
        if not b[i - 1] & 0x80:
            return v, i
def string(b, i):
    huff = b[i] & 0x80
    n, i = integer(b, i, 7)
    raw = b[i:i + n]
    if not huff:
        return raw.decode("latin-1"), i + n
    bits, text, code = "".join(format(x, "08b") for x in raw), "", ""
    for c in bits:
        code += c
        if code in HUFF:
            text += HUFF[code]; code = ""
    return text, i + n
def status_of(b):
    i = 0
    while i < len(b):
        c = b[i]
        if c & 0x80:
            idx, i = integer(b, i, 7)
            if idx in STATIC_STATUS:
                return int(STATIC_STATUS[idx])
            continue
        if c & 0xe0 == 0x20:
            _, i = integer(b, i, 5); continue
        prefix = 6 if c & 0x40 else 4
        idx, i = integer(b, i, prefix)
        name = None
        if idx == 0:
            name, i = string(b, i)
        value, i = string(b, i)
        if (name == ":status") or (8 <= idx <= 14):
            return int(value)
    return None
buf, goaway, closed, told = b"", None, False, False
def send(b):
    try:
        s.sendall(b)
    except OSError:
        pass
def pending():
    return any(not x["done"] for x in streams.values())
while pending():
    try:
        chunk = s.recv(65536)
    except socket.timeout:
        break
    except OSError:
        closed = True
        break
    if not chunk:
        closed = True
        break
    buf += chunk
    while len(buf) >= 9:
        n = struct.unpack(">I", b"\x00" + buf[:3])[0]
        if len(buf) < 9 + n:
            break
        t, flags, sid = buf[3], buf[4], struct.unpack(">I", buf[5:9])[0] & 0x7fffffff
        p, buf = buf[9:9 + n], buf[9 + n:]
        st = streams.get(sid)
        if t == 4 and not flags & 1:
            send(frame(4, 1, 0))
        elif t == 6 and not flags & 1:
            send(frame(6, 1, 0, p))
        elif t == 7:
            goaway = {"last_stream_id": struct.unpack(">I", p[:4])[0] & 0x7fffffff,
                      "error": struct.unpack(">I", p[4:8])[0]}
            print(json.dumps({"goaway": goaway}), flush=True)
            if hold and not forever:
                for k in streams:
                    send(frame(8, 0, k, struct.pack(">I", 1 << 20)))
        elif t == 1 and st is not None:
            if flags & 0x8:
                p = p[1:len(p) - p[0]]
            if flags & 0x20:
                p = p[5:]
            code = status_of(p)
            if code is not None and code >= 200:
                st["status"] = code
            if hold and not told:
                told = True
                print(json.dumps({"headers": sid}), flush=True)
            if flags & 1:
                st["done"] = True
        elif t == 0 and st is not None:
            if flags & 0x8:
                p = p[1:len(p) - p[0]]
            st["body"] += p
            if flags & 1:
                st["done"] = True
            elif n:
                send(frame(8, 0, 0, struct.pack(">I", n)) + frame(8, 0, sid, struct.pack(">I", n)))
        elif t == 3 and st is not None:
            st["rst"] = struct.unpack(">I", p)[0]
            st["done"] = True
if hold and not closed:
    s.settimeout(3)
    try:
        while True:
            x = s.recv(65536)
            if not x:
                closed = True
                break
    except (socket.timeout, ConnectionError):
        pass
res = {}
for sid, st in streams.items():
    body = st["body"]
    res[str(sid)] = {"status": st["status"], "rst": st["rst"], "sha256": hashlib.sha256(body).hexdigest(), "len": len(body),
                     "body": body[:300].decode("utf-8", "replace")}
l = s.getsockname()
print(json.dumps({"streams": res, "goaway": goaway, "closed": closed, "local": "%s:%d" % (l[0], l[1])}))
"""
