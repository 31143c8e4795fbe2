"""The part of MQTT 3.1.1 a simulated VEN speaks, as bytes in and bytes out (no I/O).

Encoders for CONNECT, SUBSCRIBE, PUBLISH (QoS 0/1), PUBACK, PINGREQ and DISCONNECT; `split_packets` cuts a
receive buffer into whole packets (type, flags, body) and leaves a partial one for the next read;
`parse_publish` takes a PUBLISH body apart. Packet layouts follow the OASIS MQTT 3.1.1 standard, sections 2-3.
"""

from __future__ import annotations

import struct

CONNECT, CONNACK, PUBLISH, PUBACK = 1, 2, 3, 4
SUBSCRIBE, SUBACK, PINGREQ, PINGRESP, DISCONNECT = 8, 9, 12, 13, 14

PINGREQ_PACKET = b"\xc0\x00"
DISCONNECT_PACKET = b"\xe0\x00"
MAX_REMAINING = 268_435_455  # the largest remaining length four length bytes can carry


class ProtocolError(ValueError):
    """Bytes from the broker that are not MQTT 3.1.1 (the connection is closed on it)."""


def _remaining_length(n: int) -> bytes:
    if n < 0 or n > MAX_REMAINING:
        raise ValueError(f"remaining length {n} out of range")
    out = bytearray()
    while True:
        byte, n = n & 0x7F, n >> 7
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _text(value: str) -> bytes:
    data = value.encode("utf-8")
    return struct.pack("!H", len(data)) + data


def packet(kind: int, flags: int, body: bytes) -> bytes:
    return bytes(((kind << 4) | flags,)) + _remaining_length(len(body)) + body


def connect(client_id: str, keepalive_s: int, clean_session: bool = True) -> bytes:
    flags = 0x02 if clean_session else 0x00
    body = _text("MQTT") + bytes((4, flags)) + struct.pack("!H", keepalive_s) + _text(client_id)
    return packet(CONNECT, 0, body)


def subscribe(packet_id: int, topic: str, qos: int) -> bytes:
    return packet(SUBSCRIBE, 0x02, struct.pack("!H", packet_id) + _text(topic) + bytes((qos,)))


def publish(topic: str, payload: bytes, qos: int = 0, packet_id: int = 0, dup: bool = False) -> bytes:
    flags = (qos << 1) | (0x08 if dup and qos else 0)
    body = _text(topic) + (struct.pack("!H", packet_id) if qos else b"") + payload
    return packet(PUBLISH, flags, body)


def puback(packet_id: int) -> bytes:
    return b"\x40\x02" + struct.pack("!H", packet_id)


def split_packets(buf: bytearray) -> list[tuple[int, int, bytes]]:
    """Remove every whole packet from the front of `buf`: [(type, flags, body)]. A partial packet stays."""
    out: list[tuple[int, int, bytes]] = []
    pos, end = 0, len(buf)
    while end - pos >= 2:
        first = buf[pos]
        length, shift, i = 0, 0, pos + 1
        while True:
            if i >= end:
                del buf[:pos]
                return out
            byte = buf[i]
            length |= (byte & 0x7F) << shift
            i += 1
            if not byte & 0x80:
                break
            shift += 7
            if shift > 21:
                raise ProtocolError("remaining length longer than four bytes")
        if end - i < length:
            break
        out.append((first >> 4, first & 0x0F, bytes(buf[i:i + length])))
        pos = i + length
    del buf[:pos]
    return out


def parse_publish(flags: int, body: bytes) -> tuple[str, int, int, bytes]:
    """A PUBLISH body -> (topic, qos, packet id or 0, payload)."""
    if len(body) < 2:
        raise ProtocolError("PUBLISH shorter than its topic length")
    (n,) = struct.unpack_from("!H", body)
    qos = (flags >> 1) & 0x03
    if qos == 3:
        raise ProtocolError("PUBLISH with QoS 3")
    pos = 2 + n
    if qos:
        if len(body) < pos + 2:
            raise ProtocolError("PUBLISH shorter than its packet id")
        (packet_id,) = struct.unpack_from("!H", body, pos)
        pos += 2
    else:
        packet_id = 0
    if len(body) < pos:
        raise ProtocolError("PUBLISH shorter than its topic")
    try:
        topic = body[2:2 + n].decode("utf-8")
    except UnicodeDecodeError:
        raise ProtocolError("PUBLISH topic is not UTF-8") from None
    return topic, qos, packet_id, body[pos:]


def packet_id_of(body: bytes) -> int:
    """The packet id at the start of a PUBACK or SUBACK body."""
    if len(body) < 2:
        raise ProtocolError("packet without its packet id")
    return struct.unpack_from("!H", body)[0]


def connack(body: bytes) -> tuple[bool, int]:
    """A CONNACK body -> (session present, return code; 0 is accepted)."""
    if len(body) != 2:
        raise ProtocolError("CONNACK body is not two bytes")
    return bool(body[0] & 0x01), body[1]
