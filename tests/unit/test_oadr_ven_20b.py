"""The OpenADR 2.0b link (dr_oadr_ven.oadr20b) against openleadr's own VTN, `OpenADRServer`, started here on a
free port in a thread of its own: registration, an event with SIMPLE and LOAD_DISPATCH signals handed over as a
VtnEvent, the opt-in the VTN receives, TELEMETRY_USAGE reports, a cancellation, an opt-out, later opt changes
and hostile events refused. The link runs in its own thread with its own asyncio loop; the "agent loop" here is
a thread that runs what the link hands over, as the agent's gevent loop does."""

from __future__ import annotations

import asyncio
import queue
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import replace
from datetime import datetime, timedelta, timezone
from functools import partial
from typing import Any

import pytest
from openleadr import OpenADRServer, enums, objects, utils

from dr_common.config import ConfigError, load_model
from dr_oadr_ven.oadr20b import Oadr20bLink, Oadr20bSettings, Telemetry20b
from dr_oadr_ven.oadr20b_events import EventLimits, EventRefused, event_from_oadr20b
from dr_oadr_ven.vtnevent import VtnEvent

pytestmark = pytest.mark.filterwarnings("ignore:It is recommended to use web.AppKey")   # openleadr's server

VEN_ID = "ven-20b-test"
WAIT_S = 8.0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class OpenleadrVtn:
    """openleadr's OpenADRServer in a thread with its own loop; what it receives lands in queues."""

    def __init__(self, ven_id: str = VEN_ID, poll_s: int = 1, report_s: int = 1, port: int | None = None) -> None:
        self.ven_id = ven_id
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}/OpenADR2/Simple/2.0b"
        self.opts: queue.Queue[tuple[str, str]] = queue.Queue()
        self.reports: queue.Queue[tuple[str, datetime, float]] = queue.Queue()
        self.report_offers: queue.Queue[list[str]] = queue.Queue()
        self.registrations: queue.Queue[str] = queue.Queue()
        self.registration_ven_ids: list[str | None] = []    # the venID each registration carried
        self._poll_s = poll_s
        self._report_s = report_s
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._main, name="openleadr-vtn", daemon=True)
        self.server: OpenADRServer | None = None

    def __enter__(self) -> OpenleadrVtn:
        self._thread.start()
        assert self._ready.wait(10), "openleadr VTN did not start"
        return self

    def __exit__(self, *exc: object) -> None:
        if self._loop.is_closed() or not self._thread.is_alive():
            return
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)

    def _main(self) -> None:
        asyncio.set_event_loop(self._loop)
        self.server = self._server()
        self.server.add_handler("on_create_party_registration", self._on_registration)
        self.server.add_handler("on_register_report", self._on_register_report)
        self._loop.run_until_complete(self.server.run())
        self._ready.set()
        self._loop.run_forever()
        self._loop.run_until_complete(self.server.stop())
        self._loop.close()

    def _server(self) -> OpenADRServer:
        return OpenADRServer(vtn_id="TEST_VTN", http_port=self.port, http_host="127.0.0.1",
                             requested_poll_freq=timedelta(seconds=self._poll_s), show_fingerprint=False)

    def _on_registration(self, info: dict[str, Any]) -> tuple[str, str]:
        self.registration_ven_ids.append(info.get("ven_id"))
        self.registrations.put(info["ven_name"])
        return self.ven_id, f"reg-{info['ven_name']}"

    def _on_register_report(self, report: dict[str, Any]) -> list[tuple[str, Callable, timedelta]]:
        r_ids = [rd["r_id"] for rd in report["report_descriptions"]]
        self.report_offers.put([report["report_name"], *r_ids])
        return [(r_id, partial(self._on_values, r_id), timedelta(seconds=self._report_s)) for r_id in r_ids]

    def _on_values(self, r_id: str, values: list[tuple[datetime, float]]) -> None:
        for dt, value in values:
            self.reports.put((r_id, dt, value))

    def _on_opt(self, ven_id: str, event_id: str, opt_type: str) -> None:
        self.opts.put((event_id, opt_type))

    def call(self, fn: Callable[[], Any]) -> Any:
        """Run `fn` in the VTN's loop thread (the server's queues are not thread-safe) and return its result."""
        async def run() -> Any:
            return fn()
        return asyncio.run_coroutine_threadsafe(run(), self._loop).result(5)

    def add_event(self, event: objects.Event) -> None:
        def add() -> None:
            tolerance = event.active_period.tolerance
            self.server.add_raw_event(ven_id=self.ven_id, event=event, callback=self._on_opt)
            if tolerance is not None:   # add_raw_event rebuilds the active period (a dict) without it
                event.active_period["tolerance"] = tolerance
        self.call(add)

    def expect_opt(self, event_id: str) -> None:
        """openleadr calls an event's callback once; arm it again for the next answer to `event_id`."""
        def arm() -> None:
            event = utils.find_by(self.server.events[self.ven_id], "event_descriptor.event_id", event_id)
            self.server.event_callbacks[event_id] = (event, self._on_opt)
        self.call(arm)

    def cancel(self, event_id: str) -> None:
        self.call(lambda: self.server.cancel_event(self.ven_id, event_id))

    def modify(self, event_id: str, change: Callable[[objects.Event], None]) -> None:
        def run() -> None:
            event = utils.find_by(self.server.events[self.ven_id], "event_descriptor.event_id", event_id)
            change(event)
            utils.increment_event_modification_number(event)
            self.server.events_updated[self.ven_id] = True
        self.call(run)


