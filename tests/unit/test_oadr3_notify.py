"""OpenADR 3 webhook notifications from dr.vtn (oadr_notify, wired through OadrApi): a real local HTTP receiver
gets `{objectType, operation, object, targets}` with the subscription's bearer token, validated against the
spec's `notification` schema; targets and VEN privacy are honoured; failures are retried with backoff, then
given up and counted; the queue is bounded."""

from __future__ import annotations

import json
import random
import threading
import time
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path

import pytest
import yaml

from dr_vtn_dispatcher.config import parse_config
from dr_vtn_dispatcher.dispatch import MemorySender
from dr_vtn_dispatcher.lifecycle import ManualScheduler
from dr_vtn_dispatcher.oadr_notify import WebhookNotifier
from dr_vtn_dispatcher.service import VtnService
from dr_vtn_dispatcher.store import Store, sqlite_url

SPEC = Path(__file__).resolve().parents[2] / "web" / "dr_web" / "oadr3" / "openadr3.yaml"
BL = {"clientId": "bl", "role": "bl", "venName": None}
VEN_A = {"clientId": "a-client", "role": "ven", "venName": "ven-a"}
VEN_B = {"clientId": "b-client", "role": "ven", "venName": "ven-b"}
LOOPBACK_ALLOWED = {"openadr3": {"callbackPolicy": {"allowedHosts": ["127.0.0.1"]}}}   # the receivers' address


class Receiver:
    """A webhook endpoint on a free loopback port: records (path, Authorization, body); answers `fail_first`
    requests with 500."""

    def __init__(self, fail_first: int = 0, port: int = 0) -> None:
        self.received: list[tuple[str, str | None, dict]] = []
        self.fail_first = fail_first
        self.hits = 0
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                outer.hits += 1
                if outer.hits <= outer.fail_first:
                    self.send_response(500)
                else:
                    outer.received.append((self.path, self.headers.get("Authorization"), json.loads(body)))
                    self.send_response(200)
                self.end_headers()

            def log_message(self, *args) -> None:
                pass

        serve_in_thread(self, lambda: HTTPServer(("127.0.0.1", port), Handler))

    def close(self) -> None:
        self.http.shutdown()
        self.thread.join(5)
        self.http.server_close()


def serve_in_thread(owner, build) -> None:
    """Build the server `build()` returns and serve it in a thread of its own; sets `owner.http`, `owner.thread`
    and `owner.url`. Built and served in one thread: when an earlier test loaded VOLTTRON, sockets are gevent's,
    and a gevent socket must stay in the thread that made it."""
    ready = threading.Event()

    def serve() -> None:
        owner.http = build()
        ready.set()
        owner.http.serve_forever(poll_interval=0.05)

    owner.thread = threading.Thread(target=serve, daemon=True)
    owner.thread.start()
    ready.wait(10)
    owner.url = f"http://127.0.0.1:{owner.http.server_port}"


@pytest.fixture
def receiver():
    r = Receiver()
    yield r
    r.close()


def make_vtn(folder, notifier: WebhookNotifier) -> VtnService:
    clock = ManualScheduler(time.time())
    store = Store(sqlite_url(str(folder / "vtn.sqlite")))
    service = VtnService(store, clock, MemorySender(clock.now), parse_config(LOOPBACK_ALLOWED), rng=random.Random(2),
                         notifier=notifier)
    service.start()
    return service


