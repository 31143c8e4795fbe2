"""An event's first round prepared ahead of its start (`prepareLeadS`, with a sender that can hold a round, as
dr.vtn's command link can): built as of the start instant, held, written at the start instant exactly, and
never overtaken by anything sent meanwhile. Time is a ManualScheduler's: every instant below is exact."""

from __future__ import annotations

import pathlib
import random
from datetime import datetime, timezone

import pytest
from dr_vtn_dispatcher.config import parse_config
from dr_vtn_dispatcher.dispatch import MemorySender
from dr_vtn_dispatcher.lifecycle import ManualScheduler
from dr_vtn_dispatcher.service import VtnService
from dr_vtn_dispatcher.store import Store, sqlite_url

from dr_common.payloads import Ack
from dr_common.timeutil import parse_time

T0 = 1_800_000_000.0


class HoldingSender(MemorySender):
    """MemorySender with the hold/release of dr.vtn's LinkSender: held batches are delivered at release, with
    the release instant; `wire` is the order in which commands would reach the socket."""

    can_hold = True

    def __init__(self, clock) -> None:
        super().__init__(clock)
        self.holding: list[list[dict]] | None = None
        self.refuse_hold = False
        self.wire: list[tuple[float, dict]] = []

    def hold(self) -> bool:
        if self.refuse_hold or self.holding is not None:
            return False
        self.holding = []
        return True

    def release(self) -> None:
        held, self.holding = self.holding, None
        for batch in held or []:
            super().send_batch(batch)
            self.wire.extend((self._now(), c) for c in batch)

    def send_batch(self, payloads) -> None:
        if self.holding is not None:
            self.holding.append(list(payloads))
            return
        super().send_batch(payloads)
        self.wire.extend((self._now(), c) for c in payloads)


@pytest.fixture
def vtn(tmp_path: pathlib.Path, request):
    clock = ManualScheduler(T0)
    sender = HoldingSender(clock.now)
    store = Store(sqlite_url(str(tmp_path / "vtn.sqlite")))
    config = {"prepareLeadS": 1.0, **getattr(request, "param", {})}
    svc = VtnService(store, clock, sender, parse_config(config), rng=random.Random(3))
    svc.start()
    for i in range(3):
        svc.register_ven({"venId": f"v-{i}", "transport": "mqtt", "maxShedKw": 5.0})
    yield svc, clock, sender
    svc.stop()
    store.close()


def _event(svc, start: float, **extra) -> dict:
    return svc.create_event({"startTime": datetime.fromtimestamp(start, timezone.utc).isoformat(), "durationS": 600,
                             "requestedReductionKw": 3.0, "venIds": ["v-0", "v-1", "v-2"], **extra})


def test_the_first_round_is_built_a_lead_ahead_and_written_at_the_start_instant(vtn):
    svc, clock, sender = vtn
    start = T0 + 10
    event = _event(svc, start)
    clock.advance_to(start - 1.0 - 0.001)
    assert sender.holding is None and svc.get_event(event["eventId"])["status"] != "active"
    clock.advance_to(start - 1.0)                         # the lead: built and held, nothing written
    assert [len(b) for b in sender.holding] == [3] and sender.wire == []
    clock.advance_to(start - 0.001)
    assert sender.wire == [] and sender.events[-1]["status"] != "active"
    clock.advance_to(start)                               # the start instant: written, `active` published
    assert {when for when, _ in sender.wire} == {start}
    assert sorted(c["venId"] for _, c in sender.wire) == ["v-0", "v-1", "v-2"]
    assert sender.events[-1]["status"] == "active"
    metrics = svc.event_metrics(event["eventId"])
    assert metrics["vensDispatched"] == 3
    assert svc.health()["counters"]["roundsPreparedAhead"] == 1
    # the commands were made as of the start: an ack 40 ms later is a 40 ms response, not 1,040 ms
    clock.advance_to(start + 0.04)
    cmd = sender.wire[0][1]
    svc.on_acks([Ack(correlation_id=cmd["correlationId"], ok=True, op="event", ven_id=cmd["venId"],
                     accepted_reduce_kw=1.0)])
    record = svc.book.get(cmd["correlationId"])
    assert record.response_ms == pytest.approx(40.0, abs=0.01)
    assert parse_time(cmd["issuedAt"]).timestamp() == pytest.approx(start, abs=1e-3)


def test_a_cancel_inside_the_lead_releases_the_held_round_before_the_restores(vtn):
    svc, clock, sender = vtn
    start = T0 + 10
    event = _event(svc, start)
    clock.advance_to(start - 0.5)
    assert sender.holding is not None and sender.wire == []
    svc.cancel_event(event["eventId"])
    ops = [c["op"] for _, c in sender.wire]
    assert ops == ["event"] * 3 + ["restore"] * 3           # nothing overtakes the held round
    assert sender.holding is None
    clock.advance_to(start + 0.1)                            # the release timer found nothing more to send
    assert [c["op"] for _, c in sender.wire] == ops


def test_without_a_hold_the_event_starts_at_its_instant_as_before(vtn):
    svc, clock, sender = vtn
    sender.refuse_hold = True                                # e.g. the link is down: commands go to the outbox
    start = T0 + 10
    _event(svc, start)
    clock.advance_to(start - 0.001)
    assert sender.wire == []
    clock.advance_to(start)
    assert [when for when, _ in sender.wire] == [start] * 3


def test_two_events_at_one_instant_the_second_follows_the_held_round(vtn):
    svc, clock, sender = vtn
    start = T0 + 10
    first = _event(svc, start, venIds=["v-0"], requestedReductionKw=1.0)
    second = _event(svc, start, venIds=["v-1", "v-2"], requestedReductionKw=2.0)
    clock.advance_to(start - 0.5)
    assert [len(b) for b in sender.holding] == [1]           # one round held at a time
    clock.advance_to(start)
    assert {when for when, _ in sender.wire} == {start}
    assert [c["eventId"] for _, c in sender.wire] == [first["eventId"], second["eventId"], second["eventId"]]


@pytest.mark.parametrize("vtn", [{"retryInitialS": 30.0, "retryMaxS": 60.0}], indirect=True)
def test_a_round_settles_when_its_acks_are_in_or_after_settle_s(vtn):
    from dr_vtn_dispatcher.dispatcher import SETTLE_S

    svc, clock, sender = vtn
    start = T0 + 10
    _event(svc, start)
    assert not svc.dispatcher.settling()
    clock.advance_to(start - 1.0)
    assert svc.dispatcher.settling()                      # held: its acks are still to come
    clock.advance_to(start + 0.05)
    acks = [Ack(correlation_id=c["correlationId"], ok=True, op="event", ven_id=c["venId"], accepted_reduce_kw=1.0)
            for _, c in sender.wire]
    svc.on_acks(acks[:2])
    assert svc.dispatcher.settling()
    svc.on_acks(acks[2:])
    assert not svc.dispatcher.settling()                  # every ack in
    svc.stop_event(svc.list_events()[0]["eventId"])       # the restore round: its acks never come
    assert svc.dispatcher.settling()
    clock.advance(SETTLE_S + 0.01)
    assert not svc.dispatcher.settling()                  # no longer than SETTLE_S
