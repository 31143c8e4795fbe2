"""A VEN acts only as itself, end to end: dr.vtn and dr.mqtt (VTN side) on a real platform, the local
Mosquitto at 127.0.0.1:1883, and two VENs as plain paho clients.

VEN B, publishing on its own topics (`ven/ack/<B>`, `ven/telemetry/<B>`), tries to ack and reject VEN A's
command (knowing its exact correlationId: the test broker has no ACL, so B reads `ven/cmd/+`) and to report for
A. dr.vtn must ignore all of it: A's command stays pending and is retried with the same correlationId, A is not
marked rejected, A's kW is not moved to B, nothing is stored for A; the forged ack is counted. A's own ack is
then taken.
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from datetime import datetime, timezone

import pytest
from paho.mqtt.client import CallbackAPIVersion, Client

from dr_common import topics
from dr_common.topics import BridgeRpc, VtnRpc

pytestmark = [pytest.mark.integration, pytest.mark.mqtt]

RUN = uuid.uuid4().hex[:6]
A, B = f"trust{RUN}-a", f"trust{RUN}-b"
VTN_CONFIG = {"allocation": "equal", "retryInitialS": 1.0, "retryFactor": 1.0, "retryMaxS": 1.0,
              "flushIntervalS": 0.5, "offlineTimeoutS": 120}


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, timezone.utc).isoformat()


def _ok(result):
    assert not (isinstance(result, dict) and "error" in result), result
    return result


class MqttVen:
    """One VEN as a plain paho client: records what arrives on its subscriptions, publishes QoS 1."""

    def __init__(self, ven_id: str, subscriptions: list[str]) -> None:
        self.ven_id = ven_id
        self.received: list[tuple[str, dict]] = []
        self._lock = threading.Lock()
        self._ready = threading.Event()
        self.client = Client(CallbackAPIVersion.VERSION2, client_id=f"pytest-trust-{ven_id}", clean_session=True)
        self.client.on_connect = lambda c, u, f, rc, p: c.subscribe([(s, 1) for s in subscriptions])
        self.client.on_subscribe = lambda *args: self._ready.set()
        self.client.on_message = self._on_message

    def _on_message(self, client, userdata, message) -> None:
        with self._lock:
            self.received.append((message.topic, json.loads(message.payload)))

    def start(self) -> MqttVen:
        self.client.connect("127.0.0.1", 1883, keepalive=30)
        self.client.loop_start()
        assert self._ready.wait(10), f"{self.ven_id} could not subscribe on 127.0.0.1:1883"
        return self

    def stop(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()

    def commands(self, ven_id: str, event_id: str) -> list[dict]:
        with self._lock:
            return [m for t, m in self.received if t == topics.mqtt_topic(topics.MQTT_CMD, ven_id)
                    and m.get("eventId") == event_id]

    def publish(self, template: str, payload: dict) -> None:
        """Publish on this VEN's own topic of `template` (ven/ack/<me>, ven/telemetry/<me>)."""
        info = self.client.publish(topics.mqtt_topic(template, self.ven_id), json.dumps(payload), qos=1)
        info.wait_for_publish(5)


@pytest.fixture(scope="module")
def stack(vplatform):
    bridge_config = {"mode": "vtn", "broker": {"host": "127.0.0.1", "port": 1883,
                                               "client_id": f"pytest-trust-dr-mqtt-{RUN}", "clean_session": True,
                                               "reconnect_max_s": 2},
                     "batch": {"max_items": 200, "max_delay_ms": 20},
                     "store": {"path": str(vplatform.state_dir / "trust-dr-mqtt-outbox.sqlite")}}
    vplatform.install_agent("mqtt_bridge", topics.MQTT_BRIDGE_IDENTITY, config=bridge_config, tag="dr-mqtt")
    vplatform.install_agent("vtn_dispatcher", topics.VTN_IDENTITY,
                            config={**VTN_CONFIG, "sqlitePath": str(vplatform.state_dir / f"trust-vtn-{RUN}.sqlite")},
                            tag="dr-vtn")
    vplatform.wait_for(lambda: vplatform.rpc(topics.MQTT_BRIDGE_IDENTITY, BridgeRpc.STATUS).get("connected"),
                       timeout=30, what="dr.mqtt connected to 127.0.0.1:1883")
    vplatform.wait_for(lambda: vplatform.rpc(topics.VTN_IDENTITY, VtnRpc.HEALTH, timeout=3).get("ok"), timeout=30,
                       what="dr.vtn healthy")
    for ven_id in (A, B):
        _ok(vplatform.rpc(topics.VTN_IDENTITY, VtnRpc.REGISTER_VEN,
                          {"venId": ven_id, "transport": "mqtt", "maxShedKw": 5.0, "status": "online"}))
    ven_a = MqttVen(A, [topics.mqtt_topic(topics.MQTT_CMD, A)]).start()
    ven_b = MqttVen(B, ["ven/cmd/+"]).start()  # B reads every command (no ACL on this test broker)
    yield vplatform, ven_a, ven_b
    ven_a.stop()
    ven_b.stop()


