#!/usr/bin/env python3
"""Watch everything a VEN says and hears: commands, acks, telemetry, meter and online status."""
import argparse
import sys

if __name__ == "__main__":  # started by another Python: run again with the platform's (platform_python.py)
    import platform_python  # noqa: F401
from dr_common import topics
from dr_ops.cli import add_listen_args, add_mqtt_args, listen


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    add_listen_args(parser)
    add_mqtt_args(parser)
    args = parser.parse_args()
    templates = (topics.MQTT_CMD, topics.MQTT_ACK, topics.MQTT_TELEMETRY, topics.MQTT_METER, topics.MQTT_STATUS)
    return listen(args, [topics.mqtt_topic(t, args.ven_id) for t in templates])


if __name__ == "__main__":
    sys.exit(main())
