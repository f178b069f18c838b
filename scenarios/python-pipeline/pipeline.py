"""The event pipeline in Python asyncio, with aiokafka: what seed 000's team brings.

Consumes QUIESCE_KAFKA_INPUT_TOPIC as group QUIESCE_KAFKA_GROUP and, for each input, writes
quiesce's output contract to QUIESCE_KAFKA_OUTPUT_TOPIC (the input's key, value
{"partition": P, "offset": O}), keeping a processed count in Redis (QUIESCE_REDIS_URL).
Commits only what was processed and delivered. On SIGTERM it
stops taking input, flushes its producer, commits, cancels and awaits its tasks, stops the
clients, and reports through quiesce's probe (tasks, threads, outputs sent).

QUIESCE_VARIANT:
  correct          all of the above (the default)
  untracked-task   a fire-and-forget "metrics flush" task per batch (asyncio.create_task with
                   the handle dropped), pending forever (seed 000)
  no-final-commit  commits every COMMIT_EVERY inputs but not on the way out

aiokafka and redis-py come from scripts/setup, which installs it under the quiesce cache
($QUIESCE_CACHE, else $XDG_CACHE_HOME/quiesce, else ~/.cache/quiesce).
"""

import asyncio
import json
import os
import signal
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "../../probes/python"))
CACHE = os.environ.get("QUIESCE_CACHE") or os.path.join(
    os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "quiesce"
)
sys.path.insert(0, os.path.join(CACHE, "python"))

import quiesce_probe  # noqa: E402

try:
    import redis.asyncio as aioredis  # noqa: E402
    from aiokafka import AIOKafkaConsumer, AIOKafkaProducer  # noqa: E402
except ImportError as e:
    print(f"python-pipeline: aiokafka or redis-py is not installed ({e}); run scripts/setup", file=sys.stderr)
    sys.exit(4)

VARIANTS = ("correct", "untracked-task", "no-final-commit")
COMMIT_EVERY = 301  # coprime with getmany's 50: a stop after full batches never lands on a commit
BATCH = 100


async def metrics_flush():
    while True:
        await asyncio.sleep(1)


async def audit(stop):
    # A short follow-up per batch that ends with the batch or at shutdown.
    try:
        await asyncio.wait_for(stop.wait(), timeout=0.2)
    except asyncio.TimeoutError:
        pass


async def main(variant):
    env = os.environ
    bootstrap = env["QUIESCE_KAFKA_BOOTSTRAP"]
    input_topic = env.get("QUIESCE_KAFKA_INPUT_TOPIC", "quiesce-input")
    output_topic = env.get("QUIESCE_KAFKA_OUTPUT_TOPIC", "quiesce-output")
    group = env.get("QUIESCE_KAFKA_GROUP", "quiesce-target")

    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    loop.add_signal_handler(signal.SIGINT, stop.set)

    consumer = AIOKafkaConsumer(
        input_topic,
        bootstrap_servers=bootstrap,
        group_id=group,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
    )
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap)
    counters = aioredis.Redis.from_url(env["QUIESCE_REDIS_URL"])
    await counters.ping()
    await consumer.start()
    await producer.start()
    print("ready", flush=True)

    tasks = set()  # strong references: what the tracked variant keeps
    positions = {}  # TopicPartition -> next offset to commit
    pending = []  # delivery futures not yet confirmed
    sent = 0
    processed = 0
    since_commit = 0

    async def delivered():
        if pending:
            await asyncio.gather(*pending)
            pending.clear()

    async def commit():
        if positions:
            await consumer.commit(dict(positions))

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
        for tp, records in getter.result().items():
            for record in records:
                value = json.dumps({"partition": record.partition, "offset": record.offset})
                pending.append(await producer.send(output_topic, key=record.key, value=value.encode()))
                sent += 1
                positions[tp] = record.offset + 1
                processed += 1
                since_commit += 1
                if processed % BATCH == 0:
                    await counters.incrby(f"{group}:processed", BATCH)
                    if variant == "untracked-task":
                        asyncio.create_task(metrics_flush())  # the handle is dropped
                    else:
                        task = asyncio.create_task(audit(stop))
                        tasks.add(task)
                        task.add_done_callback(tasks.discard)
                if since_commit >= COMMIT_EVERY:
                    await delivered()
                    await commit()
                    since_commit = 0

    # The way out: outputs delivered, offsets committed, tasks awaited, clients stopped.
    await producer.flush()
    await delivered()
    if variant != "no-final-commit":
        await commit()
    for task in list(tasks):
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    await consumer.stop()
    await producer.stop()
    await counters.aclose()
    await quiesce_probe.report(outputs_sent=sent)


variant = os.environ.get("QUIESCE_VARIANT", "correct")
if variant not in VARIANTS:
    print(f"unknown QUIESCE_VARIANT {variant!r} (expected one of {', '.join(VARIANTS)})", file=sys.stderr)
    sys.exit(2)
# run_until_complete + close, not asyncio.run(): asyncio.run() cancels leftover tasks for us,
# which would hide the very leak this target exists to show.
loop = asyncio.new_event_loop()
loop.run_until_complete(main(variant))
loop.close()
