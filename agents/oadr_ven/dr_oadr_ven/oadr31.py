"""The OpenADR 3.1 link: one worker thread (plain blocking HTTP, never in a greenlet) that enrols this VEN,
reads its events and sends its reports, and a webhook receiver when notifications come that way.

Enrolment: token, VEN object (VEN_VEN_REQUEST), its resource, the programs (names -> ids), and with
`notify: webhook` (or `mqtt` on a VTN that offers no MQTT notifier) a subscription whose callback is this
agent's webhook. Polling always runs at `pollS`; a notification delivers the event at once and asks for a
poll; every (re)connection polls at once, so nothing missed while the link was down stays missed. A failure
drops the enrolment (token included) and retries with capped exponential backoff (1 s .. `backoffMaxS`).
Everything the link learns goes to the agent through `put` (the hand-off):

  ("enrolled", {venID, resourceID, subscriptionID, programs: {id: name}, notify})
  ("events", [VtnEvent], [(eventId, modification, field, reason)], complete, listedAt)   a full listing
  ("programs", {id: name})   the programs, read again when an event names one not seen before
  ("event", VtnEvent) / ("refused", eventId, modification, field, reason) / ("deleted", eventId)  a notification
  ("report_sent", eventId, reportId, seq) / ("report_failed", eventId, seq, reason)
  ("link", {"up": bool, "error": str | None})
"""

from __future__ import annotations

import logging
import queue
import secrets
import threading
import time
from datetime import datetime, timezone
from collections.abc import Callable
from typing import Any

from dr_common.rejects import RateLimitedLog
from dr_oadr_ven.client31 import Oadr31Client, VtnError
from dr_oadr_ven.config import NOTIFY_MQTT, NOTIFY_POLL, NOTIFY_WEBHOOK, OadrVenConfig
from dr_oadr_ven.oadr31_events import EventRefused, modification_of, to_vtn_event
from dr_oadr_ven.mqttnotify import MqttListener, NotifierUnusable, binding
from dr_oadr_ven.webhook import WebhookServer

_log = logging.getLogger(__name__)

Put = Callable[[tuple], None]