def make_event(event_id: str, signals: list[objects.EventSignal], start: datetime | None = None,
               market_context: str = "oadr://summer-peak", startafter_s: float | None = None,
               ven_id: str = VEN_ID) -> objects.Event:
    start = start or datetime.now(timezone.utc) + timedelta(seconds=60)
    end = max(i.dtstart + i.duration for s in signals for i in s.intervals)
    tolerance = {"startafter": timedelta(seconds=startafter_s)} if startafter_s is not None else None
    return objects.Event(
        event_descriptor=objects.EventDescriptor(event_id=event_id, modification_number=0, priority=1,
                                                 market_context=market_context, event_status="far"),
        event_signals=signals, targets=[{"ven_id": ven_id}],
        active_period=objects.ActivePeriod(dtstart=start, duration=end - start, tolerance=tolerance))


def signal(name: str, signal_type: str, start: datetime, values: list[float], minutes: float = 5,
           measurement: objects.Measurement | None = None) -> objects.EventSignal:
    step = timedelta(minutes=minutes)
    return objects.EventSignal(
        signal_name=name, signal_type=signal_type, signal_id=f"{name}-{signal_type}", measurement=measurement,
        intervals=[objects.Interval(dtstart=start + i * step, duration=step, signal_payload=v)
                   for i, v in enumerate(values)])


WATTS = replace(enums.MEASUREMENTS.REAL_POWER, scale="none")


class AgentSide:
    """Stands for the agent: a loop thread running what the link hands over, a decision, telemetry."""

    def __init__(self) -> None:
        self.inbox: queue.SimpleQueue[Callable[[], None]] = queue.SimpleQueue()
        self.events: queue.Queue[VtnEvent] = queue.Queue()
        self.opt_out: set[str] = set()
        self.loop_thread_ids: set[int] = set()
        self.telemetry = Telemetry20b(power_kw=12.5, baseline_kw=15.0)
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while True:
            fn = self.inbox.get()
            if fn is None:
                return
            fn()

    def on_event(self, event: VtnEvent) -> None:
        self.loop_thread_ids.add(threading.get_ident())
        self.events.put(event)

    def decide(self, event: VtnEvent) -> str:
        return "optOut" if event.event_id in self.opt_out else "optIn"

    def stop(self) -> None:
        self.inbox.put(None)
        self._thread.join(5)


def get(q: queue.Queue, what: str, timeout: float = WAIT_S) -> Any:
    try:
        return q.get(timeout=timeout)
    except queue.Empty:
        pytest.fail(f"nothing received within {timeout} s: {what}")


