"""A two-hop order chain in Python asyncio with aiokafka, written as a team writes it: no quiesce
contract, its settings from its command line and environment.

  python3 chain.py intake BOOTSTRAP IN_TOPIC MID_TOPIC GROUP
      consumes IN_TOPIC as GROUP, accepts each order (same key, same value) into MID_TOPIC,
      commits what it has handed on
  python3 chain.py worker BOOTSTRAP MID_TOPIC OUT_TOPIC GROUP
      consumes MID_TOPIC as GROUP, writes each processed order to OUT_TOPIC under the same key;
      with ORDERS_STORE set (an http:// URL), stores each order there first
  python3 chain.py store PORT
      the order store: an HTTP server on 127.0.0.1:PORT that loads for STORE_LOAD_MS (5000)
      before it answers /ready and takes writes (PUT /orders/KEY), 503 until then

Each creates the topic between them if it is not there yet, so either may start first. On
SIGTERM or SIGINT each stops taking input, flushes its producer, commits, and stops its
clients; when a rebalance takes partitions away (a replica joining), it first flushes and
commits what it took from them. CHAIN_BUG makes one of them wrong:

  worker-assumes-topic  the worker subscribes to MID_TOPIC without creating it: started before
                    the intake has created it, it waits for a topic that is not there

  intake-no-flush   commits what it consumed but never waits for its producer on the way out
                    (the lifespan's shutdown forgets `await producer.flush()`): orders it
                    accepted and committed can die in its send buffer

  worker-no-wait    the worker consumes as soon as it starts, without waiting for its store to
                    be ready; an order the store refuses is logged and skipped, as an
                    `except Exception: log` does, and committed with the rest

  worker-ignores-rebalance  the worker keeps the positions of every partition it ever read and
                    commits them all, with no rebalance listener: once a new member joins and
                    takes partitions away (a rolling update), its commit names partitions it
                    no longer owns, and aiokafka raises

  worker-no-close   the worker flushes and commits on the way out but never stops its
                    consumer (`await consumer.stop()` forgotten): it exits without LeaveGroup,
                    and the group keeps its partitions until its session times out

  worker-v2-warms-up  the new release (an instance a rollout or restart started: its run id
                    has an `@`) warms a cache for 12 s after it has joined and is ready, before
                    its first record: assigned its partitions, it consumes none of them

  worker-waits-handover  on the way out, if anyone else is in its group (the replacement a
                    rolling update starts beside it), the worker waits with no bound for its
                    partitions to be revoked before it stops its consumer, so that its
                    listener hands each one over; but a rebalance revokes them all and hands
                    it a share back, so while it is a member they never all go: it waits
                    until SIGKILL and never sends LeaveGroup. Alone (a plain stop), it leaves
                    at once
"""

import asyncio
import http.server
import os
import signal
import sys
import threading
import time
import urllib.error
import urllib.request

CACHE = os.environ.get("QUIESCE_CACHE") or os.path.join(
    os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "quiesce"
)
sys.path.insert(0, os.path.join(CACHE, "python"))

try:
    from aiokafka import AIOKafkaConsumer, AIOKafkaProducer  # noqa: E402
    from aiokafka.abc import ConsumerRebalanceListener  # noqa: E402
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


