"""One service of the graph scenario (graph.toml), by its role: `store`, `worker` or `api`.

Written as services are, with no quiesce contract: it stops on SIGTERM or SIGINT, and the
store serves `/ready` on the port its command line gives. GRAPH_BUG makes one of them wrong:

  stubborn-ROLE     ignores SIGTERM (the harness has to kill it)
  orphan-ROLE       starts a helper it never stops (`sleep 300`, left behind at exit)
  never-ready-ROLE  exits 3 before it is ready
"""

import http.server
import os
import signal
import subprocess
import sys
import threading
import time

role = sys.argv[1]
bug = os.environ.get("GRAPH_BUG", "")
stopping = threading.Event()


def on_signal(_signum, _frame):
    # Set from the handler, waited by polling: the handler runs in the main thread, and an
    # Event.wait there holds the Event's lock, so an Event.set here could wait on it forever.
    stopping.set()


if bug == f"stubborn-{role}":
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
else:
    signal.signal(signal.SIGTERM, on_signal)
signal.signal(signal.SIGINT, on_signal)

if bug == f"never-ready-{role}":
    print(f"{role}: cannot start", flush=True)
    sys.exit(3)
if bug == f"orphan-{role}":
    subprocess.Popen(["sleep", "300"])

server = None
if role == "store":

    class Ready(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            self.send_response(200 if self.path == "/ready" else 404)
            self.end_headers()

        def log_message(self, *_args):
            pass

    server = http.server.HTTPServer(("127.0.0.1", int(sys.argv[2])), Ready)
    threading.Thread(target=server.serve_forever, daemon=True).start()

replica = os.environ.get("QUIESCE_REPLICA", "1")
print(f"{role} {replica} ready", flush=True)
while not stopping.is_set():
    time.sleep(0.05)
if server is not None:
    server.shutdown()
print(f"{role} {replica} stopped", flush=True)
