"""Every DESIGN.md payload parses from camelCase and snake_case variants; a malformed one names the field."""

from __future__ import annotations

import re
from datetime import datetime, timezone

import pytest

from dr_common.payloads import (Ack, Command, EventRequest, Telemetry, VenRegistration, VenStatus, OP_RESTORE,
                                OP_SHED_PANEL)
from dr_common.schema import PayloadError, decode_json
from dr_common.timeutil import parse_time, to_iso


def snake(name: str) -> str:
    return re.sub(r"(?<!^)(?=[A-Z])", "_", name).lower()


def snake_keys(payload):
    if isinstance(payload, dict):
        return {snake(k): snake_keys(v) for k, v in payload.items()}
    return payload


T0 = "2026-11-23T14:00:00Z"
T1 = "2026-11-23T15:00:00Z"

CASES = [
    (Command, {"op": "event", "correlationId": "c-1", "venId": "ven-1", "eventId": "evt-1",
               "requestedReductionKw": 2.0, "startTime": T0, "until": T1}),
    (Ack, {"correlationId": "c-1", "op": "event", "ok": True, "venId": "ven-1",
           "data": {"targetKw": 5.0, "acceptedReduceKw": 2.0, "until": T1}, "ts": T0}),
    (Telemetry, {"venId": "ven-1", "ts": T0, "usedPowerKw": 3.0, "shedPowerKw": 2.0, "requestedReductionKw": 2.0,
                 "eventId": "evt-1", "baselinePowerKw": 5.0}),
    (VenStatus, {"venId": "ven-1", "online": True, "ts": T0}),
    (VenRegistration, {"venId": "ven-1", "name": "Home 1", "site": "demo", "group": "g1", "maxShedKw": 7.0,
                       "transport": "mqtt"}),
    (EventRequest, {"startTime": T0, "endTime": T1, "requestedReductionKw": 2.0, "venIds": ["ven-1"],
                    "rampUpS": 60, "randomizeStartS": 5, "priority": 1, "test": True}),
]


@pytest.mark.parametrize("cls,payload", CASES, ids=[c.__name__ for c, _ in CASES])
def test_camel_and_snake_case_parse_the_same(cls, payload):
    camel = cls.from_payload(payload)
    snaked = cls.from_payload(snake_keys(payload))
    assert snake_keys(payload) != payload  # the variant really differs
    assert camel == snaked
    # canonical output parses back to the same thing
    assert cls.from_payload(camel.to_payload()) == camel


def test_command_field_values():
    cmd = Command.from_payload(CASES[0][1])
    assert cmd.op == "event" and cmd.correlation_id == "c-1" and cmd.requested_reduction_kw == 2.0
    assert cmd.until == datetime(2026, 11, 23, 15, tzinfo=timezone.utc)


def test_command_word_variants_strings_and_naive_times():
    cmd = Command.from_payload({"operation": "shed_panel", "correlation_id": "x", "reduce_kw": "1.5",
                                "start_time": "2026-11-23T14:00:00", "endTime": "2026-11-23T16:00:00+01:00"})
    assert cmd.op == OP_SHED_PANEL
    assert cmd.requested_reduction_kw == 1.5
    assert cmd.start_time == datetime(2026, 11, 23, 14, tzinfo=timezone.utc)  # no zone = UTC
    assert cmd.until == datetime(2026, 11, 23, 15, tzinfo=timezone.utc)
    assert Command.from_payload({"cmd": "STOP", "eventId": "e"}).op == OP_RESTORE


def test_command_without_correlation_gets_a_stable_one():
    a = Command.from_payload({"op": "restore", "eventId": "evt-9"})
    b = Command.from_payload({"op": "restore", "eventId": "evt-9"})
    assert a.correlation_id == b.correlation_id == "restore:evt-9:0"


def test_ack_tolerates_data_at_top_level():
    ack = Ack.from_payload({"correlation_id": "c", "ok": "true", "accepted_reduce_kw": "1.2", "target_kw": 3})
    assert ack.ok is True and ack.accepted_reduce_kw == 1.2 and ack.target_kw == 3.0


