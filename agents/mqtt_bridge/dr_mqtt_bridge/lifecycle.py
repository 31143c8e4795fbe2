"""Replacing the running bridge on a new configuration: the new one is fully built before the old one stops.

A configuration is parsed (TLS files checked), then the new core's outbox, MQTT client and TLS context are
built; only when all of that worked is the old core stopped and the new one started. Anything refused on the
way leaves the running bridge as it is and is reported as the configuration error (log and health).
"""

from __future__ import annotations

import logging
import ssl
from collections.abc import Callable
from typing import Any

from dr_common.config import ConfigError
from dr_common.mqtt.config import parse_config
from dr_common.mqtt.core import BridgeCore, BusPort
from dr_common.mqtt.outbox import OutboxError

_log = logging.getLogger(__name__)

BUILD_ERRORS = (OutboxError, OSError, ssl.SSLError, ValueError)


class BridgeSlot:
    """Holds the running core; `apply` swaps in a new one. `before_stop(old)` and `after_start(new)` let the
    agent move its bus subscriptions."""

    def __init__(self, bus: BusPort, make_core: Callable[..., BridgeCore] = BridgeCore,
                 before_stop: Callable[[BridgeCore], None] | None = None,
                 after_start: Callable[[BridgeCore], None] | None = None) -> None:
        self._bus = bus
        self._make_core = make_core
        self._before_stop = before_stop
        self._after_start = after_start
        self.core: BridgeCore | None = None
        self.config_error: str | None = None

    def apply(self, raw: Any) -> bool:
        """Run on configuration `raw`; False (and the running bridge kept) when it cannot be used."""
        try:
            config = parse_config(raw if isinstance(raw, dict) else {})
        except ConfigError as exc:
            return self._refused(str(exc))
        core = self._make_core(config, self._bus)
        try:
            core.prepare()
        except BUILD_ERRORS as exc:
            return self._refused(f"the bridge cannot be built: {exc.__class__.__name__}: {exc}")
        self.stop()
        try:
            core.start()
        except (*BUILD_ERRORS, RuntimeError) as exc:
            core.discard()
            self.config_error = f"the bridge failed to start: {exc.__class__.__name__}: {exc}"
            _log.error("%s", self.config_error)
            return False
        self.config_error = None
        self.core = core
        if self._after_start is not None:
            self._after_start(core)
        return True

    def stop(self) -> None:
        """Stop the running core (if any)."""
        core, self.core = self.core, None
        if core is not None:
            if self._before_stop is not None:
                self._before_stop(core)
            core.stop()

    def _refused(self, reason: str) -> bool:
        self.config_error = reason
        _log.error("configuration rejected, bridge %s: %s",
                   "keeps its previous configuration" if self.core else "not started", reason)
        return False
