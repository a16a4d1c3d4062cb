"""The ASGI app: routes, API-key and error handling, health and metrics; and `serve()`."""

from __future__ import annotations

import asyncio
import errno
import fcntl
import hmac
import logging
import math
import socket
import sys
import time
from typing import IO, Any

from starlette.requests import Request

from harness.errors import UserError
from harness.server import batches, faults, files, ollama_api, openai_api, openapi
from harness.server.asgi import (
    Receive,
    Response,
    Router,
    Scope,
    Send,
    error_response,
    json_response,
    read_body,
)
from harness.server.config import ServerConfig
from harness.server.faults import Faults
from harness.server.files import FileStore
from harness.server.metrics import CONTENT_TYPE, ServerMetrics
from harness.server.protocol import INTERNAL_ERROR, ApiError, parse_json_object
from harness.server.simulator import Simulator

log = logging.getLogger("harness.server")


class ServerState:
    """What the endpoints share: the config, the simulated GPU, faults, files and batches."""

    def __init__(self, config: ServerConfig) -> None:
        self.config = config
        self.started_at = time.time()
        self.model_names = config.model_names
        self.metrics = ServerMetrics(self.model_names[0])
        self.faults = Faults(seed=config.seed)
        self.simulator = Simulator(
            config.profile,
            metrics=self.metrics,
            faults=self.faults,
            context_policy=config.context,
            speed=config.speed,
            oom_mode=config.oom,
            host_memory_ratio=config.host_memory_ratio,
            load_time_s=config.load_time_s,
            slow_faults=config.slow_faults,
        )
        self.files = FileStore(config.data_dir / "files")
        self.batches = batches.BatchManager(self, config.data_dir / "batches")

    async def wait_ready(self) -> None:
        """Return once the simulated model load has finished."""
        while not self.simulator.ready:
            await asyncio.sleep(min(0.1, self.simulator.seconds_to_ready()))


async def health(request: Request, state: ServerState) -> Response:
    return json_response({"status": "ok"})


async def ready(request: Request, state: ServerState) -> Response:
    sim = state.simulator
    if sim.ready:
        return json_response({"status": "ready"})
    return json_response({"status": "loading", "seconds_left": sim.seconds_to_ready()}, 503)


async def metrics(request: Request, state: ServerState) -> Response:
    return Response(state.metrics.exposition(), headers=[(b"content-type", CONTENT_TYPE.encode())])


async def openapi_document(request: Request, state: ServerState) -> Response:
    return Response(openapi.BODY)


async def get_faults(request: Request, state: ServerState) -> Response:
    _check_admin(request, state)
    return json_response({"active": state.faults.active(), "oom_mode": state.config.oom})


async def post_faults(request: Request, state: ServerState) -> Response:
    _check_admin(request, state)
    body = parse_json_object(await read_body(request, 64 * 1024))
    answer, after = faults.inject(state.simulator, state.faults, body)
    log.warning("fault injected: %s", answer)
    return json_response(answer, after=_soon(after) if after else None)


def _check_admin(request: Request, state: ServerState) -> None:
    client = request.client.host if request.client else None
    faults.check_admin(client, request.headers.get("authorization"), state.config.admin_token)


def _soon(action: Any) -> Any:
    """Run a fatal action just after the answer is on its way (the client sees the 200)."""

    async def later() -> None:
        await asyncio.sleep(0.05)
        action()

    return later


ROUTES = (
    ("GET", "/health", health),
    ("GET", "/health/ready", ready),
    ("GET", "/metrics", metrics),
    ("GET", "/openapi.json", openapi_document),
    ("GET", "/admin/faults", get_faults),
    ("POST", "/admin/faults", post_faults),
    ("GET", "/v1/models", openai_api.list_models),
    ("GET", "/v1/models/{model}", openai_api.retrieve_model),
    ("POST", "/v1/chat/completions", openai_api.chat_completions),
    ("POST", "/v1/completions", openai_api.completions),
    ("POST", "/v1/files", files.upload),
    ("GET", "/v1/files", files.list_files),
    ("GET", "/v1/files/{file_id}", files.retrieve),
    ("DELETE", "/v1/files/{file_id}", files.delete),
    ("GET", "/v1/files/{file_id}/content", files.content),
    ("POST", "/v1/batches", batches.create),
    ("GET", "/v1/batches", batches.list_batches),
    ("GET", "/v1/batches/{batch_id}", batches.retrieve),
    ("POST", "/v1/batches/{batch_id}/cancel", batches.cancel),
    ("POST", "/api/chat", ollama_api.chat),
    ("POST", "/api/generate", ollama_api.generate),
    ("GET", "/api/tags", ollama_api.tags),
    ("GET", "/api/ps", ollama_api.ps),
    ("GET", "/api/version", ollama_api.version),
)


