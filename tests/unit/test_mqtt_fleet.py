"""The simulated VEN's contract (commands -> acks, telemetry) and the fleet's summary arithmetic."""

from __future__ import annotations

import json
import random
from datetime import datetime, timedelta, timezone

import pytest

from dr_tools.fleet.sim import ven_ids
from dr_tools.fleet.ven import SimVen
from dr_tools.fleet.workers import Totals, percentile

from dr_common.payloads import Ack, Telemetry  # noqa: E402

NOW = datetime(2026, 5, 1, 14, 0, tzinfo=timezone.utc)


@pytest.fixture
def ven() -> SimVen:
    return SimVen("sim-00007", random.Random(7))


def _cmd(**fields) -> bytes:
    return json.dumps(fields).encode()


def test_event_is_acked_with_target_accepted_and_until(ven):
    ack, cmd = ven.handle(_cmd(op="event", correlationId="c1", eventId="e1", requestedReductionKw=100,
                               until="2026-05-01T15:00:00Z", issuedAt="2026-05-01T13:59:59.900Z"), NOW)
    assert cmd is not None and cmd.op == "event"
    parsed = Ack.from_payload(ack)  # what the VTN side will accept
    assert parsed.ok and parsed.correlation_id == "c1" and parsed.event_id == "e1"
    assert parsed.accepted_reduce_kw == ven.max_shed_kw  # asked for more than it can shed
    assert parsed.until == NOW + timedelta(hours=1)
    assert 0 <= parsed.target_kw < ven.baseline_kw * 1.5
    tel = Telemetry.from_payload(ven.telemetry(NOW + timedelta(minutes=1)))
    assert tel.event_id == "e1" and tel.requested_reduction_kw == 100
    assert 0 < tel.shed_power_kw <= ven.max_shed_kw
    assert tel.used_power_kw == pytest.approx(tel.baseline_power_kw - tel.shed_power_kw, abs=1e-3)


def test_variants_restore_ping_and_auto_restore(ven):
    ack, _ = ven.handle(_cmd(operation="shed_panel", correlation_id="c2", reduce_kw="1.0",
                             endTime="2026-05-01T14:30:00"), NOW)
    assert ack["ok"] and ack["op"] == "shedPanel" and ack["data"]["acceptedReduceKw"] == 1.0
    assert ven.telemetry(NOW)["shedPowerKw"] > 0
    assert ven.telemetry(NOW + timedelta(minutes=31))["shedPowerKw"] == 0.0  # ended at its until
    ven.handle(_cmd(op="event", correlationId="c3", requestedReductionKw=1, durationS=600), NOW)
    ack, _ = ven.handle(_cmd(op="restore", correlationId="c4"), NOW)
    assert ack["ok"] and ven.event is None and ven.telemetry(NOW)["eventId"] is None
    ack, cmd = ven.handle(_cmd(op="ping", correlationId="c5"), NOW)
    assert ack["ok"] and cmd.op == "ping"


@pytest.mark.parametrize("raw, why", [
    (b"not json", "JSON"),
    (_cmd(op="dance", correlationId="c6"), "op"),
    (_cmd(op="event", correlationId="c7", requestedReductionKw=1), "until"),
    (_cmd(op="event", correlationId="c8", requestedReductionKw=1, until="2026-05-01T13:00:00Z"), "ended"),
    (_cmd(op="event", correlationId="c9", venId="someone-else", requestedReductionKw=1, durationS=60), "reached"),
])
def test_unusable_commands_get_a_negative_ack(ven, raw, why):
    ack, _ = ven.handle(raw, NOW)
    assert ack["ok"] is False and why in ack["error"]
    Ack.from_payload(ack)  # still a valid ack (ok false carries error)


def test_ids_percentiles_and_totals():
    assert ven_ids("sim", 8, 3) == ["sim-00008", "sim-00009", "sim-00010"]
    assert percentile([5.0, 1.0, 3.0], 50) == 3.0 and percentile([], 50) is None
    t = Totals()
    t.add(0, {"connected": 5, "connectS": 0.5, "counters": {"commands": 2}, "byOp": {"event": 2},
              "deliveryMs": [1.0], "ackMs": [0.1]})
    t.add(0, {"connected": 5, "connectS": 0.5, "counters": {"commands": 3}, "byOp": {"event": 3},
              "deliveryMs": [2.0], "ackMs": [0.2]})
    t.add(1, {"connected": 4, "connectS": None, "counters": {"commands": 1}, "byOp": {"ping": 1},
              "deliveryMs": [], "ackMs": []})
    assert t.connected_total == 9 and t.counters["commands"] == 4 and t.by_op == {"event": 3, "ping": 1}
    lines = t.summary_lines(10, 2, 3.0)
    assert "9/10" in lines[1] and "event 3" in lines[2] and "n=2" in lines[4]
