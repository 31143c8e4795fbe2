"""A plain-Python stand-in for platform.driver used by the VEN unit tests, and tests of that stand-in.

`SiteHarness` builds a site's devices from its real driver configs (platform-config/sites/<site>/driver) with the
simulated-device physics (`dr_devices`), on a fake clock. It plays the platform's part for a `VenEngine`: scrapes
every device every `scrape_s` seconds (meter last, as the driver publishes it), executes the engine's set_point
/ revert_point ops against the devices (enforcing the registry's Writable/Min/Max like the interface does) and
reports each op's result back. Like platform.driver 2.0, whose `/all` publish carries the values of the previous
poll (measured on the platform), each scrape publishes what the previous one read (`lag=True`). No VOLTTRON
import.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

import pytest
from dr_devices import PointError, SiteModel, build_device
from dr_ven_load_control.config import VenConfig, parse_config
from dr_ven_load_control.engine import REVERT, Op, VenEngine
from dr_ven_load_control.store import StateStore

REPO = Path(__file__).resolve().parents[2]
SITES = REPO / "platform-config" / "sites"
T0 = 1_800_000_000.0  # an epoch second; every harness starts here


class FakeClock:
    def __init__(self, start: float = T0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now


def ven_config(site: str = "demo", **overrides: Any) -> dict[str, Any]:
    data = json.loads((SITES / site / "ven.json").read_text())
    data.update(overrides)
    return data


class SiteHarness:
    def __init__(self, site: str = "demo", config: dict[str, Any] | None = None, start_hour: float = 14.0,
                 state_path: Path | None = None, clock: FakeClock | None = None,
                 device_overrides: dict[str, dict[str, Any]] | None = None, scrape_s: float = 5.0,
                 lag: bool = True) -> None:
        self.clock = clock or FakeClock()
        self.site = SiteModel(site, clock=self.clock)
        self.models: dict[str, Any] = {}
        self.limits: dict[str, dict[str, tuple[bool, float | None, float | None]]] = {}
        driver = SITES / site / "driver"
        for path in sorted((driver / "devices").rglob("*.json")):
            device = str(path.relative_to(driver / "devices").with_suffix(""))
            spec = json.loads(path.read_text())
            remote = dict(spec["remote_config"])
            kind = remote.pop("driver_type")
            for key in ("site", "time_scale"):
                remote.pop(key, None)
            seed = remote.pop("seed", None)
            remote.pop("start_hour", None)
            remote.update((device_overrides or {}).get(device.split("/")[-1], {}))
            model = build_device(kind, remote, start_hour=start_hour, seed=seed)
            self.site.add(device, model)
            self.models[device] = model
            registry = driver / "registry" / spec["registry_config"].split("/")[-1]
            self.limits[device] = _registry_limits(registry)
        self.cfg: VenConfig = parse_config(config or ven_config(site))
        self.state_path = state_path
        self.engine = self.new_engine()
        self.scrape_s = scrape_s
        self.next_scrape = self.clock.now
        self.lag = lag
        self.polled: dict[str, dict[str, Any]] = {}
        self.log: list[tuple[float, Op, str | None]] = []
        self.meter_log: list[tuple[float, float]] = []
        self.telemetry_log: list[dict[str, Any]] = []

    def new_engine(self) -> VenEngine:
        store = StateStore(self.state_path) if self.state_path else None
        return VenEngine(self.cfg, store, clock=self.clock)

    # --- the driver's side ----------------------------------------------------------------------------------
    def values(self, device: str) -> dict[str, Any]:
        self.site.sync()
        model = self.models[device]
        out = {}
        for name in model.points:
            value = model.read(name)
            out[name] = round(value, 4) if isinstance(value, float) else value
        return out

    def point(self, device: str, name: str) -> Any:
        return self.values(device)[name]

    def meter_kw(self) -> float:
        return float(self.point(self.cfg.meter_path, self.cfg.meter_point))

    def apply(self, op: Op) -> None:
        model = self.models[op.path]
        writable, lo, hi = self.limits[op.path].get(op.point, (False, None, None))
        if not writable:
            raise PointError(f"{op.path}/{op.point}: read only")
        self.site.sync()
        if op.kind == REVERT:
            model.write(op.point, model.defaults()[op.point])
            return
        value = op.value
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            if (lo is not None and value < lo) or (hi is not None and value > hi):
                raise PointError(f"{op.path}/{op.point}: {value} outside [{lo}, {hi}]")
        model.write(op.point, value)

    def execute(self, ops: list[Op]) -> None:
        """Send ops as the agent does: in order, results back to the engine, then its follow-up ops."""
        while ops:
            results: list[tuple[Op, str | None]] = []
            for op in ops:
                try:
                    self.apply(op)
                    results.append((op, None))
                except PointError as exc:
                    results.append((op, str(exc)))
                self.log.append((self.clock.now, op, results[-1][1]))
            ops = self.engine.ops_done(results)

    def scrape(self) -> None:
        """Publish every device (meter last) and poll them; `meter_log` keeps the true meter at each poll."""
        polled = {device: self.values(device) for device in self.cfg.device_paths}
        published = self.polled if self.lag else polled
        self.polled = polled
        self.meter_log.append((self.clock.now, float(polled[self.cfg.meter_path][self.cfg.meter_point])))
        for device in self.cfg.device_paths[1:] + [self.cfg.meter_path]:
            if device in published:
                self.execute(self.engine.on_device(device, published[device]))

    # --- time -------------------------------------------------------------------------------------------------
    def run(self, seconds: float, step_s: float = 0.5) -> None:
        """Advance time: the engine's timers at their deadlines (as the agent's timer does), a scrape and a
        telemetry report exactly every scrape period (as the driver's schedule does), at most `step_s` apart."""
        end = self.clock.now + seconds
        while self.clock.now < end - 1e-9:
            now = self.clock.now
            candidates = [end, now + step_s]
            deadline = self.engine.next_deadline()
            for t in (self.next_scrape, deadline):
                if t is not None and t > now + 1e-9:
                    candidates.append(t)
            self.clock.now = min(candidates)
            self.execute(self.engine.on_timer())
            if self.clock.now >= self.next_scrape - 1e-9:
                self.scrape()
                report = self.engine.telemetry()
                if report is not None:
                    self.telemetry_log.append(report.to_payload())
                self.next_scrape += self.scrape_s

    def command(self, **payload: Any) -> dict[str, Any]:
        """Handle a command as the agent does: a live meter read first when the last publish is ambiguous."""
        if self.engine.meter_uncertain():
            self.engine.on_meter_live(self.meter_kw())
        outcome = self.engine.on_command(payload)
        self.execute(outcome.ops)
        return outcome.ack.to_payload()

    def event(self, kw: float, duration_s: float = 60.0, **extra: Any) -> dict[str, Any]:
        payload = {"op": "event", "correlationId": extra.pop("correlationId", f"c-{len(self.log)}-{self.clock.now}"),
                   "eventId": extra.pop("eventId", "evt-1"), "requestedReductionKw": kw,
                   "until": self.clock.now + duration_s, **extra}
        return self.command(**payload)

    def reduction(self) -> float:
        """Metered reduction now against the active event's baseline."""
        event = self.engine.event
        if event is None or event.baseline_kw is None:
            raise AssertionError("no active event with a baseline")
        return event.baseline_kw - self.meter_kw()

    def writable_values(self) -> dict[tuple[str, str], Any]:
        out = {}
        for device, limits in self.limits.items():
            values = self.values(device)
            for point, (writable, _, _) in limits.items():
                if writable:
                    out[(device, point)] = values[point]
        return out


def _registry_limits(path: Path) -> dict[str, tuple[bool, float | None, float | None]]:
    out = {}
    with path.open(newline="") as handle:
        for row in csv.DictReader(handle):
            lo = float(row["Min"]) if row.get("Min") else None
            hi = float(row["Max"]) if row.get("Max") else None
            out[row["Volttron Point Name"]] = (row["Writable"].strip().upper() == "TRUE", lo, hi)
    return out


# --- tests of the stand-in itself ------------------------------------------------------------------------------

def test_a_write_shows_on_the_meter_at_the_next_read():
    site = SiteHarness()
    before = site.meter_kw()
    ev = site.point("demo/ev_charger", "PowerKw")
    assert ev == pytest.approx(7.2)
    site.apply(Op("set", "demo/ev_charger", "PowerLimitKw", 5.0, "ev_charger", "shed"))
    assert site.meter_kw() == pytest.approx(before - 2.2, abs=1e-3)


def test_registry_limits_and_read_only_points_are_enforced():
    site = SiteHarness()
    with pytest.raises(PointError):
        site.apply(Op("set", "demo/ev_charger", "PowerKw", 1.0, "ev_charger", "shed"))
    with pytest.raises(PointError):
        site.apply(Op("set", "demo/hvac", "CoolingSetpointC", 29.0, "hvac", "shed"))  # registry Max 28
    with pytest.raises(PointError):
        site.apply(Op("set", "demo/panel", "FridgeEnable", False, "panel.Fridge", "shed"))  # critical


def test_time_advances_the_physics():
    site = SiteHarness()
    soc = site.point("demo/ev_charger", "SocPercent")
    site.clock.now += 3600
    assert site.point("demo/ev_charger", "SocPercent") > soc + 5


def test_publishes_carry_the_previous_poll_like_platform_driver():
    site = SiteHarness()
    seen: list[float] = []

    def record(path, values, now=None):
        if path == "demo/meter":
            seen.append(values["PowerKw"])
        return []

    site.engine.on_device = record
    site.scrape()  # polls only: nothing polled before
    site.apply(Op("set", "demo/ev_charger", "PowerLimitKw", 5.2, "ev_charger", "shed"))
    site.scrape()  # publishes the poll from before the write
    site.scrape()  # publishes the poll made after it
    assert len(seen) == 2
    assert seen[0] - seen[1] == pytest.approx(2.0, abs=1e-3)
    assert site.meter_log[0][1] - site.meter_log[1][1] == pytest.approx(2.0, abs=1e-3)
