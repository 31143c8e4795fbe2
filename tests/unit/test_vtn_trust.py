"""dr.vtn's trust boundaries: a VEN acts only as itself (acks, telemetry and status bound to the VEN the
transport authenticated), unknown VENs are refused, correlationIds cannot be derived, every id is checked at
every entry point, every event is bounded, an event never targets everyone by accident, and an internal error
never reaches the caller."""

import logging

import pytest
from dr_vtn_dispatcher.config import parse_config
from dr_vtn_dispatcher.errors import api_call
from dr_vtn_dispatcher.journal import Journal
from dr_vtn_dispatcher.store import AckRow, TelemetryRow
from sqlalchemy.exc import OperationalError

from dr_common.config import ConfigError
from tests.unit.test_vtn_service import T0, Harness, iso

BRIDGE = "dr.mqtt"


@pytest.fixture
def h(tmp_path):
    harness = Harness(tmp_path)
    yield harness
    harness.svc.stop()
    harness.store.close()


def two_mqtt_vens(h) -> dict[str, dict]:
    h.register("ven-a", transport="mqtt", maxShedKw=5)
    h.register("ven-b", transport="mqtt", maxShedKw=5)
    h.event(0, 600, requestedReductionKw=4.0, eventId="evt-1")
    return {c["venId"]: c for c in h.commands("event")}


def call(h, method, *args, **kwargs):
    return api_call(getattr(h.svc, method), *args, **kwargs)


# ------------------------------------------------------------------------------------------ ack forgery
def test_an_ack_for_another_vens_command_changes_nothing_and_is_counted(h):
    cmds = two_mqtt_vens(h)
    a_cid = cmds["ven-a"]["correlationId"]
    # B, through the bridge (its own MQTT topic, so venId ven-b), acks and rejects A's command
    errors = h.svc.ingest("ack", {"items": [{"correlationId": a_cid, "ok": False, "error": "no", "venId": "ven-b"}]},
                          sender=BRIDGE)
    assert errors == []
    record = h.svc.book.get(a_cid)
    assert record.acked_at is None and record.pending  # still retried
    assert h.svc.participants[record.event_id]["ven-a"].state == "dispatched"
    assert h.svc.counters["ackVenMismatch"] == 1 and h.svc.counters["reallocations"] == 0
    # the same on B's per-VEN bus topic, as B's own agent
    assert h.svc.ingest("ack", {"correlationId": a_cid, "ok": True}, ven_id="ven-b", sender="dr.ven.ven-b") == []
    assert h.svc.book.get(a_cid).acked_at is None and h.svc.counters["ackVenMismatch"] == 2
    # A's retry still goes out
    h.clock.advance(1.0)
    assert [c["correlationId"] for c in h.commands("event")].count(a_cid) == 2
    # and A's own ack is taken
    h.svc.ingest("ack", {"items": [{"correlationId": a_cid, "ok": True, "venId": "ven-a"}]}, sender=BRIDGE)
    assert h.svc.book.get(a_cid).ack_ok is True
    h.svc.flush()
    outcomes = sorted(row["outcome"] for row in h.store.acks())
    assert outcomes == ["mismatch", "mismatch", "recorded"]


def test_a_mismatched_ack_is_logged_once_per_ven_per_minute(h, caplog):
    cmds = two_mqtt_vens(h)
    forged = {"items": [{"correlationId": cmds["ven-a"]["correlationId"], "ok": False, "error": "x",
                         "venId": "ven-b"}]}
    with caplog.at_level(logging.WARNING, logger="dr_vtn_dispatcher.dispatcher.acks"):
        for _ in range(50):
            h.svc.ingest("ack", forged, sender=BRIDGE)
        h.clock.advance(30)
        h.svc.ingest("ack", forged, sender=BRIDGE)
        first = [r for r in caplog.records if "not its own" in r.getMessage()]
        h.clock.advance(31)
        h.svc.ingest("ack", forged, sender=BRIDGE)
    lines = [r.getMessage() for r in caplog.records if "not its own" in r.getMessage()]
    assert len(first) == 1 and len(lines) == 2
    assert "50 more like it suppressed" in lines[1]
    assert h.svc.counters["ackVenMismatch"] == 52


