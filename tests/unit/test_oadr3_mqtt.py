"""The OpenADR 3.1 MQTT notifier of dr.vtn (oadr_mqtt): the topic names and the privacy routing; `GET notifiers`
and the `notifiers/mqtt/topics/...` endpoints over real HTTP (every response validated against openadr3.yaml);
and real paho subscribers on the local Mosquitto (127.0.0.1:1883, a topic prefix of its own per test) receiving
the spec's `notification` of events created through the API, a VEN's topic never carrying another VEN's event.

"Nothing arrived" is proven without sleeping: the notifier publishes in order on one connection and the broker
keeps a publisher's order per subscriber, so once a later notification has arrived on a VEN's topic, an earlier
one for that topic would have arrived before it."""

from __future__ import annotations

import json
import random
import socket
import threading
import time
import uuid
from datetime import datetime, timedelta, timezone
from pathlib import Path

import httpx
import paho.mqtt.client as mqtt
import pytest
import yaml
from paho.mqtt.enums import CallbackAPIVersion

from dr_vtn_dispatcher.config import ConfigError, parse_config
from dr_vtn_dispatcher.errors import ApiError
from dr_vtn_dispatcher.oadr_mqtt import MqttNotifier, VenView, notification, route, topics_for
from dr_vtn_dispatcher.service import VtnService

SPEC = Path(__file__).resolve().parents[2] / "web" / "dr_web" / "oadr3" / "openadr3.yaml"
P = "OpenADR/3.1.0"
BROKER = ("127.0.0.1", 1883)


# --- topic names and routing (no broker) --------------------------------------------------------------------
def test_routes_follow_the_spec_topics_and_ven_privacy():
    a = VenView.of("v1", {"venName": "ven-a", "targets": ["group-1"]})
    b = VenView.of("v2", {"venName": "ven-b"})
    to_a = {"id": "e1", "programID": "p1", "targets": ["ven-a"]}
    assert route(P, "EVENT", "CREATE", to_a, [a, b]) == [
        f"{P}/events/create", f"{P}/programs/p1/events/create", f"{P}/vens/v1/events/create"]
    to_group = {"id": "e2", "programID": "p1", "targets": ["group-1", "elsewhere"]}
    assert route(P, "EVENT", "UPDATE", to_group, [a, b])[-1:] == [f"{P}/vens/v1/events/update"]
    untargeted = {"id": "e3", "programID": "p1", "targets": None}
    assert route(P, "EVENT", "DELETE", untargeted, [a, b])[2:] == [f"{P}/vens/v1/events/delete",
                                                                    f"{P}/vens/v2/events/delete"]
    to_nobody_known = {"id": "e4", "programID": "p1", "targets": ["ven-z"]}
    assert route(P, "EVENT", "CREATE", to_nobody_known, [a, b]) == [f"{P}/events/create",
                                                                    f"{P}/programs/p1/events/create"]
    program = {"id": "p1", "targets": ["ven-b"]}
    assert route(P, "PROGRAM", "CREATE", program, [a, b]) == [f"{P}/programs/create",
                                                              f"{P}/vens/v2/programs/create"]
    assert route(P, "PROGRAM", "UPDATE", program, [a, b]) == [f"{P}/programs/update", f"{P}/programs/p1/update",
                                                              f"{P}/vens/v2/programs/update"]
    assert route(P, "VEN", "CREATE", {"id": "v1"}, []) == [f"{P}/vens/create"]
    assert route(P, "VEN", "DELETE", {"id": "v1"}, []) == [f"{P}/vens/delete", f"{P}/vens/v1/delete"]
    assert route(P, "RESOURCE", "CREATE", {"id": "r1", "venID": "v2"}, []) == [
        f"{P}/resources/create", f"{P}/vens/v2/resources/create"]
    assert route(P, "REPORT", "CREATE", {"id": "x"}, [a, b]) == [f"{P}/reports/create"]
    assert route(P, "SUBSCRIPTION", "DELETE", {"id": "s"}, [a, b]) == [f"{P}/subscriptions/delete"]


