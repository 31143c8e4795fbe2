"""Fast tests of an agent's shell (config-store callbacks, subscriptions, RPC exports, lifecycle) with no platform:
the agent is built on volttron-testing's mock core and connected to its in-memory `TestServer`.

What volttron-testing lacks is filled in here: the mock core gets `spawn`/`spawn_later`/`periodic` (gevent's),
the config store is driven the way the platform drives it (the initial update, then `config.update` pushes), and
outbound RPC calls go to fake peers the test gives (`peers={"platform.driver": {"set_point": fn}}`), answered
through an AsyncResult like the real subsystem. Exported RPCs are called by their exported names.

    shell = AgentShell(VenLoadControlAgent, "dr.ven.ven-1", peers={...})
    shell.start({"config": {...}})
    shell.publish("dr/cmd/ven-1", {...}, sender="dr.vtn")
    shell.published("dr/ack/ven-1")      # messages the agent published there
    shell.call(VenRpc.STATUS)
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from datetime import datetime
from typing import Any

import gevent
from gevent.event import AsyncResult


def wait_until(predicate: Callable[[], Any], timeout: float = 10.0, step: float = 0.02) -> Any:
    """Run the gevent loop until `predicate()` is truthy (an exception counts as not yet) and return its value;
    AssertionError after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    last: BaseException | None = None
    while time.monotonic() < deadline:
        try:
            value = predicate()
        except Exception as exc:  # the agent may not have got there yet
            last, value = exc, None
        if value:
            return value
        gevent.sleep(step)
    raise AssertionError(f"not met within {timeout:g} s" + (f" (last error: {last!r})" if last else ""))


class _Scheduled:
    """What the core's `schedule` returns: `cancel()` stops it."""

    def __init__(self, greenlet: gevent.Greenlet) -> None:
        self.greenlet = greenlet

    def cancel(self) -> None:
        self.greenlet.kill(block=False)


class RemoteError(Exception):
    """What a fake peer raised, as the agent sees it (the real subsystem raises a RemoteError too)."""


