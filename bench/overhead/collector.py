#!/usr/bin/env python3
"""A local OTLP/HTTP traces sink for the overhead benchmark's tracing row (l).

It accepts ``POST /v1/traces`` (protobuf, as the gateway's exporter sends them), answers 200 at
once, and counts the spans by name; ``GET /count`` answers those counts as JSON. What a real
collector does with spans afterwards is not the gateway's cost, so nothing else is done.

    python bench/overhead/collector.py --port 4318
"""

from __future__ import annotations

import argparse
import json
import threading
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

_lock = threading.Lock()
_spans: Counter[str] = Counter()
_posts = 0


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as the exporter's session expects

    def do_POST(self) -> None:  # noqa: N802 (http.server's naming)
        global _posts
        body = self.rfile.read(int(self.headers.get("content-length") or 0))
        if self.path != "/v1/traces":
            self._answer(404, b"")
            return
        request = ExportTraceServiceRequest.FromString(body)
        names = [span.name for spans in request.resource_spans for scope in spans.scope_spans for span in scope.spans]
        with _lock:
            _posts += 1
            _spans.update(names)
        self._answer(200, b"", "application/x-protobuf")

    def do_GET(self) -> None:  # noqa: N802
        if self.path != "/count":
            self._answer(404, b"")
            return
        with _lock:
            counts = {"posts": _posts, "spans": dict(_spans)}
        self._answer(200, json.dumps(counts).encode(), "application/json")

    def _answer(self, status: int, body: bytes, content_type: str = "text/plain") -> None:
        self.send_response(status)
        self.send_header("content-type", content_type)
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 (the base class's name)
        pass  # quiet: one line per export would only cost CPU


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=4318)
    args = parser.parse_args()
    ThreadingHTTPServer(("127.0.0.1", args.port), Handler).serve_forever()


if __name__ == "__main__":
    main()
