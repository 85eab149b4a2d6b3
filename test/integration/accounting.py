"""Test-side accounting: every connection a client opened is in the access
log exactly once, with the byte counts the two ends saw.

A test records each connection its clients opened in a `Ledger` (the
client's local address, bytes written and read on the socket), then checks
the access-log records of the period against it:

    ledger = accounting.Ledger()
    r = world.client("raw", ...)
    ledger.add(r["local"], sent=n_written, received=len(r["recv"]), allowed=True)
    recs = gw.log.records()[mark:]          # after the flows ended
    accounting.assert_accounted(self, ledger, recs)

Matching is by the record's `src` (the client's "ip:port"; IPv6 as
"[addr]:port", an IPv4-mapped IPv6 address as the IPv4 one, as the contract
writes them). A local address used twice in one ledger (a port reused by a
later connection) is matched in order against that many `flow` records.

What the records guarantee (contract, "Access log"):

- one `flow` record per connection, denied ones included;
- one `open` record when a flow that was let through (`allow`,
  `audit_deny`) has its upstream connection established, written before its
  `flow` record, with the same `time`; so none for a denied flow and none
  for an allowed flow whose upstream connect failed
  (`"close":"upstream_connect_failed"`). An HTTP/1 connection closed
  because a later request was denied ends `deny` with `"close":"denied"`
  and still has the open record of its first, allowed request. Node-agent records
  (`"decision":"forward"`) have no `open` record;
- `bytes_up` / `bytes_down`: the bytes the gateway took from the client /
  from the upstream and relayed. What the ends can check:

  * a flow that ended cleanly (both sides half-closed, every byte read):
    bytes_up == what the client wrote == what the server read, and
    bytes_down == what the server wrote == what the client read (`exact`);
  * a flow cut by a fault (a reset, a killed peer, a timeout): bytes in
    flight at the cut may be counted and lost (taken from one socket, never
    delivered to the other, or discarded by the kernel with the RST). What
    still holds, per direction, is that the gateway cannot have relayed more
    than the sender wrote nor less than the receiver read:
        upstream_received <= bytes_up   <= sent
        received          <= bytes_down <= upstream_sent
    (`exact=False`; `upstream_received` / `upstream_sent` are the server's
    side, when the test knows it). Note the direction of the client's
    bound on bytes_down: it is a lower bound, not an upper one;
  * a denied flow relayed nothing: both counts are 0, whatever the client
    wrote (the alert or 403 it got is the gateway's own, not relayed bytes);
  * `sent`/`received` are bytes on the TCP socket (TLS records included),
    not HTTP bodies: curl's %{size_download} is not comparable for HTTPS.
    Pass None for a count the client does not know: it is not checked.
    HTTP/1 flows are relayed request by request and may be rewritten
    (`Upgrade: h2c` removed), so their bytes_up is not the client's count.
"""

import os
import re
import time

import harness

LET_THROUGH = ("allow", "audit_deny")

_MAPPED = re.compile(r"^\[::ffff:(\d+\.\d+\.\d+\.\d+)\]:(\d+)$", re.I)


def norm_addr(a):
    """An "ip:port" as the access log writes it (IPv6 lower case, IPv4-mapped
    as IPv4)."""
    if a is None:
        return None
    a = str(a).strip()
    m = _MAPPED.match(a)
    if m:
        return "%s:%s" % (m.group(1), m.group(2))
    return a.lower() if a.startswith("[") else a


class Entry:
    __slots__ = ("local", "sent", "received", "allowed", "exact", "note", "upstream_sent", "upstream_received")

    def __init__(self, local, sent, received, allowed, exact, note, upstream_sent=None, upstream_received=None):
        self.local = norm_addr(local)
        self.sent = sent
        self.received = received
        self.allowed = allowed
        self.exact = exact
        self.note = note
        self.upstream_sent = upstream_sent
        self.upstream_received = upstream_received

    def __repr__(self):
        s = "%s (sent %s, received %s, %s%s" % (
            self.local, self.sent, self.received,
            {True: "allowed", False: "denied", None: "decision not checked"}[self.allowed],
            "" if self.exact else ", cut by a fault")
        if self.upstream_sent is not None or self.upstream_received is not None:
            s += ", server wrote %s read %s" % (self.upstream_sent, self.upstream_received)
        return s + (": %s)" % self.note if self.note else ")")


