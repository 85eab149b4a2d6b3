"""Decisions through the REDIRECT listener: TLS, HTTP, raw TCP, names,
integrity, guard, sources, IPv6. Each case checks what the client saw, the
flow record, and egressd_flows_total."""

import re

import harness
import world as W

A = W.addr


def setUpModule():
    harness.module_world("redirect")


def tearDownModule():
    harness.close_world()


RULES = [
    {"name": "web", "to": [{"host": "allowed.test", "ports": [443, 80]}]},
    {"name": "star", "to": [{"host": "*.star.test", "ports": [443]}]},
    {"name": "deep", "to": [{"host": "**.deep.test", "ports": [443]}]},
    {"name": "resolver", "to": [{"host": "res.test", "ports": [443], "destination": "resolve"}]},
    {"name": "internal", "to": [{"host": "private.test", "ports": [443]}, {"host": "metadata.test", "ports": [80]}]},
    {"name": "pod-a-only", "from": [W.POD_IP + "/32", W.POD_IP6 + "/128"],
     "to": [{"host": "src.test", "ports": [443]}]},
    {"name": "echo", "to": [{"cidr": W.ECHO_IP + "/32", "ports": [W.ECHO_PORT]},
                            {"cidr": W.ECHO_IP6 + "/128", "ports": [W.ECHO_PORT]}]},
    {"name": "smtp", "to": [{"cidr": W.BANNER_IP + "/32", "ports": [W.BANNER_PORT]}]},
    # fd00::/8 is private (fc00::/7): a host-matched IPv6 flow passes the
    # guard only with an allow cidr inside the range covering address and port.
    {"name": "v6-web", "to": [{"cidr": W.WEB_IP6 + "/128", "ports": [443]}]},
    {"name": "block-denied", "action": "deny", "to": [{"host": "denied.test", "ports": [443, 80]}]},
]

TIME_RE = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")


