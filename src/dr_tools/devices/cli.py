"""`scripts/devices start|stop|status --site NAME`: a site's field-device servers as one background process.

    scripts/devices start --site field [--config-site field] [--modbus-port 5020] [--bacnet-port 47821]
                          [--control-port 5030]
    scripts/devices status --site field        # ports, every device's power and faults (JSON)
    scripts/devices stop --site field

The device list is platform-config/sites/<config-site>/devices.json (config-site defaults to the site's own
folder, else `field`), ports default to its `ports`; a port of 0 takes a free one. Everything listens on
127.0.0.1 only. Process id, ports and log live in $VDR_STATE/devices/<site>/.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

SITE_RE = re.compile(r"^[a-z0-9][a-z0-9_-]{0,31}$")
HOST = "127.0.0.1"


def state_dir(site: str) -> Path:
    """Where a site's device process keeps its pid, ports and log."""
    base = os.environ.get("VDR_STATE") or ("/var/lib/volttron-dr" if os.geteuid() == 0 else
                                           str(Path.home() / ".local/state/volttron-dr"))
    return Path(base) / "devices" / site


def repo_root() -> Path:
    env = os.environ.get("VDR_REPO")
    return Path(env) if env else Path(__file__).resolve().parents[3]


def free_port(kind: int = socket.SOCK_STREAM) -> int:
    """A port nobody listens on now (TCP or UDP) on 127.0.0.1."""
    with socket.socket(socket.AF_INET, kind) as sock:
        sock.bind((HOST, 0))
        return sock.getsockname()[1]


def free_udp_run(count: int, attempts: int = 50) -> int:
    """The first of `count` consecutive UDP ports nobody uses now on 127.0.0.1 (the BACnet devices' ports)."""
    for _ in range(attempts):
        first = free_port(socket.SOCK_DGRAM)
        socks = []
        try:
            for port in range(first, first + count):
                sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
                socks.append(sock)
                sock.bind((HOST, port))
            return first
        except OSError:
            continue
        finally:
            for sock in socks:
                sock.close()
    raise RuntimeError(f"no {count} consecutive free UDP ports on {HOST}")


def running_pid(site: str) -> int | None:
    """The pid of the site's device process, when it runs."""
    try:
        pid = int((state_dir(site) / "pid").read_text())
        try:
            if os.waitpid(pid, os.WNOHANG)[0] == pid:  # our own child that exited (start() in this process)
                return None
        except ChildProcessError:
            pass
        os.kill(pid, 0)
    except (OSError, ValueError):
        return None
    return pid


def control(ports: dict[str, Any], request: dict[str, Any], timeout: float = 5.0) -> dict[str, Any]:
    """One request on a running site's control port."""
    with socket.create_connection((HOST, int(ports["control"])), timeout=timeout) as sock:
        sock.sendall((json.dumps(request) + "\n").encode())
        data = b""
        while not data.endswith(b"\n"):
            chunk = sock.recv(65536)
            if not chunk:
                break
            data += chunk
    return json.loads(data)


def read_ports(site: str) -> dict[str, Any]:
    """The ports a running site's device process serves."""
    return json.loads((state_dir(site) / "ports.json").read_text())


def start(site: str, config: Path, modbus: int, bacnet: int, ctl: int, timeout: float = 20.0) -> dict[str, Any]:
    """Start the site's device process (or return the ports of the one running); waits until it serves."""
    if running_pid(site) is not None:
        return read_ports(site)
    sdir = state_dir(site)
    sdir.mkdir(parents=True, exist_ok=True)
    ports_file = sdir / "ports.json"
    ports_file.unlink(missing_ok=True)
    modbus = modbus or free_port()
    if not bacnet:
        listed = json.loads(config.read_text()).get("devices", [])
        bacnet = free_udp_run(max(1, sum(1 for d in listed if isinstance(d, dict) and d.get("protocol") == "bacnet")))
    ctl = ctl or free_port()
    with (sdir / "devices.log").open("ab") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "dr_tools.devices.service", "--config", str(config), "--modbus-port", str(modbus),
             "--bacnet-port", str(bacnet), "--control-port", str(ctl), "--ports-file", str(ports_file)],
            stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    (sdir / "pid").write_text(str(proc.pid))
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if ports_file.is_file():
            return read_ports(site)
        if proc.poll() is not None:
            raise RuntimeError(f"device process exited with {proc.returncode}; see {sdir / 'devices.log'}")
        time.sleep(0.1)
    proc.terminate()
    raise RuntimeError(f"device process not serving after {timeout:.0f} s; see {sdir / 'devices.log'}")


def stop(site: str, timeout: float = 10.0) -> bool:
    """Stop the site's device process; True when one was running."""
    pid = running_pid(site)
    if pid is None:
        return False
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and running_pid(site) is not None:
        time.sleep(0.1)
    if running_pid(site) is not None:
        os.kill(pid, signal.SIGKILL)
    for name in ("pid", "ports.json"):
        (state_dir(site) / name).unlink(missing_ok=True)
    return True


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="scripts/devices", description=__doc__.split("\n\n")[0])
    parser.add_argument("action", choices=("start", "stop", "status"))
    parser.add_argument("--site", default="field")
    parser.add_argument("--config-site", help="folder of platform-config/sites/ holding devices.json")
    parser.add_argument("--modbus-port", type=int)
    parser.add_argument("--bacnet-port", type=int)
    parser.add_argument("--control-port", type=int)
    args = parser.parse_args(argv)
    if not SITE_RE.match(args.site):
        parser.error("--site: 1-32 lowercase letters, digits, _ or -")
    if args.action == "stop":
        print(f"devices of site {args.site}: {'stopped' if stop(args.site) else 'not running'}")
        return 0
    if args.action == "status":
        if running_pid(args.site) is None:
            print(f"devices of site {args.site}: not running")
            return 3
        print(json.dumps(control(read_ports(args.site), {"op": "status"}), indent=2))
        return 0
    sites = repo_root() / "platform-config" / "sites"
    config_site = args.config_site or (args.site if (sites / args.site / "devices.json").is_file() else "field")
    config = sites / config_site / "devices.json"
    try:
        defaults = json.loads(config.read_text()).get("ports", {})
        ports = start(args.site, config,
                      args.modbus_port if args.modbus_port is not None else defaults.get("modbus", 0),
                      args.bacnet_port if args.bacnet_port is not None else defaults.get("bacnet", 0),
                      args.control_port if args.control_port is not None else defaults.get("control", 0))
    except (OSError, ValueError, RuntimeError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(json.dumps(ports))
    return 0


if __name__ == "__main__":
    sys.exit(main())
