"""The OpenADR 3.1 MQTT notifier on a real VOLTTRON 11 platform: dr.vtn (with `openadr3.mqtt` on the local
Mosquitto, a topic prefix of this run's own) behind dr.web (port 0). Through the `openadr3` client library over
real HTTP, every response validated against openadr3.yaml: `GET notifiers` announces the broker, each VEN client
reads its own events topic names; paho subscribers on those topics receive the spec's `notification` of the
events the business logic creates, VEN B's topic nothing of VEN A's event. Run with its own site:
VDR_TEST_SITE=pytest-h1.

And the shipped broker set-up (platform-config/mosquitto: TLS, per-user passwords, volttron-dr.acl unchanged) on
a private Mosquitto: dr.vtn's notifier publishes as dr-vtn-oadr; a VEN, logged in with its venID, reads only its
own vens/{venID}/... topics whatever it subscribes to and cannot publish on another VEN's; the business-logic user
reads everything."""

from __future__ import annotations

import json
import random
import ssl
import subprocess
import time
import uuid

import httpx
import pytest

from dr_common import topics
from dr_vtn_dispatcher.config import parse_config
from dr_vtn_dispatcher.dispatch import MemorySender
from dr_vtn_dispatcher.lifecycle import ManualScheduler
from dr_vtn_dispatcher.oadr_mqtt import MqttNotifier
from dr_vtn_dispatcher.service import VtnService
from dr_vtn_dispatcher.store import Store, sqlite_url
from tests.integration.test_broker_acl import ACL, CONF_DIR, ShippedBroker, Ven, _wait, fleet_certs
from tests.integration.test_oadr3_platform import _openapi
from tests.integration.test_web_platform import _healthy, web_url
from tests.unit.test_oadr3_mqtt import BROKER, Subscriber, _broker_up, notification_validator
from tests.unit.test_oadr3_api import _Req, _Resp

openadr3 = pytest.importorskip("openadr3")
from openadr3.api import OpenADRClient  # noqa: E402
from openadr3.auth import fetch_token  # noqa: E402

pytestmark = [pytest.mark.integration, pytest.mark.mqtt]

TOKEN = "pytest-token-0001"
BL = ("mq-bl", "mq-bl-secret-0001")
VEN_A = ("mq-ven-a", "mq-ven-a-secret-01")
VEN_B = ("mq-ven-b", "mq-ven-b-secret-01")
PREFIX = f"it{uuid.uuid4().hex[:8]}/OpenADR/3.1.0"
WEB_CONFIG = {"host": "127.0.0.1", "port": 0, "api_token": TOKEN, "openadr3": {"clients": [
    {"clientId": BL[0], "clientSecret": BL[1], "role": "bl"},
    {"clientId": VEN_A[0], "clientSecret": VEN_A[1], "role": "ven", "venName": "mq-ven-a"},
    {"clientId": VEN_B[0], "clientSecret": VEN_B[1], "role": "ven", "venName": "mq-ven-b"}]}}
VTN_CONFIG = {"flushIntervalS": 0.5, "openadr3": {"mqtt": {
    "host": BROKER[0], "port": BROKER[1], "topicPrefix": PREFIX, "clientId": f"it-vtn-{uuid.uuid4().hex[:8]}"}}}


def _event(targets: list[str] | None) -> dict:
    body = {"programID": "default", "intervalPeriod": {"start": "0001-01-01", "duration": "PT2M"},
            "intervals": [{"id": 0, "payloads": [{"type": "DISPATCH_SETPOINT_RELATIVE", "values": [-1]}]}]}
    if targets:
        body["targets"] = targets
    return body


