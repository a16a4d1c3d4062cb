"""An OpenAI-compatible target that is not Ollama, shaped like vLLM's API server.

GET /v1/models lists --model (none with --no-models), GET /version answers as vLLM does, and
POST /v1/chat/completions answers whole (non-streamed) completions, or 404 for an unknown model
as vLLM does; every other path is FastAPI's 404.

usage: openai_only_server.py PORT [--model NAME] [--no-models] [--reject]
"""

from __future__ import annotations

import argparse
import http.server
import json


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("port", type=int)
    parser.add_argument("--model", default="llama3.1:8b")
    parser.add_argument("--no-models", action="store_true", help="list no model")
    parser.add_argument("--reject", action="store_true", help="404 every chat request")
    args = parser.parse_args()
    listed = [] if args.no_models else [{"id": args.model, "object": "model", "owned_by": "vllm"}]

    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_GET(self) -> None:
            if self.path == "/v1/models":
                self._json(200, {"object": "list", "data": listed})
            elif self.path == "/version":
                self._json(200, {"version": "0.0.0-test"})
            else:
                self._json(404, {"detail": "Not Found"})

        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            if self.path != "/v1/chat/completions":
                self._json(404, {"detail": "Not Found"})
                return
            model = json.loads(body or b"{}").get("model")
            if args.reject or model != args.model:
                message = f"The model `{model}` does not exist."
                error = {"message": message, "type": "NotFoundError", "code": 404}
                self._json(404, {"error": error})
                return
            self._json(
                200,
                {
                    "id": "chatcmpl-1",
                    "object": "chat.completion",
                    "model": model,
                    "choices": [{"index": 0, "message": {"role": "assistant", "content": "{}"}}],
                    "usage": {"prompt_tokens": 10, "completion_tokens": 1, "total_tokens": 11},
                },
            )

        def _json(self, status: int, value: object) -> None:
            data = json.dumps(value).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", args.port), Handler)
    print(f"listening on 127.0.0.1:{args.port}", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
