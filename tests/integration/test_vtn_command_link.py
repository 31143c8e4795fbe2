"""dr.vtn with its own MQTT link (`commandLink`) on a real VOLTTRON platform, no dr.mqtt installed, and a
Mosquitto of the test's own: an event's commands reach each VEN's topic, acks come back into dr.vtn bound to
the topic they came on (a VEN acking another VEN's command is refused), the bus still gets the record (the
echo on dr/sent/cmd and dr/batch/ack), and while the broker is down the restore round waits in the link's
outbox and is delivered, in full, once the broker is back."""

from __future__ import annotations

import json
import time
import uuid
from datetime import datetime, timedelta, timezone

import pytest

from dr_common import topics
from dr_common.batches import batch_items
from dr_tools.fleet.brokers import Mosquitto
from dr_tools.fleet.probe import Probe

pytestmark = [pytest.mark.integration, pytest.mark.mqtt]

RUN = uuid.uuid4().hex[:6]
VENS = [f"cl{RUN}-{i}" for i in range(3)]
VTN = topics.VTN_IDENTITY


def _ok(result):
    assert not (isinstance(result, dict) and "error" in result), result
    return result


@pytest.fixture(scope="module")
def broker(tmp_path_factory):
    b = Mosquitto(tmp_path_factory.mktemp("broker"), persistence=True).start()
    yield b
    b.stop()


@pytest.fixture(scope="module")
def vtn(volttron_instance, broker):
    plat = volttron_instance
    config = {"retryInitialS": 1.5, "retryMaxS": 3.0, "flushIntervalS": 0.3, "echoIntervalS": 0.2,
              "commandLink": {"broker": {"host": "127.0.0.1", "port": broker.port, "reconnect_min_s": 0.2,
                                         "reconnect_max_s": 1}}}
    t0 = time.monotonic()
    plat.install_agent("vtn_dispatcher", VTN, config=config, tag="dr-vtn")
    plat.wait_for(lambda: (plat.rpc(VTN, "health").get("commandLink") or {}).get("status") == "GOOD", timeout=60,
                  what="dr.vtn's command link connected to the test's broker")
    print(f"\ndr.vtn with its command link installed in {time.monotonic() - t0:.1f} s")
    assert topics.MQTT_BRIDGE_IDENTITY not in plat.agents()
    for ven_id in VENS:
        _ok(plat.rpc(VTN, "register_ven", {"venId": ven_id, "transport": "mqtt", "maxShedKw": 5.0}))
    return plat


@pytest.fixture
def ven_side(broker):
    """One MQTT client standing in for the three VENs (the broker of this test has no ACL): a persistent
    session, so what is sent while it is away waits at the broker."""
    probe = Probe(port=broker.port, client_id=f"pytest-vens-{RUN}", clean_session=False,
                  subscriptions=["ven/cmd/+"]).start()
    yield probe
    probe.stop()


def _commands(probe: Probe) -> dict[str, list[dict]]:
    out: dict[str, list[dict]] = {}
    for topic, payload, _ in probe.snapshot("ven/cmd/"):
        out.setdefault(topic.rsplit("/", 1)[1], []).append(json.loads(payload))
    return out


def _ack(probe: Probe, on_topic_of: str, command: dict) -> None:
    probe.publish(f"ven/ack/{on_topic_of}", json.dumps({"correlationId": command["correlationId"], "ok": True,
                                                        "op": command["op"], "acceptedReduceKw": 1.0}))


def _event(plat, start_in_s: float) -> dict:
    start = datetime.now(timezone.utc) + timedelta(seconds=start_in_s)
    return _ok(plat.rpc(VTN, "create_event", {"startTime": start.isoformat(), "durationS": 600,
                                              "requestedReductionKw": 3.0, "venIds": VENS}))


