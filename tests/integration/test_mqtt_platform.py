"""dr.mqtt on the real VOLTTRON platform and the real Mosquitto at 127.0.0.1:1883: bus batches fan out to
`ven/cmd/<venId>`, acks and telemetry from MQTT come back as batched bus messages with their fields intact,
bad input is counted, and the same agent reconfigured through the config store serves the VEN side."""

from __future__ import annotations

import json
import time
import uuid
from pathlib import Path

import pytest

from dr_common import topics
from dr_common.batches import compact_batch
from dr_common.topics import BridgeRpc
from dr_tools.fleet.probe import Probe

pytestmark = [pytest.mark.integration, pytest.mark.mqtt]

RUN = uuid.uuid4().hex[:6]
V1, V2, V3 = f"pt{RUN}-1", f"pt{RUN}-2", f"pt{RUN}-3"
BRIDGE = topics.MQTT_BRIDGE_IDENTITY


def _vtn_config(vplatform) -> dict:
    return {"mode": "vtn", "broker": {"host": "127.0.0.1", "port": 1883, "client_id": f"pytest-dr-mqtt-{RUN}",
                                      "clean_session": True, "reconnect_max_s": 2},
            "batch": {"max_items": 200, "max_delay_ms": 20},
            "store": {"path": str(vplatform.state_dir / "dr-mqtt-outbox.sqlite")}}


@pytest.fixture(scope="module")
def bridge(vplatform):
    t0 = time.monotonic()
    action = vplatform.install_agent("mqtt_bridge", BRIDGE, config=_vtn_config(vplatform), tag="dr-mqtt")
    print(f"\ndr.mqtt {action} in {time.monotonic() - t0:.1f} s")
    vplatform.wait_for(lambda: vplatform.rpc(BRIDGE, BridgeRpc.STATUS).get("connected"), timeout=30,
                       what="dr.mqtt connected to 127.0.0.1:1883")
    return vplatform


@pytest.fixture
def probe():
    p = Probe(client_id=f"pytest-probe-{RUN}", subscriptions=["ven/cmd/+", "ven/ack/+", "ven/status/+"]).start()
    yield p
    p.stop()


def _json_on(probe: Probe, topic: str) -> list[dict]:
    return [json.loads(payload) for t, payload, _ in probe.snapshot() if t == topic]


def test_bus_batch_fans_out_to_each_ven_topic(bridge, probe):
    commands = [{"venId": v, "op": "event", "correlationId": f"c-{v}", "eventId": "e-1", "requestedReductionKw": 1.5,
                 "until": "2030-01-01T00:00:00Z"} for v in (V1, V2, V3)]
    bridge.publish(topics.BUS_CMD_BATCH, compact_batch(commands, "commands"))  # the form dr.vtn publishes
    bridge.wait_for(lambda: all(_json_on(probe, f"ven/cmd/{v}") for v in (V1, V2, V3)), timeout=10,
                    what="each VEN got its command over MQTT")
    for cmd in commands:
        assert _json_on(probe, f"ven/cmd/{cmd['venId']}") == [cmd]


def test_send_batch_rpc(bridge, probe):
    result = bridge.rpc(BRIDGE, BridgeRpc.SEND_BATCH, [{"venId": V2, "op": "ping", "correlationId": "p-2"},
                                                       {"op": "ping"}])
    assert result == {"sent": 1, "queued": 0, "refused": 0, "rejected": 1}
    bridge.wait_for(lambda: _json_on(probe, f"ven/cmd/{V2}"), timeout=10, what="ping over MQTT")
    assert _json_on(probe, f"ven/cmd/{V2}")[-1]["correlationId"] == "p-2"


def test_ack_and_telemetry_arrive_on_the_bus_intact(bridge, probe):
    seen = bridge.subscribe("dr/batch/")
    ack = {"correlationId": "c-ack-1", "op": "event", "ok": True, "ts": "2026-05-01T14:00:01.250Z",
           "data": {"targetKw": 3.5, "acceptedReduceKw": 2.0, "until": "2026-05-01T15:00:00.000Z"}}
    telemetry = {"venId": V1, "ts": "2026-05-01T14:00:05.000Z", "usedPowerKw": 4.2, "shedPowerKw": 1.5,
                 "requestedReductionKw": 2.0, "eventId": "e-1", "baselinePowerKw": 5.7}
    meter = dict(telemetry, venId=V2, usedPowerKw=7.25)
    probe.publish(f"ven/ack/{V1}", json.dumps(ack))
    probe.publish(f"ven/telemetry/{V1}", json.dumps(telemetry))
    probe.publish(f"oadr/meter/{V2}", json.dumps(meter))

    def items(topic):
        return [i for m in seen.on_topic(topic) for i in m["items"]]

    bridge.wait_for(lambda: items(topics.BUS_ACK_BATCH) and len(items(topics.BUS_TELEMETRY_BATCH)) >= 2,
                    timeout=10, what="batched ack and telemetry on the bus")
    (got_ack,) = [a for a in items(topics.BUS_ACK_BATCH) if a["correlationId"] == "c-ack-1"]
    assert got_ack == dict(ack, venId=V1)
    tel = {t["venId"]: t for t in items(topics.BUS_TELEMETRY_BATCH)}
    assert tel[V1] == telemetry
    assert tel[V2] == meter


