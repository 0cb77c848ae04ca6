#!/usr/bin/env python3
"""The Python `kubernetes` client (37.x) against a Leasehold node.

Usage: crud_watch.py KUBECONFIG NAMESPACE

Every call goes through `client.CoordinationV1Api()`, as an application
would make it:

- create, read, list with a label selector;
- replace keeping the resourceVersion, then a replace with the stale
  resourceVersion, which must raise ApiException 409;
- patch with a dict (the client sends it as a strategic merge patch) that
  changes one label and keeps the others;
- create of an existing name: 409;
- delete, then read and delete again: ApiException 404;
- `watch.Watch().stream(api.list_namespaced_lease, ns, timeout_seconds=N)`
  that sees ADDED, MODIFIED, MODIFIED, DELETED for changes another thread
  makes, after the synthetic ADDED of a lease that existed before;
- a watch from a resourceVersion that replays the same changes, and that
  ends by itself after its timeoutSeconds.

Exits 1 with a line starting `crud_watch: FAIL:` on the first mismatch,
2 on an unexpected exception; prints `crud_watch: OK ...` on success.
"""

import json
import sys
import threading
import time

from kubernetes import client, config, watch
from kubernetes.client.rest import ApiException

# Leases written here are held, and Leasehold refuses a change of holder
# while a lease is held: every write keeps the holder.
HOLDER = "py-holder"
# Bound of every wait on a watch event, s.
EVENT_TIMEOUT = 20


def fail(msg):
    print("crud_watch: FAIL: " + msg, file=sys.stderr, flush=True)
    sys.exit(1)


def check(cond, msg):
    if not cond:
        fail(msg)


def lease(name, labels, duration=30):
    return client.V1Lease(
        metadata=client.V1ObjectMeta(name=name, labels=labels),
        spec=client.V1LeaseSpec(
            holder_identity=HOLDER, lease_duration_seconds=duration
        ),
    )


def rv(obj):
    v = obj.metadata.resource_version
    check(v is not None and v.isdigit(), "resourceVersion %r of %s" % (v, obj.metadata.name))
    return int(v)


def api_error(call, *args, **kwargs):
    """Runs `call`, which must raise ApiException; returns it and its body (a
    dict: the Kubernetes Status)."""
    try:
        got = call(*args, **kwargs)
    except ApiException as e:
        try:
            body = json.loads(e.body)
        except (TypeError, ValueError):
            fail("%s: status %s with a body that is not JSON: %r" % (call.__name__, e.status, e.body))
        return e, body
    fail("%s%r: expected an ApiException, got %r" % (call.__name__, args, got))


def expect_status(e, body, code, reason, what):
    check(e.status == code, "%s: ApiException.status %r, want %d (body %r)" % (what, e.status, code, e.body))
    check(
        body.get("kind") == "Status" and body.get("code") == code and body.get("reason") == reason,
        "%s: body %r, want a Status with code %d and reason %s" % (what, body, code, reason),
    )


