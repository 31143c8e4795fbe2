"""dr.vtn logic without a platform: lifecycle at the exact instants, modification numbers, randomized starts,
allocation and re-allocation in events, idempotent dispatch with retries, restart safety, metrics.

A ManualScheduler drives time: callbacks run at their own instants, so "at the right instant" is exact.
"""

import pathlib
import random
from datetime import datetime, timezone

import pytest
from dr_vtn_dispatcher.config import parse_config
from dr_vtn_dispatcher.dispatch import MemorySender
from dr_vtn_dispatcher.lifecycle import ManualScheduler
from dr_vtn_dispatcher.service import VtnService
from dr_vtn_dispatcher.store import Store, sqlite_url

from dr_common.payloads import Ack, Telemetry
from dr_common.timeutil import parse_time

T0 = 1_800_000_000.0


def iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, timezone.utc).isoformat()


def ts(text: str) -> float:
    return parse_time(text).timestamp()


class Harness:
    def __init__(self, path: pathlib.Path, config: dict | None = None, seed: int = 7, url: str | None = None) -> None:
        self.url = url or sqlite_url(str(path / "vtn.sqlite"))
        self.config = parse_config(config or {})
        self.clock = ManualScheduler(T0)
        self.sender = MemorySender(self.clock.now)
        self.seed = seed
        self._open()

    def _open(self) -> None:
        self.store = Store(self.url)
        self.svc = VtnService(self.store, self.clock, self.sender, self.config, rng=random.Random(self.seed))
        self.svc.start()

    def restart(self, down_s: float = 0.0) -> None:
        """Stop the service, let time pass with nobody listening, start a new one on the same store."""
        self.svc.stop()
        self.store.close()
        self.clock = ManualScheduler(self.clock.now() + down_s)
        self.sender.__init__(self.clock.now)
        self._open()

    def register(self, ven_id: str, transport: str = "bus", **extra) -> None:
        self.svc.register_ven({"venId": ven_id, "transport": transport, **extra})

    def event(self, start_in: float, duration: float, **extra) -> dict:
        payload = {"startTime": iso(T0 + start_in) if self.clock.now() == T0 else iso(self.clock.now() + start_in),
                   "durationS": duration, **extra}
        payload.setdefault("requestedReductionKw", 4.0)
        if not payload.get("venIds") and not payload.get("groups") and "allVens" not in payload:
            payload["allVens"] = True
        return self.svc.create_event(payload)

    def ack(self, command: dict, ok: bool = True, accepted: float | None = None, error: str | None = None) -> None:
        raw = {"correlationId": command["correlationId"], "op": command["op"], "ok": ok,
               "venId": command["venId"]}
        if ok:
            raw["data"] = {"targetKw": command.get("requestedReductionKw"),
                           "acceptedReduceKw": accepted if accepted is not None
                           else command.get("requestedReductionKw")}
        else:
            raw["error"] = error or "refused"
        self.svc.on_acks([Ack.from_payload(raw)])

    def ack_all(self) -> None:
        for command in self.sender.commands():
            record = self.svc.book.get(command["correlationId"])
            if record is not None and record.acked_at is None:
                self.ack(command)

    def commands(self, op: str | None = None) -> list[dict]:
        return [c for c in self.sender.commands() if op is None or c["op"] == op]

    def statuses(self) -> list[tuple[str, float]]:
        return [(e["status"], ts(e["updatedAt"])) for e in self.sender.events]


@pytest.fixture
def h(tmp_path):
    harness = Harness(tmp_path)
    yield harness
    harness.svc.stop()
    harness.store.close()


# ---------------------------------------------------------------------------------------- lifecycle
def test_lifecycle_transitions_happen_at_the_exact_instants(h):
    h.register("a")
    event = h.event(120, 180, rampUpS=60)
    assert event["status"] == "far" and event["modificationNumber"] == 0
    h.clock.advance_to(T0 + 120.05)
    h.ack_all()
    h.clock.advance_to(T0 + 300.05)
    h.ack_all()
    h.clock.advance_to(T0 + 1000)
    assert h.statuses() == [("far", T0), ("near", T0 + 60), ("active", T0 + 120), ("completed", T0 + 300)]
    [command] = h.commands("event")
    assert h.sender.local[0][0] == T0 + 120  # handed over at the start instant
    assert command["venId"] == "a" and command["requestedReductionKw"] == 4.0
    [restore] = h.commands("restore")
    assert h.sender.local[-1][0] == T0 + 300
    assert restore["venId"] == "a" and restore["eventId"] == event["eventId"]
    assert h.svc.get_event(event["eventId"])["status"] == "completed"


