#!/usr/bin/env python3
"""Print the telemetry VENs publish every 5 s on ven/telemetry/<venId> (and oadr/meter/<venId> with --meter)."""
import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
from dr_ops.cli import ensure_platform_python  # noqa: E402

ensure_platform_python()
from dr_common import topics  # noqa: E402
from dr_ops.cli import add_listen_args, add_mqtt_args, listen  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    add_listen_args(parser)
    parser.add_argument("--meter", action="store_true", help="also oadr/meter/<venId>")
    add_mqtt_args(parser)
    args = parser.parse_args()
    filters = [topics.mqtt_topic(topics.MQTT_TELEMETRY, args.ven_id)]
    if args.meter:
        filters.append(topics.mqtt_topic(topics.MQTT_METER, args.ven_id))
    return listen(args, filters)


if __name__ == "__main__":
    sys.exit(main())
