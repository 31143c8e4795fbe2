"""Cost of the simulated devices: one scrape of the whole `office` site, and platform.driver's CPU at 5 s scrapes.

    /var/lib/volttron-dr/venv/bin/python bench/devices_scrape.py [--rounds 2000] [--seconds 60] [--in-process-only]

1. In process (no platform): the office site's seven interfaces built from platform-config/sites/office/driver the
   way platform.driver builds them; one round reads every point of every device (what the driver's polls do in
   one 5 s cycle). Raw baseline in the same run: the same number of points on an interface whose registers
   return stored constants (what VOLTTRON's fake driver does).
2. On a real platform (site `bench-devices`, started and removed by this script): CPU of the platform.driver
   process over a window, first with no devices (raw baseline), then with the office site at 5 s scrapes and
   /all publishes.
"""
from __future__ import annotations

import argparse
import csv
import json
import shutil
import statistics
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]

from dr_devices import forget_sites, get_site  # noqa: E402
from volttron.driver.base.config import PointConfig, RemoteConfig  # noqa: E402
from volttron.driver.base.interfaces import BaseInterface, BaseRegister, BasicRevert  # noqa: E402
from dr_ops.procstat import agent_pid, cpu_seconds  # noqa: E402

OFFICE = ROOT / "platform-config" / "sites" / "office" / "driver"
BENCH_SITE = "bench-devices"
DRIVER = "platform.driver"
DIST = "volttron-dr-sim-drivers"


class ConstRegister(BaseRegister):
    def __init__(self, name: str) -> None:
        super().__init__("byte", True, name, "")
        self.python_type = float
        self.value = 1.0


class ConstInterface(BasicRevert, BaseInterface):
    """Registers that return a stored value: the floor any interface pays per point."""

    default_config: dict = {}

    def __init__(self, config: RemoteConfig, *args: Any, **kwargs: Any) -> None:
        BasicRevert.__init__(self)
        BaseInterface.__init__(self, config, *args, **kwargs)

    def create_register(self, register_definition: PointConfig) -> ConstRegister:
        return ConstRegister(register_definition.volttron_point_name)

    def get_point(self, topic: str, **kwargs: Any) -> float:
        return self.get_register_by_name(topic).value

    def _set_point(self, topic: str, value: Any) -> float:
        raise RuntimeError("read only")

    def _get_multiple_points(self, topics, **kwargs: Any) -> tuple[dict, dict]:
        return {t: self.get_register_by_name(t).value for t in topics}, {}


class StepClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def office_devices() -> list[tuple[str, dict, list[dict[str, str]]]]:
    devices = []
    for path in sorted((OFFICE / "devices" / "office").glob("*.json")):
        config = json.loads(path.read_text())
        with (OFFICE / config["registry_config"].removeprefix("config://")).open(newline="") as handle:
            rows = list(csv.DictReader(handle))
        devices.append((f"devices/office/{path.stem}", config["remote_config"], rows))
    return devices


def build_site(time_scale: float, const: bool) -> tuple[list[Any], StepClock]:
    forget_sites()
    clock = StepClock()
    get_site("office", clock)
    interfaces = []
    for topic, remote, rows in office_devices():
        config = RemoteConfig(**dict(remote, time_scale=time_scale))
        klass = ConstInterface if const else BaseInterface.get_interface_subclass(config.driver_type)
        interface = klass(config, None)
        for row in rows:
            interface.insert_register(interface.create_register(interface.REGISTER_CONFIG_CLASS(**row)), topic)
        interfaces.append(interface)
    return interfaces, clock


def time_rounds(interfaces: list[Any], clock: StepClock, rounds: int) -> tuple[list[float], int]:
    names = [i.get_register_names() for i in interfaces]
    points = sum(len(n) for n in names)
    samples = []
    for _ in range(rounds):
        clock.now += 5.0  # one 5 s scrape cycle of wall time
        t0 = time.perf_counter()
        for interface, topics in zip(interfaces, names, strict=True):
            results, errors = interface.get_multiple_points(topics)
            if errors:
                raise RuntimeError(f"scrape errors: {errors}")
        samples.append((time.perf_counter() - t0) * 1000.0)
    return samples, points


