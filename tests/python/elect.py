#!/usr/bin/env python3
"""One leader-election candidate: the Python `kubernetes` client's
`leaderelection` with its `LeaseLock` (37.x), against a Leasehold node.

Usage: elect.py KUBECONFIG NAMESPACE LEASE_NAME IDENTITY

Prints one line per event on stdout, flushed, with the Unix time (s, six
decimals) of this machine's clock:

- `STARTED <id> <t>` when it starts leading; t is when the write that won
  the lease (the POST that created it, or the PUT that took it over) was
  sent, so the lease was written at or after t;
- `RENEWED <id> <t>` for each renewal while leading; t is when the
  renewing PUT was sent (the renewal was written at or after t);
- `STOPPED <id> <t>` when it stops leading (it then exits).

Parameters: lease_duration 6 s, renew_deadline 4 s, retry_period 1 s (the
library refuses a retry_period under 1 s). The library logs to stderr.

What the library does (37.x): every retry_period a GET, then a PUT (or a
POST on 404). A candidate that is not the holder takes the lease over only
once lease_duration has passed, on its own clock, since it last saw the
record change; the leader renews with GET+PUT and gives up after
renew_deadline without a successful renewal. It never releases the lease.
urllib3 re-sends a GET or PUT answered 503 with Retry-After (up to 3
times): those retries are logged.
"""

import logging
import sys
import threading
import time

from kubernetes import config
from kubernetes.leaderelection import electionconfig, leaderelection
from kubernetes.leaderelection.resourcelock.leaselock import LeaseLock

LEASE_DURATION = 6
RENEW_DEADLINE = 4
RETRY_PERIOD = 1

_out = threading.Lock()


def emit(kind, identity, t):
    with _out:
        sys.stdout.write("%s %s %.6f\n" % (kind, identity, t))
        sys.stdout.flush()


class ReportingLeaseLock(LeaseLock):
    """The library's LeaseLock, noting when its successful writes were sent.

    The library calls `create` and `update` from its election loop: before
    leading they are attempts to win the lease, while leading renewals.
    """

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.leading = False
        # When the write that won the lease was sent.
        self.won_at = None

    def create(self, name, namespace, election_record):
        sent = time.time()
        ok = super().create(name, namespace, election_record)
        if ok and self.won_at is None:
            self.won_at = sent
        return ok

    def update(self, name, namespace, updated_record):
        sent = time.time()
        ok = super().update(name, namespace, updated_record)
        if ok:
            if self.won_at is None:
                self.won_at = sent
            elif self.leading:
                emit("RENEWED", self.identity, sent)
        return ok


def main():
    if len(sys.argv) != 5:
        print("usage: elect.py KUBECONFIG NAMESPACE LEASE_NAME IDENTITY", file=sys.stderr)
        sys.exit(2)
    kubeconfig, namespace, name, identity = sys.argv[1:]
    logging.basicConfig(
        level=logging.INFO,
        stream=sys.stderr,
        format="%(asctime)s " + identity + " %(name)s: %(message)s",
    )
    # One line per request that urllib3 re-sends (a 503 with Retry-After
    # while Leasehold elects a Raft leader, for instance).
    logging.getLogger("urllib3.util.retry").setLevel(logging.DEBUG)
    config.load_kube_config(config_file=kubeconfig)
    lock = ReportingLeaseLock(name, namespace, identity)

    def started():
        # Runs in the library's thread once acquire() returned True: the
        # winning write is done, so won_at is set.
        lock.leading = True
        emit("STARTED", identity, lock.won_at)

    def stopped():
        lock.leading = False
        emit("STOPPED", identity, time.time())

    cfg = electionconfig.Config(
        lock,
        lease_duration=LEASE_DURATION,
        renew_deadline=RENEW_DEADLINE,
        retry_period=RETRY_PERIOD,
        onstarted_leading=started,
        onstopped_leading=stopped,
    )
    # Returns only after the candidate led and stopped leading.
    leaderelection.LeaderElection(cfg).run()


if __name__ == "__main__":
    main()
