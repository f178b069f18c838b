"""Hostile: a correct leader (its own token, released at the stop) that runs its job once per
interval but prints each run with a plain print() to a file: block-buffered, so every line
reaches the log at exit, at once. Timed when read, the runs would all look simultaneous (a
false FAIL) and nothing says when they ran: the job checks must be inconclusive."""

import os
import signal
import time
import uuid

import redis

r = redis.Redis.from_url(os.environ["QUIESCE_REDIS_URL"])
key = os.environ["QUIESCE_REDIS_LEADER_KEY"]
token = f"{os.getpid()}-{uuid.uuid4()}"
every = 0.5
stopping = False


def stop(*_):
    global stopping
    stopping = True


signal.signal(signal.SIGTERM, stop)
print("ready", flush=True)
leading = False
next_run = None
while not stopping:
    if not leading and r.set(key, token, nx=True, px=3000):
        leading = True
        next_run = (time.time() // every + 1) * every
    elif leading:
        r.pexpire(key, 3000)
        if time.time() >= next_run:
            print("ran report")  # the bug under test: no flush
            next_run += every
    time.sleep(0.02)
if leading and r.get(key) == token.encode():
    r.delete(key)
