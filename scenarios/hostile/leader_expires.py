"""Hostile: a leader that holds its lock with a short lease (SET NX PX 300, renewed every
100 ms) and, on SIGTERM, stops renewing and exits without deleting it: the key expires within
release_within_ms. lock_released once took the first change after the stop for a release.

With LEADER_AT_STOP=impersonate it instead overwrites its lock with the value its standby would
write (`standby`, the standby's QUIESCE_INSTANCE) and a long lease: lock_released once named
holders by value and passed that as a hand-over to a standby that never held the key."""

import os
import signal
import sys
import time

import redis

r = redis.Redis.from_url(os.environ["QUIESCE_REDIS_URL"])
key = os.environ["QUIESCE_REDIS_LEADER_KEY"]
me = os.environ["QUIESCE_INSTANCE"]
stopping = False


def stop(*_):
    global stopping
    stopping = True


signal.signal(signal.SIGTERM, stop)
print("ready", flush=True)
while not stopping:
    if r.set(key, me, nx=True, px=300) or r.get(key) == me.encode():
        r.pexpire(key, 300)
    time.sleep(0.1)
# The bug: no DEL on the way out; the lease runs out by itself, or
if me == "primary" and os.environ.get("LEADER_AT_STOP") == "impersonate":
    # the lock is kept, under a name that is not this instance's.
    r.set(key, "standby", px=60000)
sys.exit(0)
