"""A small synchronous OpenADR 3.1 VEN client over httpx (runs in the link's worker thread only).

Token discovery (`GET auth/server` -> tokenURL), client credentials (form-encoded, RFC 6749) with a refresh
before expiry and once more on a 401; VEN and resource registration (found by name first, so a re-enrolment
never duplicates them); programs and events read page by page (`skip`, `limit` 50, bounded); reports
created or updated (found by `reportName` first); subscriptions created or updated for a callback URL.
Errors are `VtnError` with the status and the problem's title, never a secret or a token.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import httpx

PAGE = 50


class VtnError(RuntimeError):
    """A VTN request that failed: `status` is the HTTP status (0 when the VTN could not be reached)."""

    def __init__(self, what: str, status: int, detail: str) -> None:
        super().__init__(f"{what}: {status or 'unreachable'} {detail}"[:500])
        self.status = status


class Oadr31Client:
    def __init__(self, base_url: str, client_id: str, client_secret: str, timeout_s: float = 10.0,
                 refresh_margin_s: float = 60.0, clock: Callable[[], float] = time.monotonic,
                 transport: httpx.BaseTransport | None = None) -> None:
        self.base = base_url.rstrip("/")
        self._client_id = client_id
        self._secret = client_secret
        self._margin = refresh_margin_s
        self._clock = clock
        self._http = httpx.Client(timeout=timeout_s, transport=transport)
        self._token: str | None = None
        self._expires = 0.0
        self.token_url: str | None = None
        self.tokens_fetched = 0
        self.requests = 0

    def close(self) -> None:
        self._http.close()

    # --- auth -----------------------------------------------------------------------------------------
    def _discover(self) -> str:
        if self.token_url is None:
            info = self._send("GET", "/auth/server", auth=False)
            url = info.get("tokenURL") if isinstance(info, dict) else None
            self.token_url = url if isinstance(url, str) and url.startswith(("http://", "https://")) else \
                self.base + "/auth/token"
        return self.token_url

    def token(self) -> str:
        """A valid bearer token (fetched when absent or within the refresh margin of its expiry)."""
        if self._token is None or self._clock() >= self._expires - self._margin:
            url = self._discover()
            try:
                response = self._http.post(url, data={"grant_type": "client_credentials",
                                                      "client_id": self._client_id, "client_secret": self._secret})
            except httpx.HTTPError as exc:
                raise VtnError("token", 0, exc.__class__.__name__) from None
            if response.status_code != 200:
                raise VtnError("token", response.status_code, _problem(response))
            body = response.json()
            self._token = str(body["access_token"])
            ttl = float(body.get("expires_in") or 3600)
            self._expires = self._clock() + ttl
            self.tokens_fetched += 1
        return self._token

    def drop_token(self) -> None:
        self._token = None

    # --- requests ---------------------------------------------------------------------------------------
    def _send(self, method: str, path: str, body: Any = None, params: dict[str, Any] | None = None,
              auth: bool = True) -> Any:
        for attempt in (0, 1):
            headers = {"Authorization": f"Bearer {self.token()}"} if auth else {}
            self.requests += 1
            try:
                response = self._http.request(method, self.base + path, json=body, params=params, headers=headers)
            except httpx.HTTPError as exc:
                raise VtnError(f"{method} {path}", 0, exc.__class__.__name__) from None
            if response.status_code == 401 and auth and attempt == 0:
                self.drop_token()
                continue
            if response.status_code >= 400:
                raise VtnError(f"{method} {path}", response.status_code, _problem(response))
            return response.json() if response.content else None
        raise VtnError(f"{method} {path}", 401, "refused after a new token")

    def search(self, path: str, params: dict[str, Any] | None = None, max_items: int = 1000) -> list[dict]:
        """Every object of a search, page by page, at most `max_items`."""
        out: list[dict] = []
        skip = 0
        while len(out) < max_items:
            page = self._send("GET", path, params={**(params or {}), "skip": skip, "limit": PAGE})
            if not isinstance(page, list):
                raise VtnError(f"GET {path}", 200, "the answer is not a list")
            out += [o for o in page if isinstance(o, dict)]
            if len(page) < PAGE:
                break
            skip += PAGE
        return out[:max_items]

    # --- the VEN's objects -----------------------------------------------------------------------------
    def ensure_ven(self, ven_name: str) -> str:
        """The id of this VEN's VEN object, registered (VEN_VEN_REQUEST) when the VTN has none."""
        for ven in self.search("/vens", {"venName": ven_name}, max_items=PAGE):
            if ven.get("venName") == ven_name:
                return str(ven["id"])
        try:
            return str(self._send("POST", "/vens", {"objectType": "VEN_VEN_REQUEST", "venName": ven_name})["id"])
        except VtnError as exc:
            if exc.status != 409:
                raise
        for ven in self.search("/vens", {"venName": ven_name}, max_items=PAGE):
            if ven.get("venName") == ven_name:
                return str(ven["id"])
        raise VtnError("POST /vens", 409, "the VEN name is taken by a VEN this client cannot see")

    def ensure_resource(self, ven_id: str, resource_name: str) -> str:
        for resource in self.search("/resources", {"venID": ven_id, "resourceName": resource_name}, PAGE):
            if resource.get("resourceName") == resource_name and resource.get("venID") == ven_id:
                return str(resource["id"])
        body = {"objectType": "VEN_RESOURCE_REQUEST", "resourceName": resource_name, "venID": ven_id}
        return str(self._send("POST", "/resources", body)["id"])

    def programs(self) -> list[dict]:
        return self.search("/programs", max_items=1000)

    def events(self, max_items: int) -> list[dict]:
        return self.search("/events", max_items=max_items)

    def notifiers(self) -> dict[str, Any]:
        answer = self._send("GET", "/notifiers")
        return answer if isinstance(answer, dict) else {}

    def notifier_topics(self, path: str) -> dict[str, Any]:
        """`notifiers/mqtt/topics/<path>`: the topic names {CREATE, UPDATE, DELETE, ALL}."""
        answer = self._send("GET", f"/notifiers/mqtt/topics/{path}")
        topics = answer.get("topics") if isinstance(answer, dict) else None
        return topics if isinstance(topics, dict) else {}

    def ensure_subscription(self, client_name: str, callback_url: str, bearer: str,
                            known_id: str | None) -> str:
        """Create (or update) this VEN's subscription to events (CREATE, UPDATE, DELETE) at `callback_url`."""
        body = {"clientName": client_name, "objectOperations": [
            {"objects": ["EVENT"], "operations": ["CREATE", "UPDATE", "DELETE"], "callbackUrl": callback_url,
             "bearerToken": bearer}]}
        existing = [s for s in self.search("/subscriptions", {"clientName": client_name}, PAGE)
                    if s.get("id") == known_id or any(op.get("callbackUrl") == callback_url
                                                      for op in s.get("objectOperations") or [])]
        if existing:
            sub_id = str(existing[0]["id"])
            self._send("PUT", f"/subscriptions/{sub_id}", body)
            return sub_id
        return str(self._send("POST", "/subscriptions", body)["id"])

    def put_report(self, body: dict[str, Any], known_id: str | None) -> str:
        """Create the report, or update it when the VTN has it already (by id, else by reportName)."""
        if known_id is None:
            for report in self.search("/reports", {"eventID": body["eventID"], "clientName": body["clientName"]},
                                      PAGE):
                if report.get("reportName") == body.get("reportName"):
                    known_id = str(report["id"])
                    break
        if known_id is not None:
            try:
                self._send("PUT", f"/reports/{known_id}", body)
                return known_id
            except VtnError as exc:
                if exc.status != 404:
                    raise
        return str(self._send("POST", "/reports", body)["id"])


def _problem(response: httpx.Response) -> str:
    try:
        body = response.json()
    except ValueError:
        return response.text[:200]
    if isinstance(body, dict):
        return str(body.get("title") or body.get("error") or "")[:100] + \
            (": " + str(body.get("detail"))[:300] if body.get("detail") else "")
    return str(body)[:200]
