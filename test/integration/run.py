"""Runs egressd's integration tests (needs root).

  run.py --egressd BUILD/gateway/egressd [NAME ...] [-k PATTERN]

NAME is a module (test_policy), a class (test_policy.TlsTest) or one test
(test_policy.TlsTest.test_denied_name); no NAME runs every test_*.py here.
Prints unittest's summary; under each failure, the gateway's stderr and
access-log tail. A test that fails is run once more, alone (in a fresh world
and gateway); one that then passes is reported as `FLAKY:` with its first
failure and does not fail the run (--no-retry: every failure counts). Exit 0
when all pass, 1 otherwise, 77 (ctest: skipped) when not root.
"""

import argparse
import os
import signal
import sys
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.dont_write_bytecode = True  # no __pycache__ in the source tree


class DiagnosticResult(unittest.TextTestResult):
    """Appends the failing test's diagnostics (gateway stderr, access log)."""

    def _with_diagnostics(self, test, entries):
        diag = getattr(test, "diagnostics", None)
        if callable(diag) and entries and entries[-1][0] is test:
            try:
                extra = diag()
            except Exception as e:  # diagnostics must never hide the failure
                extra = "(diagnostics failed: %s)" % e
            entries[-1] = (test, entries[-1][1] + "\n" + extra)

    def addFailure(self, test, err):
        super().addFailure(test, err)
        self._with_diagnostics(test, self.failures)

    def addError(self, test, err):
        super().addError(test, err)
        self._with_diagnostics(test, self.errors)


def _interrupt(signum, frame):
    raise KeyboardInterrupt("signal %d" % signum)


def sanitizer_of(binary):
    """"asan" or "tsan" when the binary was built with that sanitizer."""
    if not binary or not os.path.exists(binary):
        return None
    with open(binary, "rb") as f:
        data = f.read()
    for marker, name in ((b"__tsan_init", "tsan"), (b"__asan_init", "asan")):
        if marker in data:
            return name
    return None


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--egressd", help="the egressd binary")
    ap.add_argument("-k", dest="patterns", action="append", default=None,
                    help="only tests whose name contains this (unittest -k)")
    ap.add_argument("-q", "--quiet", action="store_true")
    ap.add_argument("--no-retry", action="store_true", help="a failure is final: no second run")
    ap.add_argument("names", nargs="*")
    a = ap.parse_args()

    if os.geteuid() != 0:
        print("integration tests need root (network namespaces, iptables): skipped")
        return 77
    if a.egressd:
        os.environ["EGRESSD"] = os.path.abspath(a.egressd)
    import harness  # after EGRESSD is set
    harness.EGRESSD = os.environ.get("EGRESSD")
    harness.SANITIZER = sanitizer_of(harness.EGRESSD)
    if harness.SANITIZER:
        print("egressd is built with %s: tests of memory and speed are skipped" % harness.SANITIZER)

    # ctest's timeout and ^C both end in the worlds' cleanup.
    signal.signal(signal.SIGTERM, _interrupt)
    signal.signal(signal.SIGHUP, _interrupt)

    loader = unittest.TestLoader()
    if a.patterns:
        loader.testNamePatterns = ["*%s*" % p for p in a.patterns]
    if a.names:
        suite = loader.loadTestsFromNames(a.names)
    else:
        suite = loader.discover(HERE, pattern="test_*.py", top_level_dir=HERE)
    runner = unittest.TextTestRunner(verbosity=1 if a.quiet else 2, resultclass=DiagnosticResult)
    import world
    try:
        result = runner.run(suite)
        if result.wasSuccessful():
            return 0
        failed = [(t, why) for t, why in result.failures + result.errors]
        ids = [t.id() for t, _ in failed]
        # A class or module fixture that failed has no test id to rerun.
        if a.no_retry or not ids or any(i.startswith("unittest.") or " " in i for i in ids):
            return 1
        world._cleanup_all()
        print("\nrunning %d failed test(s) once more: %s" % (len(ids), ", ".join(ids)), flush=True)
        retry = runner.run(loader.loadTestsFromNames(ids))
        still = {t.id() for t, _ in retry.failures + retry.errors}
        for t, why in failed:
            if t.id() not in still:
                last = why.strip().splitlines()[-1] if why.strip() else ""
                print("FLAKY: %s (failed once: %s; passed on its second run)" % (t.id(), last[:300]))
        return 0 if retry.wasSuccessful() and retry.testsRun == len(ids) else 1
    except KeyboardInterrupt:
        print("interrupted")
        return 1
    finally:
        world._cleanup_all()


if __name__ == "__main__":
    sys.exit(main())