def test_bad_inbound_is_counted_and_loses_nothing_else(bridge, probe):
    before = bridge.rpc(BRIDGE, BridgeRpc.STATUS)
    seen = bridge.subscribe(topics.BUS_ACK_BATCH)
    probe.publish(f"ven/ack/{V1}", b"{not json")
    probe.publish(f"ven/ack/{V1}", json.dumps({"correlationId": "x", "ok": "maybe"}))
    probe.publish(f"ven/ack/{V1}", json.dumps({"correlationId": "spoof", "ok": True, "venId": V2}))
    probe.publish(f"ven/telemetry/{V1}", json.dumps({"venId": V1}))
    probe.publish(f"ven/ack/{V1}", json.dumps({"correlationId": "good-after-bad", "ok": True}))
    bridge.wait_for(lambda: any(i["correlationId"] == "good-after-bad" for m in seen.on_topic(topics.BUS_ACK_BATCH)
                                for i in m["items"]), timeout=10, what="the good ack after the bad ones")
    after = bridge.rpc(BRIDGE, BridgeRpc.STATUS)
    delta = {k: after["rejects"].get(k, 0) - before["rejects"].get(k, 0) for k in after["rejects"]}
    assert delta.get("invalid_json") == 1 and delta.get("schema") == 2 and delta.get("ven_id_mismatch") == 1
    assert all(i["correlationId"] != "spoof" for m in seen.on_topic(topics.BUS_ACK_BATCH) for i in m["items"])
    assert after["messagesIn"] - before["messagesIn"] == 5
    assert after["handoff"]["count"] > 0 and after["handoff"]["p99Ms"] is not None
    health = bridge.rpc(BRIDGE, BridgeRpc.HEALTH)
    assert health["status"] == "GOOD"


def test_reconfigured_as_ven_side_bridge(bridge, probe):
    ven = f"pt{RUN}-ven"
    ven_probe = Probe(client_id=f"pytest-venprobe-{RUN}", subscriptions=[f"ven/ack/{ven}", f"ven/status/{ven}",
                                                                         f"oadr/meter/{ven}"]).start()
    try:
        bridge.store_config(BRIDGE, "config", {
            "mode": "ven", "ven_id": ven, "broker": {"client_id": f"pytest-dr-mqtt-ven-{RUN}", "clean_session": True,
                                                      "reconnect_max_s": 2},
            "store": {"path": str(bridge.state_dir / "dr-mqtt-ven-outbox.sqlite")}})
        bridge.wait_for(lambda: (s := bridge.rpc(BRIDGE, BridgeRpc.STATUS))["mode"] == "ven" and s["connected"],
                        timeout=20, what="dr.mqtt reconfigured to the VEN side")
        # birth message (retained) on ven/status/<venId>
        bridge.wait_for(lambda: any(json.loads(p) == {"venId": ven, "online": True}
                                    for t, p, _ in ven_probe.snapshot(f"ven/status/{ven}")), timeout=10,
                        what="birth message")
        cmds = bridge.subscribe(f"dr/cmd/{ven}")
        # the spoofed command first: when the good one (sent after it) is on the bus, the bridge has handled both
        probe.publish(f"ven/cmd/{ven}", json.dumps({"op": "shedPanel", "venId": "someone-else"}))
        probe.publish(f"ven/cmd/{ven}", json.dumps({"op": "shedPanel", "correlationId": "v-1", "reduceKw": "2.5",
                                                    "endTime": "2030-01-01T01:00:00Z"}))
        got = bridge.wait_for(lambda: cmds.on_topic(f"dr/cmd/{ven}"), timeout=10, what="command on the VEN's bus")
        assert got[0]["op"] == "shedPanel" and got[0]["venId"] == ven and got[0]["requestedReductionKw"] == 2.5
        bridge.publish(f"dr/ack/{ven}", {"correlationId": "v-1", "op": "shedPanel", "ok": True,
                                         "data": {"targetKw": 1.0, "acceptedReduceKw": 2.5}})
        bridge.publish(f"dr/telemetry/{ven}", {"venId": ven, "usedPowerKw": 3.0, "ts": "2026-05-01T14:00:05Z"})
        bridge.wait_for(lambda: ven_probe.snapshot(f"ven/ack/{ven}") and ven_probe.snapshot(f"oadr/meter/{ven}"),
                        timeout=10, what="ack and meter from the VEN side bridge")
        assert json.loads(ven_probe.snapshot(f"ven/ack/{ven}")[0][1])["correlationId"] == "v-1"
        assert len(cmds.on_topic(f"dr/cmd/{ven}")) == 1  # the spoofed command was rejected
    finally:
        ven_probe.stop()
        bridge.store_config(BRIDGE, "config", _vtn_config(bridge))
        bridge.wait_for(lambda: (s := bridge.rpc(BRIDGE, BridgeRpc.STATUS))["mode"] == "vtn" and s["connected"],
                        timeout=20, what="dr.mqtt back on the VTN side")
        # clear the retained status of the test VEN on the shared broker
        probe.publish(f"ven/status/{ven}", b"", retain=True)


