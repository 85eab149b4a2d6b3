"""The container image, started with podman in the integration world: its
own binary and libraries, as uid 10001, read-only root filesystem, no
capabilities for the redirect listener and only NET_ADMIN for TPROXY; a
real flow through it, records and metrics.

The image is built by scripts/image.sh (ctest: image.build, which this
suite's ctest entry requires); EGRESSD_IMAGE names it (default
egressd:VERSION, VERSION from CMakeLists.txt). The container joins the gw
namespace (`podman run --network ns:/run/netns/GW`), so the world's
interception rules bring the pod's connections to it exactly as they would
to the host binary."""

import os
import re
import shutil
import subprocess
import unittest

import harness
import world as W

A = W.addr
ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..")
IMAGE_SH = os.path.join(ROOT, "scripts", "image.sh")


def image_name():
    with open(os.path.join(ROOT, "CMakeLists.txt")) as f:
        version = re.search(r"project\(egressd VERSION ([0-9.]+)", f.read()).group(1)
    return os.environ.get("EGRESSD_IMAGE", "egressd:" + version)


def image_run(*args, caps=(), timeout=60):
    """scripts/image.sh run ARGS: the image with its shipped hardening."""
    env = dict(os.environ, IMAGE=image_name(),
               PODMAN_RUN_OPTS=" ".join("--cap-add " + c for c in caps))
    return subprocess.run(["bash", IMAGE_SH, "run"] + list(args), capture_output=True, text=True,
                          timeout=timeout, env=env)


def setUpModule():
    if shutil.which("podman") is None:
        raise unittest.SkipTest("podman is not installed (scripts/install-deps.sh installs it)")
    p = subprocess.run(["podman", "image", "exists", image_name()])
    if p.returncode != 0:
        raise AssertionError("image %s not found: build it with scripts/image.sh build" % image_name())
    harness.module_world("redirect")


def tearDownModule():
    harness.close_world()


class ImageGateway(W.Gateway):
    """egressd from the image, in the gw namespace. Config and access log
    live in a directory of their own, owned by the image's user and bind
    mounted at the same path; nothing else of the host is visible."""

    def __init__(self, world, config_fn, caps=()):
        directory = world.path("image-%d" % (W._counter[0] + 1))
        os.makedirs(directory, exist_ok=True)
        os.chown(directory, 10001, 10001)
        super().__init__(world, None, config_fn, name="egressd-image", directory=directory)
        os.chmod(self.config_path, 0o644)
        self.directory = directory
        self.caps = caps
        self.container = self.name

    joins_namespace = True

    def command(self):
        opts = ["--cap-add " + c for c in self.caps]
        # Not `ip netns exec podman`: that remounts /sys, and runc then
        # finds no cgroup mount.
        opts += ["--name", self.container, "--replace", "--network", "ns:/run/netns/" + self.world.gw,
                 "--volume", "%s:%s" % (self.directory, self.directory)]
        return ["env", "IMAGE=" + image_name(), "PODMAN_RUN_OPTS=" + " ".join(opts),
                "bash", IMAGE_SH, "run", "--config", self.config_path]

    @property
    def pid(self):
        """The egressd process inside the container (not podman's)."""
        p = subprocess.run(["podman", "inspect", "--format", "{{.State.Pid}}", self.container],
                           capture_output=True, text=True, timeout=30)
        return int(p.stdout.strip())