class PolicyTest(harness.GatewayTest):
    rules = RULES

    def hello(self, dst, *args):
        return self.world.client("hello", "--dst", dst, *args)

    # ---- TLS -------------------------------------------------------------------

    def test_tls_allowed_name(self):
        r = self.world.curl("https://allowed.test/", ip=W.WEB_IP)
        self.assertEqual((r.rc, r.status, r.body), (0, 200, b"server=198.18.0.10 host=allowed.test\n"), r)
        rec = self.flow(host="allowed.test", dst=A(W.WEB_IP, 443))
        self.assertDecision(rec, "allow", "web", close="eof", proto="tls")
        self.assertRecord(rec, listener="transparent", integrity="verify", upstream=A(W.WEB_IP, 443), ech=False)
        self.assertTrue(rec["src"].startswith(W.POD_IP + ":"), rec)
        self.assertRegex(rec["time"], TIME_RE)
        self.assertGreater(rec["bytes_up"], 200, rec)
        self.assertGreater(rec["bytes_down"], 200, rec)
        self.assertIsInstance(rec["duration_ms"], int)
        self.assertIn("allowed.test", rec.get("reason", ""), rec)
        opened = self.log.find(W.match(event="open", src=rec["src"]), self.mark)
        self.assertEqual(len(opened), 1, "one open record for an allowed flow: %s" % opened)
        self.assertRecord(opened[0], time=rec["time"], decision="allow", rule="web", dst=rec["dst"])

    def test_tls_denied_by_deny_rule(self):
        r = self.world.curl("https://denied.test/", ip=W.WEB3_IP)
        self.assertEqual(r.rc, 35, r)  # curl: TLS handshake failed (the alert)
        rec = self.flow(host="denied.test")
        self.assertDecision(rec, "deny", "block-denied", close="denied", proto="tls")
        self.assertNotIn("upstream", rec)
        self.assertEqual(self.log.find(W.match(event="open", src=rec["src"]), self.mark), [],
                         "a denied flow has no open record")
        m1 = self.gw.metrics()
        reply = self.hello(A(W.WEB3_IP, 443), "--sni", "denied.test")
        self.assertAccessDenied(reply)
        self.assertIn(reply["closed"], ("eof", "reset"), reply)
        self.assertEqual(reply["recv_hex"][:14], "1503" + reply["recv_hex"][4:6] + "00020231", reply)
        rec = self.flow(src=reply["local"])
        self.assertDecision(rec, "deny", "block-denied", close="denied", m0=m1)

    def test_tls_denied_by_default(self):
        reply = self.hello(A(W.WEB_IP, 443), "--sni", "nope.test")
        self.assertAccessDenied(reply)
        rec = self.flow(src=reply["local"])
        self.assertRecord(rec, host="nope.test", dst=A(W.WEB_IP, 443))
        self.assertDecision(rec, "deny", "default", close="denied", proto="tls")

    def test_exact_and_wildcard_names(self):
        cases = [
            ("x.star.test", "star"), ("a.b.star.test", None), ("star.test", None),
            ("x.deep.test", "deep"), ("a.b.deep.test", "deep"), ("deep.test", None),
            ("www.allowed.test", None),
        ]
        for name, rule in cases:
            with self.subTest(name=name):
                m0 = self.gw.metrics()
                mark = self.log.mark()
                r = self.world.curl("https://%s/" % name, ip=W.WEB_IP)
                rec = self.log.wait(W.match(event="flow", host=name), since=mark, what="flow for " + name)
                if rule:
                    self.assertEqual((r.rc, r.status), (0, 200), r)
                    self.assertDecision(rec, "allow", rule, close="eof", m0=m0)
                else:
                    self.assertEqual(r.rc, 35, r)
                    self.assertDecision(rec, "deny", "default", close="denied", m0=m0)

    def test_names_compare_case_insensitively_without_trailing_dot(self):
        reply = self.hello(A(W.WEB_IP, 443), "--sni", "AlLoWeD.TeSt.", "--first-record")
        self.assertTrue(reply["handshake"], reply)
        rec = self.flow(src=reply["local"], timeout=15)
        self.assertDecision(rec, "allow", "web")

    def test_alpn_is_recorded(self):
        reply = self.hello(A(W.WEB_IP, 443), "--sni", "allowed.test", "--alpn", "h2,http/1.1", "--first-record")
        self.assertTrue(reply["handshake"], reply)
        rec = self.flow(src=reply["local"])
        self.assertRecord(rec, alpn=["h2", "http/1.1"])

    def test_sni_at_an_address_the_name_does_not_resolve_to(self):
        r = self.world.curl("https://allowed.test/", ip=W.WEB2_IP)  # DNS says .10
        self.assertEqual(r.rc, 35, r)
        rec = self.flow(host="allowed.test", dst=A(W.WEB2_IP, 443))
        self.assertDecision(rec, "deny", "builtin:integrity", close="denied", proto="tls")

    def test_destination_resolve_connects_to_the_resolved_address(self):
        r = self.world.curl("https://res.test/", ip=W.WEB2_IP)  # client says .11, DNS says .10
        self.assertEqual((r.rc, r.status), (0, 200), r)
        self.assertEqual(r.headers.get("x-server-addr"), W.WEB_IP, "the server that answered: %s" % r)
        rec = self.flow(host="res.test")
        self.assertDecision(rec, "allow", "resolver", close="eof")
        self.assertRecord(rec, dst=A(W.WEB2_IP, 443), upstream=A(W.WEB_IP, 443), integrity="resolve")

    def test_invalid_names(self):
        for sni in (b"bad_name.test", b"a\x00b.test", b"sp ace.test", b"a..test", b"x" * 64 + b".test",
                    b"caf\xc3\xa9.test", b".".join([b"a" * 60] * 5) + b".test"):
            with self.subTest(sni=sni):
                m0 = self.gw.metrics()
                reply = self.hello(A(W.WEB_IP, 443), "--sni-hex", sni.hex())
                self.assertAccessDenied(reply)
                rec = self.flow(src=reply["local"])
                self.assertDecision(rec, "deny", "builtin:invalid-name", close="denied", m0=m0)

    def test_no_sni(self):
        reply = self.hello(A(W.WEB_IP, 443), "--no-sni")
        self.assertAccessDenied(reply)
        rec = self.flow(src=reply["local"])
        self.assertDecision(rec, "deny", "builtin:no-sni", close="denied", proto="tls")
        self.assertNotIn("host", rec)

    def test_ech_judges_the_outer_name(self):
        reply = self.hello(A(W.WEB_IP, 443), "--sni", "allowed.test", "--ech", "--first-record")
        self.assertTrue(reply["handshake"], reply)
        rec = self.flow(src=reply["local"])
        self.assertDecision(rec, "allow", "web")
        self.assertRecord(rec, ech=True, host="allowed.test")
        m1 = self.gw.metrics()
        reply = self.hello(A(W.WEB3_IP, 443), "--sni", "denied.test", "--ech")
        self.assertAccessDenied(reply)
        rec = self.flow(src=reply["local"])
        self.assertDecision(rec, "deny", "block-denied", m0=m1)
        self.assertRecord(rec, ech=True)

    def test_guard_private_address(self):
        reply = self.hello(A(W.PRIVATE_IP, 443), "--sni", "private.test")
        self.assertAccessDenied(reply)
        rec = self.flow(src=reply["local"])
        self.assertDecision(rec, "deny", "builtin:guard", close="denied", proto="tls")

    def test_guard_metadata_address(self):
        r = self.world.curl("http://metadata.test/latest/meta-data/", ip=W.METADATA_IP)
        self.assertEqual(r.status, 403, r)
        self.assertIn(b"builtin:guard", r.body)
        rec = self.flow(host="metadata.test")
        self.assertDecision(rec, "deny", "builtin:guard", close="denied", proto="http")
        self.assertRecord(rec, dst=A(W.METADATA_IP, 80))

    # ---- HTTP ------------------------------------------------------------------

    def test_http_host_allowed(self):
        r = self.world.curl("http://allowed.test/", ip=W.WEB_IP)
        self.assertEqual((r.rc, r.status, r.body), (0, 200, b"server=198.18.0.10 host=allowed.test\n"), r)
        rec = self.flow(host="allowed.test", dst=A(W.WEB_IP, 80))
        self.assertDecision(rec, "allow", "web", close="eof", proto="http")

    def test_http_host_denied(self):
        for host, ip, rule in (("denied.test", W.WEB3_IP, "block-denied"), ("nope.test", W.WEB_IP, "default")):
            with self.subTest(host=host):
                m0 = self.gw.metrics()
                mark = self.log.mark()
                r = self.world.curl("http://%s/" % host, ip=ip)
                self.assertEqual((r.rc, r.status), (0, 403), r)
                self.assertEqual(r.headers.get("connection", "").lower(), "close", r)
                body = r.body.decode("utf-8", "replace")
                self.assertEqual(body.count("\n"), 1, "a one-line body: %r" % body)
                self.assertIn(host, body)
                self.assertIn(rule, body)
                rec = self.log.wait(W.match(event="flow", host=host), since=mark)
                self.assertDecision(rec, "deny", rule, close="denied", proto="http", m0=m0)

    # ---- raw TCP -----------------------------------------------------------------

    def test_raw_tcp_by_cidr_and_port(self):
        r = self.world.client("raw", "--dst", A(W.ECHO_IP, W.ECHO_PORT), "--send-hex", b"ping\n".hex(), "--shut-wr")
        self.assertEqual((r["recv"], r["closed"]), ("ping\n", "eof"), r)
        rec = self.flow(src=r["local"])
        self.assertDecision(rec, "allow", "echo", close="eof", proto="tcp")
        self.assertRecord(rec, dst=A(W.ECHO_IP, W.ECHO_PORT), bytes_up=5, bytes_down=5, host=None)

    def test_raw_tcp_other_port_closed(self):
        r = self.world.client("raw", "--dst", A(W.ECHO_IP, W.ECHO_PORT_DENIED), "--send-hex", b"ping\n".hex())
        self.assertEqual(r["recv"], "", r)
        self.assertIn(r["closed"], ("eof", "reset"), r)
        rec = self.flow(src=r["local"])
        self.assertDecision(rec, "deny", "default", close="denied", proto="tcp")

    def test_server_first_protocol(self):
        r = self.world.client("banner", "--dst", A(W.BANNER_IP, W.BANNER_PORT))
        self.assertEqual(r["banner"], W.BANNER.decode(), r)
        self.assertLess(r["latency_ms"], 200, "no host entry can match port 2525: decided at once: %s" % r)
        self.assertEqual(r["reply"], "221 bye\r\n", r)
        rec = self.flow(src=r["local"])
        self.assertDecision(rec, "allow", "smtp", proto="tcp")

    # ---- sources -----------------------------------------------------------------

    def test_source_rules(self):
        r = self.world.curl("https://src.test/", ip=W.WEB_IP, src=W.POD_IP)
        self.assertEqual((r.rc, r.status), (0, 200), r)
        rec = self.flow(host="src.test")
        self.assertDecision(rec, "allow", "pod-a-only")
        m1 = self.gw.metrics()
        mark = self.log.mark()
        r = self.world.curl("https://src.test/", ip=W.WEB_IP, src=W.POD_IP2)
        self.assertEqual(r.rc, 35, r)
        rec = self.log.wait(W.match(event="flow", host="src.test"), since=mark)
        self.assertTrue(rec["src"].startswith(W.POD_IP2 + ":"), rec)
        self.assertDecision(rec, "deny", "default", close="denied", m0=m1)

    # ---- IPv6 --------------------------------------------------------------------

    def test_ipv6(self):
        r = self.world.curl("https://allowed.test/", ip=W.WEB_IP6, extra=["-6"])
        self.assertEqual((r.rc, r.status), (0, 200), r)
        self.assertEqual(r.headers.get("x-server-addr"), W.WEB_IP6, r)
        rec = self.flow(host="allowed.test", dst=A(W.WEB_IP6, 443))
        self.assertDecision(rec, "allow", "web", close="eof", proto="tls")
        self.assertRecord(rec, listener="transparent6", upstream=A(W.WEB_IP6, 443))
        self.assertTrue(rec["src"].startswith("[%s]:" % W.POD_IP6), rec)

        m1 = self.gw.metrics()
        r = self.world.curl("https://denied.test/", ip=W.WEB3_IP6, extra=["-6"])
        self.assertEqual(r.rc, 35, r)
        rec = self.flow(host="denied.test", dst=A(W.WEB3_IP6, 443))
        # fd00::/8 is private and no cidr lifts WEB3_IP6: the guard is named
        # before the deny rule (rule 7's precedence).
        self.assertDecision(rec, "deny", "builtin:guard", close="denied", m0=m1)

        m2 = self.gw.metrics()
        r = self.world.client("raw", "--dst", A(W.ECHO_IP6, W.ECHO_PORT), "--send-hex", b"six\n".hex(), "--shut-wr")
        self.assertEqual(r["recv"], "six\n", r)
        rec = self.flow(src=r["local"])
        self.assertDecision(rec, "allow", "echo", proto="tcp", m0=m2)
        self.assertRecord(rec, dst=A(W.ECHO_IP6, W.ECHO_PORT))


