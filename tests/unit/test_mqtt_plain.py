"""The bridge's plain logic: topic templates, configuration, inbound validation, dedup, batching, the outbox."""

from __future__ import annotations

import json
import threading
import time

import gevent
import pytest
from dr_common.mqtt.batcher import Batcher
from dr_common.mqtt.config import ConfigError, parse_config
from dr_common.mqtt.core import BridgeCore
from dr_common.mqtt.dedup import Deduplicator
from dr_common.mqtt.handoff import HubInbox
from dr_common.mqtt.inbound import Rejected, validate
from dr_common.mqtt.outbox import PRIO_HIGH, PRIO_NORMAL, PRIO_TELEMETRY, PutResult, SqliteOutbox
from dr_common.mqtt.stats import LatencyReservoir, percentile
from dr_common.mqtt.topicmap import TemplateError, TopicTemplate


# --- topic templates ---------------------------------------------------------------------------------
def test_template_formats_matches_and_subscribes():
    t = TopicTemplate("ven/cmd/{venId}")
    assert t.format("v-1") == "ven/cmd/v-1"
    assert t.mqtt_filter() == "ven/cmd/+"
    assert t.bus_prefix() == "ven/cmd/"
    assert t.match("ven/cmd/v-1") == "v-1"
    assert t.match("ven/cmd/v-1/extra") is None
    assert t.match("ven/ack/v-1") is None
    assert t.match("ven/cmd/") is None
    mid = TopicTemplate("site/{venId}/ack")
    assert mid.match("site/b7/ack") == "b7" and mid.mqtt_filter() == "site/+/ack"
    bound = t.bind("ven1")
    assert bound.text == "ven/cmd/ven1" and bound.match("ven/cmd/ven1") == "" and bound.match("ven/cmd/ven10") is None


@pytest.mark.parametrize("bad", ["", "a//b", "a/#", "a/+/b", "a/{venId}/{venId}", "a/x{venId}", "a/{other}", " a"])
def test_template_rejects_bad_text(bad):
    with pytest.raises(TemplateError):
        TopicTemplate(bad)


def test_template_refuses_wildcards_in_ven_id():
    with pytest.raises(TemplateError):
        TopicTemplate("ven/cmd/{venId}").format("a/b")
    with pytest.raises(TemplateError):
        TopicTemplate("ven/cmd/{venId}").format("+")


# --- configuration -------------------------------------------------------------------------------
def test_default_vtn_config_is_the_seed_contract():
    cfg = parse_config({})
    assert cfg.mode == "vtn" and cfg.qos == 1 and not cfg.broker.clean_session
    assert [(r.bus.text, [m.text for m in r.mqtt], r.items_key) for r in cfg.outbound] == [
        ("dr/batch/cmd", ["ven/cmd/{venId}"], "commands")]
    assert {(r.mqtt.text, r.bus.text, r.kind, r.batch) for r in cfg.inbound} == {
        ("ven/ack/{venId}", "dr/batch/ack", "ack", True),
        ("ven/telemetry/{venId}", "dr/batch/telemetry", "telemetry", True),
        ("oadr/meter/{venId}", "dr/batch/telemetry", "telemetry", True),
        ("ven/status/{venId}", "dr/batch/status", "status", True)}
    assert cfg.status_topic is None


def test_default_ven_config_is_the_mirror_for_one_ven():
    cfg = parse_config({"mode": "ven", "ven_id": "home-1"})
    assert cfg.broker.client_id == "dr-ven-home-1"
    assert [(r.mqtt.text, r.bus.text, r.kind, r.batch) for r in cfg.inbound] == [
        ("ven/cmd/home-1", "dr/cmd/home-1", "command", False)]
    assert [(r.bus.text, [m.text for m in r.mqtt]) for r in cfg.outbound] == [
        ("dr/ack/home-1", ["ven/ack/home-1"]),
        ("dr/telemetry/home-1", ["ven/telemetry/home-1", "oadr/meter/home-1"])]
    assert cfg.status_topic is not None and cfg.status_topic.text == "ven/status/home-1"


def _pem_files(tmp_path):
    files = {}
    for name in ("ca", "c", "k"):
        files[name] = tmp_path / f"{name}.pem"
        files[name].write_text("-----BEGIN CERTIFICATE-----\n")
    return {key: str(files[name]) for key, name in (("ca_file", "ca"), ("cert_file", "c"), ("key_file", "k"))}