def test_a_subscription_is_published_without_its_callback_tokens():
    sub = {"id": "s1", "objectOperations": [{"objects": ["EVENT"], "operations": ["CREATE"],
                                             "callbackUrl": "http://x", "bearerToken": "secret-cb"}]}
    note = notification("SUBSCRIPTION", "CREATE", sub)
    assert note["object"]["objectOperations"][0]["bearerToken"] is None
    assert "secret-cb" not in json.dumps(note)
    assert sub["objectOperations"][0]["bearerToken"] == "secret-cb"   # the stored object is untouched


def test_topics_answers_and_their_privacy():
    def ask(path, is_ven=False):
        return topics_for(P, path, is_ven, owns_ven=lambda v: v == "v1", ven_exists=lambda v: v in ("v1", "v2"),
                          program_exists=lambda p: p == "p1")

    assert ask("programs") == {"topics": {"CREATE": f"{P}/programs/create", "UPDATE": f"{P}/programs/update",
                                          "DELETE": f"{P}/programs/delete", "ALL": f"{P}/programs/+"}}
    assert ask("programs/p1")["topics"] == {"UPDATE": f"{P}/programs/p1/update", "DELETE": f"{P}/programs/p1/delete",
                                            "ALL": f"{P}/programs/p1/+"}
    assert ask("programs/p1/events")["topics"]["CREATE"] == f"{P}/programs/p1/events/create"
    assert ask("vens/v2")["topics"]["UPDATE"] == f"{P}/vens/v2/update"
    assert ask("vens/v1/events", is_ven=True)["topics"]["ALL"] == f"{P}/vens/v1/events/+"
    for path, is_ven, code in (("events", True, "forbidden"), ("programs/p1", True, "not_found"),
                               ("programs", True, "not_found"),
                               ("vens/v2/events", True, "not_found"), ("vens/v9", False, "not_found"),
                               ("programs/p9", False, "not_found"), ("programs/p1/reports", False, "not_found"),
                               ("vens/v1/reports", True, "not_found"), ("nothing", False, "not_found")):
        with pytest.raises(ApiError) as refused:
            ask(path, is_ven)
        assert refused.value.code == code, path


def test_the_config_is_validated_naming_the_key():
    mqtt_cfg = parse_config({"openadr3": {"mqtt": {"host": "broker.example", "port": 8883, "tls": True,
                                                   "authentication": {"method": "OAUTH2_BEARER_TOKEN",
                                                                      "username": "{clientID}"}}}}).openadr3.mqtt
    assert mqtt_cfg.announced_uris == ["mqtts://broker.example:8883"] and mqtt_cfg.topic_prefix == P
    for bad, key in (({"host": "h", "topicPrefix": "a/#"}, "topicPrefix"),
                     ({"host": "h", "authentication": {"method": "CERTIFICATE"}}, "authentication"),
                     ({"host": "h", "uris": ["http://h"]}, "uris"),
                     ({"host": "10.1.2.3", "password": "pw-change-me"}, "openadr3.mqtt"),
                     ({"host": "h", "colour": "red"}, "colour"),
                     ({"port": 1883}, "host")):
        with pytest.raises(ConfigError) as refused:
            parse_config({"openadr3": {"mqtt": bad}})
        assert key in refused.value.key and "change-me" not in str(refused.value)


# --- a real broker ------------------------------------------------------------------------------------------
def _broker_up() -> bool:
    try:
        socket.create_connection(BROKER, timeout=1).close()
        return True
    except OSError:
        return False


needs_broker = pytest.mark.skipif(not _broker_up(), reason="no Mosquitto on 127.0.0.1:1883")


