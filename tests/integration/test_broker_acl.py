"""The shipped broker configuration (platform-config/mosquitto) enforces identity: a VEN's credentials can publish
only on its own ack/telemetry/meter/status topics and read only its own commands; the VTN-side bridge, with its
own credentials, sends every command and takes in every VEN's messages.

A private Mosquitto on a free port runs the shipped .conf (paths and port rewritten for the test) and the shipped
ACL file unchanged, once with client certificates (CN as username) and once with per-VEN passwords over TLS. The
bridge's core is the VTN side; VEN A and VEN B are plain paho clients. "Nothing arrived" is proven without
sleeping: each forged message is followed, on the same connection, by an allowed one, and the broker keeps a
publisher's order, so the allowed one arriving means the forged one would have arrived before it."""

from __future__ import annotations

import datetime as dt
import ipaddress
import json
import os
import shutil
import signal
import socket
import ssl
import subprocess
import threading
import time
from pathlib import Path

import gevent
import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

try:  # run the core as inside the agent: with gevent's patches of volttron.client
    import volttron.client  # noqa: F401
except ImportError:
    pass

from dr_common.mqtt.config import parse_config
from dr_common.mqtt.core import BridgeCore

pytestmark = [pytest.mark.integration, pytest.mark.mqtt]

REPO = Path(__file__).resolve().parents[2]
CONF_DIR = REPO / "platform-config" / "mosquitto"
ACL = CONF_DIR / "volttron-dr.acl"
VTN_USER = "dr-vtn-bridge"
A, B = "ven-a", "ven-b"
PASSWORDS = {VTN_USER: "vtn-pw-1d7f", A: "a-pw-93kq", B: "b-pw-x2m8"}


# --- certificates and the broker --------------------------------------------------------------------------
def fleet_certs(folder: Path, users: list[str]) -> dict[str, tuple[str, str]]:
    """A CA, a server certificate for 127.0.0.1 and a client certificate per user (CN = user); name -> (cert,
    key) with 'ca' -> (ca.pem, '')."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    folder.mkdir(parents=True, exist_ok=True)
    now = dt.datetime.now(dt.timezone.utc)

    def name(cn: str) -> x509.Name:
        return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])

    def save(label: str, cert, key) -> tuple[str, str]:
        cert_path, key_path = folder / f"{label}.pem", folder / f"{label}.key"
        cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                               serialization.NoEncryption()))
        os.chmod(key_path, 0o600)
        return str(cert_path), str(key_path)

    def build(subject: str, key, issuer: x509.Name, signer, ca: bool, usage=None, san=None):
        b = (x509.CertificateBuilder().subject_name(name(subject)).issuer_name(issuer).public_key(key.public_key())
             .serial_number(x509.random_serial_number()).not_valid_before(now - dt.timedelta(minutes=5))
             .not_valid_after(now + dt.timedelta(days=1))
             .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True))
        if usage is not None:
            b = b.add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
        if san is not None:
            b = b.add_extension(x509.SubjectAlternativeName(san), critical=False)
        return b.sign(signer, hashes.SHA256())

    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = build("volttron-dr ACL test CA", ca_key, name("volttron-dr ACL test CA"), ca_key, True)
    out = {"ca": (save("ca", ca, ca_key)[0], "")}
    srv_key = ec.generate_private_key(ec.SECP256R1())
    out["server"] = save("server", build("localhost", srv_key, ca.subject, ca_key, False,
                                         ExtendedKeyUsageOID.SERVER_AUTH,
                                         [x509.DNSName("localhost"),
                                          x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), srv_key)
    for user in users:
        key = ec.generate_private_key(ec.SECP256R1())
        out[user] = save(f"client-{user}", build(user, key, ca.subject, ca_key, False,
                                                 ExtendedKeyUsageOID.CLIENT_AUTH), key)
    return out


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ShippedBroker:
    """The shipped .conf with its listener, file paths and ACL path pointed at the test's own."""

    def __init__(self, folder: Path, shipped: Path, replace: dict[str, str]) -> None:
        self.folder = folder
        folder.mkdir(parents=True, exist_ok=True)
        self.port = _free_port()
        self.log = folder / "mosquitto.log"
        lines = []
        seen = set()
        for line in shipped.read_text().splitlines():
            key = line.split(" ", 1)[0] if line and not line.startswith("#") else ""
            if key == "listener":
                line = f"listener {self.port} 127.0.0.1"
            elif key in replace:
                line = f"{key} {replace[key]}"
            seen.add(key)
            lines.append(line)
        missing = set(replace) - seen
        assert not missing, f"the shipped {shipped.name} has no {missing}"
        lines += ["persistence false", f"log_dest file {self.log}", "log_type all", "connection_messages true"]
        if os.geteuid() == 0:
            lines.append("user root")
        self.conf = folder / "mosquitto.conf"
        self.conf.write_text("\n".join(lines) + "\n")
        self.proc: subprocess.Popen | None = None

    def start(self) -> ShippedBroker:
        if shutil.which("mosquitto") is None:
            pytest.skip("mosquitto is not installed")
        self.proc = subprocess.Popen(["mosquitto", "-c", str(self.conf)], stdout=subprocess.DEVNULL,
                                     stderr=subprocess.PIPE)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, f"mosquitto exited: {self.proc.stderr.read().decode()}\n{self.log_tail()}"
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                    return self
            except OSError:
                time.sleep(0.05)
        raise AssertionError(f"mosquitto did not listen\n{self.log_tail()}")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=5)

    def log_tail(self, n: int = 40) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-n:])
        except OSError:
            return ""


