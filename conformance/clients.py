"""One conformance case with one Kafka client library, against a running broker.

    python3 clients.py CLIENT CASE --bootstrap HOST:PORT --topic T --group G [--records N]

CLIENT is confluent-kafka, kafka-python or aiokafka. The script does what a service would do
with that client and prints one JSON object of what it observed; it judges nothing. quiesce
(`quiesce conformance`) judges the observations against what Kafka guarantees.

Cases (every one starts with a batching producer: linger 50 ms, up to 100 records a batch):
  resume-record  consume LIMIT records in a group committing each one synchronously, close;
                 a new consumer in the group reads the rest
  resume-batch   the same, committing once after each poll's records
  rejoin         four consumers in turn, each started the moment the last closed, each
                 consuming a share and committing each record; a last one reads the rest
  seek           commit, on each partition, an offset in the middle of what was produced,
                 then a consumer in the group reads from there
  end            read everything, then ask for the end offsets (ListOffsets) and the high
                 watermark the last fetch reported
  describe       two consumers share the group, the first closes, the second reads the rest;
                 then DescribeGroups, with the second still in the group
  rollout        a rolling update: the first consumer reads a sixth; the second subscribes
                 and is polled until the broker gave it a member id, then 0.5 s more, its
                 join held for the first to rejoin; the first closes then, inside that
                 rebalance; the second reads the rest
  outage         produce half; print `cut produce` and wait for `down` on stdin (the harness
  restart        has taken the broker away: its proxy down, or the broker stopped); produce
                 the other half with the same producer; consume a quarter committing each
                 record, print `cut consume`, wait for `down`, read on to a half (commits
                 retried until the broker is back), close; a new consumer reads the rest.
                 "done" says when each crossing ended (epoch ms)

Output: {"produced": [[partition, offset, value], ...], "phases": [[[p, o, v], ...], ...],
         "limits": [records each phase was to consume], "committed": {partition: offset},
         "ends": {partition: [fetch_high, list_end]},
         "described": {"state": S, "members": [member id, ...], "survivor": member id},
         "rollout": {"member_id": the second's at the close, "assigned_at_close": N,
                     "read_before_close": N, "pending_ms": its join's wait at the close,
                     "took_ms": from the close to its first record},
         "done": {"produce": ms, "consume": ms}, "commit_retries": N}
Every wait is bounded: a phase ends IDLE seconds after its last record, FIRST seconds without
any, or DEADLINE seconds in all.
"""

import argparse
import asyncio
import json
import sys
import time

LINGER_MS = 50
BATCH_RECORDS = 100
# a producer's retries through a broker that is away (kafka-python's default differs by version)
RETRIES = 1_000_000
IDLE = 6.0
# the same in the outage and restart cases: the broker's absence and the client's reconnect
# backoff included (a container's stop and start takes seconds more than a process's)
IDLE_ACROSS_CUTS = 20.0
FIRST = 30.0
DEADLINE = 90.0
# the first phase's share of the records (resume cases) and each rejoin consumer's share
LIMIT_SHARE = 250 / 600
REJOIN_CONSUMERS = 4
# how long the rollout case's second consumer waits in its join, the broker holding it for
# the first consumer to rejoin, before the first closes
PENDING = 0.5


def value_of(raw):
    return raw.decode() if isinstance(raw, (bytes, bytearray)) else str(raw)


# --- confluent-kafka (librdkafka) ----------------------------------------------------------------