class Subscriber:
    """A paho client subscribed to `filter_`; records (topic, payload, qos, retain). Connected from paho's own
    thread (the socket stays in the thread that made it, gevent's or not)."""

    def __init__(self, filter_: str) -> None:
        self.messages: list[tuple[str, dict, int, bool]] = []
        self.ready = threading.Event()
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"t-{uuid.uuid4().hex[:12]}")
        self.client.on_connect = lambda c, u, f, rc, p: c.subscribe(filter_, qos=1)
        self.client.on_subscribe = lambda c, u, mid, rcs, p: self.ready.set()
        self.client.on_message = lambda c, u, m: self.messages.append(
            (m.topic, json.loads(m.payload), m.qos, bool(m.retain)))
        self.client.connect_async(*BROKER)
        self.client.loop_start()
        assert self.ready.wait(10), "the subscriber did not get its SUBACK"

    def on(self, topic: str) -> list[dict]:
        return [body for t, body, _q, _r in self.messages if t == topic]

    def wait_for(self, predicate, timeout: float = 10.0) -> None:
        deadline = time.monotonic() + timeout
        while not predicate():
            assert time.monotonic() < deadline, f"not received in time; got {[m[0] for m in self.messages]}"
            time.sleep(0.01)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def notification_validator():
    from openapi_schema_validator import OAS30Validator

    spec = yaml.safe_load(SPEC.read_text())
    # notification.object's discriminator has no mapping: a validator would look for a schema named `EVENT`
    spec["components"]["schemas"]["notification"]["properties"]["object"]["discriminator"]["mapping"] = {
        kind: f"#/components/schemas/{kind.lower()}" for kind in ("PROGRAM", "REPORT", "EVENT", "SUBSCRIPTION")}
    return OAS30Validator({"$ref": "#/components/schemas/notification", "components": spec["components"]})


@pytest.fixture
def mqtt_server(tmp_path):
    """dr.web's OpenADR API over HTTP (test_oadr3_api.Server) on a dr.vtn with the MQTT notifier on the local
    broker under a prefix of this test's own."""
    if not _broker_up():
        pytest.skip("no Mosquitto on 127.0.0.1:1883")
    from tests.unit.test_oadr3_api import Server

    server = Server(tmp_path)
    prefix = f"t{uuid.uuid4().hex[:10]}/{P}"
    config = parse_config({"openadr3": {"mqtt": {"host": BROKER[0], "port": BROKER[1], "topicPrefix": prefix,
                                                 "clientId": f"vtn-{uuid.uuid4().hex[:10]}"}}})
    web = server.web
    web.vtn.stop()
    web.vtn = VtnService(web.store, web.clock, web.sender, config, rng=random.Random(1),
                         mqtt=MqttNotifier(config.openadr3.mqtt))
    web.vtn.start()
    web.gateway.peers["dr.vtn"] = web.vtn
    server.prefix = prefix
    yield server
    server.close()


def _register(server, client, name: str) -> str:
    made = server.check(client.create_ven({"objectType": "VEN_VEN_REQUEST", "venName": name}))
    assert made.status_code == 201, made.json()
    return made.json()["id"]


