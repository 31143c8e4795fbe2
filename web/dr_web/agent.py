"""dr.web: serves the Flask status page and REST API on gevent's WSGI server inside a VOLTTRON agent.

Thin: configuration, the HTTP server's lifecycle, the telemetry subscriptions, the registry refresh and two
RPCs. The Flask handlers run as greenlets of this agent and reach dr.vtn and the historian through
VipGateway.

A configuration that cannot be used (a bad value, or a placeholder `apiToken` on an address beyond loopback)
is logged and reported by `health` (`configError`, `ok: false`); the previous configuration stays in force,
and at start, when there is none, the agent keeps running without serving HTTP.
"""

from __future__ import annotations

import logging
import sys
from typing import Any

import gevent
from gevent.pywsgi import WSGIServer
from volttron.client.vip.agent import RPC, Agent, Core
from volttron.utils import load_config
from volttron.utils.commands import vip_main

from dr_common import topics
from dr_common.rejects import RateLimitedLog, RejectCounter
from dr_common.payloads import TRANSPORT_OADR
from dr_common.topics import VtnRpc, WebRpc
from dr_common.vip_repr import bound_message_repr
from dr_web import __version__
from dr_web.app import create_app
from dr_web.config import ConfigError, WebConfig, parse_config
from dr_web.livestate import LiveState
from dr_web.problems import ApiProblem
from dr_web.upstream import Upstream
from dr_web.vipgateway import VipGateway

_log = logging.getLogger(__name__)
_rlog = RateLimitedLog(_log)


