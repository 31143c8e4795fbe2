"""A private nats-server with its MQTT listener, for tests and benchmarks: free client and MQTT ports on
loopback, JetStream (which NATS's MQTT sessions and QoS 1 need) with its store in a folder of the caller's,
`server_name` set. start/stop/restart keep the store, so persistent sessions and queued QoS 1 messages
survive a restart as they would on a real server."""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from pathlib import Path

from dr_tools.fleet.brokers import Mosquitto, free_port

NATS_SERVER = "nats-server"


def nats_server_path() -> str | None:
    return shutil.which(NATS_SERVER) or next(
        (p for p in ("/usr/sbin/nats-server", "/usr/bin/nats-server") if Path(p).exists()), None)


class NatsServer(Mosquitto):
    """`nats-server -c <generated conf>`: `port` is its MQTT listener (as Mosquitto's), `nats_port` its NATS
    client port; JetStream is stored under `folder`. Stopping (SIGTERM: JetStream is flushed, then the server
    exits), `running` and `log_tail` are the private Mosquitto's."""

    def __init__(self, folder: Path, name: str = "dr-test-nats", mqtt_port: int | None = None,
                 max_ack_pending: int = 0, extra: list[str] | None = None) -> None:
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        self.name = name
        self.port = mqtt_port or free_port()  # MQTT 3.1.1 clients (as Mosquitto's `port`)
        self.nats_port = free_port()          # NATS clients
        self.store = self.folder / "jetstream"
        self.conf = self.folder / "nats.conf"
        self.log = self.folder / "nats.log"
        self.proc: subprocess.Popen | None = None
        mqtt = [f"  port: {self.port}", '  host: "127.0.0.1"']
        if max_ack_pending:  # QoS 1 messages in flight per subscription (NATS's default: 1024)
            mqtt.append(f"  max_ack_pending: {max_ack_pending}")
        lines = [
            f"server_name: {name}",
            'host: "127.0.0.1"',
            f"port: {self.nats_port}",
            f'log_file: "{self.log}"',
            f'jetstream {{\n  store_dir: "{self.store}"\n}}',
            "mqtt {", *mqtt, "}",
            *(extra or []),
        ]
        self.conf.write_text("\n".join(lines) + "\n")

    def start(self, timeout: float = 15.0) -> NatsServer:
        binary = nats_server_path()
        if binary is None:
            raise RuntimeError("nats-server is not installed (apt-get install nats-server)")
        self.proc = subprocess.Popen([binary, "-c", str(self.conf)], stdout=subprocess.DEVNULL,
                                     stderr=subprocess.PIPE)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                err = self.proc.stderr.read().decode(errors="replace") if self.proc.stderr else ""
                raise RuntimeError(f"nats-server exited with {self.proc.returncode}: {err}\n{self.log_tail()}")
            if self._listening(self.port):
                return self
            time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"nats-server's MQTT listener not up on {self.port} within {timeout} s\n"
                           f"{self.log_tail()}")

    @staticmethod
    def _listening(port: int) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return True
        except OSError:
            return False