def wait_until(predicate, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        time.sleep(0.01)


def subscribe(service: VtnService, who: dict, url: str, token: str, objects=("EVENT",), **extra) -> dict:
    body = {"clientName": who["clientId"], "objectOperations": [
        {"objects": list(objects), "operations": ["CREATE", "UPDATE", "DELETE"], "callbackUrl": url,
         "bearerToken": token}], **extra}
    return service.oadr_create("subscriptions", body, who)


def event(targets=None) -> dict:
    body = {"programID": "default", "intervalPeriod": {"start": "0001-01-01", "duration": "PT10M"},
            "intervals": [{"id": 0, "payloads": [{"type": "DISPATCH_SETPOINT_RELATIVE", "values": [-1]}]}]}
    if targets:
        body["targets"] = targets
    return body


def test_webhooks_follow_targets_and_privacy_and_match_the_spec(tmp_path, receiver):
    from openapi_schema_validator import OAS30Validator

    notifier = WebhookNotifier(backoff_s=0.01)
    vtn = make_vtn(tmp_path, notifier)
    try:
        subscribe(vtn, BL, receiver.url + "/bl", "bl-cb-token")
        subscribe(vtn, VEN_A, receiver.url + "/a", "a-cb-token")
        subscribe(vtn, VEN_B, receiver.url + "/b", "b-cb-token")
        subscribe(vtn, VEN_B, receiver.url + "/b-programs", "b-cb-token", objects=("PROGRAM",))
        to_a = vtn.oadr_create("events", event(["ven-a"]), BL)
        to_all = vtn.oadr_create("events", event(), BL)
        vtn.oadr_update("events", to_a["id"], event(["ven-a"]), BL)
        vtn.oadr_delete("events", to_all["id"], BL)
        wait_until(lambda: notifier.idle() and len(receiver.received) == 10)
        got = {}
        for path, auth, body in receiver.received:
            got.setdefault(path, []).append((body["operation"], body["object"]["id"]))
            assert auth == f"Bearer {path.strip('/').split('-')[0]}-cb-token"
        assert sorted(got["/bl"]) == sorted([("CREATE", to_a["id"]), ("CREATE", to_all["id"]),
                                             ("UPDATE", to_a["id"]), ("DELETE", to_all["id"])])
        assert sorted(got["/a"]) == sorted([("CREATE", to_a["id"]), ("CREATE", to_all["id"]),
                                            ("UPDATE", to_a["id"]), ("DELETE", to_all["id"])])
        assert sorted(got["/b"]) == sorted([("CREATE", to_all["id"]), ("DELETE", to_all["id"])])  # never to_a
        assert "/b-programs" not in got
        spec = yaml.safe_load(SPEC.read_text())
        # the spec's discriminator on notification.object has no mapping, so a validator looks for a schema named
        # after the objectType (`EVENT`); the mapping to the spec's own schema names is the only change
        spec["components"]["schemas"]["notification"]["properties"]["object"]["discriminator"]["mapping"] = {
            kind: f"#/components/schemas/{kind.lower()}"
            for kind in ("PROGRAM", "REPORT", "EVENT", "SUBSCRIPTION", "VEN", "RESOURCE")}
        schema = {"$ref": "#/components/schemas/notification", "components": spec["components"]}
        validator = OAS30Validator(schema)
        for _path, _auth, body in receiver.received:
            validator.validate(body)
            assert body["objectType"] == "EVENT"
        assert vtn.health()["webhooks"]["webhooksDelivered"] == 10
    finally:
        vtn.stop()
        vtn.store.close()


def test_failed_deliveries_are_retried_then_given_up(tmp_path):
    flaky = Receiver(fail_first=2)
    notifier = WebhookNotifier(backoff_s=0.01, attempts=3, workers=1)
    vtn = make_vtn(tmp_path, notifier)
    try:
        subscribe(vtn, BL, flaky.url + "/x", "t")
        vtn.oadr_create("events", event(), BL)
        wait_until(lambda: notifier.idle() and flaky.received)
        counts = notifier.counters()
        assert counts["webhooksDelivered"] == 1 and counts["webhookAttemptsFailed"] == 2
        flaky.fail_first = 10 ** 6     # from now on every attempt fails
        vtn.oadr_create("events", event(), BL)
        wait_until(lambda: notifier.counters()["webhooksGivenUp"] == 1)
        assert notifier.counters()["webhookAttemptsFailed"] == 5
    finally:
        vtn.stop()
        vtn.store.close()
        flaky.close()


def test_unreachable_callback_is_counted_not_raised(tmp_path):
    notifier = WebhookNotifier(backoff_s=0.01, attempts=2, timeout_s=0.5, workers=1)
    vtn = make_vtn(tmp_path, notifier)
    try:
        subscribe(vtn, BL, "http://127.0.0.1:9/nothing-listens", "t")
        made = vtn.oadr_create("events", event(), BL)
        assert made["id"]
        wait_until(lambda: notifier.counters()["webhooksGivenUp"] == 1)
    finally:
        vtn.stop()
        vtn.store.close()


def test_queue_is_bounded_and_stop_drops_what_waits():
    sent = []
    notifier = WebhookNotifier(post=lambda url, body, token, timeout: sent.append(url) or 200, max_pending=2)
    assert notifier.submit("s", "http://x/1", None, {"a": 1})
    assert notifier.submit("s", "http://x/2", None, {"a": 2})
    assert not notifier.submit("s", "http://x/3", None, {"a": 3})
    assert notifier.counters()["webhooksDropped"] == 1 and notifier.counters()["webhooksPending"] == 2
    notifier.stop()                    # never started: both waiting are dropped
    assert notifier.counters()["webhooksDropped"] == 3 and sent == []


def test_no_notifier_means_no_webhooks(tmp_path):
    clock = ManualScheduler(time.time())
    store = Store(sqlite_url(str(tmp_path / "vtn.sqlite")))
    vtn = VtnService(store, clock, MemorySender(clock.now), parse_config(LOOPBACK_ALLOWED))
    vtn.start()
    try:
        subscribe(vtn, BL, "http://127.0.0.1:9/x", "t")
        assert vtn.oadr_create("events", event(), BL)["id"] and "webhooks" not in vtn.health()
    finally:
        vtn.stop()
        store.close()


def test_seed_api_changes_notify_too(tmp_path, receiver):
    notifier = WebhookNotifier(backoff_s=0.01, workers=1)   # one worker: delivered in the order queued
    vtn = make_vtn(tmp_path, notifier)
    try:
        subscribe(vtn, BL, receiver.url + "/bl", "bl-cb-token")
        subscribe(vtn, VEN_B, receiver.url + "/b", "b-cb-token")
        start = time.time() + 600
        from datetime import datetime, timezone
        iso = datetime.fromtimestamp(start, timezone.utc).isoformat()
        vtn.register_ven({"venId": "ven-a", "transport": "bus"})
        made = vtn.create_event({"startTime": iso, "durationS": 300, "requestedReductionKw": 1, "venIds": ["ven-a"]})
        vtn.update_event(made["eventId"], {"requestedReductionKw": 2})
        vtn.cancel_event(made["eventId"])
        wait_until(lambda: notifier.idle() and len(receiver.received) == 3)
        assert [(p, b["operation"], b["object"]["id"]) for p, _a, b in receiver.received] == [
            ("/bl", "CREATE", made["eventId"]), ("/bl", "UPDATE", made["eventId"]),
            ("/bl", "DELETE", made["eventId"])]          # ven-b is not told of ven-a's event
        assert receiver.received[1][2]["object"]["intervals"][0]["payloads"][0]["values"] == [-2.0]
    finally:
        vtn.stop()
        vtn.store.close()


def test_a_webhook_owed_at_restart_is_still_delivered(tmp_path):
    from dr_vtn_dispatcher.oadr_notify import StoreKeep

    store = Store(sqlite_url(str(tmp_path / "vtn.sqlite")))
    clock = ManualScheduler(time.time())
    # first life: the receiver is down, the delivery waits for its next attempt when dr.vtn stops
    first = WebhookNotifier(backoff_s=60, attempts=5, timeout_s=0.5, workers=1, keep=StoreKeep(store))
    vtn = VtnService(store, clock, MemorySender(clock.now), parse_config(LOOPBACK_ALLOWED), notifier=first)
    vtn.start()
    receiver = Receiver()
    url = receiver.url
    receiver.close()
    subscribe(vtn, BL, url + "/owed", "owed-token")
    made = vtn.oadr_create("events", event(), BL)
    wait_until(lambda: first.counters()["webhookAttemptsFailed"] == 1)
    vtn.stop()
    assert len(StoreKeep(store).load()) == 1
    # second life, on the same store, with the receiver back on the same port
    back = Receiver(port=int(url.rsplit(":", 1)[1]))
    second = WebhookNotifier(backoff_s=0.01, workers=1, keep=StoreKeep(store))
    vtn = VtnService(store, clock, MemorySender(clock.now), parse_config(LOOPBACK_ALLOWED), notifier=second)
    vtn.start()
    try:
        wait_until(lambda: back.received and second.idle())
        ((path, auth, body),) = back.received
        assert path == "/owed" and auth == "Bearer owed-token" and body["object"]["id"] == made["id"]
        assert second.counters()["webhooksRestored"] == 1
        assert StoreKeep(store).load() == []
    finally:
        vtn.stop()
        back.close()
        store.close()
