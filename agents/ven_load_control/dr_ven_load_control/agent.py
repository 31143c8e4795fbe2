"""dr.ven.<venId>: the load-control VEN agent (thin wiring around VenEngine).

Subscribes to its command topic and to the driver's `/all` publishes of its devices, executes the engine's
set_point / revert_point ops on platform.driver, publishes acks and 5-second telemetry, runs the engine's
deadlines (event start, `until`, staggered restores, retries) on its own timer, and restores every shed point
on stop and on a config change.
"""

from __future__ import annotations

import logging
import os
import resource
import sys
import time
from pathlib import Path
from typing import Any

import gevent
import gevent.event
import gevent.lock
from volttron.client.vip.agent import RPC, Agent, Core
from volttron.utils import load_config
from volttron.utils.commands import vip_main

from dr_common import topics
from dr_common.config import ConfigError
from dr_common.payloads import Ack, Telemetry
from dr_common.rejects import RateLimitedLog
from dr_common.topics import DRIVER_IDENTITY, DriverRpc, VenRpc
from dr_common.vip_repr import bound_message_repr
from dr_ven_load_control import __version__
from dr_ven_load_control.config import VenConfig, parse_config
from dr_ven_load_control.engine import REVERT, Op, VenEngine
from dr_ven_load_control.intake import raw_correlation, raw_op
from dr_ven_load_control.latency import LatencyLog
from dr_ven_load_control.sender import send_round
from dr_ven_load_control.store import StateStore

_log = logging.getLogger(__name__)

CONFIG_NAME = "config"
OVERRIDES_NAME = "overrides"
STATE_FILE = "ven_state.json"
MAX_FOLLOW_UPS = 8  # rounds of make-up writes after failed ones, per trigger


