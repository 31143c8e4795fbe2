"""Fuzzing the OpenADR 3.1 API: thousands of generated bodies (a valid body with one property replaced by any JSON
value, or junk) and query strings, as business logic and as a VEN, against the blueprint with the real dr.vtn
service in-process. None gets a 5xx; every refusal is a spec `problem` with its status and writes nothing;
an accepted write is there to read back."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dr_tools.webharness import WebHarness
from dr_web.oadr3 import BASE_PATH
from dr_web.oadr3.auth import Oadr3Config, TokenIssuer
from dr_web.oadr3.blueprint import install

CLIENTS = {"clients": [{"clientId": "bl", "clientSecret": "bl-secret-for-fuzz", "role": "bl"},
                       {"clientId": "ven", "clientSecret": "ven-secret-for-fuzz", "role": "ven", "venName": "v1"}]}

json_scalars = (st.none() | st.booleans() | st.integers(min_value=-2**70, max_value=2**70)
                | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=30)
                | st.sampled_from(["0001-01-01", "P9999Y", "PT1H", "-PT1H", "2030-01-01T00:00:00Z", "x" * 200,
                                   "SIMPLE", "DISPATCH_SETPOINT_RELATIVE", "BL_VEN_REQUEST", "VEN_VEN_REQUEST"]))
json_values = st.recursive(json_scalars, lambda inner: st.lists(inner, max_size=4)
                           | st.dictionaries(st.text(max_size=12), inner, max_size=4), max_leaves=16)

VALID: dict[str, dict[str, Any]] = {
    "programs": {"programName": "p", "targets": ["g1"], "intervalPeriod": {"start": "2030-01-01T00:00:00Z"}},
    "events": {"programID": "default", "eventName": "e", "priority": 3, "targets": ["g1"],
               "intervalPeriod": {"start": "0001-01-01", "duration": "PT1H", "randomizeStart": "PT1M"},
               "intervals": [{"id": 0, "payloads": [{"type": "DISPATCH_SETPOINT_RELATIVE", "values": [-2]}]}]},
    "vens": {"objectType": "BL_VEN_REQUEST", "venName": "v1", "clientID": "ven", "targets": ["g1"]},
    "resources": {"objectType": "BL_RESOURCE_REQUEST", "resourceName": "r", "venID": "nope", "clientID": "ven"},
    "reports": {"eventID": "evt-none", "clientName": "c", "reportName": "r",
                "resources": [{"resourceName": "AGGREGATED_REPORT",
                               "intervals": [{"id": 0, "payloads": [{"type": "USAGE", "values": [1.5]}]}]}]},
    "subscriptions": {"clientName": "c", "programID": "default", "targets": ["g1"],
                      "objectOperations": [{"objects": ["EVENT"], "operations": ["CREATE"],
                                            "callbackUrl": "http://127.0.0.1:9/cb", "bearerToken": "t"}]},
}


def _paths(value: Any, prefix: tuple = ()) -> list[tuple]:
    out = [prefix] if prefix else []
    if isinstance(value, dict):
        for key, inner in value.items():
            out += _paths(inner, prefix + (key,))
    elif isinstance(value, list):
        for index, inner in enumerate(value):
            out += _paths(inner, prefix + (index,))
    return out


def _replaced(body: Any, path: tuple, new: Any) -> Any:
    body = json.loads(json.dumps(body))
    holder = body
    for part in path[:-1]:
        holder = holder[part]
    holder[path[-1]] = new
    return body


@st.composite
def bodies(draw: st.DrawFn, kind: str) -> Any:
    choice = draw(st.integers(0, 9))
    if choice == 0:
        return draw(json_values)
    body = VALID[kind]
    path = draw(st.sampled_from(_paths(body)))
    if choice == 1:
        body = json.loads(json.dumps(body))
        holder = body
        for part in path[:-1]:
            holder = holder[part]
        del holder[path[-1]]
        return body
    return _replaced(body, path, draw(json_values))


class Fuzz:
    def __init__(self, folder) -> None:
        self.web = WebHarness(folder)
        self.issuer = TokenIssuer(Oadr3Config.model_validate(CLIENTS))
        install(self.web.app, self.issuer, self.web.gateway, "dr.vtn", 5.0)
        self.client = self.web.app.test_client()
        self.tokens = {who: self.issuer.issue({"grant_type": "client_credentials", "client_id": who,
                                               "client_secret": f"{who}-secret-for-fuzz"})["access_token"]
                       for who in ("bl", "ven")}
        self.requests = 0

    def snapshot(self) -> tuple:
        book = self.web.vtn.oadr_book.objects
        return (tuple((kind, tuple(sorted(objects))) for kind, objects in book.items()),
                len(self.web.vtn.list_events(limit=10_000)))

    def send(self, method: str, path: str, who: str, body: Any = None, raw: bytes | None = None):
        self.requests += 1
        data = raw if raw is not None else (json.dumps(body) if body is not None else None)
        return self.client.open(BASE_PATH + path, method=method, data=data, content_type="application/json",
                                headers={"Authorization": f"Bearer {self.tokens[who]}"})

    def close(self) -> None:
        self.web.close()


@pytest.fixture(scope="module")
def fuzz(tmp_path_factory):
    f = Fuzz(tmp_path_factory.mktemp("oadr3fuzz"))
    yield f
    f.close()


def _is_problem(response, status: int) -> bool:
    body = response.get_json(silent=True)
    return isinstance(body, dict) and body.get("status") == status and isinstance(body.get("detail"), str)


FUZZ = settings(max_examples=400, deadline=None, suppress_health_check=list(HealthCheck), database=None)


@pytest.mark.parametrize("kind", sorted(VALID))
@pytest.mark.parametrize("who", ["bl", "ven"])
def test_generated_bodies_never_5xx_and_refusals_write_nothing(fuzz, kind, who):
    @FUZZ
    @given(body=bodies(kind), method=st.sampled_from(["POST", "PUT"]))
    def run(body: Any, method: str) -> None:
        before = fuzz.snapshot()
        path = f"/{kind}" if method == "POST" else f"/{kind}/{'default' if kind == 'programs' else 'x1'}"
        response = fuzz.send(method, path, who, body)
        assert response.status_code < 500, (body, response.get_json())
        if response.status_code >= 400:
            assert _is_problem(response, response.status_code), response.get_data()
            assert fuzz.snapshot() == before, (body, response.get_json())
        else:
            made = response.get_json()
            again = fuzz.send("GET", f"/{kind}/{made['id']}", who)
            assert again.status_code == 200 and again.get_json()["id"] == made["id"]
            fuzz.send("DELETE", f"/{kind}/{made['id']}", who)   # keep names free for the next example

    run()


@FUZZ
@given(query=st.dictionaries(st.sampled_from(["skip", "limit", "targets", "programID", "eventID", "active", "venName",
                                              "venID", "resourceName", "clientName", "objects", "other",
                                              "limit[]"]),
                             st.text(max_size=140), max_size=5),
       kind=st.sampled_from(sorted(VALID)), who=st.sampled_from(["bl", "ven"]))
def test_generated_queries_are_200_or_400(fuzz, query, kind, who):
    response = fuzz.client.get(BASE_PATH + f"/{kind}", query_string=query,
                               headers={"Authorization": f"Bearer {fuzz.tokens[who]}"})
    assert response.status_code in (200, 400), (query, response.get_json())
    if response.status_code == 400:
        assert _is_problem(response, 400)
    else:
        assert isinstance(response.get_json(), list) and len(response.get_json()) <= 50


@pytest.mark.parametrize("raw", [b"{", b"[]", b"null", b'{"programName": NaN}', b'{"a": 1e999}', b"\xff\xfe",
                                 b'{"programName": "' + b"9" * 400 + b'"}', b"1" * 5000])
def test_bad_json_is_a_400_problem(fuzz, raw):
    before = fuzz.snapshot()
    response = fuzz.send("POST", "/programs", "bl", raw=raw)
    assert response.status_code == 400 and _is_problem(response, 400)
    assert fuzz.snapshot() == before


@pytest.mark.parametrize("value", ["\u00b2", "\u0663", "1e3", "-1", "99999999999", " 1"])
def test_odd_digits_in_paging_are_a_400(fuzz, value):
    for name in ("skip", "limit"):
        response = fuzz.client.get(BASE_PATH + "/programs", query_string={name: value},
                                   headers={"Authorization": f"Bearer {fuzz.tokens['bl']}"})
        assert response.status_code == 400 and _is_problem(response, 400), (name, value)