class ImageTest(harness.GatewayTest):
    rules = [{"name": "web", "to": [{"host": "allowed.test", "ports": [443, 80]}]}]

    @classmethod
    def make_gateway(cls):
        return ImageGateway(cls.world, cls.make_config)

    def test_version_and_the_shipped_config(self):
        host = subprocess.run([harness.EGRESSD, "--version"], capture_output=True, text=True).stdout.strip()
        p = image_run("--version")
        self.assertEqual((p.returncode, p.stdout.strip()), (0, host), p)
        p = image_run("check", "--config", "/etc/egressd/egressd.yaml")
        self.assertEqual(p.returncode, 0, p)
        self.assertIn("OK", p.stdout + p.stderr)

    def test_runs_as_its_user_without_capabilities_on_a_read_only_root(self):
        with open("/proc/%d/status" % self.gw.pid) as f:
            status = dict(line.rstrip("\n").split(":\t", 1) for line in f if ":\t" in line)
        self.assertEqual(status["Uid"].split()[:2], ["10001", "10001"], status["Uid"])
        self.assertEqual(status["Gid"].split()[:2], ["10001", "10001"], status["Gid"])
        for cap in ("CapEff", "CapPrm", "CapBnd"):
            self.assertEqual(int(status[cap], 16), 0, "%s %s" % (cap, status[cap]))
        self.assertEqual(status["NoNewPrivs"].strip(), "1")
        with open("/proc/%d/mountinfo" % self.gw.pid) as f:
            root = [line.split() for line in f if line.split()[4] == "/"]
        self.assertTrue(root and "ro" in root[0][5].split(","), root)
        # Its own libraries: the loader maps the image's, not the host's.
        with open("/proc/%d/maps" % self.gw.pid) as f:
            libs = {line.split()[-1] for line in f if ".so" in line}
        self.assertTrue(any("libjemalloc.so" in lib for lib in libs), libs)
        with open("/proc/%d/root/etc/debian_version" % self.gw.pid) as f:
            self.assertTrue(f.read().startswith("12."))

    def test_a_real_flow_through_the_image(self):
        r = self.world.curl("https://allowed.test/", ip=W.WEB_IP)
        self.assertEqual((r.rc, r.status, r.body), (0, 200, b"server=198.18.0.10 host=allowed.test\n"), r)
        rec = self.flow(host="allowed.test", dst=A(W.WEB_IP, 443))
        self.assertDecision(rec, "allow", "web", close="eof", proto="tls")
        self.assertTrue(rec["src"].startswith(W.POD_IP + ":"), rec)
        self.assertGreater(rec.get("bytes_down", 0), 0, rec)

        r = self.world.curl("https://denied.test/", ip=W.WEB3_IP)
        self.assertEqual(r.rc, 35, r)
        rec = self.flow(host="denied.test", dst=A(W.WEB3_IP, 443))
        self.assertDecision(rec, "deny", "default", close="denied", proto="tls")


class ImageTproxyTest(unittest.TestCase):
    """TPROXY needs NET_ADMIN (IP_TRANSPARENT), and nothing more."""

    @classmethod
    def setUpClass(cls):
        cls.world = harness.current_world()
        cls.world.set_interception("tproxy")

    @classmethod
    def tearDownClass(cls):
        cls.world.set_interception("redirect")

    def config(self, access_log):
        return W.base_config(access_log, ImageTest.rules, interception="tproxy")

    def test_tproxy_with_net_admin_only(self):
        gw = ImageGateway(self.world, self.config, caps=("NET_ADMIN",))
        gw.start()
        try:
            with open("/proc/%d/status" % gw.pid) as f:
                cap_eff = [line.split()[1] for line in f if line.startswith("CapEff:")][0]
            self.assertEqual(int(cap_eff, 16), 1 << 12, "only CAP_NET_ADMIN (bit 12): %s" % cap_eff)
            mark = gw.log.mark()
            r = self.world.curl("https://allowed.test/", ip=W.WEB_IP)
            self.assertEqual((r.rc, r.status), (0, 200), r)
            rec = gw.log.wait(W.match(event="flow", host="allowed.test"), since=mark)
            self.assertEqual((rec.get("decision"), rec.get("listener")), ("allow", "tproxy"), rec)
        finally:
            self.assertEqual(gw.stop(), 0, gw.diagnostics())

    def test_tproxy_without_net_admin_fails_at_start_with_a_clear_error(self):
        gw = ImageGateway(self.world, self.config)
        with self.assertRaises(RuntimeError) as e:
            gw.start(ready_timeout=20)
        gw.stop()
        self.assertRegex(str(e.exception), r"(?i)tproxy.*(permission|NET_ADMIN)|(NET_ADMIN|permission).*tproxy")