class WebAgent(Agent):
    """The dr.web agent."""

    def __init__(self, config_path: str | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        install_config = load_config(config_path) if config_path else {}
        self.config_error: str | None = None
        self.web_config = WebConfig()
        self.dropped = RejectCounter()
        self.live = LiveState()
        self.gateway = VipGateway(self)
        self.server: WSGIServer | None = None
        self._bound: tuple[str, int] | None = None
        self._subscribed = False
        self._registry_loop: gevent.Greenlet | None = None
        self._clients_pushed: tuple[str, list[dict[str, Any]]] | None = None
        self.vip.config.set_default("config", install_config)
        self.vip.config.subscribe(self._on_config, actions=["NEW", "UPDATE"], pattern="config")

    def _on_config(self, config_name: str, action: str, contents: Any) -> None:
        try:
            config = parse_config(contents)
        except ConfigError as exc:
            self.config_error = str(exc)
            serving = "keeping the previous one" if self.server is not None else "not serving HTTP"
            _log.error("dr.web: bad configuration, %s: %s", serving, exc)
            return
        self.config_error = None
        # a registry read from another VTN is not this one's: forget it until the configured VTN answers
        registered = self.live.registered if config.vtn_identity == self.web_config.vtn_identity else None
        if config.telemetry_history != self.web_config.telemetry_history \
                or config.ven_history != self.web_config.ven_history or not self.live.received:
            self.live = LiveState(history_len=config.telemetry_history, ven_history_len=config.ven_history,
                                  registered=registered)
        else:
            self.live.registered = registered
        self.live.trusted_bridges = frozenset(config.trusted_bridges)
        self.live.vtn_identity = config.vtn_identity
        self.live.max_vens = config.max_vens
        self.live.evict_s = config.ven_evict_s
        self.web_config = config
        self._serve()
        if self._registry_loop is None:  # started by the first configuration, so it asks the configured dr.vtn
            self._registry_loop = gevent.spawn(self._refresh_registry_forever)

    def _serve(self) -> None:
        app = create_app(self.web_config, self.live, self.gateway, self.health, self.dropped)
        if self.server is not None:
            if self._bound == (self.web_config.host, self.web_config.port):
                self.server.application = app  # same address: keep the socket (and an ephemeral port)
                _log.info("dr.web: reconfigured, still serving on port %s", self.server.server_port)
                return
            self.server.stop(timeout=2)
            self.server = None
        self.server = WSGIServer((self.web_config.host, self.web_config.port), app, log=None)
        try:
            self.server.start()
        except OSError as exc:
            self.config_error = f"cannot listen on {self.web_config.host}:{self.web_config.port}: {exc}"
            _log.error("dr.web: %s", self.config_error)
            self.server = None
            return
        self._bound = (self.web_config.host, self.web_config.port)
        _log.info("dr.web: serving on http://%s:%s/", self.web_config.host, self.server.server_port)

    @Core.receiver("onstart")
    def onstart(self, sender: Any, **kwargs: Any) -> None:
        """Subscribe to telemetry (the registry is read once a configuration is applied)."""
        if not self._subscribed:
            for prefix in (topics.BUS_TELEMETRY_PREFIX, topics.BUS_TELEMETRY_BATCH):
                self.vip.pubsub.subscribe("pubsub", prefix, self._on_telemetry)
            self._subscribed = True

    @Core.receiver("onstop")
    def onstop(self, sender: Any, **kwargs: Any) -> None:
        """Stop the HTTP server and the registry refresh."""
        if self._registry_loop is not None:
            self._registry_loop.kill(block=False)
            self._registry_loop = None
        if self.server is not None:
            self.server.stop(timeout=2)
            self.server = None

    def _refresh_registry_forever(self) -> None:
        while True:
            self.refresh_registry()
            gevent.sleep(self.web_config.registry_refresh_s)

    def refresh_registry(self) -> None:
        """Read dr.vtn's registered venIds into the live state; on failure the last known registry stays."""
        cfg = self.web_config
        upstream = Upstream(self.gateway, cfg.vtn_identity, cfg.historian_identity, cfg.rpc_timeout_s)
        asked_at = self.live.clock()
        try:
            ids = upstream.registered_ven_ids(timeout=min(cfg.rpc_timeout_s, cfg.registry_refresh_s))
        except ApiProblem as exc:
            _rlog.warning("registry", "dr.web: cannot read the VEN registry from %s: %s", cfg.vtn_identity,
                          exc.message)
            return
        dropped = self.live.set_registered(ids, asked_at)
        try:
            self.live.oadr_vens = frozenset(upstream.registered_ven_ids(
                timeout=min(cfg.rpc_timeout_s, cfg.registry_refresh_s), transport=TRANSPORT_OADR))
        except ApiProblem as exc:
            _rlog.warning("registry", "dr.web: cannot read the OpenADR VENs from %s: %s", cfg.vtn_identity,
                          exc.message)
        if dropped:
            _log.info("dr.web: dropped the live state of %d VEN(s) not registered with %s", dropped, cfg.vtn_identity)
        self._push_clients(upstream)

    def _push_clients(self, upstream: Upstream) -> None:
        """Hand dr.vtn the OpenADR clients of this config (no secrets) for its store, once per change."""
        cfg = self.web_config
        clients = cfg.openadr3.public_clients() if cfg.openadr3 is not None else []
        pushed = (cfg.vtn_identity, clients)
        if pushed == self._clients_pushed:
            return
        try:
            upstream.vtn(VtnRpc.OADR_CLIENTS, clients, timeout=min(cfg.rpc_timeout_s, cfg.registry_refresh_s))
        except ApiProblem as exc:
            _rlog.warning("clients", "dr.web: cannot hand the OpenADR clients to %s: %s", cfg.vtn_identity,
                          exc.message)
            return
        self._clients_pushed = pushed

    def _on_telemetry(self, peer: str, sender: str, bus: str, topic: str, headers: Any, message: Any) -> None:
        if self.live.on_message(topic, message, sender):
            _rlog.warning(self.live.last_reason or "telemetry", "dr.web: refused telemetry on %s: %s", topic[:200],
                          self.live.last_error)

    @RPC.export(WebRpc.HEALTH)
    def health(self) -> dict[str, Any]:
        """Whether dr.web serves, its config error, and the live state's counters."""
        port = self.server.server_port if self.server is not None else None
        return {"identity": self.core.identity, "ok": self.config_error is None and self.server is not None,
                "configError": self.config_error, "url": f"http://{self.web_config.host}:{port}/" if port else None,
                "version": __version__, "valuesDropped": self.dropped.total, **self.live.counters()}

    @RPC.export(WebRpc.LATEST_TELEMETRY)
    def latest_telemetry(self) -> dict[str, Any]:
        """The latest telemetry of every VEN held."""
        return dict(self.live.latest)


def main() -> None:
    """Entry point of the installed agent."""
    bound_message_repr()  # VOLTTRON 11 renders every VIP message for its debug log
    vip_main(WebAgent, version=__version__)


if __name__ == "__main__":
    sys.exit(main())
