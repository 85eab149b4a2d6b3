#!/usr/bin/env python3
"""A fake Kubernetes API server for egressd's tests: pods and namespaces only.

It speaks enough of the real protocol that kubectl can list and watch from it
(`kubectl --kubeconfig DIR/kubeconfig get pods -A [--watch]`):

- HTTPS with a test CA made by the openssl CLI at start (DIR/ca.crt; the
  server certificate is for 127.0.0.1, ::1 and localhost);
- a bearer token (401 with a Status object otherwise);
- discovery: /version, /api, /api/v1, /apis;
- GET /api/v1/pods, /api/v1/namespaces/NS/pods, /api/v1/namespaces: lists
  with metadata.resourceVersion, `limit` and `continue` (pages of one
  consistent snapshot; a continue token older than the compaction point is
  410 Expired, as in Kubernetes);
- `?watch=true&resourceVersion=RV[&allowWatchBookmarks=true][&timeoutSeconds=N]`:
  a chunked stream of newline-delimited {"type","object"} events (ADDED,
  MODIFIED, DELETED, BOOKMARK, ERROR) after RV; RV older than the compaction
  point gets an ERROR event with a 410 Status (or, on request, HTTP 410);
  the stream ends cleanly after timeoutSeconds.

Objects have the API's shapes: kind Pod/Namespace, apiVersion v1,
metadata.name/namespace/uid/resourceVersion/creationTimestamp/labels,
spec.serviceAccountName/hostNetwork/containers, status.phase/podIP/podIPs.
One resourceVersion counter for everything, increasing, as etcd's revision.

Control interface: plain HTTP on a second loopback port, POST / with one
JSON object, answered with a JSON object:
  {"op":"put_pod","namespace":"ns","name":"p","ips":["10.0.0.1"],
   "phase":"Running","labels":{},"hostNetwork":false,"serviceAccount":"sa"}
  {"op":"put_namespace","name":"ns","labels":{}}
  {"op":"delete","resource":"pods"|"namespaces","namespace":"ns","name":"p",
   "silent":false}      silent: no event (as if lost to compaction)
  {"op":"compact"}       watches from an older resourceVersion get 410
  {"op":"gone","resource":"pods","mode":"event"|"status"}
                         the next watch of that resource gets 410
  {"op":"drop"}          close every open watch stream abruptly
  {"op":"delay","seconds":S}   every API response waits S first (0: off)
  {"op":"stall","seconds":S}   open and new watch streams send nothing for S
  {"op":"bookmark"}      a BOOKMARK on every open watch now
  {"op":"token","token":"T"}   the accepted token from now on
  {"op":"stats"}         {"rv":N,"watches":{"pods":n,...},"requests":{...}}
Every answer carries "rv", the current resourceVersion.

Start: fake_apiserver.py --dir DIR [--token T] [--port P] [--bookmark-interval S]
prints one JSON line {"port":P,"control_port":C,"kubeconfig":PATH,"ca":PATH}
on stdout once it serves, then logs requests on stderr.
Python 3 standard library only.
"""

import argparse
import base64
import itertools
import json
import os
import socket
import ssl
import subprocess
import sys
import threading
import time
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

RESOURCES = ("pods", "namespaces")
KIND = {"pods": "Pod", "namespaces": "Namespace"}


def status(code, reason, message):
    return {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
            "message": message, "reason": reason, "code": code}


class State:
    def __init__(self, token, bookmark_interval):
        self.cond = threading.Condition()
        self.rv = 1
        self.objects = {r: {} for r in RESOURCES}   # key -> object
        self.events = []                              # (rv, resource, type, object)
        self.compacted = 0                            # watches from rv < this: 410
        self.gone_next = {}                           # resource -> mode
        self.drop_gen = 0
        self.delay = 0.0
        self.stall_until = 0.0
        self.bookmark_gen = 0
        self.token = token
        self.bookmark_interval = bookmark_interval
        self.watches = {r: 0 for r in RESOURCES}
        self.requests = {}
        self.snapshots = {}                           # list id -> (rv, items)
        self.ids = itertools.count(1)

    # --- objects -----------------------------------------------------------
    def _next_rv(self):
        self.rv += 1
        return self.rv

    def put(self, resource, obj):
        with self.cond:
            md = obj.setdefault("metadata", {})
            key = self.key(resource, md)
            old = self.objects[resource].get(key)
            md["uid"] = old["metadata"]["uid"] if old else "uid-%d" % next(self.ids)
            md["creationTimestamp"] = (old["metadata"]["creationTimestamp"] if old
                                       else time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()))
            md["resourceVersion"] = str(self._next_rv())
            obj["kind"] = KIND[resource]
            obj["apiVersion"] = "v1"
            self.objects[resource][key] = obj
            self.events.append((self.rv, resource, "MODIFIED" if old else "ADDED", obj))
            self.cond.notify_all()
            return obj

    def delete(self, resource, namespace, name, silent):
        with self.cond:
            key = self.key(resource, {"namespace": namespace, "name": name})
            obj = self.objects[resource].pop(key, None)
            if obj is None:
                return False
            rv = self._next_rv()
            if not silent:
                gone = json.loads(json.dumps(obj))
                gone["metadata"]["resourceVersion"] = str(rv)
                self.events.append((rv, resource, "DELETED", gone))
            self.cond.notify_all()
            return True

    @staticmethod
    def key(resource, md):
        return md["name"] if resource == "namespaces" else md["namespace"] + "/" + md["name"]