class Ledger:
    """What the clients saw, one entry per connection they opened."""

    def __init__(self):
        self.entries = []

    def add(self, local, sent, received, allowed=None, exact=True, note="", upstream_sent=None,
            upstream_received=None):
        """local: the client's "ip:port" (as in the record's src; IPv6 as
        "[addr]:port"); sent/received: bytes the client wrote / read on the
        socket (None: unknown, not checked); allowed: True (the decision is
        allow or audit_deny), False (deny: nothing relayed, no open record),
        None (not checked; the open record is still required when the record
        says the flow was let through). exact: the counts must equal the
        record's bytes_up/bytes_down; False for flows cut by a fault, where
        only bytes_up <= sent and bytes_down >= received hold (see the module
        doc), plus the server-side bounds upstream_received <= bytes_up and
        bytes_down <= upstream_sent when given."""
        if not local:
            raise ValueError("a ledger entry needs the client's local address")
        self.entries.append(Entry(local, sent, received, allowed, exact, note, upstream_sent, upstream_received))
        return self.entries[-1]

    def extend(self, other):
        self.entries.extend(other.entries if isinstance(other, Ledger) else other)
        return self

    def __len__(self):
        return len(self.entries)

    def __iter__(self):
        return iter(self.entries)


def _brief(rec):
    keys = ("event", "src", "dst", "host", "decision", "rule", "close", "bytes_up", "bytes_down", "time")
    return "{%s}" % ", ".join("%s=%s" % (k, rec[k]) for k in keys if k in rec)


def check(ledger, records, allow_extra=False):
    """records: the access-log records (dicts) of the period, in log order.
    Returns a list of problem strings (empty = all accounted): a connection
    with no flow record, with two or more, a let-through flow without
    exactly one `open` record before its flow record (none is due when its
    upstream connect failed), a denied connection with an open record or
    relayed bytes, a decision other than the ledger's, byte counts that
    contradict what the client saw; and, unless allow_extra, flow (and open)
    records that no client connection explains."""
    problems = []
    flows, opens = {}, {}
    for i, r in enumerate(records):
        ev = r.get("event")
        if ev not in ("flow", "open"):
            continue
        src = norm_addr(r.get("src"))
        if src is None:
            problems.append("%s record without src: %s" % (ev, _brief(r)))
            continue
        (flows if ev == "flow" else opens).setdefault(src, []).append((i, r))

    by_local = {}
    for e in ledger:
        by_local.setdefault(e.local, []).append(e)

    for local, entries in by_local.items():
        recs = flows.get(local, [])
        op = list(opens.get(local, []))
        if not recs:
            for e in entries:
                problems.append("no flow record for %r" % (e,))
            continue
        if len(recs) != len(entries):
            problems.append("%d flow records for %d connection(s) from %s: %s; ledger: %s" % (
                len(recs), len(entries), local, ", ".join(_brief(r) for _, r in recs), entries))
            continue
        prev = -1
        for e, (pos, rec) in zip(entries, recs):
            problems.extend(_check_one(e, pos, rec, prev, op))
            prev = pos
        for _, o in op:
            problems.append("open record from %s matches none of its flow records: %s" % (local, _brief(o)))

    if not allow_extra:
        for local, recs in flows.items():
            if local not in by_local:
                for _, r in recs:
                    problems.append("flow record no client connection explains: %s" % _brief(r))
        for local, ops in opens.items():
            if local not in by_local:
                for _, o in ops:
                    problems.append("open record no client connection explains: %s" % _brief(o))
    return problems


