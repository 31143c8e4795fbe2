"""dr.web's live state (telemetry from the bus for the dashboard and the chart) and its configuration."""

from __future__ import annotations

import pytest

from dr_web.config import ConfigError, WebConfig
from dr_web.livestate import LiveState

T0 = 1_800_000_000.0


def tel(ven: str, ts: float, used: float, baseline: float | None = None, shed: float = 0.0, **extra):
    out = {"venId": ven, "ts": ts, "usedPowerKw": used, "shedPowerKw": shed, **extra}
    if baseline is not None:
        out["baselinePowerKw"] = baseline
    return out


def test_per_ven_topic_names_the_ven_and_tolerant_fields_parse():
    live = LiveState()
    assert live.on_message("dr/telemetry/ven-a", {"used_power_kw": "4.5", "ts": T0, "event_id": "evt-1"}) == 0
    assert live.latest["ven-a"]["usedPowerKw"] == 4.5 and live.latest["ven-a"]["eventId"] == "evt-1"
    assert live.series("ven-a")[0]["usedPowerKw"] == 4.5


def test_batch_items_are_applied_and_bad_ones_counted_without_losing_the_rest():
    live = LiveState()
    refused = live.on_message("dr/batch/telemetry", {"items": [tel("a", T0, 1.0), {"venId": "b", "usedPowerKw": "x"},
                                                               "junk", tel("c", T0, 2.0)]})
    assert refused == 2 and live.received == 2 and live.rejected == 2
    assert set(live.latest) == {"a", "c"}
    assert "usedPowerKw" in live.last_error or "expected an object" in live.last_error
    assert live.on_message("dr/batch/telemetry", ["not", "a", "batch"]) == 1
    assert "items" in live.last_error


class Clock:
    def __init__(self, now: float = T0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def test_site_series_sums_vens_heard_recently_against_baseline():
    clock = Clock()
    live = LiveState(stale_s=30.0, clock=clock)
    live.on_items([tel("a", T0, 3.0, baseline=5.0, shed=2.0)])
    clock.now = T0 + 2
    live.on_items([tel("b", T0 + 2, 1.0)])  # no baseline reported: used + shed stands in
    clock.now = T0 + 40
    live.on_items([tel("a", T0 + 40, 4.0, baseline=5.0, shed=1.0)])  # b not heard for 38 s
    site = live.site_series()
    assert [(p["usedPowerKw"], p["baselinePowerKw"], p["shedPowerKw"], p["vens"]) for p in site] == [
        (3.0, 5.0, 2.0, 1), (4.0, 6.0, 2.0, 2), (4.0, 5.0, 1.0, 1)]
    assert live.site_series(since=T0 + 10) == site[2:]
    assert live.is_fresh("a") and not live.is_fresh("b") and not live.is_fresh("z")


def test_site_series_is_in_receipt_time_whatever_the_vens_clocks_say():
    """A VEN an hour ahead, or a backfilled batch of history, does not bend the site chart."""
    clock = Clock()
    live = LiveState(clock=clock)
    live.on_items([tel("ahead", T0 + 3600, 2.0)])
    clock.now = T0 + 5
    live.on_message("dr/batch/telemetry", {"items": [tel("late", T0 - 300 + 5 * i, 1.0) for i in range(60)]})
    clock.now = T0 + 10
    live.on_items([tel("ahead", T0 + 3610, 2.5)])
    assert [(p["ts"], p["usedPowerKw"], p["vens"]) for p in live.site_series()] == [
        ("2027-01-15T08:00:00.000Z", 2.0, 1), ("2027-01-15T08:00:05.000Z", 3.0, 2),
        ("2027-01-15T08:00:10.000Z", 3.5, 2)]
    assert len(live.series("late")) == 60  # the VEN's own series keeps its times


def test_site_points_closer_than_the_resolution_merge():
    clock = Clock()
    live = LiveState(site_resolution_s=1.0, clock=clock)
    live.on_items([tel("a", T0, 1.0)])
    clock.now = T0 + 0.5
    live.on_items([tel("b", T0, 2.0)])
    clock.now = T0 + 1.6
    live.on_items([tel("c", T0, 3.0)])
    assert [(p["usedPowerKw"], p["vens"]) for p in live.site_series()] == [(3.0, 2), (6.0, 3)]


def test_a_batch_is_one_site_point():
    clock = Clock()
    live = LiveState(clock=clock)
    live.on_message("dr/batch/telemetry", {"items": [tel(f"v{i}", T0 + i * 0.01, 1.0) for i in range(50)]})
    assert [(p["usedPowerKw"], p["vens"]) for p in live.site_series()] == [(50.0, 50)]


def test_histories_are_bounded():
    clock = Clock()
    live = LiveState(history_len=5, ven_history_len=3, clock=clock)
    for i in range(20):
        clock.now = T0 + 2 * i
        live.on_items([tel("a", T0 + 2 * i, float(i))])
    assert len(live.site) == 5 and len(live.history["a"]) == 3
    assert [p["usedPowerKw"] for p in live.series("a")] == [17.0, 18.0, 19.0]


def test_late_telemetry_keeps_the_series_in_order_and_the_latest_as_it_is():
    live = LiveState(ven_history_len=3)
    live.on_items([tel("a", T0 + 10, 1.0)])
    live.on_items([tel("a", T0 + 20, 2.0)])
    live.on_items([tel("a", T0 + 15, 9.0)])
    assert [p["usedPowerKw"] for p in live.series("a")] == [1.0, 9.0, 2.0]
    assert live.latest["a"]["usedPowerKw"] == 2.0
    live.on_items([tel("a", T0 + 5, 7.0)])  # older than everything kept in a full series: dropped
    assert [p["usedPowerKw"] for p in live.series("a")] == [1.0, 9.0, 2.0]
    live.on_items([tel("a", T0 + 12, 8.0)])
    assert [p["usedPowerKw"] for p in live.series("a")] == [8.0, 9.0, 2.0]


def test_config_defaults_and_values():
    config = WebConfig.from_mapping({"port": 0, "api_token": "long-enough", "refresh_s": 1, "rpc_timeout_s": 3})
    assert (config.host, config.port, config.token(), config.refresh_s, config.rpc_timeout_s) == \
        ("127.0.0.1", 0, "long-enough", 1.0, 3.0)
    assert WebConfig.from_mapping(None) == WebConfig()


@pytest.mark.parametrize("raw,key", [({"port": "eighty"}, "port"), ({"port": 70000}, "port"),
                                     ({"host": "example.org"}, "host"), ({"api_token": "short"}, "api_token"),
                                     ({"api_token": " spaced-token "}, "api_token"), ({"refresh_s": 0}, "refresh_s"),
                                     ({"rpc_timeout_s": True}, "rpc_timeout_s"),
                                     ({"vtn_identity": "bad identity"}, "vtn_identity"), ({"colour": 1}, "colour"),
                                     ({"telemetry_history": 0}, "telemetry_history")])
def test_bad_config_names_the_key(raw, key):
    with pytest.raises(ConfigError, match=key):
        WebConfig.from_mapping(raw)


def test_config_must_be_an_object():
    with pytest.raises(ConfigError, match="expected an object"):
        WebConfig.from_mapping(["port", 1])  # type: ignore[arg-type]