class Confluent:
    def __init__(self, bootstrap):
        import confluent_kafka

        self.ck = confluent_kafka
        self.bootstrap = bootstrap

    def producer(self, topic):
        producer = self.ck.Producer(
            {
                "bootstrap.servers": self.bootstrap,
                "linger.ms": LINGER_MS,
                "batch.num.messages": BATCH_RECORDS,
                "enable.idempotence": False,
            }
        )

        def send(values):
            acked = []
            errors = []

            def report(err, msg):
                if err is not None:
                    errors.append(str(err))
                else:
                    acked.append([msg.partition(), msg.offset(), value_of(msg.value())])

            for i in values:
                producer.produce(topic, str(i).encode(), on_delivery=report)
                producer.poll(0)
            left = producer.flush(DEADLINE)
            if left or errors:
                raise RuntimeError(f"produce: {left} unflushed, errors {errors[:3]}")
            return acked

        return Sender(send, lambda: producer.flush(5))

    def consumer(self, group):
        return self.ck.Consumer(
            {
                "bootstrap.servers": self.bootstrap,
                "group.id": group,
                "auto.offset.reset": "earliest",
                "enable.auto.commit": False,
                "session.timeout.ms": 10000,
            }
        )

    def consume(self, topic, group, limit, per_record, cut=None):
        c = self.consumer(group)
        c.subscribe([topic])
        try:
            return consume_into(
                ([m for m in batch if m.error() is None] for batch in polls(lambda: c.consume(num_messages=50, timeout=0.5))),
                lambda m: [m.partition(), m.offset(), value_of(m.value())],
                lambda m: retrying(lambda: c.commit(message=m, asynchronous=False)),
                lambda: retrying(lambda: c.commit(asynchronous=False)),
                limit,
                per_record,
                cut,
            )
        finally:
            c.close()

    def commit_at(self, topic, group, offsets):
        c = self.consumer(group)
        tps = [self.ck.TopicPartition(topic, p, o) for p, o in offsets.items()]
        c.commit(offsets=tps, asynchronous=False)
        c.close()

    @staticmethod
    def poll_commit(c):
        """One record at most, committed: the two-consumer cases' poll."""
        m = c.poll(0.2)
        if m is None or m.error() is not None:
            return []
        c.commit(message=m, asynchronous=False)
        return [[m.partition(), m.offset(), value_of(m.value())]]

    def describe(self, topic, group, n):
        first, second = self.consumer(group), self.consumer(group)
        first.subscribe([topic])
        phases = two_consumers(first, second, lambda c: c.subscribe([topic]), self.poll_commit, n)
        survivor = second.memberid()
        from confluent_kafka.admin import AdminClient

        admin = AdminClient({"bootstrap.servers": self.bootstrap})
        d = admin.describe_consumer_groups([group])[group].result(timeout=10)
        second.close()
        state = getattr(d.state, "name", str(d.state))
        return phases, described(state, [m.member_id for m in d.members], survivor)

    def rollout(self, topic, group, n):
        first, second = self.consumer(group), self.consumer(group)
        first.subscribe([topic])
        return rollout_consumers(first, second, lambda c: c.subscribe([topic]), self.poll_commit, lambda c: c.memberid(), n)

    def ends(self, topic, partitions):
        c = self.consumer("conformance-ends")
        c.assign([self.ck.TopicPartition(topic, p, 0) for p in partitions])
        for _ in polls(lambda: c.consume(num_messages=100, timeout=0.5)):
            pass
        ends = {}
        for p in partitions:
            tp = self.ck.TopicPartition(topic, p)
            _, fetch_high = c.get_watermark_offsets(tp, cached=True)
            _, list_end = c.get_watermark_offsets(tp, timeout=10, cached=False)
            ends[p] = [fetch_high, list_end]
        c.close()
        return ends


# --- kafka-python ---------------------------------------------------------------------------------


