"""A leader-elected scheduler in Python with redis-py's Lock, written as a team writes it: no
quiesce contract, its settings from its command line and environment.

  python3 scheduler.py REDIS_URL

Every replica tries to take the lock LOCK_NAME (redis-py `Lock`, a 3 s timeout renewed each
second). The one that holds it runs the job `report` on the wall clock's multiples of
INTERVAL_MS (500) and logs each run to the Redis list JOB_LOG as
{"instance": POD_NAME, "job": "report", "started_ms": ..., "ended_ms": ...}. A replica whose
renewal fails has lost the lock and stops running the job. On SIGTERM or SIGINT it stops
scheduling, releases the lock if it holds it, and exits. SCHEDULER_BUG makes it wrong:

  no-release    exits without releasing the lock: it lives on until its timeout runs out, and
                no replica can lead until then
  every-replica the job is scheduled on every replica, the lock only decides who logs "leads":
                each interval's job runs once per replica
"""

import json
import os
import signal
import sys
import time

CACHE = os.environ.get("QUIESCE_CACHE", os.path.expanduser("~/.cache/quiesce"))
sys.path.insert(0, os.path.join(CACHE, "python"))

import redis  # noqa: E402
from redis.exceptions import LockError  # noqa: E402

url = sys.argv[1]
lock_name = os.environ.get("LOCK_NAME", "scheduler:leader")
job_log = os.environ.get("JOB_LOG", "scheduler:runs")
me = os.environ.get("POD_NAME", f"scheduler-{os.getpid()}")
interval = int(os.environ.get("INTERVAL_MS", "500")) / 1000
bug = os.environ.get("SCHEDULER_BUG", "")

stopping = False


def stop(*_):
    global stopping
    stopping = True


signal.signal(signal.SIGTERM, stop)
signal.signal(signal.SIGINT, stop)

r = redis.Redis.from_url(url)
lock = r.lock(lock_name, timeout=3, blocking=False)
r.ping()
print("scheduler ready", flush=True)

leading = False
renewed = 0.0
next_run = (int(time.time() / interval) + 1) * interval
while not stopping:
    now = time.time()
    if not leading:
        if lock.acquire():
            leading, renewed = True, now
            next_run = (int(now / interval) + 1) * interval
            print(f"{me} leads", flush=True)
    elif now - renewed >= 1.0:
        try:
            lock.extend(3, replace_ttl=True)
            renewed = now
        except LockError:
            leading = False
            print(f"{me} lost the lock", flush=True)
    if (leading or bug == "every-replica") and now >= next_run:
        started = int(time.time() * 1000)
        time.sleep(0.02)  # the job's work
        ended = int(time.time() * 1000)
        run = {"instance": me, "job": "report", "started_ms": started, "ended_ms": ended}
        r.rpush(job_log, json.dumps(run))
        next_run += interval
        while next_run <= time.time():
            next_run += interval
    time.sleep(0.02)

if leading and bug != "no-release":
    try:
        lock.release()
        print(f"{me} released the lock", flush=True)
    except LockError:
        print(f"{me} no longer held the lock", flush=True)
print(f"{me} stopped", flush=True)
