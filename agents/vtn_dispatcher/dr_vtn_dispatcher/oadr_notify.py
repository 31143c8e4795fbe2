"""OpenADR 3 webhook notifications: which subscriptions an object operation concerns, and their delivery.

`matching(subscriptions, kind, operation, obj, visible)` picks the subscriptions to notify: the object kind and
operation are among one of its objectOperations, its programID (if any) is the object's program, its targets
(if any) meet the object's (an object without targets concerns everyone), and `visible(subscription)` says the
subscriber may see the object (a VEN's subscription never tells it of another VEN's objects).

`WebhookNotifier` POSTs `{objectType, operation, object, targets}` to each callbackUrl with the subscription's
bearer token, from worker threads of its own (the caller never waits on the network): bounded timeout, retries
with exponential backoff, at most `max_pending` deliveries waiting (more are dropped and counted), delivery and
failure counts for `health`. The callback's token is never logged. By default it sends over persistent
connections (`oadr_callbacks.PooledPoster`) to addresses its `CallbackPolicy` accepts after resolving the name;
a refused callback is not called, and given up at once (`webhooksRefused`). One notification's object is
encoded once for all its deliveries; finished deliveries leave the store in batches (one transaction each).
"""

from __future__ import annotations

import heapq
import itertools
import json
import logging
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import and_

from dr_common.rejects import RateLimitedLog
from dr_vtn_dispatcher.oadr_callbacks import CallbackPolicy, CallbackRefused, PooledPoster
from dr_vtn_dispatcher.store import oadr_objects_table

_log = logging.getLogger(__name__)

Post = Callable[[str, bytes, "str | None", float], int]
OWED = "WEBHOOK"   # object type of an owed delivery in dr.vtn's store (survives a restart)


class StoreKeep:
    """Owed deliveries kept in dr.vtn's store (table vtn_oadr_objects, object type WEBHOOK) until delivered or
    given up, so a restart delivers them still."""

    def __init__(self, store: Any, now: Callable[[], float] = time.time) -> None:
        self.store = store
        self.now = now

    def save(self, records: list[dict[str, Any]]) -> None:
        """Keep these deliveries (one transaction)."""
        now = self.now()
        self.store.save_oadr_objects([{"object_type": OWED, "object_id": r["key"], "body": json.dumps(r),
                                       "created_at": now, "modified_at": now} for r in records])

    def drop(self, key: str) -> None:
        """Forget a delivery (delivered or given up)."""
        self.drop_many([key])

    def drop_many(self, keys: list[str]) -> None:
        """Forget these deliveries (one transaction)."""
        table = oadr_objects_table
        with self.store.engine.begin() as conn:
            for start in range(0, len(keys), 500):
                conn.execute(table.delete().where(and_(table.c.object_type == OWED,
                                                       table.c.object_id.in_(keys[start:start + 500]))))

    def load(self) -> list[dict[str, Any]]:
        """The deliveries still owed."""
        return [json.loads(row["body"]) for row in self.store.load_oadr_objects() if row["object_type"] == OWED]


def _program_of(kind: str, obj: Mapping[str, Any]) -> str | None:
    if kind == "PROGRAM":
        return obj.get("id")
    return obj.get("programID")


def matching(subscriptions: Iterable[Mapping[str, Any]], kind: str, operation: str, obj: Mapping[str, Any],
             visible: Callable[[Mapping[str, Any]], bool]) -> list[tuple[Mapping[str, Any], Mapping[str, Any]]]:
    """(subscription, objectOperation) pairs to notify of `operation` on `obj` (of object type `kind`)."""
    out = []
    targets = set(obj.get("targets") or [])
    for sub in subscriptions:
        if sub.get("programID") and sub["programID"] != _program_of(kind, obj):
            continue
        if sub.get("targets") and targets and not targets & set(sub["targets"]):
            continue
        for op in sub.get("objectOperations") or []:
            if kind in (op.get("objects") or []) and operation in (op.get("operations") or []):
                if visible(sub):
                    out.append((sub, op))
                break
    return out


@dataclass(order=True)
class _Delivery:
    due: float
    seq: int
    url: str = field(compare=False)
    token: str | None = field(compare=False)
    body: bytes = field(compare=False)
    subscription_id: str = field(compare=False)
    attempts: int = field(default=0, compare=False)
    key: str = field(default="", compare=False)


