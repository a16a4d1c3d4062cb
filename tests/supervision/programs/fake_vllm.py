"""vLLM's process structure, faithfully: an API server, an EngineCore child, and a Worker
grandchild that holds the most memory (what the OOM killer picks). The API server answers /health,
/work, /version, /v1/models and /v1/chat/completions (a canned one-word answer), enough for the
harness's probes and Locust's chat users.

When the worker dies (e.g. SIGKILL), the engine reports it and exits; the API server then logs
`Worker proc VllmWorker-0 died unexpectedly` and `EngineDeadError`, answers 500 EngineDeadError
for --dying-s, and exits 0, as vLLM does.

usage: fake_vllm.py PORT [--worker-mib N] [--engine-mib N] [--dying-s S] [--model NAME]
"""

from __future__ import annotations

import argparse
import http.server
import json
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
    parser.add_argument("--dying-s", type=float, default=0.2, help="500s answered before exiting")
    parser.add_argument("--model", default="fake", help="the one model /v1/models lists")
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

    models = {"object": "list", "data": [{"id": args.model, "object": "model", "owned_by": "vllm"}]}
    answer = {
        "object": "chat.completion",
        "model": args.model,
        "choices": [
            {"index": 0, "message": {"role": "assistant", "content": "ok"}, "finish_reason": "stop"}
        ],
        "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2},
    }
    routes = {"/version": {"version": "fake"}, "/v1/models": models}

    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # keep-alive, as uvicorn

        def do_GET(self) -> None:
            found = routes.get(self.path, "ok" if self.path in ("/health", "/work") else None)
            self._answer(404 if found is None else 200, found or {"error": "not found"})

        def do_POST(self) -> None:
            self.rfile.read(int(self.headers.get("Content-Length") or 0))
            found = self.path == "/v1/chat/completions"
            self._answer(200 if found else 404, answer if found else {"error": "not found"})

        def _answer(self, status: int, body: object) -> None:
            if dead.is_set():
                status = 500
                body = {"error": {"message": "EngineCore encountered an issue (EngineDeadError)"}}
            data = body.encode() if isinstance(body, str) else json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", args.port), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    print(f"api server: listening on 127.0.0.1:{args.port}, engine pid {core.pid}", flush=True)
    core.wait()
    dead.set()
    print("ERROR Worker proc VllmWorker-0 died unexpectedly, shutting down executor.", flush=True)
    print("vllm.v1.engine.exceptions.EngineDeadError: EngineCore encountered an issue.", flush=True)
    time.sleep(args.dying_s)  # requests see the 500 meanwhile: real vLLM takes a second or more
    server.shutdown()
    sys.exit(0)


if __name__ == "__main__":
    main()