class DefaultAllowTest(harness.GatewayTest):
    """`default: allow` lets unknown names through, but never a failed integrity check."""

    rules = [{"name": "web", "to": [{"host": "allowed.test", "ports": [443]}]}]
    default = "allow"

    def test_integrity_failure_denied_even_under_default_allow(self):
        r = self.world.curl("https://allowed.test/", ip=W.WEB2_IP)
        self.assertEqual(r.rc, 35, r)
        rec = self.flow(host="allowed.test", dst=A(W.WEB2_IP, 443))
        self.assertDecision(rec, "deny", "builtin:integrity", close="denied", proto="tls")

    def test_unknown_name_allowed_by_default(self):
        r = self.world.curl("https://nope.test/", ip=W.WEB_IP)
        self.assertEqual((r.rc, r.status), (0, 200), r)
        rec = self.flow(host="nope.test")
        self.assertDecision(rec, "allow", "default", close="eof", proto="tls")
        self.assertNotIn("integrity", rec)


class ClientFirstNonHttpTest(harness.GatewayTest):
    """Contract rule 11: a first line that ends without an HTTP version
    (`EHLO x`, `PING`) is not HTTP — the flow is `tcp` at once, even on a
    port where a host entry makes the gateway read the client's first
    bytes, instead of waiting for timeouts.sniff and being closed."""

    rules = [
        # A host entry on the echo port: names matter there, so the
        # gateway sniffs.
        {"name": "echo-by-name", "to": [{"host": "echo.test", "ports": [W.ECHO_PORT]}]},
        {"name": "echo", "to": [{"cidr": W.ECHO_IP + "/32", "ports": [W.ECHO_PORT]}]},
    ]

    def test_smtp_like_client_is_relayed_at_once_as_tcp(self):
        for first in (b"EHLO client.example\r\n", b"PING\r\n", b"PING\n"):
            with self.subTest(first=first):
                mark = self.log.mark()
                r = self.world.client("raw", "--dst", A(W.ECHO_IP, W.ECHO_PORT), "--send-hex", first.hex(),
                                      "--shut-wr", "--read-timeout", "5")
                self.assertEqual(r["recv"].encode("latin-1"), first, r)
                self.assertLess(r["elapsed_ms"], 1000, "not held until the 2 s sniff timeout: %s" % r)
                rec = self.log.wait(W.match(event="flow", src=r["local"]), since=mark)
                self.assertRecord(rec, decision="allow", rule="echo", proto="tcp", close="eof")