def test_ven_b_cannot_ack_reject_or_report_for_ven_a(stack):
    plat, ven_a, ven_b = stack
    rpc = lambda method, *args: plat.rpc(topics.VTN_IDENTITY, method, *args)  # noqa: E731
    event = _ok(rpc(VtnRpc.CREATE_EVENT, {"startTime": _iso(time.time() + 1.0), "durationS": 120,
                                          "requestedReductionKw": 4.0, "venIds": [A, B]}))
    event_id = event["eventId"]
    try:
        plat.wait_for(lambda: ven_b.commands(A, event_id) and ven_b.commands(B, event_id), timeout=15,
                      what="both commands on MQTT (B reads A's too)")
        a_cmd, b_cmd = ven_b.commands(A, event_id)[0], ven_b.commands(B, event_id)[0]
        a_cid = a_cmd["correlationId"]
        assert a_cid.rsplit(":", 1)[0].replace(A, B) == b_cmd["correlationId"].rsplit(":", 1)[0]
        assert a_cid.replace(A, B) != b_cmd["correlationId"]  # the MAC part is not derivable
        # B acks its own command
        ven_b.publish(topics.MQTT_ACK, {"correlationId": b_cmd["correlationId"], "op": "event", "ok": True,
                                        "data": {"targetKw": 2.0, "acceptedReduceKw": 2.0}})
        # B rejects A's command from its own topic (the bridge binds it to B), and claims to be A in the payload
        ven_b.publish(topics.MQTT_ACK, {"correlationId": a_cid, "op": "event", "ok": False, "error": "forged"})
        ven_b.publish(topics.MQTT_ACK, {"correlationId": a_cid, "op": "event", "ok": False, "error": "forged",
                                        "venId": A})
        ven_b.publish(topics.MQTT_ACK, {"correlationId": b_cmd["correlationId"].replace(B, A), "op": "event",
                                        "ok": False, "error": "forged"})  # the id derived the old way
        # B reports as A from its own topic
        ven_b.publish(topics.MQTT_TELEMETRY, {"venId": A, "ts": _iso(time.time()), "usedPowerKw": 0.0,
                                              "shedPowerKw": 99.0, "eventId": event_id})
        plat.wait_for(lambda: rpc(VtnRpc.HEALTH)["counters"].get("ackVenMismatch", 0) >= 1, timeout=10,
                      what="the forged ack counted by dr.vtn")
        sent_before = len(ven_a.commands(A, event_id))
        plat.wait_for(lambda: len(ven_a.commands(A, event_id)) >= sent_before + 2, timeout=10,
                      what="A's command retried after the forgery")
        assert {c["correlationId"] for c in ven_a.commands(A, event_id)} == {a_cid}  # the same command
        metrics = rpc(VtnRpc.EVENT_METRICS, event_id)
        detail = {v["venId"]: v for v in metrics["vens"]}
        assert detail[A]["state"] == "dispatched" and detail[A]["ok"] is None
        assert detail[B]["state"] == "acked" and detail[B]["allocatedKw"] == pytest.approx(2.0)  # A's kW not moved
        assert metrics["vensRejected"] == 0 and metrics["allocatedKw"] == pytest.approx(4.0)
        a_state = rpc(VtnRpc.GET_VEN, A)
        assert a_state["shedPowerKw"] is None and a_state["usedPowerKw"] is None  # nothing stored for A
        # A's own ack is taken
        ven_a.publish(topics.MQTT_ACK, {"correlationId": a_cid, "op": "event", "ok": True,
                                        "data": {"targetKw": 2.0, "acceptedReduceKw": 2.0}})
        plat.wait_for(lambda: {v["venId"]: v for v in rpc(VtnRpc.EVENT_METRICS, event_id)["vens"]}[A]["state"]
                      == "acked", timeout=10, what="A's own ack recorded")
        assert rpc(VtnRpc.HEALTH)["counters"].get("ackVenMismatch", 0) >= 1
    finally:
        rpc(VtnRpc.STOP_EVENT, event_id)