def _check_one(e, pos, rec, prev, opens):
    """Checks one ledger entry against its flow record (at `pos`); consumes
    from `opens` the open records that belong to it (after `prev`, before
    `pos`)."""
    out = []
    what = "%r -> %s" % (e, _brief(rec))
    decision = rec.get("decision")
    let_through = decision in LET_THROUGH
    if e.allowed is True and not let_through:
        out.append("connection expected allowed, flow record says %s: %s" % (decision, what))
    if e.allowed is False and decision != "deny":
        out.append("connection expected denied, flow record says %s: %s" % (decision, what))

    mine = [o for o in opens if prev < o[0] < pos]
    for o in mine:
        opens.remove(o)
    # An HTTP/1 connection closed because a later request was denied ends
    # `deny`/`denied` (the last decision taken), yet was let through first:
    # its open record is due when an upstream connection was made, and
    # carries the first decision.
    later_denied = (decision == "deny" and rec.get("close") == "denied" and rec.get("proto") == "http"
                    and bool(rec.get("upstream")))
    due = 1 if (let_through and rec.get("close") != "upstream_connect_failed") or later_denied else 0
    if len(mine) != due:
        out.append("%d open record(s) before the flow record, want %d: %s%s" % (
            len(mine), due, what, "".join("; open: " + _brief(o) for _, o in mine)))
    for _, o in mine:
        same = o.get("decision") in LET_THROUGH if later_denied else o.get("decision") == decision
        if o.get("time") != rec.get("time") or not same:
            out.append("open record disagrees with its flow record (time, decision): open %s, %s" % (
                _brief(o), what))

    up, down = rec.get("bytes_up"), rec.get("bytes_down")
    if not isinstance(up, int) or not isinstance(down, int):
        out.append("flow record without integer bytes_up/bytes_down: %s" % what)
        return out
    if decision == "deny" and e.allowed is False:
        if up != 0 or down != 0:
            out.append("denied flow relayed bytes (up %d, down %d): %s" % (up, down, what))
        return out
    if e.exact:
        if e.sent is not None and up != e.sent:
            out.append("bytes_up %d, client wrote %d: %s" % (up, e.sent, what))
        if e.received is not None and down != e.received:
            out.append("bytes_down %d, client read %d: %s" % (down, e.received, what))
        if e.upstream_received is not None and up != e.upstream_received:
            out.append("bytes_up %d, server read %d: %s" % (up, e.upstream_received, what))
        if e.upstream_sent is not None and down != e.upstream_sent:
            out.append("bytes_down %d, server wrote %d: %s" % (down, e.upstream_sent, what))
    else:
        if e.sent is not None and up > e.sent:
            out.append("bytes_up %d is more than the client wrote (%d): %s" % (up, e.sent, what))
        if e.received is not None and down < e.received:
            out.append("bytes_down %d is less than the client read (%d): %s" % (down, e.received, what))
        if e.upstream_received is not None and up < e.upstream_received:
            out.append("bytes_up %d is less than the server read (%d): %s" % (up, e.upstream_received, what))
        if e.upstream_sent is not None and down > e.upstream_sent:
            out.append("bytes_down %d is more than the server wrote (%d): %s" % (down, e.upstream_sent, what))
    return out


def assert_accounted(testcase, ledger, records, allow_extra=False):
    """Fails `testcase` listing every problem check() finds."""
    problems = check(ledger, records, allow_extra=allow_extra)
    if problems:
        shown = problems[:40]
        more = "" if len(problems) <= 40 else "\n  ... and %d more" % (len(problems) - 40)
        testcase.fail("%d accounting problem(s) over %d connection(s), %d record(s):\n  %s%s" % (
            len(problems), len(ledger), len(records), "\n  ".join(shown), more))


# ---- resources -----------------------------------------------------------------

def resources(gw):
    """{"fds": n, "pipes": n, "rss_kib": n} of a running world.Gateway: open
    descriptors, those that are pipe ends (each pipe is two), VmRSS."""
    pid = gw.pid
    fd_dir = "/proc/%d/fd" % pid
    fds = pipes = 0
    for name in os.listdir(fd_dir):
        try:
            target = os.readlink(os.path.join(fd_dir, name))
        except OSError:  # closed meanwhile
            continue
        fds += 1
        if target.startswith("pipe:"):
            pipes += 1
    rss = 0
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("VmRSS:"):
                rss = int(line.split()[1])
                break
    return {"fds": fds, "pipes": pipes, "rss_kib": rss}


def assert_no_leak(testcase, gw, baseline, rss_slack_kib=4096, timeout=10, pipe_slack=0):
    """Polls until the gateway's fds and pipe ends are back to `baseline` (a
    resources() dict taken before the test) and its RSS is within
    rss_slack_kib of it; fails with both readings otherwise.

    The relay keeps emptied pipes in a per-worker pool (up to the busiest
    moment's count), so take the baseline after a warm-up at least as
    concurrent as the test, or pass pipe_slack (pipe ends, two per pipe;
    the fd bound grows by the same slack). Returns the last reading."""
    deadline = time.monotonic() + timeout
    while True:
        now = resources(gw)
        # Under a sanitizer RSS is the sanitizer's (quarantine, shadow): fds
        # and pipes still count.
        rss_ok = harness.SANITIZER or now["rss_kib"] <= baseline["rss_kib"] + rss_slack_kib
        ok = (now["fds"] <= baseline["fds"] + pipe_slack and now["pipes"] <= baseline["pipes"] + pipe_slack
              and rss_ok)
        if ok:
            return now
        if time.monotonic() > deadline:
            testcase.fail("egressd resources not back to the baseline after %ss: baseline %s, now %s "
                          "(rss slack %d KiB, pipe slack %d)" % (timeout, baseline, now, rss_slack_kib, pipe_slack))
        time.sleep(0.1)
