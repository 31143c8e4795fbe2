"""dr.vtn and platform.historian as the REST API sees them: results, or ApiProblem.

dr.vtn answers every RPC with its result or `{"error", "field", "code"}`; that error becomes the HTTP
response (400 / 404 / 409 / 500). A peer that does not answer is a 503 naming it, one that raised a 502.

What a peer says about its own failure (an exception, an `internal` error: SQL, parameters, paths) is never
sent to the HTTP client: the client gets a generic message with an error id, and dr.web's log line with that
id carries the detail. Values JSON cannot carry (NaN, Infinity, integers beyond float range) are sent as
null and counted by the app's JSON provider (`dr_web.jsonsafe`).
"""

from __future__ import annotations

import logging
from typing import Any

from dr_common.topics import HistorianRpc, VtnRpc

from dr_web.gateway import Gateway, PeerFailed, PeerUnavailable
from dr_web.problems import INTERNAL, UNAVAILABLE, UPSTREAM, ApiProblem, error_id

_log = logging.getLogger(__name__)


class Upstream:
    """The peers' RPCs as the REST handlers call them."""

    def __init__(self, gateway: Gateway, vtn_identity: str, historian_identity: str, timeout: float) -> None:
        self.gateway = gateway
        self.vtn_identity = vtn_identity
        self.historian_identity = historian_identity
        self.timeout = timeout

    def _call(self, identity: str, method: str, *args: Any, timeout: float | None = None, **kwargs: Any) -> Any:
        try:
            result = self.gateway.call(identity, method, *args, timeout=timeout or self.timeout, **kwargs)
        except PeerUnavailable as exc:
            raise ApiProblem(UNAVAILABLE, f"<{identity}>", f"{exc.reason}; is {identity} installed and running?") \
                from None
        except PeerFailed as exc:
            ref = error_id()
            _log.error("dr.web: %s.%s raised (error id %s): %s", identity, method, ref, exc.reason)
            raise ApiProblem(UPSTREAM, f"<{identity}>", f"{method} failed there (error id {ref}; the detail is in "
                                                        "dr.web's log)") from None
        if isinstance(result, dict) and "error" in result:
            problem = ApiProblem.from_rpc_error(result)
            if problem.code in (INTERNAL, UPSTREAM):
                ref = error_id()
                _log.error("dr.web: %s.%s answered an error (error id %s): %s", identity, method, ref,
                           problem.message)
                raise ApiProblem(problem.code, problem.field, f"{method} failed at {identity} (error id {ref}; the "
                                                              "detail is in dr.web's log)")
            raise problem
        return result

    # --- dr.vtn ----------------------------------------------------------------------------------
    def vtn(self, method: str, *args: Any, timeout: float | None = None, **kwargs: Any) -> Any:
        """One dr.vtn RPC: its result, or ApiProblem."""
        return self._call(self.vtn_identity, method, *args, timeout=timeout, **kwargs)

    def register_ven(self, payload: dict[str, Any]) -> dict[str, Any]:
        """Register or update a VEN."""
        return self._expect(dict, VtnRpc.REGISTER_VEN, self.vtn(VtnRpc.REGISTER_VEN, payload))

    def list_vens(self, **filters: Any) -> list[dict[str, Any]]:
        """Registered VENs, filtered."""
        return self._expect(list, VtnRpc.LIST_VENS, self.vtn(VtnRpc.LIST_VENS, **filters))

    def get_ven(self, ven_id: str) -> dict[str, Any]:
        """One VEN."""
        return self._expect(dict, VtnRpc.GET_VEN, self.vtn(VtnRpc.GET_VEN, ven_id))

    def create_event(self, payload: dict[str, Any]) -> dict[str, Any]:
        """Create an event."""
        return self._expect(dict, VtnRpc.CREATE_EVENT, self.vtn(VtnRpc.CREATE_EVENT, payload))

    def list_events(self, **filters: Any) -> list[dict[str, Any]]:
        """Events, filtered."""
        return self._expect(list, VtnRpc.LIST_EVENTS, self.vtn(VtnRpc.LIST_EVENTS, **filters))

    def get_event(self, event_id: str) -> dict[str, Any]:
        """One event."""
        return self._expect(dict, VtnRpc.GET_EVENT, self.vtn(VtnRpc.GET_EVENT, event_id))

    def stop_event(self, event_id: str) -> dict[str, Any]:
        """End an event now."""
        return self._expect(dict, VtnRpc.STOP_EVENT, self.vtn(VtnRpc.STOP_EVENT, event_id))

    def event_metrics(self, event_id: str) -> dict[str, Any]:
        """An event's live metrics."""
        return self._expect(dict, VtnRpc.EVENT_METRICS, self.vtn(VtnRpc.EVENT_METRICS, event_id))

    def registered_ven_ids(self, timeout: float | None = None, **filters: Any) -> list[str]:
        """The venIds dr.vtn has registered (`filters` as `list_vens` takes them, e.g. transport)."""
        return [v["venId"] for v in self.list_vens(timeout=timeout, **filters)
                if isinstance(v, dict) and isinstance(v.get("venId"), str)]

    # --- platform.historian ----------------------------------------------------------------------
    def event_performance(self, event_id: str) -> dict[str, Any]:
        """The historian's M&V report of an event."""
        result = self._call(self.historian_identity, HistorianRpc.EVENT_PERFORMANCE, event_id)
        return self._expect(dict, HistorianRpc.EVENT_PERFORMANCE, result, self.historian_identity)

    # --- health of both --------------------------------------------------------------------------
    def peer_health(self, timeout: float) -> dict[str, Any]:
        """Whether dr.vtn and the historian answer, and their health."""
        out: dict[str, Any] = {}
        for identity, method in ((self.vtn_identity, VtnRpc.HEALTH), (self.historian_identity, HistorianRpc.HEALTH)):
            try:
                answer = self._call(identity, method, timeout=timeout)
            except ApiProblem as exc:
                out[identity] = {"reachable": exc.code not in (UNAVAILABLE,), "error": exc.message}
            else:
                out[identity] = {"reachable": True, "health": answer}
        return out

    def _expect(self, kind: type, method: str, result: Any, identity: str | None = None) -> Any:
        if not isinstance(result, kind):
            who = identity or self.vtn_identity
            raise ApiProblem(UPSTREAM, f"<{who}>", f"{method} returned {type(result).__name__}, "
                                                   f"expected {kind.__name__}")
        return result