# Open without the API key: probes, metrics, the API description and the admin routes (which
# have their own token).
_OPEN_PREFIXES = ("/health", "/metrics", "/openapi.json", "/admin/")


class HarnessApp:
    """The reference server as one ASGI callable."""

    def __init__(self, config: ServerConfig) -> None:
        self.state = ServerState(config)
        self.router = Router()
        for method, path, handler in ROUTES:
            self.router.add(method, path, handler)
        self._api_key = config.api_key.encode() if config.api_key else None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            await self._http(scope, receive, send)
        elif scope["type"] == "lifespan":
            await self._lifespan(receive, send)

    async def _http(self, scope: Scope, receive: Receive, send: Send) -> None:
        path, method = scope["path"], scope["method"]
        ollama = path.startswith("/api/")
        request = Request(scope, receive)
        try:
            if self.state.faults.hung:
                await self.state.faults.wait_while_hung()
            if self._api_key and not path.startswith(_OPEN_PREFIXES):
                self._check_api_key(request)  # before routing: an unknown path is no hint
            handler, params, exists = self.router.match(method, path)
            if handler is None:
                raise _not_found(method, path, exists)
            response = await handler(request, self.state, **params)
        except ApiError as error:
            response = error_response(error, ollama)
            if error.status == 405:
                allow = ", ".join(self.router.allowed(path)).encode()
                response.headers = [*response.headers, (b"allow", allow)]
        except Exception:
            log.exception("unhandled error on %s %s", method, path[:200])
            response = error_response(INTERNAL_ERROR, ollama)
        await response(scope, receive, send)

    def _check_api_key(self, request: Request) -> None:
        scheme, _, key = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(
            key.encode(), self._api_key or b""
        ):
            raise ApiError(
                401,
                "Incorrect or missing API key: send 'Authorization: Bearer <key>' with the key "
                "the server was started with (--api-key).",
                code="invalid_api_key",
            )

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                self.state.batches.resume()
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await self.state.batches.shutdown()
                self.state.simulator.shutdown()
                await send({"type": "lifespan.shutdown.complete"})
                return


def _not_found(method: str, path: str, exists: bool) -> ApiError:
    if exists:
        return ApiError(
            405, f"Method {method} is not allowed on {path}.", code="method_not_allowed"
        )
    return ApiError(404, f"Unknown path {path[:200]}; see GET /v1/models.", code="not_found")


def create_app(config: ServerConfig) -> HarnessApp:
    """The ASGI app for one server (its own metrics registry, simulator and data directory)."""
    return HarnessApp(config)


def serve(config: ServerConfig, log_level: str = "warning", access_log: bool = False) -> None:
    """Run the server with uvicorn (one worker) until SIGINT/SIGTERM."""
    import uvicorn

    from harness.server.http import limited_protocol

    config.data_dir.mkdir(parents=True, exist_ok=True)
    lock = _lock_data_dir(config)
    sock = _bind(config.host, config.port)
    app = create_app(config)
    server = uvicorn.Server(
        uvicorn.Config(
            app,
            log_level=log_level,
            access_log=access_log,
            lifespan="on",
            http=limited_protocol(config.limits),
            loop="auto",
            timeout_graceful_shutdown=5,
            timeout_keep_alive=config.limits.keep_alive_s,
            backlog=4096,
            server_header=False,
            # bound to loopback by default: no proxy in front whose headers need trusting
            proxy_headers=False,
        )
    )
    host, port = sock.getsockname()[:2]
    speed = "max (no simulated delay)" if math.isinf(config.speed) else f"{config.speed:g}x"
    print(
        f"harness serve: listening on http://{_url_host(host)}:{port} "
        f"(profile {config.profile.name}, models {', '.join(config.model_names)}, speed {speed}, "
        f"oom {config.oom}, data {config.data_dir})",
        file=sys.stderr,
        flush=True,
    )
    try:
        server.run(sockets=[sock])
    finally:
        lock.close()


def _bind(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # IPPROTO_TCP explicitly: asyncio sets TCP_NODELAY only on sockets that say so, and without
    # it Nagle's algorithm + delayed ACKs stall every response by ~40 ms.
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        if exc.errno == errno.EADDRINUSE:
            raise UserError(f"port {port} on {host} is in use; pass another --port") from None
        raise UserError(f"cannot listen on {host}:{port}: {exc.strerror}") from None
    sock.set_inheritable(True)
    return sock


def _lock_data_dir(config: ServerConfig) -> IO[str]:
    """One server per data directory: two would both resume the same batches."""
    handle = open(config.data_dir / ".lock", "a+")  # noqa: SIM115 - held for the server's life
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.close()
        raise UserError(
            f"data directory {config.data_dir} is in use by another harness serve; "
            "stop it or pass another --data-dir"
        ) from None
    return handle


def _url_host(host: str) -> str:
    return f"[{host}]" if ":" in host else host
