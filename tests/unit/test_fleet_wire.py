"""The fleet's MQTT 3.1.1 codec: packets as the standard lays them out, split from a stream in any pieces."""

from __future__ import annotations

import struct

import pytest

from dr_tools.fleet import wire


def test_connect_packet_is_mqtt_311_with_clean_session_and_keepalive():
    pkt = wire.connect("sim-00001", 120, clean_session=True)
    assert pkt[0] == 0x10
    body = pkt[2:]
    assert pkt[1] == len(body)
    assert body[:6] == b"\x00\x04MQTT" and body[6] == 4  # protocol name and level 4 (3.1.1)
    assert body[7] == 0x02  # clean session, no will, no credentials
    assert struct.unpack("!H", body[8:10])[0] == 120
    assert body[10:] == b"\x00\x09sim-00001"
    assert wire.connect("x", 30, clean_session=False)[9] == 0x00


def test_subscribe_and_puback_layouts():
    assert wire.subscribe(7, "ven/cmd/a", 1) == b"\x82\x0e\x00\x07\x00\x09ven/cmd/a\x01"
    assert wire.puback(0x1234) == b"\x40\x02\x12\x34"


@pytest.mark.parametrize("size", [0, 1, 127, 128, 16_383, 16_384, 2_097_152])
def test_publish_round_trips_through_split_and_parse_at_every_length_boundary(size):
    payload = bytes(range(256)) * (size // 256) + bytes(size % 256)
    pkt = wire.publish("ven/ack/sim-00001", payload, qos=1, packet_id=513)
    [(kind, flags, body)] = wire.split_packets(bytearray(pkt))
    assert kind == wire.PUBLISH and flags == 0x02
    assert wire.parse_publish(flags, body) == ("ven/ack/sim-00001", 1, 513, payload)


def test_qos0_publish_has_no_packet_id_and_dup_is_only_set_for_qos1():
    pkt = wire.publish("t", b"x", qos=0, dup=True)
    assert pkt == b"\x30\x04\x00\x01tx"
    assert wire.publish("t", b"x", qos=1, packet_id=1, dup=True)[0] == 0x3A


def test_split_packets_keeps_a_partial_packet_for_the_next_read():
    stream = (wire.publish("a/b", b"one", 1, 1) + b"\x40\x02\x00\x09" + wire.publish("a/b", b"x" * 300, 1, 2)
              + b"\xd0\x00")
    for cut in range(1, len(stream)):  # every way of receiving the stream in two reads
        buf = bytearray(stream[:cut])
        got = wire.split_packets(buf)
        buf += stream[cut:]
        got += wire.split_packets(buf)
        assert [k for k, _, _ in got] == [wire.PUBLISH, wire.PUBACK, wire.PUBLISH, wire.PINGRESP], cut
        assert wire.parse_publish(got[2][1], got[2][2])[3] == b"x" * 300
        assert wire.packet_id_of(got[1][2]) == 9
        assert buf == bytearray()


def test_connack_and_malformed_input_raise_protocol_errors():
    assert wire.connack(b"\x01\x00") == (True, 0)
    assert wire.connack(b"\x00\x05") == (False, 5)
    with pytest.raises(wire.ProtocolError):
        wire.connack(b"\x00")
    with pytest.raises(wire.ProtocolError):
        wire.split_packets(bytearray(b"\x30\xff\xff\xff\xff\x01"))  # a length of five bytes
    with pytest.raises(wire.ProtocolError):
        wire.parse_publish(0x06, b"\x00\x01t")  # QoS 3
    with pytest.raises(wire.ProtocolError):
        wire.parse_publish(0x02, b"\x00\x05ab")  # topic longer than the body
    with pytest.raises(wire.ProtocolError):
        wire.packet_id_of(b"\x01")
