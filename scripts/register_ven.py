#!/usr/bin/env python3
"""Register (or update) a VEN with the VTN through the API: POST /api/vens/.

Example:
  scripts/register_ven.py --ven-id demo-home --name "Demo home" --site demo --max-shed-kw 8 --transport mqtt
"""
import argparse
import sys

if __name__ == "__main__":  # started by another Python: run again with the platform's (platform_python.py)
    import platform_python  # noqa: F401
from dr_common.payloads import TRANSPORT_BUS, TRANSPORT_MQTT
from dr_ops.cli import add_api_args, api_request, print_json


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--ven-id", required=True)
    parser.add_argument("--name")
    parser.add_argument("--site")
    parser.add_argument("--group")
    parser.add_argument("--max-shed-kw", type=float)
    parser.add_argument("--transport", choices=(TRANSPORT_BUS, TRANSPORT_MQTT), default=TRANSPORT_MQTT)
    parser.add_argument("--status", choices=("online", "offline"), help="accepted for the seed's scripts")
    add_api_args(parser)
    args = parser.parse_args()
    body = {"venId": args.ven_id, "transport": args.transport}
    for key, value in (("name", args.name), ("site", args.site), ("group", args.group),
                       ("maxShedKw", args.max_shed_kw), ("status", args.status)):
        if value is not None:
            body[key] = value
    status, answer = api_request(args, "POST", "/api/vens/", body)
    print_json(answer)
    if status >= 400:
        sys.stderr.write(f"error: HTTP {status}\n")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
