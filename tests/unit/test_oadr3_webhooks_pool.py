"""How dr.vtn sends webhooks (oadr_callbacks.PooledPoster, oadr_notify): persistent connections per host and
sending thread, a connection the receiver closed while idle retried once on a fresh one, redirects not
followed, the callback policy checked before connecting, one JSON encoding of an object for all the deliveries
of a change, finished deliveries removed from the store. A real HTTP/1.1 keep-alive receiver on a free port."""

from __future__ import annotations

import json
import threading
import time
from http import HTTPStatus

import gevent
import pytest
from gevent.pywsgi import WSGIHandler, WSGIServer

from dr_vtn_dispatcher import oadr_notify
from dr_vtn_dispatcher.config import parse_config
from dr_vtn_dispatcher.oadr_callbacks import CallbackPolicy, CallbackRefused, PooledPoster
from dr_vtn_dispatcher.oadr_notify import OWED, StoreKeep, WebhookNotifier
from dr_vtn_dispatcher.store import Store, sqlite_url

LOOPBACK = CallbackPolicy.from_config(
    parse_config({"openadr3": {"callbackPolicy": {"allowedHosts": ["127.0.0.1"]}}}).openadr3.callback_policy)


class KeepAliveReceiver:
    """HTTP/1.1 with keep-alive; counts connections and requests. `close_after_each` closes the connection
    after answering without saying so (as a server's idle timeout does); `status` / `location` shape answers.

    gevent's WSGI server in a thread of its own (its own hub): every connection is a greenlet of that thread, so
    it works the same whether or not an earlier test loaded VOLTTRON, which patches the socket module (a
    thread-per-connection server then hands gevent sockets across threads and breaks)."""

    def __init__(self) -> None:
        self.connections = 0
        self.bodies: list[bytes] = []
        self.close_after_each = False
        self.status = 204
        self.location: str | None = None
        outer = self
        lock = threading.Lock()

        class Handler(WSGIHandler):
            def handle(self) -> None:
                with lock:
                    outer.connections += 1
                super().handle()

            def handle_one_response(self) -> None:
                super().handle_one_response()
                if outer.close_after_each:
                    self.close_connection = True

        def app(environ, start_response):
            body = environ["wsgi.input"].read()
            with lock:
                outer.bodies.append(body)
            headers = [("Content-Length", "0")] + ([("Location", outer.location)] if outer.location else [])
            start_response(f"{outer.status} {HTTPStatus(outer.status).phrase}", headers)
            return [b""]

        ready = threading.Event()

        def serve() -> None:
            self._hub = gevent.get_hub()
            self.http = WSGIServer(("127.0.0.1", 0), app, handler_class=Handler, log=None, error_log=None)
            self.http.start()
            self.url = f"http://127.0.0.1:{self.http.server_port}"
            ready.set()
            self.http.serve_forever()

        self.thread = threading.Thread(target=serve, daemon=True)
        self.thread.start()
        assert ready.wait(10), "the receiver did not start"

    def close(self) -> None:
        self._hub.loop.run_callback_threadsafe(self.http.stop)
        self.thread.join(5)


@pytest.fixture
def receiver():
    r = KeepAliveReceiver()
    yield r
    r.close()


def test_one_connection_carries_many_posts(receiver):
    post = PooledPoster(lambda: LOOPBACK)
    statuses = [post(f"{receiver.url}/ven-{i}?x=1", b'{"n":%d}' % i, "tok", 5.0) for i in range(20)]
    assert statuses == [204] * 20 and receiver.connections == 1
    assert [json.loads(b)["n"] for b in receiver.bodies] == list(range(20))
    post.close()


def test_a_connection_closed_while_idle_is_retried_once_on_a_fresh_one(receiver):
    post = PooledPoster(lambda: LOOPBACK)
    receiver.close_after_each = True
    assert post(receiver.url + "/a", b"{}", None, 5.0) == 204
    time.sleep(0.1)                                   # the receiver has closed it by now
    assert post(receiver.url + "/a", b"{}", None, 5.0) == 204
    assert len(receiver.bodies) == 2 and receiver.connections == 2


def test_a_kept_connection_is_not_reused_once_the_policy_changes(receiver):
    current = [LOOPBACK]
    post = PooledPoster(lambda: current[0])
    assert post(receiver.url + "/a", b"{}", None, 5.0) == 204
    current[0] = CallbackPolicy()                     # loopback no longer allowed
    with pytest.raises(CallbackRefused):
        post(receiver.url + "/a", b"{}", None, 5.0)
    assert len(receiver.bodies) == 1


def test_redirects_are_not_followed(receiver):
    receiver.status, receiver.location = 307, "http://169.254.169.254/latest/meta-data/"
    assert PooledPoster(lambda: LOOPBACK)(receiver.url + "/r", b"{}", None, 5.0) == 307
    assert len(receiver.bodies) == 1


def test_the_policy_is_checked_before_connecting(receiver):
    post = PooledPoster(lambda: CallbackPolicy())     # the default refuses loopback
    with pytest.raises(CallbackRefused):
        post(receiver.url + "/x", b"{}", None, 5.0)
    assert receiver.connections == 0


def test_a_change_is_encoded_once_sent_over_few_connections_and_forgotten_in_the_store(receiver, tmp_path,
                                                                                          monkeypatch):
    store = Store(sqlite_url(str(tmp_path / "vtn.sqlite")))
    dumped = []
    real_dumps = json.dumps
    monkeypatch.setattr(oadr_notify.json, "dumps", lambda value, **kw: dumped.append(value) or real_dumps(value, **kw))
    keep = StoreKeep(store)
    forgotten = []
    real_drop = keep.drop_many
    keep.drop_many = lambda keys: forgotten.append(len(keys)) or real_drop(keys)
    notifier = WebhookNotifier(keep=keep, policy=LOOPBACK, workers=4)
    notifier.start()
    try:
        obj = {"id": "evt-1", "objectType": "EVENT", "intervals": [{"id": 0, "payloads": [{"values": [-2]}]}]}
        items = [(f"sub-{i}", f"{receiver.url}/ven-{i}", f"t{i}",
                  {"objectType": "EVENT", "operation": "CREATE", "object": obj, "targets": ["g"]}) for i in range(200)]
        assert notifier.submit_many(items) == 200
        deadline = time.monotonic() + 20
        while not (notifier.idle() and notifier.counters()["webhooksDelivered"] == 200):
            assert time.monotonic() < deadline, notifier.counters()
            time.sleep(0.01)
        assert sum(1 for value in dumped if value is obj) == 1
        assert all(json.loads(b) == {"objectType": "EVENT", "operation": "CREATE", "object": obj, "targets": ["g"]}
                   for b in receiver.bodies)
        assert receiver.connections <= 4                           # one per worker thread at most
        assert sum(forgotten) == 200 and not [r for r in store.load_oadr_objects() if r["object_type"] == OWED]
    finally:
        notifier.stop()
        store.close()