def test_no_polling_only_the_next_instant_is_armed(h):
    h.event(120, 180, rampUpS=60)
    lifecycle = list(h.svc.event_manager._timers)
    assert len(lifecycle) == 1
    assert T0 + 60 in h.clock.pending()  # the near instant; the rest is armed as each one passes
    assert T0 + 120 not in h.clock.pending()


def test_event_without_ramp_up_goes_far_to_active(h):
    h.register("a")
    h.event(10, 20)
    h.clock.advance_to(T0 + 40)
    assert [s for s, _ in h.statuses()] == ["far", "active", "completed"]


def test_event_created_inside_its_ramp_up_is_near_at_once_and_past_start_is_active_at_once(h):
    h.register("a")
    near = h.event(30, 60, rampUpS=60)
    assert near["status"] == "near"
    assert [e["status"] for e in h.sender.events] == ["far", "near"]
    started = h.svc.create_event({"startTime": iso(T0 - 5), "endTime": iso(T0 + 60), "requestedReductionKw": 1,
                                "allVens": True})
    assert h.svc.get_event(started["eventId"])["status"] == "active"
    assert any(c["eventId"] == started["eventId"] for c in h.commands("event"))


def test_cancel_before_start_sends_nothing_and_cancel_when_active_restores(h):
    h.register("a")
    h.register("b")
    early = h.event(100, 100)
    h.svc.cancel_event(early["eventId"])
    h.clock.advance_to(T0 + 300)
    assert h.commands() == []
    assert h.svc.get_event(early["eventId"])["status"] == "cancelled"
    running = h.event(10, 100)
    h.clock.advance(10.1)
    assert len(h.commands("event")) == 2
    h.ack_all()
    h.clock.advance(5)
    result = h.svc.cancel_event(running["eventId"])
    assert result["status"] == "cancelled" and ts(result["endedAt"]) == h.clock.now()
    assert sorted(c["venId"] for c in h.commands("restore")) == ["a", "b"]
    h.clock.advance(500)  # no completion after a cancel
    assert h.svc.get_event(running["eventId"])["status"] == "cancelled"


def test_stop_completes_an_active_event_now_and_cancels_a_future_one(h):
    h.register("a")
    event = h.event(0, 3600)
    h.clock.advance(30)
    stopped = h.svc.stop_event(event["eventId"])
    assert stopped["status"] == "completed" and ts(stopped["endedAt"]) == T0 + 30
    assert [c["venId"] for c in h.commands("restore")] == ["a"]
    future = h.event(600, 60)
    assert h.svc.stop_event(future["eventId"])["status"] == "cancelled"
    assert h.svc.stop_event(future["eventId"]) if False else True
    with pytest.raises(Exception) as info:
        h.svc.stop_event(event["eventId"])
    assert getattr(info.value, "code", None) == "conflict" and info.value.field == "eventId"


def test_modification_numbers_bump_and_active_events_are_redispatched(h):
    h.register("a")
    h.register("b")
    event = h.event(60, 600, requestedReductionKw=4.0)
    changed = h.svc.update_event(event["eventId"], {"requestedReductionKw": 6.0})
    assert changed["modificationNumber"] == 1 and changed["requestedReductionKw"] == 6.0
    h.clock.advance_to(T0 + 60)
    first = h.commands("event")
    assert {c["modificationNumber"] for c in first} == {1}
    assert sorted(c["requestedReductionKw"] for c in first) == [3.0, 3.0]
    h.ack_all()
    h.clock.advance(1)
    changed = h.svc.update_event(event["eventId"], {"requestedReductionKw": 2.0, "endTime": iso(T0 + 900)})
    assert changed["modificationNumber"] == 2
    second = h.commands("event")[2:]
    assert {c["modificationNumber"] for c in second} == {2}
    assert sorted(c["requestedReductionKw"] for c in second) == [1.0, 1.0]
    assert {c["correlationId"] for c in second}.isdisjoint(c["correlationId"] for c in first)
    assert all(c["until"].startswith(iso(T0 + 900)[:19]) for c in second)
    h.ack_all()
    h.clock.advance_to(T0 + 650)  # the old end instant passes without completing
    assert h.svc.get_event(event["eventId"])["status"] == "active"
    assert len(h.commands("event")) == 4  # the superseded mod-1 commands were never retried
    h.clock.advance_to(T0 + 900)
    assert h.svc.get_event(event["eventId"])["status"] == "completed"