def test_notifiers_and_topics_over_http_validated(mqtt_server):
    from tests.unit.test_oadr3_api import BL, VEN1, VEN2

    server = mqtt_server
    bl, ven1, ven2 = server.client(BL), server.client(VEN1), server.client(VEN2)
    answer = server.check(ven1.get_notifiers()).json()
    assert answer == {"WEBHOOK": True, "MQTT": {"URIS": ["mqtt://127.0.0.1:1883"], "serialization": "JSON",
                                                "authentication": {"method": "ANONYMOUS"}}}
    id1, id2 = _register(server, ven1, "ven-1"), _register(server, ven2, "ven-2")
    p = server.prefix
    assert server.check(bl.get_mqtt_topics_events()).json()["topics"]["CREATE"] == f"{p}/events/create"
    assert server.check(bl.get_mqtt_topics_program_events("default")).json()["topics"]["ALL"] == \
        f"{p}/programs/default/events/+"
    assert server.check(bl.get_mqtt_topics_program("default")).json()["topics"] == {
        "UPDATE": f"{p}/programs/default/update", "DELETE": f"{p}/programs/default/delete",
        "ALL": f"{p}/programs/default/+"}
    for ask in (bl.get_mqtt_topics_programs, bl.get_mqtt_topics_vens, bl.get_mqtt_topics_reports,
                bl.get_mqtt_topics_subscriptions, bl.get_mqtt_topics_resources):
        assert server.check(ask()).json()["topics"]["UPDATE"].startswith(p + "/")
    assert server.check(bl.get_mqtt_topics_ven(id2)).json()["topics"]["DELETE"] == f"{p}/vens/{id2}/delete"
    mine = server.check(ven1.get_mqtt_topics_ven_events(id1))
    assert mine.json() == {"topics": {"CREATE": f"{p}/vens/{id1}/events/create",
                                      "UPDATE": f"{p}/vens/{id1}/events/update",
                                      "DELETE": f"{p}/vens/{id1}/events/delete", "ALL": f"{p}/vens/{id1}/events/+"}}
    assert server.check(ven1.get_mqtt_topics_ven_programs(id1)).json()["topics"]["CREATE"] == \
        f"{p}/vens/{id1}/programs/create"
    assert server.check(ven1.get_mqtt_topics_ven_resources(id1)).status_code == 200
    assert server.check(ven1.get_mqtt_topics_ven(id1)).status_code == 200
    # a VEN asks only for its own VEN's topics; the broad ones are the business logic's
    assert server.check(ven1.get_mqtt_topics_ven_events(id2)).status_code == 404
    assert server.check(ven1.get_mqtt_topics_ven(id2)).status_code == 404
    assert server.check(ven1.get_mqtt_topics_events()).status_code == 403
    assert server.check(ven1.get_mqtt_topics_program("default")).status_code == 404
    assert server.check(ven1.get_mqtt_topics_programs()).status_code == 404
    assert server.check(bl.get_mqtt_topics_program("nope")).status_code == 404
    assert server.check(bl.get_mqtt_topics_ven_events("nope")).status_code == 404
    assert server.check(httpx.get(server.base + "/notifiers/mqtt/topics/events")).status_code == 401
    assert server.validated == 24


def test_notifiers_without_mqtt_is_webhooks_only(tmp_path):
    from tests.unit.test_oadr3_api import BL, Server

    server = Server(tmp_path)
    try:
        bl = server.client(BL)
        assert server.check(bl.get_notifiers()).json() == {"WEBHOOK": True}
        assert server.check(bl.get_mqtt_topics_programs()).status_code == 404
    finally:
        server.close()


@needs_broker
def test_event_notifications_reach_the_right_ven_topics_only(mqtt_server):
    from tests.unit.test_oadr3_api import BL, VEN1, VEN2, event_body

    server = mqtt_server
    p = server.prefix
    bl, ven1, ven2 = server.client(BL), server.client(VEN1), server.client(VEN2)
    id1, id2 = _register(server, ven1, "ven-1"), _register(server, ven2, "ven-2")
    everything, only_b = Subscriber(f"{p}/#"), Subscriber(f"{p}/vens/{id2}/#")
    try:
        to_a = server.check(bl.create_event(event_body("default", targets=["ven-1"]))).json()
        to_all = server.check(bl.create_event(event_body("default"))).json()
        server.check(bl.update_event(to_a["id"], event_body("default", kw=4, targets=["ven-1"])))
        server.check(bl.delete_event(to_a["id"]))
        everything.wait_for(lambda: len(everything.on(f"{p}/vens/{id1}/events/delete")) == 1)
        only_b.wait_for(lambda: len(only_b.on(f"{p}/vens/{id2}/events/create")) == 1)
        # VEN A's topic and the broad ones carry the targeted event; VEN B's carries only the untargeted one
        assert [n["object"]["id"] for n in everything.on(f"{p}/vens/{id1}/events/create")] == [to_a["id"], to_all["id"]]
        assert [n["object"]["id"] for n in everything.on(f"{p}/events/create")] == [to_a["id"], to_all["id"]]
        assert [n["object"]["id"] for n in everything.on(f"{p}/programs/default/events/create")] == \
            [to_a["id"], to_all["id"]]
        assert [n["operation"] for n in everything.on(f"{p}/vens/{id1}/events/update")] == ["UPDATE"]
        assert [(t, b["object"]["id"]) for t, b, _q, _r in only_b.messages] == \
            [(f"{p}/vens/{id2}/events/create", to_all["id"])]
        validator = notification_validator()
        events = [m for m in everything.messages if "/events/" in m[0]]
        assert len(events) == 13   # 3 + 4 (to every VEN) + 3 + 3
        for _topic, body, qos, retained in events:
            validator.validate(body)
            assert body["objectType"] == "EVENT" and qos == 1 and not retained
            assert body["object"]["createdDateTime"].endswith("Z")
        created = everything.on(f"{p}/events/create")[0]
        assert created["targets"] == ["ven-1"] and created["object"]["intervals"][0]["payloads"][0]["values"] == [-2]
        _wait_idle(server.web.vtn)
        counts = server.web.vtn.health()["mqtt"]
        assert counts["mqttPublished"] == counts["mqttQueued"] >= 13 and counts["mqttFailed"] == 0
        assert counts["mqttConnected"] is True
    finally:
        everything.close()
        only_b.close()


