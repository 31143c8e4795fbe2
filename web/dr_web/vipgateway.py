"""The Gateway of the running agent: RPC over the VOLTTRON bus from a Flask handler's greenlet."""

from __future__ import annotations

import logging
from typing import Any

import gevent
from volttron.client.vip.agent.errors import VIPError
from volttron.utils.jsonrpc import Error as JsonRpcError
from volttron.utils.jsonrpc import RemoteError

from dr_web.gateway import PeerFailed, PeerUnavailable

_log = logging.getLogger(__name__)


class VipGateway:
    def __init__(self, agent: Any) -> None:
        self.agent = agent

    def call(self, identity: str, method: str, *args: Any, timeout: float, **kwargs: Any) -> Any:
        try:
            return self.agent.vip.rpc.call(identity, method, *args, **kwargs).get(timeout=timeout)
        except gevent.Timeout:
            raise PeerUnavailable(identity, f"no answer to {method} within {timeout:g} s") from None
        except VIPError as exc:  # Unreachable (not connected), Again, Unauthorized, ...
            raise PeerUnavailable(identity, str(exc)) from None
        except (RemoteError, JsonRpcError) as exc:  # it answered with an exception, or has no such method
            _log.warning("dr.web: %s.%s raised %r", identity, method, exc)
            raise PeerFailed(identity, method, str(exc)) from None
