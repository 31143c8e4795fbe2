"""The OpenADR 3.1 MQTT notifier on a real VOLTTRON 11 platform: dr.vtn (with `openadr3.mqtt` on the local
Mosquitto, a topic prefix of this run's own) behind dr.web (port 0). Through the `openadr3` client library over
real HTTP, every response validated against openadr3.yaml: `GET notifiers` announces the broker, each VEN client
reads its own events topic names; paho subscribers on those topics receive the spec's `notification` of the
events the business logic creates, VEN B's topic nothing of VEN A's event. Run with its own site:
VDR_TEST_SITE=pytest-h1."""

from __future__ import annotations

import time
import uuid

import httpx
import pytest

from dr_common import topics
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