class KafkaPython:
    def __init__(self, bootstrap):
        import kafka

        self.kafka = kafka
        self.bootstrap = bootstrap

    def producer(self, topic):
        producer = self.kafka.KafkaProducer(
            bootstrap_servers=self.bootstrap,
            linger_ms=LINGER_MS,
            batch_size=16384,
            enable_idempotence=False,
            retries=RETRIES,
        )

        def send(values):
            futures = [(i, producer.send(topic, str(i).encode())) for i in values]
            producer.flush(DEADLINE)
            acked = []
            for i, f in futures:
                md = f.get(timeout=DEADLINE)
                acked.append([md.partition, md.offset, str(i)])
            return acked

        return Sender(send, producer.close)

    def consumer(self, group, topic=None):
        args = [topic] if topic else []
        return self.kafka.KafkaConsumer(
            *args,
            bootstrap_servers=self.bootstrap,
            group_id=group,
            auto_offset_reset="earliest",
            enable_auto_commit=False,
            session_timeout_ms=10000,
        )

    def consume(self, topic, group, limit, per_record, cut=None):
        from kafka.structs import OffsetAndMetadata, TopicPartition

        c = self.consumer(group, topic)
        try:
            return consume_into(
                ([r for rs in batch.values() for r in rs] for batch in polls(lambda: c.poll(timeout_ms=500, max_records=50))),
                lambda r: [r.partition, r.offset, value_of(r.value)],
                lambda r: retrying(lambda: c.commit({TopicPartition(r.topic, r.partition): OffsetAndMetadata(r.offset + 1, None, -1)})),
                lambda: retrying(c.commit),
                limit,
                per_record,
                cut,
            )
        finally:
            c.close()

    def commit_at(self, topic, group, offsets):
        from kafka.structs import OffsetAndMetadata, TopicPartition

        c = self.consumer(group)
        c.commit({TopicPartition(topic, p): OffsetAndMetadata(o, None, -1) for p, o in offsets.items()})
        c.close()

    @staticmethod
    def poll_commit(c):
        """One record at most, committed: the two-consumer cases' poll."""
        from kafka.structs import OffsetAndMetadata, TopicPartition

        got = c.poll(timeout_ms=200, max_records=1)
        seen = []
        for r in (r for rs in got.values() for r in rs):
            c.commit({TopicPartition(r.topic, r.partition): OffsetAndMetadata(r.offset + 1, None, -1)})
            seen.append([r.partition, r.offset, value_of(r.value)])
        return seen

    def describe(self, topic, group, n):
        first, second = self.consumer(group, topic), self.consumer(group)
        phases = two_consumers(first, second, lambda c: c.subscribe([topic]), self.poll_commit, n)
        generation = getattr(getattr(second, "_coordinator", None), "_generation", None)
        survivor = getattr(generation, "member_id", None)
        admin = self.kafka.KafkaAdminClient(bootstrap_servers=self.bootstrap)
        answer = admin.describe_groups([group])
        info = answer[group] if isinstance(answer, dict) else answer[0]
        admin.close()
        second.close()
        members = [field(m, "member_id") for m in field(info, "members")]
        return phases, described(field(info, "state", "group_state"), members, survivor)

    def rollout(self, topic, group, n):
        def member_id(c):
            generation = getattr(getattr(c, "_coordinator", None), "_generation", None)
            return getattr(generation, "member_id", "")

        first, second = self.consumer(group, topic), self.consumer(group)
        return rollout_consumers(first, second, lambda c: c.subscribe([topic]), self.poll_commit, member_id, n)

    def ends(self, topic, partitions):
        from kafka.structs import TopicPartition

        c = self.consumer(None)
        tps = [TopicPartition(topic, p) for p in partitions]
        c.assign(tps)
        c.seek_to_beginning(*tps)
        for _ in polls(lambda: c.poll(timeout_ms=500, max_records=100)):
            pass
        listed = c.end_offsets(tps)
        ends = {tp.partition: [c.highwater(tp), listed[tp]] for tp in tps}
        c.close()
        return ends


# --- aiokafka -------------------------------------------------------------------------------------