class Oadr31Link:
    def __init__(self, config: OadrVenConfig, enrolment: dict[str, Any],
                 client_factory: Callable[[], Oadr31Client] | None = None) -> None:
        self._config = config
        self._vtn = config.vtn
        self._known = dict(enrolment)
        self._factory = client_factory or (lambda: Oadr31Client(
            self._vtn.base_url, self._vtn.client_id, self._vtn.client_secret.get_secret_value(),
            self._vtn.timeout_s, self._vtn.token_refresh_margin_s))
        self._put: Put = lambda item: None
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._reports: queue.SimpleQueue[tuple[str, dict[str, Any], str | None, int]] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._webhook: WebhookServer | None = None
        self._mqtt: MqttListener | None = None
        self._programs: dict[str, str] = {}
        self._bearer = str(enrolment.get("callbackToken") or secrets.token_urlsafe(24))
        self._errors = RateLimitedLog(_log)
        self.stats: dict[str, Any] = {"polls": 0, "pollErrors": 0, "enrolments": 0, "notifications": 0,
                                      "reportsSent": 0, "reportErrors": 0, "up": False, "lastError": None,
                                      "notify": NOTIFY_POLL, "backoffS": 0.0}

    # --- the agent's side (any thread) ---------------------------------------------------------------
    def start(self, handoff: Any) -> None:
        """Start the worker thread (and the webhook receiver); findings go to `handoff.put`."""
        self._put = handoff.put
        if self._vtn.notify in (NOTIFY_WEBHOOK, NOTIFY_MQTT):
            hook = self._vtn.webhook
            self._webhook = WebhookServer(hook.host, hook.port, hook.path, self._bearer, self._notified)
            self._webhook.start()
        self._thread = threading.Thread(target=self._run, name="oadr31-link", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        if self._webhook is not None:
            self._webhook.stop()
        if self._thread is not None:
            self._thread.join(self._vtn.timeout_s * 2 + 5)
        if self._mqtt is not None:
            self._mqtt.stop()

    def wake(self) -> None:
        """Poll now."""
        self._wake.set()

    def send_report(self, event_id: str, body: dict[str, Any], report_id: str | None, seq: int) -> None:
        self._reports.put((event_id, body, report_id, seq))
        self._wake.set()

    def opt(self, event_id: str, opt_in: bool) -> None:
        """OpenADR 3.1 has no opt message: opting out shows in the OPERATING_STATE reports."""

    def status(self) -> dict[str, Any]:
        out = dict(self.stats)
        if self._webhook is not None:
            out["webhook"] = {"port": self._webhook.port, "received": self._webhook.received,
                              "rejects": self._webhook.rejects.snapshot()}
        if self._mqtt is not None:
            out["mqtt"] = self._mqtt.status()
        return out

    @property
    def callback_url(self) -> str | None:
        if self._webhook is None:
            return None
        hook = self._vtn.webhook
        return hook.public_url or f"http://{hook.host}:{self._webhook.port}{hook.path}"

    # --- the webhook's thread ---------------------------------------------------------------------------
    def _notified(self, operation: str, obj: dict[str, Any]) -> None:
        self.stats["notifications"] += 1
        event_id = obj.get("id")
        if not isinstance(event_id, str):
            return
        if operation == "DELETE":
            self._put(("deleted", event_id))
        else:
            try:
                self._put(("event", to_vtn_event(obj, self._config.reports.interval_s)))
            except EventRefused as exc:
                self._put(("refused", event_id, modification_of(obj), exc.field, exc.reason))
        self._wake.set()

    # --- the worker thread ------------------------------------------------------------------------------
    def _run(self) -> None:
        client: Oadr31Client | None = None
        backoff = 1.0
        next_poll = 0.0
        while not self._stop.is_set():
            try:
                if client is None:
                    client = self._factory()
                    self._enrol(client)
                    self._set_up(True, None)
                    next_poll = 0.0
                    backoff = 1.0
                if time.monotonic() >= next_poll or self._wake.is_set():
                    self._wake.clear()
                    self._poll(client)
                    next_poll = time.monotonic() + self._vtn.poll_s
                self._send_reports(client)
                self._set_up(True, None)
                backoff = 1.0
                self._wake.wait(max(0.0, next_poll - time.monotonic()))
            except (VtnError, KeyError, TypeError, ValueError) as exc:
                self.stats["pollErrors"] += 1
                self._set_up(False, str(exc)[:300])
                self._errors.warning("link", "OpenADR 3.1 VTN %s: %s; retrying in %.0f s", self._vtn.base_url,
                                     str(exc)[:300], backoff)
                if client is not None:
                    client.close()
                client = None
                self.stats["backoffS"] = backoff
                self._stop.wait(backoff)
                backoff = min(backoff * 2, self._vtn.backoff_max_s)
        if client is not None:
            client.close()

    def _set_up(self, up: bool, error: str | None) -> None:
        if self.stats["up"] != up or (error and self.stats["lastError"] != error):
            self.stats["up"], self.stats["lastError"] = up, error
            self._put(("link", {"up": up, "error": error}))

    def _enrol(self, client: Oadr31Client) -> None:
        ven_id = client.ensure_ven(self._config.ven_name)
        resource_id = client.ensure_resource(ven_id, self._config.resource_name)
        programs = self._programs = self._read_programs(client)
        notify, subscription = NOTIFY_POLL, None
        if self._vtn.notify == NOTIFY_MQTT and self._listen_mqtt(client, ven_id):
            notify = NOTIFY_MQTT
        elif self._webhook is not None and self.callback_url:
            try:
                subscription = client.ensure_subscription(self._config.ven_name, self.callback_url, self._bearer,
                                                          self._known.get("subscriptionID"))
                notify = NOTIFY_WEBHOOK
            except VtnError as exc:
                if exc.status in (0, 401) or exc.status >= 500:
                    raise
                self._errors.warning("subscription", "the VTN refused the webhook subscription (%s); polling "
                                                     "every %g s", str(exc)[:300], self._vtn.poll_s)
        self._known = {"venID": ven_id, "resourceID": resource_id, "subscriptionID": subscription,
                       "callbackToken": self._bearer}
        self.stats["enrolments"] += 1
        self.stats["notify"] = notify
        self._put(("enrolled", {**self._known, "programs": programs, "notify": notify}))
        _log.info("enrolled at %s as VEN %s (resource %s, notifications: %s)", self._vtn.base_url, ven_id,
                  resource_id, notify)

    def _listen_mqtt(self, client: Oadr31Client, ven_id: str) -> bool:
        """Listen to the VTN's MQTT notifier for this VEN's events; False (said once) when it cannot be used."""
        try:
            host, port, tls, username = binding(client.notifiers())
            topics = client.notifier_topics(f"vens/{ven_id}/events")
            topic = topics.get("ALL") or topics.get("UPDATE")
            if not isinstance(topic, str):
                raise NotifierUnusable("the VTN names no topic for this VEN's events")
        except (NotifierUnusable, VtnError) as exc:
            if isinstance(exc, VtnError) and (exc.status in (0, 401) or exc.status >= 500):
                raise
            self._errors.warning("mqtt", "MQTT notifications not used (%s); %s", str(exc)[:300],
                                 "webhook" if self._webhook is not None else f"polling every {self._vtn.poll_s:g} s")
            return False
        credentials = None
        if username is not None:
            credentials = (username.replace("{clientID}", self._vtn.client_id), client.token())
        if self._mqtt is not None and self._mqtt.topic == topic:
            return True
        if self._mqtt is not None:
            self._mqtt.stop()
        self._mqtt = MqttListener(host, port, tls, topic, f"dr-oadr-{self._config.ven_id}", credentials,
                                  self._notified, self._wake.set)
        self._mqtt.start()
        return True

    @staticmethod
    def _read_programs(client: Oadr31Client) -> dict[str, str]:
        return {str(p["id"]): str(p.get("programName") or "") for p in client.programs() if "id" in p}

    def _poll(self, client: Oadr31Client) -> None:
        listed_at = datetime.now(timezone.utc)
        raw = client.events(self._config.limits.max_events)
        events, refused = [], []
        for obj in raw:
            try:
                events.append(to_vtn_event(obj, self._config.reports.interval_s))
            except EventRefused as exc:
                refused.append((str(obj.get("id"))[:128], modification_of(obj), exc.field, exc.reason))
        if any(e.program_id and e.program_id not in self._programs for e in events):
            self._programs = self._read_programs(client)
            self._put(("programs", dict(self._programs)))
        complete = len(raw) < self._config.limits.max_events
        self.stats["polls"] += 1
        self._put(("events", events, refused, complete, listed_at))

    def _send_reports(self, client: Oadr31Client) -> None:
        while True:
            try:
                event_id, body, report_id, seq = self._reports.get_nowait()
            except queue.Empty:
                return
            try:
                new_id = client.put_report(body, report_id)
            except VtnError as exc:
                self.stats["reportErrors"] += 1
                self._put(("report_failed", event_id, seq, str(exc)[:300]))
                if exc.status in (0, 401) or exc.status >= 500:
                    raise
                continue
            self.stats["reportsSent"] += 1
            self._put(("report_sent", event_id, new_id, seq))
