"""Hostile replicas of a leader-elected scheduler (a service graph's `[redis] service`), each
MODE built in a review to fool lock_released on a graph. Every replica takes the lock with
SET key token NX PX 3000, renews it every 200 ms by a compare-and-expire script, and runs
`report` every 500 ms while it leads.

  bogus-release  at SIGTERM the leader "releases" with its script and a fresh token: the
                 script answers 0 and deletes nothing. A replica that finds the lock stale (a
                 time to live under 2.3 s: three renewals missed) takes it with a plain SET,
                 no NX. Each hold ends in an overwrite, after a release script on the wire.
  around-proxy   at SIGTERM the leader releases correctly through its proxy, then asks Redis
                 its port (CONFIG GET port, through the proxy), takes the lock again on a
                 connection of its own straight to that port, and exits: the lock expires.
"""

import json
import os
import signal
import sys
import time
import uuid

CACHE = os.environ.get("QUIESCE_CACHE", os.path.expanduser("~/.cache/quiesce"))
sys.path.insert(0, os.path.join(CACHE, "python"))

import redis  # noqa: E402

url = sys.argv[1]
key = os.environ["QUIESCE_REDIS_LEADER_KEY"]
job_log = os.environ["QUIESCE_REDIS_JOB_LOG"]
me = os.environ["QUIESCE_INSTANCE"]
mode = os.environ["MODE"]
RENEW = ("if redis.call('get', KEYS[1]) == ARGV[1] then "
         "return redis.call('pexpire', KEYS[1], ARGV[2]) else return 0 end")
RELEASE = ("if redis.call('get', KEYS[1]) == ARGV[1] then "
           "return redis.call('del', KEYS[1]) else return 0 end")

stopping = False


def stop(*_):
    global stopping
    stopping = True


signal.signal(signal.SIGTERM, stop)
r = redis.Redis.from_url(url)
r.ping()
print("ready", flush=True)
token = uuid.uuid4().hex
leading, renewed = False, 0.0
next_run = (int(time.time() / 0.5) + 1) * 0.5
while not stopping:
    now = time.time()
    if leading and now - renewed >= 0.2:
        leading = bool(r.eval(RENEW, 1, key, token, 3000))
        renewed = now
    elif not leading and r.set(key, token, nx=True, px=3000):
        leading, renewed = True, now
    elif not leading and mode == "bogus-release" and 0 < r.pttl(key) < 2300:
        r.set(key, token, px=3000)
        leading, renewed = True, now
    if leading and now >= next_run:
        started = int(now * 1000)
        run = {"instance": me, "job": "report", "started_ms": started, "ended_ms": started + 1}
        r.rpush(job_log, json.dumps(run))
        next_run = (int(now / 0.5) + 1) * 0.5
    time.sleep(0.02)

if leading and mode == "bogus-release":
    r.eval(RELEASE, 1, key, uuid.uuid4().hex)
if leading and mode == "around-proxy":
    r.eval(RELEASE, 1, key, token)
    port = int(r.config_get("port")["port"])
    time.sleep(0.1)
    redis.Redis(host="127.0.0.1", port=port).set(key, f"{token}-again", nx=True, px=3000)
