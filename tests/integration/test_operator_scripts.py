"""The seed's operator scripts against the real local Mosquitto: every one has --help; a command published
with ven_cmd_publish.py reaches monitor_ven.py, and acks and telemetry reach their listeners."""

from __future__ import annotations

import json
import subprocess
import sys
import time
import uuid
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest

from tests.support.services import require_mosquitto

pytestmark = pytest.mark.integration

SCRIPTS = Path(__file__).resolve().parents[2] / "scripts"
NAMES = ["register_ven.py", "send_event.py", "monitor_ven.py", "ven_cmd_publish.py", "ven_acks_listen.py",
         "ven_telemetry_listen.py"]


@pytest.mark.parametrize("name", NAMES)
def test_help(name):
    out = subprocess.run([sys.executable, str(SCRIPTS / name), "--help"], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert "usage:" in out.stdout and len(out.stdout.splitlines()) > 3


def start_listener(name: str, *args: str) -> subprocess.Popen:
    proc = subprocess.Popen([sys.executable, str(SCRIPTS / name), *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 20
    line = ""
    while time.monotonic() < deadline and "listening on" not in line:
        line = proc.stderr.readline()
        if not line and proc.poll() is not None:
            break
    assert "listening on" in line, f"{name} did not start: {line}{proc.stderr.read() if proc.poll() is not None else ''}"
    time.sleep(0.3)  # the SUBSCRIBE reaches the broker before we publish
    return proc


def publish(topic: str, payload: dict) -> None:
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2)
    client.connect("127.0.0.1", 1883)
    client.loop_start()
    client.publish(topic, json.dumps(payload), qos=1).wait_for_publish(timeout=10)
    client.loop_stop()
    client.disconnect()


def test_command_reaches_monitor_and_a_bad_command_is_refused():
    require_mosquitto()
    ven = f"ops-{uuid.uuid4().hex[:8]}"
    monitor = start_listener("monitor_ven.py", "--ven-id", ven, "--count", "1", "--timeout", "20")
    sent = subprocess.run([sys.executable, str(SCRIPTS / "ven_cmd_publish.py"), "--ven-id", ven, "--op", "event",
                           "--kw", "2.5", "--minutes", "1"], capture_output=True, text=True, timeout=30)
    assert sent.returncode == 0, sent.stderr
    out, err = monitor.communicate(timeout=30)
    assert monitor.returncode == 0, err
    got = json.loads(out.splitlines()[0])
    assert got["topic"] == f"ven/cmd/{ven}"
    assert got["payload"]["op"] == "event" and got["payload"]["requestedReductionKw"] == 2.5
    bad = subprocess.run([sys.executable, str(SCRIPTS / "ven_cmd_publish.py"), "--ven-id", ven, "--json",
                          '{"op": "event", "requestedReductionKw": "lots"}'], capture_output=True, text=True, timeout=30)
    assert bad.returncode != 0 and "requestedReductionKw" in bad.stderr


def test_ack_and_telemetry_listeners():
    require_mosquitto()
    ven = f"ops-{uuid.uuid4().hex[:8]}"
    acks = start_listener("ven_acks_listen.py", "--ven-id", ven, "--count", "1", "--timeout", "20")
    tele = start_listener("ven_telemetry_listen.py", "--ven-id", ven, "--meter", "--count", "2", "--timeout", "20")
    ack = {"correlationId": "c-1", "op": "event", "ok": True, "data": {"targetKw": 3, "acceptedReduceKw": 2}}
    reading = {"venId": ven, "usedPowerKw": 3.1, "shedPowerKw": 2.0, "eventId": "evt-1"}
    publish(f"ven/ack/{ven}", ack)
    publish(f"ven/telemetry/{ven}", reading)
    publish(f"oadr/meter/{ven}", reading)
    out, err = acks.communicate(timeout=30)
    assert acks.returncode == 0, err
    assert json.loads(out.splitlines()[0])["payload"] == ack
    out, err = tele.communicate(timeout=30)
    assert tele.returncode == 0, err
    topics_seen = sorted(json.loads(line)["topic"] for line in out.splitlines())
    assert topics_seen == [f"oadr/meter/{ven}", f"ven/telemetry/{ven}"]


def test_listener_exits_nonzero_when_count_not_reached():
    require_mosquitto()
    proc = subprocess.run([sys.executable, str(SCRIPTS / "ven_acks_listen.py"), "--ven-id",
                           f"nobody-{uuid.uuid4().hex[:6]}", "--count", "1", "--timeout", "1"],
                          capture_output=True, text=True, timeout=30)
    assert proc.returncode == 1 and "0 message(s)" in proc.stderr