def test_modification_that_drops_a_ven_restores_it(h):
    h.register("a")
    h.register("b")
    event = h.event(0, 600, venIds=["a", "b"])
    h.ack_all()
    h.clock.advance(5)
    h.svc.update_event(event["eventId"], {"venIds": ["a"]})
    restores = h.commands("restore")
    assert [c["venId"] for c in restores] == ["b"]
    latest_a = [c for c in h.commands("event") if c["venId"] == "a"][-1]
    assert latest_a["requestedReductionKw"] == 4.0 and latest_a["modificationNumber"] == 1
    metrics = h.svc.event_metrics(event["eventId"])
    assert {v["venId"]: v["state"] for v in metrics["vens"]} == {"a": "dispatched", "b": "dropped"}


def test_start_time_cannot_change_once_active(h):
    h.register("a")
    event = h.event(0, 600)
    with pytest.raises(Exception) as info:
        h.svc.update_event(event["eventId"], {"startTime": iso(T0 + 100)})
    assert info.value.field == "startTime" and info.value.code == "conflict"


def test_randomized_start_offsets_stay_within_bounds_and_commands_go_out_at_each_offset(h):
    for i in range(60):
        h.register(f"v{i:02d}", transport="mqtt")
    h.event(100, 600, randomizeStartS=10)
    h.clock.advance_to(T0 + 200)
    first_sends: dict = {}
    for t, batch in h.sender.batches:
        for p in batch:
            first_sends.setdefault(p["correlationId"], (t, p))
    sent = list(first_sends.values())
    assert len(sent) == 60
    offsets = []
    for handed_at, payload in sent:
        start = ts(payload["startTime"])
        offset = start - (T0 + 100)
        assert 0.0 <= offset <= 10.0
        assert abs(offset / 0.1 - round(offset / 0.1)) < 1e-6  # multiples of the granularity
        assert handed_at == pytest.approx(start)  # handed over at the VEN's own start instant
        offsets.append(offset)
    assert len(set(offsets)) > 20  # actually spread, not one instant
    first_batches = {t for t, _ in sent}
    assert len(first_batches) == len(set(offsets))  # one batch per distinct instant
    assert all(len([1 for t, _ in h.sender.batches if t == when]) == 1 for when in first_batches
               if when - (T0 + 100) < 1.0)  # before any retry is due, one hand-off per instant


def test_randomization_bounds_over_many_seeds(tmp_path):
    from dr_vtn_dispatcher.lifecycle import randomized_offset

    rng = random.Random(1)
    values = [randomized_offset(rng, 2.5, 0.1) for _ in range(5000)]
    assert min(values) == 0.0 and max(values) == pytest.approx(2.5)
    assert all(0.0 <= v <= 2.5 for v in values)
    assert randomized_offset(rng, 0.0, 0.1) == 0.0


# ---------------------------------------------------------------------------------------- allocation in events
def test_equal_allocation_and_reallocation_after_a_rejection(h):
    for ven in "abc":
        h.register(ven, maxShedKw=10)
    event = h.event(0, 600, requestedReductionKw=6.0)
    first = {c["venId"]: c for c in h.commands("event")}
    assert {v: c["requestedReductionKw"] for v, c in first.items()} == {"a": 2.0, "b": 2.0, "c": 2.0}
    h.ack(first["a"], ok=False, error="opted out")
    h.ack(first["b"])
    h.ack(first["c"])
    again = [c for c in h.commands("event")[3:]]
    assert sorted((c["venId"], c["requestedReductionKw"]) for c in again) == [("b", 3.0), ("c", 3.0)]
    assert all(c["correlationId"] not in {f["correlationId"] for f in first.values()} for c in again)
    metrics = h.svc.event_metrics(event["eventId"])
    states = {v["venId"]: (v["state"], v["allocatedKw"]) for v in metrics["vens"]}
    assert states == {"a": ("rejected", 2.0), "b": ("dispatched", 3.0), "c": ("dispatched", 3.0)}
    assert metrics["vensRejected"] == 1