class NamesOnFlowsDecidedAtOnceTest(harness.GatewayTest):
    """Contract rule 11: where no host entry can match, the decision is taken
    at once, and the client's first bytes are still classified as they pass
    (proto and name in the `open` and `flow` records), never delayed and
    never changing the decision; a server that speaks first gets its flow
    recorded as nameless `tcp`, with no added delay."""

    rules = [
        {"name": "web-by-address", "to": [{"cidr": W.WEB_IP + "/32", "ports": [443, 80]}]},
        {"name": "echo", "to": [{"cidr": W.ECHO_IP + "/32", "ports": [W.ECHO_PORT]}]},
        {"name": "smtp", "to": [{"cidr": W.BANNER_IP + "/32", "ports": [W.BANNER_PORT]}]},
    ]

    def records(self, src, mark):
        rec = self.log.wait(W.match(event="flow", src=src), since=mark)
        opened = self.log.find(W.match(event="open", src=src), mark)
        self.assertEqual(len(opened), 1, opened)
        return opened[0], rec

    def test_tls_gets_its_sni(self):
        mark = self.log.mark()
        r = self.world.curl("https://allowed.test/", ip=W.WEB_IP)
        self.assertEqual((r.rc, r.status), (0, 200), r)
        rec = self.log.wait(W.match(event="flow", host="allowed.test"), since=mark)
        opened, rec = self.records(rec["src"], mark)
        for x in (opened, rec):
            self.assertRecord(x, decision="allow", rule="web-by-address", proto="tls", host="allowed.test")
        self.assertTrue(rec.get("alpn"), "the hello's ALPN is recorded: %s" % rec)
        self.assertNotIn("integrity", rec, "a cidr decision has no integrity check: %s" % rec)

    def test_tls_name_the_policy_would_deny_does_not_change_the_decision(self):
        # No host entry can match port 443 here, so even a name no rule
        # names is only recorded: the cidr rule decided.
        mark = self.log.mark()
        r = self.world.curl("https://nope.test/", ip=W.WEB_IP)
        self.assertEqual(r.rc, 0, r)
        rec = self.log.wait(W.match(event="flow", host="nope.test"), since=mark)
        self.assertRecord(rec, decision="allow", rule="web-by-address", proto="tls")

    def test_http_gets_its_host(self):
        mark = self.log.mark()
        r = self.world.curl("http://allowed.test/", ip=W.WEB_IP)
        self.assertEqual((r.rc, r.status), (0, 200), r)
        rec = self.log.wait(W.match(event="flow", host="allowed.test", dst=A(W.WEB_IP, 80)), since=mark)
        opened, rec = self.records(rec["src"], mark)
        for x in (opened, rec):
            self.assertRecord(x, decision="allow", rule="web-by-address", proto="http", host="allowed.test")

    def test_h2c_preface_and_plain_tcp(self):
        preface = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
        for first, proto in ((preface, "h2c"), (b"EHLO client.example\r\n", "tcp"), (b"\x00\x01binary", "tcp")):
            with self.subTest(proto=proto, first=first):
                mark = self.log.mark()
                r = self.world.client("raw", "--dst", A(W.ECHO_IP, W.ECHO_PORT), "--send-hex", first.hex(),
                                      "--shut-wr", "--read-timeout", "5")
                self.assertEqual(r["recv"].encode("latin-1"), first, r)
                self.assertLess(r["elapsed_ms"], 1000, r)
                opened, rec = self.records(r["local"], mark)
                for x in (opened, rec):
                    self.assertRecord(x, decision="allow", rule="echo", proto=proto, host=None)
                self.assertRecord(rec, bytes_up=len(first), bytes_down=len(first), close="eof")

    def test_server_first_is_not_delayed_and_stays_nameless(self):
        mark = self.log.mark()
        r = self.world.client("banner", "--dst", A(W.BANNER_IP, W.BANNER_PORT))
        self.assertEqual(r["banner"], W.BANNER.decode(), r)
        self.assertLess(r["latency_ms"], 200, r)
        self.assertEqual(r["reply"], "221 bye\r\n", r)
        opened, rec = self.records(r["local"], mark)
        for x in (opened, rec):
            self.assertRecord(x, decision="allow", rule="smtp", proto="tcp", host=None)