def test_tls_and_custom_maps(tmp_path):
    cfg = parse_config({
        "broker": {"host": "iot.example", "tls": dict(_pem_files(tmp_path), alpn="x-amzn-mqtt-ca"),
                   "username": "u", "password": "p"},
        "outbound": [{"bus": "dr/cmd/{venId}", "mqtt": "ven/cmd/{venId}"}],
        "inbound": [{"mqtt": "site/{venId}/ack", "bus": "dr/ack/{venId}", "kind": "ack"}],
        "batch": {"max_items": 10, "max_delay_ms": 5}, "store": {"path": "/tmp/x.sqlite", "max_messages": 7}})
    assert cfg.broker.port == 8883 and cfg.broker.tls.alpn == ["x-amzn-mqtt-ca"]
    assert cfg.broker.username == "u" and cfg.broker.password.get_secret_value() == "p"
    assert cfg.batch_max_items == 10 and cfg.batch_max_delay_s == 0.005
    assert cfg.store_max_messages == 7 and cfg.outbound[0].items_key is None


@pytest.mark.parametrize("raw, key", [
    ({"mode": "edge"}, "mode"),
    ({"mode": "ven"}, "ven_id"),
    ({"mode": "ven", "ven_id": "a/b"}, "ven_id"),
    ({"ven_id": "x"}, "ven_id"),
    ({"broker": {"port": 0}}, "broker.port"),
    ({"broker": {"prot": 1}}, "broker.prot"),
    ({"broker": {"tls": {"cert_file": "/c.pem"}}}, "broker.tls"),
    ({"broker": {"password": "p"}}, "broker"),
    ({"broker": {"reconnect_min_s": 5, "reconnect_max_s": 1}}, "broker"),
    ({"qos": 3}, "qos"),
    ({"qos": True}, "qos"),
    ({"outbound": [{"bus": "dr/batch/cmd", "mqtt": "ven/cmd/{venId}"}]}, "outbound.0.mqtt"),
    ({"inbound": [{"mqtt": "ven/ack/+", "bus": "x"}]}, "inbound.0.mqtt"),
    ({"inbound": [{"mqtt": "ven/ack/{venId}", "bus": "dr/ack/{venId}", "batch": True}]}, "inbound.0.bus"),
    ({"inbound": [{"mqtt": "a/b", "bus": "x", "kind": "nope"}]}, "inbound.0.kind"),
    ({"outbound": [], "inbound": []}, "outbound"),
    ({"batch": {"max_items": 0}}, "batch.max_items"),
    ({"store": {"telemetry_ttl_s": -1}}, "store.telemetry_ttl_s"),
    ({"surprise": 1}, "surprise"),
    ({"broker": {"tls": {"ca_file": "/nonexistent/ca.pem"}}}, "broker.tls.ca_file"),
    ([1, 2], "<config>"),
])
def test_bad_config_names_the_key(raw, key):
    with pytest.raises(ConfigError) as err:
        parse_config(raw)
    assert err.value.key == key, err.value


@pytest.mark.parametrize("password", [12345678, ["s3cr3t-Value"], {"v": "s3cr3t-Value"}, 3.25])
def test_a_wrong_typed_password_is_never_echoed(password, caplog):
    with pytest.raises(ConfigError) as err:
        parse_config({"broker": {"username": "u", "password": password}})
    assert err.value.key == "broker.password"
    for text in (str(err.value), repr(err.value), err.value.reason):
        assert str(password) not in text and "s3cr3t" not in text and "12345678" not in text and "3.25" not in text


def test_a_password_is_never_rendered(tmp_path):
    cfg = parse_config({"broker": {"host": "127.0.0.1", "username": "u", "password": "s3cr3t-Value"},
                        "store": {"path": str(tmp_path / "o.sqlite")}})
    assert "s3cr3t" not in repr(cfg) and "s3cr3t" not in str(cfg.broker)
    core = BridgeCore(cfg, object())
    assert "s3cr3t" not in json.dumps(core.status()) + json.dumps(core.health())


