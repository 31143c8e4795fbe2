"""Field devices over real protocols against the in-process simulated interfaces, on one real platform in one run.

    /var/lib/volttron-dr/venv/bin/python bench/field_devices.py [--rounds 40] [--seconds 60]

Site `bench-field` (started and removed by this script) runs platform.driver with
1. the `field` site: battery inverter, meter, EV charger over Modbus TCP (volttron-lib-modbus-driver and the
   `scaling` plugin), thermostat and water heater over BACnet/IP (volttron-lib-bacnet-driver), served by
   `scripts/devices` on free loopback ports;
2. then, in place of it, the same five device types as the demo site's in-process interfaces (drivers/): the
   raw baseline with no protocol between the driver and the physics.
For each: `scrape_all` of every device (one scrape of the site), `set_point` round trips (Modbus: the EV
charger's current limit; BACnet: the thermostat's setpoint at priority 10; in process: the same points), all
through platform.driver's RPC from this process, and CPU of platform.driver (plus its protocol-proxy processes,
which do the Modbus and BACnet I/O) over a window of 5 s scrapes and /all publishes.
"""
from __future__ import annotations

import argparse
import json
import shutil
import socket
import statistics
import sys
import time
from pathlib import Path
from typing import Any, Callable

import psutil

from dr_ops.busclient import BusClient, wait_for
from dr_ops.install_site import install_site
from dr_ops.platformctl import SitePlatform
from dr_ops.sitespec import load_site
from dr_tools.devices import cli as devices
from dr_tools.devices.siteconfig import device_configs

ROOT = Path(__file__).resolve().parents[1]
FIELD = ROOT / "platform-config" / "sites" / "field"
DEMO = ROOT / "platform-config" / "sites" / "demo" / "driver"
SITE = "bench-field"
DRIVER = "platform.driver"
FIELD_DEVICES = ("battery", "meter", "ev_charger", "thermostat", "water_heater")
INPROC = {"battery": "battery", "meter": "meter", "ev_charger": "ev_charger", "thermostat": "hvac",
          "water_heater": "water_heater"}


def driver_procs(plat: SitePlatform) -> tuple[psutil.Process, list[psutil.Process]]:
    """platform.driver's process and its children (the protocol proxies)."""
    for proc in psutil.process_iter(["environ"]):
        env = proc.info.get("environ") or {}
        if env.get("VOLTTRON_HOME") == str(plat.home) and env.get("AGENT_VIP_IDENTITY") == DRIVER:
            return proc, proc.children(recursive=True)
    raise RuntimeError(f"no {DRIVER} process for {plat.home}")


def cpu(procs: list[psutil.Process]) -> list[float]:
    out = []
    for proc in procs:
        try:
            times = proc.cpu_times()
            out.append(times.user + times.system)
        except psutil.NoSuchProcess:
            out.append(0.0)
    return out


def cpu_window(plat: SitePlatform, seconds: float) -> tuple[float, float, int]:
    """(% of one core of platform.driver, % of its protocol proxies, number of proxies) over `seconds`."""
    import gevent  # the bus client keeps receiving while we wait
    driver, children = driver_procs(plat)
    c0, t0 = cpu([driver, *children]), time.monotonic()
    gevent.sleep(seconds)
    c1, dt = cpu([driver, *children]), time.monotonic() - t0
    return 100 * (c1[0] - c0[0]) / dt, 100 * sum(b - a for a, b in zip(c0[1:], c1[1:])) / dt, len(children)


def timed(rounds: int, call: Callable[[int], Any]) -> tuple[float, float]:
    samples = []
    for i in range(rounds):
        t0 = time.perf_counter()
        call(i)
        samples.append((time.perf_counter() - t0) * 1000)
    return statistics.median(samples), statistics.quantiles(samples, n=20)[-1] if len(samples) >= 20 else max(samples)


def free_udp() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def inproc_configs() -> dict[str, tuple[Any, bool]]:
    """The demo's in-process device configs as devices/inproc/<name>, registries under registry/inproc/."""
    entries: dict[str, tuple[Any, bool]] = {}
    for name, demo_name in INPROC.items():
        config = json.loads((DEMO / "devices" / "demo" / f"{demo_name}.json").read_text())
        config["remote_config"]["site"] = "inproc"
        registry = config["registry_config"].removeprefix("config://registry/")
        config["registry_config"] = f"config://registry/inproc/{registry}"
        entries[f"registry/inproc/{registry}"] = (DEMO / "registry" / registry, True)
        entries[f"devices/inproc/{name}"] = (config, False)
    return entries


