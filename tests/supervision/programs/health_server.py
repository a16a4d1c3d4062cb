"""A tiny target: /health answers 503 during a simulated load, then 200; optional sleeping children.

usage: health_server.py PORT [--load-time S] [--children N] [--grandchild-session]
"""

from __future__ import annotations

import argparse
import http.server
import subprocess
import sys
import time


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("port", type=int)
    parser.add_argument("--load-time", type=float, default=0.0)
    parser.add_argument("--children", type=int, default=0)
    parser.add_argument(
        "--grandchild-session", action="store_true", help="one child leaves the group"
    )
    args = parser.parse_args()
    sleeper = [sys.executable, "-c", "import time; time.sleep(600)"]
    children = [subprocess.Popen(sleeper) for _ in range(args.children)]
    if args.grandchild_session:
        children.append(subprocess.Popen(sleeper, start_new_session=True))
    ready_at = time.monotonic() + args.load_time

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            ready = time.monotonic() >= ready_at
            self.send_response(200 if ready or self.path == "/health/live" else 503)
            self.end_headers()
            self.wfile.write(b"ok" if ready else b"loading")

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", args.port), Handler)
    print(f"listening on 127.0.0.1:{args.port} with {len(children)} children", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