def test_insecure_tls_and_a_clear_text_password_are_warned_loudly(tmp_path, caplog):
    files = _pem_files(tmp_path)
    quiet = parse_config({"broker": {"host": "127.0.0.1", "username": "u", "password": "p"}})
    assert quiet.warnings == ()  # loopback: nothing leaves the machine
    insecure = parse_config({"broker": {"host": "mqtt.example", "tls": dict(files, insecure=True)}})
    clear = parse_config({"broker": {"host": "mqtt.example", "username": "u", "password": "p"}})
    assert len(insecure.warnings) == 1 and "broker.tls.insecure" in insecure.warnings[0]
    assert len(clear.warnings) == 1 and "plain TCP" in clear.warnings[0] and "mqtt.example" in clear.warnings[0]
    with caplog.at_level("WARNING"):
        core = BridgeCore(clear, object())
    assert any("INSECURE" in r.getMessage() and "plain TCP" in r.getMessage() for r in caplog.records)
    health = core.health()
    assert "WARNING" in health["context"] and health["warnings"] == list(clear.warnings)
    assert core.status()["warnings"] == list(clear.warnings)


def test_missing_tls_files_are_refused_when_parsing(tmp_path):
    files = _pem_files(tmp_path)
    assert parse_config({"broker": {"tls": files}}).broker.tls.cert_file == files["cert_file"]
    for name in ("ca_file", "cert_file", "key_file"):
        with pytest.raises(ConfigError) as err:
            parse_config({"broker": {"tls": dict(files, **{name: str(tmp_path / "gone.pem")})}})
        assert err.value.key == f"broker.tls.{name}" and "no such file" in err.value.reason


# --- inbound validation --------------------------------------------------------------------------
ACK = {"correlationId": "c-1", "op": "event", "ok": True, "ts": "2026-05-01T14:00:01Z",
       "data": {"targetKw": 3.5, "acceptedReduceKw": 2.0, "until": "2026-05-01T15:00:00Z"}}
TEL = {"venId": "v1", "ts": "2026-05-01T14:00:05Z", "usedPowerKw": 4.2, "shedPowerKw": 1.5,
       "requestedReductionKw": 2.0, "eventId": "e-1", "baselinePowerKw": 5.7, "voltage": 239.5}


def test_ack_is_canonical_with_the_topic_ven_and_fields_intact():
    acc = validate("ack", "v1", json.dumps(dict(ACK, accepted_reduce_kw=None)).encode(), 65536)
    assert acc.payload["venId"] == "v1" and acc.payload["correlationId"] == "c-1" and acc.payload["ok"] is True
    assert acc.payload["data"] == {"targetKw": 3.5, "acceptedReduceKw": 2.0, "until": "2026-05-01T15:00:00.000Z"}
    assert acc.dedup_key == ("ack", "v1", "c-1", "2026-05-01T14:00:01Z")


def test_telemetry_keeps_unknown_fields_and_dedups_on_timestamp():
    acc = validate("telemetry", "v1", json.dumps(TEL), 65536)
    assert acc.payload["usedPowerKw"] == 4.2 and acc.payload["shedPowerKw"] == 1.5
    assert acc.payload["baselinePowerKw"] == 5.7 and acc.payload["voltage"] == 239.5
    assert acc.dedup_key == ("telemetry", "v1", "2026-05-01T14:00:05Z")


def test_unknown_fields_are_bounded_to_a_few_small_scalars():
    many = {f"f{i}": i for i in range(20)}
    junk = {"blob": "x" * 5000, "nested": {"a": [1, 2, 3]}, "list": [1], "bad key/": 1, "k" * 40: 1,
            "\u202ebidi": 1}
    acc = validate("telemetry", "v1", json.dumps(dict(TEL, **junk, **many)), 65536)
    unknown = {k: v for k, v in acc.payload.items() if k not in TEL or k == "voltage"}
    assert unknown == {"voltage": 239.5, **{f"f{i}": i for i in range(7)}}  # 8 kept: scalars, short names
    assert acc.dropped == len(junk) + len(many) - 7
    # the canonical fields are never displaced, and the same bound holds for acks and commands
    assert acc.payload["usedPowerKw"] == 4.2 and acc.payload["venId"] == "v1"
    ack = validate("ack", "v1", json.dumps(dict(ACK, **junk, **many)), 65536)
    assert sum(1 for k in ack.payload if k.startswith("f")) == 8 and "blob" not in ack.payload
    cmd = validate("command", "home-1", json.dumps({"op": "ping", "correlationId": "c", **junk}), 65536)
    assert set(cmd.payload) == {"op", "correlationId", "venId"} and cmd.dropped == len(junk)