def test_partial_acceptance_shifts_the_shortfall_to_vens_with_headroom(h):
    h.register("a", maxShedKw=2.0)
    h.register("b", maxShedKw=10.0)
    h.register("c", maxShedKw=10.0)
    event = h.event(0, 600, requestedReductionKw=6.0)
    first = {c["venId"]: c for c in h.commands("event")}
    h.ack(first["a"], accepted=0.5)  # a takes only 0.5 of its 2
    extra = {c["venId"]: c["requestedReductionKw"] for c in h.commands("event")[3:]}
    assert extra == {"b": pytest.approx(2.75), "c": pytest.approx(2.75)}
    h.ack_all()
    metrics = h.svc.event_metrics(event["eventId"])
    assert metrics["acceptedKw"] == pytest.approx(6.0)
    assert h.svc.counters["reallocations"] == 1


def test_weighted_program_allocates_by_reported_available_capacity(tmp_path):
    h = Harness(tmp_path, {"programs": {"peak": {"allocation": "weighted"}}})
    h.register("a", maxShedKw=10)
    h.register("b", maxShedKw=10)
    h.svc.on_telemetry([Telemetry.from_payload({"venId": "a", "usedPowerKw": 5, "availableShedKw": 1.0}),
                        Telemetry.from_payload({"venId": "b", "usedPowerKw": 5, "availableShedKw": 3.0})])
    h.event(0, 600, requestedReductionKw=2.0, programId="peak")
    shares = {c["venId"]: c["requestedReductionKw"] for c in h.commands("event")}
    assert shares == {"a": 0.5, "b": 1.5}
    h.event(0, 600, requestedReductionKw=2.0, programId="other")  # default rule: equal
    h.svc.stop()


def test_simple_level_maps_to_program_kw(tmp_path):
    h = Harness(tmp_path, {"simpleLevelsKw": [0, 1.5, 3, 6], "programs": {"big": {"simpleLevelsKw": [0, 10, 20, 40]}}})
    h.register("a")
    plain = h.svc.create_event({"startTime": iso(T0 + 10), "durationS": 60, "level": 2, "allVens": True})
    big = h.svc.create_event({"startTime": iso(T0 + 10), "durationS": 60, "level": 3, "programId": "big",
                               "allVens": True})
    assert plain["signal"] == "SIMPLE" and plain["requestedReductionKw"] == 3.0 and plain["level"] == 2
    assert big["requestedReductionKw"] == 40.0
    h.svc.stop()


def test_offline_vens_are_left_out_and_targets_follow_groups(h):
    h.register("a", group="north")
    h.register("b", group="north")
    h.register("c", group="south")
    h.svc.on_telemetry([Telemetry.from_payload({"venId": "b", "usedPowerKw": 1})])
    h.clock.advance(31)  # b was seen, then silent past the 30 s timeout -> offline
    assert {v["venId"]: v["status"] for v in h.svc.list_vens()} == {"a": "unknown", "b": "offline", "c": "unknown"}
    h.event(0, 600, groups=["north"])
    assert [c["venId"] for c in h.commands("event")] == ["a"]


# ---------------------------------------------------------------------------------------- dispatch
def test_local_vens_get_one_bus_command_each_remote_vens_one_batch_per_round(h):
    h.register("loc1")
    h.register("loc2")
    for i in range(5):
        h.register(f"rem{i}", transport="mqtt")
    h.event(0, 600, requestedReductionKw=7.0)
    assert sorted(v for _, v, _ in h.sender.local) == ["loc1", "loc2"]
    assert len(h.sender.batches) == 1
    batch = h.sender.batches[0][1]
    assert sorted(p["venId"] for p in batch) == [f"rem{i}" for i in range(5)]
    cids = [c["correlationId"] for c in h.commands()]
    assert len(set(cids)) == 7
    for payload in h.commands():
        assert payload["op"] == "event" and payload["requestedReductionKw"] == 1.0
        assert {"correlationId", "eventId", "startTime", "until", "venId", "issuedAt"} <= set(payload)