def crud(api, ns):
    # Create.
    a = api.create_namespaced_lease(ns, lease("py-a", {"app": "py", "tier": "x"}))
    check(a.metadata.name == "py-a", "create: name %r" % a.metadata.name)
    check(a.metadata.namespace == ns, "create: namespace %r, want %r (from the URL)" % (a.metadata.namespace, ns))
    check(bool(a.metadata.uid), "create: no uid")
    check(a.metadata.creation_timestamp is not None, "create: no creationTimestamp")
    check(a.spec.holder_identity == HOLDER, "create: holder %r" % a.spec.holder_identity)
    check(a.spec.lease_duration_seconds == 30, "create: leaseDurationSeconds %r" % a.spec.lease_duration_seconds)
    check(a.metadata.labels == {"app": "py", "tier": "x"}, "create: labels %r" % a.metadata.labels)
    check(a.spec.renew_time is not None, "create: no renewTime")
    rv_a = rv(a)
    b = api.create_namespaced_lease(ns, lease("py-b", {"app": "other"}))
    check(rv(b) > rv_a, "create: resourceVersion %d after %d" % (rv(b), rv_a))

    e, body = api_error(api.create_namespaced_lease, ns, lease("py-a", {"app": "py"}))
    expect_status(e, body, 409, "AlreadyExists", "create of an existing lease")

    # Read.
    got = api.read_namespaced_lease("py-a", ns)
    check(got.kind == "Lease" and got.api_version == "coordination.k8s.io/v1",
          "read: kind %r apiVersion %r" % (got.kind, got.api_version))
    check(got.metadata.uid == a.metadata.uid, "read: uid %r, created %r" % (got.metadata.uid, a.metadata.uid))
    check(rv(got) == rv_a, "read: resourceVersion %d, created at %d" % (rv(got), rv_a))
    check(got.spec.holder_identity == HOLDER, "read: holder %r" % got.spec.holder_identity)
    check(got.metadata.labels == {"app": "py", "tier": "x"}, "read: labels %r" % got.metadata.labels)

    # List with a label selector.
    lst = api.list_namespaced_lease(ns, label_selector="app=py")
    names = [i.metadata.name for i in lst.items]
    check(names == ["py-a"], "list app=py: %r, want ['py-a']" % names)
    check(lst.metadata.resource_version and int(lst.metadata.resource_version) >= rv(b),
          "list: resourceVersion %r, want >= %d" % (lst.metadata.resource_version, rv(b)))
    lst = api.list_namespaced_lease(ns, label_selector="app in (py,other)")
    names = sorted(i.metadata.name for i in lst.items)
    check(names == ["py-a", "py-b"], "list app in (py,other): %r" % names)
    lst = api.list_namespaced_lease(ns, label_selector="app=none")
    check(lst.items == [], "list app=none: %r" % [i.metadata.name for i in lst.items])

    # Replace, keeping the resourceVersion read.
    stale = api.read_namespaced_lease("py-a", ns)
    upd = api.read_namespaced_lease("py-a", ns)
    upd.spec.lease_duration_seconds = 45
    upd.metadata.labels["replaced"] = "yes"
    r = api.replace_namespaced_lease("py-a", ns, upd)
    check(r.spec.lease_duration_seconds == 45, "replace: leaseDurationSeconds %r" % r.spec.lease_duration_seconds)
    check(r.metadata.labels.get("replaced") == "yes", "replace: labels %r" % r.metadata.labels)
    check(r.metadata.uid == a.metadata.uid, "replace: uid changed")
    check(rv(r) > rv(stale), "replace: resourceVersion %d, was %d" % (rv(r), rv(stale)))

    # Replace with the stale resourceVersion: 409 Conflict.
    stale.spec.lease_duration_seconds = 50
    e, body = api_error(api.replace_namespaced_lease, "py-a", ns, stale)
    expect_status(e, body, 409, "Conflict", "replace with a stale resourceVersion")
    check(api.read_namespaced_lease("py-a", ns).spec.lease_duration_seconds == 45,
          "the refused replace changed the lease")

    # Patch with a dict: a strategic merge patch; other labels stay.
    p = api.patch_namespaced_lease("py-a", ns, {"metadata": {"labels": {"tier": "y"}}})
    check(p.metadata.labels == {"app": "py", "tier": "y", "replaced": "yes"},
          "patch: labels %r, want tier changed and the others kept" % p.metadata.labels)
    check(p.spec.lease_duration_seconds == 45, "patch: leaseDurationSeconds %r" % p.spec.lease_duration_seconds)
    check(rv(p) > rv(r), "patch: resourceVersion %d, was %d" % (rv(p), rv(r)))
    lst = api.list_namespaced_lease(ns, label_selector="tier=y")
    check([i.metadata.name for i in lst.items] == ["py-a"], "list tier=y after the patch")

    # Delete, then 404.
    for name in ("py-a", "py-b"):
        api.delete_namespaced_lease(name, ns)
        e, body = api_error(api.read_namespaced_lease, name, ns)
        expect_status(e, body, 404, "NotFound", "read after delete of " + name)
        check(body.get("details", {}).get("name") == name, "404 details: %r" % body.get("details"))
    e, body = api_error(api.delete_namespaced_lease, "py-a", ns)
    expect_status(e, body, 404, "NotFound", "delete of a deleted lease")
    lst = api.list_namespaced_lease(ns)
    check(lst.items == [], "list after deletes: %r" % [i.metadata.name for i in lst.items])
    return int(lst.metadata.resource_version)


def writer(api, ns, go, errors):
    """The changes the watch must see, made once `go` is set."""
    try:
        if not go.wait(EVENT_TIMEOUT):
            raise RuntimeError("the watch never started")
        api.create_namespaced_lease(ns, lease("py-w", {"app": "w"}))
        api.patch_namespaced_lease("py-w", ns, {"metadata": {"labels": {"step": "patched"}}})
        cur = api.read_namespaced_lease("py-w", ns)
        cur.spec.lease_duration_seconds = 40
        api.replace_namespaced_lease("py-w", ns, cur)
        api.delete_namespaced_lease("py-w", ns)
    except Exception as e:  # reported by the main thread
        errors.append(repr(e))


