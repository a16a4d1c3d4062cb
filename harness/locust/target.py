"""The embedded reference server for Locust, hosted by a helper process outside gevent.

The supervisor and the samplers use real threads and block in system calls (waitid); inside a
gevent-patched Locust process they would stall every user, and their work would skew the
latencies being measured. So Locust starts

    python -m harness.locust.target RUN_DIR --sample-interval S -- SERVER_ARGS...

which runs harness.supervision.embedded.EmbeddedServer, prints {"url", "admin_token"} (or
{"error"}) as one JSON line, then reads request outcomes ("1 <t>" ok, "0 <t>" failed) from
stdin for the supervisor's recovery timing. End of input stops the server, so a Locust that
dies, even of SIGKILL, takes its server with it. This module does not import Locust.
"""

from __future__ import annotations

import argparse
import contextlib
import signal
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

import orjson

from harness.errors import UserError
from harness.interpreter import python_command


class EmbeddedTarget:
    """Locust's side: starts the helper, feeds it request outcomes, stops it."""

    def __init__(
        self,
        run_dir: Path,
        server_args: Sequence[str],
        sample_interval: float,
        ready_timeout: float = 60.0,
    ) -> None:
        command = python_command(
            "harness.locust.target",
            str(run_dir),
            "--sample-interval",
            str(sample_interval),
            "--ready-timeout",
            str(ready_timeout),
            "--",
            *server_args,
        )
        self._process = subprocess.Popen(
            command,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            bufsize=0,
            start_new_session=True,  # Ctrl+C reaches Locust, which then stops us in order
        )
        line = self._process.stdout.readline()
        hello = orjson.loads(line) if line.strip() else {"error": "the helper exited at start"}
        if "error" in hello:
            self._process.wait()
            raise UserError(f"the embedded reference server did not start: {hello['error']}")
        self.url: str = hello["url"]
        self.admin_token: str = hello["admin_token"]

    def note_request(self, ok: bool, t: float) -> None:
        """One finished request (t: unix seconds), for the supervisor's recovery timing."""
        with contextlib.suppress(BrokenPipeError, ValueError):  # the helper is gone: stopping
            self._process.stdin.write(b"%d %.6f\n" % (ok, t))

    def stop(self, timeout: float = 30.0) -> None:
        """Close the helper's input: it stops the server (recording `exited`, cause stopped)."""
        if self._process.stdin and not self._process.stdin.closed:
            self._process.stdin.close()
        try:
            self._process.wait(timeout)
        except subprocess.TimeoutExpired:
            self._process.kill()
            self._process.wait()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m harness.locust.target")
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("--sample-interval", type=float, default=0.5)
    parser.add_argument("--ready-timeout", type=float, default=60.0)
    argv = list(sys.argv[1:] if argv is None else argv)
    split = argv.index("--") if "--" in argv else len(argv)
    args = parser.parse_args(argv[:split])
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))  # runs the finally below

    from harness.rundir import RunDir
    from harness.supervision.embedded import EmbeddedServer

    out = sys.stdout.buffer
    server = EmbeddedServer(
        RunDir(args.run_dir),
        server_args=argv[split + 1 :],
        sample_interval=args.sample_interval,
        ready_timeout=args.ready_timeout,
    )
    try:
        server.start()
    except UserError as exc:
        out.write(orjson.dumps({"error": str(exc)}) + b"\n")
        out.flush()
        return 2
    try:
        out.write(orjson.dumps({"url": server.url, "admin_token": server.admin_token}) + b"\n")
        out.flush()
        for line in sys.stdin.buffer:
            ok, _, t = line.partition(b" ")
            server.supervisor.note_request(ok == b"1", float(t))
    finally:
        server.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