@pytest.fixture
def vtn():
    with OpenleadrVtn() as server:
        yield server


@pytest.fixture
def link(vtn):
    agent = AgentSide()
    settings = Oadr20bSettings(ven_name="building-7", vtn_url=vtn.url, max_abs_kw=50.0)
    lnk = Oadr20bLink(settings, on_event=agent.on_event, decide=agent.decide, telemetry=lambda: agent.telemetry)
    lnk.start(agent.inbox.put)
    assert lnk.wait_registered(WAIT_S), f"not registered: {lnk.status()}"
    yield lnk, agent
    assert lnk.stop(10), "link thread did not stop"
    agent.stop()


def test_registration_and_telemetry_usage_reports(vtn, link):
    lnk, agent = link
    assert get(vtn.registrations, "registration") == "building-7"
    assert get(vtn.report_offers, "report offer") == ["METADATA_TELEMETRY_USAGE", "power", "baseline"]
    seen: dict[str, float] = {}
    deadline = time.monotonic() + WAIT_S
    while len(seen) < 2 and time.monotonic() < deadline:
        r_id, dt, value = get(vtn.reports, "TELEMETRY_USAGE values")
        assert abs((datetime.now(timezone.utc) - dt).total_seconds()) < 10
        seen[r_id] = value
    assert seen == {"power": 12.5, "baseline": 15.0}
    agent.telemetry = Telemetry20b(power_kw=9.75, baseline_kw=None)   # no baseline: only power is reported
    deadline = time.monotonic() + WAIT_S
    while time.monotonic() < deadline:
        r_id, _, value = get(vtn.reports, "updated power value")
        if value == 9.75:
            assert r_id == "power"
            break
    else:
        pytest.fail("the new power value never reached the VTN")
    status = lnk.status()
    assert status["registered"] and status["venId"] == VEN_ID and status["registrationId"] == "reg-building-7"
    assert status["counts"]["reportsSent"] >= 2 and status["counts"]["reportValues"] >= 3
    assert status["up"] and 0 <= status["lastContactAgeS"] < 5


def test_no_report_is_sent_before_there_is_telemetry(vtn, caplog):
    agent = AgentSide()
    current: list[Telemetry20b] = []
    lnk = Oadr20bLink(Oadr20bSettings(ven_name="building-10", vtn_url=vtn.url), agent.on_event, agent.decide,
                      lambda: current[0] if current else None)
    lnk.start(agent.inbox.put)
    try:
        assert lnk.wait_registered(WAIT_S)
        deadline = time.monotonic() + WAIT_S
        while lnk.status()["counts"]["reportsSkipped"] < 2 and time.monotonic() < deadline:
            time.sleep(0.2)
        counts = lnk.status()["counts"]
        assert counts["reportsSkipped"] >= 2 and counts["reportsSent"] == 0 and vtn.reports.empty()
        current.append(Telemetry20b(power_kw=3.25, baseline_kw=4.0))
        assert get(vtn.reports, "the first report with telemetry")[2] in (3.25, 4.0)
        assert not [r for r in caplog.records if r.levelname == "ERROR" and r.name == "openleadr"]
    finally:
        assert lnk.stop(10)
        agent.stop()


def test_a_restart_registers_as_the_venid_the_vtn_assigned(vtn):
    agent = AgentSide()
    enrolments: queue.Queue[dict[str, Any]] = queue.Queue()
    settings = Oadr20bSettings(ven_name="building-9", vtn_url=vtn.url)
    first = Oadr20bLink(settings, agent.on_event, agent.decide, lambda: None, on_enrolled=enrolments.put)
    first.start(agent.inbox.put)
    enrolment = get(enrolments, "the enrolment handed to the agent")
    assert enrolment == {"protocol": "oadr20b", "venId": VEN_ID, "registrationId": "reg-building-9",
                         "vtnUrl": vtn.url}
    assert first.stop(10)
    second = Oadr20bLink(settings, agent.on_event, agent.decide, lambda: None, enrolment=enrolment)
    second.start(agent.inbox.put)
    assert second.wait_registered(WAIT_S)
    assert second.stop(10)
    other_vtn = {**enrolment, "vtnUrl": "http://127.0.0.1:1/OpenADR2/Simple/2.0b"}   # or a 3.1 enrolment
    for stale in (other_vtn, {"venId": "oadr3-ven-object-id", "protocol": "oadr31", "vtnUrl": vtn.url}):
        third = Oadr20bLink(settings, agent.on_event, agent.decide, lambda: None, enrolment=stale)
        third.start(agent.inbox.put)
        assert third.wait_registered(WAIT_S)
        assert third.stop(10)
    agent.stop()
    assert vtn.registration_ven_ids == [None, VEN_ID, None, None]   # the VEN it was, not a new one