def test_the_bridge_counts_dropped_unknown_fields(tmp_path):
    core = BridgeCore(parse_config({"store": {"path": str(tmp_path / "o.sqlite")}}), object())
    core.on_mqtt_message("ven/telemetry/v1", json.dumps(dict(TEL, blob="x" * 100, deep={"a": 1})).encode())
    assert core.status()["unknownFieldsDropped"] == 2 and core.status()["messagesAccepted"] == 1


@pytest.mark.parametrize("kind, ven, payload, reason", [
    ("telemetry", "v1", json.dumps(dict(TEL, extra=float("nan"))).encode(), "invalid_json"),
    ("telemetry", "v1", json.dumps(dict(TEL, extra=[float("inf")])).encode(), "invalid_json"),
    ("ack", "v1", json.dumps(dict(ACK, extra=10 ** 400)).encode(), "invalid_json"),
    ("ack", "v1", b'{"correlationId": "c", "ok": true, "x": ' + b"9" * 4300 + b"}", "invalid_json"),
    ("ack", "v1", json.dumps(dict(ACK, correlationId="9" * 5000)).encode(), "schema"),
    ("telemetry", "v1", json.dumps(dict(TEL, loads={"a": 1e308 * 10})).encode(), "invalid_json"),
    ("telemetry", "v1\n", json.dumps(dict(TEL, venId="v1\n")).encode(), "bad_topic"),
    ("ack", "\u202ev1", json.dumps(ACK).encode(), "bad_topic"),
    ("ack", "v" * 65, json.dumps(ACK).encode(), "bad_topic"),
    ("ack", "v1", json.dumps(dict(ACK, eventId="a/b")).encode(), "schema"),
    ("ack", "v1", b"{not json", "invalid_json"),
    ("ack", "v1", b"[1, 2]", "invalid_json"),
    ("ack", "v1", b"\xff\xfe", "invalid_json"),
    ("ack", "v1", json.dumps({"ok": True}).encode(), "schema"),
    ("ack", "v1", json.dumps({"correlationId": "c", "ok": False}).encode(), "schema"),
    ("ack", "v2", json.dumps(dict(ACK, venId="v1")).encode(), "ven_id_mismatch"),
    ("telemetry", "v2", json.dumps(TEL).encode(), "ven_id_mismatch"),
    ("telemetry", "v1", json.dumps(dict(TEL, usedPowerKw="lots")).encode(), "schema"),
    ("status", "v1", json.dumps({"venId": "v9", "online": False}).encode(), "ven_id_mismatch"),
    ("command", "v1", json.dumps({"op": "event", "durationS": 1e300, "requestedReductionKw": 1}).encode(), "schema"),
    ("ack", "", json.dumps(ACK).encode(), "bad_topic"),
    ("ack", "v1", b"x" * 70000, "too_large"),
])
def test_rejects_have_a_reason(kind, ven, payload, reason):
    with pytest.raises(Rejected) as err:
        validate(kind, ven, payload, 65536)
    assert err.value.reason == reason


def test_command_validation_for_the_ven_side():
    raw = {"operation": "shed_panel", "correlation_id": "k1", "reduceKw": "2.5", "endTime": "2026-05-01T15:00:00",
           "issuedAt": "2026-05-01T14:00:00Z"}
    acc = validate("command", "home-1", json.dumps(raw), 65536)
    assert acc.payload["op"] == "shedPanel" and acc.payload["venId"] == "home-1"
    assert acc.payload["requestedReductionKw"] == 2.5 and acc.payload["until"] == "2026-05-01T15:00:00.000Z"
    assert acc.dedup_key == ("command", "home-1", "k1", "2026-05-01T14:00:00Z")


# --- dedup, batching ------------------------------------------------------------------------------
def test_dedup_window_and_bound():
    d = Deduplicator(window_s=10, max_entries=3)
    assert not d.is_repeat("a", 0) and d.is_repeat("a", 5) and not d.is_repeat(None, 5) and not d.is_repeat(None, 5)
    assert not d.is_repeat("a", 20)  # the window passed
    for k in "bcd":
        d.is_repeat(k, 21)
    assert len(d) == 3 and not d.is_repeat("a", 21)  # 'a' was the oldest and was forgotten
    off = Deduplicator(window_s=0, max_entries=10)
    assert not off.is_repeat("a", 0) and not off.is_repeat("a", 0)


