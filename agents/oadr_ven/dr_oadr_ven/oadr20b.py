"""The OpenADR 2.0b link: openleadr's `OpenADRClient` in a thread of its own with its own asyncio loop.

The agent starts it with `start(handoff)`, where `handoff(fn)` schedules the zero-argument callable `fn` on the
agent's gevent loop from any thread (the agent provides it). The link registers with the VTN (retrying with a
capped backoff until it is registered), polls it, and for every `oadrDistributeEvent`:

* turns each event into a `VtnEvent` (`oadr20b_events.event_from_oadr20b`); an event it refuses (unknown
  signal, absurd value, endless duration, another program) is answered `optOut`, counted and logged, and
  nothing is handed over;
* asks `decide(VtnEvent)` for `optIn` or `optOut`, in the link thread (the agent answers from what it last
  knew, never by waiting on gevent); an opted-in event, and the cancellation of one, are handed to the agent's
  `on_event` through `handoff`; a change the VEN opts out of, or refuses, after having opted in hands over a
  cancellation, so loads are restored;
* offers a `TELEMETRY_USAGE` report (r_ids `power` and `baseline`, kW) whose values come from `telemetry()`
  (called in the link thread, so it must only read what the agent last stored).

`report_opt(event_id, opt)` sends an opt change the agent decided later (an override or an opt-out set on
dr.ven) as an `oadrCreatedEvent`. `stop()` stops the client and joins the thread. The hand-off latency (time
from the link thread handing an event over to the agent's loop running it) is counted with its last and
maximum values in `status()`.
"""

from __future__ import annotations

import asyncio
import logging
import math
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import replace
from datetime import datetime, timedelta, timezone
from typing import Any, NamedTuple

from pydantic import Field, SecretStr

from dr_common.config import ConfigModel
from dr_common.rejects import RateLimitedLog, RejectCounter
from dr_oadr_ven.oadr20b_events import EventLimits, EventRefused, event_from_oadr20b
from dr_oadr_ven.vtnevent import VtnEvent

_log = logging.getLogger(__name__)

OPT_IN = "optIn"
OPT_OUT = "optOut"
ACTIVE_MAX = 256           # events remembered as handed over (for opt changes and restores)
CONTACT_STALE_MIN_S = 30.0   # `up` while the VTN answered within max(this, 3 poll periods)


class Telemetry20b(NamedTuple):
    """What the TELEMETRY_USAGE report carries: the site's power and its baseline, kW (baseline may be None)."""
    power_kw: float
    baseline_kw: float | None = None


class Oadr20bSettings(ConfigModel):
    """The `oadr20b` section of the agent's config."""
    ven_name: str = Field(min_length=1, max_length=128)
    vtn_url: str = Field(pattern=r"^https?://", max_length=512)
    ven_id: str | None = Field(default=None, max_length=128)
    cert: str | None = None                   # PEM files: TLS client certificate and message signing
    key: str | None = None
    passphrase: SecretStr | None = None
    ca_file: str | None = None
    vtn_fingerprint: str | None = None
    disable_signature: bool = False
    report_min_period_s: float = Field(default=1.0, gt=0, le=3600)
    report_max_period_s: float = Field(default=3600.0, gt=0, le=86400)
    retry_initial_s: float = Field(default=2.0, gt=0, le=600)
    retry_max_s: float = Field(default=300.0, gt=0, le=3600)
    max_abs_kw: float = Field(default=1000.0, gt=0)
    max_duration_s: float = Field(default=86400.0, gt=0)
    max_intervals: int = Field(default=96, ge=1, le=10000)
    max_randomize_s: float = Field(default=3600.0, ge=0)
    market_contexts: tuple[str, ...] = ()

    def limits(self) -> EventLimits:
        return EventLimits(max_abs_kw=self.max_abs_kw, max_duration_s=self.max_duration_s,
                           max_intervals=self.max_intervals, max_randomize_s=self.max_randomize_s,
                           market_contexts=self.market_contexts)