def test_per_ven_topics_need_that_vens_agent_or_a_trusted_bridge(h):
    cmds = two_mqtt_vens(h)
    a_cid = cmds["ven-a"]["correlationId"]
    # B's agent publishing on A's topic
    errors = h.svc.ingest("ack", {"correlationId": a_cid, "ok": False}, ven_id="ven-a", sender="dr.ven.ven-b")
    assert len(errors) == 1 and "may not speak for" in errors[0]
    assert h.svc.counters["senderMismatch"] == 1 and h.svc.book.get(a_cid).acked_at is None
    # A's topic, A's agent, but a payload that claims to be B
    errors = h.svc.ingest("ack", {"correlationId": a_cid, "ok": True, "venId": "ven-b"}, ven_id="ven-a",
                          sender="dr.ven.ven-a")
    assert len(errors) == 1 and "disagrees" in errors[0]
    # telemetry on A's topic from B's agent is not A's
    h.svc.ingest("telemetry", {"usedPowerKw": 1, "shedPowerKw": 99}, ven_id="ven-a", sender="dr.ven.ven-b")
    assert h.svc.vens["ven-a"].shed_kw is None
    # the VEN's own agent and the bridge may
    assert h.svc.ingest("telemetry", {"usedPowerKw": 1, "shedPowerKw": 2}, ven_id="ven-a",
                        sender="dr.ven.ven-a") == []
    assert h.svc.ingest("ack", {"correlationId": a_cid, "ok": True}, ven_id="ven-a", sender=BRIDGE) == []
    assert h.svc.book.get(a_cid).ack_ok is True


def test_batches_only_from_a_trusted_bridge(h):
    cmds = two_mqtt_vens(h)
    a_cid = cmds["ven-a"]["correlationId"]
    batch = {"items": [{"correlationId": a_cid, "ok": False, "venId": "ven-a"}]}
    for sender in ("dr.ven.ven-b", "dr.web", "dr.mqtt2"):
        errors = h.svc.ingest("ack", batch, sender=sender)
        assert len(errors) == 1 and "trusted bridge" in errors[0]
    h.svc.ingest("telemetry", {"items": [{"venId": "ven-a", "usedPowerKw": 1, "shedPowerKw": 50}]},
                 sender="dr.ven.ven-b")
    h.svc.ingest("status", {"items": [{"venId": "ven-a", "online": False}]}, sender="dr.ven.ven-b")
    assert h.svc.counters["senderMismatch"] == 5
    assert h.svc.book.get(a_cid).acked_at is None and h.svc.vens["ven-a"].shed_kw is None
    assert h.svc.get_ven("ven-a")["status"] != "offline"
    # an item without a venId says nobody: refused
    errors = h.svc.ingest("ack", {"items": [{"correlationId": a_cid, "ok": False, "error": "x"}]}, sender=BRIDGE)
    assert errors == ["field 'venId': is required in a batch item"] and h.svc.book.get(a_cid).acked_at is None


def test_trusted_bridges_are_configurable(tmp_path):
    h = Harness(tmp_path, config={"trustedBridges": ["dr.mqtt.site2"]})
    try:
        cmds = two_mqtt_vens(h)
        batch = {"items": [{"correlationId": cmds["ven-a"]["correlationId"], "ok": True, "venId": "ven-a"}]}
        assert "trusted bridge" in h.svc.ingest("ack", batch, sender="dr.mqtt")[0]
        assert h.svc.ingest("ack", batch, sender="dr.mqtt.site2") == []
        assert h.svc.book.get(cmds["ven-a"]["correlationId"]).ack_ok is True
    finally:
        h.svc.stop()
        h.store.close()
    with pytest.raises(ConfigError) as info:
        parse_config({"trustedBridges": ["dr/mqtt"]})
    assert info.value.key == "trustedBridges"


def test_correlation_ids_cannot_be_derived_from_another_vens(h, tmp_path):
    cmds = two_mqtt_vens(h)
    a_cid, b_cid = cmds["ven-a"]["correlationId"], cmds["ven-b"]["correlationId"]
    guessed = b_cid.replace("ven-b", "ven-a")
    assert guessed != a_cid and h.svc.book.get(guessed) is None
    tag = a_cid.rsplit(":", 1)[1]
    assert len(tag) == 16 and int(tag, 16) >= 0
    # another VTN (another store, another secret) derives other ids for the same command
    other = Harness(tmp_path / "other")
    try:
        other_cmds = two_mqtt_vens(other)
        assert other_cmds["ven-a"]["correlationId"] != a_cid
        assert other_cmds["ven-a"]["correlationId"].rsplit(":", 1)[0] == a_cid.rsplit(":", 1)[0]
    finally:
        other.svc.stop()
        other.store.close()
    # stable across a restart: the resend carries the same id
    h.restart(down_s=2)
    h.clock.advance(60)
    assert a_cid in [c["correlationId"] for c in h.commands("event")]