def test_a_corked_link_writes_nothing_until_uncorked_then_everything_in_order(broker):
    import gevent

    from dr_common.mqtt.config import parse_config
    from dr_common.mqtt.handoff import HubInbox
    from dr_common.mqtt.link import EV_BATCH, EV_CONNECTED, EV_PUBACK, MqttLink

    def take(timeout: float) -> list:
        out = []
        for _, event in inbox.get_all(timeout):
            out.extend(event[1] if event[0] == EV_BATCH else [event])
        return out

    probe = Probe(port=broker.port, client_id=f"pytest-cork-{RUN}", subscriptions=["cork/+"]).start()
    inbox = HubInbox()
    link = MqttLink(parse_config({"broker": {"port": broker.port, "client_id": f"pytest-cork-link-{RUN}"}}).broker,
                    inbox, [])
    try:
        link.start()
        events: list = []
        deadline = time.monotonic() + 10
        while EV_CONNECTED not in [e[0] for e in events] and time.monotonic() < deadline:
            events.extend(take(0.1))
        assert link.cork()
        with link.coalesced():
            for i in range(300):
                link.publish(f"cork/{i % 7}", json.dumps({"n": i}).encode(), 1)
        gevent.sleep(0.5)
        assert probe.snapshot("cork/") == []                  # built, mids taken, nothing on the wire
        assert link.uncork() >= 1
        deadline = time.monotonic() + 10
        while len(probe.snapshot("cork/")) < 300 and time.monotonic() < deadline:
            gevent.sleep(0.05)
        got = [json.loads(p)["n"] for _, p, _ in probe.snapshot("cork/")]
        assert got == list(range(300))
        acked: set = set()
        deadline = time.monotonic() + 10
        while len(acked) < 300 and time.monotonic() < deadline:
            acked.update(e[1] for e in take(0.1) if e[0] == EV_PUBACK)
        assert len(acked) == 300                               # paho's bookkeeping saw every PUBACK
    finally:
        gevent.get_hub().threadpool.apply(link.stop)
        inbox.close()
        probe.stop()


def test_commands_go_out_and_acks_come_back_without_dr_mqtt_each_bound_to_its_topic(vtn, ven_side):
    record = vtn.subscribe("dr/")
    start = time.time() + 3.0                   # more than prepareLeadS ahead: the round is prepared and held
    event = _event(vtn, start - time.time())
    mono_offset = time.time() - time.monotonic()
    vtn.wait_for(lambda: set(_commands(ven_side)) >= set(VENS), timeout=15, what="each VEN's command over MQTT")
    arrived = [when + mono_offset for _, _, when in ven_side.snapshot("ven/cmd/")]
    assert min(arrived) >= start - 0.005, f"{start - min(arrived):.3f} s before the start instant"  # held until then
    print(f"\ncommands of the prepared round arrived {(min(arrived) - start) * 1000:.1f}-"
          f"{(max(arrived) - start) * 1000:.1f} ms after the start instant")
    assert vtn.rpc(VTN, "health")["counters"].get("roundsPreparedAhead") == 1
    first = {v: cmds[0] for v, cmds in _commands(ven_side).items()}
    assert {c["eventId"] for c in first.values()} == {event["eventId"]}
    assert all(c["op"] == "event" and c["venId"] == v for v, c in first.items())
    before = vtn.rpc(VTN, "health")["counters"]
    _ack(ven_side, VENS[0], first[VENS[0]])
    _ack(ven_side, VENS[1], first[VENS[1]])
    _ack(ven_side, VENS[0], first[VENS[2]])     # VEN 0 acks VEN 2's command: refused, VEN 2 stays pending

    def responding() -> int:
        return vtn.rpc(VTN, "event_metrics", event["eventId"]).get("vensResponding", 0)

    vtn.wait_for(lambda: vtn.rpc(VTN, "health")["counters"].get("ackVenMismatch", 0) > before.get(
        "ackVenMismatch", 0), timeout=10, what="the ack for another VEN's command counted as a mismatch")
    vtn.wait_for(lambda: responding() == 2, timeout=10, what="two VENs responding")
    # VEN 2's command is sent again (it is still pending), and its own ack is taken
    vtn.wait_for(lambda: len(_commands(ven_side)[VENS[2]]) >= 2, timeout=15, what="VEN 2's command retried")
    assert _commands(ven_side)[VENS[2]][-1]["correlationId"] == first[VENS[2]]["correlationId"]
    _ack(ven_side, VENS[2], first[VENS[2]])
    vtn.wait_for(lambda: responding() == 3, timeout=10, what="three VENs responding")
    # the record on the bus: what was sent (dr/sent/cmd) and the acks (dr/batch/ack), published by dr.vtn
    def echoed_acks() -> set[str]:
        return {i["venId"] for m in record.on_topic(topics.BUS_ACK_BATCH) for i in m["items"]}

    vtn.wait_for(lambda: echoed_acks() == set(VENS), timeout=10, what="every VEN's ack echoed on the bus")
    sent = [c for m in record.on_topic(topics.BUS_CMD_SENT) for c in batch_items(m, "commands")]
    assert {c["correlationId"] for c in sent} >= {c["correlationId"] for c in first.values()}
    assert not record.on_topic(topics.BUS_CMD_BATCH)   # nothing for a bridge to fan out again
    details = vtn.rpc(VTN, "health")["commandLink"]["details"]
    assert details["connected"] and details["rejectsTotal"] == 0 and details["localItems"] >= 4
    _ok(vtn.rpc(VTN, "stop_event", event["eventId"]))
    vtn.wait_for(lambda: all(any(c["op"] == "restore" for c in cmds) for cmds in _commands(ven_side).values()),
                 timeout=15, what="restores")
    for ven_id, cmds in _commands(ven_side).items():
        _ack(ven_side, ven_id, [c for c in cmds if c["op"] == "restore"][0])