def test_batcher_flushes_by_size_and_by_age():
    b = Batcher(max_items=3, max_delay_s=0.05)
    assert b.add("t", 1, 0.0) == [] and b.add("t", 2, 0.01) == []
    assert b.next_deadline() == pytest.approx(0.05)
    assert b.add("t", 3, 0.02) == [("t", [1, 2, 3])]
    assert b.next_deadline() is None
    b.add("t", 4, 1.0)
    b.add("u", 5, 1.02)
    assert b.due(1.04) == []
    assert b.due(1.05) == [("t", [4])]
    assert b.due(1.08) == [("u", [5])] and len(b) == 0


# --- outbox -------------------------------------------------------------------------------------
def test_outbox_keeps_order_bound_and_survives_reopen(tmp_path):
    path = str(tmp_path / "sub" / "o.sqlite")
    box = SqliteOutbox(path, max_messages=5)
    assert box.put_many([(f"t/{i}", f"p{i}".encode(), 1, False, PRIO_NORMAL) for i in range(7)]) == PutResult(5, 0, 2)
    assert box.depth == 5 and box.free == 0
    rows = box.read_after(0, 3)
    assert [r.topic for r in rows] == ["t/0", "t/1", "t/2"] and rows[0].payload == b"p0"
    assert box.delete([rows[0].id, rows[1].id]) == 2 and box.depth == 3
    assert [r.topic for r in box.read_after(rows[1].id, 10)] == ["t/2", "t/3", "t/4"]
    box.close()
    again = SqliteOutbox(path, max_messages=5)
    assert again.depth == 3 and again.has_after(0)
    rest = again.read_after(0, 10)
    again.delete([r.id for r in rest])
    again.put_many([("t/new", b"n", 1, True, PRIO_NORMAL)])
    (new,) = again.read_after(0, 10)
    assert new.id > rest[-1].id and new.retain  # ids never go back: a sender's cursor stays valid
    assert again.oldest_age_s() is not None
    again.close()


def _rows(box: SqliteOutbox) -> list[str]:
    return [r.topic for r in box.read_after(0, 1000)]


def test_a_full_outbox_sheds_telemetry_then_commands_never_a_restore_or_an_ack(tmp_path):
    box = SqliteOutbox(str(tmp_path / "o.sqlite"), max_messages=10)
    tel = [(f"tel/{i}", b"t", 1, False, PRIO_TELEMETRY) for i in range(4)]
    cmd = [(f"cmd/{i}", b"c", 1, False, PRIO_NORMAL) for i in range(6)]
    assert box.put_many(tel + cmd) == PutResult(10, 0, 0)
    # a new command pushes out the oldest telemetry, not a command; more telemetry is refused
    assert box.put_many([("cmd/new", b"c", 1, False, PRIO_NORMAL)]) == PutResult(1, 1, 0)
    assert box.put_many([("tel/new", b"t", 1, False, PRIO_TELEMETRY)]) == PutResult(0, 0, 1)
    assert _rows(box)[:3] == ["tel/1", "tel/2", "tel/3"] and box.depth == 10
    # restores and acks push out telemetry first, then the oldest commands, in the order they came
    high = [(f"restore/{i}", b"r", 1, False, PRIO_HIGH) for i in range(5)]
    assert box.put_many(high) == PutResult(5, 5, 0)
    assert _rows(box) == ["cmd/2", "cmd/3", "cmd/4", "cmd/5", "cmd/new"] + [f"restore/{i}" for i in range(5)]
    # a command does not push out another command: the newest is refused, as before
    assert box.put_many([("cmd/late", b"c", 1, False, PRIO_NORMAL)]) == PutResult(0, 0, 1)
    # with nothing lower left, high messages use the reserve (a tenth of the bound) and only then are refused
    box2 = SqliteOutbox(str(tmp_path / "o2.sqlite"), max_messages=10)
    box2.put_many([(f"ack/{i}", b"a", 1, False, PRIO_HIGH) for i in range(10)])
    assert box2.put_many([("ack/a", b"a", 1, False, PRIO_HIGH), ("ack/b", b"a", 1, False, PRIO_HIGH)]) == \
        PutResult(1, 0, 1)
    assert box2.depth == 11
    box.close()
    box2.close()


