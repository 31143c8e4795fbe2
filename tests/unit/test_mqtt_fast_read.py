"""dr.mqtt's read path for whole MQTT 3.1.1 PUBACK and QoS 0/1 PUBLISH packets in the read buffer; anything
else is left to paho (the fast path returns None and consumes nothing)."""

from __future__ import annotations


import paho.mqtt.client as mqtt
import pytest
from dr_common.mqtt.link import _NativeSocketClient
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode

from dr_tools.fleet import wire


@pytest.fixture
def client():
    c = _NativeSocketClient(CallbackAPIVersion.VERSION2, client_id="fast", protocol=mqtt.MQTTv311)
    c.messages, c.pubacks, c.published = [], [], []
    c.message_sink = lambda topic, payload: c.messages.append((topic, payload))
    c._send_puback = lambda mid: c.pubacks.append(mid) or MQTTErrorCode.MQTT_ERR_SUCCESS
    c.on_publish = lambda client, userdata, mid, reason, properties: c.published.append((mid, reason.is_failure))
    return c


def feed(c, data: bytes) -> MQTTErrorCode | None:
    c._rbuf, c._rpos = data, 0
    return c._fast_packet(data, 0)


def test_qos1_and_qos0_publishes_reach_the_sink_and_qos1_is_acknowledged(client):
    long_payload = b'{"ok":true,"pad":"' + b"x" * 300 + b'"}'  # two-byte remaining length
    data = wire.publish("ven/ack/v-1", long_payload, qos=1, packet_id=513) + wire.publish("ven/telemetry/v-1", b"{}")
    assert feed(client, data) == MQTTErrorCode.MQTT_ERR_SUCCESS
    first_end = client._rpos
    assert client._fast_packet(data, first_end) == MQTTErrorCode.MQTT_ERR_SUCCESS
    assert client._rpos == len(data)
    assert client.messages == [("ven/ack/v-1", long_payload), ("ven/telemetry/v-1", b"{}")]
    assert client.pubacks == [513]
    assert all(isinstance(p, bytes) for _, p in client.messages)


def test_puback_runs_pahos_bookkeeping_for_a_known_mid_only(client):
    info = client.publish("ven/cmd/v-1", b"{}", qos=1)  # not connected: queued in paho's _out_messages
    assert info.mid in client._out_messages
    assert feed(client, wire.puback(info.mid) + wire.puback(999)) == MQTTErrorCode.MQTT_ERR_SUCCESS
    assert client.published == [(info.mid, False)] and info.mid not in client._out_messages
    assert info._published  # is_published() also wants a connected client
    assert client._fast_packet(client._rbuf, client._rpos) == MQTTErrorCode.MQTT_ERR_SUCCESS  # unknown mid: ignored
    assert client._rpos == 8 and client.published == [(info.mid, False)]


@pytest.mark.parametrize("data", [
    wire.publish("ven/ack/v-1", b"{}", qos=1, packet_id=7)[:-1],   # cut short: the rest is in the next read
    wire.publish("ven/ack/v-1", b"{}", qos=2, packet_id=7),        # QoS 2: paho's own PUBREC exchange
    wire.packet(wire.PUBLISH, 0, b"\x00\x02\xff\xfe{}"),                   # topic is not UTF-8
    wire.packet(wire.PUBLISH, 0, b"\x00\x09ab"),                           # topic longer than the packet
    bytes([0x30, 0xFF, 0xFF, 0xFF, 0xFF, 0x01]),                   # remaining length of five bytes
    bytes([0x40, 0x03, 0x00, 0x01, 0x00]),                          # PUBACK of the wrong size
    bytes([0x90, 0x03, 0x00, 0x01, 0x00]),                          # SUBACK
], ids=["split", "qos2", "bad-utf8", "short", "long-length", "bad-puback", "suback"])
def test_anything_else_is_left_to_paho_untouched(client, data):
    assert feed(client, data) is None
    assert client._rpos == 0 and client.messages == [] and client.pubacks == []


def test_mqtt5_and_manual_ack_are_left_to_paho():
    data = wire.publish("ven/ack/v-1", b"{}", qos=1, packet_id=7)
    v5 = _NativeSocketClient(CallbackAPIVersion.VERSION2, client_id="v5", protocol=mqtt.MQTTv5)
    v5.message_sink = lambda topic, payload: pytest.fail("fast path used with MQTT 5")
    v5._rbuf, v5._rpos = data, 0
    v5._packet_read()  # paho's own decoding (this 3.1.1 packet is not valid MQTT 5: paho reports that)
    assert v5.fast_packets == 0
    manual = _NativeSocketClient(CallbackAPIVersion.VERSION2, client_id="manual", manual_ack=True)
    manual.message_sink = lambda topic, payload: pytest.fail("fast path used with manual acks")
    assert manual._fast_packet(data, 0) is None