# ------------------------------------------------------------------------------------------ unknown VENs
def test_telemetry_and_acks_of_unregistered_vens_are_refused_and_not_stored(h):
    cmds = two_mqtt_vens(h)
    items = [{"venId": f"made-up-{i}", "usedPowerKw": 1e6, "shedPowerKw": 1e6} for i in range(100)]
    assert h.svc.ingest("telemetry", {"items": items}, sender=BRIDGE) == []
    h.svc.ingest("ack", {"items": [{"correlationId": cmds["ven-a"]["correlationId"], "ok": False, "error": "x",
                                    "venId": "made-up-1"}]}, sender=BRIDGE)
    h.svc.ingest("telemetry", {"usedPowerKw": 1, "shedPowerKw": 1}, ven_id="ghost", sender="dr.ven.ghost")
    assert h.svc.counters["unknownVenTelemetry"] == 101 and h.svc.counters["unknownVenAcks"] == 1
    assert h.svc.book.get(cmds["ven-a"]["correlationId"]).acked_at is None
    h.svc.flush()
    assert h.store.telemetry() == [] and h.store.acks() == []
    assert set(h.svc.vens) == {"ven-a", "ven-b"}


# ------------------------------------------------------------------------------------------ targets
@pytest.mark.parametrize("targets, field", [
    ({}, "allVens"),
    ({"venIds": []}, "venIds"),
    ({"allVens": False}, "allVens"),
    ({"allVens": False, "groups": []}, "groups"),
])
def test_an_event_that_targets_nobody_is_refused(h, targets, field):
    h.register("a")
    result = call(h, "create_event", {"startTime": iso(T0 + 10), "durationS": 60, "kw": 1, **targets})
    assert result["code"] == "invalid" and result["field"] == field
    assert h.svc.events == {} and h.sender.events == []


def test_fleet_wide_needs_allvens_true_and_an_update_cannot_empty_the_targets(h):
    h.register("a")
    h.register("b", group="g1")
    fleet = call(h, "create_event", {"startTime": iso(T0 + 10), "durationS": 60, "kw": 1, "allVens": True})
    assert fleet["allVens"] is True
    grouped = call(h, "create_event", {"startTime": iso(T0 + 10), "durationS": 60, "kw": 1, "groups": ["g1"]})
    assert grouped["allVens"] is False
    assert call(h, "update_event", grouped["eventId"], {"groups": []})["field"] == "groups"
    assert call(h, "update_event", fleet["eventId"], {"allVens": False})["field"] == "allVens"
    assert call(h, "update_event", fleet["eventId"], {"kw": 2})["allVens"] is True  # stays fleet-wide
    assert call(h, "get_event", grouped["eventId"])["groups"] == ["g1"]


# ------------------------------------------------------------------------------------------ identifiers
@pytest.mark.parametrize("bad", ["a/b", "evt\n", "x" * 65, "\u202eevil", "a\x00b", "", 7])
def test_every_id_argument_is_checked(h, bad):
    h.register("a")
    for method, args, field in [("get_event", (bad,), "eventId"), ("stop_event", (bad,), "eventId"),
                                ("cancel_event", (bad,), "eventId"), ("event_metrics", (bad,), "eventId"),
                                ("update_event", (bad, {"kw": 1}), "eventId"), ("get_ven", (bad,), "venId"),
                                ("update_ven", (bad, {"maxShedKw": 1}), "venId")]:
        result = call(h, method, *args)
        assert result["code"] == "invalid" and result["field"] == field, (method, result)
    if isinstance(bad, str):
        assert call(h, "list_vens", group=bad)["field"] == "group"
    if bad in ("evt\n", 7):
        return  # payloads normalise these (whitespace trimmed, numbers as text) to a valid id
    event = {"startTime": iso(T0 + 10), "durationS": 60, "kw": 1, "allVens": True}
    for key in ("eventId", "programId"):
        assert call(h, "create_event", {**event, key: bad})["field"] == key
    assert call(h, "create_event", {**{k: v for k, v in event.items() if k != "allVens"},
                                    "groups": [bad]})["field"] == "groups"
    assert call(h, "register_ven", {"venId": bad})["field"] == "venId"


# ------------------------------------------------------------------------------------------ bounds
@pytest.mark.parametrize("offset", [10 ** 30, 2 ** 63, 1_000_000_001, -1])
def test_list_events_offset_is_bounded(h, offset):
    result = call(h, "list_events", None, 5, offset)
    assert result["code"] == "invalid" and result["field"] == "offset"


@pytest.mark.parametrize("change, field", [
    ({"durationS": 86400 + 1}, "durationS"),
    ({"endTime": iso(T0 + 10 + 2 * 86400)}, "durationS"),
    ({"requestedReductionKw": 10_001}, "requestedReductionKw"),
    ({"requestedReductionKw": 1e6}, "requestedReductionKw"),
    ({"startTime": iso(T0 + 31 * 86400)}, "startTime"),
])
def test_events_outside_the_vtns_bounds_are_refused(h, change, field):
    event = {"startTime": iso(T0 + 10), "durationS": 600, "requestedReductionKw": 2, "allVens": True}
    event.update(change)
    result = call(h, "create_event", event)
    assert result["code"] == "invalid" and result["field"] == field, result
    assert h.svc.events == {}


