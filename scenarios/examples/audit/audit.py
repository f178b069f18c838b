"""audit: appends every payment event it reads to the audit trail. An ordinary kafka-python
service, not written for quiesce: its own variable names, its own JSON in, and no output
topic (the trail is a file, as it would be a database table).

Reads JSON payments ({"payment_id": "...", "cents": N}) from PAYMENTS_TOPIC as group GROUP_ID,
appends each to AUDIT_FILE (a write that takes AUDIT_WRITE_MS), logs `audited payment <id>`,
and commits what it audited after each batch. On SIGTERM or SIGINT it finishes the payment in
hand, commits, and closes its consumer (which leaves the group).

AUDIT_BUG, the mistakes the example's failing rows make (empty: none):
  exit-without-close   exits straight after the final commit, the consumer never closed: it
                       stays in its group until the session timeout
  autocommit-mid-batch relies on kafka-python's auto-commit, which commits the position: the
                       whole batch polled, audited or not, when the consumer closes mid-batch
"""

import json
import logging
import os
import signal
import sys
import time

from kafka import KafkaConsumer, OffsetAndMetadata

BOOTSTRAP = os.environ["KAFKA_BOOTSTRAP_SERVERS"]
TOPIC = os.environ.get("PAYMENTS_TOPIC", "payments")
GROUP = os.environ.get("GROUP_ID", "audit")
TRAIL = os.environ.get("AUDIT_FILE", "audit.jsonl")
WRITE = int(os.environ.get("AUDIT_WRITE_MS", "5")) / 1000
BUG = os.environ.get("AUDIT_BUG", "")

logging.basicConfig(stream=sys.stderr, level=logging.WARNING)
running = True


def stop(signum, frame):
    global running
    running = False


def main():
    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    auto = BUG == "autocommit-mid-batch"
    consumer = KafkaConsumer(
        TOPIC,
        bootstrap_servers=BOOTSTRAP,
        group_id=GROUP,
        enable_auto_commit=auto,
        auto_offset_reset="earliest",
        session_timeout_ms=10000,
    )
    print(f"audit: consuming {TOPIC} as {GROUP}", flush=True)
    audited = {}
    count = 0
    with open(TRAIL, "a") as trail:
        while running:
            batch = consumer.poll(timeout_ms=100, max_records=100)
            for tp, records in batch.items():
                for record in records:
                    if not running:
                        break
                    payment = json.loads(record.value)
                    trail.write(json.dumps(payment) + "\n")
                    trail.flush()
                    time.sleep(WRITE)
                    print(f"audited payment {payment['payment_id']}", flush=True)
                    audited[tp] = record.offset + 1
                    count += 1
            if not auto and audited:
                consumer.commit({tp: OffsetAndMetadata(o, "", -1) for tp, o in audited.items()})
    if not auto and audited:
        consumer.commit({tp: OffsetAndMetadata(o, "", -1) for tp, o in audited.items()})
    print(f"audit: stopping after {count} payment(s)", flush=True)
    if BUG == "exit-without-close":
        os._exit(0)
    consumer.close()


if __name__ == "__main__":
    main()
