"""Hostile: /ready goes 503 for a moment when Kafka becomes unreachable, then answers 200 for
the rest of the outage. readiness_truthful once counted the one 503 as the truth."""

import os
import signal
import socket
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

host, port = os.environ["QUIESCE_KAFKA_BOOTSTRAP"].rsplit(":", 1)
state = {"flapped_at": None, "draining": False}


def watch_kafka():
    while True:
        try:
            socket.create_connection((host, int(port)), timeout=0.2).close()
        except OSError:
            if state["flapped_at"] is None:
                state["flapped_at"] = time.monotonic()
        time.sleep(0.05)


class Handler(BaseHTTPRequestHandler):
    def do_GET(self):
        code = 200
        if self.path == "/ready":
            flapped = state["flapped_at"]
            # 503 for 150 ms after Kafka first went away, then "ready" again: the lie.
            if state["draining"] or (flapped and time.monotonic() - flapped < 0.15):
                code = 503
        self.send_response(code)
        self.end_headers()

    def log_message(self, *_):
        pass


server = ThreadingHTTPServer(("127.0.0.1", int(os.environ["QUIESCE_HTTP_PORT"])), Handler)
threading.Thread(target=watch_kafka, daemon=True).start()
threading.Thread(target=server.serve_forever, daemon=True).start()


def stop(*_):
    state["draining"] = True
    time.sleep(0.3)
    server.shutdown()
    sys.exit(0)


signal.signal(signal.SIGTERM, stop)
while True:
    time.sleep(0.1)
