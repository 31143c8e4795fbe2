"""The Gateway of the running agent: RPC over the VOLTTRON bus from a Flask handler's greenlet.

VOLTTRON 11 does not fail a call to a peer that is not connected: it times out. So the gateway asks the
router for its peer list (kept for PEER_TTL_S) and answers at once for a peer that is not there.
"""

from __future__ import annotations

import logging
import time
from typing import Any

import gevent
from volttron.client.vip.agent.errors import VIPError
from volttron.utils.jsonrpc import Error as JsonRpcError
from volttron.utils.jsonrpc import RemoteError

from dr_web.gateway import PeerFailed, PeerUnavailable

_log = logging.getLogger(__name__)

PEER_TTL_S = 2.0
PEERLIST_TIMEOUT_S = 2.0


class VipGateway:
    def __init__(self, agent: Any, clock=time.monotonic) -> None:
        self.agent = agent
        self.clock = clock
        self._peers: set[str] | None = None
        self._peers_at = float("-inf")

    def connected(self) -> set[str] | None:
        """The identities connected to the platform, or None when the router did not say."""
        now = self.clock()
        if now - self._peers_at > PEER_TTL_S:
            try:
                self._peers = set(self.agent.vip.peerlist().get(timeout=PEERLIST_TIMEOUT_S))
            except gevent.Timeout:
                _log.warning("dr.web: the router did not list its peers within %s s", PEERLIST_TIMEOUT_S)
                self._peers = None
            except VIPError as exc:
                _log.warning("dr.web: listing peers failed: %s", exc)
                self._peers = None
            self._peers_at = now
        return self._peers

    def call(self, identity: str, method: str, *args: Any, timeout: float, **kwargs: Any) -> Any:
        """The peer's result; raises PeerUnavailable or PeerFailed."""
        peers = self.connected()
        if peers is not None and identity not in peers:
            raise PeerUnavailable(identity, "not connected to the platform")
        try:
            return self.agent.vip.rpc.call(identity, method, *args, **kwargs).get(timeout=timeout)
        except gevent.Timeout:
            self._peers_at = float("-inf")  # it may have just left: ask the router again next time
            raise PeerUnavailable(identity, f"no answer to {method} within {timeout:g} s") from None
        except VIPError as exc:  # Unreachable, Again, Unauthorized, ...
            raise PeerUnavailable(identity, str(exc)) from None
        except (RemoteError, JsonRpcError) as exc:  # it answered with an exception, or has no such method
            _log.warning("dr.web: %s.%s raised %r", identity, method, exc)
            raise PeerFailed(identity, method, str(exc)) from None