def test_event_duration_instead_of_end():
    ev = EventRequest.from_payload({"start_time": T0, "duration_s": "3600", "level": 2, "all_vens": True})
    assert ev.end_time == parse_time(T1)
    assert ev.signal == "SIMPLE" and ev.all_vens


@pytest.mark.parametrize("cls,payload,field", [
    (Command, {"op": "event", "requestedReductionKw": "two", "until": T1}, "requestedReductionKw"),
    (Command, {"op": "dance"}, "op"),
    (Command, {"requestedReductionKw": 2}, "op"),
    (Command, {"op": "event", "requestedReductionKw": 2}, "until"),
    (Command, {"op": "event", "requestedReductionKw": -1, "until": T1}, "requestedReductionKw"),
    (Command, {"op": "event", "requestedReductionKw": 2, "startTime": T1, "until": T0}, "until"),
    (Command, {"op": "event", "requestedReductionKw": "NaN", "until": T1}, "requestedReductionKw"),
    (Command, {"op": "event", "requestedReductionKw": 2, "until": "tomorrow"}, "until"),
    (Command, {"op": "ping", "venId": "bad id with spaces"}, "venId"),
    (Command, {"op": "ping", "op_": "x", "operation": "ping"}, "op"),
    (Ack, {"ok": True}, "correlationId"),
    (Ack, {"correlationId": "c", "ok": "maybe"}, "ok"),
    (Ack, {"correlationId": "c", "ok": False}, "error"),
    (Ack, {"correlationId": "c", "ok": True, "data": [1]}, "data"),
    (Telemetry, {"venId": "v", "usedPowerKw": True}, "usedPowerKw"),
    (Telemetry, {"usedPowerKw": 1}, "venId"),
    (Telemetry, {"venId": "v"}, "usedPowerKw"),
    (Telemetry, {"venId": "v", "usedPowerKw": 1, "ts": "yesterday"}, "ts"),
    (VenStatus, {"venId": "v", "online": "perhaps"}, "online"),
    (VenRegistration, {"name": "x"}, "venId"),
    (VenRegistration, {"venId": "v", "transport": "pigeon"}, "transport"),
    (VenRegistration, {"venId": "v", "maxShedKw": "lots"}, "maxShedKw"),
    (EventRequest, {"endTime": T1, "requestedReductionKw": 1}, "startTime"),
    (EventRequest, {"startTime": T0, "requestedReductionKw": 1}, "endTime"),
    (EventRequest, {"startTime": T1, "endTime": T0, "requestedReductionKw": 1}, "endTime"),
    (EventRequest, {"startTime": T0, "endTime": T1}, "requestedReductionKw"),
    (EventRequest, {"startTime": T0, "endTime": T1, "level": 7}, "level"),
    (EventRequest, {"startTime": T0, "endTime": T1, "level": 1, "venIds": "ven 1"}, "venIds"),
    (EventRequest, {"startTime": T0, "endTime": T1, "level": 1, "allVens": True, "groups": ["g"]}, "allVens"),
])
def test_malformed_payload_names_the_field(cls, payload, field):
    with pytest.raises(PayloadError) as info:
        cls.from_payload(payload)
    assert info.value.field == field
    assert f"field '{field}'" in str(info.value)


@pytest.mark.parametrize("raw", [b"{not json", b"[1, 2]", b"\xff\xfe", "42", b""])
def test_decode_json_rejects_non_objects(raw):
    with pytest.raises(PayloadError) as info:
        decode_json(raw)
    assert info.value.field == "<payload>"


def test_non_mapping_payload_is_rejected():
    with pytest.raises(PayloadError) as info:
        Telemetry.from_payload(["venId", "v"])
    assert info.value.field == "<payload>"


def test_time_helpers_round_trip():
    assert to_iso(parse_time(1763906400)) == "2025-11-23T14:00:00.000Z"
    assert parse_time(1763906400000) == parse_time(1763906400)  # epoch milliseconds
    assert to_iso(parse_time("2026-11-23T14:00:00+02:00")) == "2026-11-23T12:00:00.000Z"


