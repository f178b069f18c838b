"""settle: the orders team's scheduler. An ordinary redis-py service, not written for quiesce:
its own variable names, redis-py's `Lock` (whose value is a random token, not a name), and a
log line per job run.

Every SETTLE_EVERY_MS (on the wall clock's multiples of it, so a replica that takes over runs
at the next one) it settles the day's shipments and reconciles payments, but only on the
instance that holds the lock SETTLE_LOCK (so two replicas never settle twice). The lock has a
SETTLE_LOCK_TTL_MS lease, extended while the instance leads; a replica that does not hold it
tries again every 100 ms. On SIGTERM or SIGINT it finishes the run in hand, releases the lock
(so a replica takes over at once) and exits.

SETTLE_BUG, the mistakes the example's failing rows make (empty: none):
  lock-left-to-expire  exits without releasing the lock: replicas wait out its lease
  registered-twice     the settle job is scheduled twice (a second scheduler thread): it runs
                       twice per interval
"""

import logging
import os
import signal
import sys
import threading
import time

import redis
from redis.exceptions import LockError

REDIS_URL = os.environ["REDIS_URL"]
LOCK = os.environ.get("SETTLE_LOCK", "settle:leader")
EVERY = int(os.environ.get("SETTLE_EVERY_MS", "500")) / 1000
TTL = int(os.environ.get("SETTLE_LOCK_TTL_MS", "5000")) / 1000
BUG = os.environ.get("SETTLE_BUG", "")

logging.basicConfig(stream=sys.stderr, level=logging.INFO, format="%(asctime)s %(message)s")
log = logging.getLogger("settle")
stopping = threading.Event()


def stop(signum, frame):
    stopping.set()


def settle_shipments():
    time.sleep(0.02)
    log.info("settle: ran settle-shipments")


def reconcile_payments():
    time.sleep(0.01)
    log.info("settle: ran reconcile-payments")


def scheduler(leading, jobs):
    """Runs `jobs` at each multiple of EVERY on the wall clock while `leading` is set."""
    next_run = None
    while not stopping.is_set():
        if not leading.is_set():
            next_run = None
        else:
            if next_run is None:
                # When this replica starts leading: the next multiple.
                next_run = (time.time() // EVERY + 1) * EVERY
            if time.time() >= next_run:
                for job in jobs:
                    job()
                next_run += EVERY
        stopping.wait(0.01)


def main():
    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    client = redis.Redis.from_url(REDIS_URL)
    lock = client.lock(LOCK, timeout=TTL)
    leading = threading.Event()
    threads = [threading.Thread(target=scheduler, args=(leading, [settle_shipments, reconcile_payments]))]
    if BUG == "registered-twice":
        threads.append(threading.Thread(target=scheduler, args=(leading, [settle_shipments])))
    for t in threads:
        t.start()
    log.info("settle: started")
    last_extend = 0.0
    while not stopping.is_set():
        try:
            if not leading.is_set():
                if lock.acquire(blocking=False):
                    log.info("settle: leading")
                    leading.set()
                    last_extend = time.monotonic()
            elif time.monotonic() - last_extend >= TTL / 3:
                lock.extend(TTL, replace_ttl=True)
                last_extend = time.monotonic()
        except LockError:
            log.info("settle: lost the lock")
            leading.clear()
        except redis.RedisError as e:
            log.info(f"settle: redis: {e}")
        # Slept, not stopping.wait: the signal handler runs in this thread, and its
        # stopping.set() would block forever on the lock a wait here holds.
        time.sleep(0.1)
    leading.clear()
    for t in threads:
        t.join()
    if lock.owned() and BUG != "lock-left-to-expire":
        lock.release()
    log.info("settle: stopped")


if __name__ == "__main__":
    main()