def test_a_large_round_goes_to_the_bridge_in_batches_of_batch_size(tmp_path):
    h = Harness(tmp_path, {"batchSize": 3})
    h.register("loc1")
    for i in range(7):
        h.register(f"rem{i}", transport="mqtt")
    h.event(0, 600, requestedReductionKw=8.0)
    assert [len(batch) for _, batch in h.sender.batches] == [3, 3, 1]
    sent = [p["venId"] for _, batch in h.sender.batches for p in batch]
    assert sorted(sent) == [f"rem{i}" for i in range(7)] and len(h.sender.local) == 1
    assert len({p["correlationId"] for p in h.commands()}) == 8
    last = h.svc.health()["lastRound"]
    assert last["remote"] == 7 and last["local"] == 1
    assert 0 <= last["firstBatchMs"] <= last["handOffMs"]
    assert h.svc.counters["batchesSent"] == 3 and h.svc.counters["remoteCommandsSent"] == 7


def test_the_flush_write_runs_through_offload_and_a_failed_write_is_kept_for_the_next(tmp_path):
    calls: list[str] = []
    fail = {"on": False}

    def offload(fn):
        calls.append("write")
        if fail["on"]:
            raise OSError("disk gone")
        return fn()

    h = Harness(tmp_path)
    h.svc.stop()
    h.svc = VtnService(h.store, h.clock, h.sender, h.config, rng=random.Random(1), offload=offload)
    h.svc.start()
    h.register("r1", transport="mqtt")
    h.event(0, 600, requestedReductionKw=1.0)
    calls.clear()
    fail["on"] = True
    h.clock.advance(h.config.flush_interval_s)
    assert calls == ["write"] and h.svc.counters["storeErrors"] == 1
    assert h.store.load_commands([h.sender.commands()[0]["eventId"]]) == []  # nothing written yet
    fail["on"] = False
    h.clock.advance(h.config.flush_interval_s)
    assert calls == ["write", "write"]
    [stored] = h.store.load_commands([h.sender.commands()[0]["eventId"]])
    assert stored.correlation_id == h.sender.commands()[0]["correlationId"]


def test_retries_use_the_same_correlation_id_with_backoff_until_acked(h):
    h.register("a")
    h.register("b")
    h.event(0, 600)
    h.clock.advance(0.5)
    [ca, cb] = sorted(h.commands("event"), key=lambda c: c["venId"])
    h.ack(ca)
    h.clock.advance_to(T0 + 20)
    sends_b = [t for t, v, p in h.sender.local if v == "b"]
    sends_a = [t for t, v, p in h.sender.local if v == "a"]
    assert sends_a == [T0]  # acked: never sent again
    assert sends_b == [T0, T0 + 1, T0 + 3, T0 + 7, T0 + 15]  # 1, 2, 4, 8 s backoff
    assert {p["correlationId"] for _, v, p in h.sender.local if v == "b"} == {cb["correlationId"]}
    h.ack(cb)
    h.clock.advance_to(T0 + 200)
    assert len([1 for _, v, _ in h.sender.local if v == "b"]) == 5
    assert h.svc.health()["pendingCommands"] == 0


def test_retries_stop_when_the_event_ends(h):
    h.register("a")
    h.event(0, 10)
    h.clock.advance_to(T0 + 100)
    event_sends = [t for t, _, p in h.sender.local if p["op"] == "event"]
    assert event_sends == [T0, T0 + 1, T0 + 3, T0 + 7]
    restores = [t for t, _, p in h.sender.local if p["op"] == "restore"]
    assert restores[0] == T0 + 10 and len(restores) > 1  # the restore is retried too, until acked


def test_duplicate_and_unknown_acks_are_recorded_but_change_nothing(h):
    h.register("a")
    event = h.event(0, 600)
    [command] = h.commands()
    h.clock.advance(0.25)
    h.ack(command)
    h.clock.advance(1)
    h.ack(command)
    h.svc.on_acks([Ack.from_payload({"correlationId": "nope", "ok": True, "venId": "a"})])
    record = h.svc.book.get(command["correlationId"])
    assert record.response_ms == pytest.approx(250.0)
    assert len(h.store.acks()) == 1  # acks are written by the flush timer, off the dispatch path
    h.clock.advance(h.svc.config.flush_interval_s)
    rows = h.store.acks()
    assert [r["outcome"] for r in rows] == ["recorded", "duplicate", "unknown"]
    assert rows[0]["response_ms"] == pytest.approx(250.0) and rows[0]["event_id"] == event["eventId"]
    assert h.svc.counters["duplicateAcks"] == 1 and h.svc.counters["unknownAcks"] == 1


