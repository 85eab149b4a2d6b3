"""The TPROXY variant: mangle PREROUTING TPROXY to :15002 with policy routing;
the original destination is the accepted socket's local address."""

import harness
import world as W

A = W.addr


def setUpModule():
    harness.module_world("tproxy")


def tearDownModule():
    harness.close_world()


class TproxyTest(harness.GatewayTest):
    rules = [
        {"name": "web", "to": [{"host": "allowed.test", "ports": [443]}]},
        {"name": "echo", "to": [{"cidr": W.ECHO_IP + "/32", "ports": [W.ECHO_PORT]},
                                {"cidr": W.ECHO_IP6 + "/128", "ports": [W.ECHO_PORT]}]},
        {"name": "v6-web", "to": [{"cidr": W.WEB_IP6 + "/128", "ports": [443]}]},
    ]

    def test_allowed(self):
        r = self.world.curl("https://allowed.test/", ip=W.WEB_IP)
        self.assertEqual((r.rc, r.status, r.body), (0, 200, b"server=198.18.0.10 host=allowed.test\n"), r)
        rec = self.flow(host="allowed.test", dst=A(W.WEB_IP, 443))
        self.assertDecision(rec, "allow", "web", close="eof", proto="tls")
        self.assertRecord(rec, listener="tproxy", upstream=A(W.WEB_IP, 443), integrity="verify")
        self.assertTrue(rec["src"].startswith(W.POD_IP + ":"), rec)

    def test_denied(self):
        r = self.world.curl("https://denied.test/", ip=W.WEB3_IP)
        self.assertEqual(r.rc, 35, r)
        rec = self.flow(host="denied.test", dst=A(W.WEB3_IP, 443))
        self.assertDecision(rec, "deny", "default", close="denied", proto="tls")
        m1 = self.gw.metrics()
        reply = self.world.client("hello", "--dst", A(W.WEB_IP, 443), "--sni", "nope.test")
        self.assertAccessDenied(reply)
        rec = self.flow(src=reply["local"])
        self.assertDecision(rec, "deny", "default", close="denied", m0=m1)

    def test_original_destination_is_checked(self):
        # allowed.test resolves to .10; the client dialled .11: only a
        # gateway that sees the real original destination can deny this.
        r = self.world.curl("https://allowed.test/", ip=W.WEB2_IP)
        self.assertEqual(r.rc, 35, r)
        rec = self.flow(host="allowed.test", dst=A(W.WEB2_IP, 443))
        self.assertDecision(rec, "deny", "builtin:integrity", close="denied")

    def test_raw_tcp(self):
        r = self.world.client("raw", "--dst", A(W.ECHO_IP, W.ECHO_PORT), "--send-hex", b"tp\n".hex(), "--shut-wr")
        self.assertEqual(r["recv"], "tp\n", r)
        rec = self.flow(src=r["local"])
        self.assertDecision(rec, "allow", "echo", close="eof", proto="tcp")

    def test_ipv6(self):
        r = self.world.curl("https://allowed.test/", ip=W.WEB_IP6, extra=["-6"])
        self.assertEqual((r.rc, r.status), (0, 200), r)
        self.assertEqual(r.headers.get("x-server-addr"), W.WEB_IP6, r)
        rec = self.flow(host="allowed.test", dst=A(W.WEB_IP6, 443))
        self.assertDecision(rec, "allow", "web", close="eof", proto="tls")
        self.assertRecord(rec, listener="tproxy6")