def test_bounds_are_configured_and_apply_to_levels_and_updates(tmp_path):
    h = Harness(tmp_path, config={"maxEventDurationS": 600, "maxRequestedKw": 5, "maxStartAheadS": 3600,
                                  "simpleLevelsKw": [0, 1, 2, 8]})
    try:
        base = {"startTime": iso(T0 + 10), "durationS": 600, "allVens": True}
        assert call(h, "create_event", {**base, "level": 3})["field"] == "level"
        ok = call(h, "create_event", {**base, "requestedReductionKw": 5})
        assert ok["requestedReductionKw"] == 5
        assert call(h, "update_event", ok["eventId"], {"durationS": 601})["field"] == "durationS"
        assert call(h, "update_event", ok["eventId"], {"kw": 5.5})["field"] == "requestedReductionKw"
        assert call(h, "create_event", {**base, "kw": 1, "startTime": iso(T0 + 3601)})["field"] == "startTime"
        assert call(h, "get_event", ok["eventId"])["modificationNumber"] == 0
    finally:
        h.svc.stop()
        h.store.close()


def test_bound_defaults():
    config = parse_config({})
    assert (config.max_event_duration_s, config.max_requested_kw, config.max_start_ahead_s) == \
        (86400.0, 10000.0, 30 * 86400.0)
    assert config.trusted_bridges == ("dr.mqtt",)


# ------------------------------------------------------------------------------------------ errors
def test_an_internal_error_answers_an_id_and_logs_the_detail(caplog):
    def failing() -> None:
        raise OperationalError("SELECT * FROM vtn_events WHERE event_id = %(id)s", {"id": "secret-param"},
                               Exception("server closed the connection"))

    with caplog.at_level(logging.ERROR):
        result = api_call(failing)
    assert result["code"] == "internal" and result["field"] == "<internal>"
    assert "SELECT" not in result["error"] and "secret-param" not in result["error"]
    assert result["errorId"] in result["error"]
    logged = [r for r in caplog.records if result["errorId"] in r.getMessage()]
    assert logged and "SELECT" in logged[0].exc_text


# ------------------------------------------------------------------------------------------ bounded state
def test_the_journal_keeps_at_most_rows_max_rows_while_the_database_is_down(h):
    journal = Journal(h.store, rows_max=100)
    for i in range(250):
        journal.telemetry(TelemetryRow(ven_id="a", ts=float(i), received_at=float(i), event_id=None, used_kw=1.0,
                                       shed_kw=0.0, requested_kw=None, baseline_kw=None, available_kw=None))
    assert journal.dropped_rows == 150
    journal.flush()
    assert [row["ts"] for row in h.store.telemetry(ven_id="a")][:1] in ([150.0], [249.0])
    assert len(h.store.telemetry(ven_id="a")) == 100


def test_the_journal_drops_old_ack_rows_too_when_only_acks_pile_up(h):
    journal = Journal(h.store, rows_max=10)
    rows = [AckRow(received_at=float(i), correlation_id=f"c{i}", ven_id="a", event_id=None, op="event", ok=True,
                   target_kw=None, accepted_kw=None, error=None, ack_ts=None, response_ms=None, outcome="unknown")
            for i in range(25)]
    for row in rows:
        journal.stage(acks=[row])
    assert journal.dropped_rows == 15
    journal.flush()
    assert sorted(r["correlation_id"] for r in h.store.acks()) == sorted(f"c{i}" for i in range(15, 25))


def test_the_database_url_is_a_secret_never_rendered():
    config = parse_config({"databaseUrl": "postgresql+psycopg2://vtn:s3cret-pw@db.example/volttron_dr"})
    assert "s3cret-pw" not in repr(config) and "s3cret-pw" not in str(config.model_dump())
    assert config.database_url.get_secret_value().endswith("@db.example/volttron_dr")
    with pytest.raises(ConfigError) as info:
        parse_config({"databaseUrl": "postgresql://vtn:s3cret-pw@db/x", "surprise": 1})
    assert "s3cret-pw" not in str(info.value)


def test_the_correlation_secret_is_created_once_and_kept(tmp_path):
    from dr_vtn_dispatcher.store import Store, sqlite_url

    url = sqlite_url(str(tmp_path / "s.sqlite"))
    first, second = Store(url), Store(url)
    try:
        secret = first.secret("correlation-hmac")
        assert len(secret) == 32 and second.secret("correlation-hmac") == secret
        assert first.secret("other") != secret
    finally:
        first.close()
        second.close()
