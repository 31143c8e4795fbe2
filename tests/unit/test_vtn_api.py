"""dr.vtn's API convention (result, or {"error", "field", "code"} naming the field, nothing written) and
its configuration model."""

import pytest
from dr_vtn_dispatcher.config import ConfigError, parse_config
from dr_vtn_dispatcher.errors import api_call

from tests.unit.test_vtn_service import T0, Harness, iso


@pytest.fixture
def h(tmp_path):
    harness = Harness(tmp_path)
    yield harness
    harness.svc.stop()
    harness.store.close()


def call(h, method, *args, **kwargs):
    return api_call(getattr(h.svc, method), *args, **kwargs)


@pytest.mark.parametrize("payload, field", [
    ({"durationS": 60, "requestedReductionKw": 1}, "startTime"),
    ({"startTime": "tomorrow", "durationS": 60, "requestedReductionKw": 1}, "startTime"),
    ({"startTime": iso(T0 + 10), "requestedReductionKw": 1}, "endTime"),
    ({"startTime": iso(T0 + 10), "endTime": iso(T0 + 5), "requestedReductionKw": 1}, "endTime"),
    ({"startTime": iso(T0 + 10), "durationS": 60}, "requestedReductionKw"),
    ({"startTime": iso(T0 + 10), "durationS": 60, "requestedReductionKw": -1}, "requestedReductionKw"),
    ({"startTime": iso(T0 + 10), "durationS": 60, "level": 7}, "level"),
    ({"startTime": iso(T0 + 10), "durationS": 60, "requestedReductionKw": 1, "venIds": ["ghost"]}, "venIds"),
    ({"startTime": iso(T0 - 100), "durationS": 60, "requestedReductionKw": 1, "allVens": True}, "endTime"),
    ({"startTime": iso(T0 + 10), "durationS": 60, "requestedReductionKw": 1, "randomizeStartS": 60, "allVens": True},
     "randomizeStartS"),
    ({"startTime": iso(T0 + 10), "durationS": 60, "requestedReductionKw": 1, "priority": "high"}, "priority"),
    ("not an object", "<payload>"),
])
def test_create_event_errors_name_the_field_and_write_nothing(h, payload, field):
    h.register("a")
    result = call(h, "create_event", payload)
    assert result["field"] == field and result["code"] == "invalid"
    assert result["error"].startswith(f"{field}: ")
    assert call(h, "list_events") == [] and h.svc.events == {}
    assert h.sender.events == []


def test_event_ids_conflict_and_unknown_ids_are_not_found(h):
    h.register("a")
    created = call(h, "create_event", {"eventId": "evt-1", "startTime": iso(T0 + 60), "durationS": 60, "kw": 2,
                                          "allVens": True})
    assert created["eventId"] == "evt-1" and created["requestedReductionKw"] == 2.0
    again = call(h, "create_event", {"eventId": "evt-1", "startTime": iso(T0 + 60), "durationS": 60, "kw": 2,
                                          "allVens": True})
    assert again == {"error": "eventId: event 'evt-1' already exists", "field": "eventId", "code": "conflict"}
    for method in ("get_event", "event_metrics", "stop_event", "cancel_event"):
        assert call(h, method, "evt-nope")["code"] == "not_found"
    assert call(h, "update_event", "evt-nope", {"kw": 1})["code"] == "not_found"
    assert call(h, "get_event", 42)["code"] == "invalid"
    assert call(h, "stop_event", "evt-1")["status"] == "cancelled"
    assert call(h, "update_event", "evt-1", {"kw": 1})["code"] == "conflict"
    assert call(h, "cancel_event", "evt-1")["code"] == "conflict"


def test_wrong_rpc_arguments_are_an_error_not_a_crash(h):
    result = call(h, "create_event")
    assert result["field"] == "<arguments>" and result["code"] == "invalid"


