"""A small asyncio service: the example process target of `asyncio-service.toml`.

QUIESCE_VARIANT chooses how it behaves on SIGTERM:
  correct         cancels and awaits its worker, then exits 0 (the default)
  untracked-task  leaves a fire-and-forget task pending when the loop closes: asyncio itself
                  then prints "Task was destroyed but it is pending!" (a real leak, seed 001)
  sampler-thread  starts a periodic sampler thread that is never stopped or joined (seed 000)

It reports what is still alive when its shutdown completes through quiesce's probe
(probes/python/quiesce_probe.py), so `no_leaked_tasks` and `no_leaked_threads` are exact.
With QUIESCE_NO_PROBE=1 it runs as a service without the probe would: quiesce then sees leaks
only through what asyncio prints.

  quiesce run scenarios/examples/asyncio-service.toml
  quiesce run scenarios/examples/asyncio-service.toml --env QUIESCE_VARIANT=untracked-task
"""

import asyncio
import os
import signal
import sys
import threading
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "../../probes/python"))
import quiesce_probe  # noqa: E402


async def worker():
    while True:
        await asyncio.sleep(0.05)


async def main(behaviour):
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    tracked = asyncio.create_task(worker())
    if behaviour == "untracked-task":
        asyncio.ensure_future(worker())  # nobody keeps this handle
    if behaviour == "sampler-thread":
        threading.Thread(target=sample_forever, name="rss-sampler", daemon=True).start()
    print("ready", flush=True)
    await stop.wait()
    tracked.cancel()
    try:
        await tracked
    except asyncio.CancelledError:
        pass
    if os.environ.get("QUIESCE_NO_PROBE") != "1":
        await quiesce_probe.report()


def sample_forever():
    while True:
        time.sleep(0.05)


behaviour = os.environ.get("QUIESCE_VARIANT", "correct")
VARIANTS = ("correct", "untracked-task", "sampler-thread")
if behaviour not in VARIANTS:
    raise SystemExit(f"unknown QUIESCE_VARIANT {behaviour!r} (expected one of {', '.join(VARIANTS)})")
# run_until_complete + close, not asyncio.run(): asyncio.run() cancels leftover tasks for us,
# which would hide the very leak this target exists to show.
loop = asyncio.new_event_loop()
loop.run_until_complete(main(behaviour))
loop.close()
