#!/usr/bin/env python3
"""Publish one command to a VEN on ven/cmd/<venId> (QoS 1) and, with --wait-ack, wait for its ack.

Examples:
  scripts/ven_cmd_publish.py --ven-id demo-home --op event --kw 2 --minutes 10 --wait-ack 5
  scripts/ven_cmd_publish.py --ven-id demo-home --op restore --event-id evt-1
  scripts/ven_cmd_publish.py --ven-id demo-home --json '{"operation": "shed_panel", "reduce_kw": "1.5", ...}'
"""
import argparse
import json
import queue
import sys
import uuid
from datetime import timedelta

if __name__ == "__main__":  # started by another Python: run again with the platform's (platform_python.py)
    import platform_python  # noqa: F401
from dr_common import topics
from dr_common.payloads import OPS, Command
from dr_common.schema import PayloadError
from dr_common.timeutil import utcnow
from dr_ops.cli import add_mqtt_args, decode, mqtt_connect, print_json


def build(args: argparse.Namespace) -> dict:
    if args.json:
        try:
            raw = json.loads(args.json)
        except json.JSONDecodeError as exc:
            sys.exit(f"error: --json is not valid JSON: {exc}")
        Command.from_payload(raw)  # refuse to send what a VEN would reject
        return raw
    now = utcnow()
    cmd = Command(op=args.op, correlation_id=args.correlation_id or f"cli-{uuid.uuid4().hex[:12]}", ven_id=args.ven_id,
                  event_id=args.event_id, requested_reduction_kw=args.kw, start_time=now,
                  until=now + timedelta(minutes=args.minutes), issued_at=now)
    payload = cmd.to_payload()
    Command.from_payload(payload)
    return payload


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--ven-id", required=True)
    parser.add_argument("--op", choices=OPS, default="event")
    parser.add_argument("--kw", type=float, default=2.0, help="requested reduction in kW (event, shedPanel)")
    parser.add_argument("--minutes", type=float, default=10.0, help="event length from now")
    parser.add_argument("--event-id", default=None)
    parser.add_argument("--correlation-id", default=None)
    parser.add_argument("--json", help="send this JSON object as it is (checked against the command schema)")
    parser.add_argument("--wait-ack", type=float, metavar="SECONDS", help="wait this long for the VEN's ack")
    add_mqtt_args(parser)
    args = parser.parse_args()
    try:
        payload = build(args)
    except PayloadError as exc:
        sys.exit(f"error: {exc}")
    client = mqtt_connect(args)
    acks: "queue.SimpleQueue[dict]" = queue.SimpleQueue()
    if args.wait_ack:
        client.on_message = lambda _c, _u, msg: acks.put(decode(msg.payload))
        client.subscribe(topics.mqtt_topic(topics.MQTT_ACK, args.ven_id), qos=1)
    info = client.publish(topics.mqtt_topic(topics.MQTT_CMD, args.ven_id), json.dumps(payload), qos=1)
    info.wait_for_publish(timeout=10)
    print_json({"published": topics.mqtt_topic(topics.MQTT_CMD, args.ven_id), "payload": payload})
    rc = 0
    if args.wait_ack:
        correlation = payload.get("correlationId") or payload.get("correlation_id")
        rc = 1
        try:
            while True:
                ack = acks.get(timeout=args.wait_ack)
                if not correlation or ack.get("correlationId") == correlation:
                    print_json({"ack": ack})
                    rc = 0 if ack.get("ok") else 2
                    break
        except queue.Empty:
            sys.stderr.write(f"no ack within {args.wait_ack:g} s\n")
    client.loop_stop()
    client.disconnect()
    return rc


if __name__ == "__main__":
    sys.exit(main())
