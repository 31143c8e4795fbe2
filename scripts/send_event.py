#!/usr/bin/env python3
"""Create a DR event through the API (POST /api/events/), optionally wait for its metrics, or stop one.

Examples:
  scripts/send_event.py --kw 2 --start-in 10 --minutes 5                 # every VEN, starts in 10 s
  scripts/send_event.py --kw 2 --ven-id demo-home --watch 60             # print metrics every 5 s for 60 s
  scripts/send_event.py --stop evt-1234
"""
import argparse
import sys
import time
from datetime import timedelta

if __name__ == "__main__":  # started by another Python: run again with the platform's (platform_python.py)
    import platform_python  # noqa: F401
from dr_common.timeutil import to_iso, utcnow
from dr_ops.cli import add_api_args, api_request, print_json


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--kw", type=float, help="requested reduction (LOAD_DISPATCH)")
    parser.add_argument("--level", type=int, choices=range(4), help="SIMPLE level 0-3 instead of --kw")
    parser.add_argument("--start-in", type=float, default=5.0, help="seconds from now to the start")
    parser.add_argument("--minutes", type=float, default=10.0, help="event length")
    parser.add_argument("--ven-id", action="append", dest="ven_ids", help="target VEN (repeatable)")
    parser.add_argument("--all-vens", action="store_true",
                        help="target every VEN (the default when no --ven-id or --group is given)")
    parser.add_argument("--group", action="append", dest="groups", help="target group (repeatable)")
    parser.add_argument("--ramp-up", type=float, default=0.0, help="seconds of 'near' status before the start")
    parser.add_argument("--randomize-start", type=float, default=0.0, help="randomized start window in seconds")
    parser.add_argument("--test", action="store_true", help="mark the event as a test event")
    parser.add_argument("--watch", type=float, metavar="SECONDS", help="print the event's metrics every 5 s")
    parser.add_argument("--stop", metavar="EVENT_ID", help="stop this event instead of creating one")
    add_api_args(parser)
    args = parser.parse_args()
    if args.stop:
        status, answer = api_request(args, "POST", f"/api/events/{args.stop}/stop", {})
        print_json(answer)
        return 0 if status < 400 else 1
    if args.kw is None and args.level is None:
        parser.error("give --kw or --level")
    start = utcnow() + timedelta(seconds=args.start_in)
    body = {"status": "scheduled", "startTime": to_iso(start), "endTime": to_iso(start + timedelta(minutes=args.minutes)),
            "rampUpS": args.ramp_up, "randomizeStartS": args.randomize_start, "test": args.test}
    if args.kw is not None:
        body["requestedReductionKw"] = args.kw
    else:
        body["level"] = args.level
    if args.ven_ids:
        body["venIds"] = args.ven_ids
    if args.groups:
        body["groups"] = args.groups
    if args.all_vens or not (args.ven_ids or args.groups):
        if args.ven_ids or args.groups:
            parser.error("--all-vens cannot be combined with --ven-id or --group")
        if not args.all_vens:
            sys.stderr.write("no --ven-id or --group given: the event targets every VEN (allVens: true)\n")
        body["allVens"] = True
    status, answer = api_request(args, "POST", "/api/events/", body)
    print_json(answer)
    if status >= 400:
        sys.stderr.write(f"error: HTTP {status}\n")
        return 1
    event_id = answer.get("eventId") if isinstance(answer, dict) else None
    if args.watch and event_id:
        deadline = time.monotonic() + args.watch
        while time.monotonic() < deadline:
            time.sleep(5)
            _, metrics = api_request(args, "GET", f"/api/events/{event_id}/metrics")
            print_json(metrics)
    return 0


if __name__ == "__main__":
    sys.exit(main())
