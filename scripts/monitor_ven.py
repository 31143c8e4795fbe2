#!/usr/bin/env python3
"""Watch everything a VEN says and hears: commands, acks, telemetry, meter and online status."""
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
    add_mqtt_args(parser)
    args = parser.parse_args()
    templates = (topics.MQTT_CMD, topics.MQTT_ACK, topics.MQTT_TELEMETRY, topics.MQTT_METER, topics.MQTT_STATUS)
    return listen(args, [topics.mqtt_topic(t, args.ven_id) for t in templates])


if __name__ == "__main__":
    sys.exit(main())