@pytest.mark.skipif(not _broker_up(), reason="no Mosquitto on 127.0.0.1:1883")
def test_event_notifications_reach_each_ven_topic_privately(vplatform):
    vplatform.install_agent("vtn_dispatcher", topics.VTN_IDENTITY, config=VTN_CONFIG, tag="dr-vtn")
    vplatform.install_agent("web", topics.WEB_IDENTITY, config=WEB_CONFIG, tag="dr-web")
    vplatform.wait_for(lambda: _healthy(vplatform, topics.VTN_IDENTITY), timeout=30, what="dr.vtn healthy")
    vplatform.wait_for(lambda: vplatform.rpc(topics.VTN_IDENTITY, topics.VtnRpc.HEALTH).get("mqtt", {})
                       .get("mqttConnected"), timeout=20, what="dr.vtn connected to the broker")
    base = web_url(vplatform).rstrip("/") + "/openadr3/3.1.0"
    openapi = _openapi(base)

    def check(response: httpx.Response) -> httpx.Response:
        openapi.validate_response(_Req(response.request), _Resp(response))
        return response

    bl, ven_a, ven_b = (OpenADRClient(base, token=fetch_token(base, *creds)) for creds in (BL, VEN_A, VEN_B))
    binding = check(ven_a.get_notifiers()).json()["MQTT"]
    assert binding == {"URIS": ["mqtt://127.0.0.1:1883"], "serialization": "JSON",
                       "authentication": {"method": "ANONYMOUS"}}
    ids = {}
    for name, client in (("mq-ven-a", ven_a), ("mq-ven-b", ven_b)):
        made = check(client.create_ven({"objectType": "VEN_VEN_REQUEST", "venName": name}))
        assert made.status_code == 201, made.json()
        ids[name] = made.json()["id"]
    topic_a = check(ven_a.get_mqtt_topics_ven_events(ids["mq-ven-a"])).json()["topics"]
    topic_b = check(ven_b.get_mqtt_topics_ven_events(ids["mq-ven-b"])).json()["topics"]
    assert check(ven_b.get_mqtt_topics_ven_events(ids["mq-ven-a"])).status_code == 404
    assert topic_a["ALL"] == f"{PREFIX}/vens/{ids['mq-ven-a']}/events/+"
    sub_a, sub_b = Subscriber(topic_a["ALL"]), Subscriber(topic_b["ALL"])
    try:
        sent = time.monotonic()
        to_a = check(bl.create_event(_event(["mq-ven-a"]))).json()
        to_all = check(bl.create_event(_event(None))).json()
        vplatform.wait_for(lambda: len(sub_a.messages) == 2 and sub_b.messages, timeout=10, step=0.01,
                           what="the notifications on both VENs' topics")
        took_ms = (time.monotonic() - sent) * 1000
        assert [(t, b["operation"], b["object"]["id"]) for t, b, _q, _r in sub_a.messages] == [
            (topic_a["CREATE"], "CREATE", to_a["id"]), (topic_a["CREATE"], "CREATE", to_all["id"])]
        # published in order on one connection: B's first message is the untargeted event, nothing of A's before
        assert [(t, b["object"]["id"]) for t, b, _q, _r in sub_b.messages] == [(topic_b["CREATE"], to_all["id"])]
        validator = notification_validator()
        for _t, body, qos, retained in sub_a.messages + sub_b.messages:
            validator.validate(body)
            assert qos == 1 and not retained
        counts = vplatform.rpc(topics.VTN_IDENTITY, topics.VtnRpc.HEALTH)["mqtt"]
        assert counts["mqttFailed"] == 0 and counts["mqttDropped"] == 0 and counts["mqttQueued"] >= 7
        print(f"two event creates over HTTP -> both notifications on VEN A's topic: {took_ms:.0f} ms")
    finally:
        sub_a.close()
        sub_b.close()


