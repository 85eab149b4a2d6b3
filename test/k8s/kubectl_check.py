#!/usr/bin/env python3
"""The real client against fake_apiserver.py: if kubectl can list (in pages)
and watch pods and namespaces from it, and is refused with a wrong token, the
fake speaks the protocol closely enough for egressd's watcher tests.
Exit 0 pass, 1 fail, 77 skipped (no kubectl)."""

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))


def main():
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        print("kubectl not found: skipped")
        return 77
    with tempfile.TemporaryDirectory(prefix="egressd-kubectl-") as d:
        server = subprocess.Popen([sys.executable, os.path.join(HERE, "fake_apiserver.py"),
                                   "--dir", d, "--token", "tok"],
                                  stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        try:
            info = json.loads(server.stdout.readline())
            return check(kubectl, d, info)
        finally:
            server.kill()
            server.wait()


def check(kubectl, d, info):
    def ctl(**cmd):
        req = urllib.request.Request("http://127.0.0.1:%d/" % info["control_port"],
                                     data=json.dumps(cmd).encode(), method="POST")
        with urllib.request.urlopen(req, timeout=5) as r:
            return json.load(r)

    base = [kubectl, "--kubeconfig", info["kubeconfig"], "--cache-dir", os.path.join(d, "cache"),
            "--request-timeout", "10s"]

    def run(*args, kubeconfig=None):
        argv = list(base) if kubeconfig is None else [
            kubectl, "--kubeconfig", kubeconfig, "--cache-dir", os.path.join(d, "cache")]
        return subprocess.run(argv + list(args), capture_output=True, text=True, timeout=30)

    failures = []

    def expect(cond, what):
        print(("ok   " if cond else "FAIL ") + what)
        if not cond:
            failures.append(what)

    ctl(op="put_namespace", name="payments", labels={"team": "billing"})
    for i in range(5):
        ctl(op="put_pod", namespace="payments", name="api-%d" % i, ips=["10.0.0.%d" % (i + 1)])
    ctl(op="put_pod", namespace="default", name="web", ips=["10.0.1.1"])

    # A list in pages of 2: kubectl follows `continue`.
    r = run("get", "pods", "-A", "-o", "name", "--chunk-size=2")
    names = sorted(r.stdout.split())
    expect(r.returncode == 0 and names == sorted(["pod/web"] + ["pod/api-%d" % i for i in range(5)]),
           "kubectl get pods -A --chunk-size=2 lists all 6 pods (got %r %s)" % (names, r.stderr.strip()))
    pages = ctl(op="stats")["requests"].get("list pods", 0)
    expect(pages == 3, "kubectl made 3 list requests for 6 pods in pages of 2 (made %d)" % pages)
    r = run("get", "namespaces", "--show-labels")
    expect(r.returncode == 0 and "team=billing" in r.stdout,
           "kubectl get namespaces shows the labels")
    r = run("get", "pods", "-n", "payments", "-o", "jsonpath={.items[*].status.podIP}")
    expect(r.returncode == 0 and r.stdout.split() == ["10.0.0.%d" % i for i in range(1, 6)],
           "kubectl get pods -n payments reads status.podIP (got %r)" % r.stdout)

    # A watch sees additions, changes and deletions as they happen.
    argv = base + ["get", "pods", "-A", "--watch", "--output-watch-events"]
    watch = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 10
        while ctl(op="stats")["watches"]["pods"] < 1 and time.monotonic() < deadline:
            time.sleep(0.05)
        ctl(op="put_pod", namespace="default", name="late", ips=["10.0.1.2"])
        ctl(op="put_pod", namespace="default", name="late", ips=["10.0.1.2"], labels={"v": "2"})
        ctl(op="delete", resource="pods", namespace="default", name="late")
        time.sleep(1.0)
    finally:
        watch.terminate()
        out, err = watch.communicate(timeout=10)
    events = [line.split()[0] + " " + line.split()[2] for line in out.splitlines()[1:]
              if len(line.split()) > 2 and line.split()[2] == "late"]
    expect(events == ["ADDED late", "MODIFIED late", "DELETED late"],
           "kubectl get pods -A --watch sees ADDED, MODIFIED, DELETED (got %r %s)"
           % (events, err.strip()[-300:]))

    # A wrong token is refused.
    with open(info["kubeconfig"]) as f:
        text = f.read()
    wrong = os.path.join(d, "wrong-kubeconfig")
    with open(wrong, "w") as f:
        f.write(text.replace("token: tok", "token: nope"))
    r = run("get", "pods", "-A", kubeconfig=wrong)
    expect(r.returncode != 0 and "Unauthorized" in r.stderr,
           "a wrong token is refused (got %r)" % r.stderr.strip()[-200:])

    print("%d failed" % len(failures))
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