class WebhookNotifier:
    """Deliveries in a due-time heap served by `workers` threads."""

    def __init__(self, post: Post | None = None, clock: Callable[[], float] = time.monotonic, timeout_s: float = 5.0,
                 attempts: int = 5, backoff_s: float = 1.0, backoff_max_s: float = 60.0, max_pending: int = 10_000,
                 workers: int = 8, keep: StoreKeep | None = None, policy: CallbackPolicy | None = None) -> None:
        """`post` defaults to persistent connections checked against `policy` (the default policy when None)."""
        self.keep = keep
        self.policy = policy or CallbackPolicy()
        self.post: Post = post if post is not None else PooledPoster(lambda: self.policy)
        self.clock = clock
        self.timeout_s = timeout_s
        self.attempts = attempts
        self.backoff_s = backoff_s
        self.backoff_max_s = backoff_max_s
        self.max_pending = max_pending
        self.workers = workers
        self._heap: list[_Delivery] = []
        self._seq = itertools.count()
        self._cv = threading.Condition()
        self._threads: list[threading.Thread] = []
        self._running = False
        self._busy = 0
        self._refusals = RateLimitedLog(_log)
        self._finished: list[str] = []       # keys delivered or given up, still in the store
        self._forgetting = False
        self.counts = {"webhooksQueued": 0, "webhooksDelivered": 0, "webhookAttemptsFailed": 0,
                       "webhooksGivenUp": 0, "webhooksDropped": 0, "webhooksRefused": 0}

    def set_policy(self, policy: CallbackPolicy) -> None:
        """The callback policy new connections are checked against from now on."""
        self.policy = policy

    def start(self) -> None:
        """Start the worker threads (after queueing the deliveries still owed from before a restart)."""
        with self._cv:
            if self._running:
                return
            self._running = True
            for record in self.keep.load() if self.keep is not None else []:
                heapq.heappush(self._heap, _Delivery(self.clock(), next(self._seq), record["url"], record.get("token"),
                                                     record["body"].encode(), record["subscriptionId"],
                                                     int(record.get("attempts", 0)), record["key"]))
                self.counts["webhooksRestored"] = self.counts.get("webhooksRestored", 0) + 1
        for index in range(self.workers):
            thread = threading.Thread(target=self._work, name=f"oadr-webhook-{index}", daemon=True)
            thread.start()
            self._threads.append(thread)

    def stop(self, timeout: float = 5.0) -> None:
        """Stop the workers (deliveries still waiting stay owed in the store when there is one, else are dropped
        and counted)."""
        with self._cv:
            self._running = False
            if self.keep is None:
                self.counts["webhooksDropped"] += len(self._heap)
            self._heap.clear()
            self._cv.notify_all()
        for thread in self._threads:
            thread.join(timeout)
        self._threads.clear()
        self._forget_finished()

    def submit(self, subscription_id: str, url: str, token: str | None, notification: Mapping[str, Any]) -> bool:
        """Queue one delivery; False (counted) when `max_pending` are waiting already."""
        return self.submit_many([(subscription_id, url, token, notification)]) == 1

    def submit_many(self, items: list[tuple[str, str, str | None, Mapping[str, Any]]]) -> int:
        """Queue deliveries `(subscriptionId, url, token, notification)`, kept in the store in one transaction
        first; returns how many were queued (the rest, beyond `max_pending`, are dropped and counted)."""
        with self._cv:
            room = max(0, self.max_pending - len(self._heap))
        taken = items[:room]
        self.counts["webhooksDropped"] += len(items) - len(taken)
        encoded: dict[int, str] = {}        # id(object) -> its JSON, for the objects of this call (all alive)
        now = self.clock()
        deliveries = [_Delivery(now, next(self._seq), url, token, _encode(note, encoded), sub_id,
                                key=uuid.uuid4().hex) for sub_id, url, token, note in taken]
        if self.keep is not None and deliveries:
            self.keep.save([{"key": d.key, "url": d.url, "token": d.token, "body": d.body.decode(),
                             "subscriptionId": d.subscription_id, "attempts": 0} for d in deliveries])
        with self._cv:
            for delivery in deliveries:
                heapq.heappush(self._heap, delivery)
            self.counts["webhooksQueued"] += len(deliveries)
            self._cv.notify_all()
        return len(deliveries)

    def counters(self) -> dict[str, int]:
        """Delivery counts and what is waiting."""
        with self._cv:
            return {**self.counts, "webhooksPending": len(self._heap) + self._busy}

    def idle(self) -> bool:
        """True when nothing waits and nothing is being sent."""
        with self._cv:
            return not self._heap and not self._busy

    def _work(self) -> None:
        while True:
            with self._cv:
                while self._running and (not self._heap or self._heap[0].due > self.clock()):
                    wait = None if not self._heap else max(0.0, self._heap[0].due - self.clock())
                    self._cv.wait(timeout=wait if wait is not None else 1.0)
                running = self._running
                if running:
                    item = heapq.heappop(self._heap)
                    self._busy += 1
            if not running:
                close = getattr(self.post, "close", None)
                if callable(close):
                    close()                 # this thread's kept connections
                return
            ok, reason = self._send(item)
            done = self._settle(item, ok, reason)
            if done:
                self._forget(item)
            with self._cv:
                self._busy -= 1

    def _settle(self, item: _Delivery, ok: bool, reason: str) -> bool:
        """Count an attempt; True when the delivery is finished (sent, or given up)."""
        with self._cv:
            item.attempts += 1
            if ok:
                self.counts["webhooksDelivered"] += 1
                return True
            self.counts["webhookAttemptsFailed"] += 1
            if not self._running:           # stopping: it stays owed (in the store) when there is one
                if self.keep is None:
                    self.counts["webhooksDropped"] += 1
                return False
            if reason.startswith("refused"):
                self.counts["webhooksRefused"] += 1
                self.counts["webhooksGivenUp"] += 1
                self._refusals.warning(f"refused:{item.subscription_id}", "dr.vtn: webhook of subscription %s not "
                                       "sent: callback %s", item.subscription_id, reason)
                return True
            if item.attempts >= self.attempts:
                self.counts["webhooksGivenUp"] += 1
                self._refusals.warning(f"giveup:{item.subscription_id}", "dr.vtn: webhook of subscription %s "
                                       "given up after %d attempts: %s", item.subscription_id, item.attempts, reason)
                return True
            item.due = self.clock() + min(self.backoff_max_s, self.backoff_s * 2 ** (item.attempts - 1))
            heapq.heappush(self._heap, item)
            self._cv.notify()
            return False

    def _forget(self, item: _Delivery) -> None:
        """Drop a finished delivery from the store; the keys finished meanwhile go in the same transaction
        (one thread writes at a time, the others only add keys)."""
        if self.keep is None or not item.key:
            return
        with self._cv:
            self._finished.append(item.key)
            if self._forgetting:
                return
            self._forgetting = True
        self._forget_finished()

    def _forget_finished(self) -> None:
        while self.keep is not None:
            with self._cv:
                keys, self._finished = self._finished, []
                if not keys:
                    self._forgetting = False
                    return
            try:
                self.keep.drop_many(keys)
            except Exception:  # the deliveries are done; stale rows are sent again after a restart at worst
                _log.exception("dr.vtn: forgetting %d webhooks failed", len(keys))

    def _send(self, item: _Delivery) -> tuple[bool, str]:
        try:
            status = self.post(item.url, item.body, item.token, self.timeout_s)
        except CallbackRefused as exc:
            return False, f"refused: {exc}"
        except (OSError, ValueError) as exc:
            return False, type(exc).__name__
        return 200 <= status < 300, f"HTTP {status}"


def _encode(note: Mapping[str, Any], encoded: dict[int, str]) -> bytes:
    """A notification's JSON; its `object` is encoded once per `encoded` cache (shared by the deliveries of one
    change), the rest of the notification around it."""
    obj = note.get("object")
    if obj is None or set(note) - {"objectType", "operation", "object", "targets"}:
        return json.dumps(note, separators=(",", ":"), allow_nan=False).encode()
    text = encoded.get(id(obj))
    if text is None:
        text = encoded[id(obj)] = json.dumps(obj, separators=(",", ":"), allow_nan=False)
    head = json.dumps({"objectType": note.get("objectType"), "operation": note.get("operation")},
                      separators=(",", ":"))
    targets = json.dumps(note.get("targets"), separators=(",", ":"), allow_nan=False)
    return f'{head[:-1]},"object":{text},"targets":{targets}}}'.encode()