class AgentShell:
    """One agent on volttron-testing's TestServer; see the module docstring."""

    def __init__(self, agent_cls: type, identity: str, peers: Mapping[str, Mapping[str, Callable[..., Any]]]
                 | None = None, **agent_kwargs: Any) -> None:
        import volttrontesting.mock_core_builder  # noqa: F401  (registers the "mock" core builder)
        from volttron.types.agent_context import AgentOptions
        from volttron.types.auth import VolttronCredentials
        from volttrontesting.server_mock import TestServer

        creds = VolttronCredentials(identity=identity, publickey="mock", secretkey="mock")
        self.agent = agent_cls(credentials=creds, options=AgentOptions(enable_store=True), name="mock",
                               **agent_kwargs)
        core = self.agent.core
        self._greenlets: list[gevent.Greenlet] = []
        core.spawn = self._spawn
        core.spawn_later = self._spawn_later
        core.periodic = self._periodic
        core.schedule = self._schedule
        self.peers = {name: dict(methods) for name, methods in (peers or {}).items()}
        self.calls: list[tuple[str, str, tuple[Any, ...], dict[str, Any]]] = []
        self.agent.vip.rpc.call = self._call
        self.agent.vip.peerlist = self._peerlist
        self.server = TestServer()
        self.server.connect_agent(self.agent)
        # volttron-testing keeps the first TestServer's bus in a class attribute: every later server's agents
        # would publish there
        from volttrontesting.server_mock import PubSubWrapper
        PubSubWrapper.__wrapper__ = self.server.__server_pubsub__
        self.unsubscribed: list[str] = []
        self.agent.vip.pubsub.unsubscribe = self._unsubscribe

    # --- lifecycle ---------------------------------------------------------------------------------------
    def start(self, store: Mapping[str, Any] | None = None) -> None:
        """What the platform does when the agent starts: the config store's initial contents and callbacks,
        then `onstart`."""
        config = self.agent.vip.config
        config._initial_update(dict(store or {}))
        config._onconfig(self)
        if self._has("onstart"):  # volttron-testing raises for an agent without one
            self.server.trigger_start_event(self.agent)
        gevent.sleep(0)

    def stop(self) -> None:
        """`onstop`, then every greenlet the agent started through its core is killed."""
        if self._has("onstop"):
            self.server.trigger_stop_event(self.agent, sender="")
        for greenlet in self._greenlets:
            greenlet.kill(block=False)

    def _has(self, lifecycle: str) -> bool:
        members = self.server.__lifecycle_methods__.get(self.agent.core.identity, {})
        return any(member.value == lifecycle for member in members)

    def update_config(self, name: str, contents: Any, action: str = "UPDATE") -> None:
        """A `vctl config store` (or delete, action "DELETE") of entry `name`, pushed as the platform does."""
        self.agent.vip.config._update_config(action, name, contents, trigger_callback=True)
        gevent.sleep(0)

    # --- bus -----------------------------------------------------------------------------------------------
    def publish(self, topic: str, message: Any, sender: str = "pytest.peer") -> None:
        """A message from `sender` on `topic`, delivered to the agent's subscriptions."""
        self.server.publish(topic, headers={"sender": sender}, message=message)
        gevent.sleep(0)

    def published(self, topic: str | None = None) -> list[Any]:
        """Messages the agent published (on `topic` exactly, or all)."""
        return [m.message for m in self.server.get_published_messages() if topic is None or m.topic == topic]

    def subscribed(self) -> list[str]:
        """The prefixes the agent subscribed to."""
        wrapper = self.server.__pubsub_wrappers__[self.agent.core.identity]
        return list(wrapper._subscriptions)

    def _unsubscribe(self, peer: str, prefix: str | None, callback: Any = None, bus: str = "",
                     **kwargs: Any) -> AsyncResult:
        wrapper = self.server.__pubsub_wrappers__[self.agent.core.identity]
        for sub in wrapper._subscriptions.pop(prefix, []) if prefix is not None else []:
            sub.anysub_subscriber._callback = None  # the in-memory bus keeps the subscriber: silence it
        self.unsubscribed.append(prefix or "")
        result = AsyncResult()
        result.set(None)
        return result

    # --- RPC -----------------------------------------------------------------------------------------------
    def exports(self) -> dict[str, Callable[..., Any]]:
        """The agent's exported RPCs by name."""
        return dict(self.agent.vip.rpc._exports)

    def call(self, name: str, *args: Any, **kwargs: Any) -> Any:
        """Call the agent's RPC exported as `name`."""
        return self.exports()[name](*args, **kwargs)

    def _peerlist(self) -> AsyncResult:
        result = AsyncResult()
        result.set(sorted({*self.peers, self.agent.core.identity}))
        return result

    def _call(self, peer: str, method: str, *args: Any, **kwargs: Any) -> AsyncResult:
        self.calls.append((peer, method, args, kwargs))
        result = AsyncResult()
        fn = self.peers.get(peer, {}).get(method)
        if fn is None:
            result.set_exception(RemoteError(f"{peer} has no method {method}"))
            return result
        try:
            result.set(fn(*args, **kwargs))
        except Exception as exc:  # the peer's failure reaches the agent as the call's exception
            result.set_exception(RemoteError(f"{type(exc).__name__}: {exc}"))
        return result

    def _spawn(self, func: Callable[..., Any], *args: Any, **kwargs: Any) -> gevent.Greenlet:
        greenlet = gevent.spawn(func, *args, **kwargs)
        self._greenlets.append(greenlet)
        return greenlet

    def _spawn_later(self, seconds: float, func: Callable[..., Any], *args: Any, **kwargs: Any) -> gevent.Greenlet:
        greenlet = gevent.spawn_later(seconds, func, *args, **kwargs)
        self._greenlets.append(greenlet)
        return greenlet

    def _schedule(self, deadline: Any, func: Callable[..., Any], *args: Any, **kwargs: Any) -> "_Scheduled":
        """The core's `schedule(deadline, func)`: a datetime or epoch seconds, or an iterable of them (the
        core's `periodic`); cancellable."""
        def seconds(when: Any) -> float:
            return when.timestamp() if isinstance(when, datetime) else float(when)

        try:
            deadlines = iter(deadline)
        except TypeError:
            return _Scheduled(self._spawn_later(max(0.0, seconds(deadline) - time.time()), func, *args, **kwargs))

        def run() -> None:
            for when in deadlines:
                gevent.sleep(max(0.0, seconds(when) - time.time()))
                func(*args, **kwargs)
        return _Scheduled(self._spawn(run))

    def _periodic(self, period: float, func: Callable[..., Any], *args: Any, **kwargs: Any) -> gevent.Greenlet:
        def loop() -> None:
            while True:
                gevent.sleep(period)
                func(*args, **kwargs)
        greenlet = gevent.spawn(loop)
        self._greenlets.append(greenlet)
        return greenlet