def test_event_with_simple_and_load_dispatch_is_handed_over_and_opted_in(vtn, link):
    lnk, agent = link
    start = (datetime.now(timezone.utc) + timedelta(seconds=60)).replace(microsecond=0)
    vtn.add_event(make_event("ev-1", [signal("SIMPLE", "level", start, [1, 2]),
                                      signal("LOAD_DISPATCH", "delta", start, [-2500, -4000], measurement=WATTS)],
                             start=start, startafter_s=30))
    event = get(agent.events, "VtnEvent ev-1")
    assert get(vtn.opts, "opt for ev-1") == ("ev-1", "optIn")
    assert event.event_id == "ev-1" and event.modification == 0 and not event.cancelled
    assert event.protocol == "oadr20b" and event.program_id == "oadr://summer-peak" and event.priority == 1
    assert event.randomize_start_s == 30.0
    got = [(iv.signal, iv.start, iv.duration_s, iv.value) for iv in event.intervals]
    five = timedelta(minutes=5)
    assert got == [("LOAD_DISPATCH", start, 300.0, -2.5), ("SIMPLE", start, 300.0, 1.0),
                   ("LOAD_DISPATCH", start + five, 300.0, -4.0), ("SIMPLE", start + five, 300.0, 2.0)]
    assert agent.loop_thread_ids and threading.get_ident() not in agent.loop_thread_ids
    # a modification is a new revision, handed over again
    vtn.expect_opt("ev-1")
    vtn.modify("ev-1", lambda ev: setattr(ev.event_signals[0].intervals[0], "signal_payload", 3))
    revised = get(agent.events, "modified ev-1")
    assert revised.modification == 1 and revised.intervals[1].value == 3.0
    assert get(vtn.opts, "opt for the modification") == ("ev-1", "optIn")
    # the cancellation is handed over and acknowledged
    vtn.expect_opt("ev-1")
    vtn.cancel("ev-1")
    cancelled = get(agent.events, "cancellation of ev-1")
    assert cancelled.cancelled and cancelled.event_id == "ev-1" and cancelled.modification == 2
    assert cancelled.intervals == ()
    assert get(vtn.opts, "ack of the cancellation") == ("ev-1", "optIn")
    handoff = lnk.status()["handoff"]
    assert handoff["count"] == 3 and 0 < handoff["lastMs"] <= handoff["maxMs"] < 1000
    counts = lnk.status()["counts"]
    assert counts["optIn"] == 2 and counts["handed"] == 3 and counts["createdEventsSent"] >= 3


def test_opt_out_is_sent_and_nothing_handed_over(vtn, link):
    lnk, agent = link
    agent.opt_out.add("ev-out")
    start = datetime.now(timezone.utc) + timedelta(seconds=60)
    vtn.add_event(make_event("ev-out", [signal("SIMPLE", "level", start, [1])], start=start))
    assert get(vtn.opts, "opt for ev-out") == ("ev-out", "optOut")
    assert agent.events.empty()
    # a later opt-out (an override set on dr.ven) of an event the VEN opted in to
    vtn.add_event(make_event("ev-later", [signal("SIMPLE", "level", start, [2])], start=start))
    assert get(vtn.opts, "opt for ev-later") == ("ev-later", "optIn")
    assert get(agent.events, "ev-later").event_id == "ev-later"
    vtn.expect_opt("ev-later")
    assert lnk.report_opt("ev-later", "optOut")
    assert get(vtn.opts, "later opt-out") == ("ev-later", "optOut")
    assert not lnk.report_opt("ev-later", "optOut")       # sent once per change, not on every telemetry
    assert not lnk.report_opt("ev-later", "maybe") and not lnk.report_opt("never-seen", "optOut")
    vtn.expect_opt("ev-later")
    assert lnk.report_opt("ev-later", "optIn")            # the override ended
    assert get(vtn.opts, "opt-in again") == ("ev-later", "optIn")
    assert vtn.opts.empty()
    assert lnk.status()["counts"]["optOut"] == 1