def test_stale_telemetry_expires_and_an_old_outbox_is_migrated(tmp_path):
    import sqlite3

    now = [1000.0]
    path = str(tmp_path / "o.sqlite")
    db = sqlite3.connect(path)  # a queue written before classes existed
    db.execute("CREATE TABLE outbox (id INTEGER PRIMARY KEY AUTOINCREMENT, topic TEXT NOT NULL, payload BLOB NOT NULL,"
               " qos INTEGER NOT NULL, retain INTEGER NOT NULL, queued_at REAL NOT NULL)")
    db.execute("INSERT INTO outbox (topic, payload, qos, retain, queued_at) VALUES ('old/cmd', x'00', 1, 0, 1.0)")
    db.commit()
    db.close()
    box = SqliteOutbox(path, max_messages=100, telemetry_ttl_s=60, clock=lambda: now[0])
    box.put_many([("tel/a", b"t", 1, False, PRIO_TELEMETRY), ("ack/a", b"a", 1, False, PRIO_HIGH)])
    now[0] += 59
    assert box.expire() == 0
    box.put_many([("tel/b", b"t", 1, False, PRIO_TELEMETRY)])
    now[0] += 2
    assert box.expire() == 1  # tel/a is 61 s old; tel/b 2 s; the command and the ack never expire
    assert _rows(box) == ["old/cmd", "ack/a", "tel/b"] and box.depth == 3 and box.expired == 1
    box.close()


def test_restores_and_acks_are_queued_as_high_telemetry_as_sheddable(tmp_path):
    from dr_common.mqtt.outbound import message_class

    vtn = parse_config({})
    ven = parse_config({"mode": "ven", "ven_id": "home-1"})
    (cmd_route,) = vtn.outbound
    ack_route, tel_route = ven.outbound
    assert message_class(cmd_route, {"op": "restore"}) == PRIO_HIGH
    assert message_class(cmd_route, {"op": "event"}) == PRIO_NORMAL
    assert message_class(ack_route, {"ok": True}) == PRIO_HIGH
    assert message_class(tel_route, {"usedPowerKw": 1}) == PRIO_TELEMETRY
    assert parse_config({"mode": "ven", "ven_id": "h", "store": {"telemetry_ttl_s": 30}}).telemetry_ttl_s == 30


# --- stats, hand-off ----------------------------------------------------------------------------
def test_percentiles_and_reservoir():
    values = sorted(float(v) for v in range(1, 101))
    assert percentile(values, 50) == 50 and percentile(values, 99) == 99 and percentile(values, 100) == 100
    r = LatencyReservoir(size=10, seed=1)
    for v in range(1000):
        r.add(v / 1000)
    s = r.summary_ms()
    assert s["count"] == 1000 and s["maxMs"] == 999.0 and len(r._sample) == 10


def test_hub_inbox_hands_items_from_threads_to_a_greenlet_in_order():
    inbox = HubInbox()
    got: list = []

    def consumer():
        while len(got) < 4000:
            got.extend(item for _, item in inbox.get_all(timeout=5))

    g = gevent.spawn(consumer)
    ticks = []
    ticker = gevent.spawn(lambda: [ticks.append(gevent.sleep(0.001)) for _ in range(50)])

    def producer(tag):
        for i in range(1000):
            inbox.put((tag, i))
            if i % 100 == 0:
                time.sleep(0.001)

    threads = [threading.Thread(target=producer, args=(t,)) for t in range(4)]
    for t in threads:
        t.start()
    g.join(timeout=10)
    for t in threads:
        t.join()
    ticker.join(timeout=5)
    inbox.close()
    assert len(got) == 4000
    for tag in range(4):
        assert [i for t, i in got if t == tag] == list(range(1000))  # per-producer order kept
    assert len(ticks) == 50  # the hub kept running other greenlets meanwhile
    assert inbox.get_all(timeout=0) == []


def test_shipped_site_configs_are_valid():
    from pathlib import Path

    site = Path(__file__).resolve().parents[2] / "platform-config" / "sites" / "demo"
    vtn = parse_config(json.loads((site / "mqtt.json").read_text()))
    assert vtn.mode == "vtn" and vtn.broker.port == 1883 and not vtn.broker.clean_session
    example = json.loads((site / "mqtt-ven.example.json").read_text())
    ven = parse_config(example, check_files=False)  # its certificates are per deployment
    assert ven.mode == "ven" and ven.broker.tls is not None and ven.broker.tls.cert_file
    assert ven.status_topic.text == "ven/status/home-0001"
    with pytest.raises(ConfigError) as err:  # where they are missing, the configuration is refused
        parse_config(example)
    assert err.value.key.startswith("broker.tls.")
    for other in sorted(site.parent.glob("*/mqtt*.json")):
        parse_config(json.loads(other.read_text()), check_files=False)
