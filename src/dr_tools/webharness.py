"""An in-process status page over an in-process dr.vtn, for the unit tests and the benchmarks: the real dr.vtn
service (VtnService on SQLite with a manual clock) called the way dr.vtn's RPC exports call it (`api_call`, JSON
in and out), and a small historian that follows platform.historian's `event_performance` contract. Needs the
web and vtn_dispatcher packages importable (the checkout's folders are on the venv's path, see the README)."""

from __future__ import annotations

import json
import random
import time
from pathlib import Path
from typing import Any

from dr_common import topics
from dr_vtn_dispatcher.config import parse_config
from dr_vtn_dispatcher.dispatch import MemorySender
from dr_vtn_dispatcher.errors import api_call
from dr_vtn_dispatcher.lifecycle import ManualScheduler
from dr_vtn_dispatcher.service import VtnService
from dr_vtn_dispatcher.store import Store, sqlite_url
from dr_web.app import create_app
from dr_web.config import WebConfig
from dr_web.gateway import PeerFailed, PeerUnavailable
from dr_web.livestate import LiveState

TOKEN = "unit-test-token-1"


class FakeHistorian:
    """platform.historian's M&V RPC: a report per known event, the error convention otherwise."""

    def __init__(self) -> None:
        self.reports: dict[str, dict[str, Any]] = {}

    def event_performance(self, event_id: str) -> dict[str, Any]:
        if event_id not in self.reports:
            return {"error": f"eventId: no data for event {event_id!r}", "field": "eventId", "code": "not_found"}
        return self.reports[event_id]

    def health(self) -> dict[str, Any]:
        return {"status": "ok"}


class ServiceGateway:
    """Calls peers in-process; arguments and results cross a JSON round trip like the VIP bus's."""

    def __init__(self, peers: dict[str, Any]) -> None:
        self.peers = peers
        self.down: set[str] = set()
        self.broken: set[str] = set()
        self.calls: list[tuple[str, str]] = []
        self.arguments: list[tuple[str, str, list[Any], dict[str, Any]]] = []

    def call(self, identity: str, method: str, *args: Any, timeout: float, **kwargs: Any) -> Any:
        self.calls.append((identity, method))
        if identity in self.down or identity not in self.peers:
            raise PeerUnavailable(identity, f"no answer to {method} within {timeout:g} s")
        fn = getattr(self.peers[identity], method, None)
        if fn is None or identity in self.broken:
            raise PeerFailed(identity, method, "MethodNotFound" if fn is None else "RuntimeError('boom')")
        args, kwargs = json.loads(json.dumps([list(args), kwargs]))
        self.arguments.append((identity, method, args, kwargs))
        return json.loads(json.dumps(api_call(fn, *args, **kwargs)))


class WebHarness:
    def __init__(self, folder: Path, token: str | None = TOKEN) -> None:
        self.clock = ManualScheduler(time.time())
        self.sender = MemorySender(self.clock.now)
        self.store = Store(sqlite_url(str(folder / "vtn.sqlite")))
        self.vtn = VtnService(self.store, self.clock, self.sender, parse_config({}), rng=random.Random(1))
        self.vtn.start()
        self.historian = FakeHistorian()
        self.gateway = ServiceGateway({topics.VTN_IDENTITY: self.vtn, topics.HISTORIAN_IDENTITY: self.historian})
        self.live = LiveState()
        self.config = WebConfig(api_token=token, port=0)
        self.app = create_app(self.config, self.live, self.gateway,
                              lambda: {"identity": topics.WEB_IDENTITY, "ok": True, **self.live.counters()})
        self.client = self.app.test_client()

    def close(self) -> None:
        self.vtn.stop()
        self.store.close()

    def headers(self, token: str | None = TOKEN) -> dict[str, str]:
        return {"Authorization": f"Bearer {token}"} if token else {}

    def post(self, path: str, body: Any = None, token: str | None = TOKEN, raw: bytes | str | None = None):
        data = raw if raw is not None else (json.dumps(body) if body is not None else b"")
        return self.client.post(path, data=data, headers=self.headers(token), content_type="application/json")

    def get(self, path: str):
        return self.client.get(path)

    def snapshot(self) -> tuple[list, list]:
        """Everything the API can list: what a refused write must leave unchanged."""
        vens = self.get("/api/vens/")
        events = self.get("/api/events/?limit=10000")
        if vens.status_code != 200 or events.status_code != 200:
            raise RuntimeError(f"listing failed: vens {vens.status_code}, events {events.status_code}")
        return vens.json, events.json
