"""quiesce's target-side probe for Python asyncio services.

Call it once your service's shutdown has completed, from the event loop, before the loop
closes:

    import quiesce_probe
    ...
    await stop.wait()
    await shutdown()                  # your own: cancel, drain, flush, close
    await quiesce_probe.report()      # what is still alive now is a leak

When the harness runs the service it sets QUIESCE_PROBE_FILE; without it `report()` does
nothing, so the call can stay in production code. The file holds the tasks still pending
(name, coroutine, stack) and the threads still alive (name, daemon), after a settle budget like
goleak's: up to 20 looks, at most 100 ms apart, so a task finishing its own cancellation is not
blamed.
"""

import asyncio
import json
import os
import threading
import time

SCHEMA = 1


def _task_entry(task):
    coro = task.get_coro()
    name = getattr(coro, "__qualname__", None) or repr(coro)
    frames = [
        f"{frame.f_code.co_filename}:{frame.f_lineno} in {frame.f_code.co_name}"
        for frame in task.get_stack(limit=8)
    ]
    return {"name": task.get_name(), "location": name, "stack": frames}


def _alive_tasks():
    current = asyncio.current_task()
    return [t for t in asyncio.all_tasks() if t is not current and not t.done()]


def _alive_threads():
    main = threading.main_thread()
    return [
        {"name": t.name, "daemon": t.daemon}
        for t in threading.enumerate()
        if t is not main and t.is_alive()
    ]


async def report(retries=20, max_pause=0.1, outputs_sent=None):
    """Writes the leftover tasks and threads to QUIESCE_PROBE_FILE (if set).

    outputs_sent: how many output records the service handed to its Kafka producer, for
    quiesce's producer_flushed check (leave it out if the service has no Kafka output).
    """
    path = os.environ.get("QUIESCE_PROBE_FILE")
    if not path:
        return
    started = time.monotonic()
    pause = 0.001
    for _ in range(retries):
        if not _alive_tasks() and not _alive_threads():
            break
        await asyncio.sleep(pause)
        pause = min(pause * 2, max_pause)
    tasks = [_task_entry(t) for t in _alive_tasks()]
    threads = _alive_threads()
    record = {
        "schema": SCHEMA,
        "runtime": "python-asyncio",
        # Part of the stop: the harness counts the whole stop and reports this wait beside it.
        "settle_ms": round((time.monotonic() - started) * 1000),
        "tasks": {"alive": len(tasks), "items": tasks},
        "threads": {"alive": len(threads), "items": threads},
    }
    if outputs_sent is not None:
        record["outputs_sent"] = int(outputs_sent)
    tmp = f"{path}.tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(record, f, indent=2)
    os.replace(tmp, path)
