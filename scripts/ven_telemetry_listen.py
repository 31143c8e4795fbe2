#!/usr/bin/env python3
"""Print the telemetry VENs publish every 5 s on ven/telemetry/<venId> (and oadr/meter/<venId> with --meter)."""
import argparse
import sys

if __name__ == "__main__":  # started by another Python: run again with the platform's (platform_python.py)
    import platform_python  # noqa: F401
from dr_common import topics
from dr_ops.cli import add_listen_args, add_mqtt_args, listen


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