def test_restart_mid_event_does_not_resend_acked_commands_and_resumes_unacked(h):
    h.register("a")
    h.register("b")
    event = h.event(10, 600)
    h.clock.advance_to(T0 + 10.2)
    by_ven = {c["venId"]: c for c in h.commands("event")}
    h.ack(by_ven["a"])
    h.restart(down_s=0.3)  # back at T0 + 10.5: b's first retry (T0 + 11) is still ahead
    assert h.commands() == []
    h.clock.advance_to(T0 + 11.5)
    resent = h.commands()
    assert [(c["venId"], c["correlationId"]) for c in resent] == [("b", by_ven["b"]["correlationId"])]
    h.ack(resent[0])
    h.clock.advance(100)
    assert len(h.commands()) == 1
    assert h.svc.get_event(event["eventId"])["status"] == "active"
    assert h.svc.event_metrics(event["eventId"])["vensResponding"] == 2


def test_event_that_ended_while_down_is_completed_and_restored_on_start(h):
    h.register("a")
    h.register("b", transport="mqtt")
    event = h.event(0, 60)
    h.ack_all()
    h.restart(down_s=120)
    assert h.svc.get_event(event["eventId"])["status"] == "completed"
    assert [c["venId"] for c in h.commands("restore")] == ["a", "b"]
    assert h.commands("event") == []
    assert [e["status"] for e in h.sender.events] == ["completed"]


def test_event_that_started_while_down_is_dispatched_on_start_and_timers_are_rearmed(h):
    h.register("a")
    event = h.event(30, 600, rampUpS=10)
    h.restart(down_s=40)  # missed near (T0+20) and active (T0+30)
    assert [e["status"] for e in h.sender.events] == ["near", "active"]
    assert [c["venId"] for c in h.commands("event")] == ["a"]
    h.ack_all()
    h.clock.advance_to(T0 + 640)
    assert h.svc.get_event(event["eventId"])["status"] == "completed"


def test_planned_randomized_rounds_survive_a_restart(h):
    for i in range(20):
        h.register(f"v{i}", transport="mqtt")
    h.event(0, 600, randomizeStartS=30)
    h.ack_all()
    before = {c["venId"] for c in h.commands()}
    h.restart(down_s=5)
    h.clock.advance(60)
    after = {c["venId"] for c in h.commands("event")}
    assert before.isdisjoint(after) and len(before | after) == 20


def test_reallocated_commands_are_never_duplicated_across_restarts(h):
    for ven in "abc":
        h.register(ven)
    h.event(0, 600, requestedReductionKw=3.0)
    first = {c["venId"]: c for c in h.commands()}
    h.ack(first["a"], ok=False, error="no")
    h.ack_all()
    cids = [c["correlationId"] for c in h.commands()]
    h.restart(down_s=1)
    h.clock.advance(100)
    assert h.commands() == []  # everything was acked before the restart
    assert len(cids) == len(set(cids)) == 5


# ---------------------------------------------------------------------------------------- overlap
def test_overlap_higher_priority_takes_a_ven_and_hands_it_back(h):
    h.register("a", maxShedKw=5)
    h.register("b", maxShedKw=5)
    low = h.event(0, 1000, requestedReductionKw=4.0, priority=1)
    h.ack_all()
    h.clock.advance(10)
    high = h.event(0, 100, requestedReductionKw=1.0, priority=5, venIds=["a"])
    h.ack_all()
    # a moved to the high-priority event; low re-allocated a's 2 kW to b (headroom 3)
    latest_b = [c for c in h.commands("event") if c["venId"] == "b"][-1]
    assert latest_b["eventId"] == low["eventId"] and latest_b["requestedReductionKw"] == 4.0
    latest_a = [c for c in h.commands("event") if c["venId"] == "a"][-1]
    assert latest_a["eventId"] == high["eventId"]
    low_metrics = {v["venId"]: v["state"] for v in h.svc.event_metrics(low["eventId"])["vens"]}
    assert low_metrics == {"a": "released", "b": "acked"}
    h.clock.advance(100)  # high ends; low has no shortfall, so a is restored
    assert [c["venId"] for c in h.commands("restore")] == ["a"]


