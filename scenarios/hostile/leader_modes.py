"""Hostile leaders, one per MODE, each built (in a review) to fool lock_released, single_leader
or jobs_once_per_interval, and the correct lock the first fixes misjudged. Every mode leads
with SET key token NX PX 5000, renews it, and runs `report` on the wall clock's multiples of
500 ms while it leads; at SIGTERM it deletes its own token, except where MODE says otherwise.

  append      keeps the lock, disguised: APPEND ":draining" to its value and a 60 s lease
  zero        the standby first sends `*0` (an empty command Redis answers nothing to, which
              once shifted every later reply onto the command before it, so a refused SET NX
              read as taken), the primary keeps the lock under the value the standby tried
  steal       keeps the lock; the standby deletes it and takes it
  twoleaders  the standby runs `report` too, without the lock, half a period after the primary
              (every 1.1 s each): job lines have no length, so no two runs overlap
  fast        runs `report` every 300 ms: never two within half the 500 ms interval
  constval    correct, but both instances' token is "1" (a constant, a hostname): a value the
              standby writes too is not the standby's while the target holds it
  standby-orphan  correct, but the standby starts a helper in a session of its own and never
              stops it: the second instance's leftovers are the service's too
"""

import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from urllib.parse import urlparse

import redis

url = os.environ["QUIESCE_REDIS_URL"]
key = os.environ["QUIESCE_REDIS_LEADER_KEY"]
me = os.environ["QUIESCE_INSTANCE"]
mode = os.environ["MODE"]
r = redis.Redis.from_url(url)
token = "1" if mode == "constval" else f"{me}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
stopping = False


def stop(*_):
    global stopping
    stopping = True


def raw(command: bytes):
    """Sends bytes as they are on a connection of its own."""
    u = urlparse(url)
    with socket.create_connection((u.hostname, u.port or 6379)) as s:
        s.sendall(command)
        return s.recv(1000)


def resp(*args: bytes) -> bytes:
    return b"*%d\r\n" % len(args) + b"".join(b"$%d\r\n%s\r\n" % (len(a), a) for a in args)


signal.signal(signal.SIGTERM, stop)
if mode == "steal" and me == "primary":
    r.delete("hostile:stopping")
if mode == "zero" and me == "standby":
    raw(b"*0\r\n" + resp(b"SET", key.encode(), b"handoff", b"NX", b"PX", b"60000")
        + resp(b"SET", b"hostile:other", b"1"))
if mode == "standby-orphan" and me == "standby":
    subprocess.Popen(["sleep", "300"], start_new_session=True)
print("ready", flush=True)
period, phase = 0.5, 0.0
if mode == "twoleaders":
    period, phase = 1.1, (0.0 if me == "primary" else 0.55)
if mode == "fast":
    period = 0.3
leading = False
next_run = None
while not stopping:
    if mode == "steal" and me == "standby" and r.get("hostile:stopping"):
        r.delete(key)
        r.delete("hostile:stopping")
    if not leading and r.set(key, token, nx=True, px=5000):
        leading = True
    elif leading:
        r.pexpire(key, 5000)
    if leading or (mode == "twoleaders" and me == "standby"):
        if next_run is None:
            next_run = ((time.time() - phase) // period + 1) * period + phase
        if time.time() >= next_run:
            print("ran report", flush=True)
            next_run += period
    time.sleep(0.01)
if me == "primary" and mode in ("append", "zero", "steal"):
    if mode == "append":
        r.append(key, ":draining")
        r.pexpire(key, 60000)
    elif mode == "zero":
        r.set(key, "handoff", px=60000)
    elif mode == "steal":
        r.pexpire(key, 60000)
        r.set("hostile:stopping", "1", px=30000)
    sys.exit(0)
if leading and r.get(key) == token.encode():
    r.delete(key)
