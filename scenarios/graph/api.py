"""An orders API in front of Kafka, written as a team writes it: Python's own HTTP server and
confluent-kafka, no quiesce contract, its settings from its command line.

  python3 api.py PORT BOOTSTRAP TOPIC

  POST /orders   a JSON order {"order_id": "...", "amount": N}: handed to the producer, keyed
                 by its id, and answered 202 Accepted (400 if it is not an order)
  GET /ready     200 once the producer has reached the broker

Orders go out in batches: the producer lingers, and every FLUSH_EVERY-th order flushes what is
queued. On SIGTERM or SIGINT the API stops taking orders (a 503 to each new request while in
flight ones finish, as a pod taken out of its Service answers for a moment), stops its server,
then flushes its producer: shutdown mirrors startup. API_BUG makes it wrong:

  no-flush        the shutdown forgets `producer.flush()`: orders answered 202 since the last
                  batch die in the producer's buffer
  producer-first  the shutdown flushes the producer first and only then stops the server:
                  orders it still answers 202 in between are queued behind the flush, and die

and these shapes, with which a service must be judged as what it does (API_BUG takes several,
comma-separated):

  write-then-503  writes every other order, then answers 503 (a timeout after the produce):
                  refused at the door, yet an input the worker owes processing
  written-twice   writes each order twice (a retried produce): two inputs with one key
  early-hints     answers 103 Early Hints before its 202: the 202 is the answer
"""

import json
import os
import signal
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

CACHE = os.environ.get("QUIESCE_CACHE") or os.path.join(
    os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "quiesce"
)
sys.path.insert(0, os.path.join(CACHE, "python-conformance"))

try:
    from confluent_kafka import Producer  # noqa: E402
except ImportError as e:
    print(f"api: confluent-kafka is not installed ({e}); run scripts/setup", file=sys.stderr)
    sys.exit(4)

FLUSH_EVERY = 100
# How long the API answers 503 after the stop before its server stops.
DRAIN_S = 0.5
BUGS = set(os.environ.get("API_BUG", "").split(","))


def main(port, bootstrap, topic):
    # A long linger: a batch leaves at a flush, never on a timer.
    producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 60000})
    producer.list_topics(topic, timeout=30)
    draining = threading.Event()
    lock = threading.Lock()
    accepted = [0]

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def answer(self, status, body=b""):
            self.send_response(status)
            self.send_header("Content-Length", str(len(body)))
            self.send_header("Connection", "close")
            self.end_headers()
            self.wfile.write(body)

        def do_GET(self):
            self.answer(200 if self.path == "/ready" and not draining.is_set() else 404)

        def do_POST(self):
            length = int(self.headers.get("Content-Length") or 0)
            raw = self.rfile.read(length)
            if self.path != "/orders":
                return self.answer(404)
            if draining.is_set():
                return self.answer(503, b"shutting down")
            try:
                order = json.loads(raw)
                key = order["order_id"]
            except (ValueError, TypeError, KeyError):
                return self.answer(400, b"not an order")
            producer.produce(topic, key=key, value=raw)
            if "written-twice" in BUGS:
                producer.produce(topic, key=key, value=raw)
            if "write-then-503" in BUGS and order.get("amount", 0) % 2 == 1:
                return self.answer(503, b"try again")
            if "early-hints" in BUGS:
                self.wfile.write(b"HTTP/1.1 103 Early Hints\r\nLink: </style.css>\r\n\r\n")
            with lock:
                accepted[0] += 1
                batch_full = accepted[0] % FLUSH_EVERY == 0
            # Batches are the running service's: once its shutdown has begun, only the
            # shutdown flushes (else a batch full in the drain would save what producer-first
            # loses, and one run in dozens lost nothing).
            if batch_full and not stopping.is_set():
                producer.flush(30)
            self.answer(202, b"accepted")

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", int(port)), Handler)
    server.daemon_threads = False
    stopping = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stopping.set())
    signal.signal(signal.SIGINT, lambda *_: stopping.set())
    serving = threading.Thread(target=server.serve_forever)
    serving.start()
    print(f"api listening on {port}", flush=True)

    # Polled, never waited: Python runs the signal handler in this thread, between two of its
    # bytecodes, and an Event.wait here holds the Event's lock while it checks the flag, so
    # the handler's Event.set can block on that lock forever: the stop hangs, the main
    # thread idle in futex_wait. (Waited whole, 1 stop in 20 hung; waited in 0.2 s slices,
    # still one in many: a graph test in CI, killed at its grace period.)
    while not stopping.is_set():
        time.sleep(0.2)
    if "producer-first" in BUGS:
        producer.flush(30)
    else:
        draining.set()
    # In flight requests finish; new ones get a 503 (or, producer-first, a 202).
    threading.Event().wait(DRAIN_S)
    server.shutdown()
    serving.join()
    server.server_close()
    if not BUGS & {"no-flush", "producer-first"}:
        producer.flush(30)
    print(f"api stopped after {accepted[0]} order(s)", flush=True)


if __name__ == "__main__":
    if len(sys.argv) != 4:
        print("usage: api.py PORT BOOTSTRAP TOPIC", file=sys.stderr)
        sys.exit(2)
    main(*sys.argv[1:])
