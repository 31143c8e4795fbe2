"""The demo: `scripts/demo [--event] [--check]` and `scripts/demo stop`.

Brings up a site (default `demo`) with every agent and device, waits until the VEN's telemetry flows,
registers the VEN with the VTN over the REST API, prints the status page URL and the API token (and, when
dr.web serves OpenADR 3.1, its base URL and clients; a secret only when it is a shipped placeholder), and with
`--event` creates a short event so that loads are seen shedding within a minute. It then prints one status
line per telemetry report until Ctrl-C (which stops the site's platform) or until `scripts/demo stop` is run
elsewhere. `--check` exits 0 as soon as the metered reduction of the event is within 5 % of the request
(and stops the platform), exit 1 if that does not happen in time: the same path the README promises,
run by the tests.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import sys
import time
import urllib.error
import urllib.request
from datetime import timedelta
from typing import Any

import gevent

from dr_common import topics
from dr_common.config import is_placeholder_secret
from dr_common.payloads import TRANSPORT_BUS, Telemetry
from dr_common.schema import PayloadError
from dr_common.timeutil import to_iso, utcnow
from dr_ops.busclient import BusClient
from dr_ops.install_site import install_site
from dr_ops.platformctl import PlatformError, SitePlatform, repo_root
from dr_ops.sitespec import SiteSpec, SiteSpecError, load_site

_log = logging.getLogger("demo")


class DemoError(RuntimeError):
    pass


def site_settings(spec: SiteSpec) -> dict[str, Any]:
    """The VEN id, its identity, and the web URL/token of a site, read from its agent configs."""
    web = spec.agent(topics.WEB_IDENTITY)
    web_cfg = json.loads(web.config.read_text()) if web.config else {}
    vens = [a for a in spec.agents if a.identity.startswith(topics.VEN_IDENTITY_PREFIX)]
    if not vens:
        raise DemoError(f"site {spec.name} has no VEN agent ({topics.VEN_IDENTITY_PREFIX}<venId>)")
    ven_id = vens[0].identity[len(topics.VEN_IDENTITY_PREFIX):]
    host = web_cfg.get("host", "127.0.0.1")
    url = f"http://{host}:{web_cfg.get('port', 8080)}/"
    return {"ven_id": ven_id, "url": url, "token": web_cfg.get("api_token"), "openadr": openadr_lines(web_cfg, url)}


def openadr_lines(web_cfg: dict[str, Any], url: str) -> list[str]:
    """What the demo prints of dr.web's OpenADR 3.1 API: its base URL and each client (id, role, VEN name); a
    client secret only when it is a shipped placeholder (those are refused beyond loopback)."""
    section = web_cfg.get("openadr3")
    if not isinstance(section, dict):
        return []
    lines = [f"OpenADR 3.1: {url}openadr3/3.1.0   (token: POST auth/token, client credentials)"]
    for client in section.get("clients") or []:
        secret = str(client.get("clientSecret", ""))
        shown = secret if is_placeholder_secret(secret) else "(secret in the site's web.json)"
        role = "business logic" if client.get("role") == "bl" else f"VEN {client.get('venName', '')}".strip()
        lines.append(f"  client {client.get('clientId')} / {shown}   ({role})")
    return lines


def http(method: str, url: str, token: str | None, body: Any = None, timeout: float = 15) -> tuple[int, Any]:
    request = urllib.request.Request(url, data=json.dumps(body).encode() if body is not None else None,
                                     method=method, headers={"Content-Type": "application/json",
                                                             **({"Authorization": f"Bearer {token}"} if token else {})})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as resp:
            return resp.status, json.loads(resp.read() or b"null")
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode("utf-8", "replace")
    except (urllib.error.URLError, OSError) as exc:
        return 0, str(exc)


def wait_http(url: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        status, _ = http("GET", url + "api/health", None, timeout=3)
        if status == 200:
            return
        gevent.sleep(0.5)
    raise DemoError(f"the status page at {url} did not answer within {timeout:.0f} s")


def run(args: argparse.Namespace) -> int:
    repo = repo_root()
    spec = load_site(repo, args.site)
    settings = site_settings(spec)
    plat = SitePlatform(args.site, repo)
    t0 = time.monotonic()
    _log.info("bringing up site %s (%s)", spec.name, spec.description)
    install_site(spec, plat)
    client = BusClient(plat, "dr.demo").connect()
    telemetry: list[Telemetry] = []

    def on_telemetry(peer, sender, bus, topic, headers, message):
        try:
            telemetry.append(Telemetry.from_payload(message))
        except PayloadError as exc:
            _log.warning("unreadable telemetry on %s: %s", topic, exc)

    client.agent.vip.pubsub.subscribe("pubsub", topics.bus_telemetry(settings["ven_id"]), on_telemetry).get(timeout=10)
    deadline = time.monotonic() + args.wait
    while not telemetry:
        if time.monotonic() > deadline:
            raise DemoError(f"no telemetry from {settings['ven_id']} within {args.wait:.0f} s (see {plat.log_path})")
        gevent.sleep(0.5)
    _log.info("telemetry flowing after %.0f s: %s uses %.2f kW", time.monotonic() - t0, settings["ven_id"],
              telemetry[-1].used_power_kw)
    wait_http(settings["url"], 30)
    status, answer = http("POST", settings["url"] + "api/vens/", settings["token"],
                          {"venId": settings["ven_id"], "name": f"{spec.name} VEN", "site": spec.name,
                           "transport": TRANSPORT_BUS})
    if status >= 400 or status == 0:
        raise DemoError(f"registering {settings['ven_id']} failed: HTTP {status} {answer}")
    _log.info("")
    _log.info("  status page: %s", settings["url"])
    _log.info("  API token:   %s", settings["token"])
    for line in settings["openadr"]:
        _log.info("  %s", line)
    _log.info("  stop with Ctrl-C or: scripts/demo stop --site %s", args.site)
    _log.info("")
    event_id = None
    if args.event or args.check:
        start = utcnow() + timedelta(seconds=args.start_in)
        body = {"startTime": to_iso(start), "endTime": to_iso(start + timedelta(minutes=args.minutes)),
                "requestedReductionKw": args.kw, "venIds": [settings["ven_id"]]}
        status, answer = http("POST", settings["url"] + "api/events/", settings["token"], body)
        if status >= 400 or status == 0:
            raise DemoError(f"creating the event failed: HTTP {status} {answer}")
        event_id = answer["eventId"]
        _log.info("event %s: shed %.1f kW from %s for %g min", event_id, args.kw, body["startTime"], args.minutes)
    shown = 0
    deadline = time.monotonic() + args.check_timeout
    while plat.platform_pid() is not None:  # no vctl per poll: `demo stop` would wait for those processes
        while shown < len(telemetry):
            t = telemetry[shown]
            shown += 1
            _log.info("%s  used %6.2f kW  baseline %s  shed %5.2f kW of %4.1f  event %s", to_iso(t.ts)[11:19],
                      t.used_power_kw, f"{t.baseline_power_kw:6.2f} kW" if t.baseline_power_kw is not None else "   -   ",
                      t.shed_power_kw, t.requested_reduction_kw, t.event_id or "-")
            if args.check and t.event_id == event_id and t.requested_reduction_kw > 0 \
                    and abs(t.shed_power_kw - t.requested_reduction_kw) <= 0.05 * t.requested_reduction_kw:
                _log.info("check: metered reduction %.2f kW is within 5 %% of %.2f kW after %.0f s", t.shed_power_kw,
                          t.requested_reduction_kw, time.monotonic() - t0)
                client.close()
                plat.stop()
                return 0
        if args.check and time.monotonic() > deadline:
            client.close()
            plat.stop()
            raise DemoError(f"check: no reduction within 5 % of {args.kw} kW within {args.check_timeout:.0f} s")
        gevent.sleep(0.5)
    _log.info("the platform of site %s has stopped", args.site)
    return 0  # the client is not closed: its stop waits on a platform that is gone (see the end of the module)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="demo", description=__doc__.split("\n\n")[0])
    parser.add_argument("action", nargs="?", choices=("start", "stop"), default="start")
    parser.add_argument("--site", default="demo")
    parser.add_argument("--event", action="store_true", help="create a short event once telemetry flows")
    parser.add_argument("--kw", type=float, default=2.0, help="the event's requested reduction (kW)")
    parser.add_argument("--minutes", type=float, default=2.0, help="the event's length")
    parser.add_argument("--start-in", type=float, default=10.0, help="seconds until the event starts")
    parser.add_argument("--wait", type=float, default=90.0, help="seconds to wait for telemetry")
    parser.add_argument("--check", action="store_true", help="create an event, exit 0 once the shed is metered")
    parser.add_argument("--check-timeout", type=float, default=150.0)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    for name in ("demo", "install_site"):
        logging.getLogger(name).setLevel(logging.INFO)
    if args.action == "stop":
        _log.info("%s", SitePlatform(args.site).stop().strip())
        return 0
    plat = SitePlatform(args.site)

    def interrupted(signum, frame):
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, interrupted)
    try:
        return run(args)
    except KeyboardInterrupt:
        _log.info("stopping site %s", args.site)
        _log.info("%s", plat.stop().strip())
        return 0
    except (DemoError, PlatformError, SiteSpecError) as exc:
        _log.error("error: %s", exc)
        return 1


if __name__ == "__main__":
    code = main()
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    # VOLTTRON's client leaves zmq and gevent state behind whose clean-up can wait for good on a platform that
    # has gone away: the demo must end with its site.
    os._exit(code)