def events_of(stream, name, until, sentinel=None, go=None):
    """(type, resourceVersion, object) of `name`'s events until a `until`
    event; sets `go` at the sentinel's ADDED, which must come first."""
    seen = []
    deadline = time.monotonic() + EVENT_TIMEOUT
    for ev in stream:
        obj = ev["object"]
        n = obj.metadata.name
        if sentinel is not None and not seen and go is not None and not go.is_set():
            check(ev["type"] == "ADDED" and n == sentinel,
                  "watch: first event %s %s, want the synthetic ADDED of %s" % (ev["type"], n, sentinel))
            go.set()
            continue
        if n == name:
            seen.append((ev["type"], rv(obj), obj))
            if ev["type"] == until:
                return seen
        check(time.monotonic() < deadline, "watch: no %s of %s within %d s: %r" % (until, name, EVENT_TIMEOUT, seen))
    fail("watch ended before the %s of %s: %r" % (until, name, [(t, v) for t, v, _ in seen]))


def check_changes(seen, what):
    types = [t for t, _, _ in seen]
    check(types == ["ADDED", "MODIFIED", "MODIFIED", "DELETED"],
          "%s: events %r, want ADDED, MODIFIED, MODIFIED, DELETED" % (what, types))
    rvs = [v for _, v, _ in seen]
    check(rvs == sorted(set(rvs)), "%s: resourceVersions not increasing: %r" % (what, rvs))
    check(seen[1][2].metadata.labels.get("step") == "patched", "%s: the patch's MODIFIED: %r" % (what, seen[1][2].metadata.labels))
    check(seen[2][2].spec.lease_duration_seconds == 40, "%s: the replace's MODIFIED: %r" % (what, seen[2][2].spec))
    return types


def watches(api, ns, list_rv):
    # A lease that exists before the watch: its synthetic ADDED shows the
    # watch is established, and only then does the writer start.
    api.create_namespaced_lease(ns, lease("py-w0", {"app": "w0"}))
    go = threading.Event()
    errors = []
    t = threading.Thread(target=writer, args=(api, ns, go, errors), daemon=True)
    t.start()
    w = watch.Watch()
    stream = w.stream(api.list_namespaced_lease, ns, timeout_seconds=EVENT_TIMEOUT + 10)
    seen = events_of(stream, "py-w", "DELETED", sentinel="py-w0", go=go)
    w.stop()
    stream.close()
    t.join(EVENT_TIMEOUT)
    check(not errors, "writer thread: %s" % errors)
    types = check_changes(seen, "watch")

    # From the list's resourceVersion (taken before py-w0 and py-w): the
    # same changes again, no synthetic events, and the stream ends by
    # itself after timeoutSeconds.
    timeout = 2
    start = time.monotonic()
    replay = []
    for ev in watch.Watch().stream(api.list_namespaced_lease, ns, resource_version=str(list_rv),
                                    timeout_seconds=timeout):
        replay.append((ev["type"], rv(ev["object"]), ev["object"]))
    took = time.monotonic() - start
    names = [o.metadata.name for _, _, o in replay]
    check(names == ["py-w0"] + ["py-w"] * 4,
          "watch from resourceVersion %d: %r" % (list_rv, [(t, o.metadata.name) for t, _, o in replay]))
    check(replay[0][0] == "ADDED", "watch from resourceVersion: %s of py-w0" % replay[0][0])
    check_changes(replay[1:], "watch from resourceVersion %d" % list_rv)
    check(timeout - 0.5 <= took <= timeout + 8,
          "watch with timeoutSeconds=%d ended after %.1f s" % (timeout, took))
    api.delete_namespaced_lease("py-w0", ns)
    return types, took


def main():
    if len(sys.argv) != 3:
        print("usage: crud_watch.py KUBECONFIG NAMESPACE", file=sys.stderr)
        sys.exit(2)
    config.load_kube_config(config_file=sys.argv[1])
    ns = sys.argv[2]
    api = client.CoordinationV1Api()
    start = time.monotonic()
    try:
        list_rv = crud(api, ns)
        types, took = watches(api, ns, list_rv)
    except ApiException as e:
        print("crud_watch: unexpected ApiException %s %s: %s" % (e.status, e.reason, e.body),
              file=sys.stderr, flush=True)
        raise
    print("crud_watch: OK: create, read, list (label selectors), replace, stale replace 409, "
          "patch (strategic merge), create 409, delete, 404; watch saw %s; a watch with "
          "timeoutSeconds=2 ended after %.1f s; %.1f s in all"
          % (",".join(types), took, time.monotonic() - start), flush=True)


if __name__ == "__main__":
    try:
        main()
    except SystemExit:
        raise
    except BaseException:
        import traceback
        traceback.print_exc()
        sys.exit(2)
