"""One fuzz run across every inbound parser: MQTT (the bridge's inbound path, both sides), bus payloads (the
shared schemas every agent parses with), REST (dr.web over an in-process dr.vtn) and configuration (every agent's
`parse_config`). Valid examples are damaged by `fuzzgen` (types swapped, NaN and huge numbers, hostile identifiers,
long keys, deep nesting, byte-level damage). Nothing may escape but the parser's own refusal, every refusal is
counted where the agent counts it, nothing is written by a refused request, and no secret is echoed.

`VDR_FUZZ_INPUTS` sets the total number of inputs (default 20,000; the closing figure of 100,000 was taken with
VDR_FUZZ_INPUTS=100000). Seeded: a failure prints the seed and the input, and replays.
"""

from __future__ import annotations

import json
import os
import random
from pathlib import Path
from typing import Any

import pytest
from dr_historian.config import parse_config as historian_config
from dr_common.mqtt.config import parse_config as bridge_config
from dr_common.mqtt.core import BridgeCore
from dr_tools.webharness import WebHarness
from dr_ven_load_control.config import parse_config as ven_config
from dr_vtn_dispatcher.config import parse_config as vtn_config
from dr_web.config import parse_config as web_config

from dr_common.config import ConfigError
from dr_common.payloads import Ack, Command, EventRequest, Telemetry, VenRegistration, VenStatus
from dr_common.schema import PayloadError
from tests.unit import fuzzgen

TOTAL = int(os.environ.get("VDR_FUZZ_INPUTS", "20000"))
SEED = int(os.environ.get("VDR_FUZZ_SEED", "20261205"))
REPO = Path(__file__).resolve().parents[2]
SECRET = "s3cr3t-never-echoed-7f3a"
TALLY: dict[str, dict[str, int]] = {}


def _count(parser: str, outcome: str) -> None:
    TALLY.setdefault(parser, {}).setdefault(outcome, 0)
    TALLY[parser][outcome] += 1


class NullBus:
    def publish(self, topic: str, message: Any) -> None:
        raise AssertionError("the inbound path must not publish from the caller")


ACK = {"correlationId": "event:evt-1:0", "op": "event", "ok": True, "ts": "2026-12-05T14:00:00Z",
       "data": {"targetKw": 2.0, "acceptedReduceKw": 2.0, "until": "2026-12-05T15:00:00Z"}}
TELEMETRY = {"venId": "v1", "ts": "2026-12-05T14:00:05Z", "usedPowerKw": 3.2, "shedPowerKw": 1.9,
             "requestedReductionKw": 2.0, "eventId": "evt-1", "baselinePowerKw": 5.1,
             "loads": {"ev": {"powerKw": 1.2, "shedKw": 5.0, "action": "power limit"}}}
STATUS = {"venId": "v1", "online": True, "ts": "2026-12-05T14:00:00Z"}
COMMAND = {"op": "event", "correlationId": "c-1", "venId": "home-1", "eventId": "evt-1", "requestedReductionKw": 2,
           "startTime": "2026-12-05T14:00:00Z", "until": "2026-12-05T15:00:00Z", "modificationNumber": 1}
VEN = {"venId": "ven-fuzz", "name": "fuzz", "site": "s", "group": "g", "maxShedKw": 3, "transport": "mqtt"}
EVENT = {"startTime": "2027-01-05T14:00:00Z", "endTime": "2027-01-05T15:00:00Z", "requestedReductionKw": 2.0,
         "venIds": ["ven-fuzz"], "programId": "p1", "priority": 1}


def _site_configs(name: str) -> list[dict[str, Any]]:
    out = []
    for path in sorted((REPO / "platform-config" / "sites").glob(f"*/{name}")):
        out.append(json.loads(path.read_text()))
    return out


@pytest.fixture(scope="module")
def rng() -> random.Random:
    return random.Random(SEED)


