#!/usr/bin/env python3
"""Print the acknowledgements VENs publish on ven/ack/<venId>, one JSON line each."""
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
    return listen(args, [topics.mqtt_topic(topics.MQTT_ACK, args.ven_id)])


if __name__ == "__main__":
    sys.exit(main())
