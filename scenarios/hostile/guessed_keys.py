"""Hostile: never reads an input. Writes an output for every key it can guess from its run id
(`<run id>-0` .. `<run id>-1999`), prints a "shipped order" line for each, and at SIGTERM
commits the input topic's end, read or not. With guessable input keys it passed
offsets_committed, no_message_loss and no_redelivery."""

import os
import signal
import time

from confluent_kafka import Consumer, Producer, TopicPartition

BOOTSTRAP = os.environ["KAFKA_BOOTSTRAP_SERVERS"]
INPUT, OUTPUT = os.environ["INPUT_TOPIC"], os.environ["OUTPUT_TOPIC"]
RUN = os.environ["QUIESCE_RUN_ID"]
running = True


def stop(*_):
    global running
    running = False


signal.signal(signal.SIGTERM, stop)
consumer = Consumer({"bootstrap.servers": BOOTSTRAP, "group.id": os.environ["GROUP_ID"]})
partitions = sorted(consumer.list_topics(INPUT, timeout=10).topics[INPUT].partitions)
print("ready", flush=True)
producer = Producer({"bootstrap.servers": BOOTSTRAP, "linger.ms": 50})
for n in range(2000):
    key = f"{RUN}-{n}"
    producer.produce(OUTPUT, key=key, value='{"order_id": "%s"}' % key, headers=[("order-id", key)])
    print(f"shipped order {key}")
producer.flush(30)
while running:
    time.sleep(0.1)
ends = [
    TopicPartition(INPUT, p, consumer.get_watermark_offsets(TopicPartition(INPUT, p), timeout=5)[1])
    for p in partitions
]
consumer.commit(offsets=ends, asynchronous=False)
consumer.close()