def test_mqtt_inbound(rng: random.Random) -> None:
    vtn = BridgeCore(bridge_config({"dedup": {"window_s": 0}}), NullBus())
    ven = BridgeCore(bridge_config({"mode": "ven", "ven_id": "home-1", "dedup": {"window_s": 0}}), NullBus())
    routes = [(vtn, "ven/ack/v1", ACK), (vtn, "ven/telemetry/v1", TELEMETRY), (vtn, "oadr/meter/v1", TELEMETRY),
              (vtn, "ven/status/v1", STATUS), (ven, "ven/cmd/home-1", COMMAND)]
    for _ in range(TOTAL * 35 // 100):
        core, topic, valid = rng.choice(routes)
        payload = fuzzgen.encode(rng, fuzzgen.mutate(rng, valid))
        c = core.stats.counters
        accepted = c["in_accepted"] + c["duplicates"]
        refused = sum(core.stats.rejects.values())
        core.on_mqtt_message(topic, payload)
        d_accepted = c["in_accepted"] + c["duplicates"] - accepted
        d_refused = sum(core.stats.rejects.values()) - refused
        assert (d_accepted, d_refused) in ((1, 0), (0, 1)), payload[:300]  # each message in exactly one counter
        _count("mqtt", "accepted" if d_accepted else "refused")
    for core in (vtn, ven):
        assert core.stats.rejects.get("internal_error", 0) == 0


PAYLOAD_CLASSES = [(Ack, ACK), (Telemetry, TELEMETRY), (VenStatus, STATUS), (Command, COMMAND),
                   (VenRegistration, VEN), (EventRequest, dict(EVENT, allVens=None))]


def test_bus_payloads(rng: random.Random) -> None:
    for _ in range(TOTAL * 30 // 100):
        cls, valid = rng.choice(PAYLOAD_CLASSES)
        raw = fuzzgen.mutate(rng, {k: v for k, v in valid.items() if v is not None})
        try:
            cls.from_payload(raw)
        except PayloadError as exc:
            assert exc.field, raw
            _count("bus", "refused")
        else:
            _count("bus", "accepted")


CONFIG_PARSERS = [
    ("dr.vtn", vtn_config, _site_configs("vtn.json") or [{}]),
    ("dr.ven", ven_config, _site_configs("ven.json")),
    ("dr.mqtt", lambda raw: bridge_config(raw, check_files=False),
     [dict(c, broker=dict(c.get("broker", {}), username="vtn", password=SECRET)) for c in _site_configs("mqtt.json")]),
    ("platform.historian", historian_config, _site_configs("historian.json")),
    ("dr.web", web_config, [dict(c, apiToken=SECRET) for c in _site_configs("web.json")]),
]


def test_configs(rng: random.Random) -> None:
    for _ in range(TOTAL * 20 // 100):
        name, parse, valids = rng.choice(CONFIG_PARSERS)
        raw = fuzzgen.mutate(rng, rng.choice(valids))
        try:
            parse(raw)
        except ConfigError as exc:
            assert exc.key and SECRET not in str(exc), (name, str(exc)[:300])
            _count(f"config {name}", "refused")
        else:
            _count(f"config {name}", "accepted")


@pytest.fixture(scope="module")
def web(tmp_path_factory: pytest.TempPathFactory):
    harness = WebHarness(tmp_path_factory.mktemp("fuzz-inbound"))
    assert harness.post("/api/vens/", {"venId": "ven-fuzz", "transport": "bus"}).status_code == 201
    yield harness
    harness.close()


def test_rest(rng: random.Random, web: WebHarness) -> None:
    routes = [("/api/vens/", VEN), ("/api/events/", EVENT)]
    for _ in range(TOTAL * 15 // 100):
        path, valid = rng.choice(routes)
        raw = fuzzgen.encode(rng, fuzzgen.mutate(rng, valid))
        rows = (len(web.vtn.vens), len(web.vtn.events))
        r = web.client.post(path, data=raw, headers=web.headers(), content_type="application/json")
        assert r.status_code < 500, (r.status_code, raw[:300], r.get_data(as_text=True)[:300])
        if r.status_code >= 400:
            error = r.get_json()
            assert error["field"] and error["code"], error
            assert (len(web.vtn.vens), len(web.vtn.events)) == rows, raw[:300]  # a refusal writes nothing
            _count("rest", f"refused {r.status_code}")
        else:
            _count("rest", f"accepted {r.status_code}")


def test_the_run_was_broad(figure) -> None:
    total = sum(sum(v.values()) for v in TALLY.values())
    refused = sum(n for v in TALLY.values() for k, n in v.items() if k.startswith("refused"))
    figure("fuzz across inbound parsers", f"{total} inputs (seed {SEED}), {refused} refused and counted, "
                                          f"nothing escaped: " + json.dumps(TALLY, sort_keys=True))
    assert total >= TOTAL * 0.99
    assert all(any(k.startswith("refused") for k in v) for v in TALLY.values()), TALLY