def wait_alls(bus: BusClient, prefix: str, names: tuple[str, ...] | list[str]) -> None:
    alls = bus.subscribe(f"devices/{prefix}/")
    wait_for(lambda: all(alls.on_topic(f"devices/{prefix}/{d}/all") for d in names), timeout=120,
             what=f"an /all publish of every {prefix} device")


def measure(bus: BusClient, plat: SitePlatform, prefix: str, rounds: int, seconds: float,
            writes: dict[str, tuple[str, str, tuple[float, float]]]) -> dict[str, Any]:
    rpc = bus.rpc
    out: dict[str, Any] = {}
    for name in FIELD_DEVICES:
        out[f"scrape {name}"] = timed(rounds, lambda i, n=name: rpc(DRIVER, "scrape_all", f"{prefix}/{n}"))
    out["scrape site"] = timed(rounds, lambda i: [rpc(DRIVER, "scrape_all", f"{prefix}/{n}") for n in FIELD_DEVICES])
    for label, (device, point, values) in writes.items():
        out[f"set_point {label}"] = timed(rounds, lambda i, d=device, p=point, v=values:
                                          rpc(DRIVER, "set_point", f"{prefix}/{d}", p, v[i % 2]))
        rpc(DRIVER, "revert_point", f"{prefix}/{device}", point)
    out["cpu"] = cpu_window(plat, seconds)
    return out


def report(label: str, res: dict[str, Any]) -> None:
    print(f"== {label}")
    for key, value in res.items():
        if key == "cpu":
            drv, proxies, count = value
            print(f"  CPU at 5 s scrapes: platform.driver {drv:5.2f} % of one core; its {count} protocol"
                  f" prox{'y' if count == 1 else 'ies'} {proxies:5.2f} %; total {drv + proxies:5.2f} %")
        else:
            print(f"  {key:<34} {value[0]:7.2f} ms median  [{value[1]:7.2f} p95]")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=40)
    parser.add_argument("--seconds", type=float, default=60.0, help="CPU window per variant")
    args = parser.parse_args()
    plat = SitePlatform(SITE, ROOT)
    dev_site = f"{SITE}-devices"
    if plat.site_dir.exists():
        plat.stop()
        shutil.rmtree(plat.site_dir)
    devices.stop(dev_site)
    ports = devices.start(dev_site, FIELD / "devices.json", 0, 0, 0)
    bus = None
    try:
        install_site(load_site(ROOT, "field"), plat, {DRIVER})
        plat.install_lib("drivers")
        for name, config in device_configs(FIELD / "driver", ports, free_udp()).items():
            plat.store_config(DRIVER, name, config)
        plat.vctl("restart", plat.agents()[DRIVER].uuid, timeout=120)
        plat.wait_agent_running(DRIVER, timeout=60)
        bus = BusClient(plat, "bench.client").connect()
        wait_alls(bus, "field", FIELD_DEVICES)
        field = measure(bus, plat, "field", args.rounds, args.seconds, {
            "Modbus (EV current limit)": ("ev_charger", "PowerLimitKw", (7.0, 7.2)),
            "BACnet (thermostat setpoint, priority 10)": ("thermostat", "CoolingSetpointC", (24.2, 24.0))})
        for name in FIELD_DEVICES:
            plat.vctl("config", "delete", DRIVER, f"devices/field/{name}", check=False)
        for name, (data, is_csv) in inproc_configs().items():
            plat.store_config(DRIVER, name, data, csv=is_csv)
        plat.vctl("restart", plat.agents()[DRIVER].uuid, timeout=120)
        plat.wait_agent_running(DRIVER, timeout=60)
        wait_alls(bus, "inproc", FIELD_DEVICES)
        inproc = measure(bus, plat, "inproc", args.rounds, args.seconds, {
            "in process (EV power limit)": ("ev_charger", "PowerLimitKw", (7.0, 7.2)),
            "in process (HVAC setpoint)": ("thermostat", "CoolingSetpointC", (24.2, 24.0))})
        print(f"platform.driver RPC from this process, {args.rounds} rounds each; CPU windows {args.seconds:.0f} s")
        report("field site over Modbus TCP and BACnet/IP (stock drivers)", field)
        report("raw baseline: the same five device types in process (drivers/)", inproc)
        f, b = field["scrape site"][0], inproc["scrape site"][0]
        print(f"  => one scrape of the field site costs {f:.1f} ms against {b:.1f} ms in process ({f / b:.1f}x)")
    finally:
        if bus is not None:
            bus.close()
        plat.stop()
        shutil.rmtree(plat.site_dir, ignore_errors=True)
        devices.stop(dev_site)
    return 0


if __name__ == "__main__":
    sys.exit(main())