def in_process(rounds: int) -> float:
    print(f"== one scrape of the whole office site, {rounds} rounds (median [p95] ms)")
    rows = []
    for label, time_scale, const in (("raw baseline: constant registers", 1.0, True),
                                     ("simulated office, time_scale 1", 1.0, False),
                                     ("simulated office, time_scale 60", 60.0, False),
                                     ("simulated office, time_scale 3600", 3600.0, False)):
        interfaces, clock = build_site(time_scale, const)
        time_rounds(interfaces, clock, max(10, rounds // 10))  # warm-up
        samples, points = time_rounds(interfaces, clock, rounds)
        median = statistics.median(samples)
        p95 = statistics.quantiles(samples, n=20)[-1]
        rows.append((label, median))
        print(f"  {label:<38} {len(interfaces)} devices, {points} points: {median:.3f} ms [{p95:.3f}]")
    base = rows[0][1]
    for label, median in rows[1:]:
        print(f"  {label:<38} {median / base:.1f}x the raw baseline")
    forget_sites()
    return rows[1][1]


# -- on a real platform ----------------------------------------------------------------------------------------------
def driver_pid(home: Path) -> int:
    return agent_pid(home, DRIVER)


def measure(pid: int, seconds: float) -> float:
    """Percent of one core used by `pid` over `seconds` of wall time."""
    import gevent  # the bus client of this process keeps receiving while we wait

    c0, t0 = cpu_seconds(pid), time.monotonic()
    gevent.sleep(seconds)
    return 100.0 * (cpu_seconds(pid) - c0) / (time.monotonic() - t0)


def on_platform(seconds: float, scrape_ms: float) -> None:
    from dr_ops.busclient import BusClient, wait_for
    from dr_ops.install_site import install_site
    from dr_ops.platformctl import SitePlatform
    from dr_ops.sitespec import AgentSpec, DriverSpec, SiteSpec

    plat = SitePlatform(BENCH_SITE, ROOT)
    if plat.site_dir.exists():
        plat.stop()
        shutil.rmtree(plat.site_dir)
    print(f"== platform.driver CPU at 5 s scrapes (site {BENCH_SITE}, {seconds:.0f} s windows)")
    plat.start()
    bus = None
    try:
        plat.install_lib("volttron-lib-tree")
        plat.vctl("remove-lib", DIST, check=False)  # install-lib keeps an installed distribution of the same version
        with plat.staged("drivers"):  # other sites install from the same staged copy
            plat.vctl("install-lib", str(plat.stage("drivers")), timeout=300)
        plat.store_config(DRIVER, "config", OFFICE / "config.json")
        plat.install_agent(DRIVER, package="volttron-platform-driver", priority=10)
        plat.wait_agent_running(DRIVER, timeout=60)
        measure(driver_pid(plat.home), 5)  # let the start settle
        idle = measure(driver_pid(plat.home), seconds)
        print(f"  raw baseline: platform.driver without devices      {idle:5.2f} % of one core")

        spec = SiteSpec(name="office", folder=OFFICE.parent,
                        agents=(AgentSpec(identity=DRIVER, package="volttron-platform-driver", priority=10),),
                        driver=DriverSpec(libs=("volttron-lib-tree",), configs=OFFICE))
        install_site(spec, plat, {DRIVER})  # stores the office configs and restarts the driver
        plat.wait_agent_running(DRIVER, timeout=60)
        bus = BusClient(plat, "bench.client").connect()
        alls = bus.subscribe("devices/office/")
        devices = [p.stem for p in (OFFICE / "devices" / "office").glob("*.json")]
        wait_for(lambda: all(alls.on_topic(f"devices/office/{d}/all") for d in devices), timeout=60,
                 what="an /all publish of every office device")
        pid = driver_pid(plat.home)
        seen = len(alls)
        loaded = measure(pid, seconds)
        publishes = len(alls) - seen
        per_cycle_ms = (loaded - idle) / 100.0 * 5.0 * 1000.0
        print(f"  office site: {len(devices)} devices polled and /all-published every 5 s "
              f"{loaded:5.2f} % of one core ({publishes} /all publishes seen in the window)")
        print(f"  => {loaded - idle:.2f} % of one core above the baseline: {per_cycle_ms:.1f} ms of driver CPU per 5 s"
              f" cycle (scrape + metadata + {len(devices)} bus publishes)")
        print(f"  => the simulation itself ({scrape_ms:.3f} ms per cycle in process) is"
              f" {100 * scrape_ms / per_cycle_ms:.1f} % of it")
    finally:
        if bus is not None:
            bus.close()
        plat.stop()
        shutil.rmtree(plat.site_dir, ignore_errors=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=2000, help="in-process scrape rounds per variant")
    parser.add_argument("--seconds", type=float, default=60.0, help="CPU measurement window on the platform")
    parser.add_argument("--in-process-only", action="store_true", help="skip the real-platform measurement")
    args = parser.parse_args()
    scrape_ms = in_process(args.rounds)
    if not args.in_process_only:
        on_platform(args.seconds, scrape_ms)
    return 0


if __name__ == "__main__":
    sys.exit(main())