def test_update_event_merges_variants_and_validates_the_result(h):
    h.register("a")
    event = h.event(60, 600, requestedReductionKw=4.0)
    changed = call(h, "update_event", event["eventId"], {"duration": 120})
    assert changed["durationS"] == 120 and changed["modificationNumber"] == 1
    simple = call(h, "update_event", event["eventId"], {"level": 1})
    assert simple["signal"] == "SIMPLE" and simple["requestedReductionKw"] == 1.0
    bad = call(h, "update_event", event["eventId"], {"endTime": iso(T0 + 30)})
    assert bad["field"] == "endTime" and bad["code"] == "invalid"
    assert call(h, "update_event", event["eventId"], {})["field"] == "<payload>"
    assert call(h, "get_event", event["eventId"])["modificationNumber"] == 2  # the refused ones changed nothing


def test_ven_registry(h):
    created = call(h, "register_ven", {"id": "home-1", "name": "Home", "site": "north", "groupId": "g1",
                                       "maximumShedKw": "3.5", "transport": "MQTT", "status": "online"})
    assert created["created"] is True and created["maxShedKw"] == 3.5 and created["transport"] == "mqtt"
    assert created["status"] == "online"
    again = call(h, "register_ven", {"venId": "home-1", "transport": "bus"})
    assert again["created"] is False and again["transport"] == "bus"
    assert call(h, "register_ven", {"venId": "x", "transport": "carrier-pigeon"})["field"] == "transport"
    assert call(h, "register_ven", {"name": "no id"})["field"] == "venId"
    updated = call(h, "update_ven", "home-1", {"maxShedKw": 9})
    assert updated["maxShedKw"] == 9 and updated["name"] is None
    assert call(h, "update_ven", "ghost", {"maxShedKw": 1})["code"] == "not_found"
    assert call(h, "update_ven", "home-1", {"venId": "other"})["field"] == "venId"
    call(h, "register_ven", {"venId": "home-2", "group": "g2", "status": "offline"})
    assert [v["venId"] for v in call(h, "list_vens", status="offline")] == ["home-2"]
    assert [v["venId"] for v in call(h, "list_vens", group="g2")] == ["home-2"]
    assert call(h, "list_vens", status="sleepy")["field"] == "status"
    h.clock.advance(31)
    assert call(h, "get_ven", "home-1")["status"] == "offline"  # registered online, then silent
    assert call(h, "list_events", limit=0)["field"] == "limit"
    assert call(h, "list_events", status="weird")["field"] == "status"


def test_health_reports_counts_and_counters(h):
    h.register("a")
    h.event(0, 60)
    health = h.svc.health()
    assert health["status"] == "ok" and health["database"] == "sqlite"
    assert health["vens"] == 1 and health["activeEvents"] == 1 and health["pendingCommands"] == 1
    assert health["counters"]["localCommandsSent"] == 1


def test_config_model():
    config = parse_config({"allocation": "weighted", "simple_levels_kw": [0, 2, 4, 8],
                           "programs": {"p1": {"allocation": "equal"}}, "retryInitialS": "0.5"})
    assert config.default_program.allocation == "weighted"
    assert config.program("p1").allocation == "equal" and config.program("p1").simple_levels_kw == (0, 2, 4, 8)
    assert config.program("unknown") is config.default_program
    assert [config.retry_delay(n) for n in (1, 2, 3, 10)] == [0.5, 1.0, 2.0, 30.0]
    for raw, key in [({"allocation": "random"}, "allocation"), ({"simpleLevelsKw": [1, 2]}, "simpleLevelsKw"),
                     ({"programs": {"p": {"allocation": "x"}}}, "programs.p.allocation"),
                     ({"programs": {"p": {"colour": "red"}}}, "programs.p.colour"),
                     ({"offlineTimeoutS": 0}, "offlineTimeoutS"), ({"retryMaxS": 0.1, "retryInitialS": 1}, "retryMaxS"),
                     ({"surprise": 1}, "surprise")]:
        with pytest.raises(ConfigError) as info:
            parse_config(raw)
        assert info.value.key == key, raw
