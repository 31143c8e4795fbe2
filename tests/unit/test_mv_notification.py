"""The notification time of an event reaches ISO-NE's adjustment: dr.vtn publishes each event's state (with its
`createdAt`) on dr/event/<eventId>, the historian records it through its DR intake, and event_performance places
notification-relative adjustment windows from it.

Hand-checkable case (as in test_mv_presets): the 10 most recent weekdays read 11..20 kW all day (mean 15.5);
the event day reads 15.5 kW except 13:15-13:30, which reads 20 kW. Event 14:00-16:00 UTC, created at 13:30:
ISO-NE's window is 13:15-13:30 (20 kW), an additive adjustment of +4.5 kW, a baseline of 20 kW, 40 kWh. Without
a recorded notification the window is 13:45-14:00 (15.5 kW): no adjustment, 31 kWh. The accuracy backcast
notifies each pretended event as long before its start as the recorded event was.
"""

from __future__ import annotations

from datetime import date, datetime, timedelta, timezone

import pytest
from dr_historian.dr_records import convert
from dr_historian.mv.accuracy import backcast, event_accuracy
from dr_historian.mv.calendar import HolidayCalendar
from dr_historian.mv.notification import event_status_topic, notification_time
from dr_historian.mv.performance import MvOptions, event_performance, used_power_topic
from dr_historian.mv.presets import PRESETS
from dr_historian.mv.series import LoadSeries, Window
from dr_historian.store import Point, Store
from dr_historian.writer import Writer
from dr_vtn_dispatcher.model import Event
from zoneinfo import ZoneInfo

UTC = timezone.utc
EVENT_DAY = date(2026, 7, 15)
START = datetime(2026, 7, 15, 14, tzinfo=UTC)
END = START + timedelta(hours=2)
CREATED = datetime(2026, 7, 15, 13, 30, tzinfo=UTC)
OPTIONS = MvOptions(methods=("isone-10weekday",), interval_minutes=60, timezone="UTC")


def levels() -> dict[date, float]:
    out, k = {}, 0
    for n in range(1, 46):
        day = EVENT_DAY - timedelta(days=n)
        if day.weekday() >= 5:
            out[day] = 1000.0
        else:
            k += 1
            out[day] = 10.0 + k
    return out


def meter_points(topic: str) -> list[Point]:
    points = []
    for day, level in levels().items():
        points += [Point(topic, datetime(day.year, day.month, day.day, tzinfo=UTC) + timedelta(minutes=15 * q), level)
                   for q in range(96)]
    for q in range(96):
        ts = datetime(2026, 7, 15, tzinfo=UTC) + timedelta(minutes=15 * q)
        points.append(Point(topic, ts, 20.0 if (ts.hour, ts.minute) == (13, 15) else 15.5))
    return points


def status_message(event_id: str, created: datetime) -> dict:
    """What dr.vtn publishes on dr/event/<eventId>: its event's API form."""
    event = Event(event_id, START.timestamp(), END.timestamp(), 2.0, created_at=created.timestamp(),
                  updated_at=created.timestamp())
    return event.to_dict()


@pytest.fixture
def store(tmp_path):
    store = Store(f"sqlite:///{tmp_path / 'h.sqlite'}")
    store.setup()
    store.write(meter_points(used_power_topic("ven-a")))
    writer = Writer(store)
    for event_id in ("ev-n", "ev-silent"):
        command = {"op": "event", "correlationId": f"c-{event_id}", "eventId": event_id, "venId": "ven-a",
                   "requestedReductionKw": 2.0, "startTime": START.isoformat(), "until": END.isoformat(),
                   "issuedAt": START.isoformat()}
        assert writer.publish([{"timestamp": START, "topic": "dr/cmd/ven-a", "value": command, "meta": {}}])
    yield store
    store.dispose()


def record(store: Store, topic: str, message: dict, at: datetime) -> None:
    """A bus message through the historian's DR intake (dr_records.convert), as the agent records it."""
    conversion = convert(topic, {"TimeStamp": at.isoformat()}, message, at)
    assert not conversion.errors
    store.write(conversion.points)


