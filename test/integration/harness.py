"""Shared test-case base: one world per module, one gateway per class.

A module calls `module_world(interception)` from setUpModule and
`close_world()` from tearDownModule. A class sets `rules` (and optionally
`config_overrides`) and gets `cls.gw` (a running Gateway) and `cls.log`.
"""

import json
import os
import shutil
import time
import unittest

import world as W

# Set by run.py from --egressd.
EGRESSD = os.environ.get("EGRESSD")
# "asan"/"tsan" when EGRESSD runs under a sanitizer (run.py sets it): its
# allocator and its speed make memory and timing bounds meaningless.
SANITIZER = None


def skip_under_sanitizer(why, only=("asan", "tsan")):
    """Decorator: skips a test of memory or speed under a sanitizer (those
    named in `only`)."""
    def wrap(fn):
        def run(self, *a, **kw):
            if SANITIZER in only:
                raise unittest.SkipTest("%s under %s" % (why, SANITIZER))
            return fn(self, *a, **kw)
        run.__name__ = fn.__name__
        run.__doc__ = fn.__doc__
        return run
    return wrap

_world = [None]


def module_world(interception="redirect"):
    """Starts the module's world (stops a previous one first)."""
    close_world()
    w = W.World(interception)
    w.start()  # cleans up after itself when it fails
    _world[0] = w
    return w


def close_world():
    if _world[0] is not None:
        _world[0].stop()
        _world[0] = None


def current_world():
    if _world[0] is None:
        raise RuntimeError("no world: setUpModule did not run")
    return _world[0]


class GatewayTest(unittest.TestCase):
    """A class whose tests share one running egressd."""

    rules = []
    default = "deny"
    mode = "enforce"
    config_overrides = {}
    gw = None

    @classmethod
    def make_config(cls, access_log):
        return W.base_config(access_log, cls.rules, interception=current_world().interception or "redirect",
                             default=cls.default, mode=cls.mode, **cls.config_overrides)

    @classmethod
    def setUpClass(cls):
        cls.world = current_world()
        cls.gw = cls.make_gateway()
        cls.place_config()
        try:
            cls.gw.start()
        except BaseException:
            cls.gw.stop()
            raise
        cls.log = cls.gw.log

    @classmethod
    def make_gateway(cls):
        """The egressd these tests run against (not yet started)."""
        return W.Gateway(cls.world, EGRESSD, cls.make_config)

    @classmethod
    def place_config(cls):
        """Where the gateway's config file lives before it starts: as written."""

    @classmethod
    def tearDownClass(cls):
        if cls.gw is not None and cls.gw.alive():
            rc = cls.gw.stop()
            if rc != 0:
                raise AssertionError("egressd exited %s after SIGTERM (want 0):\n%s" % (rc, cls.gw.diagnostics()))

    def diagnostics(self):
        """Printed by run.py under a failing test."""
        parts = []
        if self.gw is not None:
            parts.append(self.gw.diagnostics())
        if getattr(self, "world", None) is not None and self.world.dir:
            parts.append("---- nginx error log ----\n" + self.world.tail("nginx-error.log", 10))
        return "\n".join(parts)

    # ---- assertions ----------------------------------------------------------

    def setUp(self):
        self.assertTrue(self.gw.alive(), "egressd is not running:\n" + self.gw.diagnostics())
        self.mark = self.log.mark()
        self.m0 = self.gw.metrics()

    def flow(self, timeout=10, **key):
        """Waits for the `flow` record (after this test's start) whose fields equal `key`."""
        return self.log.wait(W.match(event="flow", **key), since=self.mark, timeout=timeout,
                             what="flow record with %s" % key)

    def assertRecord(self, rec, **want):
        """Each wanted field equals the record's (None: the field is absent)."""
        for k, v in want.items():
            if v is None:
                self.assertNotIn(k, rec, "record has %s: %s" % (k, rec))
            else:
                self.assertEqual(rec.get(k), v, "record field %r: %s" % (k, rec))

    def assertFlowsDelta(self, delta=1, timeout=5, m0=None, **labels):
        """egressd_flows_total{labels} grew by exactly `delta` since setUp."""
        m0 = m0 if m0 is not None else self.m0
        before = m0.sum("egressd_flows_total", **labels)
        deadline = time.monotonic() + timeout
        while True:
            now = self.gw.metrics().sum("egressd_flows_total", **labels)
            if now - before == delta:
                return
            if now - before > delta or time.monotonic() > deadline:
                self.fail("egressd_flows_total%s went %s -> %s, want +%d" % (labels, before, now, delta))
            time.sleep(0.05)

    def assertDecision(self, rec, decision, rule, close=None, proto=None, delta=1, m0=None):
        """The record's decision, rule (and close, proto), and
        egressd_flows_total{listener,proto,decision,rule} up by `delta` since
        m0 (default: the test's start)."""
        self.assertRecord(rec, decision=decision, rule=rule)
        if close is not None:
            self.assertRecord(rec, close=close)
        if proto is not None:
            self.assertRecord(rec, proto=proto)
        labels = dict(listener=rec.get("listener"), decision=decision, rule=rule)
        if "proto" in rec:
            labels["proto"] = rec["proto"]
        self.assertFlowsDelta(delta, m0=m0, **labels)

    def assertAccessDenied(self, reply):
        """A client.py hello reply: a fatal access_denied alert, then close."""
        self.assertEqual(reply.get("alert"), [2, 49], "want a fatal access_denied alert (15 03 0x 00 02 02 31): %s"
                         % reply)


class ConfigMapGatewayTest(GatewayTest):
    """A GatewayTest whose config is mounted the way a Kubernetes ConfigMap
    volume is: the file is a symlink through `..data`, which points at a
    timestamped directory; publish() does what the kubelet does on an
    update."""

    version = 0

    @classmethod
    def make_gateway(cls):
        """The egressd these tests run against (not yet started)."""
        return W.Gateway(cls.world, EGRESSD, cls.make_config)

    @classmethod
    def place_config(cls):
        mount = cls.world.path("configmap-%s-%d" % (cls.__name__, os.getpid()))
        os.makedirs(os.path.join(mount, "..v0"))
        shutil.move(cls.gw.config_path, os.path.join(mount, "..v0", "egressd.yaml"))
        os.symlink("..v0", os.path.join(mount, "..data"))
        os.symlink("..data/egressd.yaml", os.path.join(mount, "egressd.yaml"))
        cls.mount = mount
        cls.gw.config_path = os.path.join(mount, "egressd.yaml")

    def publish(self, cfg):
        """A new timestamped directory with `cfg` (text, or a dict written as
        JSON), `..data` swapped to it atomically, the old directory removed."""
        old = os.readlink(os.path.join(self.mount, "..data"))
        type(self).version += 1
        version = "..v%d" % self.version
        os.makedirs(os.path.join(self.mount, version))
        with open(os.path.join(self.mount, version, "egressd.yaml"), "w") as f:
            f.write(cfg if isinstance(cfg, str) else json.dumps(cfg, indent=2))
        tmp = os.path.join(self.mount, "..data_tmp")
        os.symlink(version, tmp)
        os.rename(tmp, os.path.join(self.mount, "..data"))
        shutil.rmtree(os.path.join(self.mount, old))