def test_the_restore_round_waits_out_a_broker_outage_in_the_outbox(vtn, ven_side, broker):
    for live in vtn.rpc(VTN, "list_events", "active"):   # the VENs are free whatever an earlier test left
        _ok(vtn.rpc(VTN, "stop_event", live["eventId"]))
    event = _event(vtn, 0.5)
    vtn.wait_for(lambda: all(any(c.get("eventId") == event["eventId"] for c in cmds)
                             for cmds in _commands(ven_side).values()) and len(_commands(ven_side)) == 3,
                 timeout=15, what="the event's commands")
    for ven_id, cmds in _commands(ven_side).items():
        _ack(ven_side, ven_id, [c for c in cmds if c.get("eventId") == event["eventId"]][-1])
    vtn.wait_for(lambda: vtn.rpc(VTN, "event_metrics", event["eventId"]).get("vensResponding") == 3, timeout=10,
                 what="three VENs responding")
    broker.stop()
    vtn.wait_for(lambda: vtn.rpc(VTN, "health")["commandLink"]["status"] == "BAD", timeout=15,
                 what="the link reports the broker gone")
    _ok(vtn.rpc(VTN, "stop_event", event["eventId"]))
    vtn.wait_for(lambda: vtn.rpc(VTN, "health")["commandLink"]["details"]["backlog"] >= 3, timeout=10,
                 what="the restores queued in the outbox")
    assert not vtn.rpc(VTN, "health")["ok"]
    broker.start()
    vtn.wait_for(lambda: all(any(c["op"] == "restore" and c["eventId"] == event["eventId"] for c in cmds)
                             for cmds in _commands(ven_side).values()), timeout=30,
                 what="every restore delivered after the broker came back")
    for ven_id, cmds in _commands(ven_side).items():
        _ack(ven_side, ven_id, [c for c in cmds if c["op"] == "restore" and c["eventId"] == event["eventId"]][0])
    vtn.wait_for(lambda: vtn.rpc(VTN, "health")["commandLink"]["details"]["backlog"] == 0, timeout=15,
                 what="the outbox emptied")
    vtn.wait_for(lambda: vtn.rpc(VTN, "health")["ok"], timeout=15, what="dr.vtn healthy again")
    restores = [c for cmds in _commands(ven_side).values() for c in cmds
                if c["op"] == "restore" and c["eventId"] == event["eventId"]]
    assert sorted({c["venId"] for c in restores}) == sorted(VENS)