class AioKafka:
    def __init__(self, bootstrap):
        import aiokafka

        self.aiokafka = aiokafka
        self.bootstrap = bootstrap

    def producer(self, topic):
        # one event loop for the producer's whole life, run while it sends and closes
        loop = asyncio.new_event_loop()
        run = loop.run_until_complete
        p = run(self.start_producer())

        async def send_all(values):
            futures = [await p.send(topic, str(i).encode()) for i in values]
            mds = await asyncio.gather(*futures)
            return [[md.partition, md.offset, str(i)] for i, md in zip(values, mds)]

        def close():
            try:
                run(p.stop())
            finally:
                loop.close()

        return Sender(lambda values: run(send_all(list(values))), close)

    async def start_producer(self):
        p = self.aiokafka.AIOKafkaProducer(
            bootstrap_servers=self.bootstrap, linger_ms=LINGER_MS, max_batch_size=16384
        )
        await p.start()
        return p

    def consumer(self, group, *topics):
        return self.aiokafka.AIOKafkaConsumer(
            *topics,
            bootstrap_servers=self.bootstrap,
            group_id=group,
            auto_offset_reset="earliest",
            enable_auto_commit=False,
            session_timeout_ms=10000,
        )

    def consume(self, topic, group, limit, per_record, cut=None):
        from aiokafka.structs import TopicPartition

        async def run():
            c = self.consumer(group, topic)
            await c.start()
            seen = []
            try:
                async for batch in apolls(lambda: c.getmany(timeout_ms=500, max_records=50)):
                    records = [r for rs in batch.values() for r in rs]
                    for r in records:
                        seen.append([r.partition, r.offset, value_of(r.value)])
                        if per_record:
                            await aretrying(lambda: c.commit({TopicPartition(r.topic, r.partition): r.offset + 1}))
                        if per_record and len(seen) >= limit:
                            return seen
                        if cut is not None and len(seen) == cut[0]:
                            await asyncio.get_running_loop().run_in_executor(None, cut[1])
                    if records and not per_record:
                        await aretrying(c.commit)
                    if len(seen) >= limit:
                        return seen
                return seen
            finally:
                await c.stop()

        return asyncio.run(run())

    def commit_at(self, topic, group, offsets):
        from aiokafka.structs import TopicPartition

        async def run():
            c = self.consumer(group)
            await c.start()
            try:
                # aiokafka commits only for assigned partitions
                c.assign([TopicPartition(topic, p) for p in offsets])
                await c.commit({TopicPartition(topic, p): o for p, o in offsets.items()})
            finally:
                await c.stop()

        asyncio.run(run())

    def pair(self, group, topic):
        async def make():
            return self.consumer(group, topic), self.consumer(group, topic)

        return BlockingPair(make)

    def describe(self, topic, group, n):
        pair = self.pair(group, topic)
        run, first, second = pair.run, pair.first, pair.second
        try:
            run(first.consumer.start())
            phases = two_consumers(first, second, lambda c: run(c.consumer.start()), pair.poll_commit, n)
            survivor = getattr(getattr(second.consumer, "_coordinator", None), "member_id", None)

            async def describe_group():
                from aiokafka.admin import AIOKafkaAdminClient

                admin = AIOKafkaAdminClient(bootstrap_servers=self.bootstrap)
                await admin.start()
                try:
                    return (await admin.describe_consumer_groups([group]))[0]
                finally:
                    await admin.close()

            try:
                response = run(describe_group())
            finally:
                second.close()
        finally:
            pair.loop.close()
        group_info = field(response, "groups")[0]
        members = [m[0] for m in group_info[5]]
        return phases, described(group_info[2], members, survivor)

    def rollout(self, topic, group, n):
        pair = self.pair(group, topic)
        run, first, second = pair.run, pair.first, pair.second
        started = {}

        def start(c):
            # In the background: start() returns only once the group has rebalanced, the
            # first consumer's rejoin included (it runs on the same loop).
            started[c] = pair.loop.create_task(c.consumer.start())

        def polled(c):
            if c in started:
                run(started.pop(c))
            return pair.poll_commit(c)

        def joining(c):
            run(asyncio.sleep(0.01))
            return []

        try:
            run(first.consumer.start())
            return rollout_consumers(
                first,
                second,
                start,
                polled,
                lambda c: getattr(getattr(c.consumer, "_coordinator", None), "member_id", ""),
                n,
                joining,
            )
        finally:
            pair.loop.close()

    def ends(self, topic, partitions):
        from aiokafka.structs import TopicPartition

        async def run():
            c = self.consumer(None)
            await c.start()
            try:
                tps = [TopicPartition(topic, p) for p in partitions]
                c.assign(tps)
                await c.seek_to_beginning(*tps)
                async for _ in apolls(lambda: c.getmany(timeout_ms=500, max_records=100)):
                    pass
                listed = await c.end_offsets(tps)
                return {tp.partition: [c.highwater(tp), listed[tp]] for tp in tps}
            finally:
                await c.stop()

        return asyncio.run(run())