@pytest.mark.parametrize("bad_signal, reason", [
    (lambda start: signal("LOAD_DISPATCH", "delta", start, [-1e9]), "absurd_value"),
    (lambda start: signal("x-custom", "level", start, [1]), "unknown_signal"),
    (lambda start: signal("ELECTRICITY_PRICE", "price", start, [0.3]), "unknown_signal"),
    (lambda start: signal("LOAD_DISPATCH", "setpoint", start, [40]), "unknown_signal"),
    (lambda start: signal("LOAD_DISPATCH", "delta", start, [-2], measurement=enums.MEASUREMENTS.ENERGY_REAL),
     "bad_unit"),
    (lambda start: signal("SIMPLE", "level", start, [1], minutes=60 * 24 * 30), "endless"),
])
def test_hostile_event_is_refused_with_an_opt_out(vtn, link, bad_signal, reason, caplog):
    lnk, agent = link
    start = datetime.now(timezone.utc) + timedelta(seconds=60)
    bad = bad_signal(start)
    minutes = sum(iv.duration.total_seconds() for iv in bad.intervals) / 60   # 2.0b: signals of equal length
    vtn.add_event(make_event("ev-bad", [signal("SIMPLE", "level", start, [1], minutes=minutes), bad], start=start))
    assert get(vtn.opts, "opt for the hostile event") == ("ev-bad", "optOut")
    status = lnk.status()
    assert status["rejects"]["byReason"] == {reason: 1} and status["counts"]["refused"] == 1
    assert agent.events.empty() and status["handoff"]["count"] == 0
    assert any("ev-bad refused (opt-out)" in r.getMessage() for r in caplog.records)


def test_refused_modification_of_an_opted_in_event_restores(vtn, link):
    lnk, agent = link
    start = datetime.now(timezone.utc) + timedelta(seconds=60)
    vtn.add_event(make_event("ev-2", [signal("LOAD_DISPATCH", "delta", start, [-3])], start=start))
    assert get(agent.events, "ev-2").intervals[0].value == -3.0
    assert get(vtn.opts, "opt for ev-2") == ("ev-2", "optIn")
    vtn.expect_opt("ev-2")
    vtn.modify("ev-2", lambda ev: setattr(ev.event_signals[0].intervals[0], "signal_payload", -5000))
    restore = get(agent.events, "cancellation after the refused change")
    assert restore.cancelled and restore.modification == 1
    assert get(vtn.opts, "opt for the refused change") == ("ev-2", "optOut")


def test_unreachable_vtn_is_retried_with_backoff_and_stop_joins():
    agent = AgentSide()
    port = free_port()
    settings = Oadr20bSettings(ven_name="building-8", vtn_url=f"http://127.0.0.1:{port}/OpenADR2/Simple/2.0b",
                               retry_initial_s=0.2, retry_max_s=0.4)
    lnk = Oadr20bLink(settings, on_event=agent.on_event, decide=agent.decide, telemetry=lambda: None)
    lnk.start(agent.inbox.put)
    time.sleep(1.5)
    attempts = lnk.status()["counts"]["registrationAttempts"]
    assert 3 <= attempts <= 8 and not lnk.status()["registered"] and not lnk.status()["up"]
    started = time.monotonic()
    assert lnk.stop(10)
    assert time.monotonic() - started < 5
    assert not any(t.name == "oadr20b-building-8" for t in threading.enumerate())
    agent.stop()


