"""`harness capture`: record a real job through a loopback reverse proxy, anonymised by default."""

from __future__ import annotations

import argparse
import ipaddress
import socket
import sys
from pathlib import Path
from urllib.parse import urlsplit

from harness.errors import UserError
from harness.net import require_loopback_url


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "capture",
        help="record requests through a loopback proxy (anonymised) as a dataset",
        description="A recording reverse proxy for the OpenAI, Batch and Ollama APIs: traffic "
        "passes unchanged; request bodies are written as JSONL, personal data pseudonymised.",
    )
    parser.add_argument("--listen", required=True, metavar="127.0.0.1:PORT")
    parser.add_argument("--upstream", required=True, metavar="URL", help="loopback server URL")
    parser.add_argument("--out", required=True, help="capture file (JSONL; appended to)")
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument(
        "--anonymize", dest="raw", action="store_false", help="pseudonymise (the default)"
    )
    mode.add_argument("--raw", action="store_true", help="keep REAL data (personal data!)")
    parser.add_argument("--responses", action="store_true", help="also record each response")
    parser.add_argument("--locale", default="en_US", help="Faker locale of the pseudonyms")
    parser.set_defaults(handler=run, raw=False)  # anonymised unless --raw, whatever the order


def parse_listen(text: str) -> tuple[str, int]:
    host, _, port = text.rpartition(":")
    host = host.strip("[]") or "127.0.0.1"
    try:
        loopback = host == "localhost" or ipaddress.ip_address(host).is_loopback
        number = int(port)
    except ValueError:
        raise UserError(f"--listen {text!r} is not HOST:PORT, e.g. 127.0.0.1:8765") from None
    if not loopback:
        raise UserError(f"--listen {text!r} is not a loopback address: use 127.0.0.1:PORT")
    if not 0 < number < 65536:
        raise UserError(f"--listen port {number} is out of range 1-65535")
    return host, number


def check_reachable(url: str) -> None:
    parts = urlsplit(url)
    port = parts.port or (443 if parts.scheme == "https" else 80)
    try:
        with socket.create_connection((parts.hostname, port), timeout=3):
            pass
    except OSError as exc:
        raise UserError(
            f"upstream {url} is unreachable ({exc.strerror or exc}): start the server first"
        ) from None


def run(args: argparse.Namespace) -> int:
    import uvicorn

    from harness.capture import CaptureProxy, CaptureWriter, Pseudonymizer
    from harness.capture.proxy import started_banner

    host, port = parse_listen(args.listen)
    upstream = require_loopback_url(args.upstream, "--upstream")
    check_reachable(upstream)
    try:
        writer = CaptureWriter(Path(args.out))
    except OSError as exc:
        raise UserError(f"cannot write {args.out}: {exc.strerror}") from None
    if args.raw:
        print(
            "WARNING: --raw: this capture keeps REAL personal data (names, emails, phones, ids) "
            f"in {args.out}. Treat it as production data; do not share or commit it.",
            file=sys.stderr,
        )
    pseudonymizer = None if args.raw else Pseudonymizer(locale=args.locale)
    proxy = CaptureProxy(upstream, writer, pseudonymizer, responses=args.responses)
    print(started_banner(f"{host}:{port}", upstream, Path(args.out), args.raw), file=sys.stderr)
    config = uvicorn.Config(
        proxy.app(), host=host, port=port, log_level="warning", access_log=False, lifespan="on"
    )
    try:
        uvicorn.Server(config).run()
    finally:
        writer.close()
        print(
            f"capture: {proxy.passed:,} requests passed, {proxy.recorded:,} lines recorded "
            f"in {args.out}",
            file=sys.stderr,
        )
    return 0