# --- consuming ------------------------------------------------------------------------------------


def consume_into(batches, fields, commit_one, commit_all, limit, per_record, cut=None):
    """Reads `batches` (lists of records) until `limit` records: each record's fields into the
    result, committing each record (per_record) or each batch once its records are read.
    `cut`, (count, fn): fn() once `count` records are read and committed."""
    seen = []
    for batch in batches:
        for record in batch:
            seen.append(fields(record))
            if per_record:
                commit_one(record)
                if len(seen) >= limit:
                    return seen
            if cut is not None and len(seen) == cut[0]:
                cut[1]()
        if batch and not per_record:
            commit_all()
        if len(seen) >= limit:
            return seen
    return seen


class BlockingPair:
    """Two aiokafka consumers of one group, `make()`'s, driven from the synchronous helpers on
    one event loop of their own, which runs whenever a helper waits on a consumer (so
    heartbeats go on while it polls)."""

    def __init__(self, make):
        self.loop = asyncio.new_event_loop()
        self.first, self.second = (Blocking(self, c) for c in self.run(make()))

    def run(self, awaitable):
        return self.loop.run_until_complete(awaitable)

    def poll_commit(self, c):
        """One record at most, committed."""
        from aiokafka.structs import TopicPartition

        async def poll():
            got = await c.consumer.getmany(timeout_ms=200, max_records=1)
            seen = []
            for r in (r for rs in got.values() for r in rs):
                await c.consumer.commit({TopicPartition(r.topic, r.partition): r.offset + 1})
                seen.append([r.partition, r.offset, value_of(r.value)])
            return seen

        return self.run(poll())


class Blocking:
    """An aiokafka consumer of a `BlockingPair`, as the helpers call a consumer."""

    def __init__(self, pair, consumer):
        self.pair = pair
        self.consumer = consumer

    def assignment(self):
        return self.consumer.assignment()

    def close(self):
        self.pair.run(self.consumer.stop())


def first_reads_a_sixth(first, poll_commit, n):
    """What the first consumer of the two-consumer cases reads: a sixth of the records (or
    what came in FIRST seconds)."""
    seen = []
    start = time.monotonic()
    while len(seen) < n // 6 and time.monotonic() - start < FIRST:
        seen += poll_commit(first)
    return seen


def two_consumers(first, second, subscribe, poll_commit, n):
    """The describe case's consumers, polled in turn on one thread: the first reads a sixth of
    the records; the second joins, and both read until the second has partitions and a record
    (or FIRST seconds); the first closes (leaves); the second reads the rest. Returns what
    each read; the second stays open for the describe."""
    phases = [first_reads_a_sixth(first, poll_commit, n), []]
    subscribe(second)
    joined = time.monotonic()
    while time.monotonic() - joined < FIRST:
        phases[0] += poll_commit(first)
        phases[1] += poll_commit(second)
        if second.assignment() and phases[1]:
            break
    first.close()
    last = time.monotonic()
    while time.monotonic() - last < IDLE and time.monotonic() - joined < DEADLINE:
        got = poll_commit(second)
        if got:
            phases[1] += got
            last = time.monotonic()
    return phases