async def members(bootstrap, group):
    """The members of GROUP, as its coordinator has them now."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        [described] = await admin.describe_consumer_groups([group])
    finally:
        await admin.close()
    return [member[0] for member in described.groups[0][5]]


def store(port):
    """The order store: refuses everything while it loads, then keeps what it is given."""
    loaded_at = time.monotonic() + int(os.environ.get("STORE_LOAD_MS", "5000")) / 1000
    orders = {}

    class Handler(http.server.BaseHTTPRequestHandler):
        def answer(self, status):
            self.send_response(status)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def do_GET(self):
            if self.path != "/ready":
                return self.answer(404)
            self.answer(200 if time.monotonic() >= loaded_at else 503)

        def do_PUT(self):
            body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
            if not self.path.startswith("/orders/"):
                return self.answer(404)
            if time.monotonic() < loaded_at:
                return self.answer(503)
            orders[self.path[len("/orders/"):]] = body
            self.answer(204)

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", int(port)), Handler)
    stopped = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stopped.set())
    threading.Thread(target=server.serve_forever, daemon=True).start()
    print("store loading", flush=True)
    # Polled, not waited: the handler runs in this thread, and would block on the lock an
    # Event.wait here holds (a stop that hangs, one signal in many).
    while not stopped.is_set():
        time.sleep(0.1)
    server.shutdown()
    server.server_close()
    print(f"store stopped with {len(orders)} orders", flush=True)


def put(url, key, value):
    """Stores one order: raises unless the store took it."""
    request = urllib.request.Request(f"{url}/orders/{key}", data=value, method="PUT")
    with urllib.request.urlopen(request, timeout=5) as answer:
        answer.read()


async def store_ready(url, stop):
    """Waits, as long as it takes or until the stop, for the store to answer /ready."""
    loop = asyncio.get_running_loop()

    def ready():
        try:
            with urllib.request.urlopen(f"{url}/ready", timeout=2) as answer:
                return answer.status == 200
        except (OSError, urllib.error.URLError):
            return False

    while not stop.is_set():
        if await loop.run_in_executor(None, ready):
            return True
        try:
            await asyncio.wait_for(stop.wait(), 0.2)
        except asyncio.TimeoutError:
            pass
    return False


async def store_order(url, record, bug, stop):
    """Stores one order: True once stored; False for one the buggy worker skipped; None when
    the stop came before the store took it (not done: not committed)."""
    loop = asyncio.get_running_loop()
    key = record.key.decode()
    while True:
        try:
            await loop.run_in_executor(None, put, url, key, record.value)
            return True
        except (OSError, urllib.error.URLError) as e:
            if bug == "worker-no-wait":
                print(f"worker: order {key} not stored ({e}): skipped", flush=True)
                return False
        try:
            await asyncio.wait_for(stop.wait(), 0.2)
            return None
        except asyncio.TimeoutError:
            pass


async def main(role, bootstrap, source, sink, group, bug):
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    loop.add_signal_handler(signal.SIGINT, stop.set)
    orders_store = os.environ.get("ORDERS_STORE") if role == "worker" else None
    if orders_store and bug != "worker-no-wait" and not await store_ready(orders_store, stop):
        print(f"{role} stopped before its store was ready", flush=True)
        return

    middle = sink if role == "intake" else source
    if not (role == "worker" and bug == "worker-assumes-topic"):
        await ensure_topic(bootstrap, middle)
    consumer = AIOKafkaConsumer(
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
    positions = {}
    # Held while one record is taken in hand: a rebalance waits for it to be done, so what
    # this member commits on the way out covers everything it sent.
    busy = asyncio.Lock()

    ignores_rebalance = role == "worker" and bug == "worker-ignores-rebalance"

    def owned():
        """The positions of the partitions this member still owns."""
        if ignores_rebalance:
            return dict(positions)
        assigned = consumer.assignment()
        return {
            tp: offset
            for tp, offset in positions.items()
            if tp in assigned and tp not in handed_over
        }

    # Partitions handed over in a rebalance and not yet given back: records of theirs already
    # fetched are not processed (their new owner starts at the commit), however long the
    # client still lists them as assigned while the rebalance completes.
    handed_over = set()

    class HandOver(ConsumerRebalanceListener):
        """Before partitions go to another member (a replica joining or leaving): what was
        taken from them is handed on and committed, so their new owner starts there."""

        async def on_partitions_revoked(self, revoked):
            async with busy:
                handed_over.update(revoked)
                if not (role == "intake" and bug == "intake-no-flush"):
                    await producer.flush()
                handed = {tp: positions.pop(tp) for tp in revoked if tp in positions}
                if handed:
                    await consumer.commit(handed)

        async def on_partitions_assigned(self, assigned):
            async with busy:
                handed_over.difference_update(assigned)

    if ignores_rebalance:
        consumer.subscribe([source])
    else:
        consumer.subscribe([source], listener=HandOver())
    await consumer.start()
    await producer.start()
    print(f"{role} ready", flush=True)
    if bug == "worker-v2-warms-up" and role == "worker" and "@" in os.environ["QUIESCE_RUN_ID"]:
        try:
            await asyncio.wait_for(stop.wait(), 12)
        except asyncio.TimeoutError:
            pass

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
                async with busy:
                    # A rebalance may take the partition away mid-batch: its new owner has
                    # it from the offset committed on the way out.
                    if (tp in handed_over or tp not in consumer.assignment()) and not ignores_rebalance:
                        break
                    kept = True
                    if orders_store:
                        kept = await store_order(orders_store, record, bug, stop)
                        if kept is None:
                            break
                    if kept:
                        sent.append(
                            await producer.send(sink, key=record.key, value=record.value)
                        )
                    positions[tp] = record.offset + 1
        if role == "intake" and bug == "intake-no-flush":
            # Committed as soon as handed to the producer, delivered or not.
            if owned():
                await consumer.commit(owned())
            continue
        if sent:
            await asyncio.gather(*sent)
        if owned():
            await consumer.commit(owned())

    handover = role == "worker" and bug == "worker-waits-handover"
    if handover and len(await members(bootstrap, group)) > 1:
        # In a rolling update our replacement has joined the group by the time we are told
        # to stop: stay until it has taken our partitions over, so that our listener hands
        # each one over (flush, commit) as it is revoked and the new owner starts where we
        # stopped. Alone in the group, nobody will take them, and we leave at once.
        while consumer.assignment():
            await asyncio.sleep(0.1)

    if not (role == "intake" and bug == "intake-no-flush"):
        await producer.flush()
        if owned():
            await consumer.commit(owned())
        await producer.stop()
    if role == "worker" and bug == "worker-no-close":
        print(f"{role} stopped", flush=True)
        os._exit(0)
    await consumer.stop()
    print(f"{role} stopped", flush=True)


role = sys.argv[1] if len(sys.argv) > 1 else ""
if role == "store" and len(sys.argv) == 3:
    store(sys.argv[2])
    sys.exit(0)
if role not in ("intake", "worker") or len(sys.argv) != 6:
    print("usage: chain.py intake|worker BOOTSTRAP SOURCE SINK GROUP | store PORT", file=sys.stderr)
    sys.exit(2)
loop = asyncio.new_event_loop()
loop.run_until_complete(main(*sys.argv[1:], os.environ.get("CHAIN_BUG", "")))
loop.close()