def test_stop_right_after_start_ends_the_thread():
    agent = AgentSide()
    settings = Oadr20bSettings(ven_name="building-11", vtn_url=f"http://127.0.0.1:{free_port()}/x")
    lnk = Oadr20bLink(settings, agent.on_event, agent.decide, lambda: None)
    lnk.start(agent.inbox.put)
    started = time.monotonic()
    assert lnk.stop(10) and time.monotonic() - started < 5
    assert not lnk.report_opt("any", "optOut")
    agent.stop()


def _raw(signals: list[dict[str, Any]], status: str = "far", **descriptor: Any) -> dict[str, Any]:
    start = datetime.now(timezone.utc) + timedelta(minutes=1)
    return {"event_descriptor": {"event_id": "e1", "modification_number": 0, "market_context": "oadr://a",
                                 "event_status": status, **descriptor},
            "active_period": {"dtstart": start, "duration": timedelta(minutes=10)}, "event_signals": signals}


def test_conversion_of_sequential_intervals_and_refusals():
    start_sig = {"signal_name": "SIMPLE", "signal_type": "level",
                 "intervals": [{"duration": timedelta(minutes=5), "signal_payload": 1},
                               {"duration": timedelta(minutes=5), "signal_payload": 2}]}
    raw = _raw([start_sig])
    event = event_from_oadr20b(raw, "v", EventLimits())
    begin = raw["active_period"]["dtstart"]
    assert [(iv.start, iv.value) for iv in event.intervals] == [(begin, 1.0), (begin + timedelta(minutes=5), 2.0)]
    with pytest.raises(EventRefused) as exc:
        event_from_oadr20b(raw, "v", EventLimits(market_contexts=("oadr://b",)))
    assert exc.value.reason == "not_enrolled" and exc.value.field == "event_descriptor.market_context"
    with pytest.raises(EventRefused) as exc:
        event_from_oadr20b({**raw, "targets_by_type": {"ven_id": ["other"]}}, "v", EventLimits())
    assert exc.value.reason == "not_targeted"
    nan = {**start_sig, "intervals": [{"duration": timedelta(minutes=5), "signal_payload": float("nan")}]}
    with pytest.raises(EventRefused) as exc:
        event_from_oadr20b(_raw([nan]), "v", EventLimits())
    assert exc.value.field == "event_signals[0].intervals[0].signal_payload"
    with pytest.raises(EventRefused) as exc:
        event_from_oadr20b(_raw([{**start_sig, "intervals": [{"signal_payload": 1}]}]), "v", EventLimits())
    assert exc.value.field == "event_signals[0].intervals[0].duration"
    level7 = {**start_sig, "intervals": [{"duration": timedelta(minutes=5), "signal_payload": 7}]}
    with pytest.raises(EventRefused) as exc:
        event_from_oadr20b(_raw([level7]), "v", EventLimits())
    assert exc.value.reason == "absurd_value"
    cancelled = event_from_oadr20b(_raw([{"signal_name": "x-unknown"}], status="cancelled"), "v", EventLimits())
    assert cancelled.cancelled and cancelled.intervals == ()
    far = _raw([start_sig])
    far["active_period"]["dtstart"] += timedelta(days=30)
    with pytest.raises(EventRefused) as exc:
        event_from_oadr20b(far, "v", EventLimits())
    assert exc.value.reason == "too_far"


def test_settings_refuse_bad_values_by_name():
    with pytest.raises(ConfigError) as exc:
        load_model(Oadr20bSettings, {"venName": "b", "vtnUrl": "ftp://x"})
    assert exc.value.key == "vtnUrl"
    with pytest.raises(ConfigError) as exc:
        load_model(Oadr20bSettings, {"venName": "b", "vtnUrl": "http://x", "maxAbsKw": -1})
    assert exc.value.key == "maxAbsKw"
    settings = load_model(Oadr20bSettings, {"venName": "b", "vtnUrl": "http://x", "passphrase": "s3cret"})
    assert "s3cret" not in repr(settings)