def rollout_consumers(first, second, subscribe, poll_commit, member_id, n, joining=None):
    """The rollout case's consumers, polled in turn on one thread: the first reads a sixth of
    the records; the second subscribes and is polled, the first not, until the broker gave
    it a member id (the answer to its first JoinGroup), then PENDING seconds more, its join
    held by the broker for the first to rejoin (`joining`, by default a poll, is what lets it
    join); the first closes then, inside that rebalance; the second reads the rest. Returns
    what each read, and the rollout's evidence: the second's member id, its partitions and
    records at the close, how long its join had been pending then, and how long after the
    close its first record came (durations by the monotonic clock)."""
    joining = joining or poll_commit
    phases = [first_reads_a_sixth(first, poll_commit, n), []]
    subscribe(second)
    joined = time.monotonic()
    while not member_id(second) and time.monotonic() - joined < FIRST:
        phases[1] += joining(second)
    pending = time.monotonic()
    while member_id(second) and time.monotonic() - pending < PENDING:
        phases[1] += joining(second)
    rollout = {
        "member_id": member_id(second) or None,
        "assigned_at_close": len(second.assignment()),
        "read_before_close": len(phases[1]),
        "pending_ms": int((time.monotonic() - pending) * 1000),
    }
    closed = last = time.monotonic()
    first.close()
    while time.monotonic() - joined < DEADLINE:
        waited = time.monotonic() - (last if "took_ms" in rollout else closed)
        if waited >= (IDLE if "took_ms" in rollout else FIRST):
            break
        got = poll_commit(second)
        if got:
            rollout.setdefault("took_ms", int((time.monotonic() - closed) * 1000))
            phases[1] += got
            last = time.monotonic()
    second.close()
    return phases, rollout


def field(obj, *names):
    """A field of an admin client's answer, whether an object, a dict or a named tuple, under
    the first of `names` it has (the clients' versions name some fields differently)."""
    for name in names:
        if isinstance(obj, dict) and name in obj:
            return obj[name]
        if not isinstance(obj, dict) and hasattr(obj, name):
            return getattr(obj, name)
    raise KeyError(f"none of {names} in {obj!r}")


def described(state, members, survivor):
    return {"state": str(state), "members": [str(m) for m in members], "survivor": survivor}


# --- producing, retrying, the harness's cuts -----------------------------------------------------


class Sender:
    """A producer kept open across calls: send(values) returns what was acknowledged."""

    def __init__(self, send, close):
        self.send = send
        self.close = close


STATS = {"commit_retries": 0}


def retrying(fn):
    """fn(), again every 0.2 s while it raises, for up to DEADLINE seconds: a service's commit
    through a broker that is away."""
    start = time.monotonic()
    while True:
        try:
            return fn()
        except Exception:
            if time.monotonic() - start > DEADLINE:
                raise
            STATS["commit_retries"] += 1
            time.sleep(0.2)


async def aretrying(fn):
    start = time.monotonic()
    while True:
        try:
            return await fn()
        except Exception:
            if time.monotonic() - start > DEADLINE:
                raise
            STATS["commit_retries"] += 1
            await asyncio.sleep(0.2)


def cut(what):
    """Asks the harness to take the broker away, and returns once it is away."""
    sys.stdout.write(f"cut {what}\n")
    sys.stdout.flush()
    answer = sys.stdin.readline().strip()
    if answer != "down":
        raise RuntimeError(f"the harness answered {answer!r} to `cut {what}`")


def now_ms():
    return int(time.time() * 1000)


# --- bounded polling ------------------------------------------------------------------------------


WAITS = {"idle": IDLE}


