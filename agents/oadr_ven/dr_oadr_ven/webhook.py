"""The webhook receiver: the VTN POSTs notifications `{objectType, operation, object, targets}` here with
the bearer token this VEN gave it in its subscription. Served by `http.server` in a thread of its own; the
token is compared in constant time, bodies are bounded, anything else is a 4xx. Each accepted notification
goes to `on_notification(operation, object)` (called in the receiver's thread)."""

from __future__ import annotations

import hmac
import json
import logging
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, HTTPServer
from typing import Any

from dr_common.rejects import RateLimitedLog, RejectCounter

_log = logging.getLogger(__name__)
MAX_BODY = 1_000_000


class WebhookServer:
    def __init__(self, host: str, port: int, path: str, token: str,
                 on_notification: Callable[[str, dict[str, Any]], None]) -> None:
        self._path = path
        self._token = token.encode()
        self._on = on_notification
        self.received = 0
        self.rejects = RejectCounter()
        self._errors = RateLimitedLog(_log)
        self._server = HTTPServer((host, port), self._handler())
        self._server.daemon_threads = True
        self.port = self._server.server_address[1]
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.2},
                                        name="oadr-webhook", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(5)

    def _refuse(self, handler: BaseHTTPRequestHandler, status: int, reason: str) -> None:
        self.rejects.count(reason)
        self._errors.warning(reason, "webhook refused (%s) from %s", reason, handler.client_address[0])
        handler.send_response(status)
        handler.send_header("Content-Length", "0")
        handler.end_headers()

    def _handle(self, handler: BaseHTTPRequestHandler) -> None:
        if handler.path.split("?")[0] != self._path:
            return self._refuse(handler, 404, "path")
        given = handler.headers.get("Authorization", "")
        if not hmac.compare_digest(given.encode(), b"Bearer " + self._token):
            return self._refuse(handler, 401, "token")
        try:
            length = int(handler.headers.get("Content-Length") or 0)
        except ValueError:
            length = -1
        if not 0 < length <= MAX_BODY:
            return self._refuse(handler, 413 if length > MAX_BODY else 400, "length")
        try:
            body = json.loads(handler.rfile.read(length))
        except ValueError:
            return self._refuse(handler, 400, "json")
        if not isinstance(body, dict) or not isinstance(body.get("object"), dict) or \
                not isinstance(body.get("operation"), str):
            return self._refuse(handler, 400, "notification")
        self.received += 1
        handler.send_response(200)
        handler.send_header("Content-Length", "0")
        handler.end_headers()
        if body.get("objectType") in (None, "EVENT") and body["object"].get("objectType", "EVENT") == "EVENT":
            self._on(body["operation"], body["object"])
        return None

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 (http.server's name)
                receiver._handle(self)

            def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
                _log.debug("webhook %s", format % args)

        return Handler