def make_pod(cmd):
    ips = cmd.get("ips", [cmd["ip"]] if "ip" in cmd else [])
    status_ = {"phase": cmd.get("phase", "Running")}
    if ips:
        status_["podIP"] = ips[0]
        status_["podIPs"] = [{"ip": ip} for ip in ips]
    spec = {"serviceAccountName": cmd.get("serviceAccount", "default"),
            "containers": [{"name": "app", "image": "registry.example/app:1"}],
            "nodeName": "node-1"}
    if cmd.get("hostNetwork"):
        spec["hostNetwork"] = True
    return {"metadata": {"name": cmd["name"], "namespace": cmd["namespace"],
                         "labels": cmd.get("labels", {})},
            "spec": spec, "status": status_}


def make_namespace(cmd):
    labels = dict(cmd.get("labels", {}))
    labels.setdefault("kubernetes.io/metadata.name", cmd["name"])
    return {"metadata": {"name": cmd["name"], "labels": labels},
            "spec": {"finalizers": ["kubernetes"]}, "status": {"phase": "Active"}}


API_RESOURCES = {
    "kind": "APIResourceList", "groupVersion": "v1",
    "resources": [
        {"name": "pods", "singularName": "pod", "namespaced": True, "kind": "Pod",
         "verbs": ["get", "list", "watch"], "shortNames": ["po"]},
        {"name": "namespaces", "singularName": "namespace", "namespaced": False,
         "kind": "Namespace", "verbs": ["get", "list", "watch"], "shortNames": ["ns"]},
    ],
}


class ApiHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "fake-apiserver"

    def log_message(self, fmt, *args):
        sys.stderr.write("fake-apiserver: " + (fmt % args) + "\n")

    @property
    def state(self):
        return self.server.state

    def send_json(self, code, body):
        data = json.dumps(body).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self):
        st = self.state
        url = urllib.parse.urlsplit(self.path)
        q = dict(urllib.parse.parse_qsl(url.query))
        with st.cond:
            delay = st.delay
            token = st.token
        if delay > 0:
            time.sleep(delay)
        if self.headers.get("Authorization", "") != "Bearer " + token:
            self.send_json(401, status(401, "Unauthorized", "Unauthorized"))
            return
        path = url.path.rstrip("/")
        if path == "/version":
            self.send_json(200, {"major": "1", "minor": "30", "gitVersion": "v1.30.0-fake",
                                 "platform": "linux/amd64"})
        elif path == "/api":
            self.send_json(200, {"kind": "APIVersions", "versions": ["v1"],
                                 "serverAddressByClientCIDRs": []})
        elif path == "/apis":
            self.send_json(200, {"kind": "APIGroupList", "apiVersion": "v1", "groups": []})
        elif path == "/api/v1":
            self.send_json(200, API_RESOURCES)
        else:
            parts = path.split("/")
            # /api/v1/pods, /api/v1/namespaces, /api/v1/namespaces/NS/pods
            namespace = None
            if len(parts) == 4 and parts[3] in RESOURCES:
                resource = parts[3]
            elif len(parts) == 6 and parts[3] == "namespaces" and parts[5] == "pods":
                resource, namespace = "pods", parts[4]
            else:
                self.send_json(404, status(404, "NotFound", "the server could not find the "
                                                            "requested resource"))
                return
            kind = "watch" if q.get("watch") in ("true", "1") else "list"
            with st.cond:
                name = kind + " " + resource
                st.requests[name] = st.requests.get(name, 0) + 1
            if kind == "watch":
                self.watch(resource, namespace, q)
            else:
                self.list(resource, namespace, q)

    # --- list --------------------------------------------------------------
    def list(self, resource, namespace, q):
        st = self.state
        limit = int(q.get("limit", "0") or 0)
        token = q.get("continue", "")
        with st.cond:
            if token:
                try:
                    list_id, offset = (int(x) for x in
                                       base64.urlsafe_b64decode(token).decode().split(":"))
                    rv, items = st.snapshots[list_id]
                except (ValueError, KeyError):
                    self.send_json(400, status(400, "BadRequest", "invalid continue token"))
                    return
                if rv < st.compacted:
                    self.send_json(410, status(410, "Expired",
                                               "The provided continue parameter is too old"))
                    return
            else:
                rv = st.rv
                items = [json.loads(json.dumps(o)) for _, o in
                         sorted(st.objects[resource].items())
                         if namespace is None or o["metadata"].get("namespace") == namespace]
                list_id = next(st.ids)
                st.snapshots[list_id] = (rv, items)
                offset = 0
        end = len(items) if limit <= 0 else min(len(items), offset + limit)
        md = {"resourceVersion": str(rv)}
        if end < len(items):
            md["continue"] = base64.urlsafe_b64encode(
                ("%d:%d" % (list_id, end)).encode()).decode()
            md["remainingItemCount"] = len(items) - end
        self.send_json(200, {"kind": KIND[resource] + "List", "apiVersion": "v1",
                             "metadata": md, "items": items[offset:end]})

    # --- watch -------------------------------------------------------------
    def chunk(self, data):
        self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
        self.wfile.flush()

    def event(self, type_, obj):
        self.chunk(json.dumps({"type": type_, "object": obj}).encode() + b"\n")

    def watch(self, resource, namespace, q):
        st = self.state
        try:
            since = int(q.get("resourceVersion", "0") or 0)
        except ValueError:
            self.send_json(400, status(400, "BadRequest", "invalid resourceVersion"))
            return
        timeout = float(q.get("timeoutSeconds", "1800"))
        bookmarks = q.get("allowWatchBookmarks") == "true"
        with st.cond:
            forced = st.gone_next.pop(resource, None)
            too_old = since != 0 and since < st.compacted
            mode = forced or ("event" if too_old else None)
            if since == 0:
                since = st.rv  # "any": from now (no synthetic ADDED events)
            drop_gen, bookmark_gen = st.drop_gen, st.bookmark_gen
            compacted = st.compacted
        gone = status(410, "Expired", "too old resource version: %d (%d)" % (since, compacted))
        if mode == "status":
            self.send_json(410, gone)
            return
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        self.wfile.flush()
        if mode == "event":
            self.event("ERROR", gone)
            self.chunk(b"")
            return
        with st.cond:
            st.watches[resource] += 1
        try:
            self.stream(resource, namespace, since, timeout, bookmarks, drop_gen, bookmark_gen)
        except (BrokenPipeError, ConnectionResetError, ssl.SSLError, OSError):
            self.close_connection = True
        finally:
            with st.cond:
                st.watches[resource] -= 1

    def stream(self, resource, namespace, since, timeout, bookmarks, drop_gen, bookmark_gen):
        st = self.state
        deadline = time.monotonic() + timeout
        next_bookmark = time.monotonic() + st.bookmark_interval
        scanned = since  # events up to here were looked at (any resource)
        while True:
            with st.cond:
                st.cond.wait_for(lambda: st.drop_gen != drop_gen or
                                 st.bookmark_gen != bookmark_gen or st.rv > scanned,
                                 timeout=0.1)
                if st.drop_gen != drop_gen:
                    dropped = True
                else:
                    dropped = False
                    stalled = time.monotonic() < st.stall_until
                    pending = [] if stalled else [
                        e for e in st.events if e[0] > since and e[1] == resource and
                        (namespace is None or e[3]["metadata"].get("namespace") == namespace)]
                    last_rv = since if stalled else max(since, st.rv)
                    if not stalled:
                        scanned = st.rv
                    want_bookmark = not stalled and bookmarks and (
                        st.bookmark_gen != bookmark_gen or
                        (st.bookmark_interval > 0 and time.monotonic() >= next_bookmark))
                    bookmark_gen = st.bookmark_gen
            if dropped:
                # Abruptly: no terminating chunk, the client sees a cut stream.
                self.connection.shutdown(socket.SHUT_RDWR)
                self.close_connection = True
                return
            now = time.monotonic()
            if now >= deadline and not stalled:
                self.chunk(b"")  # the normal end of a watch
                return
            for rv, _, type_, obj in pending:
                self.event(type_, obj)
                since = rv
            if want_bookmark:
                since = last_rv
                self.event("BOOKMARK", {"kind": KIND[resource], "apiVersion": "v1",
                                        "metadata": {"resourceVersion": str(since)}})
                next_bookmark = now + st.bookmark_interval


class TlsServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, addr, state, context):
        self.state = state
        self.context = context
        super().__init__(addr, ApiHandler)

    def finish_request(self, request, client_address):
        # The handshake runs on the request's own thread, not the acceptor's.
        try:
            tls = self.context.wrap_socket(request, server_side=True)
        except (ssl.SSLError, OSError):
            return
        try:
            self.RequestHandlerClass(tls, client_address, self)
        except (ssl.SSLError, OSError):
            pass
        finally:
            try:
                tls.close()
            except OSError:
                pass


class ControlHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, fmt, *args):
        pass

    def do_POST(self):
        st = self.server.state
        body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
        try:
            answer = self.apply(st, json.loads(body or b"{}"))
            code = 200
        except (KeyError, ValueError, TypeError) as e:
            answer, code = {"error": "%s: %s" % (type(e).__name__, e)}, 400
        with st.cond:
            answer["rv"] = st.rv
        data = json.dumps(answer).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    @staticmethod
    def apply(st, cmd):
        op = cmd["op"]
        if op == "put_pod":
            return {"object": st.put("pods", make_pod(cmd))}
        if op == "put_namespace":
            return {"object": st.put("namespaces", make_namespace(cmd))}
        if op == "delete":
            resource = cmd["resource"]
            if resource not in RESOURCES:
                raise ValueError("unknown resource " + resource)
            return {"deleted": st.delete(resource, cmd.get("namespace", ""), cmd["name"],
                                         bool(cmd.get("silent")))}
        with st.cond:
            if op == "compact":
                st.compacted = st.rv + 1 if cmd.get("all") else st.rv
                st.snapshots.clear()
            elif op == "gone":
                st.gone_next[cmd["resource"]] = cmd.get("mode", "event")
            elif op == "drop":
                st.drop_gen += 1
            elif op == "delay":
                st.delay = float(cmd["seconds"])
            elif op == "stall":
                st.stall_until = time.monotonic() + float(cmd["seconds"])
            elif op == "bookmark":
                st.bookmark_gen += 1
            elif op == "token":
                st.token = cmd["token"]
            elif op == "stats":
                return {"watches": dict(st.watches), "requests": dict(st.requests)}
            else:
                raise ValueError("unknown op " + op)
            st.cond.notify_all()
        return {}


def make_certs(d):
    def run(*args):
        subprocess.run(["openssl", *args], cwd=d, check=True,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    run("req", "-x509", *ec, "-keyout", "ca.key", "-out", "ca.crt", "-days", "2",
        "-subj", "/CN=fake-apiserver-ca")
    run("req", *ec, "-keyout", "server.key", "-out", "server.csr", "-subj", "/CN=fake-apiserver")
    with open(os.path.join(d, "server.ext"), "w") as f:
        f.write("subjectAltName=IP:127.0.0.1,IP:::1,DNS:localhost\n"
                "extendedKeyUsage=serverAuth\n")
    run("x509", "-req", "-in", "server.csr", "-CA", "ca.crt", "-CAkey", "ca.key",
        "-CAcreateserial", "-out", "server.crt", "-days", "2", "-extfile", "server.ext")


def write_kubeconfig(path, server, ca_path, token):
    with open(ca_path, "rb") as f:
        ca = base64.b64encode(f.read()).decode()
    with open(path, "w") as f:
        f.write("apiVersion: v1\nkind: Config\ncurrent-context: fake\n"
                "clusters:\n- name: fake\n  cluster:\n    server: %s\n"
                "    certificate-authority-data: %s\n"
                "contexts:\n- name: fake\n  context: {cluster: fake, user: fake}\n"
                "users:\n- name: fake\n  user:\n    token: %s\n" % (server, ca, token))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--dir", required=True, help="where the certificates and kubeconfig go")
    ap.add_argument("--token", default="test-token")
    ap.add_argument("--port", type=int, default=0)
    ap.add_argument("--bookmark-interval", type=float, default=0,
                    help="seconds between BOOKMARK events on watches that allow them (0: none)")
    args = ap.parse_args()
    os.makedirs(args.dir, exist_ok=True)
    make_certs(args.dir)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(os.path.join(args.dir, "server.crt"), os.path.join(args.dir, "server.key"))
    state = State(args.token, args.bookmark_interval)
    api = TlsServer(("127.0.0.1", args.port), state, ctx)
    control = ThreadingHTTPServer(("127.0.0.1", 0), ControlHandler)
    control.daemon_threads = True
    control.state = state
    port = api.server_address[1]
    kubeconfig = os.path.join(args.dir, "kubeconfig")
    write_kubeconfig(kubeconfig, "https://127.0.0.1:%d" % port, os.path.join(args.dir, "ca.crt"),
                     args.token)
    threading.Thread(target=control.serve_forever, daemon=True).start()
    print(json.dumps({"port": port, "control_port": control.server_address[1],
                      "kubeconfig": kubeconfig, "ca": os.path.join(args.dir, "ca.crt")}),
          flush=True)
    try:
        api.serve_forever(poll_interval=0.1)
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