def waited_enough(start, last):
    """Whether a consumer has waited long enough: IDLE seconds without a record after its
    first one (IDLE_ACROSS_CUTS in the outage and restart cases), FIRST seconds for the first
    one (a group join on a loaded machine), DEADLINE in all."""
    now = time.monotonic()
    quiet = now - (last if last is not None else start)
    return quiet > (WAITS["idle"] if last is not None else FIRST) or now - start > DEADLINE


def polls(poll):
    """Yields each non-empty poll until the consumer has waited long enough."""
    start, last = time.monotonic(), None
    while not waited_enough(start, last):
        got = poll()
        if got:
            last = time.monotonic()
            yield got


async def apolls(poll):
    start, last = time.monotonic(), None
    while not waited_enough(start, last):
        got = await poll()
        if got:
            last = time.monotonic()
            yield got


# --- cases ----------------------------------------------------------------------------------------

CLIENTS = {"confluent-kafka": Confluent, "kafka-python": KafkaPython, "aiokafka": AioKafka}
CASES = ("resume-record", "resume-batch", "rejoin", "seek", "end", "describe", "rollout", "outage", "restart")


def run(client, case, topic, group, n):
    out = {"produced": [], "phases": [], "limits": []}

    def phase(limit, per_record, cut=None):
        out["limits"].append(limit)
        out["phases"].append(client.consume(topic, group, limit, per_record, cut))

    if case in ("outage", "restart"):
        return across_cuts(client, topic, phase, out, n)
    producer = client.producer(topic)
    try:
        out["produced"] = producer.send(range(n))
    finally:
        producer.close()
    produced = out["produced"]
    if case in ("resume-record", "resume-batch"):
        per_record = case == "resume-record"
        phase(int(n * LIMIT_SHARE), per_record)
        phase(n, per_record)
    elif case == "rejoin":
        for _ in range(REJOIN_CONSUMERS):
            phase(n // (REJOIN_CONSUMERS + 2), True)
        phase(n, True)
    elif case == "seek":
        by_partition = {}
        for p, o, _ in produced:
            by_partition.setdefault(p, []).append(o)
        committed = {p: sorted(os)[len(os) // 2] for p, os in by_partition.items()}
        client.commit_at(topic, group, committed)
        out["committed"] = committed
        phase(n, True)
    elif case == "end":
        partitions = sorted({p for p, _, _ in produced})
        out["ends"] = client.ends(topic, partitions)
    elif case == "describe":
        out["phases"], out["described"] = client.describe(topic, group, n)
        out["limits"] = [n // 6, 0]
    elif case == "rollout":
        out["phases"], out["rollout"] = client.rollout(topic, group, n)
        out["limits"] = [n // 6, 0]
    return out


def across_cuts(client, topic, phase, out, n):
    """The outage and restart cases: the producer and a consumer each carry on through the
    broker's absence; a last consumer resumes from what was committed."""
    WAITS["idle"] = IDLE_ACROSS_CUTS
    half = n // 2
    producer = client.producer(topic)
    try:
        out["produced"] = producer.send(range(half))
        cut("produce")
        out["produced"] += producer.send(range(half, n))
        out["done"] = {"produce": now_ms()}
    finally:
        producer.close()

    def consume_cut():
        cut("consume")

    phase(half, True, (half // 2, consume_cut))
    out["done"]["consume"] = now_ms()
    # the broker is back: the resuming consumer waits as in the other cases
    WAITS["idle"] = IDLE
    phase(n, True)
    out["commit_retries"] = STATS["commit_retries"]
    return out


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("client", choices=sorted(CLIENTS))
    parser.add_argument("case", choices=CASES)
    parser.add_argument("--bootstrap", required=True)
    parser.add_argument("--topic", required=True)
    parser.add_argument("--group", required=True)
    parser.add_argument("--records", type=int, default=600)
    args = parser.parse_args()
    client = CLIENTS[args.client](args.bootstrap)
    out = run(client, args.case, args.topic, args.group, args.records)
    json.dump(out, sys.stdout)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