def _wait_idle(vtn, timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while not vtn.mqtt.notifier.idle():
        assert time.monotonic() < deadline, vtn.mqtt.counters()
        time.sleep(0.01)
    return True


@needs_broker
def test_seed_api_events_and_other_objects_are_published(mqtt_server):
    from tests.unit.test_oadr3_api import BL, VEN1

    server = mqtt_server
    p = server.prefix
    watch = Subscriber(f"{p}/#")
    try:
        bl, ven1 = server.client(BL), server.client(VEN1)
        id1 = _register(server, ven1, "ven-1")
        program = server.check(bl.create_program({"programName": "peak", "targets": ["ven-1"]})).json()
        sub = server.check(bl.create_subscription({
            "clientName": "bl", "objectOperations": [{"objects": ["EVENT"], "operations": ["CREATE"],
                                                      "callbackUrl": "https://callbacks.example.com/cb",
                                                      "bearerToken": "cb-secret-1"}]})).json()
        start = (datetime.now(timezone.utc) + timedelta(minutes=10)).isoformat()
        made = server.web.post("/api/events/", {"startTime": start, "durationS": 600, "requestedReductionKw": 1,
                                                "allVens": True})
        assert made.status_code == 201, made.json
        seed = made.json
        assert server.web.post(f"/api/events/{seed['eventId']}/stop").json["status"] == "cancelled"
        watch.wait_for(lambda: watch.on(f"{p}/vens/{id1}/events/delete"))
        assert [n["object"]["id"] for n in watch.on(f"{p}/vens/{id1}/events/create")] == [seed["eventId"]]
        assert [n["object"]["id"] for n in watch.on(f"{p}/events/delete")] == [seed["eventId"]]
        assert watch.on(f"{p}/vens/create")[0]["object"]["id"] == id1
        assert not watch.on(f"{p}/vens/{id1}/create")      # one object's topics have no create
        assert [n["object"]["id"] for n in watch.on(f"{p}/vens/{id1}/programs/create")] == [program["id"]]
        published_sub = watch.on(f"{p}/subscriptions/create")[0]
        assert published_sub["object"]["id"] == sub["id"]
        assert all("cb-secret-1" not in json.dumps(body) for _t, body, _q, _r in watch.messages)
        validator = notification_validator()
        for topic, body, _q, _r in watch.messages:
            if not topic.endswith("vens/create"):   # the spec's `ven` schema is unsatisfiable (see README)
                validator.validate(body)
    finally:
        watch.close()


def test_a_missing_broker_never_blocks_and_the_queue_is_bounded():
    with socket.socket() as probe:      # a port with nothing listening
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]

    def notifier_for(max_pending: int) -> MqttNotifier:
        return MqttNotifier(parse_config({"openadr3": {"mqtt": {"host": "127.0.0.1", "port": port,
                                                                "maxPending": max_pending}}}).openadr3.mqtt)

    notifier = notifier_for(1000)
    assert notifier.submit(["a/b"], {"x": 1}) is False          # not started: refused, counted
    notifier.start()
    try:
        started = time.perf_counter()
        for i in range(100):    # no broker: paho keeps the QoS 1 messages for when it connects
            assert notifier.submit([f"t/{i}", f"u/{i}"], {"i": i})
        assert time.perf_counter() - started < 1.0
        deadline = time.monotonic() + 10
        while notifier.counters()["mqttPending"] != 200 or not notifier._queue.empty():
            assert time.monotonic() < deadline, notifier.counters()
            time.sleep(0.01)
        counts = notifier.counters()
        assert counts["mqttConnected"] is False and counts["mqttPublished"] == 0 and counts["mqttFailed"] == 0
        assert counts["mqttQueued"] == 200 and counts["mqttDropped"] == 1
    finally:
        notifier.stop()
    # the publishing thread held up: two submissions wait, the next ones are dropped and counted
    small = notifier_for(2)
    small.start()
    try:
        held, release = threading.Event(), threading.Event()
        real_publish = small._client.publish

        def slow_publish(*args, **kwargs):
            held.set()
            release.wait(10)
            return real_publish(*args, **kwargs)

        small._client.publish = slow_publish
        assert small.submit(["held/1"], {"i": 1})
        assert held.wait(5)
        assert small.submit(["w/1"], {"i": 2}) and small.submit(["w/2"], {"i": 3})
        assert small.submit(["x/1", "x/2"], {"i": 4}) is False
        assert small.counters()["mqttDropped"] == 2 and small.counters()["mqttQueued"] == 3
        release.set()
    finally:
        small.stop()


