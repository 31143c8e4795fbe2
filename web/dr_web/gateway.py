"""How dr.web reaches the other agents: a Gateway calls one RPC of one peer.

The agent's gateway goes over the VOLTTRON bus; tests give the Flask app an in-process one. Both raise
PeerUnavailable when the peer does not answer (not running, not connected, timed out) and PeerFailed when
it answered with an exception (a bug or a missing method there).
"""

from __future__ import annotations

from typing import Any, Protocol


class PeerUnavailable(Exception):
    def __init__(self, identity: str, reason: str) -> None:
        super().__init__(f"{identity} is not reachable: {reason}")
        self.identity = identity
        self.reason = reason


class PeerFailed(Exception):
    def __init__(self, identity: str, method: str, reason: str) -> None:
        super().__init__(f"{identity}.{method} failed: {reason}")
        self.identity = identity
        self.method = method
        self.reason = reason


class Gateway(Protocol):
    def call(self, identity: str, method: str, *args: Any, timeout: float, **kwargs: Any) -> Any:
        """The peer's result; raises PeerUnavailable or PeerFailed."""
