"""orders: ships each order it reads. An ordinary confluent-kafka service, not written for
quiesce: its own variable names, its own JSON in and out, no probe, no output contract.

Reads JSON orders ({"order_id": "...", "amount": N}) from ORDERS_TOPIC as group GROUP_ID,
writes a shipment ({"order_id": ..., "status": "shipped", "amount": N}) to SHIPMENTS_TOPIC
under the order's key with an `order-id` header, prints `shipped order <id>`, and commits
what it shipped every COMMIT_EVERY orders. On SIGTERM or SIGINT it stops polling, flushes its
producer, commits, and closes its consumer (which leaves the group).

ORDERS_BUG, the mistakes the example's failing rows make (empty: none):
  exit-without-close  exits straight after the final commit, the consumer never closed: it
                      stays in its group until the session timeout
  no-final-commit     commits every COMMIT_EVERY orders, but not on the way out
  no-flush            commits and closes, but never flushes its producer: the shipments it
                      still queues are dropped with it at exit, their orders committed
"""

import json
import os
import signal
import sys

from confluent_kafka import Consumer, KafkaError, Producer

BOOTSTRAP = os.environ["KAFKA_BOOTSTRAP_SERVERS"]
ORDERS = os.environ.get("ORDERS_TOPIC", "orders")
SHIPMENTS = os.environ.get("SHIPMENTS_TOPIC", "shipments")
GROUP = os.environ.get("GROUP_ID", "orders-service")
BUG = os.environ.get("ORDERS_BUG", "")
COMMIT_EVERY = 499

running = True


def stop(signum, frame):
    global running
    running = False


def parse(value):
    """The order in `value`, or None: a service validates what it reads."""
    try:
        order = json.loads(value)
    except (TypeError, ValueError):
        return None
    if not isinstance(order, dict):
        return None
    if not isinstance(order.get("order_id"), str) or not isinstance(order.get("amount"), int):
        return None
    return order


def main():
    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    consumer = Consumer(
        {
            "bootstrap.servers": BOOTSTRAP,
            "group.id": GROUP,
            "enable.auto.commit": False,
            "auto.offset.reset": "earliest",
            "session.timeout.ms": 10000,
        }
    )
    # Shipments are batched for up to two seconds: what is queued at the stop goes out only by
    # a flush. (The stop comes once a batch is seen: the next ones are then younger than the
    # time to stop, by far. With half a second, a slow stop sometimes found them sent.)
    producer = Producer({"bootstrap.servers": BOOTSTRAP, "linger.ms": 2000})
    consumer.subscribe([ORDERS])
    print(f"orders: consuming {ORDERS} as {GROUP}", flush=True)

    positions = {}
    handled = 0
    rejected = 0

    def commit():
        from confluent_kafka import TopicPartition

        if positions:
            consumer.commit(
                offsets=[TopicPartition(ORDERS, p, o) for p, o in positions.items()],
                asynchronous=False,
            )

    while running:
        msg = consumer.poll(0.1)
        if msg is None:
            continue
        if msg.error():
            if msg.error().code() != KafkaError._PARTITION_EOF:
                print(f"orders: {msg.error()}", file=sys.stderr, flush=True)
            continue
        order = parse(msg.value())
        if order is None:
            rejected += 1
            print(f"orders: rejected {msg.value()[:60]!r}", file=sys.stderr, flush=True)
        else:
            shipment = {"order_id": order["order_id"], "status": "shipped", "amount": order["amount"]}
            producer.produce(
                SHIPMENTS,
                key=msg.key(),
                value=json.dumps(shipment),
                headers=[("order-id", order["order_id"])],
            )
            producer.poll(0)
            print(f"shipped order {order['order_id']}", flush=True)
        positions[msg.partition()] = msg.offset() + 1
        handled += 1
        if handled % COMMIT_EVERY == 0:
            # What is committed has been delivered.
            producer.flush(30)
            commit()

    if BUG != "no-flush":
        producer.flush(30)
    if BUG != "no-final-commit":
        commit()
    print(f"orders: stopping after {handled} order(s), {rejected} rejected", flush=True)
    if BUG == "exit-without-close":
        sys.stdout.flush()
        os._exit(0)
    consumer.close()


if __name__ == "__main__":
    main()