# --- a VEN as a plain MQTT client -------------------------------------------------------------------------
class Ven:
    def __init__(self, port: int, user: str, tls: ssl.SSLContext, password: str | None,
                 client_id: str | None = None) -> None:
        self.user = user
        self.received: list[tuple[str, bytes]] = []
        self.granted: dict[str, int] = {}
        self._subacks: dict[int, list[int]] = {}
        self._lock = threading.Lock()
        self.connected = threading.Event()
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id or user, protocol=mqtt.MQTTv311)
        self.client.tls_set_context(tls)
        if password is not None:
            self.client.username_pw_set(user, password)
        self.client.on_connect = lambda c, u, f, rc, p: self.connected.set() if not rc.is_failure else None
        self.client.on_disconnect = lambda c, u, f, rc, p: self.connected.clear()
        self.client.on_message = self._on_message
        self.client.on_subscribe = self._on_subscribe
        self.client.connect("127.0.0.1", port, keepalive=30)
        self.client.loop_start()
        assert self.connected.wait(10), f"{user} could not connect"

    def _on_message(self, client, userdata, msg) -> None:
        with self._lock:
            self.received.append((msg.topic, msg.payload))

    def _on_subscribe(self, client, userdata, mid, reasons, properties) -> None:
        self._subacks[mid] = [rc.value for rc in reasons]

    def subscribe(self, *topics: str) -> None:
        """Subscribe and wait for the SUBACK; `granted` maps each filter to its return code (0x80: refused)."""
        rc, mid = self.client.subscribe([(t, 1) for t in topics])
        codes = _wait(lambda: self._subacks.get(mid), 10, f"SUBACK for {topics}")
        self.granted.update(zip(topics, codes, strict=True))

    def publish(self, topic: str, payload: dict) -> None:
        self.client.publish(topic, json.dumps(payload), qos=1).wait_for_publish(10)

    def topics(self) -> list[str]:
        with self._lock:
            return [t for t, _ in self.received]

    def stop(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


class RecordingBus:
    def __init__(self) -> None:
        self.messages: list[tuple[str, dict]] = []

    def publish(self, topic: str, message: dict) -> None:
        self.messages.append((topic, message))

    def items(self, topic: str) -> list[dict]:
        return [item for t, m in self.messages if t == topic for item in m["items"]]


def _wait(predicate, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        gevent.sleep(0.02)
    raise AssertionError(f"{what}: not within {timeout:.0f} s")


# --- the test ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("identity", ["certificate", "password"])
def test_a_ven_can_act_only_as_itself_at_the_broker(tmp_path, identity, figure):
    certs = fleet_certs(tmp_path / "certs", [VTN_USER, A, B])
    ca, (server_cert, server_key) = certs["ca"][0], certs["server"]
    if identity == "certificate":
        broker = ShippedBroker(tmp_path, CONF_DIR / "volttron-dr-mtls.conf", {
            "cafile": ca, "certfile": server_cert, "keyfile": server_key, "acl_file": str(ACL)})
    else:
        passwd = tmp_path / "passwd"
        for n, (user, password) in enumerate(PASSWORDS.items()):
            subprocess.run(["mosquitto_passwd", *(["-c"] if n == 0 else []), "-b", str(passwd), user, password],
                           check=True, capture_output=True)
        broker = ShippedBroker(tmp_path, CONF_DIR / "volttron-dr-password.conf", {
            "certfile": server_cert, "keyfile": server_key, "password_file": str(passwd), "acl_file": str(ACL)})
    broker.start()

    def tls_for(user: str) -> ssl.SSLContext:
        ctx = ssl.create_default_context(cafile=ca)
        if identity == "certificate":
            ctx.load_cert_chain(*certs[user])
        return ctx

    def password(user: str) -> str | None:
        return PASSWORDS[user] if identity == "password" else None

    bridge_tls = {"ca_file": ca}
    broker_cfg: dict = {"port": broker.port, "client_id": VTN_USER, "clean_session": True, "reconnect_max_s": 1}
    if identity == "certificate":
        bridge_tls.update(cert_file=certs[VTN_USER][0], key_file=certs[VTN_USER][1])
    else:
        broker_cfg.update(username=VTN_USER, password=PASSWORDS[VTN_USER])
    bus = RecordingBus()
    core = BridgeCore(parse_config({"broker": dict(broker_cfg, tls=bridge_tls), "batch": {"max_delay_ms": 5},
                                    "dedup": {"window_s": 0}, "store": {"path": str(tmp_path / "outbox.sqlite")}}),
                      bus)
    vens: list[Ven] = []
    try:
        core.start()
        _wait(lambda: core.connected, 15, f"the VTN bridge connected\n{broker.log_tail()}")
        _wait(lambda: core.health()["status"] == "GOOD", 10, "the VTN bridge's subscriptions granted")
        ven_a = Ven(broker.port, A, tls_for(A), password(A))
        ven_b = Ven(broker.port, B, tls_for(B), password(B))
        vens += [ven_a, ven_b]
        ven_a.subscribe(f"ven/cmd/{A}")
        # B asks for A's commands and for everyone's: the broker refuses or never delivers them
        ven_b.subscribe(f"ven/cmd/{B}", f"ven/cmd/{A}", "ven/cmd/#", "ven/ack/+", "ven/telemetry/#")
        assert ven_a.granted[f"ven/cmd/{A}"] == 1 and ven_b.granted[f"ven/cmd/{B}"] == 1

        # 1. commands: the bridge sends one to A, then one to B; B gets its own only, A its own only
        result = core.on_bus_message("dr/batch/cmd", {"commands": [
            {"venId": A, "op": "event", "correlationId": "cA", "eventId": "e1", "requestedReductionKw": 1.0,
             "until": "2099-01-01T00:00:00Z"},
            {"venId": B, "op": "event", "correlationId": "cB", "eventId": "e1", "requestedReductionKw": 1.0,
             "until": "2099-01-01T00:00:00Z"}]})
        assert result["sent"] == 2
        _wait(lambda: f"ven/cmd/{B}" in ven_b.topics(), 10, "B's command")
        _wait(lambda: f"ven/cmd/{A}" in ven_a.topics(), 10, "A's command")
        assert ven_b.topics() == [f"ven/cmd/{B}"], "B read a command that was not its own"
        assert ven_a.topics() == [f"ven/cmd/{A}"]

        # 2. B forges A's ack, telemetry, meter reading and status, and a command; then acks its own command
        forged = {"venId": A, "usedPowerKw": 999.0, "ts": "2026-05-01T14:00:00Z"}
        ven_b.publish(f"ven/ack/{A}", {"correlationId": "cA", "ok": False, "error": "forged", "op": "event"})
        ven_b.publish(f"ven/telemetry/{A}", forged)
        ven_b.publish(f"oadr/meter/{A}", forged)
        ven_b.publish(f"ven/status/{A}", {"venId": A, "online": False})
        ven_b.publish(f"ven/cmd/{A}", {"op": "restore", "correlationId": "forged"})
        ven_b.publish(f"ven/ack/{B}", {"correlationId": "cB", "ok": True, "op": "event"})
        acks = _wait(lambda: bus.items("dr/batch/ack"), 10, "B's own ack on the bus")
        assert [(a["venId"], a["correlationId"]) for a in acks] == [(B, "cB")]
        assert bus.items("dr/batch/telemetry") == [] and bus.items("dr/batch/status") == []
        # ... and A, acking and reporting as itself, is heard on every one of its topics
        own = {"venId": A, "usedPowerKw": 2.0, "ts": "2026-05-01T14:00:05Z"}
        ven_a.publish(f"ven/telemetry/{A}", own)
        ven_a.publish(f"oadr/meter/{A}", dict(own, ts="2026-05-01T14:00:06Z"))
        ven_a.publish(f"ven/status/{A}", {"venId": A, "online": True})
        ven_a.publish(f"ven/ack/{A}", {"correlationId": "cA", "ok": True, "op": "event"})
        _wait(lambda: len(bus.items("dr/batch/ack")) == 2, 10, "A's ack on the bus")
        assert [(a["venId"], a["ok"]) for a in bus.items("dr/batch/ack")] == [(B, True), (A, True)]
        _wait(lambda: len(bus.items("dr/batch/telemetry")) == 2 and bus.items("dr/batch/status"), 10,
              "A's telemetry, meter reading and status")
        assert {t["usedPowerKw"] for t in bus.items("dr/batch/telemetry")} == {2.0}
        assert [s["online"] for s in bus.items("dr/batch/status")] == [True]
        # the forged command never reached A either (A's own command came before; nothing after it)
        assert ven_a.topics() == [f"ven/cmd/{A}"]
        # B read nothing of A's, whatever it subscribed to
        assert all(not t.endswith(f"/{A}") for t in ven_b.topics()), ven_b.topics()
        assert core.status()["rejectsTotal"] == 0

        # 3. B cannot take over A's session by naming A's client id (the client id is the username)
        intruder = Ven(broker.port, B, tls_for(B), password(B), client_id=A)
        vens.append(intruder)
        ven_a.publish(f"ven/ack/{A}", {"correlationId": "cA2", "ok": True, "op": "event"})
        _wait(lambda: len(bus.items("dr/batch/ack")) == 3, 10, "A still connected and heard")
        assert ven_a.connected.is_set()
        refused = sorted(t for t, rc in ven_b.granted.items() if rc >= 0x80)
        figure(f"broker ACL ({identity})",
               f"B's forged ack/telemetry/meter/status/command for A: none delivered; B's subscriptions refused "
               f"by the broker: {', '.join(refused) or 'none (granted, nothing delivered)'}")
    finally:
        for ven in vens:
            ven.stop()
        core.stop()
        broker.stop()