def test_overlap_equal_priority_keeps_the_running_event_and_hands_over_at_its_end(h):
    h.register("a", maxShedKw=5)
    h.register("b", maxShedKw=5)
    first = h.event(0, 100, requestedReductionKw=2.0, venIds=["a"])
    h.ack_all()
    second = h.event(0, 1000, requestedReductionKw=6.0)
    cmds = [c for c in h.commands("event") if c["eventId"] == second["eventId"]]
    assert [(c["venId"], c["requestedReductionKw"]) for c in cmds] == [("b", 5.0)]  # b capped at 5
    h.ack_all()
    h.clock.advance(100)  # first ends: a is handed to second (1 kW short), not restored
    handed = [c for c in h.commands("event") if c["venId"] == "a" and c["eventId"] == second["eventId"]]
    assert [c["requestedReductionKw"] for c in handed] == [1.0]
    assert h.commands("restore") == []
    assert h.svc.get_ven("a")["servingEventId"] == second["eventId"]
    assert h.svc.event_metrics(first["eventId"])["status"] == "completed"


# ---------------------------------------------------------------------------------------- metrics
def test_metrics_from_acks_and_telemetry(h):
    h.register("a")
    h.register("b")
    event = h.event(0, 600, requestedReductionKw=4.0)
    cmds = {c["venId"]: c for c in h.commands()}
    h.clock.advance(0.1)
    h.ack(cmds["a"])
    h.clock.advance(0.2)
    h.ack(cmds["b"], accepted=1.5)
    h.svc.on_telemetry([
        Telemetry.from_payload({"venId": "a", "usedPowerKw": 3, "shedPowerKw": 2.1, "eventId": event["eventId"]}),
        Telemetry.from_payload({"venId": "b", "usedPowerKw": 3, "shedPowerKw": 1.4}),
        Telemetry.from_payload({"venId": "b", "usedPowerKw": 3, "shedPowerKw": 9.9, "eventId": "another"}),
    ])
    m = h.svc.event_metrics(event["eventId"])
    assert m["vensResponding"] == 2
    assert m["avgResponseMs"] == pytest.approx(200.0)  # (100 + 300) / 2
    assert m["currentReductionKw"] == pytest.approx(3.5)
    detail = {v["venId"]: v for v in m["vens"]}
    assert detail["b"]["acceptedKw"] == 1.5 and detail["a"]["deliveredKw"] == 2.1
    assert detail["a"]["lastSeen"] is not None
    h.svc.flush()
    assert len(h.store.telemetry()) == 3


def test_bad_inbound_items_are_counted_and_do_not_stop_the_batch(h):
    h.register("a", transport="mqtt")
    h.register("b", transport="mqtt")
    h.event(0, 600)
    cmds = {c["venId"]: c for c in h.commands()}
    errors = h.svc.ingest("ack", {"items": [
        {"correlationId": cmds["a"]["correlationId"], "ok": True, "venId": "a"},
        {"ok": "maybe"},
        "garbage",
        {"correlationId": cmds["b"]["correlationId"], "ok": False, "error": "busy", "venId": "b"},
    ]}, sender="dr.mqtt")
    assert len(errors) == 2 and "items[1]" in errors[0] and "items[2]" in errors[1]
    assert h.svc.counters["badMessages"] == 2
    assert h.svc.book.get(cmds["a"]["correlationId"]).ack_ok is True
    assert h.svc.book.get(cmds["b"]["correlationId"]).ack_ok is False
    assert h.svc.ingest("telemetry", [1, 2], sender="dr.mqtt") == ["field 'items': expected a batch object {\"items\": [...]}"]
    assert h.svc.ingest("telemetry", {"usedPowerKw": 2.5, "shedPowerKw": 1}, ven_id="a",
                        sender="dr.ven.a") == []
    assert h.svc.vens["a"].used_kw == 2.5
    assert h.svc.ingest("status", {"items": [{"venId": "b", "online": False}]}, sender="dr.mqtt") == []
    assert h.svc.get_ven("b")["status"] == "offline"