@pytest.mark.parametrize("start", ["9999-12-31T23:59:59Z", "0001-01-01T00:00:00+14:00", "1900-01-01T00:00:00"])
def test_times_outside_the_supported_years_name_the_field(start):
    with pytest.raises(PayloadError) as info:
        EventRequest.from_payload({"startTime": start, "durationS": 60, "kw": 1})
    assert info.value.field == "startTime"
    with pytest.raises(PayloadError) as info:
        Command.from_payload({"op": "event", "kw": 1, "startTime": start, "durationS": 60})
    assert info.value.field == "startTime"


def test_compact_batch_round_trips_and_shrinks():
    import json

    from dr_common.batches import batch_items, compact_batch

    commands = [Command(op="event", correlation_id=f"evt-1:m0:r0:event:ven-{i}", ven_id=f"ven-{i}", event_id="evt-1",
                        requested_reduction_kw=1.5 + i % 3, start_time=parse_time(T0), until=parse_time(T1),
                        issued_at=parse_time(T0)).to_payload() for i in range(200)]
    commands[7]["startTime"] = "2026-11-23T14:00:03.000Z"  # a randomized start differs per VEN
    packed = compact_batch(commands, "commands")
    assert packed["shared"]["op"] == "event" and "startTime" not in packed["shared"]
    assert "venId" not in packed["shared"]
    assert batch_items(packed, "commands") == commands
    assert len(json.dumps(packed)) < 0.6 * len(json.dumps({"commands": commands}))
    assert batch_items({"commands": commands}, "commands") == commands  # a plain batch reads as it is
    assert batch_items({"commands": "nope"}, "commands") is None
    assert compact_batch([], "commands") == {"commands": []}
    one = compact_batch(commands[:1], "commands")
    assert batch_items(one, "commands") == commands[:1]


def test_compact_batch_is_columnar_when_the_items_have_the_same_fields():
    import json

    from dr_common.batches import batch_items, compact_batch

    items = [{"op": "event", "eventId": "e1", "venId": f"v-{i}", "correlationId": f"e1:v-{i}", "kw": 0.5 + i % 2}
             for i in range(50)]
    packed = compact_batch(items, "commands")
    assert packed["shared"] == {"op": "event", "eventId": "e1"}
    assert packed["columns"]["venId"][:2] == ["v-0", "v-1"] and packed["columns"]["kw"][:2] == [0.5, 1.5]
    assert "commands" not in packed
    assert batch_items(json.loads(json.dumps(packed)), "commands") == items
    assert batch_items(compact_batch(items[:1], "commands"), "commands") == items[:1]
    # nothing shared: columns alone
    distinct = [{"venId": f"v-{i}", "correlationId": f"c{i}"} for i in range(3)]
    assert compact_batch(distinct, "items") == {"columns": {"venId": ["v-0", "v-1", "v-2"],
                                                            "correlationId": ["c0", "c1", "c2"]}}
    assert batch_items(compact_batch(distinct, "items"), "items") == distinct
    # items with different fields (same count, other names; or another count) keep one object each
    mixed = [{"venId": "a", "x": 1}, {"venId": "b", "y": 2}]
    assert batch_items(compact_batch(mixed, "items"), "items") == mixed
    assert "columns" not in compact_batch(mixed, "items")
    ragged = [{"venId": "a", "x": 1}, {"venId": "b", "x": 1, "z": 3}]
    assert batch_items(compact_batch(ragged, "items"), "items") == ragged


@pytest.mark.parametrize("bad", [
    {"columns": {"venId": ["a", "b"], "kw": [1]}},      # unequal lengths
    {"columns": {"venId": "ab"}},                        # not a list
    {"columns": {}},                                     # nothing
    {"columns": ["venId"]},                              # not an object
    {"commands": {"venId": ["a"]}},                      # the key is not a list
    {"commands": "x", "columns": {"venId": ["a"]}},      # both, the key not a list
])
def test_malformed_batches_read_as_none(bad):
    from dr_common.batches import batch_items

    assert batch_items(bad, "commands") is None
