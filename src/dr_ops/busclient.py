"""An in-process VOLTTRON agent that talks to a running site's platform: pubsub and RPC for tests and scripts.

VOLTTRON 11's `build_agent()` is not implemented, so the client gets its own credentials with
`vctl auth add <identity>` and builds the Agent by hand (sharing vctl's own credentials would make a
concurrent vctl fail).
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from collections import deque
from pathlib import Path
from typing import Any, Callable

import gevent
import gevent.event

from dr_common.vip_repr import bound_message_repr
from dr_ops.platformctl import PlatformError, SitePlatform

_log = logging.getLogger(__name__)


class Subscription:
    """Messages received on a topic prefix: `(topic, headers, message)` tuples, newest last."""

    def __init__(self, prefix: str, maxlen: int = 100_000) -> None:
        self.prefix = prefix
        self.messages: deque[tuple[str, dict[str, Any], Any]] = deque(maxlen=maxlen)
        self.lock = threading.Lock()

    def __call__(self, peer: str, sender: str, bus: str, topic: str, headers: Any, message: Any) -> None:
        self.messages.append((topic, dict(headers or {}), message))

    def __len__(self) -> int:
        return len(self.messages)

    def __iter__(self):
        return iter(list(self.messages))

    def __getitem__(self, index: int):
        return list(self.messages)[index]

    def on_topic(self, topic: str) -> list[Any]:
        return [m for t, _, m in list(self.messages) if t == topic]

    def clear(self) -> None:
        self.messages.clear()


class BusClient:
    def __init__(self, plat: SitePlatform, identity: str = "dr.client") -> None:
        self.plat = plat
        self.identity = identity
        self.agent: Any = None

    def connect(self, timeout: float = 15.0) -> "BusClient":
        home = self.plat.home
        cred_file = home / "credentials_store" / f"{self.identity}.json"
        if not cred_file.exists():
            self.plat.vctl("auth", "add", self.identity, timeout=60)
        os.environ["VOLTTRON_HOME"] = str(home)
        from volttron.client.decorators import reset_core_builder
        from volttron.client.vip.agent import Agent
        import volttron.messagebus.zmq.zmq_core  # noqa: F401  (registers the zmq core builder)
        from volttron.types.agent_context import AgentOptions
        from volttron.types.auth import VolttronCredentials
        from volttron.utils import ClientContext

        bound_message_repr()
        reset_core_builder()
        ClientContext.__volttron_home__ = str(home)
        creds = VolttronCredentials(**json.loads(Path(cred_file).read_text()))
        agent = Agent(credentials=creds, options=AgentOptions(enable_store=False, volttron_home=str(home)),
                      address=f"ipc://@{home}/run/vip.socket", name="ZmqCoreBuilder")
        ready = gevent.event.Event()
        gevent.spawn(agent.core.run, ready)
        if not ready.wait(timeout=timeout):
            raise PlatformError(f"the bus client {self.identity} did not connect to site {self.plat.site}")
        self.agent = agent
        return self

    def rpc(self, peer: str, method: str, *args: Any, timeout: float = 10.0, **kwargs: Any) -> Any:
        return self.agent.vip.rpc.call(peer, method, *args, **kwargs).get(timeout=timeout)

    def publish(self, topic: str, message: Any, headers: dict[str, Any] | None = None, timeout: float = 10.0) -> None:
        self.agent.vip.pubsub.publish("pubsub", topic, headers=headers or {}, message=message).get(timeout=timeout)

    def subscribe(self, prefix: str, callback: Callable[..., None] | None = None) -> Subscription:
        sub = Subscription(prefix)
        handler = callback or sub
        self.agent.vip.pubsub.subscribe("pubsub", prefix, handler).get(timeout=10)
        return sub

    def close(self, timeout: float = 5.0) -> None:
        """Stop the client agent; waits at most `timeout` s (the platform may already be gone)."""
        if self.agent is not None:
            try:
                self.agent.core.stop(timeout=timeout)
            except gevent.Timeout:
                _log.warning("bus client %s did not stop within %.0f s", self.identity, timeout)
            self.agent = None


def wait_for(predicate: Callable[[], Any], timeout: float = 20.0, step: float = 0.2, what: str = "condition") -> Any:
    """Poll `predicate` (cooperatively, so the bus keeps flowing) until it returns a truthy value."""
    deadline = time.monotonic() + timeout  # not the hub's clock: it is stale after blocking code
    last_exc: BaseException | None = None
    while time.monotonic() < deadline:
        try:
            value = predicate()
        except (Exception, gevent.Timeout) as exc:  # it may race what it waits for; an RPC may time out
            last_exc = exc                          # (gevent.Timeout is a BaseException)
            value = None
        if value:
            return value
        gevent.sleep(step)
    raise AssertionError(f"{what} not met within {timeout:.0f} s" + (f" (last error: {last_exc!r})" if last_exc else ""))