def test_the_shipped_acl_keeps_each_ven_to_its_own_topics(tmp_path):
    bl = {"clientId": "bl", "role": "bl", "venName": None}
    store_url = sqlite_url(str(tmp_path / "vtn.sqlite"))

    def vtn(mqtt_config: dict | None) -> VtnService:
        config = parse_config({"openadr3": {"mqtt": mqtt_config}} if mqtt_config else {})
        clock = ManualScheduler(time.time())
        service = VtnService(Store(store_url), clock, MemorySender(clock.now), config, rng=random.Random(5),
                             mqtt=MqttNotifier(config.openadr3.mqtt) if mqtt_config else None)
        service.start()
        return service

    first = vtn(None)      # the VEN objects first: their ids are the VENs' broker usernames
    a = first.oadr_create("vens", {"objectType": "BL_VEN_REQUEST", "venName": "acl-a", "clientID": "ca"}, bl)["id"]
    b = first.oadr_create("vens", {"objectType": "BL_VEN_REQUEST", "venName": "acl-b", "clientID": "cb"}, bl)["id"]
    first.stop()
    first.store.close()
    passwords = {"dr-vtn-oadr": "vtn-pw-8f2k", "dr-oadr-bl": "bl-pw-3m9x", a: "a-pw-q7z1", b: "b-pw-w4c6"}
    certs = fleet_certs(tmp_path / "certs", [])
    ca, (server_cert, server_key) = certs["ca"][0], certs["server"]
    passwd = tmp_path / "passwd"
    for n, (user, password) in enumerate(passwords.items()):
        subprocess.run(["mosquitto_passwd", *(["-c"] if n == 0 else []), "-b", str(passwd), user, password],
                       check=True, capture_output=True)
    broker = ShippedBroker(tmp_path / "broker", CONF_DIR / "volttron-dr-password.conf", {
        "certfile": server_cert, "keyfile": server_key, "password_file": str(passwd), "acl_file": str(ACL)}).start()
    def tls() -> ssl.SSLContext:
        return ssl.create_default_context(cafile=ca)

    service = None
    clients: list[Ven] = []
    try:
        service = vtn({"host": "127.0.0.1", "port": broker.port, "tls": True, "caFile": ca,
                       "username": "dr-vtn-oadr", "password": passwords["dr-vtn-oadr"], "clientId": "dr-vtn-oadr"})
        _wait(lambda: service.mqtt.counters()["mqttConnected"], 15, f"dr.vtn connected\n{broker.log_tail()}")
        ven_a, ven_b = Ven(broker.port, a, tls(), passwords[a]), Ven(broker.port, b, tls(), passwords[b])
        reader = Ven(broker.port, "dr-oadr-bl", tls(), passwords["dr-oadr-bl"])
        clients += [ven_a, ven_b, reader]
        prefix = "OpenADR/3.1.0"
        ven_a.subscribe(f"{prefix}/vens/{a}/#")
        ven_b.subscribe(f"{prefix}/vens/{b}/#", f"{prefix}/vens/{a}/#", f"{prefix}/events/#", f"{prefix}/#")
        reader.subscribe(f"{prefix}/#")
        to_a = service.oadr_create("events", _event(["acl-a"]), bl)
        # B forges a notification on A's topic (acknowledged, never delivered: the ACL gives B no write there)
        ven_b.publish(f"{prefix}/vens/{a}/events/create", {"objectType": "EVENT", "operation": "CREATE",
                                                           "object": {"id": "forged"}})
        to_all = service.oadr_create("events", _event(None), bl)
        _wait(lambda: len(ven_a.topics()) == 2 and ven_b.topics(), 10, "the notifications on A's and B's topics")
        _wait(lambda: f"{prefix}/events/create" in reader.topics() and len(reader.topics()) >= 7, 10,
              "the business logic's copies")
        ids_a = [json.loads(body)["object"]["id"] for _t, body in ven_a.received]
        assert ids_a == [to_a["id"], to_all["id"]]          # nothing forged, in order
        assert ven_b.topics() == [f"{prefix}/vens/{b}/events/create"], ven_b.topics()
        assert json.loads(ven_b.received[0][1])["object"]["id"] == to_all["id"]
        assert {f"{prefix}/events/create", f"{prefix}/programs/default/events/create",
                f"{prefix}/vens/{a}/events/create", f"{prefix}/vens/{b}/events/create"} <= set(reader.topics())
        assert all(json.loads(body)["object"]["id"] != "forged" for _t, body in reader.received)
        assert service.mqtt.counters()["mqttFailed"] == 0
    finally:
        for client in clients:
            client.stop()
        if service is not None:
            service.stop()
            service.store.close()
        broker.stop()