def test_notifications_queued_while_the_broker_is_away_go_out_when_it_is_back(tmp_path):
    import shutil

    from dr_tools.fleet.brokers import Mosquitto

    if shutil.which("mosquitto") is None:
        pytest.skip("mosquitto is not installed")
    broker = Mosquitto(tmp_path / "broker").start()
    config = parse_config({"openadr3": {"mqtt": {"host": "127.0.0.1", "port": broker.port}}})
    notifier = MqttNotifier(config.openadr3.mqtt)
    got: list[str] = []

    def subscriber() -> mqtt.Client:      # a persistent session: the broker keeps its QoS 1 messages
        client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="t-away-sub", clean_session=False)
        ready = threading.Event()
        client.on_connect = lambda c, u, f, rc, p: c.subscribe("away/#", qos=1)
        client.on_subscribe = lambda c, u, mid, rcs, p: ready.set()
        client.on_message = lambda c, u, m: got.append(json.loads(m.payload)["n"])
        client.connect_async("127.0.0.1", broker.port)
        client.loop_start()
        assert ready.wait(10)
        return client

    sub = subscriber()
    notifier.start()
    try:
        deadline = time.monotonic() + 10
        while not notifier.counters()["mqttConnected"]:
            assert time.monotonic() < deadline
            time.sleep(0.01)
        notifier.submit(["away/1"], {"n": 1})
        deadline = time.monotonic() + 10
        while got != [1]:
            assert time.monotonic() < deadline, got
            time.sleep(0.01)
        broker.stop()
        deadline = time.monotonic() + 10
        while notifier.counters()["mqttConnected"]:
            assert time.monotonic() < deadline
            time.sleep(0.01)
        assert notifier.submit(["away/2", "away/3"], {"n": 2})
        time.sleep(0.2)
        assert notifier.counters()["mqttPending"] == 2 and notifier.counters()["mqttFailed"] == 0
        broker.start()
        deadline = time.monotonic() + 40      # paho reconnects with backoff (1, 2, 4 ... s)
        while sorted(got) != [1, 2, 2] or not notifier.idle():
            assert time.monotonic() < deadline, (got, notifier.counters())
            time.sleep(0.05)
        assert notifier.counters()["mqttPublished"] == 3
    finally:
        notifier.stop()
        sub.disconnect()
        sub.loop_stop()
        broker.stop()
