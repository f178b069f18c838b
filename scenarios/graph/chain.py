"""A two-hop order chain in Python asyncio with aiokafka, written as a team writes it: no quiesce
contract, its settings from its command line and environment.

  python3 chain.py intake BOOTSTRAP IN_TOPIC MID_TOPIC GROUP
      consumes IN_TOPIC as GROUP, accepts each order (same key, same value) into MID_TOPIC,
      commits what it has handed on
  python3 chain.py worker BOOTSTRAP MID_TOPIC OUT_TOPIC GROUP
      consumes MID_TOPIC as GROUP, writes each processed order to OUT_TOPIC under the same key

Each creates the topic between them if it is not there yet, so either may start first. On
SIGTERM or SIGINT each stops taking input, flushes its producer, commits, and stops its
clients. CHAIN_BUG makes one of them wrong:

  worker-assumes-topic  the worker subscribes to MID_TOPIC without creating it: started before
                    the intake has created it, it waits for a topic that is not there

  intake-no-flush   commits what it consumed but never waits for its producer on the way out
                    (the lifespan's shutdown forgets `await producer.flush()`): orders it
                    accepted and committed can die in its send buffer
"""

import asyncio
import os
import signal
import sys

CACHE = os.environ.get("QUIESCE_CACHE") or os.path.join(
    os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "quiesce"
)
sys.path.insert(0, os.path.join(CACHE, "python"))

try:
    from aiokafka import AIOKafkaConsumer, AIOKafkaProducer  # noqa: E402
    from aiokafka.admin import AIOKafkaAdminClient, NewTopic  # noqa: E402
    from aiokafka.errors import TopicAlreadyExistsError  # noqa: E402
except ImportError as e:
    print(f"chain: aiokafka is not installed ({e}); run scripts/setup", file=sys.stderr)
    sys.exit(4)


async def ensure_topic(bootstrap, topic):
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(topic, num_partitions=3, replication_factor=1)])
    except TopicAlreadyExistsError:
        pass
    finally:
        await admin.close()


async def main(role, bootstrap, source, sink, group, bug):
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    loop.add_signal_handler(signal.SIGINT, stop.set)

    middle = sink if role == "intake" else source
    if not (role == "worker" and bug == "worker-assumes-topic"):
        await ensure_topic(bootstrap, middle)
    consumer = AIOKafkaConsumer(
        source,
        bootstrap_servers=bootstrap,
        group_id=group,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
    )
    # The intake batches its orders for up to a second, as a service tuned for throughput
    # does: they wait in its send buffer until then, or until a flush. The variant that never
    # flushes lingers three: the stop comes once a batch is seen, and under load its exit
    # took over a second, long enough for the next batches to leave by themselves (a CI run
    # lost nothing). Its commits do not wait for the sends, so the linger costs it nothing.
    linger = 50
    if role == "intake":
        linger = 3000 if bug == "intake-no-flush" else 1000
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=linger)
    await consumer.start()
    await producer.start()
    print(f"{role} ready", flush=True)

    positions = {}
    while not stop.is_set():
        getter = asyncio.ensure_future(consumer.getmany(timeout_ms=100, max_records=50))
        stopper = asyncio.ensure_future(stop.wait())
        done, _ = await asyncio.wait({getter, stopper}, return_when=asyncio.FIRST_COMPLETED)
        if getter not in done:
            getter.cancel()
            try:
                await getter
            except asyncio.CancelledError:
                pass
            break
        stopper.cancel()
        sent = []
        for tp, records in getter.result().items():
            for record in records:
                sent.append(await producer.send(sink, key=record.key, value=record.value))
                positions[tp] = record.offset + 1
        if role == "intake" and bug == "intake-no-flush":
            # Committed as soon as handed to the producer, delivered or not.
            if positions:
                await consumer.commit(dict(positions))
            continue
        if sent:
            await asyncio.gather(*sent)
        if positions:
            await consumer.commit(dict(positions))

    if not (role == "intake" and bug == "intake-no-flush"):
        await producer.flush()
        if positions:
            await consumer.commit(dict(positions))
        await producer.stop()
    await consumer.stop()
    print(f"{role} stopped", flush=True)


role = sys.argv[1]
if role not in ("intake", "worker") or len(sys.argv) != 6:
    print("usage: chain.py intake|worker BOOTSTRAP SOURCE SINK GROUP", file=sys.stderr)
    sys.exit(2)
loop = asyncio.new_event_loop()
loop.run_until_complete(main(*sys.argv[1:], os.environ.get("CHAIN_BUG", "")))
loop.close()
