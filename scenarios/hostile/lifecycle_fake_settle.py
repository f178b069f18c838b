"""Hostile: on SIGTERM it takes 2.5 s to stop, and its probe file claims 2.4 s of that was the
probe waiting for tasks to settle. stops_within once subtracted the claim and passed."""

import json
import os
import signal
import sys
import time


def stop(*_):
    time.sleep(2.5)
    path = os.environ.get("QUIESCE_PROBE_FILE")
    if path:
        record = {
            "schema": 1,
            "runtime": "python-asyncio",
            "settle_ms": 2400,
            "tasks": {"alive": 0, "items": []},
            "threads": {"alive": 0, "items": []},
        }
        with open(path, "w", encoding="utf-8") as f:
            json.dump(record, f)
    sys.exit(0)


signal.signal(signal.SIGTERM, stop)
print("ready", flush=True)
while True:
    time.sleep(0.1)