def test_agent_connects_with_mutual_tls(bridge, tmp_path):
    from dr_tools.fleet.brokers import Mosquitto, make_certs
    from dr_tools.fleet.probe import tls_context

    certs = make_certs(tmp_path / "certs", client_cn="dr.mqtt-pytest")
    broker = Mosquitto(tmp_path / "tls-broker", certs=certs).start()
    # the agent runs as the platform's service user: its certificate files go where that user can read them
    tls = {name: str(bridge.write_file(f"mqtt-tls-{RUN}/{Path(src).name}", Path(src).read_bytes()))
           for name, src in (("ca_file", certs.ca), ("cert_file", certs.client_cert), ("key_file", certs.client_key))}
    ven = f"pt{RUN}-tls"
    probe = Probe(port=broker.port, client_id=f"pytest-tlsprobe-{RUN}", subscriptions=[f"ven/cmd/{ven}"],
                  tls=tls_context(str(certs.ca), str(certs.client_cert), str(certs.client_key))).start()
    try:
        bridge.store_config(BRIDGE, "config", dict(_vtn_config(bridge), broker={
            "host": "127.0.0.1", "port": broker.port, "client_id": f"pytest-dr-mqtt-tls-{RUN}", "clean_session": True,
            "reconnect_max_s": 2, "tls": tls}))
        status = bridge.wait_for(lambda: (s := bridge.rpc(BRIDGE, BridgeRpc.STATUS))["tls"] and s["connected"] and s,
                                 timeout=20, what="dr.mqtt connected with mutual TLS")
        assert status["broker"] == f"127.0.0.1:{broker.port}"
        bridge.publish(topics.BUS_CMD_BATCH, {"commands": [{"venId": ven, "op": "ping", "correlationId": "tls-1"}]})
        bridge.wait_for(lambda: probe.snapshot(f"ven/cmd/{ven}"), timeout=10, what="command over mTLS")
        assert "u'dr.mqtt-pytest'" in broker.log_tail(200)  # the broker saw the agent's client certificate
    finally:
        probe.stop()
        bridge.store_config(BRIDGE, "config", _vtn_config(bridge))
        bridge.wait_for(lambda: (s := bridge.rpc(BRIDGE, BridgeRpc.STATUS))["connected"] and not s["tls"],
                        timeout=20, what="dr.mqtt back on 127.0.0.1:1883")
        broker.stop()


def test_a_configuration_that_cannot_run_never_takes_the_link_down(bridge, probe):
    before = bridge.rpc(BRIDGE, BridgeRpc.STATUS)
    assert before["connected"] and before["configError"] is None
    secret = f"Pw-{RUN}-never-shown"
    bad_configs = [
        # TLS files that do not exist: refused when read, before the running bridge is touched
        (dict(_vtn_config(bridge), broker={"host": "127.0.0.1", "port": 8883, "client_id": f"pytest-gone-{RUN}",
                                            "tls": {"ca_file": f"/nonexistent/{RUN}/ca.pem"}}), "broker.tls.ca_file"),
        # a wrong-typed password: named, never echoed
        (dict(_vtn_config(bridge), broker={"host": "127.0.0.1", "client_id": f"pytest-pw-{RUN}", "username": "u",
                                            "password": [secret]}), "broker.password"),
    ]
    for config, key in bad_configs:
        bridge.store_config(BRIDGE, "config", config)
        health = bridge.wait_for(lambda: (h := bridge.rpc(BRIDGE, BridgeRpc.HEALTH)) and key in h["context"] and h,
                                 timeout=20, what=f"the configuration naming {key} refused")
        status = bridge.rpc(BRIDGE, BridgeRpc.STATUS)
        assert status["connected"] and status["clientId"] == before["clientId"], "the running bridge was stopped"
        assert health["status"] == "GOOD" and "last configuration rejected" in health["context"]
        assert secret not in json.dumps(health) + json.dumps(status)
    # the link still works on the previous configuration
    bridge.publish(topics.BUS_CMD_BATCH, {"commands": [{"venId": V3, "op": "ping", "correlationId": f"still-{RUN}"}]})
    bridge.wait_for(lambda: any(c["correlationId"] == f"still-{RUN}" for c in _json_on(probe, f"ven/cmd/{V3}")),
                    timeout=10, what="a command through the bridge that kept running")
    bridge.store_config(BRIDGE, "config", _vtn_config(bridge))
    bridge.wait_for(lambda: bridge.rpc(BRIDGE, BridgeRpc.STATUS)["configError"] is None, timeout=20,
                    what="a good configuration clears the error")