class _ReportQueue(asyncio.Queue):
    """openleadr's queue of outgoing reports (`OpenADRClient.pending_reports`, openleadr 0.5.36) without the
    empty ones: a report sampled while there is no telemetry has no interval, and a VTN may refuse it (openleadr's
    own VTN answers 500)."""

    def __init__(self, on_skip: Callable[[], None]) -> None:
        super().__init__()
        self._on_skip = on_skip

    async def put(self, item: Any) -> None:
        if not getattr(item, "intervals", None):
            self._on_skip()
            return
        await super().put(item)


class Oadr20bLink:
    """One VEN's link to one OpenADR 2.0b VTN (see the module docstring)."""

    def __init__(self, settings: Oadr20bSettings, on_event: Callable[[VtnEvent], None],
                 decide: Callable[[VtnEvent], str], telemetry: Callable[[], Telemetry20b | None],
                 enrolment: Mapping[str, Any] | None = None,
                 on_enrolled: Callable[[dict[str, Any]], None] | None = None) -> None:
        """`enrolment` is what `on_enrolled` last received (the venID the VTN assigned), kept by the agent so a
        restart registers as the same VEN (used only when it is a 2.0b enrolment with this VTN's URL);
        `on_enrolled` runs on the agent's loop after each registration."""
        self.settings = settings
        enrolment = enrolment or {}
        same_vtn = enrolment.get("protocol") == "oadr20b" and enrolment.get("vtnUrl") == settings.vtn_url
        known = enrolment.get("venId") if same_vtn else None
        self._known_ven_id = settings.ven_id or (str(known)[:128] if known else None)
        self._on_enrolled = on_enrolled
        self._last_contact: float | None = None
        self._on_event = on_event
        self._decide = decide
        self._telemetry = telemetry
        self._limits = settings.limits()
        self._handoff: Callable[[Callable[[], None]], None] | None = None
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._client: Any = None
        self._lock = threading.Lock()
        self._active: OrderedDict[str, int] = OrderedDict()   # event id -> modification handed over (opted in)
        self._answers: OrderedDict[str, tuple[int, str]] = OrderedDict()   # event id -> (modification, last opt)
        self._counts = {"events": 0, "handed": 0, "optIn": 0, "optOut": 0, "refused": 0, "reportsSent": 0,
                        "createdEventsSent": 0, "reportValues": 0, "reportsSkipped": 0, "registrationAttempts": 0}
        self._handoff_stats = {"count": 0, "lastMs": None, "maxMs": None}
        self.rejects = RejectCounter()
        self._rlog = RateLimitedLog(_log)
        self._registered = threading.Event()

    # ---- agent side (any thread) -------------------------------------------------------------------------

    def start(self, handoff: Callable[[Callable[[], None]], None]) -> None:
        """Start the link thread; `handoff(fn)` must run `fn` on the agent's loop, callable from any thread."""
        if self._thread is not None:
            return
        self._handoff = handoff
        logging.getLogger("openleadr").setLevel(logging.WARNING)   # its per-sample INFO lines
        self._loop = asyncio.new_event_loop()     # known before the thread runs, so stop() can always end it
        self._thread = threading.Thread(target=self._thread_main, name=f"oadr20b-{self.settings.ven_name}",
                                        daemon=True)
        self._thread.start()

    def stop(self, timeout_s: float = 10.0) -> bool:
        """Stop the client and join the thread; True when the thread ended within `timeout_s`."""
        thread, loop = self._thread, self._loop
        if thread is None:
            return True
        if loop is not None and not loop.is_closed():
            try:
                loop.call_soon_threadsafe(loop.stop)
            except RuntimeError:
                pass   # the loop closed meanwhile
        thread.join(timeout_s)
        alive = thread.is_alive()
        if alive:
            _log.error("OpenADR 2.0b link thread did not stop within %s s", timeout_s)
        else:
            self._thread = None
        return not alive

    def wait_registered(self, timeout_s: float) -> bool:
        return self._registered.wait(timeout_s)

    def report_opt(self, event_id: str, opt: str) -> bool:
        """Tell the VTN a later opt decision for an event this VEN answered (an oadrCreatedEvent), once per
        change: True when one is sent; False when `opt` is the last answer already, the event is not one this
        VEN answered, `opt` is not optIn/optOut or the link is not running."""
        loop = self._loop
        if opt not in (OPT_IN, OPT_OUT) or loop is None or loop.is_closed():
            return False
        event_id = str(event_id)
        with self._lock:
            answer = self._answers.get(event_id)
            if answer is None or answer[1] == opt:
                return False
            self._answers[event_id] = (answer[0], opt)
        try:
            asyncio.run_coroutine_threadsafe(self._send_opt(event_id, answer[0], opt), loop)
        except RuntimeError:   # the loop closed meanwhile (stopping)
            return False
        return True

    def status(self) -> dict[str, Any]:
        """Registration, counts, refusals and hand-off latency (no secret)."""
        client = self._client
        with self._lock:
            counts = dict(self._counts)
            handoff = dict(self._handoff_stats)
            active = len(self._active)
            rejects = self.rejects.snapshot()
        last = self._last_contact
        age = None if last is None else round(time.monotonic() - last, 3)
        poll = getattr(client, "poll_frequency", None)
        stale_s = max(CONTACT_STALE_MIN_S, 3 * poll.total_seconds()) if isinstance(poll, timedelta) else None
        return {"protocol": "oadr20b", "vtnUrl": self.settings.vtn_url, "venName": self.settings.ven_name,
                "registered": self._registered.is_set(), "lastContactAgeS": age,
                "up": bool(self._registered.is_set() and age is not None and stale_s and age <= stale_s),
                "venId": getattr(client, "ven_id", None), "registrationId": getattr(client, "registration_id", None),
                "activeEvents": active, "counts": counts, "rejects": rejects, "handoff": handoff}

    # ---- link thread ---------------------------------------------------------------------------------------

    def _thread_main(self) -> None:
        loop = self._loop
        if loop is None:
            return
        asyncio.set_event_loop(loop)
        task = loop.create_task(self._connect())
        try:
            loop.run_forever()
        finally:
            try:
                loop.run_until_complete(self._shutdown(task))
            except Exception:   # noqa: BLE001 - the thread must end whatever the library does on close
                _log.exception("OpenADR 2.0b link: error while stopping the client")
            loop.close()

    async def _shutdown(self, connect_task: asyncio.Task) -> None:
        connect_task.cancel()
        client = self._client
        if client is not None and client.client_session is not None:
            await client.stop()
        pending = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
        for t in pending:
            t.cancel()
        await asyncio.gather(*pending, return_exceptions=True)
        await asyncio.get_running_loop().shutdown_asyncgens()

    def _make_client(self) -> Any:
        from openleadr import OpenADRClient, enums, objects

        s = self.settings
        client = OpenADRClient(
            ven_name=s.ven_name, vtn_url=s.vtn_url, ven_id=self._known_ven_id, cert=s.cert, key=s.key,
            passphrase=s.passphrase.get_secret_value() if s.passphrase else None, ca_file=s.ca_file,
            vtn_fingerprint=s.vtn_fingerprint, show_fingerprint=False, disable_signature=s.disable_signature)
        client.add_handler("on_event", self._handle_event)
        client.add_handler("on_update_event", self._handle_event)
        client.add_hook("before_send_xml", self._count_sent)
        client.add_hook("after_receive_xml", self._contact)
        client.pending_reports = _ReportQueue(self._report_skipped)
        sampling = objects.SamplingRate(min_period=timedelta(seconds=s.report_min_period_s),
                                        max_period=timedelta(seconds=s.report_max_period_s), on_change=False)
        kw = replace(enums.MEASUREMENTS.REAL_POWER, scale="k")
        spec_id = f"telemetry-usage-{s.ven_name}"[:128]
        for r_id, report_type, reading_type in (
                ("power", enums.REPORT_TYPE.READING, enums.READING_TYPE.DIRECT_READ),
                ("baseline", enums.REPORT_TYPE.BASELINE, enums.READING_TYPE.PROJECTED)):
            client.add_report(callback=self._report_callback(r_id), resource_id=s.ven_name, measurement=kw,
                              report_specifier_id=spec_id, r_id=r_id, report_type=report_type,
                              reading_type=reading_type, sampling_rate=sampling, scale="k",
                              report_duration=timedelta(seconds=s.report_max_period_s))
        return client

    async def _connect(self) -> None:
        delay = self.settings.retry_initial_s
        while True:
            self._client = client = self._make_client()
            with self._lock:
                self._counts["registrationAttempts"] += 1
            try:
                await client.run()
            except asyncio.CancelledError:
                raise
            except Exception as exc:   # noqa: BLE001 - a library failure is retried, never fatal
                self._rlog.error("register", "OpenADR 2.0b registration with %s failed: %s: %s",
                                 self.settings.vtn_url, type(exc).__name__, exc)
            if client.registration_id:
                _log.info("OpenADR 2.0b: registered with %s as venId %s", self.settings.vtn_url, client.ven_id)
                self._registered.set()
                self._enrolled(client)
                return
            if client.client_session is not None and not client.client_session.closed:
                await client.stop()
            self._rlog.warning("unregistered", "OpenADR 2.0b: not registered with %s; retrying in %.3g s",
                               self.settings.vtn_url, delay)
            await asyncio.sleep(delay)
            delay = min(delay * 2, self.settings.retry_max_s)

    async def _handle_event(self, event: dict[str, Any]) -> str:
        """openleadr's on_event / on_update_event: the opt answer, never raising."""
        with self._lock:
            self._counts["events"] += 1
        client = self._client
        try:
            vtn_event = event_from_oadr20b(event, getattr(client, "ven_id", None), self._limits)
        except EventRefused as exc:
            return self._refuse(event, exc)
        except Exception as exc:   # noqa: BLE001 - a malformed dict the parser did not foresee
            return self._refuse(event, EventRefused("event", "malformed", f"{type(exc).__name__}: {exc}"))
        if vtn_event.cancelled:
            self._forget_and_hand(vtn_event, only_if_active=False)
            return OPT_IN
        try:
            answer = self._decide(vtn_event)
        except Exception as exc:   # noqa: BLE001 - the agent's decision failing is an opt-out
            self._rlog.error("decide", "OpenADR 2.0b: decide() failed for event %s: %s: %s",
                             vtn_event.event_id, type(exc).__name__, exc)
            answer = OPT_OUT
        if answer not in (OPT_IN, OPT_OUT):
            answer = OPT_OUT
        with self._lock:
            self._counts[answer] += 1
            self._remember(self._answers, vtn_event.event_id, (vtn_event.modification, answer))
        if answer == OPT_IN:
            with self._lock:
                self._remember(self._active, vtn_event.event_id, vtn_event.modification)
            self._hand(vtn_event)
        else:
            self._forget_and_hand(_cancellation(vtn_event), only_if_active=True)
        return answer

    def _refuse(self, event: Any, exc: EventRefused) -> str:
        with self._lock:
            self.rejects.count(exc.reason)
            self._counts["refused"] += 1
            self._counts[OPT_OUT] += 1
        event_id, modification = _event_key(event)
        self._rlog.warning(f"refused:{exc.reason}", "OpenADR 2.0b: event %s refused (opt-out): %s",
                           event_id, exc)
        if event_id is not None:
            self._forget_and_hand(VtnEvent(event_id=event_id, modification=modification, program_id=None,
                                           intervals=(), cancelled=True, protocol="oadr20b"), only_if_active=True)
        return OPT_OUT

    @staticmethod
    def _remember(table: OrderedDict[str, Any], key: str, value: Any) -> None:
        table[key] = value
        table.move_to_end(key)
        while len(table) > ACTIVE_MAX:
            table.popitem(last=False)

    def _forget_and_hand(self, cancellation: VtnEvent, only_if_active: bool) -> None:
        with self._lock:
            self._answers.pop(cancellation.event_id, None)
            was_active = self._active.pop(cancellation.event_id, None) is not None
        if was_active or not only_if_active:
            self._hand(cancellation)

    def _hand(self, vtn_event: VtnEvent) -> None:
        put_at = time.perf_counter()

        def deliver() -> None:
            latency_ms = (time.perf_counter() - put_at) * 1000.0
            with self._lock:
                stats = self._handoff_stats
                stats["count"] += 1
                stats["lastMs"] = round(latency_ms, 3)
                stats["maxMs"] = round(max(latency_ms, stats["maxMs"] or 0.0), 3)
            try:
                self._on_event(vtn_event)
            except Exception:   # noqa: BLE001 - the agent's handler failing must not stop the next one
                _log.exception("OpenADR 2.0b: on_event failed for event %s", vtn_event.event_id)

        with self._lock:
            self._counts["handed"] += 1
        if self._handoff is None:
            return
        try:
            self._handoff(deliver)
        except Exception as exc:   # noqa: BLE001 - a closed hand-off (agent stopping) loses only this event
            self._rlog.error("handoff", "OpenADR 2.0b: hand-off of event %s failed: %s: %s",
                             vtn_event.event_id, type(exc).__name__, exc)

    async def _send_opt(self, event_id: str, modification: int, opt: str) -> None:
        client = self._client
        if client is None or not client.registration_id:
            self._rlog.warning("opt-unregistered", "OpenADR 2.0b: opt %s for event %s not sent (not registered)",
                               opt, event_id)
            return
        from openleadr import utils

        if event_id in client.responded_events:
            client.responded_events[event_id] = opt   # a re-sent event is answered with the latest opt
        await client.created_event(request_id=utils.generate_id(), event_id=event_id, opt_type=opt,
                                   modification_number=modification)

    def _report_callback(self, r_id: str) -> Callable[[], list[tuple[datetime, float]]]:
        def sample() -> list[tuple[datetime, float]]:
            try:
                telemetry = self._telemetry()
            except Exception as exc:   # noqa: BLE001 - no value this time, the report goes on
                self._rlog.error("telemetry", "OpenADR 2.0b: telemetry() failed: %s: %s", type(exc).__name__, exc)
                return []
            if telemetry is None:
                return []
            value = telemetry.power_kw if r_id == "power" else telemetry.baseline_kw
            if value is None or not isinstance(value, (int, float)) or not math.isfinite(value):
                return []
            with self._lock:
                self._counts["reportValues"] += 1
            return [(datetime.now(timezone.utc), float(value))]
        return sample

    def _enrolled(self, client: Any) -> None:
        self._known_ven_id = client.ven_id
        callback = self._on_enrolled
        if callback is None or self._handoff is None:
            return
        enrolment = {"protocol": "oadr20b", "venId": client.ven_id, "registrationId": client.registration_id,
                     "vtnUrl": self.settings.vtn_url}

        def deliver() -> None:
            try:
                callback(enrolment)
            except Exception:   # noqa: BLE001 - the link goes on whatever the agent does with it
                _log.exception("OpenADR 2.0b: on_enrolled failed")
        try:
            self._handoff(deliver)
        except Exception as exc:   # noqa: BLE001 - a closed hand-off (agent stopping)
            self._rlog.error("handoff", "OpenADR 2.0b: hand-off of the enrolment failed: %s", exc)

    def _report_skipped(self) -> None:
        with self._lock:
            self._counts["reportsSkipped"] += 1

    def _contact(self, message: str) -> None:
        self._last_contact = time.monotonic()

    def _count_sent(self, message: str) -> None:
        head = message[:400]
        key = "reportsSent" if "oadrUpdateReport" in head else "createdEventsSent" if "oadrCreatedEvent" in head \
            else None
        if key is not None:
            with self._lock:
                self._counts[key] += 1


def _cancellation(vtn_event: VtnEvent) -> VtnEvent:
    return VtnEvent(event_id=vtn_event.event_id, modification=vtn_event.modification,
                    program_id=vtn_event.program_id, intervals=(), cancelled=True, protocol="oadr20b")


def _event_key(event: Any) -> tuple[str | None, int]:
    descriptor = event.get("event_descriptor") if isinstance(event, dict) else None
    if not isinstance(descriptor, dict) or descriptor.get("event_id") is None:
        return None, 0
    modification = descriptor.get("modification_number")
    return str(descriptor["event_id"])[:128], modification if isinstance(modification, int) else 0