class VenLoadControlAgent(Agent):
    """dr.ven.<venId>: wires a VenEngine to the bus, the config store, RPC and platform.driver."""

    def __init__(self, config_path: str | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._install_config: dict[str, Any] = load_config(config_path) if config_path else {}
        self._lock = gevent.lock.RLock()
        self._wake = gevent.event.Event()
        self._cfg: VenConfig | None = None
        self._engine: VenEngine | None = None
        self._config_error: str | None = None
        self._subscriptions: list[str] = []
        self._timer: gevent.Greenlet | None = None
        self._telemetry: gevent.Greenlet | None = None
        self._latency = LatencyLog()
        self._overrides_entry: dict[str, Any] = {}
        self._rate_log = RateLimitedLog(_log, 60.0)
        self.vip.config.set_default(CONFIG_NAME, self._install_config)
        self.vip.config.subscribe(self._on_config, actions=["NEW", "UPDATE"], pattern=CONFIG_NAME)
        self.vip.config.subscribe(self._on_overrides, actions=["NEW", "UPDATE", "DELETE"], pattern=OVERRIDES_NAME)

    # --- lifecycle ----------------------------------------------------------------------------------------
    @Core.receiver("onstart")
    def _onstart(self, sender: Any, **kwargs: Any) -> None:
        _log.info("VEN load-control agent %s starting as %s", __version__, self.core.identity)
        self._timer = self.core.spawn(self._timer_loop)

    @Core.receiver("onstop")
    def _onstop(self, sender: Any, **kwargs: Any) -> None:
        with self._lock:
            self._stop_engine("agent stop")

    def _on_config(self, config_name: str, action: str, contents: Any) -> None:
        try:
            cfg = parse_config(contents)
        except ConfigError as exc:
            self._config_error = str(exc)
            _log.error("configuration rejected, keeping the previous one: %s", exc)
            return
        with self._lock:
            if self._cfg is not None and cfg == self._cfg:
                return
            engine = VenEngine(cfg, StateStore(self._state_path(cfg)))  # the new one is built first
            self._config_error = None
            self._stop_engine("configuration change")
            self._start_engine(engine)

    def _on_overrides(self, config_name: str, action: str, contents: Any) -> None:
        entry = contents if action != "DELETE" and isinstance(contents, dict) else {}
        self._overrides_entry = entry
        with self._lock:
            self._apply_overrides()

    def _apply_overrides(self) -> None:
        if self._engine is None:
            return
        opt_out = self._overrides_entry.get("optOut", False)
        loads = self._overrides_entry.get("loads", [])
        if not isinstance(opt_out, bool) or not isinstance(loads, list) or not all(isinstance(x, str) for x in loads):
            self._engine.problem(f"config-store entry '{OVERRIDES_NAME}' ignored: expected "
                                  f"{{'optOut': bool, 'loads': [load names]}}, got {self._overrides_entry!r}")
            return
        try:
            ops = self._engine.apply_config_overrides(opt_out, loads)
        except ValueError as exc:
            self._engine.problem(f"config-store entry '{OVERRIDES_NAME}' ignored: {exc}")
            return
        self._execute(ops)

    def _start_engine(self, engine: VenEngine) -> None:
        cfg = engine.cfg
        if self.core.identity != topics.ven_identity(cfg.ven_id):
            _log.warning("identity %s does not match venId %s (expected %s)", self.core.identity, cfg.ven_id,
                         topics.ven_identity(cfg.ven_id))
        self._cfg, self._engine = cfg, engine
        for prefix in [topics.bus_cmd(cfg.ven_id)] + [topics.device_all_topic(p) for p in cfg.device_paths]:
            callback = self._on_command if prefix.startswith(topics.BUS_CMD_PREFIX) else self._on_device
            self.vip.pubsub.subscribe("pubsub", prefix, callback).get(timeout=10)
            self._subscriptions.append(prefix)
        self._prime_readings(cfg)
        self._execute(engine.resume())
        self._apply_overrides()
        self._telemetry = self.core.spawn(self._telemetry_loop, cfg.telemetry_period_s)
        self._wake.set()
        _log.info("VEN %s ready: %d loads on %d devices, state in %s", cfg.ven_id, len(cfg.loads),
                  len(cfg.device_paths), engine.store.path if engine.store else None)

    def _stop_engine(self, reason: str) -> None:
        engine = self._engine
        if engine is None:
            return
        self._execute(engine.restore_all(reason, staggered=False))
        if self._telemetry is not None:
            self._telemetry.kill()
            self._telemetry = None
        for prefix in self._subscriptions:
            try:
                self.vip.pubsub.unsubscribe("pubsub", prefix, None).get(timeout=5)
            except (Exception, gevent.Timeout) as exc:  # gevent.Timeout is a BaseException
                _log.warning("unsubscribe %s failed: %r", prefix, exc)
        self._subscriptions = []
        self._engine = None
        self._cfg = None

    def _state_path(self, cfg: VenConfig) -> Path:
        if cfg.state_path:
            return Path(cfg.state_path)
        home = os.environ.get("VOLTTRON_HOME")
        identity = self.core.identity or topics.ven_identity(cfg.ven_id)
        if home:
            return Path(home) / "agents" / identity / "data" / STATE_FILE
        return Path.cwd() / "data" / STATE_FILE

    def _prime_readings(self, cfg: VenConfig) -> None:
        """Read every device once so that a command right after start (or a resumed event) has values."""
        if self._engine is None:
            return
        for path in reversed(cfg.device_paths):  # meter last: its reading triggers control
            try:
                values = self.vip.rpc.call(DRIVER_IDENTITY, DriverRpc.SCRAPE_ALL, path).get(timeout=cfg.rpc_timeout_s)
            except (Exception, gevent.Timeout) as exc:  # gevent.Timeout is a BaseException
                _log.warning("initial read of %s failed (%r); waiting for its next publish", path, exc)
                continue
            if isinstance(values, dict):
                # keyed by point topic (`demo/meter/PowerKw`) in platform driver 2.0: keep the point names
                points = {str(key).rsplit("/", 1)[-1]: value for key, value in values.items()}
                self._execute(self._engine.on_device(path, points, live=True))

    # --- inputs -------------------------------------------------------------------------------------------
    def _on_command(self, peer: str, sender: str, bus: str, topic: str, headers: Any, message: Any) -> None:
        received = time.perf_counter()
        cfg = self._cfg
        if cfg is None or topic != topics.bus_cmd(cfg.ven_id):
            return  # a prefix subscription also matches dr/cmd/<venId><more>: not ours
        ack = self._handle(message, received)
        try:
            self.vip.pubsub.publish("pubsub", topics.bus_ack(cfg.ven_id), message=ack).get(timeout=5)
        except (Exception, gevent.Timeout) as exc:  # gevent.Timeout is a BaseException
            _log.error("ack %s could not be published: %r", ack.get("correlationId"), exc)

    def _handle(self, message: Any, received: float) -> dict[str, Any]:
        with self._lock:
            engine = self._engine
            if engine is None:
                return Ack(correlation_id=raw_correlation(message), ok=False, op=raw_op(message),
                           error=self._config_error or "not configured").to_payload()
            if engine.meter_uncertain():
                self._read_meter_live(engine)
            try:
                outcome = engine.on_command(message)
            except Exception as exc:  # a defect must not cost the sender its answer nor the agent its life
                _log.exception("command could not be handled")
                return engine.command_failed(message, exc).to_payload()
            self._execute(outcome.ops, received)
            self._wake.set()
            return outcome.ack.to_payload()

    def _read_meter_live(self, engine: VenEngine) -> None:
        """Read the meter through the driver now (the last publish may or may not show our last writes)."""
        cfg = engine.cfg
        try:
            value = self.vip.rpc.call(DRIVER_IDENTITY, DriverRpc.GET_POINT, cfg.meter_path,
                                      cfg.meter_point).get(timeout=cfg.rpc_timeout_s)
        except (Exception, gevent.Timeout) as exc:  # gevent.Timeout is a BaseException
            engine.counters["meter_live_read_failures"] += 1
            self._rate_log.warning("live-read", "live meter read failed (%r); using the last publish", exc)
            return
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            engine.on_meter_live(float(value))

    def _on_device(self, peer: str, sender: str, bus: str, topic: str, headers: Any, message: Any) -> None:
        if not topic.endswith("/all"):
            return
        path = topic[len(topics.DEVICES_PREFIX):-len("/all")]
        values = message[0] if isinstance(message, list) and message else message
        with self._lock:
            if self._engine is None:
                return
            if not isinstance(values, dict):
                self._engine.counters["bad_device_messages"] += 1
                self._rate_log.warning(f"device:{path}", "%s: expected [{point: value}, {point: meta}], got %s",
                                       topic, type(message).__name__)
                return
            try:
                ops = self._engine.on_device(path, values)
            except Exception:  # one bad reading never kills the agent
                self._engine.counters["device_errors"] += 1
                _log.exception("reading of %s could not be handled", path)
                return
            self._execute(ops)

    # --- ops ----------------------------------------------------------------------------------------------
    def _execute(self, ops: list[Op], received: float | None = None) -> None:
        engine, cfg = self._engine, self._cfg
        if not ops or engine is None or cfg is None:
            return
        rounds = 0
        while ops and rounds < MAX_FOLLOW_UPS:
            rounds += 1
            if received is not None:
                self._latency.add((time.perf_counter() - received) * 1000.0)
                received = None
            timeout = cfg.rpc_timeout_s
            ops = engine.ops_done(send_round(ops, lambda op: self._send(op, timeout)))
        self._wake.set()

    def _send(self, op: Op, timeout: float) -> str | None:
        """One driver call; None on success, else why it failed."""
        try:
            if op.kind == REVERT:
                result = self.vip.rpc.call(DRIVER_IDENTITY, DriverRpc.REVERT_POINT, op.path, op.point)
            else:
                result = self.vip.rpc.call(DRIVER_IDENTITY, DriverRpc.SET_POINT, op.path, op.point, op.value)
            result.get(timeout=timeout)
            return None
        except gevent.Timeout:
            return f"no answer from {DRIVER_IDENTITY} within {timeout:g} s"
        except Exception as exc:  # reported and retried; a failed write never kills the agent
            return f"{type(exc).__name__}: {exc}"

    # --- timers -------------------------------------------------------------------------------------------
    def _timer_loop(self) -> None:
        """Runs the engine's deadlines; `_wake` is set whenever they may have changed."""
        while True:
            engine = self._engine
            deadline = engine.next_deadline() if engine is not None else None
            timeout = None if deadline is None else max(0.0, deadline - time.time())
            self._wake.wait(timeout=timeout)
            self._wake.clear()
            gevent.sleep(0)  # never starve the other greenlets, whatever the deadlines say
            try:
                self._timer_tick()
            except Exception:  # a defect must never stop the timers that restore the loads
                _log.exception("timer tick failed; carrying on")
                gevent.sleep(0.5)

    def _timer_tick(self) -> None:
        report: Telemetry | None = None
        with self._lock:
            engine, cfg = self._engine, self._cfg
            if engine is not None:
                self._execute(engine.on_timer())
                if engine.live_report_due():
                    # what the devices do now, not the driver's previous scrape
                    self._read_meter_live(engine)
                    report = engine.telemetry()
        if report is not None and cfg is not None:
            self._publish_telemetry(cfg, report)

    def _telemetry_loop(self, period_s: float) -> None:
        while True:
            gevent.sleep(period_s - (time.time() % period_s))
            with self._lock:
                engine, cfg = self._engine, self._cfg
                try:
                    report = engine.telemetry() if engine is not None else None
                except Exception as exc:  # a defect costs one report, never the loop
                    self._rate_log.error("telemetry-build", "telemetry could not be built: %r", exc)
                    report = None
            if report is None or cfg is None:
                continue
            self._publish_telemetry(cfg, report)

    def _publish_telemetry(self, cfg: VenConfig, report: Telemetry) -> None:
        try:
            self.vip.pubsub.publish("pubsub", topics.bus_telemetry(cfg.ven_id),
                                    message=report.to_payload()).get(timeout=5)
        except (Exception, gevent.Timeout) as exc:  # gevent.Timeout is a BaseException
            self._rate_log.warning("telemetry", "telemetry publish failed: %r", exc)

    # --- RPC ----------------------------------------------------------------------------------------------
    @RPC.export(VenRpc.HANDLE_COMMAND)
    def handle_command(self, payload: Any) -> dict[str, Any]:
        """Carry out one command (the bus payload) and return its ack."""
        return self._handle(payload, time.perf_counter())

    @RPC.export(VenRpc.STATUS)
    def status(self) -> dict[str, Any]:
        """Event, shed actions, counters, refusals, problems, command-to-first-set_point latency, RSS."""
        with self._lock:
            engine = self._engine
            out: dict[str, Any] = engine.status() if engine is not None else {}
        out["configError"] = self._config_error
        out["latencyMs"] = self._latency.summary()
        out["rssKb"] = _rss_kb()
        return out

    @RPC.export(VenRpc.HEALTH)
    def health(self) -> dict[str, Any]:
        """Configured or not, the config error, recent problems."""
        engine = self._engine
        problems = list(engine.problems[-5:]) if engine is not None else []
        ok = engine is not None and self._config_error is None
        return {"ok": ok, "configured": engine is not None, "configError": self._config_error,
                "problems": problems, "rssKb": _rss_kb()}

    @RPC.export(VenRpc.OPT_OUT)
    def opt_out(self, opt_out: bool = True, event_id: str | None = None) -> dict[str, Any]:
        """Opt out of the current event (opt_out=False opts back in)."""
        with self._lock:
            if self._engine is None:
                raise RuntimeError(self._config_error or "not configured")
            _, ops = self._engine.set_opt_out(bool(opt_out), event_id)
            self._execute(ops)
            return self._engine.status()

    @RPC.export(VenRpc.OVERRIDE)
    def override(self, load: str, active: bool = True) -> dict[str, Any]:
        """Take one load out of shedding (active=True) or give it back to the VEN (active=False)."""
        with self._lock:
            if self._engine is None:
                raise RuntimeError(self._config_error or "not configured")
            _, ops = self._engine.set_override(load, bool(active))
            self._execute(ops)
            return self._engine.status()


def _rss_kb() -> int:
    """Resident set size now (kB), from /proc; the peak from getrusage where /proc is missing."""
    try:
        with open("/proc/self/status", encoding="ascii") as handle:
            for line in handle:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)


def main() -> None:
    """Run the agent (VOLTTRON entry point)."""
    bound_message_repr()  # VOLTTRON 11 renders every VIP message for its debug log
    vip_main(VenLoadControlAgent, version=__version__)


if __name__ == "__main__":
    sys.exit(main())
