"""How DR bus traffic becomes stored readings, and the writer's path into a real SQLite store."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest
from dr_common.batches import compact_batch
from dr_historian.dr_records import convert, event_entry
from dr_historian.store import Point, Store
from dr_historian.writer import Writer

UTC = timezone.utc
NOW = datetime(2026, 7, 15, 14, 0, 5, tzinfo=UTC)
TS = "2026-07-15T14:00:00.000Z"
TS_DT = datetime(2026, 7, 15, 14, tzinfo=UTC)


def by_topic(conversion):
    return {p.topic: p for p in conversion.points}


def test_telemetry_fields_become_topics_at_the_message_time():
    msg = {"venId": "ven1", "ts": TS, "usedPowerKw": 3.5, "shedPowerKw": 1.5, "requestedReductionKw": 2,
           "eventId": "ev1", "baselinePowerKw": 5.0}
    out = convert("dr/telemetry/ven1", {"TimeStamp": "2026-07-15T13:00:00Z"}, msg, NOW)
    points = by_topic(out)
    assert out.errors == []
    assert points["dr/telemetry/ven1"].value == msg
    assert points["dr/telemetry/ven1/usedPowerKw"].value == 3.5
    assert points["dr/telemetry/ven1/requestedReductionKw"].value == 2.0
    assert points["dr/telemetry/ven1/baselinePowerKw"].value == 5.0
    assert points["dr/telemetry/ven1/eventId"].value == "ev1"
    assert points["dr/telemetry/ven1/optOut"].value is False
    assert "dr/telemetry/ven1/availableShedKw" not in points
    assert {p.ts for p in out.points} == {TS_DT}
    assert points["dr/telemetry/ven1/usedPowerKw"].meta["units"] == "kW"


def test_time_falls_back_to_header_then_receipt():
    msg = {"venId": "ven1", "usedPowerKw": 1.0}
    assert {p.ts for p in convert("dr/telemetry/ven1", {"TimeStamp": TS}, msg, NOW).points} == {TS_DT}
    assert {p.ts for p in convert("dr/telemetry/ven1", {}, msg, NOW).points} == {NOW}


def test_batches_are_split_per_ven_and_bad_items_counted():
    msg = {"items": [{"venId": "a", "ts": TS, "usedPowerKw": 1.0}, {"venId": "b", "ts": TS, "usedPowerKw": 2.0},
                     {"usedPowerKw": 3.0}, "junk", {"venId": "c/d", "usedPowerKw": 1}]}
    out = convert("dr/batch/telemetry", {}, msg, NOW)
    points = by_topic(out)
    assert points["dr/telemetry/a/usedPowerKw"].value == 1.0
    assert points["dr/telemetry/b/usedPowerKw"].value == 2.0
    assert len(out.errors) == 3
    assert convert("dr/batch/telemetry", {}, {"nope": 1}, NOW).errors


def test_invalid_per_ven_telemetry_is_kept_raw_and_counted():
    out = convert("dr/telemetry/ven1", {}, {"venId": "ven1", "usedPowerKw": "lots"}, NOW)
    assert [p.topic for p in out.points] == ["dr/telemetry/ven1"]
    assert "usedPowerKw" in out.errors[0]


def test_commands_batched_and_per_ven_feed_the_event_index():
    cmd = {"op": "event", "correlationId": "c1", "eventId": "ev1", "requestedReductionKw": 2.0,
           "startTime": "2026-07-15T14:00:00Z", "until": "2026-07-15T15:00:00Z", "issuedAt": "2026-07-15T13:59:59Z"}
    out = convert("dr/cmd/ven1", {}, cmd, NOW)
    points = by_topic(out)
    assert points["dr/cmd/ven1/requestedReductionKw"].value == 2.0
    assert points["dr/cmd/ven1"].ts == datetime(2026, 7, 15, 13, 59, 59, tzinfo=UTC)
    batch = convert("dr/batch/cmd", {}, {"commands": [dict(cmd, venId="ven2"), dict(cmd, op="restore", venId="v3")]},
                    NOW)
    assert {p.topic for p in batch.points} == {"dr/cmd/ven2", "dr/cmd/ven2/requestedReductionKw", "dr/cmd/v3"}
    packed = compact_batch([dict(cmd, venId="ven2"), dict(cmd, op="restore", venId="v3")], "commands")
    assert "shared" in packed
    same = convert("dr/batch/cmd", {}, packed, NOW)
    assert [(p.topic, p.ts, p.value) for p in same.points] == [(p.topic, p.ts, p.value) for p in batch.points]
    entry = event_entry("dr/cmd/ven1", points["dr/cmd/ven1"].ts, cmd)
    assert (entry.event_id, entry.ven_id, entry.requested_kw, entry.end) == (
        "ev1", "ven1", 2.0, datetime(2026, 7, 15, 15, tzinfo=UTC))
    assert event_entry("dr/cmd/ven1/requestedReductionKw", NOW, 2.0) is None
    assert event_entry("dr/cmd/ven1", NOW, {"op": "ping"}) is None


def test_acks_status_and_other_dr_topics():
    ack = {"correlationId": "c1", "op": "event", "ok": True, "data": {"acceptedReduceKw": 1.5}, "ts": TS}
    points = by_topic(convert("dr/ack/ven1", {}, ack, NOW))
    assert points["dr/ack/ven1/ok"].value is True and points["dr/ack/ven1/acceptedReduceKw"].value == 1.5
    status = by_topic(convert("dr/batch/status", {}, {"items": [{"venId": "v1", "online": False}]}, NOW))
    assert status["dr/status/v1/online"].value is False
    other = convert("dr/event/ev1", {"Date": TS}, {"status": "active"}, NOW)
    assert [(p.topic, p.ts, p.value) for p in other.points] == [("dr/event/ev1", TS_DT, {"status": "active"})]


def test_writer_stores_cache_records_and_indexes_events(tmp_path):
    store = Store(f"sqlite:///{tmp_path / 'h.sqlite'}")
    writer = Writer(store)
    cmd = {"op": "event", "correlationId": "c1", "eventId": "ev1", "requestedReductionKw": 2.0,
           "startTime": "2026-07-15T14:00:00Z", "until": "2026-07-15T15:00:00Z"}
    records = [{"_id": 1, "timestamp": NOW, "source": "dr", "topic": "dr/cmd/ven1", "value": cmd, "meta": {}},
               {"_id": 2, "timestamp": NOW, "source": "scrape", "topic": "demo/meter/PowerKw", "value": 4.2,
                "meta": {"units": "kW"}}]
    assert writer.publish(records) is True
    assert writer.stats.readings == 2
    assert store.query("demo/meter/PowerKw")["values"][0][1] == 4.2
    [window] = store.event_windows("ev1")
    assert (window.ven_id, window.start, window.requested_kw) == ("ven1", TS_DT, 2.0)
    assert writer.publish(records) is True  # a replay from the cache changes nothing
    assert store.count_rows() == 2


def test_writer_reports_failure_and_keeps_nothing_half_written(tmp_path):
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    writer = Writer(Store(f"postgresql+psycopg2://postgres@127.0.0.1:{port}/x", connect_timeout_s=1))
    record = {"_id": 1, "timestamp": NOW, "source": "scrape", "topic": "a/b", "value": 1.0, "meta": {}}
    assert writer.publish([record]) is False
    assert writer.publish([record]) is False
    assert writer.stats.failures == 2 and writer.stats.failing_since_monotonic is not None
    assert "postgresql" in writer.stats.last_error


@pytest.mark.parametrize("value", [1, 2.5, "x", {"a": 1}])
def test_point_values_round_trip_through_writer(tmp_path, value):
    store = Store(f"sqlite:///{tmp_path / 'h.sqlite'}")
    Writer(store).publish([{"timestamp": NOW, "topic": "t/p", "value": value, "meta": None}])
    assert store.query("t/p")["values"][0][1] == value
    store.write([Point("t/p", NOW + timedelta(seconds=1), value)])
    assert len(store.query("t/p")["values"]) == 2


def test_numbers_no_float_holds_are_refused_not_raised():
    huge = 10 ** 400
    out = convert("dr/cmd/ven1", {"TimeStamp": huge}, {"op": "event", "eventId": "ev1", "venId": "ven1",
                                                       "requestedReductionKw": 1.0, "startTime": huge}, NOW)
    assert [p.topic for p in out.points] == ["dr/cmd/ven1"] and out.points[0].ts == NOW
    assert len(out.errors) == 1 and ("out of range" in out.errors[0] or "startTime" in out.errors[0])
    assert event_entry("dr/cmd/ven1", NOW, {"op": "event", "eventId": "ev1", "until": huge}) is None
    status = convert("dr/batch/status", {}, {"items": [{"venId": "v1", "online": True, "ts": huge}]}, NOW)
    assert status.errors and {p.ts for p in status.points} == {NOW}


def test_an_unstorable_value_drops_that_reading_not_the_batch(tmp_path):
    store = Store(f"sqlite:///{tmp_path / 'w.sqlite'}")
    store.setup()
    writer = Writer(store)
    records = [{"topic": "d/ok", "timestamp": TS_DT, "value": 1.5, "meta": {}},
               {"topic": "d/huge", "timestamp": TS_DT, "value": 10 ** 5000, "meta": {}},  # str() refuses it
               {"topic": "d/ok2", "timestamp": TS_DT, "value": {"a": [1, 2]}, "meta": {}}]
    assert writer.publish(records) is True
    assert store.query("d/ok")["values"][0][1] == 1.5 and store.query("d/ok2")["values"][0][1] == {"a": [1, 2]}
    assert store.query("d/huge")["values"] == [] and writer.stats.unstorable == 1
    store.dispose()
