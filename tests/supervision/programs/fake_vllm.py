"""vLLM's process structure, faithfully: an API server serving /health (and /work), an EngineCore
child, and a Worker grandchild that holds the most memory (what the OOM killer picks).

When the worker dies (e.g. SIGKILL), the engine reports it and exits; the API server then logs
`Worker proc VllmWorker-0 died unexpectedly` and `EngineDeadError`, and exits 0, as vLLM does.

usage: fake_vllm.py PORT [--worker-mib N] [--engine-mib N]
"""

from __future__ import annotations

import argparse
import http.server
import subprocess
import sys
import threading
import time

_HOLD = "import sys, time; data = bytearray({mib} << 20); data[::4096] = b'x' * len(data[::4096]); "


def engine(worker_mib: int, engine_mib: int) -> None:
    """EngineCore: start the worker, exit 1 when it dies (vLLM's executor shuts down)."""
    ballast = bytearray(engine_mib << 20)
    ballast[::4096] = b"x" * len(ballast[::4096])
    worker = subprocess.Popen(
        [sys.executable, "-c", _HOLD.format(mib=worker_mib) + "time.sleep(600)"]
    )
    print(f"engine: worker pid {worker.pid}", flush=True)
    code = worker.wait()
    print(f"Worker proc VllmWorker-0 died unexpectedly (exit {code}), shutting down", flush=True)
    sys.exit(1)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("port", type=int)
    parser.add_argument("--worker-mib", type=int, default=64)
    parser.add_argument("--engine-mib", type=int, default=16)
    parser.add_argument("--engine", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.engine:
        engine(args.worker_mib, args.engine_mib)
        return
    core = subprocess.Popen(
        [
            sys.executable,
            __file__,
            str(args.port),
            "--engine",
            "--worker-mib",
            str(args.worker_mib),
            "--engine-mib",
            str(args.engine_mib),
        ]
    )
    dead = threading.Event()

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(500 if dead.is_set() else 200)
            self.end_headers()
            self.wfile.write(b'{"error": "EngineDeadError"}' if dead.is_set() else b"ok")

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", args.port), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    print(f"api server: listening on 127.0.0.1:{args.port}, engine pid {core.pid}", flush=True)
    core.wait()
    dead.set()
    print("ERROR Worker proc VllmWorker-0 died unexpectedly, shutting down executor.", flush=True)
    print("vllm.v1.engine.exceptions.EngineDeadError: EngineCore encountered an issue.", flush=True)
    time.sleep(0.2)  # a few requests see the 500, as with vLLM
    server.shutdown()
    sys.exit(0)


if __name__ == "__main__":
    main()