def test_the_notification_time_moves_isone_adjustment_window(store):
    record(store, event_status_topic("ev-n"), status_message("ev-n", CREATED), CREATED)
    record(store, event_status_topic("ev-n"), {**status_message("ev-n", CREATED), "status": "active"}, START)
    assert notification_time(store, "ev-n", START, END) == CREATED
    report = event_performance(store, "ev-n", OPTIONS)
    assert report["notification"] == CREATED.isoformat()
    isone = report["vens"]["ven-a"]["methods"]["isone-10weekday"]
    assert isone["baseline"]["adjustment"] == pytest.approx(4.5)
    assert isone["baselineKwh"] == pytest.approx(40.0)

    silent = event_performance(store, "ev-silent", OPTIONS)  # no status message recorded for it
    assert silent["notification"] is None
    plain = silent["vens"]["ven-a"]["methods"]["isone-10weekday"]
    assert plain["baseline"]["adjustment"] == pytest.approx(0.0) and plain["baselineKwh"] == pytest.approx(31.0)
    assert any("notification" in note for note in plain["baseline"]["notes"])


def test_only_the_events_own_topic_and_times_not_after_its_start_count(store):
    # another event's message on this topic, a creation after the start, an unparsable time: none is a notification
    record(store, event_status_topic("ev-n"), status_message("ev-other", CREATED - timedelta(hours=3)), CREATED)
    record(store, event_status_topic("ev-n"), status_message("ev-n", START + timedelta(minutes=5)), START)
    record(store, event_status_topic("ev-n"), {"eventId": "ev-n", "createdAt": "yesterday"}, CREATED)
    assert notification_time(store, "ev-n", START, END) is None
    # a notification older than the look-back is not looked for; a day-ahead one is found
    old = START - timedelta(days=8)
    record(store, event_status_topic("ev-n"), status_message("ev-n", old), old)
    assert notification_time(store, "ev-n", START, END) is None
    day_ahead = START - timedelta(hours=20)
    record(store, event_status_topic("ev-n"), status_message("ev-n", day_ahead), day_ahead)
    assert notification_time(store, "ev-n", START, END) == day_ahead


def ramp_series(days: int = 80) -> LoadSeries:
    """Day d reads its own level L_d all day, except 13:45-14:00, which reads L_d + r_d (a pre-event ramp of its
    own size): ISO-NE's window at 13:45-14:00 carries r_d - mean(r) into the baseline; at 12:45-13:00 (an event
    notified an hour ahead) the adjustment is exactly L_d - mean(L) and the baseline exactly L_d."""
    points = {}
    for n in range(days):
        day = EVENT_DAY - timedelta(days=n)
        level, ramp = 10.0 + (n * 7) % 5, float((n * 3) % 4)
        for q in range(96):
            ts = datetime(day.year, day.month, day.day, tzinfo=UTC) + timedelta(minutes=15 * q)
            points[ts] = level + ramp if (ts.hour, ts.minute) == (13, 45) else level
    return LoadSeries.from_interval_means(points, 900)


def test_the_backcast_notifies_each_pretended_event_as_early_as_the_event_was():
    isone = [PRESETS["isone-10weekday"]]
    calendar = HolidayCalendar(nerc=False)
    early = backcast(ramp_series(), isone, Window(START, END), ZoneInfo("UTC"), 3600, 20, (), calendar,
                     notice=timedelta(hours=1))
    late = backcast(ramp_series(), isone, Window(START, END), ZoneInfo("UTC"), 3600, 20, (), calendar)
    assert early["backcastDays"] == late["backcastDays"] == 20
    assert early["methods"]["isone-10weekday"]["relativeRmse"] == pytest.approx(0.0, abs=1e-12)
    assert late["methods"]["isone-10weekday"]["relativeRmse"] > 0.02


def test_event_accuracy_uses_the_recorded_notice(store):
    record(store, event_status_topic("ev-n"), status_message("ev-n", CREATED), CREATED)
    options = MvOptions(methods=("isone-10weekday",), interval_minutes=60, timezone="UTC")
    report = event_accuracy(store, "ev-n", options, days=5, methods=["isone-10weekday"])
    assert report["notification"] == CREATED.isoformat()
    assert event_accuracy(store, "ev-silent", options, days=5, methods=["isone-10weekday"])["notification"] is None
